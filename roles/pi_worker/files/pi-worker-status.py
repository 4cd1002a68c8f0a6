#!/usr/bin/python3
"""The main process of pi-worker.service: publish the pi-worker@N instances' live state.

Every INTERVAL seconds it asks systemd (over the system bus, with `systemctl show`) for the
ActiveState, SubState and StatusText of the loaded pi-worker@*.service units and sends one line as
its own sd_notify STATUS=, e.g.

    3 workers: 1 busy, 1 idle, 1 stopped | @1 run 7c1e job 12: 40% | @2 idle | @3 stopped

`systemctl status pi-worker` prints that `Status:` line to any user, with no journal access.
Standard library only; run by the system's python3 (Type=notify, NotifyAccess=main).
Usage: pi-worker-status.py [INTERVAL_SECONDS]   (default 2)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

GROUP = "pi-worker.service"
PREFIX = "pi-worker@"
PATTERN = PREFIX + "*.service"
PROPERTIES = ("Id", "Wants", "ActiveState", "SubState", "StatusText", "Job")
# Non-active states, named for an operator (ActiveState/SubState -> word).
WORDS = {
    "auto-restart": "restarting",
    "activating": "starting",
    "deactivating": "stopping",
    "inactive": "stopped",
    "failed": "failed",
    "reloading": "reloading",
}


def show(names: list[str]) -> list[dict[str, str]]:
    """`systemctl show` of the units (or patterns) NAMES: one dict of PROPERTIES per unit."""
    done = subprocess.run(
        [
            "systemctl",
            "show",
            "--all",
            "--no-pager",
            "-p",
            ",".join(PROPERTIES),
            *names,
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(
            f"systemctl show: {done.stderr.strip() or f'exit status {done.returncode}'}"
        )
    units, unit = [], {}
    for line in done.stdout.splitlines() + [""]:
        if not line:
            if unit.get("Id"):
                units.append(unit)
            unit = {}
        elif "=" in line:
            key, value = line.split("=", 1)
            unit[key] = value
    return units


def query() -> list[dict[str, str]]:
    """The instances: the loaded pi-worker@ units and those the group wants (enabled ones)."""
    units = show([GROUP, PATTERN])
    group = next((u for u in units if u["Id"] == GROUP), {})
    units = [u for u in units if u["Id"] != GROUP]
    known = {u["Id"] for u in units}
    missing = [
        w
        for w in group.get("Wants", "").split()
        if w.startswith(PREFIX) and w not in known
    ]
    return units + (show(missing) if missing else [])


def describe(unit: dict[str, str]) -> tuple[str, str]:
    """(category, text) of one instance: its StatusText when active, else its state."""
    state = unit.get("ActiveState", "")
    sub = unit.get("SubState", "")
    text = unit.get(
        "StatusText", ""
    )  # kept by systemd after the process ends: stale then
    if state == "active":
        if text.startswith("run "):
            return "busy", text
        if text:
            return text.split()[0], text
        return "active", "active"
    word = WORDS.get(sub) or WORDS.get(state) or state or "unknown"
    if word in ("stopped", "failed") and unit.get("Job"):
        word = "starting"  # a start job waits (e.g. for the group, right after its restart)
    return word, word  # no StatusText: it may still be the previous process's


def instance_key(unit_id: str) -> tuple[int, str]:
    name = unit_id.split("@", 1)[-1].removesuffix(".service")
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def summary(units: list[dict[str, str]]) -> str:
    units = sorted(units, key=lambda u: instance_key(u["Id"]))
    counts: dict[str, int] = {}
    parts = []
    for unit in units:
        category, text = describe(unit)
        counts[category] = counts.get(category, 0) + 1
        parts.append(f"@{unit['Id'].split('@', 1)[-1].removesuffix('.service')} {text}")
    order = ["busy", "idle"] + sorted(set(counts) - {"busy", "idle"})
    head = f"{len(units)} worker{'s' if len(units) != 1 else ''}: " + (
        ", ".join(f"{counts[c]} {c}" for c in order if c in counts) or "none loaded"
    )
    return " | ".join([head, *parts])


class Notifier:
    """sd_notify over $NOTIFY_SOCKET (a no-op without it, e.g. when run by hand)."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None
        )

    def send(self, message: str) -> bool:
        """Send without blocking (a busy PID 1 must not stall the loop); True when sent."""
        if self.sock is None:
            print(message, flush=True)
            return True
        try:
            data = message.encode("utf-8", "replace")
            self.sock.sendto(data, socket.MSG_DONTWAIT, self.address)
        except OSError as err:  # queue full or systemd gone: the next round sends again
            print(f"sd_notify failed: {err}", file=sys.stderr, flush=True)
            return False
        return True


class Signal(Exception):
    """Raised by the signal handler to leave the loop at once (also from inside sleep)."""


def on_signal(signum: int, _frame: object) -> None:
    raise Signal(signum)


def main() -> int:
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    notifier = Notifier()
    watchdog = "WATCHDOG_USEC" in os.environ
    last = None
    try:
        while True:
            try:
                status = summary(query())
            except (OSError, subprocess.SubprocessError) as err:
                status = f"cannot read the instances: {err}"[:300]
            if last is None:
                if notifier.send(f"READY=1\nSTATUS={status}"):
                    last = status
            elif status != last and notifier.send(f"STATUS={status}"):
                last = status
            if watchdog:
                notifier.send("WATCHDOG=1")
            time.sleep(interval)
    except Signal as sig:
        if sig.args[0] == signal.SIGHUP:
            # `systemctl reload pi-worker` (the role after updating this file): run the new
            # version in the same process (same PID, so NotifyAccess=main still accepts it).
            notifier.send("RELOADING=1")
            os.execv(
                sys.executable,
                [sys.executable, *(["-I"] if sys.flags.isolated else []), *sys.argv],
            )
        notifier.send("STOPPING=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
