"""How many answers per second one master checks, folds and journals, against the bare queue.

A large lab is played on loopback with a pre-filled answers tube: the master of a pi run of N
one-dart jobs pushes its jobs and is then frozen (SIGSTOP); this script answers every job the
way a worker would (real compute, signed with the cluster key, nonce echoed) and puts the
answers on the run's tube; then the master is thawed and timed until it has journaled every
answer and exited. After each such run, a bare greenstalk loop puts, reserves and deletes N
bodies of the same size on the same server: the queue's own rate. Prints both for every run
and their medians, the journal's bytes per second, and what a 1,000-worker lab with 1 s jobs
needs.

Usage: python pi_job/benchmarks/master_rate.py [--jobs 20000] [--repeat 3] [--profile FILE]

``--profile FILE`` runs the master under cProfile and writes its statistics to FILE
(``python -m pstats FILE``); the figures are then slower than without it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import greenstalk
from loopback import ENV, LoopbackCluster, bare_loop, cli, cpu_name

from pi_job.core.envelope import Answer, decode_job, results_tube
from pi_job.core.signing import read_key_file
from pi_job.workloads.pi import kernel
from pi_job.workloads.pi.workload import Pi


class Context:
    """What a worker gives a job, for the simulated workers."""

    backend = "numba" if "numba" in kernel.available_backends() else "numpy"
    chunk = None

    def input(self, name: str) -> bytes:
        raise KeyError(name)

    def tick(self, fraction: float) -> None:
        return None


def drain(
    cluster: LoopbackCluster, jobs: int, run_id: str, profile: Path | None
) -> tuple[float, int, int]:
    """One master run of ``jobs`` pre-answered jobs: (answers/s, body size, journal bytes)."""
    keyring = read_key_file(cluster.key)
    run_args = ["run", "--server", cluster.server, "--darts", str(jobs), "--job-darts", "1"]
    run_args += ["--seed", "7", "--run-id", run_id, "--state-dir", str(cluster.state)]
    run_args += ["--json", "--progress-interval", "3600", *cluster.key_args()]
    command = cli(*run_args)
    if profile is not None:
        command[1:1] = ["-m", "cProfile", "-o", str(profile.resolve())]
    master = subprocess.Popen(command, stdout=subprocess.PIPE, env=ENV, text=True)
    host, port = cluster.server.rsplit(":", 1)
    with greenstalk.Client(
        (host, int(port)), encoding=None, watch="pi.jobs", use=results_tube(run_id)
    ) as client:
        while True:
            try:
                if client.stats_tube("pi.jobs")["current-jobs-ready"] >= jobs:
                    break
            except greenstalk.NotFoundError:
                pass
            time.sleep(0.05)
        master.send_signal(signal.SIGSTOP)
        size = 0
        for _ in range(jobs):
            message = client.reserve(timeout=10)
            job = decode_job(message.body, keyring)
            value, payload = Pi().compute(job.spec, job.payload, Context())
            answer = Answer(job.run, job.job, "sim", "sim:1", 0.0, 1, value, payload, job.nonce)
            body = answer.encode(keyring)
            size = len(body)
            client.put(body, ttr=3600)  # the frozen master may hold a reservation
            client.delete(message)
    start = time.perf_counter()
    master.send_signal(signal.SIGCONT)
    out, _ = master.communicate(timeout=600)
    seconds = time.perf_counter() - start
    summary = json.loads(out)
    assert summary["jobs"] == jobs and summary["darts"] == jobs, summary
    journal = (cluster.state / f"{run_id}.jsonl").stat().st_size
    return jobs / seconds, size, journal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="runs (medians are printed)")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="cProfile the master")
    args = parser.parse_args()
    jobs = args.jobs
    kernel.warm_up()
    rates, bares = [], []
    with tempfile.TemporaryDirectory() as tmp, LoopbackCluster(Path(tmp)) as cluster:
        print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {jobs} answers per run")
        for run in range(args.repeat):
            rate, size, journal = drain(cluster, jobs, f"rate{run}", args.profile)
            bare = jobs / bare_loop(cluster.server, size, jobs)
            rates.append(rate)
            bares.append(bare)
            load = "/".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"run {run + 1}: master {rate:,.0f} answers/s, bare queue {bare:,.0f} "
                  f"messages/s, ratio {rate / bare:.2f} (load {load})", flush=True)  # fmt: skip
    rate, bare = statistics.median(rates), statistics.median(bares)
    print(f"answers of {size} bytes, journal {journal / jobs:.0f} bytes per answer")
    print(f"master: {rate:,.0f} answers/s (check, fold, journal in groups, delete; median)")
    print(f"bare queue: {bare:,.0f} messages/s (put, reserve, delete; same server; median)")
    print(f"master / bare: {rate / bare:.2f}")
    print(f"journal: {journal / jobs * rate / 1e6:.1f} MB/s while draining")
    print("a 1,000-worker lab with 1 s jobs needs 1,000 answers/s, 2,000 messages/s through the "
          "queue (a job and its answer: 6,000 put/reserve/delete operations/s) "
          f"and {journal / jobs * 1000 / 1e6:.2f} MB/s of journal")  # fmt: skip


if __name__ == "__main__":
    main()
