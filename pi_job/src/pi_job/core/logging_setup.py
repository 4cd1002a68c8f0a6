"""One-line log records on stderr, with timestamps unless journald (which adds its own) reads us."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO


class OneLineFormatter(logging.Formatter):
    """A formatter that never emits more than one line per record (newlines are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` and escape any newline, including those of a traceback."""
        text = super().format(record)
        return text.replace("\r", "\\r").replace("\n", " | ")


def under_journald(environ: Mapping[str, str] | None = None) -> bool:
    """True when stderr is connected to journald (systemd sets ``JOURNAL_STREAM``)."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM"))


def configure(
    level: int = logging.INFO,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send the root logger's records to stderr as single lines (idempotent)."""
    if under_journald(environ):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
