"""Fixtures: a real beanstalkd per test (own port and binlog) and real pi-job subprocesses.

The package must be importable: ``scripts/bootstrap.sh`` installs it editable into the venv
(``.venv/bin/pip install -e pi_job``); as a fallback the subprocesses get ``PYTHONPATH=src``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import greenstalk
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from pi_job.limits import beanstalkd_sizes  # noqa: E402
from pi_job.workloads.pi import kernel  # noqa: E402

MAX_BODY = 16 * 2**20
"""Largest job body of the test servers (the beanstalkd role's default)."""
BACKEND = "numba" if "numba" in kernel.available_backends() else "numpy"


def beanstalkd_binary() -> str:
    """$BEANSTALKD, else beanstalkd on PATH, else Debian's /usr/bin/beanstalkd."""
    return os.environ.get("BEANSTALKD") or shutil.which("beanstalkd") or "/usr/bin/beanstalkd"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


def make_key_file(directory: Path) -> Path:
    """``directory/cluster.key``: a test's cluster key (32 random bytes as hex, mode 0600)."""
    path = directory / "cluster.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex() + "\n")
    return path


@pytest.fixture(autouse=True)
def cluster_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has a cluster key, also for in-process ``main()`` calls ($PI_JOB_KEY_FILE).

    It lives outside ``tmp_path`` (tests check what they leave there)."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = make_key_file(tmp_path_factory.mktemp("key"))
    monkeypatch.setenv("PI_JOB_KEY_FILE", str(path))
    return path


class Beanstalkd:
    """A beanstalkd process on 127.0.0.1 with a binlog; restartable on the same port."""

    def __init__(self, binlog: Path, port: int) -> None:
        self.binlog = binlog
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        binlog.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        z, s = beanstalkd_sizes(MAX_BODY)
        cmd = [beanstalkd_binary(), "-l", "127.0.0.1", "-p", str(self.port), "-b", str(self.binlog)]
        cmd += ["-z", str(z), "-s", str(s)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._accepts, timeout=10)

    def _accepts(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"beanstalkd exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, **kwargs: Any) -> greenstalk.Client[bytes]:
        return greenstalk.Client(("127.0.0.1", self.port), encoding=None, **kwargs)

    def stats(self) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.stats())

    def tube(self, name: str) -> dict[str, Any]:
        """stats-tube of ``name``, or {} if the tube does not exist."""
        with self.client() as client:
            try:
                return dict(client.stats_tube(name))
            except greenstalk.NotFoundError:
                return {}

    def watching(self, name: str = "pi.jobs") -> int:
        return int(self.tube(name).get("current-watching", 0))


@pytest.fixture
def beanstalkd(tmp_path: Path) -> Iterator[Beanstalkd]:
    server = Beanstalkd(tmp_path / "binlog", free_port())
    server.start()
    yield server
    server.stop()


class Cluster:
    """Starts pi-job subprocesses against one beanstalkd and cleans them up."""

    def __init__(self, server: Beanstalkd, tmp_path: Path) -> None:
        self.server = server
        self.tmp = tmp_path
        self.state_dir = tmp_path / "state"
        self.procs: list[subprocess.Popen[str]] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.env.pop("CREDENTIALS_DIRECTORY", None)
        self._count = 0
        self.key_file = Path(os.environ.get("PI_JOB_KEY_FILE") or make_key_file(tmp_path))
        """The cluster key every worker and master of the cluster gets (``--key-file``)."""

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pi_job.cli", *args]

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        self._count += 1
        log = (self.tmp / f"proc{self._count}-{args[0]}.log").open("w")
        proc = subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env or self.env,
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def worker(
        self, *extra: str, backend: str = BACKEND, wait: bool = True
    ) -> subprocess.Popen[str]:
        before = self.server.watching()
        proc = self.spawn(
            "worker", "--server", self.server.address, "--reserve-timeout", "1",
            "--backend", backend, "--key-file", str(self.key_file), *extra,
        )  # fmt: skip
        if wait:
            wait_for(lambda: self.server.watching() > before or proc.poll() is not None)
            assert proc.poll() is None, self.log_of(proc)
        return proc

    def master_args(self, *extra: str) -> list[str]:
        return [
            "run", "--server", self.server.address, "--state-dir", str(self.state_dir),
            "--progress-interval", "1", "--json", "--key-file", str(self.key_file), *extra,
        ]  # fmt: skip

    def master(self, *extra: str) -> subprocess.Popen[str]:
        return self.spawn(*self.master_args(*extra))

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def run_master(self, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(*self.master_args(*extra), timeout=timeout)

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out

    @staticmethod
    def log_of(proc: subprocess.Popen[str]) -> str:
        return Path(proc.log_path).read_text()  # type: ignore[attr-defined]

    def journal(self, run_id: str) -> list[dict[str, Any]]:
        path = self.state_dir / f"{run_id}.jsonl"
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                proc.communicate(timeout=10)


@pytest.fixture
def cluster(beanstalkd: Beanstalkd, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(beanstalkd, tmp_path)
    yield c
    c.stop_all()


def expected_inside(seed: int, darts: int, jobs: int = 0) -> int:
    """The exact count of a run, computed locally in one piece (any split gives the same)."""
    return kernel.count_inside_range(seed, 0, darts, backend=BACKEND)
