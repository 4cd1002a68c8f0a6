"""``pi-job runs``: the runs of this master host, their state, progress and systemd unit.

A run lives in ``<state-dir>/<id>.jsonl`` (its journal); under systemd its master is the unit
``pi-run@<id>.service`` (arguments in ``<state-dir>/runs/<id>.env``). The state shown is:

- ``finished``: the journal has its ``finished`` record;
- ``running``: a live master holds the run's lock (``<id>.lock``), or its unit is active;
- ``queued``: the unit is active but its master has not written the plan yet;
- ``restarting``: the unit waits to start the master again after a crash (Restart=);
- ``failed``: the unit failed for good (bad values, stalled: ``systemctl status`` says why);
- ``stopped``: nobody works on it; ``run_pi.yml -e run_id=ID`` resumes it;
- ``cancelled``: ``pi-job runs --cancel ID`` removed it from the queue.

``--cancel ID`` stops (and disables) the unit, then deletes the run's queued jobs, its
results tube and its shared inputs (``pi.data.<run>``); ``--prune DAYS`` deletes the files of
runs finished (or cancelled) more than DAYS days ago.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import greenstalk

from pi_job.core import argtypes, runlock
from pi_job.core.connection import (
    CONNECTION_ERRORS,
    ServerAddress,
    close_quietly,
    connect,
    empty_tube,
)
from pi_job.core.envelope import data_tube, results_tube
from pi_job.core.journal import default_state_dir
from pi_job.errors import UsageError

UNIT = "pi-run@{}.service"
UNIT_PROPS = ("ActiveState", "SubState", "Result", "NRestarts", "StatusText", "UnitFileState")


@dataclass
class RunInfo:
    """One line of ``pi-job runs``."""

    run_id: str
    state: str
    done: int
    jobs: int
    percent: float
    unit: str
    unit_state: str
    restarts: int
    master_pid: int | None
    last_activity: float | None
    finished: float | None
    status: str


def read_journal(path: Path) -> dict[str, Any]:
    """The few facts ``runs`` needs from a journal (it never locks or repairs it)."""
    plan: dict[str, Any] = {}
    done: set[int] = set()
    finished: float | None = None
    last: float | None = None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if not isinstance(record, dict):
                continue
            kind = record.get("type")
            if isinstance(record.get("t"), int | float):
                last = float(record["t"])
            if kind == "plan":
                plan = record
            elif kind == "result" and isinstance(record.get("job"), int):
                done.add(record["job"])
            elif kind == "finished":
                finished = last
    return {"plan": plan, "done": len(done), "finished": finished, "last": last}


def unit_state(run_id: str) -> dict[str, str]:
    """The unit's properties (empty without systemd)."""
    if shutil.which("systemctl") is None:
        return {}
    argv = ["systemctl", "show", UNIT.format(run_id), *(f"--property={p}" for p in UNIT_PROPS)]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def run_ids(state_dir: Path) -> list[str]:
    """Every run with a journal or a unit environment file."""
    ids = {p.stem for p in state_dir.glob("*.jsonl")}
    ids |= {p.stem for p in (state_dir / "runs").glob("*.env")}
    return sorted(ids)


def describe(state_dir: Path, run_id: str) -> RunInfo:
    """The state of one run."""
    path = state_dir / f"{run_id}.jsonl"
    facts = read_journal(path) if path.exists() else {}
    plan = facts.get("plan") or {}
    jobs = int(plan.get("jobs", 0))
    done = int(facts.get("done", 0))
    unit = unit_state(run_id)
    active = unit.get("ActiveState", "")
    pid = runlock.holder_pid(state_dir, run_id)
    if facts.get("finished") is not None:
        state = "finished"
    elif (state_dir / "runs" / f"{run_id}.cancelled").exists():
        state = "cancelled"
    elif active == "activating" and unit.get("SubState") == "auto-restart":
        state = "restarting"
    elif pid is not None or active in ("active", "reloading"):
        state = "running" if plan else "queued"
    elif active == "activating":
        state = "queued"
    elif active == "failed":
        state = "failed"
    else:
        state = "stopped"
    return RunInfo(
        run_id=run_id,
        state=state,
        done=done,
        jobs=jobs,
        percent=round(100.0 * done / jobs, 1) if jobs else 0.0,
        unit=UNIT.format(run_id) if unit else "-",
        unit_state=f"{active}/{unit.get('SubState', '')}" if unit else "-",
        restarts=int(unit.get("NRestarts", "0") or 0),
        master_pid=pid if pid and pid > 0 else None,
        last_activity=facts.get("last"),
        finished=facts.get("finished"),
        status=unit.get("StatusText", ""),
    )


