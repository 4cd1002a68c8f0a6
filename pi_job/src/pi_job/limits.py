"""Every limit and value parser shared by the CLI, the workloads and the Ansible roles.

Standard library only, so that the roles' filter plugins load this very file (they put
``pi_job/src`` on ``sys.path``) and check playbook values exactly as ``pi-job`` does.
"""

from __future__ import annotations

import math
import re
import secrets
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from pi_job.errors import UsageError

MAX_DARTS: Final = 10**15
"""Largest number of darts one pi run may ask for."""
MAX_JOB_DARTS: Final = 10**12
"""Largest number of darts in one pi job."""
MAX_JOBS: Final = 10**6
"""Largest number of jobs in one run (bounds the journal and the queue)."""
MAX_SEED: Final = 2**63 - 1
MAX_PRIORITY: Final = 2**32 - 1
MAX_TTR: Final = 86_400
MAX_HEADER_BYTES: Final = 4096
"""Largest JSON header of a job or answer body (real ones are about 100 to 400 bytes)."""
MAX_TEXT: Final = 255
"""Longest host, worker, backend or workload name in a body."""

RUN_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_RUN_ID_RE: Final = re.compile(RUN_ID_PATTERN)
_COUNT_RE: Final = re.compile(r"[0-9](?:_?[0-9])*(?:\.[0-9](?:_?[0-9])*)?(?:[eE]\+?[0-9]{1,3})?")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")


class InvalidValueError(UsageError, ValueError):
    """A value outside its allowed form or range (``str()`` is the one-line reason)."""


def _quoted(text: object) -> str:
    """The value as the user typed it, in double quotes, on one line."""
    return '"' + " ".join(str(text).split("\n")) + '"'


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a valid run id, else raise :class:`InvalidValueError`."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise InvalidValueError(f"invalid run id {_quoted(run_id)} (expected {RUN_ID_PATTERN})")
    return run_id


def new_run_id(prefix: str = "") -> str:
    """A fresh run id: ``[PREFIX-]`` UTC time plus 4 random hex digits."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
    return check_run_id(f"{prefix}-{stamp}" if prefix else stamp)


def parse_count(text: str, maximum: int, minimum: int = 1) -> int:
    """Parse an exact integer count such as ``1000``, ``1e9``, ``1_000_000`` or ``2.5e9``.

    The value must be an exact integer (``2.5e9`` is, ``2.5`` and ``1e-3`` are not) between
    ``minimum`` and ``maximum``. No float is ever involved, so ``12345678901234567`` stays exact.
    """
    cleaned = text.strip()
    if not _COUNT_RE.fullmatch(cleaned):
        raise InvalidValueError(
            f"not a count: {_quoted(text)} (use e.g. 1000000, 1e9, 1_000_000, 2.5e9)"
        )
    try:
        value = Decimal(cleaned.replace("_", ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex already rejects these
        raise InvalidValueError(f"not a count: {_quoted(text)}") from exc
    if value != value.to_integral_value():
        raise InvalidValueError(f"not a whole number: {_quoted(text)}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidValueError(f"{_quoted(text)} is out of range {minimum}..{maximum}")
    return number


def parse_int(text: str, minimum: int, maximum: int) -> int:
    """Parse a plain decimal integer in ``minimum..maximum``."""
    stripped = text.strip()
    if not _INT_RE.fullmatch(stripped):
        raise InvalidValueError(f"not an integer: {_quoted(text)}")
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise InvalidValueError(f"{value} is out of range {minimum}..{maximum}")
    return value


def parse_seconds(text: str, minimum: float, maximum: float) -> float:
    """Parse a finite number of seconds in ``minimum..maximum``."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidValueError(f"not a number of seconds: {_quoted(text)}") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise InvalidValueError(f"{_quoted(text)} is out of range {minimum:g}..{maximum:g}")
    return value


MAX_BODY_LIMIT: Final = 2**30 - 2
"""Largest body a beanstalkd (``-z`` at most 1 GiB) keeps across a restart."""


def beanstalkd_sizes(max_body: int) -> tuple[int, int]:
    """beanstalkd's ``-z`` and ``-s`` for job bodies of up to ``max_body`` bytes.

    ``-z`` is ``max_body + 2``: beanstalkd stores a body with its CRLF and, on restart, drops a
    stored body longer than ``-z`` (and the rest of that binlog file), so a body of exactly
    ``-z`` bytes would be accepted and then lost. ``-s`` (one binlog file) is at least ``-z``
    plus room for the record headers, rounded up to 4 KiB: a record larger than one file is
    still written whole, but the binlog's compaction then underestimates the disk it uses.
    """
    if not 1 <= max_body <= MAX_BODY_LIMIT:
        raise InvalidValueError(f"max body {max_body} is out of range 1..{MAX_BODY_LIMIT}")
    z = max_body + 2
    return z, -(-(z + 4096) // 4096) * 4096
