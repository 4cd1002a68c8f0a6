"""Wire protocol: tube names, limits, versioned JSON bodies and their strict validation.

Everything that crosses beanstalkd is JSON encoded as UTF-8 with a version field ``v``.
Decoding is strict: any deviation (types, ranges, sizes, unknown keys, duplicate keys,
non-finite numbers, invalid UTF-8, nesting) raises :class:`InvalidBodyError` with a short reason,
so that a worker can bury the job and say why. Nothing is ever unpickled or evaluated.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

PROTOCOL_VERSION: Final = 1

JOBS_TUBE: Final = "pi.jobs"
BURIED_TUBE: Final = "pi.buried"
RESULTS_TUBE_PREFIX: Final = "pi.results."

MAX_DARTS: Final = 10**15
"""Largest number of darts one run may ask for."""
MAX_JOB_DARTS: Final = 10**12
"""Largest number of darts in one job."""
MAX_JOBS: Final = 10**6
"""Largest number of jobs in one run (bounds the journal and the queue)."""
MAX_SEED: Final = 2**63 - 1
MAX_PRIORITY: Final = 2**32 - 1
MAX_TTR: Final = 86_400
MAX_BODY_BYTES: Final = 4096
"""Largest job or result body accepted (real ones are about 100 and 250 bytes)."""
MAX_TEXT: Final = 255
"""Longest host, worker or backend name in a result."""

RUN_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_RUN_ID_RE: Final = re.compile(RUN_ID_PATTERN)
_COUNT_RE: Final = re.compile(r"[0-9](?:_?[0-9])*(?:\.[0-9](?:_?[0-9])*)?(?:[eE]\+?[0-9]{1,3})?")

_JOB_KEYS: Final = frozenset({"v", "run", "job", "seed", "darts"})
_RESULT_KEYS: Final = frozenset(
    {"v", "run", "job", "darts", "inside", "host", "worker", "seconds", "reserves", "backend"}
)


class ProtocolError(ValueError):
    """Base class of the protocol's validation errors."""


class InvalidBodyError(ProtocolError):
    """A job or result body that does not follow the protocol; ``str()`` is the reason."""


class InvalidValueError(ProtocolError):
    """A command-line or configuration value outside its allowed form or range."""


def results_tube(run_id: str) -> str:
    """Return the name of the results tube of run ``run_id``."""
    return RESULTS_TUBE_PREFIX + check_run_id(run_id)


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a valid run id, else raise :class:`InvalidValueError`."""
    if not _RUN_ID_RE.fullmatch(run_id):
        raise InvalidValueError(f"invalid run id {run_id!r} (expected {RUN_ID_PATTERN})")
    return run_id


def parse_count(text: str, maximum: int, minimum: int = 1) -> int:
    """Parse an exact integer count such as ``1000``, ``1e9``, ``1_000_000`` or ``2.5e9``.

    The value must be an exact integer (``2.5e9`` is, ``2.5`` and ``1e-3`` are not) between
    ``minimum`` and ``maximum``. No float is ever involved, so ``12345678901234567`` stays exact.
    Raises :class:`InvalidValueError`.
    """
    cleaned = text.strip()
    if not _COUNT_RE.fullmatch(cleaned):
        raise InvalidValueError(f"not a count: {text!r} (use e.g. 1000000, 1e9, 1_000_000, 2.5e9)")
    try:
        value = Decimal(cleaned.replace("_", ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex already rejects these
        raise InvalidValueError(f"not a count: {text!r}") from exc
    if value != value.to_integral_value():
        raise InvalidValueError(f"not a whole number: {text!r}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidValueError(f"{text!r} is out of range {minimum}..{maximum}")
    return number


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of a run: throw ``darts`` darts with the seed derived from ``(seed, job)``."""

    run: str
    job: int
    seed: int
    darts: int

    def encode(self) -> bytes:
        """Return the job's JSON body."""
        return _dump({"v": PROTOCOL_VERSION, **asdict(self)})


@dataclass(frozen=True, slots=True)
class Result:
    """The answer of a worker for one job."""

    run: str
    job: int
    darts: int
    inside: int
    host: str
    worker: str
    seconds: float
    reserves: int
    backend: str

    def encode(self) -> bytes:
        """Return the result's JSON body."""
        return _dump({"v": PROTOCOL_VERSION, **asdict(self)})

    def to_record(self) -> dict[str, Any]:
        """Return the result as a plain dict (without the version field)."""
        return asdict(self)


def decode_job(body: bytes) -> JobSpec:
    """Decode and validate a job body; raise :class:`InvalidBodyError` with the reason."""
    obj = _load_object(body, _JOB_KEYS)
    return JobSpec(
        run=_run_field(obj),
        job=_int_field(obj, "job", 0, MAX_JOBS - 1),
        seed=_int_field(obj, "seed", 0, MAX_SEED),
        darts=_int_field(obj, "darts", 1, MAX_JOB_DARTS),
    )


def decode_result(body: bytes) -> Result:
    """Decode and validate a result body; raise :class:`InvalidBodyError` with the reason."""
    obj = _load_object(body, _RESULT_KEYS)
    darts = _int_field(obj, "darts", 1, MAX_JOB_DARTS)
    inside = _int_field(obj, "inside", 0, darts)
    seconds = obj["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise InvalidBodyError("'seconds' must be a non-negative number")
    return Result(
        run=_run_field(obj),
        job=_int_field(obj, "job", 0, MAX_JOBS - 1),
        darts=darts,
        inside=inside,
        host=_text_field(obj, "host"),
        worker=_text_field(obj, "worker"),
        seconds=float(seconds),
        reserves=_int_field(obj, "reserves", 1, 2**32),
        backend=_text_field(obj, "backend"),
    )


def decode_json_object(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode a size-limited UTF-8 JSON object strictly (no duplicate keys, no NaN)."""
    if len(body) > max_bytes:
        raise InvalidBodyError(f"body of {len(body)} bytes exceeds {max_bytes}")
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidBodyError(f"not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except InvalidBodyError:
        raise
    except RecursionError:
        raise InvalidBodyError("JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidBodyError(f"not JSON: {_first_line(str(exc))}") from None
    if not isinstance(obj, dict):
        raise InvalidBodyError(f"JSON {type(obj).__name__} is not an object")
    return obj


def body_preview(body: bytes, limit: int = 80) -> str:
    """Return a safe printable preview of the first ``limit`` bytes of a body."""
    return repr(body[:limit])


def _load_object(body: bytes, keys: frozenset[str]) -> dict[str, Any]:
    obj = decode_json_object(body)
    version = obj.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidBodyError("missing or non-integer version 'v'")
    if version != PROTOCOL_VERSION:
        raise InvalidBodyError(f"unknown version v={version}")
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise InvalidBodyError(f"unknown keys {unknown}")
    missing = sorted(keys - set(obj))
    if missing:
        raise InvalidBodyError(f"missing keys {missing}")
    return obj


def _int_field(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBodyError(f"{key!r} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidBodyError(f"{key!r}={value} out of range {low}..{high}")
    return value


def _text_field(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise InvalidBodyError(f"{key!r} must be a string of 1..{MAX_TEXT} characters")
    return value


def _run_field(obj: dict[str, Any]) -> str:
    value = obj["run"]
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(value):
        raise InvalidBodyError(f"'run' must match {RUN_ID_PATTERN}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidBodyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidBodyError(f"non-finite number {name}")


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
