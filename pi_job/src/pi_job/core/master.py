"""``pi-job run``: plan a run of any workload, push its jobs, fold each answer once, summarise.

Resumability rests on the journal (:mod:`pi_job.core.journal`) and one rule of the worker (an
answer is put *before* its job is deleted). Reconciliation, run at start and after every
reconnect:

1. drain the ready answers of the run's results tube into the journal;
2. peek every pushed-but-not-done job id: present with our body => queued or running;
3. absent => maybe it just finished, so drain the answers again;
4. push the jobs still missing, and those never pushed (for bulk workloads, only as many new
   ones as the window allows: see :data:`BULK_WINDOW`; the rest follow as answers come).

So nothing that is queued, running or done is pushed twice. Each job index is folded at most
once; later answers for it are journaled as duplicates and dropped; answers that do not fit the
run are counted as rejected and dropped. The master knows no workload: the
:class:`~pi_job.workloads.base.Workload` makes the jobs and checks and folds the answers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import greenstalk

from pi_job import workloads
from pi_job.core import argtypes, runlock
from pi_job.core.ahead import map_ahead
from pi_job.core.connection import (
    CONNECTION_ERRORS,
    Backoff,
    Connector,
    ConnectTimeoutError,
    ServerAddress,
    close_quietly,
    connect,
    delete_all,
    empty_tube,
    put_pipelined,
    reserve_ready,
)
from pi_job.core.envelope import (
    JOBS_TUBE,
    Answer,
    InputRef,
    InvalidBodyError,
    Job,
    Payload,
    data_tube,
    decode_answer,
    results_tube,
)
from pi_job.core.journal import Journal, default_state_dir
from pi_job.core.plan import Plan
from pi_job.core.progress import Progress
from pi_job.core.signing import INSECURE, Keyring, add_key_options, keyring_from_args
from pi_job.core.summary import build_summary, iso_time, summary_lines, write_json_atomic
from pi_job.errors import RunError, UsageError
from pi_job.limits import MAX_PRIORITY, MAX_SEED, MAX_TTR, new_run_id
from pi_job.workloads.base import Fold, Prepared, Workload

DEFAULT_TTR: Final = 60
DEFAULT_STALL_TIMEOUT: Final = 60.0
DEFAULT_PROGRESS_INTERVAL: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_PRIORITY: Final = 2**16
POLL_SECONDS: Final = 1
IDLE_CHECK_SECONDS: Final = 5.0
"""Without a new answer for this long, look whether pending jobs vanished from the server
(deleted by hand or by an intruder) and push them again, long before the stall timeout; pending
jobs found buried are kicked (see :data:`MAX_KICKS`)."""
MAX_KICKS: Final = 3
"""Times one master session kicks the same buried job of its run back to ready. A worker buries
a correctly signed job only when its computation fails, so a job buried again and again stays
buried (the run then stalls and ``pi-job status`` shows the reason); a job buried by an
intruder (beanstalkd lets any client bury what it reserved) is computed after all."""
PUSH_SYNC_EVERY: Final = 1000
PUSH_WINDOW: Final = 4
"""Puts sent before the reply of the first is read: beanstalkd stores one body (and writes it
to its binlog) while the next is on its way, and small jobs cost no round trip each."""
PUSH_AHEAD: Final = 2
"""Bulk job bodies (workloads with ``prefetch``) built ahead in a thread while one is sent."""
BULK_WINDOW_START: Final = 8
BULK_WINDOW: Final = 64
BULK_WINDOW_PER_WORKER: Final = 3
"""Bulk workloads (``prefetch``) keep a bounded number of unanswered jobs on the server and push
more as answers come: until the run's first answer at most max(8, 2 x connected workers), so
that the shared inputs (B) reach the workers before all of A is queued behind them; then at most
max(64, 3 x connected workers), so beanstalkd holds a few hundred MiB of panels, not all of A."""
COMMIT_GROUP: Final = 256
"""Most answers journaled under one fsync (group commit)."""
EXIT_STALLED: Final = 3
"""Exit code of a stalled run (no worker took a job for the stall timeout)."""
WORKERS_REFRESH: Final = 2.0
"""Seconds between queries of the connected worker count for the progress display."""
INPUT_CHUNK_SLACK: Final = 1024
"""Bytes kept free below the server's max job size when a shared input is cut into chunks."""