def run_lines(runs: list[RunInfo], now: float) -> list[str]:
    """The human-readable table."""
    if not runs:
        return ["no runs"]
    lines = [f"{'run':<34} {'state':<10} {'jobs':>13} {'unit':<24} {'restarts':>8}  last activity"]
    for r in runs:
        age = "-" if r.last_activity is None else f"{now - r.last_activity:.0f} s ago"
        jobs = f"{r.done}/{r.jobs}" if r.jobs else "-"
        lines.append(
            f"{r.run_id:<34} {r.state:<10} {jobs:>13} {r.unit_state:<24} {r.restarts:>8}  {age}"
        )
    return lines


def cancel(state_dir: Path, server: ServerAddress, run_id: str) -> str:
    """Stop the run's unit and remove its jobs and results from the queue; return a summary."""
    if shutil.which("systemctl") is not None:
        subprocess.run(
            ["systemctl", "disable", "--now", "--quiet", UNIT.format(run_id)],
            capture_output=True,
            timeout=120,
            check=False,
        )
    pid = runlock.holder_pid(state_dir, run_id)
    if pid is not None:
        raise UsageError(f"run {run_id} still has a live master (pid {pid}): stop it first")
    path = state_dir / f"{run_id}.jsonl"
    pushed: set[int] = set()
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("type") == "pushed":
                    pushed.add(int(record["id"]))
    tube = results_tube(run_id)
    deleted = busy = 0
    client = connect(server, watch=tube, connect_timeout=10.0, io_timeout=30.0)
    try:
        for job_id in sorted(pushed):
            try:
                job = client.peek(job_id)
            except greenstalk.NotFoundError:
                continue
            if run_id.encode() not in job.body:
                continue  # a reused id: not ours
            try:
                client.delete(job_id)
                deleted += 1
            except greenstalk.NotFoundError:
                busy += 1  # reserved by a worker right now: its answer is dropped below or later
        results = empty_tube(client, tube)
        inputs = empty_tube(client, data_tube(run_id))  # shared inputs: ready, read by peek
    finally:
        close_quietly(client)
    marker = state_dir / "runs" / f"{run_id}.cancelled"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{time.time()}\n", encoding="utf-8")
    return (
        f"run {run_id} cancelled: unit stopped, {deleted} queued jobs deleted, "
        f"{busy} held by workers, {results} result messages and {inputs} shared inputs removed"
    )


def prune(state_dir: Path, days: float, now: float) -> list[str]:
    """Delete the files of runs finished or cancelled more than ``days`` days ago."""
    removed = []
    for run_id in run_ids(state_dir):
        info = describe(state_dir, run_id)
        marker = state_dir / "runs" / f"{run_id}.cancelled"
        ended = info.finished
        if info.state == "cancelled":
            ended = marker.stat().st_mtime
        if info.state not in ("finished", "cancelled") or ended is None:
            continue
        if now - ended < days * 86400:
            continue
        if shutil.which("systemctl") is not None:
            subprocess.run(
                ["systemctl", "disable", "--quiet", UNIT.format(run_id)],
                capture_output=True,
                timeout=60,
                check=False,
            )
        for path in (
            state_dir / f"{run_id}.jsonl",
            state_dir / f"{run_id}.lock",
            state_dir / "runs" / f"{run_id}.env",
            marker,
            state_dir / "results" / f"{run_id}.json",
            state_dir / "logs" / f"{run_id}.log",
        ):
            path.unlink(missing_ok=True)
        removed.append(run_id)
    return removed


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``runs`` options to ``parser``."""
    add = parser.add_argument
    add(
        "--state-dir",
        type=argtypes.directory,
        metavar="DIR",
        help="journal directory (default $PI_JOB_STATE_DIR or ~/.local/state/pi-job)",
    )
    add("--json", action="store_true", help="print JSON")
    add("--cancel", type=argtypes.run_id, metavar="ID", help="stop run ID and empty its jobs")
    add("--server", type=argtypes.server, help="beanstalkd HOST:PORT (for --cancel)")
    add(
        "--prune",
        type=argtypes.seconds(0, 36500),
        metavar="DAYS",
        help="delete the files of runs finished or cancelled more than DAYS days ago",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``pi-job runs``; return the exit code."""
    state_dir: Path = args.state_dir or default_state_dir()
    now = time.time()
    if args.cancel is not None:
        if args.server is None:
            raise UsageError("--cancel needs --server HOST:PORT")
        try:
            print(cancel(state_dir, args.server, args.cancel))
        except CONNECTION_ERRORS as exc:
            print(f"pi-job runs: cannot reach beanstalkd at {args.server}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.prune is not None:
        removed = prune(state_dir, args.prune, now)
        print(f"pruned {len(removed)} runs" + (f": {' '.join(removed)}" if removed else ""))
        return 0
    runs = [describe(state_dir, run_id) for run_id in run_ids(state_dir)]
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
    else:
        print("\n".join(run_lines(runs, now)))
    return 0
