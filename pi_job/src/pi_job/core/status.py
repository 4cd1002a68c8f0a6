"""``pi-job status``: tubes, connected workers, runs in progress and buried jobs with reasons.

Bury reasons live as records on the ``pi.buried`` tube (put there by workers). Status reserves
up to :data:`MAX_REASONS` of them with timeout 0, checks with stats-job that each job is still
buried, and releases them all again. Records of jobs no longer buried (kicked or deleted) are
stale and are deleted, so that they do not pin binlog files forever.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, Final

import greenstalk

from pi_job.core import argtypes
from pi_job.core.connection import CONNECTION_ERRORS, ServerAddress, close_quietly, connect
from pi_job.core.envelope import (
    BURIED_TUBE,
    JOBS_TUBE,
    RESULTS_TUBE_PREFIX,
    InvalidBodyError,
    decode_json_object,
)

MAX_REASONS: Final = 200
"""Most bury-reason records looked at in one status call."""


def tube_counts(client: greenstalk.Client[bytes], tube: str) -> dict[str, int]:
    """Job counts and connections of one tube."""
    stats = client.stats_tube(tube)
    return {
        "ready": stats["current-jobs-ready"],
        "reserved": stats["current-jobs-reserved"],
        "delayed": stats["current-jobs-delayed"],
        "buried": stats["current-jobs-buried"],
        "total_jobs": stats["total-jobs"],
        "watching": stats["current-watching"],
    }


def buried_reasons(
    client: greenstalk.Client[bytes], limit: int = MAX_REASONS
) -> list[dict[str, Any]]:
    """Return the reason records of jobs that are still buried (one per job id)."""
    client.watch(BURIED_TUBE)
    client.ignore(greenstalk.DEFAULT_TUBE)
    held: list[greenstalk.Job[bytes]] = []
    found: dict[int, dict[str, Any]] = {}
    try:
        while len(held) < limit:
            try:
                held.append(client.reserve(timeout=0))
            except greenstalk.TimedOutError:
                break
        for message in list(held):
            record = _reason_record(message.body)
            job_id = record.get("job_id")
            if not isinstance(job_id, int) or isinstance(job_id, bool):
                found.setdefault(-message.id, record)
                continue
            state: str
            try:
                state = client.stats_job(job_id)["state"]
            except greenstalk.NotFoundError:
                state = "gone"
            if state == "buried" and job_id not in found:
                found[job_id] = record
            elif state != "buried" or job_id in found:
                client.delete(message)
                held.remove(message)
    finally:
        for message in held:
            with contextlib.suppress(greenstalk.NotFoundError):
                client.release(message)
    return [found[key] for key in sorted(found)]


def _reason_record(body: bytes) -> dict[str, Any]:
    try:
        record = decode_json_object(body)
    except InvalidBodyError as exc:
        return {"reason": f"unreadable reason record: {exc}", "body_preview": repr(body[:80])}
    return record


def _in_progress(counts: dict[str, int]) -> bool:
    """A results tube is a live run if its master watches it or it holds messages.

    (Workers keep ``use``-ing the tube of their last result, which alone keeps it listed.)
    """
    held = counts["ready"] + counts["reserved"] + counts["delayed"] + counts["buried"]
    return counts["watching"] > 0 or held > 0


def gather(client: greenstalk.Client[bytes]) -> dict[str, Any]:
    """Collect the whole status as a JSON-ready dict."""
    tubes: dict[str, dict[str, int]] = {}
    for name in sorted(client.tubes()):
        with contextlib.suppress(greenstalk.NotFoundError):  # tube vanished meanwhile
            tubes[name] = tube_counts(client, name)
    jobs = tubes.get(JOBS_TUBE)
    runs = [
        {"run": name[len(RESULTS_TUBE_PREFIX) :], "tube": name, **counts}
        for name, counts in tubes.items()
        if name.startswith(RESULTS_TUBE_PREFIX) and _in_progress(counts)
    ]
    return {
        "tubes": tubes,
        "workers": jobs["watching"] if jobs else 0,
        "runs": runs,
        "buried": buried_reasons(client),
    }


def status_lines(status: dict[str, Any]) -> list[str]:
    """Human-readable form of :func:`gather`'s result."""
    lines = [f"{'tube':<40} {'ready':>8} {'reserved':>8} {'delayed':>8} {'buried':>8}"]
    for name, counts in status["tubes"].items():
        lines.append(
            f"{name:<40} {counts['ready']:>8} {counts['reserved']:>8}"
            f" {counts['delayed']:>8} {counts['buried']:>8}"
        )
    lines.append(f"connected workers: {status['workers']}")
    lines.append(f"runs in progress: {len(status['runs'])}")
    for run in status["runs"]:
        lines.append(
            f"  {run['run']}: {run['ready']} results waiting, {run['reserved']} reserved,"
            f" {run['buried']} buried, master {'connected' if run['watching'] else 'absent'}"
        )
    lines.append(f"buried jobs with reasons: {len(status['buried'])}")
    for record in status["buried"]:
        lines.append(
            f"  job {record.get('job_id', '?')} in {record.get('tube', '?')}:"
            f" {record.get('reason')}"
            f" (body {record.get('body_preview')}, by {record.get('worker', '?')})"
        )
    return lines


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``status`` options to ``parser``."""
    parser.add_argument(
        "--server", required=True, type=argtypes.server, help="beanstalkd HOST:PORT"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--connect-timeout",
        type=argtypes.seconds(0.1, 300),
        default=5.0,
        metavar="S",
        help="connection timeout (default %(default)s)",
    )


def command(args: argparse.Namespace) -> int:
    """Print the status; exit 1 when the server cannot be reached."""
    server: ServerAddress = args.server
    client: greenstalk.Client[bytes] | None = None
    try:
        client = connect(server, connect_timeout=args.connect_timeout, io_timeout=30.0)
        status = gather(client)
    except CONNECTION_ERRORS as exc:
        print(f"pi-job status: cannot query beanstalkd at {server}: {exc}", file=sys.stderr)
        return 1
    finally:
        close_quietly(client)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print("\n".join(status_lines(status)))
    return 0
