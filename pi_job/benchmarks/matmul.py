"""Matrix multiplication on the cluster against numpy in one process, on loopback.

Prints, in one run (this machine is shared: compare figures of the same run only):

1. the worker's panel compute (``MatMul.compute``) against single-threaded numpy ``A @ B`` on
   the same core: the worker must add no copies (goal >= 90 %);
2. bulk data through beanstalkd with its binlog: a bare greenstalk put/reserve/delete loop of
   4 MiB bodies, and what a ``matvec`` run moves per second end to end (bandwidth-bound);
3. for each n: one process of single-threaded numpy against the cluster with 2 workers, with
   the breakdown (sum of compute seconds over workers, bytes moved, wall time).

Usage: python pi_job/benchmarks/matmul.py [--sizes 1024 2048 4096] [--workers 2]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one BLAS thread, like a worker

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from loopback import LoopbackCluster, bare_loop, cpu_name  # noqa: E402

from pi_job.workloads.matmul.workload import MatMul  # noqa: E402


class Inputs:
    """The shared-input half of a JobContext, for timing compute alone."""

    backend = None
    chunk = None

    def __init__(self, b: bytes) -> None:
        self.b = b

    def input(self, name: str) -> bytes:
        return self.b

    def tick(self, fraction: float) -> None:
        return None


def best_of(repeats: int, func: Any) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def compute_efficiency(n: int) -> tuple[float, float]:
    """GFLOP/s of numpy's A @ B and of the worker's compute on one panel of the same size."""
    rng = np.random.default_rng(1)
    rows = max(1, (4 * 2**20) // (n * 8))
    a, b = rng.standard_normal((rows, n)), rng.standard_normal((n, n))
    flops = 2.0 * rows * n * n
    numpy_s = best_of(5, lambda: a @ b)
    spec = {"dtype": "float64", "rows": [0, rows], "k": n, "n": n}
    payload, context = a.tobytes(), Inputs(b.tobytes())
    worker_s = best_of(5, lambda: MatMul().compute(spec, payload, context))
    return flops / numpy_s / 1e9, flops / worker_s / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; numpy {np.__version__}, one BLAS thread")
    print("\n1. panel compute, one core (GFLOP/s)")
    print(f"{'n':>6} {'numpy A@B':>10} {'worker':>8} {'ratio':>6}")
    for n in args.sizes:
        ref, worker = compute_efficiency(n)
        print(f"{n:>6} {ref:>10.1f} {worker:>8.1f} {worker / ref:>6.2f}")
    with tempfile.TemporaryDirectory() as tmp, LoopbackCluster(Path(tmp)) as cluster:
        cluster.set_workers(args.workers)
        size, count = 4 * 2**20, 40
        bare = 2 * size * count / bare_loop(cluster.server, size, count) / 1e6
        result, _ = cluster.run_workload(["--workload", "matvec", "--size", "8192"], "bench-matvec")
        moved = result["bytes_moved"] / result["seconds"] / 1e6
        print("\n2. bulk data through beanstalkd (binlog on), MB/s")
        print(f"bare greenstalk put+reserve+delete, 4 MiB bodies: {bare:.0f}")
        print(f"matvec n=8192 end to end: {moved:.0f} ({moved / bare:.0%} of bare), "
              f"{result['gflops']:.2f} GFLOP/s")  # fmt: skip
        print(f"\n3. C = A @ B, float64: one process vs {args.workers} workers on loopback")
        print(f"{'n':>6} {'numpy s':>8} {'cluster s':>9} {'speed-up':>8} {'compute s':>9} "
              f"{'MB moved':>9} {'transfer s':>10} {'GFLOP/s':>8}")  # fmt: skip
        for n in args.sizes:
            rng = np.random.default_rng(1)
            a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
            single = best_of(1, lambda a=a, b=b: a @ b)
            result, _wall = cluster.run_workload(
                ["--workload", "matmul", "--size", str(n)], f"bench-mm-{n}"
            )
            compute = sum(job["seconds"] for job in result["per_job"])
            megabytes = (result["bytes_moved"] + (args.workers - 1) * n * n * 8) / 1e6
            print(
                f"{n:>6} {single:>8.2f} {result['seconds']:>9.2f} "
                f"{single / result['seconds']:>8.2f} {compute:>9.2f} {megabytes:>9.0f} "
                f"{megabytes / bare:>10.2f} {result['gflops']:>8.1f}"
            )
        print("\ncompute s: the workers' job seconds summed (divide by workers for the ideal);")
        print("transfer s: MB moved / the bare rate above; MB moved counts B once per worker.")


if __name__ == "__main__":
    main()
