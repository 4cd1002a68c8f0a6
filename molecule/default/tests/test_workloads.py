"""Other workloads on the lab: a small matmul (C back on the controller) and the example."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from conftest import REPO

testinfra_hosts = ["ansible://master"]


def playbook(inventory_dir: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return subprocess.run(
        ["ansible-playbook", str(REPO / name), "-i", inventory_dir, *extra],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


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
