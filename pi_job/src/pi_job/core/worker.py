"""``pi-job worker``: reserve jobs from ``pi.jobs``, throw the darts, put the results.

Life of a job: reserve (with a timeout) -> validate strictly (else bury, with a reason record on
``pi.buried``) -> count darts in short chunks, touching the job whenever a third of its TTR has
passed -> put the result on ``pi.results.<run>`` -> delete the job. The result goes out *before*
the delete, so a job that disappears has always left its result behind (the master relies on it).

The worker survives the server going away (reconnects with capped exponential backoff, logging
state changes only), releases its job and exits 0 on SIGTERM/SIGINT, and speaks systemd's notify
protocol (READY=1, STATUS=..., STOPPING=1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Final

import greenstalk

from pi_job.core import argtypes
from pi_job.core.connection import (
    CONNECTION_ERRORS,
    Backoff,
    Connector,
    ServerAddress,
    close_quietly,
    connect,
)
from pi_job.core.envelope import (
    BURIED_TUBE,
    JOBS_TUBE,
    PROTOCOL_VERSION,
    InvalidBodyError,
    JobSpec,
    Result,
    body_preview,
    decode_job,
    results_tube,
)
from pi_job.core.sdnotify import Notifier
from pi_job.workloads.pi import kernel

CHUNK_DARTS: Final = {"numba": 2**25, "numpy": 2**22, "python": 2**16}
"""Default darts per chunk: roughly 10-50 ms of work for each backend."""
DEFAULT_RESERVE_TIMEOUT: Final = 5
RESULT_TTR: Final = 120
"""TTR of result and reason messages (only the master / status reserve them, briefly)."""
STATUS_INTERVAL: Final = 1.0

log = logging.getLogger(__name__)


class StopRequestedError(Exception):
    """Raised by the signal handler to leave a blocking wait when no job is held."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Settings of one worker process."""

    server: ServerAddress
    worker_id: str
    host: str
    reserve_timeout: int = DEFAULT_RESERVE_TIMEOUT
    chunk_darts: int | None = None
    backend: str | None = None
    connect_timeout: float = 5.0


