"""Helpers shared by the scenario's testinfra tests."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def journal(host, unit: str, lines: int = 40) -> str:
    """The unit's last journal lines (printed when an assertion about the unit fails)."""
    out = host.run(f"journalctl -u {unit} --no-pager -n {lines} -o short-precise")
    status = host.run(f"systemctl --no-pager status {unit}")
    return f"\n--- systemctl status {unit}\n{status.stdout}\n--- journalctl -u {unit}\n{out.stdout}{out.stderr}"


def unit_props(host, unit: str, *names: str) -> dict[str, str]:
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {n}" for n in names))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def assert_active(host, unit: str) -> None:
    """Assert that a unit is active, else fail with its status and journal."""
    state = host.run(f"systemctl is-active {unit}").stdout.strip()
    assert state == "active", f"{unit} is {state!r} on {host.backend.get_hostname()}{journal(host, unit)}"


def wait_active(host, unit: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(f"systemctl is-active {unit}").stdout.strip() == "active":
            return
        time.sleep(1)
    assert_active(host, unit)


def exposure(host, unit: str) -> float:
    """Overall exposure level from systemd-analyze security (printed)."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -n 1")
    match = re.search(r"exposure level for \S+: ([0-9.]+)", out)
    assert match, out
    value = float(match.group(1))
    print(f"\n{host.backend.get_hostname()}: {out.strip()}")
    return value


def cluster_address(host) -> str:
    """The node's address on the scenario's network (its default route's source)."""
    out = host.check_output("ip -4 -o route get 1.1.1.1")
    return re.search(r"\bsrc (\S+)", out).group(1)


@pytest.fixture(scope="session")
def inventory_dir() -> str:
    eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    assert eph, "run through molecule (MOLECULE_EPHEMERAL_DIRECTORY unset)"
    return str(Path(eph) / "inventory")
