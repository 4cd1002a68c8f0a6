"""Filters of the scaling study: value checks, the order workers are started in, job size."""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Counts are checked with pi_run's filters (pi_count_error, pi_count): pi_run_values.py here is a
# link to roles/pi_run/filter_plugins/pi_run_values.py. Limits come from pi_job's limits.py.
_SRC = Path(__file__).resolve().parents[3] / "pi_job" / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from pi_job.limits import MAX_JOB_DARTS, MAX_JOBS

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,48}")


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
            "pi_scale_id_error": pi_scale_id_error,
            "pi_scale_job_darts": pi_scale_job_darts,
            "pi_scale_labels": pi_scale_labels,
            "pi_scale_order": pi_scale_order,
            "pi_scale_units": pi_scale_units,
        }
