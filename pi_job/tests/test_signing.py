"""Signed bodies: forged, altered, replayed and deleted bodies on a real beanstalkd (loopback)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKEND, Beanstalkd, Cluster, expected_inside, wait_for

from pi_job.cli import main
from pi_job.core import signing
from pi_job.core.envelope import Answer, Job, decode_answer, decode_job, decode_signed_job
from pi_job.core.master import BULK_WINDOW_START
from pi_job.workloads.pi.workload import job_range

OTHER_NONCE = "0" * 32


def keyring(cluster: Cluster) -> signing.Keyring:
    return signing.read_key_file(cluster.key_file)


def foreign_keyring() -> signing.Keyring:
    return signing.Keyring((os.urandom(32),), "attacker")


def plan_of(cluster: Cluster, run_id: str) -> dict:
    path = cluster.state_dir / f"{run_id}.jsonl"
    wait_for(lambda: path.exists() and path.read_text().count("\n") >= 1)
    return cluster.journal(run_id)[0]


def pushed(beanstalkd: Beanstalkd, jobs: int) -> bool:
    return beanstalkd.tube("pi.jobs").get("current-jobs-ready", 0) >= jobs


# -- the MAC itself --------------------------------------------------------------------------
def test_mac_covers_every_field_and_the_payload() -> None:
    ring = signing.Keyring((os.urandom(32), os.urandom(32)), "test")
    job = Job("r1", 3, "pi", {"seed": 1, "start": 0, "darts": 10}, b"xyz", nonce="a" * 32)
    body = job.encode(ring)
    assert decode_job(body, ring) == job
    head, _, payload = body.partition(b"\n")
    header = json.loads(head)
    assert set(header) == {"v", "run", "job", "w", "spec", "nonce", "mac"}
    # the sealed line is checked as sent; the same content encoded otherwise (spaces, key order)
    # is checked through its canonical form, and still verifies
    respaced = json.dumps(dict(reversed(list(header.items())))).encode() + b"\n" + payload
    assert decode_job(respaced, ring) == job
    # bytes changed in front of an intact mac field fail
    with pytest.raises(signing.BadSignatureError):
        decode_job(head.replace(b'"darts":10', b'"darts":11') + b"\n" + payload, ring)
    altered = [
        {**header, "job": 4},
        {**header, "run": "r2"},
        {**header, "w": "matmul"},
        {**header, "nonce": "b" * 32},
        {**header, "spec": {"seed": 1, "start": 0, "darts": 11}},
        {k: v for k, v in header.items() if k != "mac"},
        {**header, "mac": "0" * 64},
        {**header, "mac": header["mac"].upper()},
    ]
    for bad in altered:
        with pytest.raises(signing.BadSignatureError, match=r"^bad signature$"):
            decode_job(json.dumps(bad).encode() + b"\n" + payload, ring)
    with pytest.raises(signing.BadSignatureError):
        decode_job(head + b"\nxyZ", ring)
    # a job's MAC never verifies as an answer's (domain separation)
    with pytest.raises(signing.BadSignatureError):
        ring.verify("answer", dict(header), payload)
    # the previous key still verifies (rotation) and says which key it was
    old_first = signing.Keyring((ring.keys[1], ring.keys[0]))
    assert decode_signed_job(job.encode(old_first), ring)[1] == 1
    with pytest.raises(signing.BadSignatureError):
        decode_job(job.encode(signing.Keyring((os.urandom(32),))), ring)
    answer = Answer("r1", 3, "h", "w", 1.5, 1, {"darts": 10}, b"p" * 100, nonce="a" * 32)
    assert decode_answer(answer.encode(ring, 1), ring) == answer


def test_key_files(tmp_path: Path) -> None:
    def write(name: str, text: str, mode: int = 0o600) -> Path:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(mode)
        return path

    key = os.urandom(32).hex()
    assert signing.read_key_file(write("ok", key + "\n")).keys == (bytes.fromhex(key),)
    two = signing.read_key_file(write("two", f"# new, then previous\n{key}\n{'ab' * 40}\n"))
    assert len(two.keys) == 2 and two.keys[1] == b"\xab" * 40
    assert signing.read_key_file(write("group", key, 0o640)).keys
    cases = {
        "world": (key, 0o604, "others may read"),
        "short": ("ab" * 31, 0o600, "at least 32"),
        "nothex": ("zz" * 32, 0o600, "not a hex key"),
        "three": ("\n".join([key] * 3), 0o600, "at most 2"),
        "empty": ("", 0o600, "no key"),
    }
    for name, (text, mode, needle) in cases.items():
        with pytest.raises(signing.UsageError, match=needle) as info:
            signing.read_key_file(write(name, text, mode))
        assert key not in str(info.value)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "PI_JOB_KEY_FILE": "/nowhere"}
    assert signing.find_key_file(None, env) == Path("/nowhere")
    write(signing.CREDENTIAL_NAME, key)
    assert signing.find_key_file(None, env) == tmp_path / signing.CREDENTIAL_NAME
    assert signing.find_key_file(Path("/x"), env) == Path("/x")
    assert signing.find_key_file(None, {}, tmp_path / "none") is None
    assert signing.find_key_file(None, {}, tmp_path / "ok") == tmp_path / "ok"


def test_commands_refuse_to_start_without_a_usable_key(
    beanstalkd: Beanstalkd, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.delenv("PI_JOB_KEY_FILE")
    state = str(tmp_path / "state")
    readable = tmp_path / "readable.key"
    readable.write_text(os.urandom(32).hex())
    readable.chmod(0o644)
    for command in (["worker"], ["run", "--darts", "1e6", "--state-dir", state]):
        for extra, needle in (
            ([], "no cluster key"),
            (["--key-file", str(readable)], "others may read"),
            (["--key-file", str(tmp_path / "missing")], "cannot open key file"),
        ):
            with pytest.raises(SystemExit) as info:
                main([command[0], "--server", beanstalkd.address, *command[1:], *extra])
            assert info.value.code == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and needle in err, err
            assert readable.read_text() not in err
    assert beanstalkd.stats()["total-jobs"] == 0


# -- forged, replayed and deleted bodies during real runs ---------------------------------
def test_forged_answers_are_rejected_and_the_count_is_exact(
    cluster: Cluster, beanstalkd: Beanstalkd
) -> None:
    seed, darts = 21, 200_000_000
    master = cluster.master("--darts", "2e8", "--job-darts", "1e7", "--seed", str(seed),
                            "--run-id", "target", "--stall-timeout", "60")  # fmt: skip
    plan = plan_of(cluster, "target")
    params, nonce = plan["params"], plan["nonce"]
    assert len(nonce) == 32
    wait_for(lambda: pushed(beanstalkd, plan["jobs"]))
    planned = job_range(params, 0)[1]
    wrong = {"darts": planned, "inside": planned, "backend": BACKEND}  # pi would be 4
    ring = keyring(cluster)
    forged = {
        "no mac": Answer("target", 0, "evil", "e", 1.0, 1, wrong, nonce=nonce).encode(),
        "bad mac": Answer("target", 0, "evil", "e", 1.0, 1, wrong, nonce=nonce)
        .encode(ring)
        .replace(b'"inside":' + str(planned).encode(), b'"inside":' + str(planned - 1).encode()),
        "foreign key": Answer("target", 1, "evil", "e", 1.0, 1, wrong, nonce=nonce).encode(
            foreign_keyring()
        ),
        # a real signature, captured from an earlier run that had the same run id
        "replayed from another run": Answer(
            "target", 2, "evil", "e", 1.0, 1, wrong, nonce=OTHER_NONCE
        ).encode(ring),
        "other run id": Answer("other", 3, "evil", "e", 1.0, 1, wrong, nonce=nonce).encode(ring),
        "garbage": b"not even json",
    }
    with beanstalkd.client(use="pi.results.target") as client:
        for body in forged.values():
            client.put(body)
    wait_for(lambda: beanstalkd.tube("pi.results.target").get("current-jobs-ready", 1) == 0)
    cluster.worker()
    cluster.worker()
    code, out = cluster.finish(master, timeout=120)
    assert code == 0, cluster.log_of(master)
    report = json.loads(out)
    assert report["inside"] == expected_inside(seed, darts)
    assert report["rejected"] == len(forged)
    assert report["duplicates"] == 0
    reasons = [r["reason"] for r in cluster.journal("target") if r["type"] == "rejected"]
    assert reasons.count("bad signature") == 3, reasons
    assert any("nonce" in reason for reason in reasons), reasons


def test_forged_jobs_are_buried_as_bad_signature(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    worker = cluster.worker()
    spec = {"seed": 1, "start": 0, "darts": 1000}
    bodies = [
        Job("forged", 0, "pi", spec, nonce=OTHER_NONCE).encode(),
        Job("forged", 1, "pi", spec, nonce=OTHER_NONCE).encode(foreign_keyring()),
        Job("forged", 2, "pi", spec)
        .encode(keyring(cluster))
        .replace(b'"darts":1000', b'"darts":9'),
    ]
    with beanstalkd.client(use="pi.jobs") as client:
        ids = [client.put(body, ttr=10) for body in bodies]
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-buried", 0) == len(bodies))
    status = json.loads(cluster.run("status", "--server", beanstalkd.address, "--json").stdout)
    reasons = {record["job_id"]: record["reason"] for record in status["buried"]}
    assert reasons == {job_id: "bad signature" for job_id in ids}
    text = cluster.run("status", "--server", beanstalkd.address).stdout
    assert text.count(": bad signature") == len(bodies)
    assert beanstalkd.tube("pi.results.forged") == {}  # nothing was computed
    # the worker keeps serving: a real run ends with the exact count
    proc = cluster.run_master("--darts", "1e7", "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inside"] == expected_inside(4, 10_000_000)
    assert worker.poll() is None


def test_deleted_jobs_are_pushed_again_soon(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    seed, darts = 22, 100_000_000
    master = cluster.master("--darts", "1e8", "--job-darts", "1e7", "--seed", str(seed),
                            "--run-id", "victim", "--stall-timeout", "120")  # fmt: skip
    plan = plan_of(cluster, "victim")
    wait_for(lambda: pushed(beanstalkd, plan["jobs"]))
    with beanstalkd.client() as intruder:
        intruder.watch("pi.jobs")
        for _ in range(3):  # an intruder takes three jobs and deletes them
            intruder.delete(intruder.reserve(timeout=1))
    started = time.monotonic()
    cluster.worker()
    code, out = cluster.finish(master, timeout=120)
    assert code == 0, cluster.log_of(master)
    assert time.monotonic() - started < 30  # not the 120 s stall timeout
    report = json.loads(out)
    assert report["inside"] == expected_inside(seed, darts)
    assert [job["job"] for job in report["per_job"]] == list(range(plan["jobs"]))
    assert "gone from the server, pushing them again" in cluster.log_of(master)


def test_jobs_buried_by_an_intruder_are_kicked(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    """An intruder reserves real jobs and buries them, and kicks a forged job the workers buried:
    the master kicks its own buried jobs back (no stall timeout) and the count is exact."""
    seed, darts = 23, 100_000_000
    master = cluster.master("--darts", "1e8", "--job-darts", "1e7", "--seed", str(seed),
                            "--run-id", "buried", "--stall-timeout", "120")  # fmt: skip
    plan = plan_of(cluster, "buried")
    wait_for(lambda: pushed(beanstalkd, plan["jobs"]))
    spec = {"seed": 1, "start": 0, "darts": 1000}
    with beanstalkd.client(use="pi.jobs") as intruder:
        intruder.watch("pi.jobs")
        for _ in range(3):
            intruder.bury(intruder.reserve(timeout=1))
        forged = intruder.put(Job("buried", 0, "pi", spec, nonce=plan["nonce"]).encode(), ttr=10)
    worker = cluster.worker()
    with beanstalkd.client(use="pi.jobs") as intruder:
        # The master may kick the real jobs back before the worker (warming up) buries the
        # forgery: wait for the forgery's own state, not for four buried jobs at once.
        wait_for(lambda: intruder.stats_job(forged)["state"] == "buried", timeout=60)
        intruder.kick_job(forged)  # the workers bury it again; the real ones stay buried
    started = time.monotonic()
    code, out = cluster.finish(master, timeout=120)
    assert code == 0, cluster.log_of(master)
    assert time.monotonic() - started < 60  # not the 120 s stall timeout
    report = json.loads(out)
    assert report["inside"] == expected_inside(seed, darts)
    assert [job["job"] for job in report["per_job"]] == list(range(plan["jobs"]))
    assert cluster.log_of(master).count("was buried, kicked back to ready") == 3
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-buried", 0) == 1)
    status = json.loads(cluster.run("status", "--server", beanstalkd.address, "--json").stdout)
    assert [(r["job_id"], r["reason"]) for r in status["buried"]] == [(forged, "bad signature")]
    assert worker.poll() is None


MATMUL = ["--workload", "matmul", "--size", "256", "--dtype", "int64", "--panel-rows", "16"]


def test_matmul_with_forged_and_deleted_bodies(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    cluster.worker()
    quiet = cluster.run_master(*MATMUL, "--seed", "3", "--run-id", "quiet", timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    expected = json.loads(quiet.stdout)["sha256"]
    workers = [proc for proc in cluster.procs if proc.poll() is None]
    for proc in workers:  # no worker while the intruder acts
        proc.terminate()
        proc.wait(30)
    master = cluster.master(*MATMUL, "--seed", "3", "--run-id", "hit", "--stall-timeout", "120")
    plan = plan_of(cluster, "hit")
    # a bulk run pushes BULK_WINDOW_START panels before its first answer
    wait_for(lambda: pushed(beanstalkd, min(plan["jobs"], BULK_WINDOW_START)))
    ring = keyring(cluster)
    value = {"rows": [0, 16], "sha256": hashlib.sha256(b"\0" * 16 * 256 * 8).hexdigest()}
    fake = Answer("hit", 0, "evil", "e", 1.0, 1, value, b"\0" * 16 * 256 * 8, plan["nonce"])
    forged = [
        fake.encode(),
        fake.encode(foreign_keyring()),
        Answer("hit", 0, "evil", "e", 1.0, 1, value, fake.payload, OTHER_NONCE).encode(ring),
        fake.encode(ring)[:-1] + b"\1",  # payload altered after signing
    ]
    with beanstalkd.client(use="pi.results.hit") as client:
        for body in forged:
            client.put(body)
    with beanstalkd.client() as intruder:
        intruder.watch("pi.jobs")
        intruder.delete(intruder.reserve(timeout=1))
    cluster.worker()
    code, out = cluster.finish(master, timeout=300)
    assert code == 0, cluster.log_of(master)
    report = json.loads(out)
    assert report["sha256"] == expected
    assert report["rejected"] == len(forged)
    c = np.load(cluster.state_dir / "hit" / "C.npy")
    assert hashlib.sha256(c.tobytes()).hexdigest() == expected


# -- key rotation ------------------------------------------------------------------------
def test_rotation_keeps_runs_exact(
    cluster: Cluster, beanstalkd: Beanstalkd, tmp_path: Path
) -> None:
    """A master started with the old key finishes with workers that already have the new one
    (previous key still accepted); one that outlives two rotations is resumed with the new key."""
    old = cluster.key_file.read_text().strip()
    new, newer = os.urandom(32).hex(), os.urandom(32).hex()
    rotated = tmp_path / "rotated.key"
    rotated.write_text(f"{new}\n{old}\n")
    rotated.chmod(0o600)
    master = cluster.master("--darts", "5e7", "--job-darts", "1e7", "--seed", "31",
                            "--run-id", "across", "--stall-timeout", "60")  # fmt: skip
    wait_for(lambda: pushed(beanstalkd, plan_of(cluster, "across")["jobs"]))
    cluster.worker("--key-file", str(rotated))  # argparse: the last --key-file wins
    code, out = cluster.finish(master, timeout=120)
    assert code == 0, cluster.log_of(master)
    assert json.loads(out)["inside"] == expected_inside(31, 50_000_000)
    # a run whose jobs were signed with a key that no worker accepts any more
    cluster.stop_all()
    twice = tmp_path / "twice.key"
    twice.write_text(f"{newer}\n{new}\n")
    twice.chmod(0o600)
    cluster.worker("--key-file", str(twice))
    stalled = cluster.run_master("--darts", "5e7", "--job-darts", "1e7", "--seed", "32",
                                 "--run-id", "old", "--stall-timeout", "3")  # fmt: skip
    assert stalled.returncode == 3, stalled.stderr
    jobs = cluster.journal("old")[0]["jobs"]
    wait_for(lambda: beanstalkd.tube("pi.jobs").get("current-jobs-buried", 0) == jobs)
    resumed = cluster.run_master("--resume", "old", "--key-file", str(twice))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["inside"] == expected_inside(32, 50_000_000)
