"""Faults on the deployed lab: every faulted run must end with exactly the undisturbed count.

All runs share one plan (seed, darts, job darts), so they share one undisturbed count (the
``baseline`` fixture: a quiet lab run, cross-checked with the kernel on the controller).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import (
    INSTANCES,
    REPO,
    SERVER,
    WORKERS,
    Master,
    ansible_env,
    inventory_dir,
    journal,
    node,
    record_run,
    run_id,
    unit_props,
    wait_active,
    wait_all_workers,
)

testinfra_hosts = [f"ansible://{SERVER}"]

GAP = 0.8
"""Seconds between two injected faults of a kind."""


def check_result(master: Master, result: dict, expected: int) -> None:
    assert result["inside"] == expected, (
        f"{master.run_id}: {result['inside']} inside, undisturbed run has {expected}\n{master.tail()}"
    )
    assert result["darts"] == master.darts
    assert sorted(r["job"] for r in result["per_job"]) == list(range(master.jobs)), "a job counted twice or lost"
    assert sum(result["per_host"].values()) == master.darts


def worker_units():
    return [(node(name), f"pi-worker@{i}.service") for name in WORKERS for i in INSTANCES]


def test_worker_kills(baseline):
    """kill -9 of worker processes mid-job, round robin; systemd restarts each (NRestarts).

    A fast lab may finish a run before all kills are in: then another run of the same plan.
    """
    kills_wanted = 10
    units = worker_units()
    before = {(h.backend.get_hostname(), u): int(unit_props(h, u, "NRestarts")["NRestarts"]) for h, u in units}
    killed: dict[tuple[str, str], int] = {}
    cycle = itertools.cycle(units)
    for attempt in range(3):
        if sum(killed.values()) >= kills_wanted:
            break
        master = Master(run_id(f"wkill{attempt}"))
        master.start()
        master.wait_progress(3)
        injected = 0
        deadline = time.monotonic() + 240
        while sum(killed.values()) < kills_wanted and master.running() and time.monotonic() < deadline:
            host, unit = next(cycle)
            props = unit_props(host, unit, "MainPID", "ActiveState")
            if props["ActiveState"] != "active" or props["MainPID"] == "0":
                time.sleep(0.2)
                continue
            # Mid-job: a serving worker holds a reserved job almost all the time (0.1-0.2 s jobs).
            host.run(f"kill -9 {props['MainPID']}")
            key = (host.backend.get_hostname(), unit)
            killed[key] = killed.get(key, 0) + 1
            injected += 1
            time.sleep(GAP)
        rc = master.wait()
        result = master.result() if rc == 0 else None
        record_run("kill -9 worker process (mid-job)", injected, result, baseline)
        assert rc == 0, master.tail()
        check_result(master, result, baseline)
        print(f"\n{master.run_id}: {injected} worker kills; {result['inside']} == {baseline},"
              f" duplicates {result['duplicates']}, redeliveries {result['redeliveries']}")
    assert sum(killed.values()) >= kills_wanted, f"only {killed} kills"
    wait_all_workers()
    for host, unit in units:
        key = (host.backend.get_hostname(), unit)
        if key not in killed:
            continue
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = int(unit_props(host, unit, "NRestarts")["NRestarts"])
            if now >= before[key] + killed[key]:
                break
            time.sleep(0.5)
        assert now >= before[key] + killed[key], f"{key}: NRestarts {before[key]} -> {now}{journal(host, unit)}"
    print(f"worker kills per unit {killed}: NRestarts grew by as much")


def test_beanstalkd_kills(baseline):
    """kill -9 of beanstalkd mid-run: systemd restarts it, the binlog gives the jobs back."""
    kills_wanted = 4
    server = node(SERVER)
    unit = "beanstalkd.service"
    start_restarts = int(unit_props(server, unit, "NRestarts")["NRestarts"])
    total = 0
    for attempt in range(3):
        if total >= kills_wanted:
            break
        master = Master(run_id(f"bkill{attempt}"))
        master.start()
        injected = 0
        done = master.wait_progress(3)
        while total < kills_wanted and master.running():
            props = unit_props(server, unit, "MainPID", "NRestarts")
            server.run(f"kill -9 {props['MainPID']}")
            injected += 1
            total += 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = unit_props(server, unit, "NRestarts", "ActiveState", "MainPID")
                if int(now["NRestarts"]) > int(props["NRestarts"]) and now["ActiveState"] == "active":
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"beanstalkd not restarted{journal(server, unit)}")
            # Progress after the restart (master and workers reconnected), then the next kill.
            done = master.wait_progress(done + 3, timeout=120)
            time.sleep(GAP)
        rc = master.wait()
        result = master.result() if rc == 0 else None
        record_run("kill -9 beanstalkd (binlog)", injected, result, baseline)
        assert rc == 0, master.tail() + journal(server, unit)
        check_result(master, result, baseline)
        print(f"\n{master.run_id}: beanstalkd killed {injected}x; {result['inside']} == {baseline}")
    restarts = int(unit_props(server, unit, "NRestarts")["NRestarts"]) - start_restarts
    assert restarts >= total, f"NRestarts grew by {restarts} for {total} kills"
    assert total >= kills_wanted, f"only {total} kills"
    print(f"beanstalkd NRestarts +{restarts} for {total} kills")
    wait_all_workers()


def docker(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(check=False, args=["docker", *args], capture_output=True, text=True, timeout=timeout)


def test_worker_node_stop_start(baseline):
    """docker stop of a whole worker node mid-run, then docker start: its workers come back."""
    master = Master(run_id("node"))
    master.start()
    injected = 0
    done = master.wait_progress(3)
    for name in WORKERS:
        if not master.running():
            break
        addr_before = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout
        out = docker("stop", "-t", "20", name)
        assert out.returncode == 0, out.stderr
        injected += 1
        time.sleep(2)
        out = docker("start", name)
        assert out.returncode == 0, out.stderr
        addr_after = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout
        assert addr_after == addr_before, f"{name} came back with address {addr_after} (was {addr_before})"
        for i in INSTANCES:
            wait_active(node(name), f"pi-worker@{i}.service", timeout=120)
        done = master.wait_progress(done + 2, timeout=120)
    rc = master.wait()
    result = master.result() if rc == 0 else None
    record_run("stop + start a worker node", injected, result, baseline)
    assert rc == 0, master.tail()
    check_result(master, result, baseline)
    assert injected == len(WORKERS), f"only {injected} node stops before the run ended"
    wait_all_workers()


def test_master_kill_then_run_pi_resumes(baseline):
    """SIGKILL of the master mid-run (twice), resumed each time by run_pi.yml -e run_id=ID."""
    master = Master(run_id("mkill"))
    master.start()
    master.wait_progress(5)
    master.kill()
    injected = 1
    done = master.done_jobs()
    assert master.rc() is None or master.rc() != 0
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    with tempfile.TemporaryDirectory() as results:
        argv = [exe, str(REPO / "run_pi.yml"), "-i", inventory_dir(), "-e", f"run_id={master.run_id}",
                "-e", "poll_interval=1", "-e", f"pi_run_results_dir={results}"]
        # First resume through run_pi.yml, killed again mid-run.
        proc = subprocess.Popen(argv, cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            master.wait_progress(done + 5, timeout=180)
            if master.done_jobs() < master.jobs - 5:
                master.kill()
                injected += 1
            first, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        # Second resume: runs to the end.
        out = subprocess.run(argv, check=False, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600)
        files = list(Path(results).glob("*.json"))
        result = json.loads(files[0].read_text()) if out.returncode == 0 and files else None
    record_run("kill -9 master, resume via run_pi.yml", injected, result, baseline)
    assert out.returncode == 0, first[-2000:] + "\n----\n" + out.stdout[-3000:] + out.stderr
    assert "resume " + master.run_id in out.stdout, out.stdout[-2000:]
    check_result(master, result, baseline)
    # The second kill happens only when the resumed run is still far from its end (runs are fast).
    assert injected >= 1, f"no master kill\n{first[-2000:]}"
    print(f"\nmaster killed {injected}x, resumed by run_pi.yml; result {result['inside']} == {baseline}")
    print("\n".join(line for line in out.stdout.splitlines() if "pi = " in line or "interval" in line))


def test_all_but_one_worker_dead(baseline):
    """Three of the four worker instances die for good mid-run: the last one finishes the run."""
    units = worker_units()
    survivor = units[-1]
    master = Master(run_id("last"))
    master.start()
    master.wait_progress(3)
    injected = 0
    try:
        for host, unit in units[:-1]:
            pid = unit_props(host, unit, "MainPID")["MainPID"]
            host.run(f"kill -9 {pid}; systemctl stop {unit}")
            injected += 1
        for host, unit in units[:-1]:
            state = host.run(f"systemctl is-active {unit}").stdout.strip()
            assert state != "active", f"{unit} still active"
        done_at_kill = master.done_jobs()
        rc = master.wait(timeout=400)
        result = master.result() if rc == 0 else None
        record_run("all but one worker dead", injected, result, baseline)
        assert rc == 0, master.tail()
        check_result(master, result, baseline)
        # The survivor did the rest of the run (results journaled well after the kills).
        host, unit = survivor
        name = host.backend.get_hostname()
        records = [json.loads(line) for line in node(SERVER).check_output(f"cat {master.journal}").splitlines()]
        late = [r["worker"] for r in records if r.get("type") == "result"][done_at_kill + 8 :]
        assert late and len(set(late)) == 1 and name in late[0], (survivor, sorted(set(late)))
        assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active", journal(host, unit)
        print(f"\n{injected} workers stopped after {done_at_kill} results; survivor {survivor[1]} on"
              f" {survivor[0].backend.get_hostname()} finished; result {result['inside']} == {baseline}")
    finally:
        for host, unit in units[:-1]:
            host.run(f"systemctl start {unit}")
        wait_all_workers()