log = logging.getLogger(__name__)


class ServerUnreachableError(RunError):
    """beanstalkd could not be reached in time."""


class StalledError(RunError):
    """No worker took a job of the run for the stall timeout."""

    exit_code = EXIT_STALLED  # distinct: systemd must not restart it (RestartPreventExitStatus)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The ``pi-job run`` command line (the workload's own options stay in ``args``)."""

    server: ServerAddress
    workload: str | None
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
    args: argparse.Namespace
    keyring: Keyring = INSECURE
    """Signs the jobs and checks the answers' MACs (the CLI always gives the cluster's)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """Take the options from parsed arguments."""
        return cls(
            server=args.server,
            workload=args.workload,
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
            args=args,
        )


def open_existing(options: RunOptions) -> Journal | None:
    """Return the journal to resume, or ``None`` for a new run; check option consistency.

    Raises :class:`~pi_job.core.journal.UnknownRunError` for ``--resume`` of an unknown run and
    :class:`~pi_job.errors.UsageError` when the options are bad or contradict the journal.
    """
    run_id = options.resume or options.run_id
    if options.resume is not None:
        journal = Journal.load(options.state_dir, options.resume)
    elif run_id is not None and Journal.exists(options.state_dir, run_id):
        journal = Journal.load(options.state_dir, run_id)
    else:
        workload = workloads.get(options.workload or workloads.DEFAULT)
        workload.parameters(options.args, 1)  # bad values fail here, before connecting
        return None
    try:
        refuse_other_values(journal.state.plan, options.workload, options.seed, options.args)
    except UsageError:
        journal.close()
        raise
    return journal


def refuse_other_values(
    plan: Plan, workload_name: str | None, seed: int | None, args: argparse.Namespace
) -> None:
    """Raise :class:`~pi_job.errors.UsageError` (one line) when the given values contradict
    the journaled ``plan`` of a run (values not given are taken from the plan)."""
    workload = workloads.get(plan.workload)
    clashes = []
    if workload_name is not None and workload_name != plan.workload:
        clashes.append(f"--workload {workload_name} (journal has {plan.workload})")
    if seed is not None and seed != plan.seed:
        clashes.append(f"--seed {seed} (journal has {plan.seed})")
    clashes += workload.check_resume(plan.params, args)
    if clashes:
        raise UsageError(f"run {plan.run_id} exists with other values: {'; '.join(clashes)}")


def run_dir(state_dir: Path, run_id: str) -> Path:
    """Directory of a run's workload files (inputs kept for a resume, outputs)."""
    return state_dir / run_id


