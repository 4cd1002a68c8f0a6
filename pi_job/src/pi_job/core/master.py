"""``pi-job run``: plan a run, push its jobs, collect each job's result once, report.

Resumability rests on the journal (:mod:`pi_job.core.journal`) and one rule of the worker (a result
is put *before* its job is deleted). Reconciliation, run at start and after every reconnect:

1. drain the ready results of the run's results tube into the journal;
2. peek every pushed-but-not-done job id: present with our body => queued or running;
3. absent => maybe it just finished, so drain the results again;
4. push the jobs still missing, and those never pushed.

So nothing that is queued, running or done is pushed twice. Each job index is counted at most
once; later results for it are journaled as duplicates and dropped.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import greenstalk

from pi_job.core import argtypes, runlock
from pi_job.core.connection import (
    CONNECTION_ERRORS,
    Backoff,
    Connector,
    ConnectTimeoutError,
    ServerAddress,
    close_quietly,
    connect,
)
from pi_job.core.envelope import (
    JOBS_TUBE,
    MAX_DARTS,
    MAX_JOB_DARTS,
    MAX_PRIORITY,
    MAX_SEED,
    MAX_TTR,
    InvalidBodyError,
    InvalidValueError,
    decode_result,
    results_tube,
)
from pi_job.core.journal import Journal, JournalError, default_state_dir
from pi_job.core.plan import Plan, job_count
from pi_job.core.progress import Progress
from pi_job.core.summary import build_report, iso_time, report_lines, write_json_atomic

DEFAULT_TTR: Final = 60
DEFAULT_STALL_TIMEOUT: Final = 60.0
DEFAULT_PROGRESS_INTERVAL: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_PRIORITY: Final = 2**16
POLL_SECONDS: Final = 1
PUSH_SYNC_EVERY: Final = 1000
EXIT_STALLED: Final = 3
"""Exit code of a stalled run (no worker took a job for the stall timeout)."""
WORKERS_REFRESH: Final = 2.0
"""Seconds between queries of the connected worker count for the progress display."""

log = logging.getLogger(__name__)


class MasterError(Exception):
    """A runtime failure of the master (exit code 1)."""


class ServerUnreachableError(MasterError):
    """beanstalkd could not be reached in time."""


class StalledError(MasterError):
    """No worker took a job of the run for the stall timeout."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The ``pi-job run`` command line."""

    server: ServerAddress
    darts: int | None
    job_darts: int | None
    seed: int | None
    run_id: str | None
    resume: str | None
    ttr: int
    output: Path | None
    stall_timeout: float
    state_dir: Path
    progress_interval: float
    priority: int
    connect_timeout: float
    json: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """Take the options from parsed arguments."""
        return cls(
            server=args.server,
            darts=args.darts,
            job_darts=args.job_darts,
            seed=args.seed,
            run_id=args.run_id,
            resume=args.resume,
            ttr=args.ttr,
            output=args.output,
            stall_timeout=args.stall_timeout,
            state_dir=args.state_dir or default_state_dir(),
            progress_interval=args.progress_interval,
            priority=args.priority,
            connect_timeout=args.connect_timeout,
            json=args.json,
        )


