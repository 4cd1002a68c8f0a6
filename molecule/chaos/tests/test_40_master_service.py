"""The master as a service: pi-run@ID.service survives kills, a server restart and Ctrl-C.

Every run is started and followed by run_pi.yml itself, and run_pi.yml must end with exit 0 and
exactly the undisturbed count (the ``baseline`` fixture), with one master at a time. A stalled
run must fail once, with its message, instead of restarting forever.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import (
    DARTS,
    INSTANCES,
    JOB_DARTS,
    REPO,
    SEED,
    SERVER,
    STATE_DIR,
    VENV,
    WORKERS,
    Master,
    ansible_env,
    inventory_dir,
    journal,
    node,
    playbook,
    record_run,
    run_id,
    server_addr,
    unit_props,
    wait_all_workers,
)

testinfra_hosts = [f"ansible://{SERVER}"]


def unit(rid: str) -> str:
    return f"pi-run@{rid}.service"


def run_pi_argv(rid: str, results: str, *extra: str, new: bool = True) -> list[str]:
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    argv = [exe, str(REPO / "run_pi.yml"), "-i", inventory_dir(), "-e", f"run_id={rid}",
            "-e", "poll_interval=1", "-e", f"pi_run_results_dir={results}", "-e", "pi_run_report=false"]
    if new:
        argv += ["-e", f"darts={DARTS}", "-e", f"job_darts={JOB_DARTS}", "-e", f"seed={SEED}",
                 "-e", "ttr=10", "-e", "stall_timeout=180", "-e", "progress_interval=2"]
    return argv + list(extra)


def start_run_pi(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def masters(rid: str) -> int:
    """Live `pi-job run` processes of the run on the server."""
    # No pgrep on minimal nodes: read /proc.
    pattern = shlex.quote(f"^{VENV}/bin/python[^ ]* {VENV}/bin/pi-job run .*{rid}( |$)")
    out = node(SERVER).run(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
        f" | grep -cE {pattern}"
    )
    return int(out.stdout.strip() or 0)


class Watch:
    """Samples the number of masters of a run while waiting (must never exceed one)."""

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.most = 0

    def sample(self) -> None:
        self.most = max(self.most, masters(self.rid))

    def progress(self, master: Master, at_least: int, timeout: float = 180.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sample()
            done = master.done_jobs()
            if done >= at_least:
                return done
            time.sleep(0.3)
        raise AssertionError(f"{self.rid}: fewer than {at_least} results after {timeout:g} s"
                             f"{journal(node(SERVER), unit(self.rid))}")


def finish(proc: subprocess.Popen[str], watch: Watch, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        watch.sample()
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out


def result_of(results: str) -> dict | None:
    files = list(Path(results).glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


def check(result: dict | None, expected: int, out: str) -> None:
    assert result is not None, out[-3000:]
    assert result["inside"] == expected, (result["inside"], expected)
    jobs = -(-DARTS // JOB_DARTS)
    assert sorted(r["job"] for r in result["per_job"]) == list(range(jobs)), "a job counted twice or lost"


def finished_unit(rid: str) -> None:
    """A finished run's unit: inactive, exit 0, disabled (not started at boot any more)."""
    server = node(SERVER)
    props = unit_props(server, unit(rid), "ActiveState", "ExecMainStatus")
    assert props["ActiveState"] == "inactive" and props["ExecMainStatus"] == "0", props
    assert not enabled(rid), f"{unit(rid)} still enabled"


def enabled(rid: str) -> bool:
    """The unit starts at boot (its symlink; ExecStopPost disables with --no-reload)."""
    wants = f"/etc/systemd/system/multi-user.target.wants/{unit(rid)}"
    return node(SERVER).run(f"test -L {wants}").rc == 0


def test_master_kill9_is_restarted_by_systemd(baseline):
    """kill -9 of the master twice mid-run: systemd restarts it, run_pi.yml keeps following."""
    rid = run_id("svc-kill")
    master, watch = Master(rid), Watch(rid)
    server = node(SERVER)
    with tempfile.TemporaryDirectory() as results:
        proc = start_run_pi(run_pi_argv(rid, results))
        try:
            done = watch.progress(master, 5)
            # A second master of the live run refuses with one line.
            second = server.run(f"{VENV}/bin/pi-job run --server {server_addr()} --resume {rid}"
                                f" --state-dir {STATE_DIR}")
            assert second.rc == 1 and second.stderr.strip().count("\n") == 0, second.stderr
            assert "already has a live master" in second.stderr, second.stderr
            kills = 0
            for _ in range(2):
                props = unit_props(server, unit(rid), "MainPID", "NRestarts")
                if props["MainPID"] == "0" or master.done_jobs() >= master.jobs - 5:
                    break
                server.run(f"kill -9 {props['MainPID']}")
                kills += 1
                done = watch.progress(master, done + 5)
            out = finish(proc, watch)
        finally:
            if proc.poll() is None:
                proc.kill()
        result = result_of(results)
    record_run("kill -9 the master (pi-run@ID.service restarts it)", kills,
               result if proc.returncode == 0 else None, baseline)
    assert proc.returncode == 0, out[-3000:]
    check(result, baseline, out)
    assert kills >= 1, "the run ended before the first kill"
    assert "restarted by systemd" in out, out[-3000:]
    assert int(unit_props(server, unit(rid), "NRestarts")["NRestarts"]) >= kills
    assert watch.most == 1, f"{watch.most} masters at once"
    assert second.stderr.strip().startswith("pi-job run: run ")
    finished_unit(rid)
    print(f"\n{rid}: master killed {kills}x, restarted by systemd; {result['inside']} == {baseline},"
          f" duplicates {result['duplicates']}, one master at a time; stderr of a second master:"
          f" {second.stderr.strip()}")


