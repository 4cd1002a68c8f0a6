"""A run's summary: the generic envelope (keys fixed by CONTRACT.md) plus the workload's keys."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pi_job import __version__
from pi_job.core.journal import RunState
from pi_job.workloads.base import Workload


def iso_time(stamp: float) -> str:
    """Format a POSIX time as ISO 8601 UTC with a ``Z``."""
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_summary(
    state: RunState, workload: Workload, workload_keys: dict[str, Any]
) -> dict[str, Any]:
    """The summary JSON of a finished run from its journal state and the workload's keys."""
    plan = state.plan
    answers = [state.results[index] for index in sorted(state.results)]
    finished = state.finished or {}
    seconds = float(finished.get("seconds", state.active_seconds))
    unit, _ = workload.progress_units(plan.params)
    per_host: Counter[str] = Counter()
    for answer in answers:
        per_host[answer.host] += workload.weight(answer.value)
    summary: dict[str, Any] = {
        "run_id": plan.run_id,
        "workload": plan.workload,
        "seed": plan.seed,
        "jobs": plan.jobs,
        "duplicates": state.duplicates,
        "rejected": state.rejected,
        "redeliveries": sum(answer.reserves - 1 for answer in answers),
        "seconds": seconds,
        "per_host": dict(sorted(per_host.items())),
        "per_job": [
            {
                "job": answer.job,
                **{k: v for k, v in answer.value.items() if not isinstance(v, dict | list)},
                "work": workload.weight(answer.value),
                "host": answer.host,
                "worker": answer.worker,
                "seconds": answer.seconds,
            }
            for answer in answers
        ],
        "workers": len({answer.worker for answer in answers}),
        "started": finished.get("started"),
        "finished": finished.get("finished"),
        "version": __version__,
        "params": plan.params,
    }
    summary.update(workload_keys)
    summary["result_keys"] = sorted(workload_keys)
    total = sum(per_host.values())
    summary["unit"] = unit
    summary[f"{unit}_per_second"] = total / seconds if seconds > 0 else None
    return summary


def summary_lines(summary: dict[str, Any], workload: Workload, keys: list[str]) -> list[str]:
    """The summary as human-readable lines: the envelope's, and the workload's ``keys``."""
    own = workload.lines(summary) or [
        f"{key:<14} {summary[key]}" for key in keys if key != "verification"
    ]
    hosts = ", ".join(f"{host} {work:,}" for host, work in summary["per_host"].items())
    return [
        f"run            {summary['run_id']} ({summary['workload']}, seed {summary['seed']})",
        *own,
        f"duplicates     {summary['duplicates']} dropped",
        f"rejected       {summary['rejected']} answers dropped",
        f"re-deliveries  {summary['redeliveries']}",
        f"wall time      {summary['seconds']:.3f} s",
        f"workers        {summary['workers']}",
        f"per host       {hosts}",
    ]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    directory = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
