"""Scaling benchmark on one machine: the same run with 1 worker, then with 2 workers.

Starts a private beanstalkd on loopback (binlog in a temporary directory), real ``pi-job
worker`` processes and the real ``pi-job run`` master (see ``loopback.py``), and prints the
darts/s of each run, each worker's own rate (darts / seconds spent on its jobs) and the
2-worker/1-worker ratio.

Usage: python pi_job/benchmarks/run_two_workers.py [--darts 2e10] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from loopback import LoopbackCluster


def worker_rates(report: dict[str, Any]) -> dict[str, float]:
    """darts/s of each worker over the time it spent on its jobs."""
    darts: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for job in report["per_job"]:
        darts[job["worker"]] += job["darts"]
        seconds[job["worker"]] += job["seconds"]
    return {worker: darts[worker] / seconds[worker] for worker in sorted(darts)}


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--darts", default="2e10", help="darts per run (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="pi-bench-") as tmp,
        LoopbackCluster(Path(tmp)) as cluster,
    ):
        cluster.set_workers(1)
        one, _ = cluster.run(args.darts, "bench-1-worker", seed=args.seed)
        cluster.set_workers(2)
        two, _ = cluster.run(args.darts, "bench-2-workers", seed=args.seed)
    assert one["inside"] == two["inside"], "same seed must give the same count"
    figures = {
        "darts": one["darts"],
        "cpus": os.cpu_count(),
        "one_worker": {
            "jobs": one["jobs"],
            "seconds": one["seconds"],
            "darts_per_second": one["darts_per_second"],
            "worker_rates": worker_rates(one),
        },
        "two_workers": {
            "jobs": two["jobs"],
            "seconds": two["seconds"],
            "darts_per_second": two["darts_per_second"],
            "worker_rates": worker_rates(two),
        },
        "ratio_2_over_1": two["darts_per_second"] / one["darts_per_second"],
        "pi": two["pi"],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"darts per run: {figures['darts']:,} (same seed, same count {one['inside']:,})")
    for label, key in (("1 worker ", "one_worker"), ("2 workers", "two_workers")):
        part = figures[key]
        rates = ", ".join(f"{w} {r:.3g}/s" for w, r in part["worker_rates"].items())
        print(
            f"{label}: {part['darts_per_second']:.3g} darts/s in {part['seconds']:.2f} s,"
            f" {part['jobs']} jobs; per worker: {rates}"
        )
    print(f"2-worker / 1-worker ratio: {figures['ratio_2_over_1']:.2f} on {figures['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
