"""Parallel efficiency of pi runs on N loopback workers against N x the one-core kernel rate.

Starts a private beanstalkd on loopback, N real ``pi-job worker`` processes and the real
``pi-job run`` master (``loopback.py``). For each target duration (default 2 s and 10 s) it
sizes the run at duration x N x the one-core numba rate, then repeats: measure the one-core
kernel rate in this process (``pi-job bench``'s timer, 1 s), run pi with the default (guided)
job sizes, and report darts/s of the run / (N x that rate). Prints every run and the median
efficiency per duration; the load average is printed with them (the machine is shared).
"busy" is the workers' time on jobs / (N x the run's time): what the schedule leaves idle
(start, gaps between jobs, the tail), whatever else slows the cores down.

Usage: python pi_job/benchmarks/efficiency.py [--workers 2] [--runs 5] [--seconds 2 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from loopback import LoopbackCluster, cpu_name

from pi_job.workloads.pi import bench, kernel


def kernel_rate() -> float:
    """Darts/s of the numba kernel on one core, now (best batch of about a second)."""
    return bench._time_backend("numba", 1.0)


def load() -> str:
    """The load averages, for the figures."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="runs per duration")
    parser.add_argument("--seconds", type=float, nargs="+", default=[2.0, 10.0])
    args = parser.parse_args()
    kernel.warm_up()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.workers} workers on loopback")
    medians = {}
    with (
        tempfile.TemporaryDirectory(prefix="pi-eff-") as tmp,
        LoopbackCluster(Path(tmp)) as cluster,
    ):
        cluster.set_workers(args.workers)
        for seconds in args.seconds:
            darts = int(seconds * args.workers * kernel_rate()) // 10**8 * 10**8
            ratios, busy = [], []
            for run in range(args.runs):
                reference = kernel_rate()
                result, _ = cluster.run(darts, f"eff-{seconds:g}-{run}", seed=run + 1)
                ratio = result["darts_per_second"] / (args.workers * reference)
                ratios.append(ratio)
                on_jobs = sum(job["seconds"] for job in result["per_job"])
                busy.append(on_jobs / (args.workers * result["seconds"]))
                print(
                    f"{seconds:g} s target: {darts:.3g} darts in {result['seconds']:.2f} s, "
                    f"{result['jobs']} jobs, {result['darts_per_second']:.3g} darts/s; kernel "
                    f"{reference:.3g}/s per core; efficiency {ratio:.1%}, busy {busy[-1]:.1%} "
                    f"(load {load()})",
                    flush=True,
                )
            medians[seconds] = statistics.median(ratios), statistics.median(busy)
    for seconds, (median, idle) in medians.items():
        print(
            f"median of {args.runs} {seconds:g} s runs, {args.workers} workers: "
            f"efficiency {median:.1%}, busy {idle:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
