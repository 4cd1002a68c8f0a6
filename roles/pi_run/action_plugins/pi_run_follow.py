"""Follow a run's master unit (pi-run@ID.service) to its end, printing its new log lines.

Each poll is one short command on the node over a fresh connection use (so an hour-long run
never depends on one SSH session, and a node that reboots is simply polled again): the unit's
state, the size of the run's journal and the unit's journal lines after the last cursor.
Polls start after 0.5 s and their interval doubles up to ``interval``. The wait between two
polls happens on the node while the master runs (``tail --pid`` on its main process, which
costs no CPU), so a poll returns as soon as the master exits: the end of a short run is seen at
once instead of at the next poll.

The follow ends
- with success when the unit has exited 0 and the result file exists;
- with one line naming the run and the commands that inspect and resume it when the unit has
  failed, was stopped, or the run's journal has not grown for ``stall_timeout`` seconds (the
  unit may go on: this only stops watching), or after ``timeout`` seconds;
- at once when the master keeps failing before it ever created the run (a bad value, an
  unknown run id, no server): then the unit is stopped and disabled, nothing is left behind.
A restarting unit (after a crash, a lost server, a reboot) is reported and followed further.
"""

from __future__ import annotations

import re
import shlex
import time

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

PROPS = (
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "ExecMainCode",
    "ExecMainStatus",
    "UnitFileState",
)
CURSOR = re.compile(r"^-- cursor: (\S+)$")


