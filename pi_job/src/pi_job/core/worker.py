"""``pi-job worker``: reserve jobs from ``pi.jobs``, throw the darts, put the results.

Life of a job: reserve (with a timeout) -> validate strictly (else bury, with a reason record on
``pi.buried``) -> fetch the run's shared inputs (once per run) -> compute, touching the job
whenever a third of its TTR has passed -> put the answer on ``pi.results.<run>`` -> delete the
job. The answer goes out *before* the delete, so a job that disappears has always left its answer
behind (the master relies on it).

Overlap: for workloads that ask for it (:attr:`~pi_job.workloads.base.Workload.prefetch`, jobs
with bulk data), a second thread works on the same connection while the main thread computes:
it signs and sends the previous answer, deletes that job, then reserves the next job without
waiting (``reserve-with-timeout 0``), reads its body, checks its MAC and fetches its inputs.
numpy and hashlib release the GIL, so transfer and compute overlap; a lock keeps the two
threads' commands apart. The prefetched job is touched before its compute when a third of its
TTR has passed, released on a stop, and given back by the server if the connection breaks.

The worker survives the server going away (reconnects with capped exponential backoff, logging
state changes only), releases its job and exits 0 on SIGTERM/SIGINT, and speaks systemd's notify
protocol (READY=1, STATUS=..., STOPPING=1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import FrameType
from typing import Final

import greenstalk

from pi_job import workloads
from pi_job.core import argtypes
from pi_job.core.connection import (
    CONNECTION_ERRORS,
    Backoff,
    Client,
    Connector,
    ServerAddress,
    close_quietly,
    connect,
)
from pi_job.core.envelope import (
    BURIED_TUBE,
    JOBS_TUBE,
    PROTOCOL_VERSION,
    Answer,
    InputRef,
    InvalidBodyError,
    Job,
    Payload,
    body_preview,
    decode_signed_job,
    results_tube,
)
from pi_job.core.sdnotify import Notifier
from pi_job.core.signing import INSECURE, Keyring, add_key_options, keyring_from_args
from pi_job.errors import UsageError
from pi_job.workloads.base import Workload

INPUT_CACHE: Final = 2
"""Shared inputs kept per worker (one run's operands, and the next run's)."""
DEFAULT_RESERVE_TIMEOUT: Final = 5
RESULT_TTR: Final = 120
"""TTR of result and reason messages (only the master / status reserve them, briefly)."""
STATUS_INTERVAL: Final = 1.0

log = logging.getLogger(__name__)


class StopRequestedError(Exception):
    """Raised by the signal handler to leave a blocking wait when no job is held."""


class JobReleasedError(Exception):
    """The job was released (the worker is stopping); the workload's compute is abandoned."""


class InputMissingError(InvalidBodyError):
    """A shared input of the job is no longer on the server (the master puts it again)."""


class _Context:
    """The :class:`~pi_job.workloads.base.JobContext` a worker gives a workload for one job."""

    def __init__(self, worker: Worker, client: Client, held: _Held) -> None:
        self.backend = worker.config.backend
        self.chunk = worker.config.chunk
        self._worker = worker
        self._client = client
        self._job = held.job
        self._spec = held.spec
        self._stats = held.stats
        self._label = held.label
        self._touch_every = max(0.2, held.stats["ttr"] / 3.0)
        self._last_touch = held.reserved_at
        self._last_status = time.monotonic()

    def input(self, name: str) -> Payload:
        ref = self._spec.inputs.get(name)
        if ref is None:
            raise InvalidBodyError(f"job has no input {name!r}")
        with self._worker.lock:
            return self._worker.fetch_input(self._client, ref)

    def tick(self, fraction: float) -> None:
        if self._worker.stopping:
            with self._worker.lock:
                self._client.release(self._job, priority=self._stats["pri"])
            log.info("released job %d (%s) at %d%%", self._job.id, self._label, 100 * fraction)
            raise JobReleasedError
        now = time.monotonic()
        if now - self._last_touch >= self._touch_every:
            with self._worker.lock:
                self._client.touch(self._job)
            self._last_touch = now
        if now - self._last_status >= STATUS_INTERVAL:
            self._worker.notifier.status(f"{self._label}: {int(100 * fraction)}%")
            self._last_status = now


@dataclass(frozen=True, slots=True)
class _Held:
    """A reserved job whose body checked out, with what its compute needs."""

    job: greenstalk.Job[bytes]
    spec: Job
    key_index: int
    workload: Workload
    stats: greenstalk.StatsJob
    reserved_at: float
    """``time.monotonic()`` of the reserve (the TTR runs from there)."""

    @property
    def label(self) -> str:
        return f"run {self.spec.run} job {self.spec.job}"


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A computed answer and the job it answers, to be sent, then deleted."""

    answer: Answer
    key_index: int
    job: greenstalk.Job[bytes]
    label: str


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Settings of one worker process."""

    server: ServerAddress
    worker_id: str
    host: str
    reserve_timeout: int = DEFAULT_RESERVE_TIMEOUT
    backend: str | None = None
    chunk: int | None = None
    connect_timeout: float = 5.0
    keyring: Keyring = INSECURE
    """Checks each job's MAC and signs each answer (the CLI always gives the cluster's)."""


