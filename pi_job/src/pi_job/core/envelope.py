"""Wire format: tube names and the two bodies that cross beanstalkd, a job and its answer.

A body is a JSON header (UTF-8, at most :data:`~pi_job.limits.MAX_HEADER_BYTES`), then a newline,
then an optional binary payload (bulk data such as a block of a matrix, never base64 in JSON).
Headers carry a version ``v``; the workload's own part is the ``spec`` of a job and the
``value`` of an answer, both JSON objects that the workload validates. Decoding is strict: any
deviation (types, ranges, sizes, unknown keys, duplicate keys, non-finite numbers, invalid
UTF-8, nesting) raises :class:`InvalidBodyError` with a short reason, so that a worker can bury
the job and say why. Nothing is ever unpickled or evaluated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from pi_job.limits import (
    MAX_BODY_LIMIT,
    MAX_HEADER_BYTES,
    MAX_JOBS,
    MAX_TEXT,
    RUN_ID_PATTERN,
    check_run_id,
)

if TYPE_CHECKING:
    from pi_job.core.signing import Keyring

PROTOCOL_VERSION: Final = 2

JOBS_TUBE: Final = "pi.jobs"
BURIED_TUBE: Final = "pi.buried"
RESULTS_TUBE_PREFIX: Final = "pi.results."
DATA_TUBE_PREFIX: Final = "pi.data."
"""Tube of a run's shared inputs (never watched: workers read them with ``peek`` by id)."""

_RUN_ID_RE: Final = re.compile(RUN_ID_PATTERN)
_JOB_KEYS: Final = frozenset({"v", "run", "job", "w", "spec", "inputs", "nonce", "mac"})
_ANSWER_KEYS: Final = frozenset(
    {"v", "run", "job", "host", "worker", "seconds", "reserves", "value", "nonce", "mac"}
)
_SIGNED_OPTIONAL: Final = frozenset({"nonce", "mac"})
"""Checked by :mod:`pi_job.core.signing` (``mac``) and the master (``nonce``)."""
_NONCE_RE: Final = re.compile(r"[0-9a-f]{32}")

Payload: TypeAlias = bytes | memoryview
"""A payload as received: a read-only ``memoryview`` of the body it came in (a decoded body's
payload is not copied out of it: megabytes per job), or ``bytes``. Both have ``len()``,
slicing and ``==``, and go to ``numpy.frombuffer``, ``hashlib`` and ``os.write`` as they are;
``bytes(payload)`` makes a copy where a method of ``bytes`` is wanted."""


class InvalidBodyError(ValueError):
    """A job or answer body that does not follow the protocol; ``str()`` is the reason."""


def results_tube(run_id: str) -> str:
    """Return the name of the results tube of run ``run_id``."""
    return RESULTS_TUBE_PREFIX + check_run_id(run_id)


def data_tube(run_id: str) -> str:
    """Return the name of the shared-inputs tube of run ``run_id``."""
    return DATA_TUBE_PREFIX + check_run_id(run_id)


