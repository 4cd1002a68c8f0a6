"""One master per run (core/runlock.py), against real ``pi-job run`` processes and beanstalkd."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from conftest import Cluster, expected_inside, wait_for

from pi_job.core import runlock


def test_second_master_of_a_live_run_refuses(cluster: Cluster) -> None:
    """A second master of a run a live master owns refuses with one line; the first finishes."""
    first = cluster.master(
        "--darts", "2e7", "--seed", "11", "--run-id", "locked", "--job-darts", "1e6",
        "--stall-timeout", "120",
    )  # fmt: skip
    lock = cluster.state_dir / "locked.lock"
    journal = cluster.state_dir / "locked.jsonl"

    # Planned and all 20 jobs pushed: the journal stays as it is until a worker comes.
    def planned() -> bool:
        return journal.exists() and journal.read_text().count('"pushed"') == 20

    wait_for(lambda: first.poll() is not None or planned())
    assert first.poll() is None, cluster.log_of(first)
    assert runlock.holder_pid(cluster.state_dir, "locked") == first.pid
    size = journal.stat().st_size
    for how in (("--resume", "locked"), ("--run-id", "locked", "--darts", "2e7")):
        second = cluster.run_master(*how, timeout=30)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1, second.stderr
        assert lines == [
            f"pi-job run: run locked already has a live master (pid {first.pid}); "
            "follow it (systemctl status pi-run@locked) instead of starting another"
        ], second.stderr
        assert journal.stat().st_size == size, "the refused master touched the journal"
    assert first.poll() is None
    cluster.worker()
    code, out = cluster.finish(first)
    assert code == 0, cluster.log_of(first)
    report = json.loads(out)
    assert report["inside"] == expected_inside(11, 20_000_000, 20)
    assert report["duplicates"] == 0
    assert not lock.exists(), "the lock file outlived its master"
    assert runlock.holder_pid(cluster.state_dir, "locked") is None


def test_lock_dies_with_a_killed_master(cluster: Cluster) -> None:
    """SIGKILL drops the lock (the kernel releases it): the next master resumes the run."""
    first = cluster.master(
        "--darts", "1e7", "--seed", "12", "--run-id", "killed", "--job-darts", "1e6",
        "--stall-timeout", "120",
    )  # fmt: skip
    journal = cluster.state_dir / "killed.jsonl"
    wait_for(lambda: journal.exists() or first.poll() is not None)
    assert first.poll() is None, cluster.log_of(first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert (cluster.state_dir / "killed.lock").exists()  # left behind, but not held
    assert runlock.holder_pid(cluster.state_dir, "killed") is None
    cluster.worker()
    resumed = cluster.run_master("--resume", "killed", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["inside"] == expected_inside(12, 10_000_000, 10)
    assert not (cluster.state_dir / "killed.lock").exists()


def test_hold_is_reentrant_and_none_is_free(tmp_path: Path) -> None:
    runlock.hold(tmp_path, None)
    assert list(tmp_path.iterdir()) == []
    runlock.hold(tmp_path / "s", "mine")
    runlock.hold(tmp_path / "s", "mine")  # the same process: a no-op
    assert runlock.holder_pid(tmp_path / "s", "mine") == os.getpid()
    runlock.release(runlock.lock_path(tmp_path / "s", "mine"))
    assert runlock.holder_pid(tmp_path / "s", "mine") is None
    assert not runlock.lock_path(tmp_path / "s", "mine").exists()


def test_runs_lists_cancels_and_prunes(cluster: Cluster) -> None:
    """`pi-job runs`: a finished run and a stopped one; --cancel empties the queue; --prune."""
    state = ["--state-dir", str(cluster.state_dir)]
    cluster.worker()
    done = cluster.run_master("--darts", "4e6", "--seed", "1", "--run-id", "done", timeout=60)
    assert done.returncode == 0, done.stderr
    cluster.stop_all()
    idle = cluster.master("--darts", "1e7", "--seed", "2", "--run-id", "idle", "--job-darts", "1e6")
    journal = cluster.state_dir / "idle.jsonl"
    wait_for(lambda: journal.exists() and journal.read_text().count('"pushed"') == 10)
    listed = {r["run_id"]: r for r in json.loads(cluster.run("runs", *state, "--json").stdout)}
    assert listed["done"]["state"] == "finished" and listed["done"]["percent"] == 100.0
    assert listed["idle"]["state"] == "running" and listed["idle"]["master_pid"] == idle.pid
    refused = cluster.run("runs", *state, "--cancel", "idle", "--server", cluster.server.address)
    assert refused.returncode == 2 and f"live master (pid {idle.pid})" in refused.stderr
    idle.kill()
    idle.wait(10)
    out = cluster.run("runs", *state, "--cancel", "idle", "--server", cluster.server.address)
    assert out.returncode == 0, out.stderr
    assert "10 queued jobs deleted" in out.stdout, out.stdout
    assert cluster.server.tube("pi.jobs").get("current-jobs-ready", 0) == 0
    table = cluster.run("runs", *state).stdout
    assert "cancelled" in table and "finished" in table, table
    assert cluster.run("runs", *state, "--prune", "1").stdout.strip() == "pruned 0 runs"
    assert cluster.run("runs", *state, "--prune", "0").stdout.split() == [
        "pruned", "2", "runs:", "done", "idle",
    ]  # fmt: skip
    assert not list(cluster.state_dir.glob("*.jsonl"))


def test_cancel_deletes_shared_inputs(cluster: Cluster) -> None:
    """A cancelled matmul run leaves no shared input (B's chunks) on the server."""
    state = ["--state-dir", str(cluster.state_dir)]
    args = ["--workload", "matmul", "--size", "128", "--dtype", "int64", "--panel-rows", "16"]
    master = cluster.master(*args, "--seed", "5", "--run-id", "dropped")  # no worker: it waits
    journal = cluster.state_dir / "dropped.jsonl"
    wait_for(lambda: journal.exists() and journal.read_text().count('"pushed"') == 8)
    assert cluster.server.tube("pi.data.dropped").get("current-jobs-ready", 0) >= 1
    master.kill()
    master.wait(10)
    for tube in ("pi.results.dropped", "default"):  # a buried answer; someone else's buried job
        with cluster.server.client(use=tube) as client:
            client.watch(tube)
            client.put(b"late answer")
            client.bury(client.reserve(timeout=1))
    out = cluster.run("runs", *state, "--cancel", "dropped", "--server", cluster.server.address)
    assert out.returncode == 0, out.stderr
    assert "8 queued jobs deleted" in out.stdout and "0 shared inputs" not in out.stdout, out.stdout
    assert cluster.server.tube("pi.data.dropped").get("current-jobs-ready", 0) == 0
    assert cluster.server.tube("pi.results.dropped").get("current-jobs-buried", 0) == 0
    assert cluster.server.tube("default")["current-jobs-buried"] == 1  # not the run's: kept
