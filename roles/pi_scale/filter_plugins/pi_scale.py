"""Filters of the scaling study: value checks, the order workers are started in, job size."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Same count forms as pi_job.protocol.parse_count (and pi_run's filters).
_COUNT_RE = re.compile(r"[0-9](?:_?[0-9])*(?:\.[0-9](?:_?[0-9])*)?(?:[eE]\+?[0-9]{1,3})?")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,48}")
MAX_JOBS = 10**6
MAX_JOB_DARTS = 10**12


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def pi_scale_count_error(value: object, name: str, maximum: int) -> str:
    """'' when value is an exact integer count in 1..maximum, else a one-line reason."""
    text = _text(value)
    if not _COUNT_RE.fullmatch(text):
        return f'{name}: not a count: "{text}" (use e.g. 1e10, 1_000_000_000, 2.5e9)'
    try:
        number = Decimal(text.replace("_", ""))
    except InvalidOperation:
        return f'{name}: not a count: "{text}"'
    if number != number.to_integral_value():
        return f'{name}: not a whole number: "{text}"'
    if not 1 <= int(number) <= maximum:
        return f'{name}: "{text}" is out of range 1..{maximum}'
    return ""


def pi_scale_count(value: object) -> int:
    """The integer of a count already checked with pi_scale_count_error."""
    return int(Decimal(_text(value).replace("_", "")))


def pi_scale_id_error(value: object) -> str:
    """'' when value can name a study (run ids scale-ID-kK stay valid pi-job run ids)."""
    text = str(value)
    if not _ID_RE.fullmatch(text):
        return f'scale_id: invalid "{text}" (expected {_ID_RE.pattern})'
    return ""


def pi_scale_order(instances: dict[str, list[object]], hosts: list[str]) -> list[dict[str, object]]:
    """Worker instances in start order: round-robin over hosts (w1@1, w2@1, w1@2, w2@2, ...)."""
    per_host = {host: sorted(int(i) for i in instances.get(host, [])) for host in hosts}
    order: list[dict[str, object]] = []
    depth = max((len(v) for v in per_host.values()), default=0)
    for level in range(depth):
        for host in hosts:
            if level < len(per_host[host]):
                order.append({"host": host, "instance": per_host[host][level]})
    return order


def pi_scale_job_darts(darts: object, workers: object, jobs_per_worker: object) -> int:
    """Darts per job so that the run with `workers` workers has >= jobs_per_worker jobs each."""
    total = int(darts)
    jobs = max(1, int(workers) * int(jobs_per_worker))
    size = -(-total // jobs)
    size = max(size, -(-total // MAX_JOBS), 1)
    return min(size, MAX_JOB_DARTS)


def pi_scale_units(order: list[dict[str, object]], host: str) -> list[str]:
    """The unit names of `host`'s instances in `order`."""
    return [f"pi-worker@{item['instance']}.service" for item in order if item["host"] == host]


def pi_scale_labels(order: list[dict[str, object]], count: object) -> list[str]:
    """HOST@N of the first `count` instances of `order`."""
    return [f"{item['host']}@{item['instance']}" for item in order[: int(count)]]


class FilterModule:
    """pi_scale filters."""

    def filters(self) -> dict[str, object]:
        return {
            "pi_scale_count": pi_scale_count,
            "pi_scale_count_error": pi_scale_count_error,
            "pi_scale_id_error": pi_scale_id_error,
            "pi_scale_job_darts": pi_scale_job_darts,
            "pi_scale_labels": pi_scale_labels,
            "pi_scale_order": pi_scale_order,
            "pi_scale_units": pi_scale_units,
        }
