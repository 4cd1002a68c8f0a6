"""argparse ``type=`` converters: each raises ``ArgumentTypeError`` with a one-line reason."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pi_job.core.connection import ServerAddress, parse_server
from pi_job.errors import UsageError
from pi_job.limits import check_run_id, parse_count, parse_int, parse_seconds


def server(text: str) -> ServerAddress:
    """``HOST:PORT`` with port 1..65535."""
    try:
        return parse_server(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_id(text: str) -> str:
    """A run id (see :data:`pi_job.core.envelope.RUN_ID_PATTERN`)."""
    try:
        return check_run_id(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(maximum: int, minimum: int = 1) -> Callable[[str], int]:
    """An exact integer count in ``minimum..maximum`` written like ``1e9`` or ``1_000``."""

    def convert(text: str) -> int:
        try:
            return parse_count(text, maximum, minimum)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def integer(minimum: int, maximum: int) -> Callable[[str], int]:
    """A plain decimal integer in ``minimum..maximum``."""

    def convert(text: str) -> int:
        try:
            return parse_int(text, minimum, maximum)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def seconds(minimum: float, maximum: float) -> Callable[[str], float]:
    """A finite number of seconds in ``minimum..maximum``."""

    def convert(text: str) -> float:
        try:
            return parse_seconds(text, minimum, maximum)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def worker_id(text: str) -> str:
    """A worker id: 1..255 printable characters without whitespace."""
    if not 0 < len(text) <= 255 or not text.isprintable() or any(ch.isspace() for ch in text):
        raise argparse.ArgumentTypeError(
            f"invalid worker id {text!r} (1..255 printable, no spaces)"
        )
    return text


def output_file(text: str) -> Path:
    """A file path whose directory exists."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"not a file path: {text!r}")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory of {text!r} does not exist")
    return path


def directory(text: str) -> Path:
    """A directory path (created later if missing); must not be an existing file."""
    path = Path(text)
    if not text or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(f"not a directory: {text!r}")
    return path
