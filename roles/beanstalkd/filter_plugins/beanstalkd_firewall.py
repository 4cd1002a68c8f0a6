"""Filters for the nftables allow-list: check addresses (one-line errors) and merge overlaps.

Python's ipaddress only: no ansible.utils / netaddr needed on the controller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: object) -> Network | None:
    """The network of an IPv4/IPv6 address or CIDR, None for anything else (names, junk)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or "%" in text:  # fe80::1%eth0: a zone is meaningless in an nft set
        return None
    try:
        return ipaddress.ip_network(text, strict=False)  # 10.0.0.5/24 means 10.0.0.0/24
    except ValueError:
        return None


def _items(values: object) -> list[tuple[str, object]]:
    if isinstance(values, Mapping):
        return [(f"{key}=", value) for key, value in values.items()]
    if isinstance(values, str) or not isinstance(values, Iterable):
        return [("", values)]
    return [("", value) for value in values]


def beanstalkd_address_error(values: object, name: str) -> str:
    """'' when every entry is an IPv4/IPv6 address or CIDR, else one line naming the bad ones.

    ``values`` is a list (or one value), or a mapping whose keys name the entries (host names).
    """
    bad = [
        f'{label}"{value}"'
        for label, value in _items(values)
        if _network(value) is None
    ]
    if not bad:
        return ""
    return (
        f"{name}: not an IPv4/IPv6 address or CIDR: {', '.join(bad)}"
        " (host names are not resolved: give addresses or subnets)"
    )


def beanstalkd_merge_networks(values: object) -> list[str]:
    """The entries as the fewest canonical networks (overlaps and duplicates merged), sorted.

    Single hosts are written as plain addresses. Invalid entries raise: check them first.
    """
    nets: dict[int, list[Network]] = {4: [], 6: []}
    for _, value in _items(values):
        net = _network(value)
        if net is None:
            raise ValueError(f"not an IPv4/IPv6 address or CIDR: {value!r}")
        nets[net.version].append(net)
    out: list[str] = []
    for version in (4, 6):
        for net in ipaddress.collapse_addresses(nets[version]):  # type: ignore[type-var]
            full = net.prefixlen == net.max_prefixlen
            out.append(str(net.network_address) if full else str(net))
    return out


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {
            "beanstalkd_address_error": beanstalkd_address_error,
            "beanstalkd_merge_networks": beanstalkd_merge_networks,
        }