@dataclass(frozen=True, slots=True)
class InputRef:
    """Where a run input lives on the server: the ids of its chunks and the sha256 of it all."""

    ids: tuple[int, ...]
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"ids": list(self.ids), "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, obj: object) -> InputRef:
        """Validate and build from the JSON form."""
        if not isinstance(obj, dict) or set(obj) != {"ids", "sha256", "size"}:
            raise InvalidBodyError("an input must be {ids, sha256, size}")
        ids, digest, size = obj["ids"], obj["sha256"], obj["size"]
        if not isinstance(ids, list) or not 0 < len(ids) <= 4096:
            raise InvalidBodyError("input 'ids' must be a list of 1..4096 job ids")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
            raise InvalidBodyError("input 'ids' must be positive integers")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InvalidBodyError("input 'sha256' must be 64 hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidBodyError("input 'size' must be a non-negative integer")
        if size > len(ids) * MAX_BODY_LIMIT:
            raise InvalidBodyError(f"input 'size' {size} is more than {len(ids)} chunks hold")
        return cls(tuple(ids), digest, size)


@dataclass(frozen=True, slots=True)
class Job:
    """One job of a run: workload ``workload``'s ``spec`` for job ``job``, and its payload."""

    run: str
    job: int
    workload: str
    spec: dict[str, Any]
    payload: Payload = b""
    inputs: dict[str, InputRef] = field(default_factory=dict)
    nonce: str = ""
    """The run's nonce (from the master's plan; echoed by the answer)."""

    def encode(self, keyring: Keyring | None = None) -> bytes:
        """Return the job's body (signed with ``keyring``'s signing key, if given)."""
        return b"".join(self.encode_parts(keyring))

    def encode_parts(self, keyring: Keyring | None = None) -> tuple[bytes, Payload]:
        """The body as (header line with its newline, payload), for a put without a join."""
        header: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "run": self.run,
            "job": self.job,
            "w": self.workload,
            "spec": self.spec,
        }
        if self.inputs:
            header["inputs"] = {name: ref.to_json() for name, ref in sorted(self.inputs.items())}
        if self.nonce:
            header["nonce"] = self.nonce
        line = keyring.seal("job", header, self.payload) if keyring is not None else _dump(header)
        return line + b"\n", self.payload


@dataclass(frozen=True, slots=True)
class Answer:
    """A worker's answer to one job: the workload's ``value`` (and payload), and who made it."""

    run: str
    job: int
    host: str
    worker: str
    seconds: float
    reserves: int
    value: dict[str, Any]
    payload: Payload = b""
    nonce: str = ""
    """The nonce of the job's run, echoed from the job."""

    def encode(self, keyring: Keyring | None = None, key_index: int = 0) -> bytes:
        """Return the answer's body (signed with key ``key_index`` of ``keyring``, if given)."""
        return b"".join(self.encode_parts(keyring, key_index))

    def encode_parts(
        self, keyring: Keyring | None = None, key_index: int = 0
    ) -> tuple[bytes, Payload]:
        """The body as (header line with its newline, payload), for a put without a join."""
        header = {"v": PROTOCOL_VERSION, **self.to_record()}
        if not self.nonce:
            del header["nonce"]
        if keyring is not None:
            line = keyring.seal("answer", header, self.payload, key_index)
        else:
            line = _dump(header)
        return line + b"\n", self.payload

    def to_record(self) -> dict[str, Any]:
        """The header fields as a plain dict (journal record; the payload is not kept).

        ``value`` is shared, not copied (the master's hot path): do not mutate the result's.
        """
        return {
            "run": self.run,
            "job": self.job,
            "host": self.host,
            "worker": self.worker,
            "seconds": self.seconds,
            "reserves": self.reserves,
            "value": self.value,
            "nonce": self.nonce,
        }


def split_body(body: bytes) -> tuple[dict[str, Any], Payload]:
    """Split a body into its validated JSON header object and its payload."""
    _, obj, payload = _split(body)
    return obj, payload


def _split(body: bytes) -> tuple[bytes, dict[str, Any], Payload]:
    """The header line as sent, its validated JSON object, and the payload (a view of
    ``body``: copying megabytes out of every body cost the master more CPU than the rest of
    its work on an answer)."""
    end = body.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    payload: Payload
    if end < 0:
        if len(body) > MAX_HEADER_BYTES:
            raise InvalidBodyError(f"no header line in the first {MAX_HEADER_BYTES} bytes")
        head, payload = body, b""
    else:
        head, payload = body[:end], memoryview(body)[end + 1 :]
    obj = decode_json_object(head)
    version = obj.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidBodyError("missing or non-integer version 'v'")
    if version != PROTOCOL_VERSION:
        raise InvalidBodyError(f"unknown version v={version}")
    return head, obj, payload


def decode_job(body: bytes, keyring: Keyring | None = None) -> Job:
    """Decode and validate a job body (the spec itself is the workload's to check).

    With ``keyring``, the MAC is checked (:class:`~pi_job.core.signing.BadSignatureError`).
    """
    return decode_signed_job(body, keyring)[0]