class Worker:
    """One worker: a loop of connect, reserve, compute, answer."""

    def __init__(self, config: WorkerConfig, notifier: Notifier | None = None) -> None:
        """Prepare a worker; nothing happens until :meth:`run`."""
        self.config = config
        self.notifier = notifier or Notifier()
        self.connector = Connector(
            config.server, backoff=Backoff(0.1, 2.0, 5.0), on_wait=self.notifier.status
        )
        self._stop = False
        self._holding = False
        self._inputs: dict[str, Payload] = {}
        self.lock = threading.Lock()
        """Held by whichever thread talks to the server (see the module doc)."""
        self.jobs_done = 0

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop

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
            "worker %s starting (workloads %s, backend %s), server %s",
            self.config.worker_id,
            ", ".join(workloads.names()),
            self.config.backend or "default",
            self.config.server,
        )
        log.info("worker %s: %s", self.config.worker_id, self.config.keyring.describe())
        client: Client | None = None
        try:
            for name in workloads.names():
                workloads.get(name).warm_up(self.config.backend)
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

    def _connect(self) -> Client:
        return connect(
            self.config.server,
            watch=JOBS_TUBE,
            connect_timeout=self.config.connect_timeout,
            io_timeout=self.config.reserve_timeout + 30.0,
        )

    def _serve(self, client: Client) -> None:
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="pi-worker-io") as io:
                held: _Held | None = None
                while not self._stop:
                    if held is None:
                        self._holding = False
                        self.notifier.status("idle")
                        try:
                            job = client.reserve(timeout=self.config.reserve_timeout)
                            self._holding = True
                        except greenstalk.TimedOutError:
                            continue
                        except greenstalk.DeadlineSoonError:  # pragma: no cover - none held
                            continue
                        held = self._take(client, job)
                        continue
                    outgoing, held = self._compute(client, io, held)
                    if outgoing is not None:
                        if held is None:
                            self._send(client, outgoing)  # nothing to overlap with
                        else:
                            held = self._overlap(client, io, held, outgoing)
                if held is not None:  # stopping with a job not started (e.g. prefetched)
                    with self.lock:
                        client.release(held.job, priority=held.stats["pri"])
                    log.info("released job %d (%s) before its start", held.job.id, held.label)
        finally:
            self._holding = False

    def _overlap(
        self, client: Client, io: ThreadPoolExecutor, held: _Held, outgoing: _Outgoing
    ) -> _Held | None:
        """Compute ``held`` while ``outgoing`` is sent, and so on while jobs come; return the
        job held at the end (a stop), or None."""
        while not self._stop:
            following, after = self._compute(client, io, held, outgoing)
            if following is None:  # buried, released or lost: ``outgoing`` went out
                return after
            if after is None:
                self._send(client, following)
                return None
            held, outgoing = after, following
        self._send(client, outgoing)
        return held

    def _compute(
        self,
        client: Client,
        io: ThreadPoolExecutor,
        held: _Held,
        outgoing: _Outgoing | None = None,
    ) -> tuple[_Outgoing | None, _Held | None]:
        """Compute ``held`` while the I/O thread sends ``outgoing`` and, for workloads that
        prefetch, takes the next job. Returns the answer to send (None if the job was buried,
        released or lost) and the next job held (None if none was ready)."""
        background: Future[_Held | None] | None = None
        if outgoing is not None or held.workload.prefetch:
            background = io.submit(self._background, client, outgoing, held.workload.prefetch)
        try:
            answer = self._run_job(client, held)
        except BaseException:
            if background is not None:
                wait([background])  # its error, if any, is this one's consequence
            raise
        return answer, (background.result() if background is not None else None)

    def _background(
        self, client: Client, outgoing: _Outgoing | None, prefetch: bool
    ) -> _Held | None:
        """The I/O thread: send the previous answer, then take the next job if one is ready."""
        if outgoing is not None:
            self._send(client, outgoing)
        if not prefetch or self._stop:
            return None
        while not self._stop:
            try:
                with self.lock:
                    job = client.reserve(timeout=0)
            except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                return None
            held = self._take(client, job)
            if held is not None:
                return held
        return None

    # -- one job ---------------------------------------------------------------------------
    def _take(self, client: Client, job: greenstalk.Job[bytes]) -> _Held | None:
        """Check a reserved job (bury a bad one: None) and fetch its inputs."""
        reserved_at = time.monotonic()
        try:
            spec, key_index = decode_signed_job(job.body, self.config.keyring)
            workload = workloads.get(spec.workload)
        except (InvalidBodyError, UsageError) as exc:
            self._bury(client, job, str(exc))
            return None
        try:
            with self.lock:
                stats = client.stats_job(job)
                for ref in spec.inputs.values():
                    self.fetch_input(client, ref)
        except greenstalk.NotFoundError:
            log.warning("job %d vanished right after reserve", job.id)
            return None
        except InvalidBodyError:
            pass  # the workload's compute asks for the input again and the job is buried then
        return _Held(job, spec, key_index, workload, stats, reserved_at)

    def _run_job(self, client: Client, held: _Held) -> _Outgoing | None:
        """Compute one job (main thread); the answer to send, or None."""
        job, label = held.job, held.label
        context = _Context(self, client, held)
        try:
            context.tick(0.0)  # a job that waited for its turn is touched now if due
            started = time.monotonic()
            self.notifier.status(f"{label}: 0%")
            value, payload = held.workload.compute(held.spec.spec, held.spec.payload, context)
            seconds = time.monotonic() - started
            payload = memoryview(payload).cast("B")  # flat bytes (a strided view is a bug)
        except JobReleasedError:
            return None
        except CONNECTION_ERRORS:
            raise
        except greenstalk.NotFoundError:
            log.warning("job %d (%s) is no longer ours (TTR expired or deleted)", job.id, label)
            return None
        except InvalidBodyError as exc:
            self._bury(client, job, str(exc))
            return None
        except Exception as exc:  # a bug must not crash-loop the service: park the job
            log.exception("internal error on job %d", job.id)
            self._bury(client, job, f"internal error: {type(exc).__name__}: {exc}")
            return None
        answer = Answer(
            run=held.spec.run,
            job=held.spec.job,
            host=self.config.host,
            worker=self.config.worker_id,
            seconds=round(seconds, 6),
            reserves=held.stats["reserves"],
            value=value,
            payload=payload,
            nonce=held.spec.nonce,
        )
        return _Outgoing(answer, held.key_index, job, label)

    def _send(self, client: Client, outgoing: _Outgoing) -> None:
        """Put the answer, then delete its job."""
        head, payload = outgoing.answer.encode_parts(self.config.keyring, outgoing.key_index)
        with self.lock:
            client.use(results_tube(outgoing.answer.run))
            client.put_parts((head, payload), ttr=RESULT_TTR)
            try:
                client.delete(outgoing.job)
            except greenstalk.NotFoundError:
                log.warning(
                    "job %d (%s) expired before its delete; answer sent anyway",
                    outgoing.job.id,
                    outgoing.label,
                )
        self.jobs_done += 1
        log.debug("%s: done in %.3f s", outgoing.label, outgoing.answer.seconds)

    def fetch_input(self, client: Client, ref: InputRef) -> Payload:
        """A run's shared input, read by ``peek`` of its chunks once, then from the cache.

        The chunks are read straight into one buffer of the input's size and hashed in a
        thread as they come, while the next one is read (joining them afterwards cost a copy,
        fresh pages and a second pass over half a gigabyte while the worker had nothing to
        compute yet)."""
        cached = self._inputs.get(ref.sha256)
        if cached is not None:
            return cached
        try:
            buffer = memoryview(bytearray(ref.size))
        except MemoryError:
            raise InvalidBodyError(f"input of {ref.size} bytes does not fit in memory") from None
        digest, at = hashlib.sha256(), 0
        with ThreadPoolExecutor(1, thread_name_prefix="digest") as hasher:  # in order
            for job_id in ref.ids:
                try:
                    size = client.peek_into(job_id, buffer[at:])
                except greenstalk.NotFoundError:
                    raise InputMissingError(
                        f"input chunk {job_id} is gone from the server"
                    ) from None
                except ValueError:
                    raise InvalidBodyError("input does not match its sha256") from None
                hasher.submit(digest.update, buffer[at : at + size])
                at += size
        if at != ref.size or digest.hexdigest() != ref.sha256:
            raise InvalidBodyError("input does not match its sha256")
        while len(self._inputs) >= INPUT_CACHE:
            self._inputs.pop(next(iter(self._inputs)))
        data = self._inputs[ref.sha256] = buffer.toreadonly()
        return data

    def _bury(self, client: Client, job: greenstalk.Job[bytes], reason: str) -> None:
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
        with self.lock:
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
        help="work per step between TTR checks, e.g. darts for pi (default: the workload's)",
    )
    parser.add_argument(
        "--backend",
        type=argtypes.worker_id,
        help="compute backend for workloads that have several, e.g. pi's numba|numpy|python",
    )
    parser.add_argument(
        "--connect-timeout",
        type=argtypes.seconds(0.1, 300),
        default=5.0,
        metavar="S",
        help="timeout of one connection attempt (default %(default)s)",
    )
    add_key_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every job")


def command(args: argparse.Namespace) -> int:
    """Run the worker described by parsed ``args``."""
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    known = sorted({b for name in workloads.names() for b in workloads.get(name).backends()})
    if args.backend and args.backend not in known:
        raise UsageError(
            f"argument --backend: {args.backend!r} is not installed (have {', '.join(known)})"
        )
    keyring = keyring_from_args(args)
    host = socket.gethostname()
    config = WorkerConfig(
        server=args.server,
        worker_id=args.id or default_worker_id(host),
        host=host,
        reserve_timeout=args.reserve_timeout,
        chunk=args.chunk_darts,
        backend=args.backend,
        connect_timeout=args.connect_timeout,
        keyring=keyring,
    )
    worker = Worker(config)
    worker.install_signal_handlers()
    return worker.run()