class RunMaster:
    """Drives one run to completion against one beanstalkd server."""

    def __init__(self, options: RunOptions, journal: Journal) -> None:
        """Work on the run of ``journal``; replay its answers into the workload's fold."""
        self.options = options
        self.journal = journal
        self.plan = journal.state.plan
        self.nonce = self.plan.nonce or legacy_nonce(self.plan.run_id)
        self.workload: Workload = workloads.get(self.plan.workload)
        self.run_dir = run_dir(options.state_dir, self.plan.run_id)
        self.fold: Fold = self.workload.fold(
            self.plan.params, self.plan.seed, self.plan.jobs, self.run_dir
        )
        for index in sorted(journal.state.results):
            self.fold.restore(index, journal.state.results[index].value)
        self.tube = results_tube(self.plan.run_id)
        self.connector = Connector(options.server, backoff=Backoff(0.1, 2.0, 5.0))
        self.client: greenstalk.Client[bytes] | None = None
        unit, total = self.workload.progress_units(self.plan.params)
        self.progress = Progress(
            self.plan.run_id,
            self.plan.jobs,
            total or self.plan.jobs,
            unit=unit,
            interval=options.progress_interval,
        )
        self.done_work = sum(self.workload.weight(a.value) for a in journal.state.results.values())
        self._workers: int | None = None
        self._workers_at = -WORKERS_REFRESH
        self._kicks: dict[int, int] = {}

    def resumable_hint(self) -> str:
        """How to resume this run."""
        run_id = self.plan.run_id
        server = self.options.server
        return f"run {run_id} is resumable: pi-job run --server {server} --resume {run_id}"

    def attach(self, client: greenstalk.Client[bytes]) -> None:
        """Use an already connected client."""
        self.client = client

    def run(self) -> None:
        """Reconcile, then collect until every job has a folded answer."""
        state = self.journal.state
        last_activity = last_check = time.monotonic()
        done = len(state.results)
        while not state.complete():
            try:
                if self.client is None:
                    self._reconnect()
                    last_activity = last_check = time.monotonic()
                client = self._client()
                self._collect(client, POLL_SECONDS)
                now = time.monotonic()
                if len(state.results) != done:  # rejected and duplicate answers are no progress
                    done = len(state.results)
                    last_activity = last_check = now
                    self._top_up(client)
                elif now - last_check >= min(IDLE_CHECK_SECONDS, self.options.stall_timeout):
                    last_check = now
                    self._top_up(client)  # room the window gained without an answer
                    if self._jobs_gone(client):
                        self.reconcile()
                if now - last_activity >= self.options.stall_timeout:
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

    def drop(self, exc: BaseException) -> None:
        """Forget a broken connection (the next loop reconnects and reconciles)."""
        self.connector.lost(exc)
        close_quietly(self.client)
        self.client = None

    def close(self) -> None:
        """Close the connection, the fold and the journal."""
        self.progress.close()
        close_quietly(self.client)
        self.client = None
        self.fold.close()
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

    # -- shared inputs ---------------------------------------------------------------------
    def upload_inputs(self, inputs: dict[str, bytes]) -> None:
        """Put each shared input on the run's data tube, in chunks, once; journal where. An
        input is hashed in a thread while it is sent (hashlib releases the GIL): the jobs, which
        carry its sha256, wait for neither after the other."""
        client = self._client()
        limit = max_body(client) - INPUT_CHUNK_SLACK
        client.use(data_tube(self.plan.run_id))
        try:
            for name, data in sorted(inputs.items()):
                view = memoryview(data)
                chunks = (view[at : at + limit] for at in range(0, max(1, len(data)), limit))
                with ThreadPoolExecutor(1, thread_name_prefix="digest") as pool:
                    digest = pool.submit(hashlib.sha256, data)
                    ids = list(
                        put_pipelined(
                            client, chunks, window=PUSH_WINDOW, priority=MAX_PRIORITY, ttr=MAX_TTR
                        )
                    )
                ref = InputRef(tuple(ids), digest.result().hexdigest(), len(data))
                self.journal.input(name, ref)
                log.info(
                    "run %s: input %s, %d bytes in %d chunks",
                    self.plan.run_id,
                    name,
                    len(data),
                    len(ids),
                )
        finally:
            client.use(JOBS_TUBE)

    def inputs_present(self, client: greenstalk.Client[bytes]) -> bool:
        """True if every chunk of every shared input is still on the server."""
        for ref in self.journal.state.inputs.values():
            for job_id in ref.ids:
                try:
                    client.stats_job(job_id)
                except greenstalk.NotFoundError:
                    return False
        return True

    def delete_inputs(self) -> None:
        """Delete the run's shared inputs from the server (the run is over): the journaled
        chunks, then whatever else is on the run's data tube (chunks of an upload that a
        stopped master never journaled)."""
        if self.client is None:
            return
        for ref in self.journal.state.inputs.values():
            for job_id in ref.ids:
                try:
                    self.client.delete(job_id)
                except greenstalk.NotFoundError:
                    continue
        try:
            if left := empty_tube(self.client, data_tube(self.plan.run_id)):
                log.info("run %s: %d unjournaled input chunks deleted", self.plan.run_id, left)
        finally:
            self.client.use(JOBS_TUBE)

    # -- reconcile and push ----------------------------------------------------------------
    def job_body(self, index: int) -> bytes:
        """The body of job ``index`` (the same bytes every time)."""
        return b"".join(self.job_parts(index))

    def job_parts(self, index: int) -> tuple[bytes, Payload]:
        """The body of job ``index`` as (header line, payload): pushed without a join."""
        spec, payload = self.workload.job(self.plan.params, self.plan.seed, self.run_dir, index)
        return Job(
            run=self.plan.run_id,
            job=index,
            workload=self.plan.workload,
            spec=spec,
            payload=payload,
            inputs=dict(self.journal.state.inputs),
            nonce=self.nonce,
        ).encode_parts(self.options.keyring)

    def reconcile(self) -> int:
        """Bring queue and journal in line (see the module doc); return the jobs pushed."""
        client = self._client()
        state = self.journal.state
        self._drain(client)
        if state.missing() and state.inputs and not self.inputs_present(client):
            log.warning(
                "run %s: shared inputs are gone from the server, putting them again",
                self.plan.run_id,
            )
            prepared = self.workload.prepare(self.plan.params, self.plan.seed, self.run_dir)
            self.upload_inputs(dict(prepared.inputs))
        unknown: list[int] = []
        for index in state.missing():
            job_id = state.pushed.get(index)
            if job_id is None or not self._still_queued(client, index, job_id):
                unknown.append(index)
        if not unknown:
            return 0
        self._drain(client)
        lost = [i for i in unknown if i in state.pushed and i not in state.results]
        if lost:
            log.warning(
                "run %s: %d pushed jobs are gone from the server, pushing them again",
                self.plan.run_id,
                len(lost),
            )
        todo = self._to_push(lost)
        self._push(client, todo)
        if todo:
            log.info("run %s: pushed %d jobs to %s", self.plan.run_id, len(todo), JOBS_TUBE)
        return len(todo)

    def _window(self) -> int | None:
        """Most unanswered jobs on the server (None: all of them, for compute-only workloads)."""
        if not self.workload.prefetch:
            return None
        workers = self._workers or 0
        if not self.journal.state.results:
            return max(BULK_WINDOW_START, 2 * workers)
        return max(BULK_WINDOW, BULK_WINDOW_PER_WORKER * workers)

    def _to_push(self, lost: list[int]) -> list[int]:
        """The jobs to push now: ``lost`` (pushed, unanswered and gone from the server) again,
        and the jobs never pushed: all of them, or for bulk workloads as many as the window
        has room for beside the unanswered jobs still on the server."""
        state = self.journal.state
        missing = state.missing()
        fresh = [index for index in missing if index not in state.pushed]
        window = self._window()
        if window is not None:
            on_server = sum(1 for index in missing if index in state.pushed) - len(lost)
            fresh = fresh[: max(0, window - on_server - len(lost))]
        return sorted(lost + fresh)

    def _top_up(self, client: greenstalk.Client[bytes]) -> None:
        """Push jobs never pushed as answers come in (compute-only workloads pushed them all
        at the start)."""
        if self.workload.prefetch:
            self._push(client, self._to_push([]))

    def _still_queued(self, client: greenstalk.Client[bytes], index: int, job_id: int) -> bool:
        try:
            job = client.peek(job_id)
        except greenstalk.NotFoundError:
            return False
        return job.body == self.job_body(index)

    def _push(self, client: greenstalk.Client[bytes], indices: list[int]) -> None:
        """Put the jobs ``indices`` and journal their ids (see :data:`PUSH_WINDOW`)."""
        if not indices:
            return
        if self.workload.prefetch:  # bulk bodies: build the next ones while one is sent
            bodies = map_ahead(self.job_parts, indices, PUSH_AHEAD)
        else:
            bodies = map(self.job_parts, indices)
        ids = put_pipelined(
            client, bodies, window=PUSH_WINDOW, priority=self.plan.priority, ttr=self.plan.ttr
        )
        for count, (index, job_id) in enumerate(zip(indices, ids, strict=True), 1):
            self.journal.pushed(index, job_id)
            if count % PUSH_SYNC_EVERY == 0:
                self.journal.sync()
        self.journal.sync()

    # -- collect ---------------------------------------------------------------------------
    def _drain(self, client: greenstalk.Client[bytes]) -> int:
        """Take every ready answer (no waiting); return how many messages were handled."""
        handled = 0
        while self._collect(client, 0):
            handled += 1
        return handled

    def _collect(self, client: greenstalk.Client[bytes], timeout: int) -> bool:
        """Take the answers that are ready (waiting up to ``timeout`` s for the first).

        Group commit: up to :data:`COMMIT_GROUP` answers are folded and journaled, the journal
        is fsynced once, and only then are their messages deleted, so a crash loses nothing
        (reserved messages go back to the queue; their ids are known, so a re-read is no
        duplicate) and one fsync serves many answers. The reserves and the deletes of a group
        are pipelined (:func:`~pi_job.core.connection.reserve_ready`, ``delete_all``): a few
        round trips per group instead of two per answer.
        """
        messages = reserve_ready(client, COMMIT_GROUP, timeout)
        if not messages:
            return False
        for message in messages:
            self._accept(client, message)
        self.journal.sync()
        for job_id in delete_all(client, [message.id for message in messages]):
            log.warning("answer message %d vanished before its delete", job_id)  # pragma: no cover
        return True

    def _check(self, answer: Answer) -> None:
        if answer.run != self.plan.run_id:
            raise InvalidBodyError(f"answer of run {answer.run!r} in {self.tube}")
        if not 0 <= answer.job < self.plan.jobs:
            raise InvalidBodyError(f"job {answer.job} out of range 0..{self.plan.jobs - 1}")
        if answer.nonce != self.nonce:
            raise InvalidBodyError("answer to another run (nonce differs)")
        self.workload.check_answer(self.plan.params, answer.job, answer.value, answer.payload)

    def _accept(self, client: greenstalk.Client[bytes], message: greenstalk.Job[bytes]) -> None:
        """Check, fold and journal one answer (not yet durable: :meth:`_collect` syncs)."""
        state = self.journal.state
        try:
            answer = decode_answer(message.body, self.options.keyring)
            self._check(answer)
        except InvalidBodyError as exc:
            log.warning("dropping bad answer %d in %s: %s", message.id, self.tube, exc)
            self.journal.rejected(str(exc), message.id)
        else:
            if answer.job not in state.results:
                self.fold.add(answer.job, answer.value, answer.payload)
                self.journal.result(answer, message.id, sync=False)
                self.done_work += self.workload.weight(answer.value)
            elif message.id not in state.result_ids:
                log.info(
                    "run %s job %d: duplicate answer from %s dropped",
                    self.plan.run_id,
                    answer.job,
                    answer.worker,
                )
                self.journal.duplicate(answer, message.id, sync=False)

    # -- stall detection and progress ------------------------------------------------------
    def _jobs_gone(self, client: greenstalk.Client[bytes]) -> bool:
        """True if a pushed job without an answer is no longer on the server, or a job never
        pushed has room on it (reconcile pushes both).

        A pending job found buried is kicked back to ready when its body is still ours (at most
        :data:`MAX_KICKS` times per job and session); one whose body is not ours is gone.
        """
        state = self.journal.state
        if self._to_push([]):  # never pushed, though there is room for it (compute-only runs)
            return True
        for index in state.missing():
            job_id = state.pushed.get(index)
            if job_id is None:  # it waits for room in the window
                continue
            try:
                buried = client.stats_job(job_id)["state"] == "buried"
                if buried and not self._kick(client, index, job_id):
                    return True
            except greenstalk.NotFoundError:
                log.info("run %s: job %d (id %d) is gone", self.plan.run_id, index, job_id)
                return True
        return False

    def _kick(self, client: greenstalk.Client[bytes], index: int, job_id: int) -> bool:
        """Kick our buried job ``index`` (False if the buried body is not ours)."""
        if client.peek(job_id).body != self.job_body(index):
            return False
        kicks = self._kicks.get(index, 0)
        if kicks >= MAX_KICKS:
            return True  # left buried: see MAX_KICKS
        self._kicks[index] = kicks + 1
        client.kick_job(job_id)
        log.warning(
            "run %s: job %d (id %d) was buried, kicked back to ready (%d of %d)",
            self.plan.run_id,
            index,
            job_id,
            kicks + 1,
            MAX_KICKS,
        )
        return True

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
        self.progress.update(len(state.results), self.done_work, self._workers, force=force)

    def finish(self) -> dict[str, Any]:
        """Drain late duplicates, verify, delete the run's inputs; return the summary."""
        if self.client is not None:
            try:
                self._drain(self.client)
                self.delete_inputs()
            except CONNECTION_ERRORS as exc:
                log.info("could not drain late duplicates or delete inputs: %s", exc)
        self.progress.close()
        state = self.journal.state
        first = state.sessions[0].start if state.sessions else time.time()
        self.journal.touch_session()
        seconds = state.active_seconds  # the run's time, without its verification
        keys = self.fold.summary(seconds)
        keys["verification"] = self.fold.verify()
        self.journal.finish(
            {
                "started": iso_time(first),
                "finished": iso_time(time.time()),
                "seconds": seconds,
                "workload_keys": keys,
            }
        )
        return build_summary(state, self.workload, keys)


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


