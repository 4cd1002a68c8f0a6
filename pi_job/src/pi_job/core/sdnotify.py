"""systemd's notify protocol (``Type=notify``), implemented directly over a datagram socket.

Messages such as ``READY=1``, ``STATUS=idle`` and ``STOPPING=1`` go to the AF_UNIX datagram
socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract address written with a leading
``@``). Without that variable every call is a no-op, so the same code runs outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to systemd; silently does nothing when not under systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read ``NOTIFY_SOCKET`` from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _socket_address(raw) if raw else None
        self._last_status: str | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured."""
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (e.g. ``send(READY=1, STATUS="idle")``); return success."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self._address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Tell systemd the service is up (``READY=1``), optionally with a status line."""
        if status is None:
            self.send(READY=1)
        else:
            self._last_status = status
            self.send(READY=1, STATUS=status)

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status`` (sent only when it changes)."""
        if text != self._last_status:
            self._last_status = text
            self.send(STATUS=text)

    def stopping(self) -> None:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        self.send(STOPPING=1)


def _socket_address(raw: str) -> str | bytes:
    """Return a connectable address; ``@name`` denotes the abstract namespace (leading NUL)."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode("utf-8")
    return raw
