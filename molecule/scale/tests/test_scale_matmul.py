"""scale.yml for another workload: a small int64 matmul study on the lab, and its bad values."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from conftest import assert_png, playbook
from pi_job.workloads.matmul import operands

testinfra_hosts = ["ansible://workers"]

# Small enough for CI on 2 cores; 512 rows give 4 workers 32 panels of 16 rows (8 per worker).
N = int(os.environ.get("PI_SCALE_TEST_N", "512"))
SEED = 20261127
STUDY_ID = "molecule-matmul"


@pytest.fixture(scope="module")
def study(inventory_dir, tmp_path_factory):
    """Run the matmul study once for the module; return (results dir, study name, output)."""
    results = tmp_path_factory.mktemp("scale-matmul")
    name = f"{STUDY_ID}-{os.getpid()}"
    out = playbook(
        inventory_dir, "scale.yml", "-e", "workload=matmul", "-e", f"n={N}", "-e", "dtype=int64",
        "-e", f"seed={SEED}", "-e", f"scale_id={name}", "-e", f"pi_scale_results_dir={results}",
    )
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr
    return results, f"scale-{name}", out.stdout


def expected_sha256() -> str:
    """sha256 of C = A @ B computed here from the same seed (the master generates A and B)."""
    a = operands.generate(SEED, (N, N), "int64", 0)
    b = operands.generate(SEED, (N, N), "int64", 1)
    return hashlib.sha256(np.ascontiguousarray(a @ b).data).hexdigest()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "n=abc"], 'argument --size: not an integer: "abc"'),
        (["-e", "n=64", "-e", "dtype=complex"], "argument --dtype: invalid choice"),
        (["-e", "n=64", "-e", "darts=1e9"], "darts and job_darts are for workload=pi"),
        (["-e", "n=64", "-e", "panel_rows=0"], "argument --panel-rows: 0 is out of range"),
    ],
)
def test_bad_matmul_values_fail_before_touching_the_cluster(inventory_dir, host, extra, message):
    before = host.run("systemctl show -p ActiveEnterTimestampMonotonic pi-worker@1.service").stdout
    out = playbook(inventory_dir, "scale.yml", "-e", "workload=matmul", *extra)
    assert out.returncode != 0 and message in out.stdout, out.stdout[-3000:]
    failed = [line for line in out.stdout.splitlines() if line.strip().startswith("msg:")]
    assert len(failed) == 1, failed
    assert "Stop every worker instance" not in out.stdout
    assert host.run("systemctl show -p ActiveEnterTimestampMonotonic pi-worker@1.service").stdout == before


def test_matmul_study_gives_the_same_product_for_every_k(study):
    results, name, stdout = study
    summary = json.loads((results / f"{name}.json").read_text())
    rows = summary["rows"]
    assert summary["workload"] == "matmul" and summary["counts_equal"] is True
    assert [row["workers"] for row in rows] == [1, 2, 3, 4], rows
    assert rows[0]["speedup"] == pytest.approx(1.0)
    assert summary["answer"] == {"sha256": expected_sha256()}
    per_k = sorted((results / name).glob("*.json"))
    assert [p.name for p in per_k] == [f"{name}-k{k}.json" for k in range(1, 5)]
    runs = [json.loads(p.read_text()) for p in per_k]
    # The same jobs for every k (panels fixed for the largest k), and C verified exactly.
    assert len({(run["jobs"], run["panel_rows"]) for run in runs}) == 1, [(r["jobs"], r["panel_rows"]) for r in runs]
    assert runs[0]["jobs"] >= 4 * 4
    assert {run["sha256"] for run in runs} == {expected_sha256()}
    assert all(run["verification"]["ok"] for run in runs)
    for row, run in zip(rows, runs, strict=True):
        assert row["gflops"] == pytest.approx(run["gflops"])
        assert 0 < row["busy"] <= 1.0 + 1e-6
    table = (results / f"{name}.md").read_text()
    assert "| workers | seconds | GFLOP/s | speed-up | efficiency | busy |" in table
    assert table.count("\n| ") >= 5, table
    assert_png(results / f"{name}.png")
    assert "counts equal for k = 1..4: sha256" in stdout
