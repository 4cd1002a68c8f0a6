"""Matrix multiplication under faults: C must stay bit-identical to an undisturbed run.

One plan for every run here: C = A @ B with A and B generated from the chaos seed on the master
(``--size``, ``--dtype``) and a fixed panel size, so every run sends the same panels to the same
workers. The ``mm_baseline`` fixture is a quiet lab run of that plan; each faulted run must end
with the same sha256 of C (on a difference, the panels that differ are named), a passing
verification, every panel exactly once, and its shared-input tube (``pi.data.<run>``, where B lives) gone.

Faults: kill -9 of worker instances mid-job, kill -9 of beanstalkd (the binlog gives back jobs,
answers and B), kill -9 of the master run by ``run_matmul.yml`` (its ``pi-run@ID`` unit restarts
it, the run resumes from its journal and C.npy, and C comes back to the controller).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FIGURES,
    INSTANCES,
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
    record_run,
    run_id,
    server_addr,
    server_py,
    unit_props,
    wait_active,
    wait_all_workers,
)

testinfra_hosts = [f"ansible://{SERVER}"]

# ~8 s per lab run on this 2-core machine when it is quiet (4 worker instances share it), longer
# under load: the worker kills (one every ~1.5 s, testinfra included) land mid-run.
N = int(os.environ.get("CHAOS_MATMUL_N", "4096"))
DTYPE = os.environ.get("CHAOS_MATMUL_DTYPE", "float64")
PANEL_ROWS = int(os.environ.get("CHAOS_MATMUL_PANEL_ROWS", "32"))
JOBS = -(-N // PANEL_ROWS)
PLAN_ARGS = ["--workload", "matmul", "--size", str(N), "--dtype", DTYPE, "--panel-rows", str(PANEL_ROWS),
             "--seed", str(SEED)]
# No TTR expiry is needed: a killed worker's connection closes (its job is ready again at once)
# and beanstalkd gives reserved jobs back when it restarts.
RUN_ARGS = ["--ttr", "30", "--stall-timeout", "180", "--progress-interval", "2", "--connect-timeout", "30"]
PASSED: list[str] = []
"""Run ids whose checks passed: their A, B and C (hundreds of MB) are removed at the end."""
LIVE: list[MatmulMaster] = []
"""Runs started by the current test (a failed test's run is stopped and cancelled)."""


class MatmulMaster(Master):
    """`pi-job run --workload matmul` of the chaos plan, in the background on the server."""

    unit: str | None = None
    """The run's pi-run@ID.service when run_matmul.yml started it."""

    def start(self, resume: bool = False) -> None:
        what = ["--resume", self.run_id] if resume else ["--run-id", self.run_id, *PLAN_ARGS]
        argv = [f"{VENV}/bin/pi-job", "run", "--server", server_addr(), *what, *RUN_ARGS,
                "--state-dir", STATE_DIR, "--output", self.output]
        inner = f"{shlex.join(argv)} >>{self.log} 2>&1; echo $? >{self.rc_file}"
        out = self.host.run(
            f"mkdir -p {STATE_DIR}/logs {STATE_DIR}/results && rm -f {self.rc_file} && "
            f"(PYTHONUNBUFFERED=1 setsid sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1 &)"
        )
        assert out.rc == 0, out.stderr
        LIVE.append(self)

    @property
    def jobs(self) -> int:
        return JOBS


TUBES_OF = """
import sys, greenstalk
h, p = sys.argv[1].rsplit(':', 1)
c = greenstalk.Client((h, int(p)), encoding=None)
out = {}
for t in c.tubes():
    if t.endswith('.' + sys.argv[2]):
        s = c.stats_tube(t)
        out[t] = sum(s['current-jobs-' + k] for k in ('ready', 'reserved', 'delayed', 'buried'))
print(__import__('json').dumps(out))
"""


def run_tubes(rid: str) -> dict[str, int]:
    """The run's own tubes on the server (pi.data.<rid>, pi.results.<rid>) with their jobs."""
    out = server_py(TUBES_OF, server_addr(), rid)
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def data_tube_gone(rid: str) -> None:
    tubes = run_tubes(rid)
    assert f"pi.data.{rid}" not in tubes, f"{rid}: its shared-input tube is still on the server: {tubes}"
    assert not any(tubes.values()), f"{rid}: jobs left in its tubes: {tubes}"


DIFF_PANELS = """
import sys, numpy as np
rows = int(sys.argv[3])
a, b = (np.load(p, mmap_mode='r', allow_pickle=False) for p in sys.argv[1:3])
print([i for i in range(0, a.shape[0], rows) if not np.array_equal(a[i:i + rows], b[i:i + rows])][:20])
"""


DROP_DATA = """
import sys, greenstalk
h, p = sys.argv[1].rsplit(':', 1)
c = greenstalk.Client((h, int(p)), encoding=None)
c.use(sys.argv[2])
while True:
    try:
        c.delete(c.peek_ready())
    except greenstalk.NotFoundError:
        break
"""


def abandon(master: MatmulMaster) -> None:
    """After a test: a run still going is stopped and cancelled; a run's shared inputs are dropped.

    The lab is shared. Neither `runs --cancel` nor a master that fails (its unit then stays
    failed) deletes the run's shared inputs (pi.data.<run>); a finished run has none left.
    """
    if master.unit is not None:
        live = master.host.run(f"systemctl is-active {master.unit}").stdout.strip() in ("active", "activating")
    else:
        live = master.rc() is None
    if live:
        pid = master.pid()
        if pid:
            master.host.run(f"kill -9 {pid}")
        master.host.run(f"{VENV}/bin/pi-job runs --state-dir {STATE_DIR} --server {server_addr()}"
                        f" --cancel {master.run_id}")
    server_py(DROP_DATA, server_addr(), f"pi.data.{master.run_id}")


def check_product(rid: str, result: dict, base: dict, log: str = "") -> None:
    """C bit-identical to the undisturbed run, verified, every panel once, per-run data gone."""
    if result["sha256"] != base["sha256"]:
        diff = server_py(DIFF_PANELS, f"{STATE_DIR}/{rid}/C.npy", f"{STATE_DIR}/{base['run_id']}/C.npy",
                         str(PANEL_ROWS))
        raise AssertionError(f"{rid}: sha256(C) {result['sha256']}, undisturbed run has {base['sha256']};"
                             f" first rows of panels that differ: {diff.stdout.strip()}{diff.stderr}\n{log}")
    assert result["verification"]["ok"], result["verification"]
    assert sorted(j["job"] for j in result["per_job"]) == list(range(JOBS)), "a panel folded twice or lost"
    assert sum(result["per_host"].values()) == N, result["per_host"]
    assert result["shape"] == [N, N] and result["dtype"] == DTYPE
    data_tube_gone(rid)


def record(fault: str, injected: int, result: dict | None, base: dict, seconds: float) -> None:
    record_run(fault, injected, result, base["sha256"], key="sha256")
    FIGURES.setdefault("matmul", []).append(
        {"fault": fault, "injected": injected, "run_id": (result or {}).get("run_id"),
         "sha256": (result or {}).get("sha256"), "equal": (result or {}).get("sha256") == base["sha256"],
         "duplicates": (result or {}).get("duplicates"), "redeliveries": (result or {}).get("redeliveries"),
         "master_seconds": (result or {}).get("seconds"), "wall_seconds": round(seconds, 1)}
    )


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """After each test: stop and cancel its runs that are still going (a failed test)."""
    yield
    while LIVE:
        abandon(LIVE.pop())


@pytest.fixture(scope="module")
def mm_baseline():
    """The undisturbed run of the plan; its shared-input tube is seen on the server mid-run."""
    wait_all_workers()
    master = MatmulMaster(run_id("mm-base"))
    started = time.monotonic()
    master.start()
    try:
        master.wait_progress(1, timeout=180)
        tubes_mid_run = run_tubes(master.run_id) if master.rc() is None else {}
        rc = master.wait(timeout=300)
    finally:
        abandon(LIVE.pop())
    seconds = time.monotonic() - started
    assert rc == 0, master.tail()
    result = master.result()
    # The check below (tube gone) can fail: mid-run the tube holds B's chunks.
    assert tubes_mid_run.get(f"pi.data.{master.run_id}", 0) >= 1, tubes_mid_run
    assert result["verification"]["ok"] and result["jobs"] == JOBS, result
    base = {"sha256": result["sha256"], "run_id": master.run_id,
            "seconds": result["seconds"], "wall_seconds": round(seconds, 1), "gflops": result["gflops"],
            "bytes_moved": result["bytes_moved"], "verification": result["verification"]}
    data_tube_gone(master.run_id)
    FIGURES["matmul_baseline"] = {**base, "n": N, "dtype": DTYPE,
                                  "panel_rows": PANEL_ROWS, "jobs": JOBS}
    PASSED.append(master.run_id)
    print(f"\nmatmul undisturbed: {N}x{N} {DTYPE}, {JOBS} panels of {PANEL_ROWS} rows, {result['seconds']:.1f} s"
          f" ({seconds:.1f} s wall), {result['gflops']:.3g} GFLOP/s, {result['bytes_moved']:,} bytes;"
          f" sha256(C) {result['sha256']}; {result['verification']}; tubes mid-run {tubes_mid_run}")
    yield base
    for rid in PASSED:
        node(SERVER).run(f"rm -rf {STATE_DIR}/{rid}")


def test_matmul_worker_kills(mm_baseline):
    """kill -9 of each worker instance mid-job (round robin): C's sha256 as undisturbed."""
    units = [(node(name), f"pi-worker@{i}.service") for name in WORKERS for i in INSTANCES]
    master = MatmulMaster(run_id("mm-wkill"))
    started = time.monotonic()
    master.start()
    master.wait_progress(2, timeout=180)
    injected, done_at_kills = 0, []
    for host, unit in units:
        done = master.done_jobs()
        if not master.running() or done >= JOBS:
            break
        props = unit_props(host, unit, "MainPID", "ActiveState")
        if props["ActiveState"] != "active" or props["MainPID"] == "0":
            continue
        host.run(f"kill -9 {props['MainPID']}")
        injected += 1
        done_at_kills.append(done)
        time.sleep(0.7)
    rc = master.wait()
    seconds = time.monotonic() - started
    result = master.result() if rc == 0 else None
    record("matmul: kill -9 worker instances mid-job", injected, result, mm_baseline, seconds)
    assert rc == 0, master.tail()
    check_product(master.run_id, result, mm_baseline, master.tail())
    assert injected >= 2, f"only {injected} worker kills before the run ended (panels done at each: {done_at_kills})"
    PASSED.append(master.run_id)
    wait_all_workers()
    print(f"\n{master.run_id}: {injected} worker kills (at {done_at_kills} of {JOBS} panels done);"
          f" sha256(C) equal, duplicates {result['duplicates']}, redeliveries {result['redeliveries']},"
          f" {result['seconds']:.1f} s")


def test_matmul_beanstalkd_kills(mm_baseline):
    """kill -9 of beanstalkd mid-run (twice): jobs, answers and B come back from the binlog."""
    server = node(SERVER)
    unit = "beanstalkd.service"
    master = MatmulMaster(run_id("mm-bkill"))
    started = time.monotonic()
    master.start()
    done = master.wait_progress(2, timeout=180)
    injected = 0
    for _ in range(2):
        if not master.running() or done >= JOBS - 2:
            break
        props = unit_props(server, unit, "MainPID", "NRestarts")
        server.run(f"kill -9 {props['MainPID']}")
        injected += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = unit_props(server, unit, "NRestarts", "ActiveState")
            if int(now["NRestarts"]) > int(props["NRestarts"]) and now["ActiveState"] == "active":
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"beanstalkd not restarted{journal(server, unit)}")
        done = master.wait_progress(done + 2, timeout=180)
    rc = master.wait()
    seconds = time.monotonic() - started
    result = master.result() if rc == 0 else None
    record("matmul: kill -9 beanstalkd (binlog)", injected, result, mm_baseline, seconds)
    assert rc == 0, master.tail() + journal(server, unit)
    check_product(master.run_id, result, mm_baseline, master.tail())
    assert injected >= 1, "the run ended before the first kill"
    PASSED.append(master.run_id)
    wait_all_workers()
    print(f"\n{master.run_id}: beanstalkd killed {injected}x; sha256(C) equal, duplicates"
          f" {result['duplicates']}, redeliveries {result['redeliveries']}, {result['seconds']:.1f} s")