class ActionModule(ActionBase):
    """pi_run_follow: run_id=..., state_dir=..., cursor="", fresh=true, interval=10, ..."""

    _VALID_ARGS = frozenset(
        ("run_id", "state_dir", "cursor", "fresh", "interval", "timeout", "stall_timeout", "lines")
    )
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(
            argument_spec={
                "run_id": {"type": "str", "required": True},
                "state_dir": {"type": "str", "required": True},
                "cursor": {"type": "str", "default": ""},
                "fresh": {"type": "bool", "default": True},
                "interval": {"type": "float", "default": 10.0},
                "timeout": {"type": "float", "default": 86400.0},
                "stall_timeout": {"type": "float", "default": 90.0},
                "lines": {"type": "int", "default": 5},
            }
        )
        self.host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        run_id = args["run_id"]
        unit = f"pi-run@{run_id}.service"
        journal = f"{args['state_dir']}/{run_id}.jsonl"
        output = f"{args['state_dir']}/results/{run_id}.json"
        self.hint = (
            f"inspect: systemctl status {unit}, journalctl -u {unit}, pi-job runs; "
            f"follow or resume: ansible-playbook run_pi.yml -e run_id={run_id}"
        )
        cursor = args["cursor"]
        first = not args["fresh"]  # following a live run: show its last lines first
        started = time.monotonic()
        progressed = started
        size = None
        restarts = None
        polls = 0
        last_error = ""
        unreachable = False
        booting = False
        announced = -1
        pause = min(0.5, args["interval"])
        while True:
            polls += 1
            if cursor:
                where = f"--after-cursor={shlex.quote(cursor)}"
            elif first:
                where = f"--lines={args['lines']}"
            else:
                where = ""
            # First wait (at most ``pause``) on the node for the master's main process to exit.
            script = (
                f"pid=$(systemctl show {unit} --property=MainPID --value 2>/dev/null); "
                f'if [ "${{pid:-0}}" -gt 0 ] 2>/dev/null; then '
                f"timeout {pause:.3f} tail -s 0.1 --pid=$pid -f /dev/null; fi; "
                f"systemctl show {unit} " + " ".join(f"--property={p}" for p in PROPS) + "; "
                f"echo JOURNAL_SIZE=$(stat -c %s {shlex.quote(journal)} 2>/dev/null || echo -1); "
                f"echo RESULT_FILE=$(test -s {shlex.quote(output)} && echo 1 || echo 0); "
                "echo SYSTEM=$(systemctl is-system-running 2>/dev/null); "
                "echo ==LOG==; "
                f"journalctl --unit={unit} --no-pager --quiet --output=cat --show-cursor {where}"
            )
            polled = time.monotonic()
            try:
                out = self._low_level_execute_command(script)
                # become over SSH runs the command on a terminal: lines end with CRLF there
                text = out.get("stdout", "").replace("\r\n", "\n")
                head, sep, log = text.partition("==LOG==\n")
                if not sep:
                    raise AnsibleError((out.get("stderr") or text or "no answer").strip()[:200])
            except AnsibleError as exc:
                # The node is away (rebooting, restarting container, network): poll again.
                if not unreachable:
                    display.display(f"[{self.host}] run {run_id}: cannot reach the node ({exc}); retrying")
                unreachable = True
                if time.monotonic() - progressed > args["stall_timeout"]:
                    self._fail(f"run {run_id}: node unreachable for {args['stall_timeout']:.0f} s")
                time.sleep(min(2.0, args["interval"]))
                continue
            if unreachable:
                display.display(f"[{self.host}] run {run_id}: node reachable again")
                unreachable = False
            state = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
            booting = booting and state.get("ActiveState") == "inactive"
            first = False
            for line in log.splitlines():
                match = CURSOR.match(line)
                if match:
                    cursor = match.group(1)
                elif line.strip():
                    display.display(f"[{self.host}] {line}")
                    if line.startswith("pi-job run:"):
                        last_error = line
            now_size = int(state.get("JOURNAL_SIZE", "-1") or -1)
            if now_size != size:
                size = now_size
                progressed = time.monotonic()
            active = state.get("ActiveState", "")
            sub = state.get("SubState", "")
            count = int(state.get("NRestarts", "0") or 0)
            exit_code = state.get("ExecMainCode", "")
            exit_status = state.get("ExecMainStatus", "")
            if restarts is not None and count > restarts and size is not None and size < 0:
                self._abandon(unit, run_id, last_error or "the master exited before the run existed")
            if restarts is not None and count > restarts:
                display.display(
                    f"[{self.host}] run {run_id}: the master was restarted by systemd "
                    f"({count} restarts of {unit})"
                )
            restarts = count
            if active == "activating" and sub == "auto-restart":
                if size is not None and size < 0:
                    self._abandon(unit, run_id, last_error or "the master exited before the run existed")
                if announced != count:
                    display.display(
                        f"[{self.host}] run {run_id}: the master exited "
                        f"({last_error or exit_code + ' ' + exit_status}); systemd restarts it"
                    )
                announced = count
            elif active == "failed":
                if size is not None and size < 0:
                    self._abandon(unit, run_id, last_error or f"{unit} failed")
                why = last_error or self._last_error(unit) or f"{unit} failed ({state.get('Result')})"
                if exit_status == "2" and why.startswith("pi-job run: "):
                    # Values refused by the master before it queued anything (e.g. a run id
                    # that exists with other values): its own line, the run is unchanged.
                    raise AnsibleActionFail(f"{re.sub(r'^pi-job run: (error: )?', '', why)} (exit 2)")
                self._fail(f"run {run_id} failed (exit {exit_status}): {why.removeprefix('pi-job run: ')}")
            elif active == "inactive":
                if state.get("RESULT_FILE") == "1" and exit_status == "0":
                    break
                if state.get("UnitFileState") == "enabled" and state.get("SYSTEM") in (
                    "initializing",
                    "starting",
                ):
                    # The node is booting: the enabled unit starts with it and resumes the run.
                    if not booting:
                        display.display(
                            f"[{self.host}] run {run_id}: the node is booting; "
                            f"{unit} starts with it"
                        )
                    booting = True
                    if time.monotonic() - progressed > args["stall_timeout"]:
                        self._fail(f"run {run_id}: {unit} did not start with the node")
                    time.sleep(1.0)
                    continue
                if size is not None and size < 0:
                    self._abandon(unit, run_id, last_error or f"{unit} did not start")
                self._fail(
                    f"run {run_id} is stopped, not finished ({unit} inactive, {exit_code} {exit_status})"
                )
            if time.monotonic() - progressed > args["stall_timeout"]:
                self._fail(
                    f"run {run_id}: no progress for {args['stall_timeout']:.0f} s "
                    f"({unit} {active}/{sub}; the unit goes on by itself)"
                )
            if time.monotonic() - started > args["timeout"]:
                self._fail(f"run {run_id} still going after {args['timeout']:.0f} s (the unit goes on)")
            # The node waited while the master ran: sleep only what is left (no master process).
            time.sleep(max(0.0, pause - (time.monotonic() - polled)))
            pause = min(pause * 2, args["interval"])
        result.update(
            {
                "changed": False,
                "run_id": run_id,
                "restarts": restarts or 0,
                "polls": polls,
                "waited": round(time.monotonic() - started, 1),
            }
        )
        return result

    def _fail(self, message: str) -> None:
        raise AnsibleActionFail(f"{message}; {self.hint}")

    def _last_error(self, unit: str) -> str:
        out = self._low_level_execute_command(
            f"journalctl --unit={unit} --no-pager --quiet --output=cat --lines=50 | grep '^pi-job run:' | tail -n 1"
        )
        return out.get("stdout", "").strip()

    def _abandon(self, unit: str, run_id: str, why: str) -> None:
        """The master never created the run: stop and disable its unit, fail with its line."""
        self._low_level_execute_command(f"systemctl disable --now --quiet {unit}; systemctl reset-failed {unit}")
        raise AnsibleActionFail(f"{why} (run {run_id} was not created; its unit {unit} is stopped)")