def new_run_id() -> str:
    """A fresh run id: UTC time plus 4 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def open_existing(options: RunOptions) -> Journal | None:
    """Return the journal to resume, or ``None`` for a new run; check option consistency.

    Raises :class:`~pi_job.core.journal.UnknownRunError` for ``--resume`` of an unknown run and
    :class:`~pi_job.core.argtypes.UsageError` when the options contradict the journal's plan.
    """
    run_id = options.resume or options.run_id
    if options.resume is not None:
        journal = Journal.load(options.state_dir, options.resume)
    elif run_id is not None and Journal.exists(options.state_dir, run_id):
        journal = Journal.load(options.state_dir, run_id)
    else:
        if options.darts is None:
            raise argtypes.UsageError("--darts is required for a new run")
        try:
            job_count(options.darts, options.job_darts, 1)
        except InvalidValueError as exc:
            raise argtypes.UsageError(str(exc)) from None
        return None
    plan = journal.state.plan
    clashes = [
        f"{name} {given} (journal has {kept})"
        for name, given, kept in (
            ("--darts", options.darts, plan.darts),
            ("--seed", options.seed, plan.seed),
        )
        if given is not None and given != kept
    ]
    if options.job_darts is not None and plan.max_job_darts > options.job_darts:
        clashes.append(f"--job-darts {options.job_darts} (journal has {plan.max_job_darts})")
    if clashes:
        journal.close()
        raise argtypes.UsageError(
            f"run {plan.run_id} exists with other values: {'; '.join(clashes)}"
        )
    return journal


class RunMaster:
    """Drives one run to completion against one beanstalkd server."""

    def __init__(self, options: RunOptions, journal: Journal) -> None:
        """Work on the run of ``journal``."""
        self.options = options
        self.journal = journal
        self.plan = journal.state.plan
        self.tube = results_tube(self.plan.run_id)
        self.connector = Connector(options.server, backoff=Backoff(0.1, 2.0, 5.0))
        self.client: greenstalk.Client[bytes] | None = None
        self.progress = Progress(
            self.plan.run_id, self.plan.jobs, self.plan.darts, interval=options.progress_interval
        )
        self._workers: int | None = None
        self._workers_at = -WORKERS_REFRESH

    def resumable_hint(self) -> str:
        """How to resume this run."""
        run_id = self.plan.run_id
        server = self.options.server
        return f"run {run_id} is resumable: pi-job run --server {server} --resume {run_id}"

    def attach(self, client: greenstalk.Client[bytes]) -> None:
        """Use an already connected client."""
        self.client = client

    def run(self) -> None:
        """Reconcile, then collect until every job has a counted result."""
        state = self.journal.state
        last_activity = time.monotonic()
        while state.missing():
            try:
                if self.client is None:
                    self._reconnect()
                    last_activity = time.monotonic()
                client = self._client()
                if self._collect(client, POLL_SECONDS):
                    last_activity = time.monotonic()
                elif time.monotonic() - last_activity >= self.options.stall_timeout:
                    if self._anything_running(client) or self.reconcile():
                        last_activity = time.monotonic()
                    else:
                        raise StalledError(
                            f"no worker has taken a job for {self.options.stall_timeout:g} s "
                            f"({self.resumable_hint()})"
                        )
                self._show_progress(client)
            except CONNECTION_ERRORS as exc:
                self.drop(exc)
        self._finish()

    def drop(self, exc: BaseException) -> None:
        """Forget a broken connection (the next loop reconnects and reconciles)."""
        self.connector.lost(exc)
        close_quietly(self.client)
        self.client = None

    def close(self) -> None:
        """Close the connection and the journal."""
        self.progress.close()
        close_quietly(self.client)
        self.client = None
        self.journal.close()

    # -- connection ------------------------------------------------------------------------
    def _client(self) -> greenstalk.Client[bytes]:
        if self.client is None:  # pragma: no cover - run() reconnects first
            raise ConnectionError("not connected")
        return self.client

    def _reconnect(self) -> None:
        deadline = time.monotonic() + self.options.stall_timeout
        try:
            client = self.connector.retry(
                lambda: open_client(self.options, self.tube, deadline), deadline=deadline
            )
        except ConnectTimeoutError as exc:
            raise ServerUnreachableError(
                f"cannot reach beanstalkd for {self.options.stall_timeout:g} s: {exc} "
                f"({self.resumable_hint()})"
            ) from None
        assert client is not None
        self.client = client
        log.info("reconciling run %s after reconnect", self.plan.run_id)
        self.reconcile()

    # -- reconcile and push ----------------------------------------------------------------
    def reconcile(self) -> int:
        """Bring queue and journal in line (see the module doc); return the jobs pushed."""
        client = self._client()
        state = self.journal.state
        self._drain(client)
        unknown: list[int] = []
        for index in state.missing():
            job_id = state.pushed.get(index)
            if job_id is None or not self._still_queued(client, index, job_id):
                unknown.append(index)
        if not unknown:
            return 0
        self._drain(client)
        todo = [index for index in unknown if index not in state.results]
        lost = sum(1 for index in todo if index in state.pushed)
        if lost:
            log.warning(
                "run %s: %d pushed jobs are gone from the server, pushing them again",
                self.plan.run_id,
                lost,
            )
        self._push(client, todo)
        return len(todo)

    def _still_queued(self, client: greenstalk.Client[bytes], index: int, job_id: int) -> bool:
        try:
            job = client.peek(job_id)
        except greenstalk.NotFoundError:
            return False
        return job.body == self.plan.job(index).encode()

    def _push(self, client: greenstalk.Client[bytes], indices: list[int]) -> None:
        for count, index in enumerate(indices, 1):
            body = self.plan.job(index).encode()
            job_id = client.put(body, priority=self.plan.priority, ttr=self.plan.ttr)
            self.journal.pushed(index, job_id)
            if count % PUSH_SYNC_EVERY == 0:
                self.journal.sync()
        self.journal.sync()
        if indices:
            log.info("run %s: pushed %d jobs to %s", self.plan.run_id, len(indices), JOBS_TUBE)

    # -- collect ---------------------------------------------------------------------------
    def _drain(self, client: greenstalk.Client[bytes]) -> int:
        """Take every ready result (no waiting); return how many messages were handled."""
        handled = 0
        while self._collect(client, 0):
            handled += 1
        return handled

    def _collect(self, client: greenstalk.Client[bytes], timeout: int) -> bool:
        """Reserve one result message (waiting up to ``timeout`` s) and account for it."""
        try:
            message = client.reserve(timeout=timeout)
        except greenstalk.TimedOutError:
            return False
        self._accept(client, message)
        return True

    def _accept(self, client: greenstalk.Client[bytes], message: greenstalk.Job[bytes]) -> None:
        state = self.journal.state
        try:
            result = decode_result(message.body)
            if result.run != self.plan.run_id:
                raise InvalidBodyError(f"result of run {result.run!r} in {self.tube}")
            if not 0 <= result.job < self.plan.jobs:
                raise InvalidBodyError(f"job {result.job} out of range 0..{self.plan.jobs - 1}")
            if result.darts != self.plan.job_darts(result.job):
                raise InvalidBodyError(
                    f"job {result.job} has {result.darts} darts, "
                    f"planned {self.plan.job_darts(result.job)}"
                )
        except InvalidBodyError as exc:
            log.warning("burying bad result message %d in %s: %s", message.id, self.tube, exc)
            client.bury(message)
            return
        if result.job not in state.results:
            self.journal.result(result, message.id)
        elif message.id not in state.result_ids:
            log.info(
                "run %s job %d: duplicate result from %s dropped",
                self.plan.run_id,
                result.job,
                result.worker,
            )
            self.journal.duplicate(result, message.id)
        try:
            client.delete(message)
        except greenstalk.NotFoundError:  # pragma: no cover - we hold the reservation
            log.warning("result message %d vanished before its delete", message.id)

    # -- stall detection and progress ------------------------------------------------------
    def _anything_running(self, client: greenstalk.Client[bytes]) -> bool:
        """True if a worker holds one of this run's pending jobs."""
        state = self.journal.state
        for index in state.missing():
            job_id = state.pushed.get(index)
            if job_id is None:
                continue
            try:
                if client.stats_job(job_id)["state"] == "reserved":
                    return True
            except greenstalk.NotFoundError:
                continue
        return False

    def _show_progress(self, client: greenstalk.Client[bytes], *, force: bool = False) -> None:
        state = self.journal.state
        if not (force or self.progress.due()):
            return
        now = time.monotonic()
        if force or now - self._workers_at >= WORKERS_REFRESH:
            self._workers = connected_workers(client)
            self._workers_at = now
        self.progress.update(len(state.results), state.done_darts, self._workers, force=force)

    def _finish(self) -> None:
        if self.client is not None:
            try:
                self._drain(self.client)
            except CONNECTION_ERRORS as exc:
                log.info("could not drain late duplicates: %s", exc)
        self.progress.close()
        state = self.journal.state
        first = state.sessions[0].start if state.sessions else time.time()
        self.journal.touch_session()
        self.journal.finish(
            {
                "started": iso_time(first),
                "finished": iso_time(time.time()),
                "seconds": state.active_seconds,
            }
        )