class Worker:
    """One worker: a loop of connect, reserve, compute, answer."""

    def __init__(self, config: WorkerConfig, notifier: Notifier | None = None) -> None:
        """Prepare a worker; nothing happens until :meth:`run`."""
        self.config = config
        self.backend = config.backend or kernel.default_backend()
        self.chunk = config.chunk_darts or CHUNK_DARTS.get(self.backend, 2**20)
        self.notifier = notifier or Notifier()
        self.connector = Connector(
            config.server, backoff=Backoff(0.1, 2.0, 5.0), on_wait=self.notifier.status
        )
        self._stop = False
        self._holding = False
        self.jobs_done = 0

    # -- signals ---------------------------------------------------------------------------
    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        """Signal handler: stop after releasing the held job, or at once when idle."""
        if not self._stop:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop = True
        if not self._holding:
            raise StopRequestedError

    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`request_stop`."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        """Serve jobs until asked to stop; return the exit code (0)."""
        log.info(
            "worker %s starting (backend %s, chunk %d darts), server %s",
            self.config.worker_id,
            self.backend,
            self.chunk,
            self.config.server,
        )
        client: greenstalk.Client[bytes] | None = None
        try:
            kernel.warm_up()
            self.notifier.ready(f"connecting to {self.config.server}")
            while not self._stop:
                client = self.connector.retry(self._connect, should_stop=lambda: self._stop)
                if client is None:
                    break
                log.info("connected to %s, waiting for jobs", self.config.server)
                try:
                    self._serve(client)
                except CONNECTION_ERRORS as exc:
                    self.connector.lost(exc)
                    self.notifier.status(f"connecting to {self.config.server}")
                close_quietly(client)
                client = None
        except StopRequestedError:
            pass
        finally:
            self._holding = True  # no more StopRequestedError from here on
            close_quietly(client)
            self.notifier.stopping()
        log.info("worker %s stopped after %d jobs", self.config.worker_id, self.jobs_done)
        return 0

    def _connect(self) -> greenstalk.Client[bytes]:
        return connect(
            self.config.server,
            watch=JOBS_TUBE,
            connect_timeout=self.config.connect_timeout,
            io_timeout=self.config.reserve_timeout + 30.0,
        )

    def _serve(self, client: greenstalk.Client[bytes]) -> None:
        while not self._stop:
            self.notifier.status("idle")
            try:
                job = client.reserve(timeout=self.config.reserve_timeout)
                self._holding = True
            except greenstalk.TimedOutError:
                continue
            except greenstalk.DeadlineSoonError:  # pragma: no cover - we hold no other job
                continue
            try:
                self._handle(client, job)
            finally:
                self._holding = False
            if self._stop:
                return

    # -- one job ---------------------------------------------------------------------------
    def _handle(self, client: greenstalk.Client[bytes], job: greenstalk.Job[bytes]) -> None:
        try:
            spec = decode_job(job.body)
        except InvalidBodyError as exc:
            self._bury(client, job, str(exc))
            return
        try:
            stats = client.stats_job(job)
        except greenstalk.NotFoundError:
            log.warning("job %d vanished right after reserve", job.id)
            return
        try:
            self._compute(client, job, spec, stats)
        except CONNECTION_ERRORS:
            raise
        except greenstalk.NotFoundError:
            log.warning(
                "job %d (run %s job %d) is no longer ours (TTR expired or deleted)",
                job.id,
                spec.run,
                spec.job,
            )
        except Exception as exc:  # a bug must not crash-loop the service: park the job
            log.exception("internal error on job %d", job.id)
            self._bury(client, job, f"internal error: {type(exc).__name__}: {exc}")

    def _compute(
        self,
        client: greenstalk.Client[bytes],
        job: greenstalk.Job[bytes],
        spec: JobSpec,
        stats: greenstalk.StatsJob,
    ) -> None:
        seed = kernel.job_seed(spec.seed, spec.job)
        touch_every = max(0.2, stats["ttr"] / 3.0)
        label = f"run {spec.run} job {spec.job}"
        started = last_touch = last_status = time.monotonic()
        self.notifier.status(f"{label}: 0%")
        inside = done = 0
        while done < spec.darts:
            if self._stop:
                client.release(job, priority=stats["pri"])
                log.info("released job %d (%s) at %d%%", job.id, label, 100 * done // spec.darts)
                return
            step = min(self.chunk, spec.darts - done)
            inside += kernel.count_inside(seed, step, start=done, backend=self.backend)
            done += step
            now = time.monotonic()
            if done < spec.darts and now - last_touch >= touch_every:
                client.touch(job)
                last_touch = now
            if now - last_status >= STATUS_INTERVAL:
                self.notifier.status(f"{label}: {100 * done // spec.darts}%")
                last_status = now
        seconds = time.monotonic() - started
        result = Result(
            run=spec.run,
            job=spec.job,
            darts=spec.darts,
            inside=inside,
            host=self.config.host,
            worker=self.config.worker_id,
            seconds=round(seconds, 6),
            reserves=stats["reserves"],
            backend=self.backend,
        )
        client.use(results_tube(spec.run))
        client.put(result.encode(), ttr=RESULT_TTR)
        try:
            client.delete(job)
        except greenstalk.NotFoundError:
            log.warning("job %d (%s) expired before its delete; result sent anyway", job.id, label)
        self.jobs_done += 1
        log.debug("%s: %d/%d inside in %.3f s", label, inside, spec.darts, seconds)

    def _bury(
        self, client: greenstalk.Client[bytes], job: greenstalk.Job[bytes], reason: str
    ) -> None:
        preview = body_preview(job.body)
        log.warning("burying job %d: %s; body %s", job.id, reason, preview)
        record = {
            "v": PROTOCOL_VERSION,
            "job_id": job.id,
            "tube": JOBS_TUBE,
            "reason": reason,
            "body_preview": preview,
            "host": self.config.host,
            "worker": self.config.worker_id,
            "time": round(time.time(), 3),
        }
        client.use(BURIED_TUBE)
        client.put(json.dumps(record).encode("utf-8"), ttr=RESULT_TTR)
        client.bury(job)


def default_worker_id(host: str | None = None) -> str:
    """``HOST:PID``."""
    return f"{host or socket.gethostname()}:{os.getpid()}"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``worker`` options to ``parser``."""
    parser.add_argument(
        "--server", required=True, type=argtypes.server, help="beanstalkd HOST:PORT"
    )
    parser.add_argument("--id", type=argtypes.worker_id, help="worker id (default HOST:PID)")
    parser.add_argument(
        "--reserve-timeout",
        type=argtypes.integer(1, 3600),
        default=DEFAULT_RESERVE_TIMEOUT,
        metavar="S",
        help="seconds a reserve waits before looping (default %(default)s)",
    )
    parser.add_argument(
        "--chunk-darts",
        type=argtypes.count(10**10),
        metavar="N",
        help="darts per chunk between TTR checks (default by backend: ~10-50 ms of work)",
    )
    parser.add_argument(
        "--backend",
        choices=kernel.BACKENDS,
        help="dart kernel (default numba when installed, else numpy)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=argtypes.seconds(0.1, 300),
        default=5.0,
        metavar="S",
        help="timeout of one connection attempt (default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every job")


def command(args: argparse.Namespace) -> int:
    """Run the worker described by parsed ``args``."""
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    if args.backend and args.backend not in kernel.available_backends():
        print(f"pi-job worker: error: backend {args.backend!r} is not installed", file=sys.stderr)
        return 2
    host = socket.gethostname()
    config = WorkerConfig(
        server=args.server,
        worker_id=args.id or default_worker_id(host),
        host=host,
        reserve_timeout=args.reserve_timeout,
        chunk_darts=args.chunk_darts,
        backend=args.backend,
        connect_timeout=args.connect_timeout,
    )
    worker = Worker(config)
    worker.install_signal_handlers()
    return worker.run()
