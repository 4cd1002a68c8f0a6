"""End-to-end tests: real beanstalkd, real worker and master processes, real failures."""

from __future__ import annotations

import json
import math
import signal
import time

import greenstalk
import pytest
from conftest import BACKEND, Beanstalkd, Cluster, expected_inside, free_port, wait_for

from pi_job.core import signing
from pi_job.core.envelope import Answer, decode_job, results_tube
from pi_job.workloads.pi import kernel

REPORT_KEYS = {
    "run_id", "seed", "darts", "inside", "pi", "abs_error", "std_error", "ci95", "jobs",
    "duplicates", "redeliveries", "seconds", "darts_per_second", "per_host", "per_job",
    "job_darts", "workers", "started", "finished", "version",
}  # fmt: skip
"""Every key pi has always written (existing result files and tools rely on them)."""
ENVELOPE_KEYS = {"workload", "rejected", "params", "verification", "result_keys", "unit"}


def check_report(report: dict, seed: int, darts: int) -> None:
    """Right keys, exact darts, exact count, pi within 5 standard errors."""
    assert set(report) == REPORT_KEYS | ENVELOPE_KEYS
    assert report["workload"] == "pi" and report["rejected"] == 0
    assert report["darts"] == darts
    assert sum(job["darts"] for job in report["per_job"]) == darts
    assert [job["job"] for job in report["per_job"]] == list(range(report["jobs"]))
    assert sum(report["per_host"].values()) == darts
    assert report["inside"] == expected_inside(seed, darts, report["jobs"])
    assert abs(report["pi"] - math.pi) < 5 * report["std_error"]
    assert report["ci95"][0] < report["pi"] < report["ci95"][1]


def test_two_workers_run(cluster: Cluster, tmp_path) -> None:
    cluster.worker()
    cluster.worker()
    output = tmp_path / "out.json"
    proc = cluster.run_master("--darts", "2e8", "--seed", "11", "--output", str(output))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    check_report(report, 11, 200_000_000)
    assert json.loads(output.read_text()) == report
    assert report["jobs"] >= 8  # at least 4 jobs per connected worker
    assert report["workers"] == 2
    assert report["duplicates"] == 0
    # the finished run resumed prints the same report again without pushing anything
    again = cluster.run_master("--resume", report["run_id"])
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == report
    assert cluster.server.tube("pi.jobs")["total-jobs"] == report["jobs"]


