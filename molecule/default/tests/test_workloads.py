"""Other workloads on the lab: a small matmul (C back on the controller) and the example."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from conftest import REPO, cluster_address

testinfra_hosts = ["ansible://master"]


def playbook_env() -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return env


def playbook(inventory_dir: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", str(REPO / name), "-i", inventory_dir, *extra],
        check=False, cwd=REPO, env=playbook_env(), capture_output=True, text=True, timeout=900,
    )


def start_live_run(inventory_dir: str, host, rid: str, n: int, results: str, *, journal: bool = False) -> subprocess.Popen:
    """run_matmul.yml for run ``rid`` in the background; returns once its unit is active (and,
    with ``journal``, its journal exists on the master)."""
    unit = f"pi-run@{rid}.service"
    first = subprocess.Popen(
        ["ansible-playbook", str(REPO / "run_matmul.yml"), "-i", inventory_dir, "-e", f"run_id={rid}",
         "-e", f"n={n}", "-e", f"pi_run_results_dir={results}", "-e", "pi_run_report=false", "-e", "poll_interval=1"],
        cwd=REPO, env=playbook_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (host.run(f"systemctl is-active {unit}").stdout.strip() == "active"
               and (not journal or host.file(f"/var/lib/pi-job/{rid}.jsonl").exists)):
        if time.monotonic() >= deadline or first.poll() is not None:
            first.kill()
            raise AssertionError(f"the first run never went live: {first.communicate()[0][-3000:]}")
        time.sleep(0.5)
    return first


def test_workloads_are_installed(host):
    listing = host.run("/opt/pi-job/venv/bin/pi-job workloads")
    assert listing.rc == 0, listing.stderr
    for name in ("pi", "matmul", "matvec", "primes"):
        assert name in listing.stdout, listing.stdout


def test_matmul_files_from_the_controller(inventory_dir):
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(7)
        a, b = rng.integers(-99, 99, size=(300, 200)), rng.integers(-99, 99, size=(200, 150))
        np.save(Path(tmp) / "A.npy", a)
        np.save(Path(tmp) / "B.npy", b)
        out = playbook(inventory_dir, "run_matmul.yml", "-e", f"a={tmp}/A.npy", "-e", f"b={tmp}/B.npy",
                       "-e", f"pi_run_results_dir={tmp}", "-e", "panel_rows=32")
        print(out.stdout[-3000:])
        assert out.returncode == 0, out.stdout + out.stderr
        (summary_path,) = [p for p in Path(tmp).glob("*.json") if not p.name.endswith(".C.npy")]
        summary = json.loads(summary_path.read_text())
        c = np.load(Path(tmp) / f"{summary['run_id']}.C.npy", allow_pickle=False)
    assert np.array_equal(c, a @ b)
    assert summary["jobs"] == 10 and summary["shape"] == [300, 150] and summary["verification"]["ok"]


def test_matmul_bad_values_fail_on_the_controller(inventory_dir):
    for extra, needle in ((["-e", "n=0"], "out of range"), (["-e", "a=/nonexistent.npy", "-e", "b=/x.npy"], "no such file"),
                          ([], "needs --size")):
        out = playbook(inventory_dir, "run_matmul.yml", *extra)
        assert out.returncode != 0 and needle in out.stdout, out.stdout
        assert "Run the matrix product" not in out.stdout


def test_example_workload_runs_on_the_lab(inventory_dir):
    with tempfile.TemporaryDirectory() as tmp:
        out = playbook(inventory_dir, "run_workload.yml", "-e", "workload=primes", "-e", "args='--below 1e7'",
                       "-e", f"pi_run_results_dir={tmp}")
        print(out.stdout[-2000:])
        assert out.returncode == 0, out.stdout + out.stderr
        (summary_path,) = Path(tmp).glob("*.json")
        summary = json.loads(summary_path.read_text())
    assert summary["workload"] == "primes" and summary["primes"] == 664_579


def matmul_run(inventory_dir: str, results: str, *extra: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    """run_matmul.yml with its results in a new directory below ``results``; its summary (or None)."""
    where = Path(tempfile.mkdtemp(dir=results))
    out = playbook(inventory_dir, "run_matmul.yml", "-e", f"pi_run_results_dir={where}", "-e", "pi_run_report=false",
                   "-e", "poll_interval=1", *extra)
    found = list(where.glob("*.json"))
    return out, (json.loads(found[0].read_text()) if out.returncode == 0 and len(found) == 1 else None)


def fatal_msg(inventory_dir: str, *extra: str) -> tuple[int, str]:
    """run_matmul.yml that must fail: its exit code and the failed task's message (JSON results)."""
    env = dict(playbook_env(), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    out = subprocess.run(["ansible-playbook", str(REPO / "run_matmul.yml"), "-i", inventory_dir, *extra],
                         check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith(("fatal:", "failed:")) and "=> " in line:
            return out.returncode, str(json.loads(line.split("=> ", 1)[1]).get("msg", ""))
    return out.returncode, "(no message) " + out.stdout[-3000:]


def queue_total(host) -> int:
    """total-jobs of the server (every put counts)."""
    code = "import sys,greenstalk;print(greenstalk.Client((sys.argv[1],11300)).stats()['total-jobs'])"
    return int(host.check_output(f"/opt/pi-job/venv/bin/python -c \"{code}\" {cluster_address(host)}"))


def test_matmul_generate_on_workers_same_c(inventory_dir):
    """generate_on_workers=true: only C moves, and C is bit-identical to the shipped run of the seed."""
    with tempfile.TemporaryDirectory() as tmp:
        common = ["-e", "n=256", "-e", "seed=8", "-e", "panel_rows=32"]
        shipped_out, shipped = matmul_run(inventory_dir, tmp, *common)
        print(shipped_out.stdout[-1500:])
        assert shipped_out.returncode == 0 and shipped, shipped_out.stdout[-3000:] + shipped_out.stderr
        made_out, made = matmul_run(inventory_dir, tmp, *common, "-e", "generate_on_workers=true")
        print(made_out.stdout[-1500:])
        assert made_out.returncode == 0 and made, made_out.stdout[-3000:] + made_out.stderr
    print(f"\nn=256 seed 8: shipped sha256 {shipped['sha256'][:16]} ({shipped['bytes_moved']} bytes), "
          f"generated on the workers {made['sha256'][:16]} ({made['bytes_moved']} bytes)")
    assert made["generated_on_workers"] is True and shipped["generated_on_workers"] is False
    assert made["sha256"] == shipped["sha256"]
    assert made["bytes_moved"] == 256 * 256 * 8 < shipped["bytes_moved"]
    assert made["verification"]["ok"] and shipped["verification"]["ok"]


def test_matmul_run_id_names_a_new_run(inventory_dir, host):
    """run_id with operands: a new run of that id; the same values again resume it (finished: the
    same C); other values are refused with one line, exit 2, nothing queued."""
    rid = f"mm-named-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        out, first = matmul_run(inventory_dir, tmp, "-e", f"run_id={rid}", "-e", "n=96", "-e", "dtype=int64")
        print(out.stdout[-1500:])
        assert out.returncode == 0 and first, out.stdout[-3000:] + out.stderr
        assert first["run_id"] == rid and first["shape"] == [96, 96] and first["verification"]["ok"]
        again_out, again = matmul_run(inventory_dir, tmp, "-e", f"run_id={rid}", "-e", "n=96", "-e", "dtype=int64")
        assert again_out.returncode == 0 and again, again_out.stdout[-3000:]
        assert again["sha256"] == first["sha256"]
        before, unit = queue_total(host), unit_state(host, rid)
        rc, msg = fatal_msg(inventory_dir, "-e", f"run_id={rid}", "-e", "n=128", "-e", "dtype=int64",
                            "-e", f"pi_run_results_dir={tmp}", "-e", "poll_interval=1")
        print(f"\nrun_matmul.yml -e run_id={rid} -e n=128 (run exists with n=96): rc {rc}: {msg}")
        assert rc == 2 and "\n" not in msg, msg
        assert msg.startswith(f"run {rid} exists with other values: --size"), msg
        assert queue_total(host) == before, "something was queued"
        assert unit_state(host, rid) == unit, "the run's arguments, enablement or master changed"


def unit_state(host, rid: str) -> dict[str, str]:
    """What a refused start must leave alone: the run's env file, its unit's enablement, the
    unit's last start (InvocationID) and the run's journal."""
    unit = f"pi-run@{rid}.service"
    return {
        "env": host.check_output(f"cat /var/lib/pi-job/runs/{rid}.env"),
        "enabled": host.run(f"systemctl is-enabled {unit}").stdout.strip(),
        "invocation": host.check_output(f"systemctl show {unit} --property=InvocationID --value"),
        "journal": host.check_output(f"sha256sum /var/lib/pi-job/{rid}.jsonl"),
    }


def test_matmul_run_id_stopped_run_other_values_refused(inventory_dir, host):
    """run_id of a stopped run (its unit still enabled: it resumes at boot) with other values: one
    line, checked against its journal on the master before anything is written: its arguments,
    enablement and journal stay; run_id alone then resumes it to its own C."""
    rid = f"mm-stopped-{os.getpid()}"
    unit = f"pi-run@{rid}.service"
    with tempfile.TemporaryDirectory() as tmp:
        first = start_live_run(inventory_dir, host, rid, 2048, tmp, journal=True)
        try:
            host.run(f"systemctl stop {unit}")  # stopped by hand: enabled, it resumes at boot
        finally:
            stdout, _ = first.communicate(timeout=300)
        assert first.returncode != 0 and "is stopped, not finished" in stdout, stdout[-3000:]
        stopped = unit_state(host, rid)
        assert stopped["enabled"] == "enabled", stopped
        rc, msg = fatal_msg(inventory_dir, "-e", f"run_id={rid}", "-e", "n=1024", "-e", f"pi_run_results_dir={tmp}")
        print(f"\nrun_matmul.yml -e run_id={rid} -e n=1024 (stopped run of n=2048): rc {rc}: {msg}")
        assert rc == 2 and "\n" not in msg, msg
        assert msg.startswith(f"run {rid} exists with other values: --size"), msg
        assert unit_state(host, rid) == stopped, "the stopped run's arguments, enablement or journal changed"
        out, summary = matmul_run(inventory_dir, tmp, "-e", f"run_id={rid}")
        assert out.returncode == 0 and summary, out.stdout[-3000:] + out.stderr
    assert summary["run_id"] == rid and summary["shape"] == [2048, 2048] and summary["verification"]["ok"]
    assert host.run(f"systemctl is-enabled {unit}").stdout.strip() == "disabled"  # finished


def test_matmul_run_id_with_other_files_refused(inventory_dir, host):
    """run_id of an existing file run with other files: one line before anything is copied or queued."""
    rid = f"mm-files-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(3)
        for name, shape in (("A", (40, 30)), ("B", (30, 20))):
            np.save(Path(tmp) / f"{name}.npy", rng.integers(-9, 9, size=shape))
        files = ["-e", f"a={tmp}/A.npy", "-e", f"b={tmp}/B.npy"]
        out, first = matmul_run(inventory_dir, tmp, "-e", f"run_id={rid}", *files)
        assert out.returncode == 0 and first and first["run_id"] == rid, out.stdout[-3000:] + out.stderr
        copy = host.check_output(f"sha256sum /var/lib/pi-job/inputs/{rid}/B.npy")
        np.save(Path(tmp) / "B.npy", rng.integers(-9, 9, size=(30, 20)))
        before = queue_total(host)
        rc, msg = fatal_msg(inventory_dir, "-e", f"run_id={rid}", *files, "-e", f"pi_run_results_dir={tmp}")
        print(f"\nrun_matmul.yml -e run_id={rid} with another B.npy: rc {rc}: {msg}")
        assert rc == 2 and "\n" not in msg, msg
        assert msg.startswith(f"run {rid} exists with other operands: b={tmp}/B.npy is not the file"), msg
        assert host.check_output(f"sha256sum /var/lib/pi-job/inputs/{rid}/B.npy") == copy, "the run's B was overwritten"
        assert queue_total(host) == before, "something was queued"


def test_matmul_run_id_live_master_other_values_refused(inventory_dir, host):
    """run_id of a run whose master is live, with other values: one line, the live run is not
    touched (its arguments stay, it ends with its own C)."""
    rid = f"mm-live-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        first = start_live_run(inventory_dir, host, rid, 4096, tmp)
        try:
            args = host.check_output(f"cat /var/lib/pi-job/runs/{rid}.env")
            rc, msg = fatal_msg(inventory_dir, "-e", f"run_id={rid}", "-e", "n=1024", "-e", f"pi_run_results_dir={tmp}")
            print(f"\nrun_matmul.yml -e run_id={rid} -e n=1024 while its master runs n=4096: rc {rc}: {msg}")
            assert rc == 2 and "\n" not in msg, msg
            assert msg.startswith(f"run {rid} is running with other arguments ("), msg
            assert host.check_output(f"cat /var/lib/pi-job/runs/{rid}.env") == args, "the live run's arguments changed"
        finally:
            stdout, _ = first.communicate(timeout=900)
        assert first.returncode == 0, stdout[-3000:]
        summary = json.loads((Path(tmp) / f"{rid}.json").read_text())
    assert summary["shape"] == [4096, 4096] and summary["verification"]["ok"]