def run_units() -> set[str]:
    out = node(SERVER).run("systemctl list-units --all --plain --no-legend 'pi-run@*'")
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_matmul_master_kill_via_run_matmul(mm_baseline):
    """run_matmul.yml runs the plan; kill -9 of its master: pi-run@ID restarts it, C comes back equal."""
    server = node(SERVER)
    before = run_units()
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    with tempfile.TemporaryDirectory() as results:
        argv = [exe, str(REPO / "run_matmul.yml"), "-i", inventory_dir(), "-e", f"n={N}", "-e", f"dtype={DTYPE}",
                "-e", f"panel_rows={PANEL_ROWS}", "-e", f"seed={SEED}", "-e", "ttr=30", "-e", "stall_timeout=180",
                "-e", "progress_interval=2", "-e", "poll_interval=1", "-e", f"pi_run_results_dir={results}",
                "-e", "pi_run_report=false"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        kills, unit, text = 0, None, ""
        try:
            deadline = time.monotonic() + 240
            while unit is None and proc.poll() is None and time.monotonic() < deadline:
                new = sorted(u for u in run_units() - before if u.startswith("pi-run@matmul"))
                unit = new[0] if new else None
                time.sleep(0.5)
            assert unit, "no pi-run@ unit of the run appeared"
            rid = unit.removeprefix("pi-run@").removesuffix(".service")
            master = MatmulMaster(rid)
            master.unit = unit
            LIVE.append(master)
            done = master.wait_progress(2, timeout=180)
            for _ in range(2):
                props = unit_props(server, unit, "MainPID")
                if props["MainPID"] == "0" or master.done_jobs() >= JOBS - 2:
                    break
                server.run(f"kill -9 {props['MainPID']}")
                kills += 1
                done = master.wait_progress(done + 2, timeout=180)
            text, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        seconds = time.monotonic() - started
        summary_path = Path(results) / f"{rid}.json"
        result = json.loads(summary_path.read_text()) if proc.returncode == 0 and summary_path.exists() else None
        c_path = Path(results) / f"{rid}.C.npy"
        c_digest = hashlib.sha256(np.load(c_path, allow_pickle=False).tobytes()).hexdigest() if c_path.exists() else None
    record("matmul: kill -9 the master (pi-run@ID restarts it), run_matmul.yml", kills, result, mm_baseline, seconds)
    assert proc.returncode == 0, text[-4000:]
    check_product(rid, result, mm_baseline, text[-3000:])
    assert c_digest == mm_baseline["sha256"], f"C fetched to the controller: sha256 {c_digest}"
    assert kills >= 1, "the run ended before the first kill"
    assert "restarted by systemd" in text, text[-3000:]
    assert int(unit_props(server, unit, "NRestarts")["NRestarts"]) >= kills
    wait_active(server, "beanstalkd.service")
    PASSED.append(rid)
    print(f"\n{rid}: master killed {kills}x, restarted by systemd; run_matmul.yml exit 0 after {seconds:.0f} s;"
          f" C fetched to the controller, sha256 equal; duplicates {result['duplicates']},"
          f" redeliveries {result['redeliveries']}")