def decode_signed_job(body: bytes, keyring: Keyring | None) -> tuple[Job, int]:
    """Decode a job body and check its MAC; return it and the index of the key that signed it."""
    head, obj, payload = _split(body)
    _check_keys(obj, _JOB_KEYS, frozenset({"inputs"}) | _SIGNED_OPTIONAL)
    key_index = keyring.verify("job", obj, payload, head) if keyring is not None else 0
    obj.pop("mac", None)
    raw_inputs = obj.get("inputs", {})
    if not isinstance(raw_inputs, dict) or len(raw_inputs) > 16:
        raise InvalidBodyError("'inputs' must be an object of at most 16 inputs")
    job = Job(
        run=_run_field(obj),
        job=int_field(obj, "job", 0, MAX_JOBS - 1),
        workload=text_field(obj, "w"),
        spec=object_field(obj, "spec"),
        payload=payload,
        inputs={str(name): InputRef.from_json(ref) for name, ref in raw_inputs.items()},
        nonce=_nonce_field(obj),
    )
    return job, key_index


def decode_answer(body: bytes, keyring: Keyring | None = None) -> Answer:
    """Decode and validate an answer body (the value itself is the workload's to check).

    With ``keyring``, the MAC is checked (:class:`~pi_job.core.signing.BadSignatureError`).
    """
    head, obj, payload = _split(body)
    _check_keys(obj, _ANSWER_KEYS, _SIGNED_OPTIONAL)
    if keyring is not None:
        keyring.verify("answer", obj, payload, head)
    obj.pop("mac", None)
    seconds = obj["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise InvalidBodyError("'seconds' must be a non-negative number")
    return Answer(
        run=_run_field(obj),
        job=int_field(obj, "job", 0, MAX_JOBS - 1),
        host=text_field(obj, "host"),
        worker=text_field(obj, "worker"),
        seconds=float(seconds),
        reserves=int_field(obj, "reserves", 1, 2**32),
        value=object_field(obj, "value"),
        payload=payload,
        nonce=_nonce_field(obj),
    )


def decode_json_object(body: bytes, max_bytes: int = MAX_HEADER_BYTES) -> dict[str, Any]:
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


def check_exact_keys(obj: dict[str, Any], keys: frozenset[str], what: str) -> None:
    """Raise :class:`InvalidBodyError` unless ``obj`` has exactly ``keys``."""
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise InvalidBodyError(f"unknown {what} keys {unknown}")
    missing = sorted(keys - set(obj))
    if missing:
        raise InvalidBodyError(f"missing {what} keys {missing}")


def int_field(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    """An integer field in ``low..high`` (booleans are not integers)."""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBodyError(f"{key!r} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidBodyError(f"{key!r}={value} out of range {low}..{high}")
    return value


def text_field(obj: dict[str, Any], key: str) -> str:
    """A string field of 1..MAX_TEXT characters."""
    value = obj[key]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise InvalidBodyError(f"{key!r} must be a string of 1..{MAX_TEXT} characters")
    return value


def object_field(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """A JSON object field."""
    value = obj[key]
    if not isinstance(value, dict):
        raise InvalidBodyError(f"{key!r} must be a JSON object")
    return value


def _check_keys(
    obj: dict[str, Any], keys: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise InvalidBodyError(f"unknown keys {unknown}")
    missing = sorted(keys - set(obj) - optional)
    if missing:
        raise InvalidBodyError(f"missing keys {missing}")


def _run_field(obj: dict[str, Any]) -> str:
    value = obj["run"]
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(value):
        raise InvalidBodyError(f"'run' must match {RUN_ID_PATTERN}")
    return value


def _nonce_field(obj: dict[str, Any]) -> str:
    value = obj.get("nonce", "")
    if value != "" and (not isinstance(value, str) or not _NONCE_RE.fullmatch(value)):
        raise InvalidBodyError("'nonce' must be 32 hex digits")
    return str(value)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidBodyError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidBodyError(f"non-finite number {name}")


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
