"""Wait for an async job (async_status in a loop) and print its log's new lines meanwhile.

Each poll is one async_status call and one `tail` of `log` on the node, each over a fresh
connection use, so an hour-long run never depends on one SSH session. Polls start after 0.5 s
and their interval doubles up to `interval`: short runs come back at once, while long runs cost
the controller (which may share the lab's cores) one poll every `interval` seconds.
"""

from __future__ import annotations

import shlex
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    """pi_run_wait: jid=..., log=..., interval=10, timeout=86400, lines=3."""

    _VALID_ARGS = frozenset(("jid", "log", "interval", "timeout", "lines"))
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(
            argument_spec={
                "jid": {"type": "str", "required": True},
                "log": {"type": "str", "required": True},
                "interval": {"type": "float", "default": 10.0},
                "timeout": {"type": "float", "default": 86400.0},
                "lines": {"type": "int", "default": 5},
            }
        )
        host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        async_dir = self._remote_expand_user(
            self.get_shell_option("async_dir", default="~/.ansible_async")
        )
        seen = ""
        started = time.monotonic()
        polls = 0
        pause = min(0.5, args["interval"])
        while True:
            polls += 1
            status = self._execute_module(
                module_name="ansible.legacy.async_status",
                module_args={"jid": args["jid"], "_async_dir": async_dir},
                task_vars=task_vars,
            )
            tail = self._low_level_execute_command(
                f"tail -n {args['lines']} {shlex.quote(args['log'])} 2>/dev/null"
            )
            text = tail.get("stdout", "")
            lines = [line for line in text.splitlines() if line.strip()]
            finished = bool(status.get("finished"))
            if finished and not status.get("failed"):
                break  # the summary task shows the result
            # Print the lines that were not shown by the previous poll.
            fresh = lines
            if seen and seen in lines:
                fresh = lines[lines.index(seen) + 1 :]
            for line in fresh:
                display.display(f"[{host}] {line}")
            if lines:
                seen = lines[-1]
            if finished:
                break
            if time.monotonic() - started > args["timeout"]:
                raise AnsibleActionFail(
                    f"run still going after {args['timeout']:.0f} s "
                    f"(job {args['jid']} keeps running; tail {args['log']})"
                )
            time.sleep(pause)
            pause = min(pause * 2, args["interval"])
        for key in ("started", "finished"):
            status[key] = bool(status.get(key))
        status["polls"] = polls
        status["waited"] = round(time.monotonic() - started, 1)
        result.update(status)
        return result
