"""Signed bodies: an HMAC-SHA256 over every job and answer, with a per-cluster key.

beanstalkd has no authentication, so whoever reaches its port can put, read and delete bodies.
The signature makes sure that a job a worker computes was made by a master of this cluster, and
that an answer the master folds was made by a worker of this cluster for exactly that job of
exactly that run:

- the MAC of a body is ``HMAC-SHA256(key, DOMAIN + canonical(header without "mac") + b"\\0" +
  SHA-256(payload))`` where ``DOMAIN`` is ``b"pi-job/job/v2\\0"`` or ``b"pi-job/answer/v2\\0"``
  (a job's MAC never verifies as an answer's) and ``canonical`` is compact JSON with sorted
  keys; it is sent as 64 hex digits in the header field ``"mac"``;
- the header holds the run id, the job index, the workload (jobs) and the run's ``nonce``:
  32 random hex digits the master draws when it plans a run and keeps in the journal's plan.
  A worker echoes the job's nonce in its answer; the master folds only answers whose nonce is
  its plan's, so an answer cannot be replayed into another run (even one that reuses a run id)
  nor into another job;
- the payload enters through its SHA-256 (hashlib, about 2 GB/s here), so bulk bodies cost one
  hash and one small HMAC.

Key file (``--key-file``, the systemd credential ``pi-job-key``, ``$PI_JOB_KEY_FILE``, or
``/etc/pi-job/cluster.key``): text, one key per line as hex (at least 64 hex digits, i.e. 32
bytes); the first line is the key that signs, an optional second line is the previous key, still
accepted while a rotation is under way. A worker answers with the key that verified the job,
so a master started before a rotation still accepts the answers to its jobs. The file must not
be readable or writable by others.
Keys are never logged or printed; a key's ``kid`` (first 8 hex digits of a SHA-256 of it) is.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pi_job.core.envelope import InvalidBodyError, Payload
from pi_job.errors import UsageError

Kind = Literal["job", "answer"]

MAC_FIELD: Final = "mac"
NONCE_FIELD: Final = "nonce"
DOMAINS: Final[dict[str, bytes]] = {"job": b"pi-job/job/v2\0", "answer": b"pi-job/answer/v2\0"}
MIN_KEY_BYTES: Final = 32
MAX_KEYS: Final = 2
"""The signing key and, during a rotation, the previous one."""
MAX_KEY_FILE_BYTES: Final = 4096
CREDENTIAL_NAME: Final = "pi-job-key"
"""Name of the systemd credential (``LoadCredential=pi-job-key:/etc/pi-job/cluster.key``)."""
KEY_FILE_ENV: Final = "PI_JOB_KEY_FILE"
SYSTEM_KEY_FILE: Final = Path("/etc/pi-job/cluster.key")
"""Where the Ansible role installs the key (root 0600): the last place looked at, so that root
on a node can run ``pi-job run`` by hand."""
BAD_SIGNATURE: Final = "bad signature"
_EMPTY_DIGEST: Final = hashlib.sha256(b"").digest()
_HEX_MAC: Final = re.compile(r"[0-9a-f]{64}")


class BadSignatureError(InvalidBodyError):
    """A body without a valid MAC (``str()`` is always :data:`BAD_SIGNATURE`)."""

    def __init__(self) -> None:
        """Every signature failure reads the same: it tells an attacker nothing."""
        super().__init__(BAD_SIGNATURE)


def canonical(header: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the bytes a header's MAC covers."""
    return json.dumps(
        header, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def payload_digest(payload: Payload) -> bytes:
    """SHA-256 of a payload (the constant of the empty payload is not recomputed)."""
    return hashlib.sha256(payload).digest() if payload else _EMPTY_DIGEST


def key_id(key: bytes) -> str:
    """A short public name of a key for logs (it reveals nothing usable about the key)."""
    return hashlib.sha256(b"pi-job/kid\0" + key).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Keyring:
    """The cluster keys: ``keys[0]`` signs; every key verifies. No keys: insecure mode."""

    keys: tuple[bytes, ...]
    source: str = ""

    @property
    def insecure(self) -> bool:
        """True when there is no key (``--insecure-no-key``): nothing is signed or checked."""
        return not self.keys

    def describe(self) -> str:
        """Where the keys come from and their ids, for the log (never the keys)."""
        if self.insecure:
            return "no cluster key (--insecure-no-key): bodies are neither signed nor checked"
        ids = ", ".join(key_id(key) for key in self.keys)
        return f"cluster key from {self.source} (kid {ids})"

    def mac(self, kind: Kind, head: bytes, payload: Payload, key_index: int = 0) -> str:
        """Hex MAC of a body whose canonical header (without ``mac``) is ``head``."""
        message = b"".join((DOMAINS[kind], head, b"\0", payload_digest(payload)))
        return hmac.digest(self.keys[key_index], message, "sha256").hex()

    def seal(
        self, kind: Kind, header: Mapping[str, Any], payload: Payload, key_index: int = 0
    ) -> bytes:
        """The body's header line: canonical JSON with the ``mac`` field appended."""
        head = canonical(header)
        if self.insecure:
            return head
        tag = self.mac(kind, head, payload, key_index)
        return head[:-1] + b',"mac":"' + tag.encode("ascii") + b'"}'

    def verify(
        self, kind: Kind, header: dict[str, Any], payload: Payload, line: bytes | None = None
    ) -> int:
        """Check and remove the ``mac`` of a decoded header; return the index of the key.

        ``line`` is the header line as received (``header`` is its decoding). When it is what
        :meth:`seal` writes (canonical bytes, then the ``mac`` field last), the MAC is checked
        over those very bytes, without encoding the header again; otherwise, or if that check
        fails, over the canonical encoding of ``header``. Both accept exactly the bodies a key
        holder sealed. Raises :class:`BadSignatureError` when the MAC is missing, malformed or
        made with no key of the ring. In insecure mode any ``mac`` is removed unchecked.
        """
        tag = header.pop(MAC_FIELD, None)
        if self.insecure:
            return 0
        if not isinstance(tag, str) or not _HEX_MAC.fullmatch(tag):
            raise BadSignatureError
        if line is not None:
            tail = b',"mac":"' + tag.encode("ascii") + b'"}'
            if line.endswith(tail):
                sealed = line[: -len(tail)] + b"}"
                for index in range(len(self.keys)):
                    if hmac.compare_digest(self.mac(kind, sealed, payload, index), tag):
                        return index
        head = canonical(header)
        for index in range(len(self.keys)):
            if hmac.compare_digest(self.mac(kind, head, payload, index), tag):
                return index
        raise BadSignatureError


INSECURE: Final = Keyring(())


def parse_key_file(data: bytes, source: str) -> Keyring:
    """Parse a key file's bytes (hex keys, one per line, signing key first)."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UsageError(f"key file {source}: larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        lines = [line.strip() for line in data.decode("ascii").splitlines()]
    except UnicodeDecodeError:
        raise UsageError(f"key file {source}: not hex text (one key per line)") from None
    keys = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        if not re.fullmatch(r"[0-9a-fA-F]+", line) or len(line) % 2:
            raise UsageError(f"key file {source}: line {number} is not a hex key")
        key = bytes.fromhex(line)
        if len(key) < MIN_KEY_BYTES:
            raise UsageError(
                f"key file {source}: line {number} has {len(key)} bytes, at least "
                f"{MIN_KEY_BYTES} are needed"
            )
        keys.append(key)
    if not keys:
        raise UsageError(f"key file {source}: no key in it")
    if len(keys) > MAX_KEYS:
        raise UsageError(f"key file {source}: {len(keys)} keys, at most {MAX_KEYS} (new, previous)")
    return Keyring(tuple(keys), source)


def read_key_file(path: Path) -> Keyring:
    """Read a key file; refuse one that others may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077 & ~0o040:
            raise UsageError(
                f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: others may read "
                f"or write it (chmod 0600 {path})"
            )
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return parse_key_file(data, str(path))


def find_key_file(
    key_file: Path | None,
    environ: Mapping[str, str] | None = None,
    system_file: Path = SYSTEM_KEY_FILE,
) -> Path | None:
    """``--key-file``, else the systemd credential, else ``$PI_JOB_KEY_FILE``, else
    :data:`SYSTEM_KEY_FILE` if it exists, else None."""
    if key_file is not None:
        return key_file
    env = os.environ if environ is None else environ
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        candidate = Path(credentials) / CREDENTIAL_NAME
        if candidate.exists():
            return candidate
    if env.get(KEY_FILE_ENV):
        return Path(env[KEY_FILE_ENV])
    if system_file.exists():
        return system_file
    return None


def load_keyring(
    key_file: Path | None, insecure: bool, environ: Mapping[str, str] | None = None
) -> Keyring:
    """The keyring a command runs with (raise UsageError: exit 2, one line)."""
    path = find_key_file(key_file, environ)
    if insecure:
        if key_file is not None:
            raise UsageError("--key-file and --insecure-no-key exclude each other")
        return INSECURE
    if path is None:
        raise UsageError(
            f"no cluster key: give --key-file PATH (or the systemd credential {CREDENTIAL_NAME}, "
            f"${KEY_FILE_ENV} or {SYSTEM_KEY_FILE}); --insecure-no-key runs without signatures"
        )
    return read_key_file(path)


def new_key_text() -> str:
    """A fresh key file's text (one 32-byte key as hex)."""
    return os.urandom(MIN_KEY_BYTES).hex() + "\n"


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--key-file`` and ``--insecure-no-key`` to a command."""
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="PATH",
        help=f"cluster key file, hex, mode 0600 (default: the systemd credential "
        f"{CREDENTIAL_NAME}, else ${KEY_FILE_ENV})",
    )
    parser.add_argument(
        "--insecure-no-key",
        action="store_true",
        help="run without signing or checking bodies (tests on a private machine only)",
    )


def keyring_from_args(args: argparse.Namespace) -> Keyring:
    """The keyring of a command's ``--key-file`` / ``--insecure-no-key`` (UsageError: exit 2)."""
    return load_keyring(args.key_file, args.insecure_no_key)
