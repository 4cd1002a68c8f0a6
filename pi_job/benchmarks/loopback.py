"""A private pi_job cluster on loopback for the benchmarks: beanstalkd and real processes.

``LoopbackCluster`` starts beanstalkd (binlog in a temporary directory, like the lab) on a free
loopback port, keeps N real ``pi-job worker`` processes connected and runs the real ``pi-job run``
master to completion. The package is taken from this checkout's ``src`` when it is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from pi_job.limits import beanstalkd_sizes as sizes

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    "PYTHONUNBUFFERED": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
MAX_BODY = 16 * 2**20
"""The beanstalkd role's default largest job body (``beanstalkd_max_body``)."""


def cli(*args: str) -> list[str]:
    """The pi-job command line, run with this interpreter."""
    return [sys.executable, "-m", "pi_job.cli", *args]


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


def connected_workers(server: str) -> int:
    """Connections watching pi.jobs (the connected workers), via ``pi-job status --json``."""
    out = subprocess.run(
        cli("status", "--server", server, "--json"),
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    ).stdout
    return int(json.loads(out)["workers"])


def cpu_name() -> str:
    """The CPU model, as /proc/cpuinfo names it (figures must name the CPU)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def bare_loop(server: str, size: int, count: int, *, fast: bool = False) -> float:
    """Seconds a bare greenstalk client takes to put ``count`` bodies of ``size`` bytes on a
    tube of its own, then reserve and delete them: the queue's own rate, for comparisons.
    ``fast``: with pi_job's :class:`~pi_job.core.connection.Client` (no copies of bodies)."""
    import greenstalk

    from pi_job.core.connection import connect, parse_server
    from pi_job.core.heap import keep_freed_buffers

    host, port = server.rsplit(":", 1)
    body = os.urandom(size)
    keep_freed_buffers()  # as the pi-job command does: both loops reuse freed buffers
    if fast:
        client = connect(parse_server(server), use="bare", watch="bare")
    else:
        client = greenstalk.Client((host, int(port)), encoding=None, use="bare", watch="bare")
    with client:
        start = time.perf_counter()
        for _ in range(count):
            client.put(body)
        for _ in range(count):
            client.delete(client.reserve(timeout=10))
        return time.perf_counter() - start


class LoopbackCluster:
    """A private beanstalkd on loopback (binlog in ``tmp``) and N real workers."""

    def __init__(self, tmp: Path) -> None:
        """Start beanstalkd with its binlog and the masters' state below ``tmp``."""
        binary = os.environ.get("BEANSTALKD") or shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.state = tmp / "state"
        (tmp / "binlog").mkdir()
        self.binlog = tmp / "binlog"
        z, s = sizes(MAX_BODY)
        self.beanstalkd = subprocess.Popen(
            [
                binary,
                "-l",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-b",
                str(self.binlog),
                "-z",
                str(z),
                "-s",
                str(s),
            ],
            stderr=subprocess.DEVNULL,
        )
        self.key = tmp / "cluster.key"
        self.key.write_text(os.urandom(32).hex() + "\n")
        self.key.chmod(0o600)
        self.workers: list[subprocess.Popen[bytes]] = []
        wait_port(self.port)

    def __enter__(self) -> LoopbackCluster:
        """The cluster itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop everything."""
        self.close()

    def set_workers(self, count: int) -> None:
        """Start or stop workers until ``count`` are connected."""
        while len(self.workers) > count:
            proc = self.workers.pop()
            proc.terminate()
            proc.wait(30)
        while len(self.workers) < count:
            worker_id = f"bench{len(self.workers) + 1}"
            self.workers.append(
                subprocess.Popen(
                    cli("worker", "--server", self.server, "--id", worker_id, *self.key_args()),
                    stderr=subprocess.DEVNULL,
                    env=ENV,
                )
            )
        deadline = time.monotonic() + 60
        while connected_workers(self.server) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not connect")
            time.sleep(0.1)

    def key_args(self) -> list[str]:
        """The options that give a pi-job process the cluster key."""
        return ["--key-file", str(self.key)]

    def run(
        self, darts: int | str, run_id: str, *, job_darts: int | None = None, seed: int = 1
    ) -> tuple[dict[str, Any], float]:
        """Run pi to completion; return (result, process wall time)."""
        args = ["--darts", str(darts)]
        if job_darts is not None:
            args += ["--job-darts", str(job_darts)]
        return self.run_workload(args, run_id, seed=seed)

    def run_workload(
        self, workload_args: list[str], run_id: str, *, seed: int = 1
    ) -> tuple[dict[str, Any], float]:
        """Run any workload (``--workload NAME ...``) to completion; (result, wall time)."""
        args = ["run", "--server", self.server, "--seed", str(seed), *workload_args]
        args += ["--run-id", run_id, "--state-dir", str(self.state), "--json", *self.key_args()]
        start = time.perf_counter()
        proc = subprocess.run(
            cli(*args, "--progress-interval", "3600"),
            capture_output=True,
            text=True,
            env=ENV,
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"pi-job run failed: {proc.stderr.strip()}")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result, wall

    def close(self) -> None:
        """Stop the workers and beanstalkd."""
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            proc.wait(30)
        self.beanstalkd.terminate()
        self.beanstalkd.wait(10)
