"""The master's on-disk run journal: an append-only JSON-lines file per run.

Records (one JSON object per line, each with ``type`` and time ``t``):

- ``plan``: the run's plan (first line, written once, fsynced);
- ``session``: a master process started working on the run;
- ``pushed``: job ``job`` was put into beanstalkd and got id ``id`` (after ``put`` returned);
- ``input``: a shared input of the run was put on its data tube (chunk ids, sha256, size);
- ``result``: a counted answer (written and fsynced *before* it is deleted from the tube);
- ``duplicate``: a second answer for an already counted job, dropped;
- ``rejected``: an answer that did not fit the run (bad body, wrong job), dropped;
- ``finished``: the run is complete (timing of the final report).

A crash can leave a partial last line; it is ignored on load and cut off before appending.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pi_job.core.envelope import Answer, InputRef
from pi_job.core.plan import Plan
from pi_job.errors import RunError
from pi_job.limits import check_run_id

JOURNAL_VERSION: Final = 1


class JournalError(RunError):
    """Base class of journal errors."""


class UnknownRunError(JournalError):
    """No journal exists for the requested run id."""


class RunExistsError(JournalError):
    """A journal already exists for a run id that was meant to be new."""


class CorruptJournalError(JournalError):
    """A journal line (other than a torn last line) cannot be understood."""


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$PI_JOB_STATE_DIR``, else ``$XDG_STATE_HOME/pi-job``, else ``~/.local/state/pi-job``."""
    env = dict(os.environ) if environ is None else environ
    if env.get("PI_JOB_STATE_DIR"):
        return Path(env["PI_JOB_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "pi-job"
    return Path.home() / ".local" / "state" / "pi-job"


@dataclass
class Session:
    """Start and last activity time of one master process working on the run."""

    start: float
    last: float


@dataclass
class RunState:
    """Everything the journal knows about a run."""

    plan: Plan
    pushed: dict[int, int] = field(default_factory=dict)
    """job index -> beanstalkd job id of its latest push."""
    results: dict[int, Answer] = field(default_factory=dict)
    """job index -> counted answer (its header; payloads are the workload's to keep)."""
    inputs: dict[str, InputRef] = field(default_factory=dict)
    """name -> where the run's shared input lives on the server."""
    rejected: int = 0
    result_ids: set[int] = field(default_factory=set)
    """beanstalkd ids of result messages already journaled (re-reads are not duplicates)."""
    duplicates: int = 0
    sessions: list[Session] = field(default_factory=list)
    finished: dict[str, Any] | None = None

    @property
    def active_seconds(self) -> float:
        """Wall time spent by master sessions on the run (gaps between sessions excluded)."""
        return sum(max(0.0, session.last - session.start) for session in self.sessions)

    def complete(self) -> bool:
        """True when every job has a counted result (cheap: no list of the missing ones)."""
        return len(self.results) >= self.plan.jobs and not self.missing()

    def missing(self) -> list[int]:
        """Job indices without a counted result, in order."""
        return [index for index in range(self.plan.jobs) if index not in self.results]


class Journal:
    """Appends records to, and replays, the journal of one run."""

    def __init__(self, path: Path, state: RunState) -> None:
        """Use :meth:`create` or :meth:`load` instead."""
        self.path = path
        self.state = state
        self._file = path.open("a", encoding="utf-8")

    @staticmethod
    def path_for(state_dir: Path, run_id: str) -> Path:
        """Return the journal path of ``run_id`` in ``state_dir``."""
        return state_dir / f"{check_run_id(run_id)}.jsonl"

    @classmethod
    def exists(cls, state_dir: Path, run_id: str) -> bool:
        """True if a journal for ``run_id`` exists."""
        return cls.path_for(state_dir, run_id).exists()

    @classmethod
    def create(cls, state_dir: Path, plan: Plan) -> Journal:
        """Create the journal of a new run (raise :class:`RunExistsError` if there is one)."""
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = cls.path_for(state_dir, plan.run_id)
        record = {"type": "plan", "v": JOURNAL_VERSION, "t": time.time(), **plan.to_record()}
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except FileExistsError:
            raise RunExistsError(f"run {plan.run_id} already has a journal at {path}") from None
        _fsync_dir(state_dir)
        return cls(path, RunState(plan=plan))

    @classmethod
    def load(cls, state_dir: Path, run_id: str) -> Journal:
        """Replay the journal of ``run_id`` (raise :class:`UnknownRunError` if there is none)."""
        path = cls.path_for(state_dir, run_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UnknownRunError(f"unknown run id {run_id!r} (no journal {path})") from None
        complete, _, torn = raw.rpartition(b"\n")
        if torn:
            with path.open("r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        lines = complete.decode("utf-8").splitlines() if complete else []
        if not lines:
            raise CorruptJournalError(f"{path}: no plan record")
        state = _replay(path, lines)
        if state.plan.run_id != run_id:
            raise CorruptJournalError(f"{path}: plan is for run {state.plan.run_id!r}")
        return cls(path, state)

    @classmethod
    def read_plan(cls, state_dir: Path, run_id: str) -> Plan | None:
        """The plan of ``run_id`` without changing anything; ``None`` when it has no journal.

        Reads the first line only: no lock, no repair of a torn last line, no file left open,
        so it is safe beside a live master. Raises :class:`CorruptJournalError` like
        :meth:`load` when that line is not a complete plan record of ``run_id``.
        """
        path = cls.path_for(state_dir, run_id)
        try:
            with path.open("rb") as handle:
                first = handle.readline()
        except FileNotFoundError:
            return None
        if not first.endswith(b"\n"):
            raise CorruptJournalError(f"{path}: no plan record")
        try:
            line = first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptJournalError(f"{path}:1: {exc}") from None
        plan = _replay(path, [line]).plan
        if plan.run_id != run_id:
            raise CorruptJournalError(f"{path}: plan is for run {plan.run_id!r}")
        return plan

    def close(self) -> None:
        """Flush and close the file."""
        self.sync()
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self) -> None:
        """Flush buffered records to the disk."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def start_session(self) -> None:
        """Record that a master process starts working on the run."""
        now = time.time()
        self.state.sessions.append(Session(now, now))
        self._append({"type": "session", "t": now, "pid": os.getpid()}, sync=False)

    def touch_session(self) -> None:
        """Extend the current session's active time to now (not written by itself)."""
        if self.state.sessions:
            self.state.sessions[-1].last = time.time()

    def pushed(self, index: int, job_id: int) -> None:
        """Record that job ``index`` was put and got id ``job_id`` (call :meth:`sync` later)."""
        self.state.pushed[index] = job_id
        self._append({"type": "pushed", "t": time.time(), "job": index, "id": job_id}, sync=False)

    def input(self, name: str, ref: InputRef) -> None:
        """Record durably where the shared input ``name`` was put."""
        self.state.inputs[name] = ref
        self._append({"type": "input", "t": time.time(), "name": name, **ref.to_json()}, sync=True)

    def rejected(self, reason: str, message_id: int) -> None:
        """Record an answer that was dropped because it did not fit the run."""
        self.state.rejected += 1
        self._append(
            {"type": "rejected", "t": time.time(), "id": message_id, "reason": reason[:200]},
            sync=False,
        )

    def result(self, result: Answer, message_id: int, *, sync: bool = True) -> None:
        """Record a counted result; durable (fsync) before its message is deleted: with
        ``sync=False`` the caller syncs a group of records once, then deletes their messages."""
        # the header only: a payload is the workload's to keep, and it is a view of the whole
        # body (a run's results would otherwise hold all of C)
        header = dataclasses.replace(result, payload=b"") if result.payload else result
        self.state.results[result.job] = header
        self.state.result_ids.add(message_id)
        record = {"type": "result", "t": time.time(), "id": message_id, **result.to_record()}
        self._append(record, sync=sync)

    def duplicate(self, result: Answer, message_id: int, *, sync: bool = True) -> None:
        """Record a dropped duplicate result (``sync`` as for :meth:`result`)."""
        self.state.duplicates += 1
        self.state.result_ids.add(message_id)
        record = {"type": "duplicate", "t": time.time(), "id": message_id, **result.to_record()}
        self._append(record, sync=sync)

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run finished, keeping ``summary`` (timing of the report)."""
        self.state.finished = dict(summary)
        self._append({"type": "finished", "t": time.time(), **summary}, sync=True)

    def _append(self, record: dict[str, Any], *, sync: bool) -> None:
        self.touch_session()
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        if sync:
            self.sync()


def _replay(path: Path, lines: list[str]) -> RunState:
    state: RunState | None = None
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            kind = record["type"]
            if state is None:
                if kind != "plan":
                    raise CorruptJournalError(f"{path}:{number}: first record is not the plan")
                state = RunState(plan=Plan.from_record(record))
                continue
            _apply(state, kind, record)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptJournalError(f"{path}:{number}: {exc}") from None
    if state is None:  # pragma: no cover - guarded by the caller
        raise CorruptJournalError(f"{path}: empty")
    return state


def _apply(state: RunState, kind: str, record: dict[str, Any]) -> None:
    stamp = float(record["t"])
    if kind == "session":
        state.sessions.append(Session(stamp, stamp))
        return
    if state.sessions:
        state.sessions[-1].last = max(state.sessions[-1].last, stamp)
    if kind == "pushed":
        state.pushed[int(record["job"])] = int(record["id"])
    elif kind == "input":
        state.inputs[str(record["name"])] = InputRef.from_json(
            {key: record[key] for key in ("ids", "sha256", "size")}
        )
    elif kind == "rejected":
        state.rejected += 1
    elif kind in ("result", "duplicate"):
        fields = {
            key: record[key]
            for key in Answer.__dataclass_fields__
            if key != "payload" and (key in record or key != "nonce")
        }
        result = Answer(**fields)
        state.result_ids.add(int(record["id"]))
        if kind == "result":
            state.results[result.job] = result
        else:
            state.duplicates += 1
    elif kind == "finished":
        state.finished = {key: value for key, value in record.items() if key not in ("type", "t")}
    else:
        raise CorruptJournalError(f"unknown record type {kind!r}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