def docker(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=timeout)


def test_server_container_restart(baseline):
    """The server container dies mid-run (beanstalkd and master with it) and starts again."""
    rid = run_id("svc-reboot")
    master, watch = Master(rid), Watch(rid)
    with tempfile.TemporaryDirectory() as results:
        proc = start_run_pi(run_pi_argv(rid, results))
        try:
            watch.progress(master, 5)
            started = time.monotonic()
            out = docker("kill", "--signal", "KILL", SERVER)
            assert out.returncode == 0, out.stderr
            time.sleep(2)
            out = docker("start", SERVER)
            assert out.returncode == 0, out.stderr
            text = finish(proc, watch)
            seconds = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        result = result_of(results)
    record_run("server container killed and started (beanstalkd + master die, binlog kept)", 1,
               result if proc.returncode == 0 else None, baseline)
    assert proc.returncode == 0, text[-4000:]
    check(result, baseline, text)
    assert watch.most == 1, f"{watch.most} masters at once"
    finished_unit(rid)
    wait_all_workers()
    print(f"\n{rid}: server container killed and started; run_pi.yml followed it to the end"
          f" {seconds:.0f} s later; {result['inside']} == {baseline}, duplicates {result['duplicates']},"
          f" redeliveries {result['redeliveries']}")


def test_ctrl_c_then_follow(baseline):
    """Ctrl-C on run_pi.yml: the run goes on; run_pi.yml -e run_id=ID follows it to the end."""
    rid = run_id("svc-ctrlc")
    master, watch = Master(rid), Watch(rid)
    server = node(SERVER)
    with tempfile.TemporaryDirectory() as results:
        proc = start_run_pi(run_pi_argv(rid, results))
        watch.progress(master, 5)
        proc.send_signal(signal.SIGINT)
        first = finish(proc, watch, timeout=60)
        assert proc.returncode != 0, first[-2000:]
        state = unit_props(server, unit(rid), "ActiveState")["ActiveState"]
        done_at_interrupt = master.done_jobs()
        assert state == "active" or done_at_interrupt == master.jobs, state
        proc = start_run_pi(run_pi_argv(rid, results, new=False))
        out = finish(proc, watch)
        result = result_of(results)
    record_run("Ctrl-C on run_pi.yml, then run_pi.yml -e run_id=ID", 1,
               result if proc.returncode == 0 else None, baseline)
    assert proc.returncode == 0, first[-2000:] + "\n----\n" + out[-3000:]
    check(result, baseline, out)
    if state == "active":  # followed, or (runs take seconds) finished just before the follow
        assert "already running" in out or "is already finished" in out, out[-3000:]
    assert watch.most == 1, f"{watch.most} masters at once"
    assert int(unit_props(server, unit(rid), "NRestarts")["NRestarts"]) == 0
    finished_unit(rid)
    print(f"\n{rid}: run_pi.yml interrupted after {done_at_interrupt} jobs (unit {state}); followed"
          f" again by id: {result['inside']} == {baseline}")


def test_stalled_run_fails_once_with_its_message():
    """No worker at all: the unit fails with exit 3 (no restart loop), run_pi.yml says why."""
    server = node(SERVER)
    rid = run_id("svc-stall")
    units = [(node(name), f"pi-worker@{i}.service") for name in WORKERS for i in INSTANCES]
    for host, name in units:
        host.run(f"systemctl stop {name}")
    try:
        with tempfile.TemporaryDirectory() as results:
            started = time.monotonic()
            out = subprocess.run(
                run_pi_argv(rid, results, "-e", "darts=1e9", "-e", "stall_timeout=8", new=False),
                check=False, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300,
            )
            seconds = time.monotonic() - started
        text = " ".join((out.stdout + out.stderr).split())  # ansible's YAML output folds lines
        assert out.returncode != 0, text[-3000:]
        assert f"run {rid} failed (exit 3): no worker has taken a job for 8 s" in text, text[-3000:]
        assert f"systemctl status {unit(rid)}" in text, text[-3000:]
        time.sleep(3)  # no restart comes
        props = unit_props(server, unit(rid), "ActiveState", "NRestarts", "ExecMainStatus")
        assert props["ActiveState"] == "failed" and props["NRestarts"] == "0", props
        assert props["ExecMainStatus"] == "3" and not enabled(rid), props
        status = server.run(f"systemctl status --no-pager --full {unit(rid)}").stdout
        assert "no worker has taken a job for 8 s" in status, status
        runs = json.loads(server.check_output(f"{VENV}/bin/pi-job runs --state-dir {STATE_DIR} --json"))
        assert {r["run_id"]: r["state"] for r in runs}[rid] == "failed", runs
        # Cancel: the unit is stopped for good and the run's jobs leave the queue.
        cancel = playbook("playbooks/cancel.yml", "-e", f"run_id={rid}")
        assert cancel.returncode == 0, cancel.stdout[-3000:]
        assert re.search(r"run \S+ cancelled: unit stopped, [1-9]\d* queued jobs deleted", cancel.stdout), \
            cancel.stdout[-2000:]
        runs = json.loads(server.check_output(f"{VENV}/bin/pi-job runs --state-dir {STATE_DIR} --json"))
        assert {r["run_id"]: r["state"] for r in runs}[rid] == "cancelled", runs
        line = re.search(r"failed \(exit 3\): [^;]*", text)
        print(f"\n{rid}: run_pi.yml failed after {seconds:.0f} s: {line.group(0) if line else ''};"
              f" unit failed, NRestarts 0, disabled; cancel.yml removed its jobs")
    finally:
        for host, name in units:
            host.run(f"systemctl start {name}")
        wait_all_workers()