def max_body(client: greenstalk.Client[bytes]) -> int:
    """Largest body the server keeps safely: its ``-z`` minus 2 (beanstalkd stores the CRLF, and
    a body of exactly ``-z`` bytes is not read back from the binlog after a restart)."""
    return int(client.stats()["max-job-size"]) - 2


def legacy_nonce(run_id: str) -> str:
    """The nonce of a run journaled before plans had one (derived from its run id)."""
    return hashlib.sha256(b"pi-job/legacy-nonce\0" + run_id.encode()).hexdigest()[:32]


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


def unjournaled_inputs(journal: Journal, state_dir: Path) -> Prepared | None:
    """The shared inputs to put for a run whose first master stopped after its plan but before
    it journaled them (it puts them before its first push); ``None`` once anything was pushed."""
    state = journal.state
    if state.pushed or state.inputs:
        return None
    plan = state.plan
    workload = workloads.get(plan.workload)
    return workload.prepare(plan.params, plan.seed, run_dir(state_dir, plan.run_id))


def execute(options: RunOptions) -> dict[str, Any]:
    """Run (or resume) a run to completion and return its summary."""
    runlock.hold(options.state_dir, options.resume or options.run_id)  # one master per run
    journal = open_existing(options)
    finished = None if journal is None else journal.state.finished
    if journal is not None and finished is not None:
        log.info("run %s is already finished; reporting it again", journal.state.plan.run_id)
        state = journal.state
        journal.close()
        workload = workloads.get(state.plan.workload)
        return build_summary(state, workload, dict(finished["workload_keys"]))
    try:  # after the option checks, before connecting
        options = dataclasses.replace(options, keyring=keyring_from_args(options.args))
    except UsageError:
        if journal is not None:
            journal.close()
        raise
    run_id = journal.state.plan.run_id if journal else (options.run_id or new_run_id())
    client = first_connect(options, results_tube(run_id))
    prepared = None
    try:
        if journal is None:
            workload = workloads.get(options.workload or workloads.DEFAULT)
            workers = connected_workers(client)
            params = workload.parameters(options.args, workers, max_body(client))
            seed = options.seed if options.seed is not None else secrets.randbits(63)
            directory = run_dir(options.state_dir, run_id)
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            prepared = workload.prepare(params, seed, directory)
            plan = Plan(
                run_id=run_id,
                workload=workload.name,
                seed=seed,
                jobs=prepared.jobs,
                ttr=options.ttr,
                priority=options.priority,
                params=params,
                nonce=secrets.token_hex(16),
            )
            journal = Journal.create(options.state_dir, plan)
            log.info(
                "run %s: %s %s in %d jobs, seed %d, %d workers connected",
                run_id,
                workload.name,
                json.dumps(params, separators=(",", ":")),
                plan.jobs,
                plan.seed,
                workers,
            )
        else:
            log.info("resuming run %s", run_id)
            prepared = unjournaled_inputs(journal, options.state_dir)
        log.info("run %s: %s", run_id, options.keyring.describe())
    except BaseException:
        close_quietly(client)
        raise
    journal.start_session()
    master = RunMaster(options, journal)
    master.attach(client)
    try:
        try:
            if prepared is not None and prepared.inputs:
                master.upload_inputs(dict(prepared.inputs))
            prepared = None  # on the server now: not held through the run (B: 512 MiB at n=8192)
            master.reconcile()
        except CONNECTION_ERRORS as exc:
            master.drop(exc)
        master.run()
        return master.finish()
    finally:
        master.close()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the generic ``run`` options, then every installed workload's own options."""
    add = parser.add_argument
    add("--server", required=True, type=argtypes.server, help="beanstalkd HOST:PORT")
    add(
        "--workload",
        metavar="NAME",
        help=f"what to run (default {workloads.DEFAULT}; `pi-job workloads` lists them)",
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
    add(
        "--output", type=argtypes.output_file, metavar="FILE", help="write the summary JSON to FILE"
    )
    add("--json", action="store_true", help="print the summary JSON on stdout instead of text")
    add(
        "--check",
        action="store_true",
        help="only check the values (and input files) of a new run, or with --run-id of a "
        "journaled run the values against its journal; connect to, lock and write nothing",
    )
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
    add_key_options(parser)
    for name in workloads.names():
        group = parser.add_argument_group(f"workload {name}")
        try:
            workloads.get(name).add_arguments(group)  # type: ignore[arg-type]
        except (argparse.ArgumentError, UsageError) as exc:
            log.warning("workload %s: its options are not available: %s", name, exc)


def check_values(args: argparse.Namespace) -> int:
    """``--check``: connect to nothing, lock nothing, write nothing; exit 0 or raise.

    With ``--run-id`` of a journaled run the values are checked against its journal, as a real
    start checks them (the same one-line refusal); otherwise as the values of a new run.
    """
    plan = None
    if args.run_id is not None:
        plan = Journal.read_plan(args.state_dir or default_state_dir(), args.run_id)
    if plan is None:
        workload = workloads.get(args.workload or workloads.DEFAULT)
        name, params = workload.name, workload.parameters(args, 1)
    else:
        refuse_other_values(plan, args.workload, args.seed, args)
        name, params = plan.workload, plan.params
    print(f"pi-job run: {name} values are valid: {json.dumps(params)}")
    return 0


def command(args: argparse.Namespace) -> int:
    """Run ``pi-job run``; return the exit code (errors are mapped by the CLI)."""
    if args.resume is not None and args.run_id is not None and args.resume != args.run_id:
        raise UsageError("--resume and --run-id name different runs")
    if args.workload is not None:
        workloads.get(args.workload)
    if args.check:
        return check_values(args)
    options = RunOptions.from_args(args)
    try:
        summary = execute(options)
    except KeyboardInterrupt:
        print("pi-job run: interrupted; the run is resumable with --resume", file=sys.stderr)
        return 130
    if options.output is not None:
        write_json_atomic(options.output, summary)
    if options.json:
        print(json.dumps(summary, indent=2))
    else:
        workload = workloads.get(summary["workload"])
        print("\n".join(summary_lines(summary, workload, summary["result_keys"])))
    return 0
