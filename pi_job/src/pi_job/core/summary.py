"""The final report of a run: the result JSON (keys fixed by CONTRACT.md) and its text form."""

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
from pi_job.workloads.pi.stats import estimate


def iso_time(stamp: float) -> str:
    """Format a POSIX time as ISO 8601 UTC with a ``Z``."""
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_report(state: RunState) -> dict[str, Any]:
    """Build the result JSON of a finished run from its journal state."""
    plan = state.plan
    results = [state.results[index] for index in sorted(state.results)]
    darts = sum(result.darts for result in results)
    inside = sum(result.inside for result in results)
    est = estimate(inside, darts)
    finished = state.finished or {}
    seconds = float(finished.get("seconds", state.active_seconds))
    per_host: Counter[str] = Counter()
    for result in results:
        per_host[result.host] += result.darts
    return {
        "run_id": plan.run_id,
        "seed": plan.seed,
        "darts": darts,
        "inside": inside,
        "pi": est.pi,
        "abs_error": est.abs_error,
        "std_error": est.std_error,
        "ci95": list(est.ci95),
        "jobs": plan.jobs,
        "duplicates": state.duplicates,
        "redeliveries": sum(result.reserves - 1 for result in results),
        "seconds": seconds,
        "darts_per_second": darts / seconds if seconds > 0 else None,
        "per_host": dict(sorted(per_host.items())),
        "per_job": [
            {
                "job": result.job,
                "darts": result.darts,
                "inside": result.inside,
                "host": result.host,
                "worker": result.worker,
                "seconds": result.seconds,
            }
            for result in results
        ],
        "job_darts": plan.max_job_darts,
        "workers": len({result.worker for result in results}),
        "started": finished.get("started"),
        "finished": finished.get("finished"),
        "version": __version__,
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """Return the report as human-readable lines."""
    low, high = report["ci95"]
    rate = report["darts_per_second"]
    hosts = ", ".join(f"{host} {darts:,}" for host, darts in report["per_host"].items())
    return [
        f"run            {report['run_id']} (seed {report['seed']})",
        f"pi             {report['pi']:.12f}",
        f"|pi - math.pi| {report['abs_error']:.3e}",
        f"std error      {report['std_error']:.3e}",
        f"95% interval   [{low:.12f}, {high:.12f}]",
        f"darts          {report['darts']:,} in {report['jobs']} jobs"
        f" (at most {report['job_darts']:,} per job), {report['inside']:,} inside",
        f"duplicates     {report['duplicates']} dropped",
        f"re-deliveries  {report['redeliveries']}",
        f"wall time      {report['seconds']:.3f} s",
        f"darts/s        {rate:.4g}" if rate is not None else "darts/s        n/a",
        f"workers        {report['workers']}",
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