def test_worker_killed_mid_job(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    # The victim uses the slow reference backend, so it is surely mid-job when killed.
    victim = cluster.worker(backend="python")
    master = cluster.master("--darts", "1e9", "--job-darts", "5e7", "--seed", "5", "--ttr", "60")
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-reserved", 0) == 1)
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    cluster.worker()
    code, out = cluster.finish(master, timeout=90)
    assert code == 0, cluster.log_of(master)
    report = json.loads(out)
    check_report(report, 5, 1_000_000_000)  # same count as an undisturbed run
    assert report["redeliveries"] == 1  # the victim's job went to the other worker
    assert report["seconds"] < 60  # no TTR wait: the dead connection released the job


def test_server_kill9_and_restart(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    cluster.worker(backend="numpy")
    cluster.worker(backend="numpy")
    master = cluster.master(
        "--darts", "1.2e9", "--job-darts", "5e7", "--seed", "7", "--ttr", "30",
        "--stall-timeout", "60",
    )  # fmt: skip
    wait_for(lambda: cluster.server.tube(results_tube_of(cluster)).get("total-jobs", 0) >= 3)
    beanstalkd.kill9()
    time.sleep(0.5)
    beanstalkd.start()
    code, out = cluster.finish(master, timeout=120)
    assert code == 0, cluster.log_of(master)
    report = json.loads(out)
    check_report(report, 7, 1_200_000_000)
    assert "lost connection" in cluster.log_of(master)
    for proc in cluster.procs[:2]:
        assert proc.poll() is None  # workers survived and reconnected
        assert "lost connection" in cluster.log_of(proc)


def results_tube_of(cluster: Cluster) -> str:
    """The results tube of the only journaled run."""
    journals = wait_for(lambda: list(cluster.state_dir.glob("*.jsonl")))
    return results_tube(journals[0].stem)


def test_master_killed_then_resumed(cluster: Cluster) -> None:
    cluster.worker(backend="numpy")
    master = cluster.master(
        "--darts", "1e9", "--job-darts", "5e7", "--seed", "3", "--run-id", "killed-master"
    )

    def collected() -> int:
        if not (cluster.state_dir / "killed-master.jsonl").exists():
            return 0
        return sum(1 for rec in cluster.journal("killed-master") if rec["type"] == "result")

    wait_for(lambda: collected() >= 2)
    master.send_signal(signal.SIGKILL)
    master.wait(10)
    pushed = [rec for rec in cluster.journal("killed-master") if rec["type"] == "pushed"]
    assert len(pushed) == 20
    proc = cluster.run_master("--resume", "killed-master")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    check_report(report, 3, 1_000_000_000)
    assert cluster.server.tube("pi.jobs")["total-jobs"] == report["jobs"] == 20
    pushed = [rec for rec in cluster.journal("killed-master") if rec["type"] == "pushed"]
    assert len(pushed) == 20  # nothing re-pushed


def test_redelivered_job_counted_once(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    master = cluster.master(
        "--darts", "8e8", "--job-darts", "1e8", "--seed", "9", "--ttr", "2", "--run-id", "dup"
    )
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-ready", 0) == 8)
    slow = beanstalkd.client(watch="pi.jobs", use=results_tube("dup"))
    job_a = slow.reserve(timeout=5)  # the slow first worker of job A
    job_b = slow.reserve(timeout=5)  # held (touched) so that the run cannot finish early
    spec = decode_job(job_a.body)
    darts = spec.spec["darts"]
    inside = kernel.count_inside_range(
        spec.spec["seed"], spec.spec["start"], darts, backend=BACKEND
    )
    cluster.worker()

    def job_a_answered() -> bool:
        slow.touch(job_b)
        try:
            slow.stats_job(job_a.id)
        except greenstalk.NotFoundError:
            return True  # re-delivered, computed, answered and deleted by the real worker
        return False

    wait_for(job_a_answered, timeout=30, interval=0.2)
    value = {"darts": darts, "inside": inside, "backend": BACKEND}
    late = Answer(spec.run, spec.job, "slowhost", "slow-worker", 9.0, 1, value, nonce=spec.nonce)
    slow.put(late.encode(signing.read_key_file(cluster.key_file)))
    slow.release(job_b)
    slow.close()
    code, out = cluster.finish(master, timeout=60)
    assert code == 0, cluster.log_of(master)
    report = json.loads(out)
    check_report(report, 9, 800_000_000)
    assert report["duplicates"] == 1
    assert report["redeliveries"] >= 2  # job A after its TTR, job B after its release


H = b'{"v":2,"run":"r1","job":0,"w":"pi","spec":{"start":0,'
MALFORMED = [
    b"not json at all",
    b'{"v":2,"run":"r1","job":"0","w":"pi","spec":{"seed":1,"darts":10}}',
    H + b'"seed":1,"darts":true}}',
    H + b'"seed":1,"darts":-5}}',
    H + b'"seed":1,"darts":10000000000000}}',
    H + b'"seed":1,"darts":1000000.0}}',
    b'{"v":1,"run":"r1","job":0,"seed":1,"darts":10}',
    H + b'"seed":1,"darts":10,"extra":1}}',
    H + b'"seed":1,"darts":10,"darts":11}}',
    b'{"v":2,"run":"bad run","job":0,"w":"pi","spec":{"seed":1,"darts":10}}',
    b"\xff\xfe\x00\x01binary garbage\x80",
    b'{"v":2,"pad":"' + b"x" * 6000 + b'"}',
    b"[" * 1500 + b"]" * 1500,
    b"[1,2,3]",
    b'{"v":2,"run":"r1","job":0,"w":"no-such-workload","spec":{}}',
    H + b'"seed":1,"darts":10}}\npayload for a job that takes none',
]


SIGNED = {2, 7, 14, 15}
"""Bodies whose fault is in the spec or payload: signed, so that the workload's check speaks
(unsigned, they are buried as "bad signature" before the workload sees them)."""


def signed(body: bytes, keyring: signing.Keyring) -> bytes:
    head, _, payload = body.partition(b"\n")
    return keyring.seal("job", json.loads(head), payload) + b"\n" + payload


def test_malformed_jobs_buried_with_reasons(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    worker = cluster.worker()
    ids = []
    keyring = signing.read_key_file(cluster.key_file)
    with beanstalkd.client(use="pi.jobs") as client:
        for number, body in enumerate(MALFORMED):
            ids.append(client.put(signed(body, keyring) if number in SIGNED else body, ttr=10))
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-buried", 0) == len(MALFORMED))
    wait_for(lambda: beanstalkd.tube("pi.buried").get("current-jobs-ready", 0) == len(MALFORMED))
    proc = cluster.run("status", "--server", beanstalkd.address, "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    reasons = {rec["job_id"]: rec["reason"] for rec in status["buried"]}
    assert sorted(reasons) == ids
    assert all(reason for reason in reasons.values())
    assert "bool" in reasons[ids[2]] and "version" in reasons[ids[6]]
    assert "unknown spec keys" in reasons[ids[7]] and "UTF-8" in reasons[ids[10]]
    assert "no header line" in reasons[ids[11]] and "deep" in reasons[ids[12]]
    assert "unknown workload" in reasons[ids[14]] and "payload" in reasons[ids[15]]
    assert status["tubes"]["pi.jobs"]["buried"] == len(MALFORMED)
    # the records were released again: a second status sees them too
    again = json.loads(cluster.run("status", "--server", beanstalkd.address, "--json").stdout)
    assert len(again["buried"]) == len(MALFORMED)
    text = cluster.run("status", "--server", beanstalkd.address)
    assert "not UTF-8" in text.stdout
    # the worker is still serving
    assert worker.poll() is None
    proc = cluster.run_master("--darts", "1e7", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    check_report(json.loads(proc.stdout), 1, 10_000_000)


def test_two_concurrent_runs(cluster: Cluster) -> None:
    cluster.worker()
    cluster.worker()
    first = cluster.master("--darts", "3e8", "--job-darts", "2e7", "--seed", "21")
    second = cluster.master("--darts", "2e8", "--job-darts", "2e7", "--seed", "22")
    code1, out1 = cluster.finish(first)
    code2, out2 = cluster.finish(second)
    assert code1 == 0 and code2 == 0
    check_report(json.loads(out1), 21, 300_000_000)
    check_report(json.loads(out2), 22, 200_000_000)


def test_worker_sigterm_releases_job(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    slow = cluster.worker("--chunk-darts", "1e6", backend="numpy")
    master = cluster.master("--darts", "3e9", "--job-darts", "3e9", "--ttr", "300", "--seed", "4")
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-reserved", 0) == 1)
    # The server counts the job reserved before the worker has read the reply; a SIGTERM in
    # that window ends the worker without a job to release (closing the connection gives it
    # back). Give the worker time to start the ~10 s job, whose release this test is about.
    time.sleep(1.0)
    slow.send_signal(signal.SIGTERM)
    assert slow.wait(10) == 0
    assert "released job" in cluster.log_of(slow)
    stats = beanstalkd.tube("pi.jobs")
    assert stats["current-jobs-ready"] == 1 and stats["current-jobs-reserved"] == 0
    cluster.worker()
    code, out = cluster.finish(master, timeout=60)
    assert code == 0
    report = json.loads(out)
    assert report["inside"] == expected_inside(4, 3_000_000_000, 1)
    assert report["redeliveries"] == 1 and report["seconds"] < 60  # far below the TTR


def test_stall_timeout_then_resume(cluster: Cluster) -> None:
    proc = cluster.run_master(
        "--darts", "1e7", "--seed", "8", "--run-id", "stalled", "--stall-timeout", "2"
    )
    assert proc.returncode == 3  # stalled: its own exit code (systemd does not restart it)
    assert "no worker has taken a job for 2 s" in proc.stderr
    assert "--resume stalled" in proc.stderr
    cluster.worker()
    proc = cluster.run_master("--resume", "stalled")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    check_report(report, 8, 10_000_000)
    assert cluster.server.tube("pi.jobs")["total-jobs"] == report["jobs"]


def test_status_text_and_json(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    cluster.worker()
    proc = cluster.run("status", "--server", beanstalkd.address, "--json")
    assert proc.returncode == 0
    status = json.loads(proc.stdout)
    assert status["workers"] == 1 and status["runs"] == [] and status["buried"] == []
    text = cluster.run("status", "--server", beanstalkd.address).stdout
    assert "connected workers: 1" in text


def test_worker_started_before_server(cluster: Cluster, tmp_path) -> None:
    """Connection refused at start: the worker keeps retrying quietly, then serves."""
    late = Beanstalkd(tmp_path / "late-binlog", free_port())
    worker = cluster.spawn(
        "worker", "--server", late.address, "--reserve-timeout", "1", "--backend", BACKEND
    )
    time.sleep(1.5)  # several refused attempts
    assert worker.poll() is None
    late.start()
    try:
        wait_for(lambda: late.watching() == 1, timeout=15)
        cluster.server = late
        proc = cluster.run_master("--darts", "1e7", "--seed", "2")
        assert proc.returncode == 0, proc.stderr
        check_report(json.loads(proc.stdout), 2, 10_000_000)
        log = cluster.log_of(worker)
        assert log.count("cannot reach beanstalkd") == 1  # one line per state change
        assert "connected to beanstalkd" in log
    finally:
        late.stop()


def test_server_lost_its_jobs(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    """Server restarted with an empty binlog: the master notices the jobs are gone, re-pushes."""
    master = cluster.master(
        "--darts", "1e8", "--job-darts", "1e7", "--seed", "12", "--run-id", "lost"
    )
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-ready", 0) == 10)
    beanstalkd.kill9()
    for path in beanstalkd.binlog.iterdir():
        path.unlink()
    beanstalkd.start()
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-ready", 0) == 10, timeout=30)
    cluster.worker()
    code, out = cluster.finish(master, timeout=60)
    assert code == 0, cluster.log_of(master)
    check_report(json.loads(out), 12, 100_000_000)
    pushed = [rec for rec in cluster.journal("lost") if rec["type"] == "pushed"]
    assert len(pushed) == 20  # every job pushed once more, none counted twice
    assert "pushed jobs are gone from the server" in cluster.log_of(master)


# Counts of the run stream (count_inside_range), re-pinned when pi moved to it from per-job
# seeds (the interface itself kept the old counts: 7,852,281 / 96,962,546 / 776 before).
# 773 is also the pure-Python reference's count; the others are numba's and numpy's.
PINNED = [
    ("7", "1e7", "1e6", 7_852_909),
    ("20261127", "123456789", "1e7", 96_969_626),
    ("1", "1000", "7", 773),
]


def test_pi_keeps_the_pinned_counts(cluster: Cluster) -> None:
    cluster.worker()
    for seed, darts, job_darts, inside in PINNED:
        proc = cluster.run_master("--darts", darts, "--job-darts", job_darts, "--seed", seed)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["inside"] == inside


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_pi_count_does_not_depend_on_the_split(cluster: Cluster, workers: int) -> None:
    """Same (seed, darts): the same count for job sizes 1e6, 1e7, 1e8 and 1, 2, 4 workers."""
    for _ in range(workers):
        cluster.worker(backend="numpy" if workers == 4 else BACKEND)
    for job_darts in ("1e6", "1e7", "1e8"):
        proc = cluster.run_master("--darts", "2e8", "--job-darts", job_darts, "--seed", "20261127")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["inside"] == 157_096_961
        assert report["job_darts"] == int(float(job_darts))
