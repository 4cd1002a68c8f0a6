"""Filters of the scaling study: value checks, the order workers are started in, job size, the
fixed arguments of every run and the answer every k must agree on."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# Counts are checked with pi_run's filters (pi_count_error, pi_count): pi_run_values.py here is a
# link to roles/pi_run/filter_plugins/pi_run_values.py. Limits come from pi_job's limits.py.
_SRC = Path(__file__).resolve().parents[3] / "pi_job" / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from pi_job.limits import MAX_JOB_DARTS, MAX_JOBS
from pi_job.scaling import ScalingError, answer_of

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,48}")


def pi_scale_id_error(value: object) -> str:
    """'' when value can name a study (run ids scale-ID-kK stay valid pi-job run ids)."""
    text = str(value)
    if not _ID_RE.fullmatch(text):
        return f'scale_id: invalid "{text}" (expected {_ID_RE.pattern})'
    return ""


def pi_scale_order(
    instances: dict[str, list[object]], hosts: list[str]
) -> list[dict[str, object]]:
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


def pi_scale_check_params(stdout: str) -> dict[str, Any]:
    """The parameters `pi-job run --check` printed ("...values are valid: {JSON}")."""
    text = str(stdout).strip().splitlines()[-1] if str(stdout).strip() else ""
    start = text.find("{")
    if start < 0:
        return {}
    value = json.loads(text[start:])
    return value if isinstance(value, dict) else {}


def pi_scale_fixed_args(
    args: list[str], params: dict[str, Any], workers: object, jobs_per_worker: object
) -> list[str]:
    """The workload's arguments with its job split fixed for every k of the study.

    A workload whose default split depends on the connected workers (matmul and matvec: row
    panels, at least 4 per worker) would split differently for every k: fix it to the split of
    the largest run, at least `jobs_per_worker` jobs per worker and never larger than the
    workload's own default (which already fits the server's largest body).
    """
    fixed = [str(item) for item in args]
    if "--panel-rows" in fixed or not {"m", "rows"} <= params.keys():
        return fixed
    m, rows = int(params["m"]), int(params["rows"])
    jobs = max(1, int(workers) * int(jobs_per_worker))
    return [*fixed, "--panel-rows", str(max(1, min(rows, -(-m // jobs))))]


def pi_scale_answer(result: dict[str, Any]) -> str:
    """What every k must agree on, as one line (pi: inside; matmul: sha256 of C; ...)."""
    try:
        answer = answer_of(result)
    except ScalingError as exc:
        return f"no answer: {exc}"
    return ", ".join(f"{key} {value}" for key, value in answer.items())


def pi_scale_units(order: list[dict[str, object]], host: str) -> list[str]:
    """The unit names of `host`'s instances in `order`."""
    return [
        f"pi-worker@{item['instance']}.service"
        for item in order
        if item["host"] == host
    ]


def pi_scale_labels(order: list[dict[str, object]], count: object) -> list[str]:
    """HOST@N of the first `count` instances of `order`."""
    return [f"{item['host']}@{item['instance']}" for item in order[: int(count)]]


class FilterModule:
    """pi_scale filters."""

    def filters(self) -> dict[str, object]:
        return {
            "pi_scale_answer": pi_scale_answer,
            "pi_scale_check_params": pi_scale_check_params,
            "pi_scale_fixed_args": pi_scale_fixed_args,
            "pi_scale_id_error": pi_scale_id_error,
            "pi_scale_job_darts": pi_scale_job_darts,
            "pi_scale_labels": pi_scale_labels,
            "pi_scale_order": pi_scale_order,
            "pi_scale_units": pi_scale_units,
        }