def open_client(
    options: RunOptions, tube: str, deadline: float | None = None
) -> greenstalk.Client[bytes]:
    """Connect for a run: put into ``pi.jobs``, reserve from the run's results tube.

    One attempt waits at most 5 s, and never beyond ``deadline`` (a monotonic time).
    """
    timeout = 5.0
    if deadline is not None:
        timeout = max(0.05, min(timeout, deadline - time.monotonic()))
    return connect(
        options.server,
        use=JOBS_TUBE,
        watch=tube,
        connect_timeout=timeout,
        io_timeout=POLL_SECONDS + 30.0,
    )


def connected_workers(client: greenstalk.Client[bytes]) -> int:
    """Number of connections watching ``pi.jobs`` (0 when the tube does not exist)."""
    try:
        return client.stats_tube(JOBS_TUBE)["current-watching"]
    except greenstalk.NotFoundError:
        return 0


def first_connect(options: RunOptions, tube: str) -> greenstalk.Client[bytes]:
    """Connect with retries for at most ``--connect-timeout`` s (else ServerUnreachableError)."""
    connector = Connector(options.server, backoff=Backoff(0.1, 2.0, 2.0))
    deadline = time.monotonic() + options.connect_timeout
    try:
        client = connector.retry(lambda: open_client(options, tube, deadline), deadline=deadline)
    except ConnectTimeoutError as exc:
        raise ServerUnreachableError(
            f"cannot connect to beanstalkd at {options.server} "
            f"within {options.connect_timeout:g} s: {exc.__cause__ or exc}"
        ) from None
    assert client is not None
    return client


