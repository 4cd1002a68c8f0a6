"""scale.yml on the molecule lab: results come back, counts agree, the cluster is restored."""

from __future__ import annotations

import json
import os

import pytest
from conftest import assert_png, playbook

testinfra_hosts = ["ansible://workers"]

# Small enough for CI on 2 cores, large enough that every one of 4 workers gets jobs.
DARTS = int(float(os.environ.get("PI_SCALE_TEST_DARTS", "4e9")))
STUDY_ID = "molecule"


@pytest.fixture(scope="module")
def study(inventory_dir, tmp_path_factory):
    """Run the study once for the module; return (results dir, playbook output)."""
    results = tmp_path_factory.mktemp("scale-results")
    out = playbook(
        inventory_dir, "scale.yml", "-e", f"darts={DARTS}", "-e", f"scale_id={STUDY_ID}-{os.getpid()}",
        "-e", f"pi_scale_results_dir={results}",
    )
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr
    return results, out.stdout


def test_bad_darts_fail_before_touching_the_cluster(inventory_dir, host):
    before = host.run("systemctl show -p ActiveEnterTimestampMonotonic pi-worker@1.service").stdout
    out = playbook(inventory_dir, "scale.yml", "-e", "darts=1.5")
    assert out.returncode != 0 and "darts: not a whole number" in out.stdout, out.stdout
    assert "Stop every worker instance" not in out.stdout
    assert host.run("systemctl show -p ActiveEnterTimestampMonotonic pi-worker@1.service").stdout == before


def test_study_results_come_back(study):
    results, stdout = study
    name = f"scale-{STUDY_ID}-{os.getpid()}"
    summary = json.loads((results / f"{name}.json").read_text())
    rows = summary["rows"]
    assert [row["workers"] for row in rows] == [1, 2, 3, 4], rows
    assert summary["counts_equal"] is True
    assert {row["inside"] for row in rows} == {summary["inside"]}
    assert rows[0]["speedup"] == pytest.approx(1.0)
    for row in rows:
        assert row["darts"] == DARTS
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["workers"])
        assert row["darts_per_second"] == pytest.approx(DARTS / row["seconds"])
    table = (results / f"{name}.md").read_text()
    assert "| workers | seconds | darts/s | speed-up | efficiency |" in table
    assert table.count("\n| ") >= 5, table
    assert_png(results / f"{name}.png")
    per_k = sorted((results / name).glob("*.json"))
    assert [p.name for p in per_k] == [f"{name}-k{k}.json" for k in range(1, 5)]
    counts = {json.loads(p.read_text())["inside"] for p in per_k}
    assert counts == {summary["inside"]}
    assert "counts equal for k = 1..4" in stdout


def test_every_instance_runs_again(study, host):
    enabled = host.run("ls /etc/systemd/system/pi-worker.service.wants/").stdout.split()
    assert len(enabled) >= 1
    for unit in enabled:
        assert host.service(unit).is_running, f"{unit} not restored on {host.backend.get_hostname()}"
