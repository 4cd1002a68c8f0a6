"""A real run through run_pi.yml from the controller, and its value checks."""

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

from conftest import REPO

testinfra_hosts = ["ansible://master"]


def run_pi(inventory_dir: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return subprocess.run(
        ["ansible-playbook", str(REPO / "run_pi.yml"), "-i", inventory_dir, *extra],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


def test_bad_values_fail_before_queueing(host, inventory_dir):
    before = host.run("ls /var/lib/pi-job/logs | wc -l").stdout.strip()
    for bad in ("abc", "0", "-5", "1.5", "1e30", ""):
        out = run_pi(inventory_dir, "-e", f"darts={bad}")
        assert out.returncode != 0, out.stdout
        assert "darts" in out.stdout and "Run the master" not in out.stdout, out.stdout
    out = run_pi(inventory_dir, "-e", "darts=1e6", "-e", "seed=x")
    assert out.returncode != 0 and "seed: not an integer" in out.stdout, out.stdout
    assert host.run("ls /var/lib/pi-job/logs | wc -l").stdout.strip() == before


def test_run_brings_result_to_controller(host, inventory_dir):
    with tempfile.TemporaryDirectory() as results:
        out = run_pi(inventory_dir, "-e", "darts=1e8", "-e", f"pi_run_results_dir={results}")
        print(out.stdout[-3000:])
        assert out.returncode == 0, out.stdout + out.stderr
        files = list(Path(results).glob("*.json"))
        assert len(files) == 1, files
        result = json.loads(files[0].read_text())
    assert result["darts"] == 10**8
    assert abs(result["pi"] - math.pi) <= 5 * result["std_error"], result
    assert sum(result["per_host"].values()) == 10**8
    assert "pi = " in out.stdout and "95% interval" in out.stdout
