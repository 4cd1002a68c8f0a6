"""Bytes moved and where the time goes, per run of scaling studies (``scale.yml`` outputs).

    python benchmarks/workload_costs.py DIR/scale-A DIR/scale-B ... [--out FILE.md]

Each argument is a study's per-k directory (``results/scale-ID/``, one result JSON per k). For
every run it prints: jobs, bytes per job (the job's payload in, its answer's payload out), the
shared input each worker reads once (matmul's B), the bytes the run moved through the queue,
flops per byte, the wall time, the workers' compute seconds, their busy share
(compute / (k x wall time)), the master's seconds writing C, and bytes moved per second of wall
time. pi's jobs carry no payload: their bodies are a JSON header of a few hundred bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ITEMSIZE = {"float64": 8, "int64": 8}


def costs(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run (see the module docstring)."""
    workers = int(result["workers"])
    seconds = float(result["seconds"])
    compute = sum(float(job["seconds"]) for job in result["per_job"])
    row: dict[str, Any] = {
        "workers": workers,
        "jobs": int(result["jobs"]),
        "seconds": seconds,
        "compute": compute,
        "busy": compute / (workers * seconds),
    }
    params = result.get("params") or {}
    if {"m", "k", "n", "dtype", "rows"} <= params.keys():
        m, k, n, rows = (int(params[key]) for key in ("m", "k", "n", "rows"))
        item = ITEMSIZE[str(params["dtype"])]
        shared = k * n * item
        moved = m * k * item + m * n * item + workers * shared
        row.update(
            job_in=rows * k * item,
            job_out=rows * n * item,
            shared=shared,
            moved=moved,
            flops_per_byte=2.0 * m * k * n / moved,
            write=float(result.get("write_seconds") or 0.0),
            rate=moved / seconds,
        )
    return row


def mib(value: float) -> str:
    if value >= 2**20:
        return f"{value / 2**20:.2f} MiB"
    return f"{value / 2**10:.0f} KiB" if value >= 2**10 else f"{value:.0f} B"


def table(directories: list[Path]) -> str:
    head = (
        "| run | k | jobs | bytes per job in / out | shared input per worker | moved per run "
        "| flop/byte | wall s | compute s | busy | master writes s | MB/s moved |"
    )
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for directory in directories:
        for path in sorted(directory.glob("*-k*.json")):
            result = json.loads(path.read_text(encoding="utf-8"))
            row = costs(result)
            params = result.get("params") or {}
            if result.get("workload", "pi") == "pi":
                name = f"pi {int(result['darts']):.0e} darts"
                size = "header only (< 1 KiB) / header only"
                extra = ["-", "-", "-", "-", "-"]
            else:
                name = f"{result['workload']} n={params.get('m')}"
                size = f"{mib(row['job_in'])} / {mib(row['job_out'])}"
                extra = [
                    mib(row["shared"]),
                    f"{row['moved'] / 1e6:,.0f} MB",
                    f"{row['flops_per_byte']:.3g}",
                    f"{row['write']:.2f}",
                    f"{row['rate'] / 1e6:.0f}",
                ]
            lines.append(
                f"| {name} | {row['workers']} | {row['jobs']} | {size} | {extra[0]} | {extra[1]} "
                f"| {extra[2]} | {row['seconds']:.2f} | {row['compute']:.2f} "
                f"| {row['busy'] * 100:.0f} % | {extra[3]} | {extra[4]} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path, metavar="DIR")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    text = table(args.studies)
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