def execute(options: RunOptions) -> dict[str, Any]:
    """Run (or resume) a run to completion and return its report."""
    runlock.hold(options.state_dir, options.resume or options.run_id)  # one master per run
    journal = open_existing(options)
    if journal is not None and journal.state.finished is not None:
        log.info("run %s is already finished; reporting it again", journal.state.plan.run_id)
        report = build_report(journal.state)
        journal.close()
        return report
    run_id = journal.state.plan.run_id if journal else (options.run_id or new_run_id())
    client = first_connect(options, results_tube(run_id))
    try:
        if journal is None:
            assert options.darts is not None
            workers = connected_workers(client)
            plan = Plan(
                run_id=run_id,
                seed=options.seed if options.seed is not None else secrets.randbits(63),
                darts=options.darts,
                jobs=job_count(options.darts, options.job_darts, workers),
                ttr=options.ttr,
                priority=options.priority,
            )
            journal = Journal.create(options.state_dir, plan)
            log.info(
                "run %s: %d darts in %d jobs, seed %d, %d workers connected",
                run_id,
                plan.darts,
                plan.jobs,
                plan.seed,
                workers,
            )
        else:
            log.info("resuming run %s", run_id)
    except BaseException:
        close_quietly(client)
        raise
    journal.start_session()
    master = RunMaster(options, journal)
    master.attach(client)
    try:
        try:
            master.reconcile()
        except CONNECTION_ERRORS as exc:
            master.drop(exc)
        master.run()
        return build_report(journal.state)
    finally:
        master.close()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` options to ``parser``."""
    add = parser.add_argument
    add("--server", required=True, type=argtypes.server, help="beanstalkd HOST:PORT")
    add(
        "--darts",
        type=argtypes.count(MAX_DARTS),
        metavar="N",
        help=f"darts to throw, e.g. 1e9 (max {MAX_DARTS:.0e})",
    )
    add(
        "--job-darts",
        type=argtypes.count(MAX_JOB_DARTS),
        metavar="N",
        help="darts per job (default: ~1 s of work, >= 4 jobs per worker)",
    )
    add("--seed", type=argtypes.integer(0, MAX_SEED), help="run seed 0..2**63-1 (default random)")
    add(
        "--run-id",
        type=argtypes.run_id,
        metavar="ID",
        help="name of a new run (or of a journaled one to resume)",
    )
    add("--resume", type=argtypes.run_id, metavar="ID", help="resume the journaled run ID")
    add(
        "--ttr",
        type=argtypes.integer(1, MAX_TTR),
        default=DEFAULT_TTR,
        metavar="S",
        help="jobs' time-to-run (default %(default)s)",
    )
    add("--output", type=argtypes.output_file, metavar="FILE", help="write the result JSON to FILE")
    add("--json", action="store_true", help="print the result JSON on stdout instead of text")
    add(
        "--stall-timeout",
        type=argtypes.seconds(1, 86400),
        default=DEFAULT_STALL_TIMEOUT,
        metavar="S",
        help="give up after S s without progress (default %(default)s)",
    )
    add(
        "--state-dir",
        type=argtypes.directory,
        metavar="DIR",
        help="journal directory (default $PI_JOB_STATE_DIR or ~/.local/state/pi-job)",
    )
    add(
        "--progress-interval",
        type=argtypes.seconds(0.1, 3600),
        default=DEFAULT_PROGRESS_INTERVAL,
        metavar="S",
        help="seconds between progress lines when not on a terminal (default %(default)s)",
    )
    add(
        "--priority",
        type=argtypes.integer(0, MAX_PRIORITY),
        default=DEFAULT_PRIORITY,
        metavar="P",
        help="beanstalkd priority of the jobs, 0 is most urgent (default %(default)s)",
    )
    add(
        "--connect-timeout",
        type=argtypes.seconds(0.1, 3600),
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help="give up connecting at start after S s (default %(default)s)",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``pi-job run``; return the exit code."""
    if args.resume is not None and args.run_id is not None and args.resume != args.run_id:
        raise argtypes.UsageError("--resume and --run-id name different runs")
    options = RunOptions.from_args(args)
    try:
        report = execute(options)
    except StalledError as exc:  # distinct: a restart cannot fix it (systemd unit)
        print(f"pi-job run: {exc}", file=sys.stderr)
        return EXIT_STALLED
    except (MasterError, JournalError) as exc:
        print(f"pi-job run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pi-job run: interrupted; the run is resumable with --resume", file=sys.stderr)
        return 130
    if options.output is not None:
        write_json_atomic(options.output, report)
    if options.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(report_lines(report)))
    return 0
