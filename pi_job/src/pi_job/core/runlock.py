"""One master per run: an exclusive ``flock`` on ``<state-dir>/<run_id>.lock``.

The lock is taken before the journal is touched and held for the life of the process (the
kernel drops it when the process dies, also on SIGKILL), whatever started the master: a systemd
unit, a playbook or a shell. A second master of the same run refuses at once with one line.

The file is removed again when the holder exits normally, so a run that never started leaves
nothing behind. Removal is safe against the classic unlink race: after locking, the holder
checks that the path still names the inode it locked, and tries again otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
from pathlib import Path

from pi_job.core.journal import JournalError

_HELD: dict[Path, int] = {}
"""Locks held by this process: path -> open descriptor (kept open until exit)."""


class RunLockedError(JournalError):
    """Another live process is the master of the run (exit code 1)."""


def lock_path(state_dir: Path, run_id: str) -> Path:
    """Where the lock of ``run_id`` lives (beside its journal)."""
    return state_dir / f"{run_id}.lock"


def hold(state_dir: Path, run_id: str | None) -> None:
    """Become the only master of ``run_id`` for this process's lifetime, or raise.

    ``None`` (a new run whose id is generated later, hence unknown to anyone else) is a no-op.
    Raises :class:`RunLockedError` naming the holder's pid when another process has the lock.
    """
    if run_id is None:
        return
    path = lock_path(state_dir, run_id)
    if path in _HELD:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise RunLockedError(
                f"run {run_id} already has a live master{who}; "
                f"follow it (systemctl status pi-run@{run_id}) instead of starting another"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file meanwhile: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[path] = fd
    atexit.register(release, path)


def release(path: Path) -> None:
    """Remove the lock file and drop the lock (at exit; dying drops the lock, not the file)."""
    fd = _HELD.pop(path, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)


def holder_pid(state_dir: Path, run_id: str) -> int | None:
    """The pid of the live master of ``run_id``, or ``None`` when nobody holds its lock."""
    path = lock_path(state_dir, run_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
