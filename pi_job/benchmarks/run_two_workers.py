"""Scaling benchmark on one machine: the same run with 1 worker, then with 2 workers.

Starts a private beanstalkd on loopback (binlog in a temporary directory), real ``pi-job
worker`` processes and the real ``pi-job run`` master, and prints the darts/s of each run, each
worker's own rate (darts / seconds spent on its jobs) and the 2-worker/1-worker ratio.

Usage: python pi_job/benchmarks/run_two_workers.py [--darts 2e10] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cli(*args: str) -> list[str]:
    """The pi-job command line run with this interpreter."""
    return [sys.executable, "-m", "pi_job.cli", *args]


def watching(port: int) -> int:
    """Connections watching pi.jobs (the connected workers), via the status command."""
    out = subprocess.run(
        cli("status", "--server", f"127.0.0.1:{port}", "--json"),
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    ).stdout
    return int(json.loads(out)["workers"])


ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
}


def run_with_workers(port: int, workers: int, darts: str, seed: int, state: Path) -> dict[str, Any]:
    """Start ``workers`` workers, run the master to completion, stop the workers."""
    procs = [
        subprocess.Popen(
            cli("worker", "--server", f"127.0.0.1:{port}", "--id", f"w{index}"),
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        for index in range(workers)
    ]
    try:
        deadline = time.monotonic() + 30
        while watching(port) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not connect")
            time.sleep(0.1)
        master = subprocess.run(
            cli(
                "run",
                "--server",
                f"127.0.0.1:{port}",
                "--darts",
                darts,
                "--seed",
                str(seed),
                "--state-dir",
                str(state),
                "--json",
                "--progress-interval",
                "60",
            ),
            capture_output=True,
            text=True,
            env=ENV,
        )
        if master.returncode != 0:
            raise RuntimeError(master.stderr)
        report: dict[str, Any] = json.loads(master.stdout)
        return report
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


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
    binary = os.environ.get("BEANSTALKD") or shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
    with tempfile.TemporaryDirectory(prefix="pi-bench-") as tmp:
        port = free_port()
        server = subprocess.Popen(
            [binary, "-l", "127.0.0.1", "-p", str(port), "-b", tmp], stderr=subprocess.DEVNULL
        )
        try:
            wait_port(port)
            one = run_with_workers(port, 1, args.darts, args.seed, Path(tmp) / "state")
            two = run_with_workers(port, 2, args.darts, args.seed, Path(tmp) / "state")
        finally:
            server.terminate()
            server.wait(10)
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
