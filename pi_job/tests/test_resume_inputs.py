"""A resume puts the shared inputs a first master never journaled (real master and beanstalkd)."""

from __future__ import annotations

import json
import secrets

import numpy as np
from conftest import Cluster

from pi_job import workloads
from pi_job.cli import build_parser
from pi_job.core.journal import Journal
from pi_job.core.plan import Plan


def test_resume_puts_inputs_the_first_master_never_journaled(cluster: Cluster) -> None:
    """A master stopped after its plan, before its inputs were journaled (SIGTERM or a crash
    during the upload; seen under systemd): the resume puts them, no job is buried, C is A @ B."""
    argv = ["run", "--server", cluster.server.address, "--workload", "matmul", "--size", "96",
            "--dtype", "int64", "--panel-rows", "16"]  # fmt: skip
    args = build_parser().parse_args(argv)
    workload = workloads.get("matmul")
    params = workload.parameters(args, 1)
    directory = cluster.state_dir / "cut"
    directory.mkdir(parents=True)
    prepared = workload.prepare(params, 7, directory)  # what the first master did, then stopped
    assert set(prepared.inputs) == {"B"}
    plan = Plan("cut", "matmul", 7, prepared.jobs, 60, 2**16, params, secrets.token_hex(16))
    Journal.create(cluster.state_dir, plan).close()
    cluster.worker()
    proc = cluster.run_master("--resume", "cut", "--stall-timeout", "15")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    a, b, c = (np.load(directory / f"{name}.npy") for name in "ABC")
    assert np.array_equal(c, a @ b) and summary["verification"]["ok"]
    assert summary["jobs"] == 6 and summary["rejected"] == 0
    assert cluster.server.stats()["current-jobs-buried"] == 0
