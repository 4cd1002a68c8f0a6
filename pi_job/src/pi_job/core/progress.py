"""Progress display of a run: a bar on a terminal, periodic one-line records otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pi_job.core.sdnotify import Notifier

log = logging.getLogger("pi_job.core.master")


class Progress:
    """Shows how many jobs of a run, and how much of its work (darts, rows, ...), are done."""

    def __init__(
        self,
        run_id: str,
        jobs: int,
        darts: int,
        *,
        unit: str = "darts",
        interval: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        """Prepare the display; a bar when ``stream`` (default stderr) is a terminal."""
        self.run_id = run_id
        self.jobs = jobs
        self.darts = max(1, darts)
        self.unit = unit
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._started = time.monotonic()
        self._last = 0.0
        self._base_darts: int | None = None
        self._drawn = False
        self._notifier = Notifier()  # `systemctl status` line under systemd, else a no-op

    def due(self) -> bool:
        """True when :meth:`update` would draw now."""
        every = 0.1 if self.tty else self.interval
        return time.monotonic() - self._last >= every

    def update(
        self, done_jobs: int, done_darts: int, workers: int | None, *, force: bool = False
    ) -> None:
        """Show progress (a bar at most 10 times a second, a log line every ``interval``)."""
        now = time.monotonic()
        if self._base_darts is None:
            self._base_darts = done_darts
        every = 0.1 if self.tty else self.interval
        if not force and now - self._last < every:
            return
        self._last = now
        elapsed = now - self._started
        rate = (done_darts - self._base_darts) / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * done_darts / self.darts
        who = "" if workers is None else f", {workers} workers"
        eta = (self.darts - done_darts) / rate if rate > 0 else None
        self._notifier.status(
            f"run {self.run_id}: {done_jobs}/{self.jobs} jobs ({percent:.1f}%),"
            f" {rate:.3g} {self.unit}/s{who}, ETA {'?' if eta is None else f'{eta:.0f} s'}"
        )
        if self.tty:
            width = 30
            filled = int(width * done_darts / self.darts)
            bar = "#" * filled + "." * (width - filled)
            speed = f"{rate:.3g} {self.unit}/s{who}"
            self.stream.write(f"\r[{bar}] {percent:5.1f}% {done_jobs}/{self.jobs} jobs, {speed} ")
            self.stream.flush()
            self._drawn = True
        else:
            log.info(
                "run %s: %.1f%% (%d/%d jobs), %.3g %s/s%s, %.0f s",
                self.run_id,
                percent,
                done_jobs,
                self.jobs,
                rate,
                self.unit,
                who,
                elapsed,
            )

    def close(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
