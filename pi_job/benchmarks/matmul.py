"""Matrix multiplication on the cluster against numpy in one process, on loopback.

Prints, in one run (this machine is shared: compare figures of the same run only; the load
average is printed at the start and the end):

1. the worker's panel compute (``MatMul.compute``: payload to answer bytes) against
   single-threaded numpy ``A @ B`` on the same panel and core, best of interleaved repeats:
   the worker must add no copies (goal >= 0.9);
2. bulk data through beanstalkd with its binlog: a bare put/reserve/delete loop of 4 MiB
   bodies with stock greenstalk and with ``pi_job.core.connection.Client``, and what a
   ``matvec`` run (n=8192, bandwidth-bound) delivers end to end, in bytes delivered per
   second (a body counts once: put by one side, reserved by the other) (goal >= 0.8 of bare
   greenstalk);
3. for each n: one process of single-threaded numpy against the cluster with 2 workers, with
   the breakdown: the workers' compute seconds (summed), bytes delivered (B once per worker),
   transfer seconds at the bulk rate, the master's write seconds (C panels written and
   synced), when B was up, the jobs pushed and the first answer in, and at the largest n
   the overlap check: wall <= 1.2 x max(compute / workers,
   bytes / bulk rate), with the bulk rate of our client's bare loop (the faster of the two);
   then the largest n again with ``--generate-on-workers`` (the product without the transfer).

Usage: python pi_job/benchmarks/matmul.py [--sizes 1024 2048 4096 8192] [--workers 2]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one BLAS thread, like a worker

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from loopback import LoopbackCluster, bare_loop, cpu_name  # noqa: E402

from pi_job.workloads.matmul.workload import MatMul  # noqa: E402

OVERLAP_FACTOR = 1.2


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


def timed(func: Any) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def compute_efficiency(n: int, repeats: int = 15) -> tuple[float, float]:
    """GFLOP/s of numpy's A @ B and of the worker's compute on one panel of the same size
    (the default panel: 4 MiB of A), best of ``repeats`` interleaved runs each."""
    rng = np.random.default_rng(1)
    rows = max(1, (4 * 2**20) // (n * 8))
    a, b = rng.standard_normal((rows, n)), rng.standard_normal((n, n))
    flops = 2.0 * rows * n * n
    spec = {"dtype": "float64", "rows": [0, rows], "k": n, "n": n}
    payload, context = a.tobytes(), Inputs(b.tobytes())
    workload = MatMul()
    numpy_s = worker_s = float("inf")
    for _ in range(repeats):
        numpy_s = min(numpy_s, timed(lambda: a @ b))
        worker_s = min(worker_s, timed(lambda: workload.compute(spec, payload, context)))
    return flops / numpy_s / 1e9, flops / worker_s / 1e9


def timeline(journal: Path) -> tuple[float, float, float]:
    """Seconds from the run's (last) session start to: the shared input on the server, the
    last job pushed, the first answer journaled (from the journal's record times)."""
    records = [json.loads(line) for line in journal.read_text().splitlines() if line]
    start = max(r["t"] for r in records if r["type"] == "session")
    after = [r for r in records if r["t"] >= start]

    def first(kind: str, last: bool = False) -> float:
        times = [r["t"] for r in after if r["type"] == kind]
        return (max(times) if last else min(times)) - start if times else float("nan")

    return first("input"), first("pushed", last=True), first("result")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--matvec", type=int, default=8192, metavar="N")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; numpy {np.__version__}, one BLAS thread")
    print(f"load average at start (1/5/15 min): {load()}")
    print("\n1. panel compute, one core (GFLOP/s, a 4 MiB panel of A)")
    print(f"{'n':>6} {'numpy A@B':>10} {'worker':>8} {'ratio':>6}")
    for n in (1024, 2048):
        ref, worker = compute_efficiency(n)
        print(f"{n:>6} {ref:>10.1f} {worker:>8.1f} {worker / ref:>6.2f}")
    with tempfile.TemporaryDirectory() as tmp, LoopbackCluster(Path(tmp)) as cluster:
        cluster.set_workers(args.workers)
        size, count = 4 * 2**20, 40
        stock = size * count / bare_loop(cluster.server, size, count) / 1e6
        ours = size * count / bare_loop(cluster.server, size, count, fast=True) / 1e6
        result, _ = cluster.run_workload(
            ["--workload", "matvec", "--size", str(args.matvec)], "bench-matvec"
        )
        moved = result["bytes_moved"] / result["seconds"] / 1e6
        print("\n2. bulk data through beanstalkd (binlog on), MB/s delivered")
        print(f"bare loop, 4 MiB bodies, stock greenstalk:       {stock:6.0f}")
        print(f"bare loop, 4 MiB bodies, pi_job's Client:        {ours:6.0f}")
        print(f"matvec n={args.matvec} end to end ({args.workers} workers):     {moved:6.0f}"
              f"  = {moved / stock:.2f} of bare greenstalk, {moved / ours:.2f} of our bare "
              f"loop; {result['gflops']:.2f} GFLOP/s")  # fmt: skip
        bulk = max(stock, ours)
        print(f"\n3. C = A @ B, float64: one process vs {args.workers} workers on loopback "
              f"(bulk rate {bulk:.0f} MB/s)")  # fmt: skip
        print(f"{'n':>6} {'numpy s':>8} {'wall s':>7} {'speed-up':>8} {'compute s':>9} "
              f"{'/workers':>8} {'MB':>6} {'transfer s':>10} {'writes s':>8} {'B up':>5} "
              f"{'pushed':>6} {'1st ans':>7} {'bound s':>7} {'wall/bound':>10}")  # fmt: skip
        checks = []
        for n in args.sizes:
            rng = np.random.default_rng(1)
            a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
            single = timed(lambda a=a, b=b: a @ b)
            del a, b
            result, _wall = cluster.run_workload(
                ["--workload", "matmul", "--size", str(n)], f"bench-mm-{n}"
            )
            wall = result["seconds"]
            compute = sum(job["seconds"] for job in result["per_job"])
            megabytes = (result["bytes_moved"] + (args.workers - 1) * n * n * 8) / 1e6
            transfer = megabytes / bulk
            bound = OVERLAP_FACTOR * max(compute / args.workers, transfer)
            checks.append((n, wall, bound, single, transfer))
            up, pushed, first = timeline(cluster.state / f"bench-mm-{n}.jsonl")
            print(
                f"{n:>6} {single:>8.2f} {wall:>7.2f} {single / wall:>8.2f} {compute:>9.2f} "
                f"{compute / args.workers:>8.2f} {megabytes:>6.0f} {transfer:>10.2f} "
                f"{result.get('write_seconds', float('nan')):>8.2f} {up:>5.1f} {pushed:>6.1f} "
                f"{first:>7.1f} {bound:>7.2f} {wall / bound:>10.2f}"
            )
        n, wall, bound, single, transfer = checks[-1]
        verdict = "met" if wall <= bound else "NOT met"
        print(f"\noverlap at n={n}: wall {wall:.2f} s vs {OVERLAP_FACTOR} x max(compute / "
              f"workers, bytes / bulk rate) = {bound:.2f} s: {verdict}")  # fmt: skip
        ideal = OVERLAP_FACTOR * max(single / args.workers, transfer)
        print(f"with one-process numpy seconds as the compute (an idle core each): "
              f"{ideal:.2f} s, wall / that = {wall / ideal:.2f}")  # fmt: skip
        result, _wall = cluster.run_workload(
            ["--workload", "matmul", "--size", str(n), "--generate-on-workers"], f"bench-gen-{n}"
        )
        compute = sum(job["seconds"] for job in result["per_job"])
        print(f"n={n} with --generate-on-workers (A and B made from the seed where they are "
              f"used; only C moves, {result['bytes_moved'] / 1e6:.0f} MB): wall "
              f"{result['seconds']:.2f} s, speed-up {single / result['seconds']:.2f}, compute "
              f"{compute:.2f} s (with making A's panels and B), first answer "
              f"{timeline(cluster.state / f'bench-gen-{n}.jsonl')[2]:.1f} s")  # fmt: skip
    print("wall: the run's seconds (push, compute, answers; not the generation nor the")
    print("verification); compute s: the workers' job seconds summed; MB: bytes delivered, B")
    print("once per worker; writes s: the master writing and syncing C's panels; B up, pushed,")
    print("1st ans: seconds into the run when B was on the server, the last job pushed, the")
    print("first answer journaled (a worker reads all of B before its first panel).")
    print(f"load average at end (1/5/15 min): {load()}")


if __name__ == "__main__":
    main()
