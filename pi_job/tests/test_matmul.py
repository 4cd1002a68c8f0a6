"""The matmul, matvec and example workloads on a real beanstalkd (loopback), with faults."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
from pathlib import Path

import greenstalk
import numpy as np
import pytest
from conftest import MAX_BODY, Beanstalkd, Cluster, wait_for

from pi_job.core import signing
from pi_job.core.connection import Client, connect, parse_server, put_pipelined
from pi_job.core.envelope import InputRef, Job, split_body
from pi_job.limits import beanstalkd_sizes
from pi_job.workloads.matmul import operands


def run_dir(cluster: Cluster, run_id: str) -> Path:
    return cluster.state_dir / run_id


def product_of(cluster: Cluster, run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B and C of a finished run, from the master's run directory."""
    directory = run_dir(cluster, run_id)
    return tuple(np.load(directory / f"{name}.npy") for name in "ABC")  # type: ignore[return-value]


def run_ok(cluster: Cluster, *args: str) -> dict:
    proc = cluster.run_master(*args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_int64_is_exact_and_float64_matches_numpy(cluster: Cluster) -> None:
    cluster.worker()
    cluster.worker()
    exact = run_ok(cluster, "--workload", "matmul", "--shape", "200", "150", "120",
                   "--dtype", "int64", "--seed", "5", "--run-id", "int")  # fmt: skip
    a, b, c = product_of(cluster, "int")
    assert a.dtype == c.dtype == np.int64 and c.shape == (200, 120)
    assert np.array_equal(c, a @ b)
    assert exact["sha256"] == hashlib.sha256(c.tobytes()).hexdigest()
    assert exact["verification"]["method"] == "freivalds" and exact["jobs"] > 1
    assert exact["rows_per_second"] > 0 and exact["rejected"] == exact["duplicates"] == 0
    floats = run_ok(cluster, "--workload", "matmul", "--size", "256", "--seed", "6",
                    "--run-id", "float")  # fmt: skip
    a, b, c = product_of(cluster, "float")
    assert np.allclose(c, a @ b, rtol=1e-12, atol=1e-12)
    assert floats["verification"]["max_relative_error"] <= floats["verification"]["bound"]
    assert {"shape", "dtype", "grid", "bytes_moved", "gflops", "sha256"} <= set(floats)


def test_operand_files_and_matvec(cluster: Cluster, tmp_path: Path) -> None:
    cluster.worker()
    rng = np.random.default_rng(1)
    np.save(tmp_path / "A.npy", rng.integers(-50, 50, size=(97, 31)))
    np.save(tmp_path / "B.npy", rng.integers(-50, 50, size=(31, 13)))
    np.save(tmp_path / "x.npy", rng.integers(-50, 50, size=(31, 1)))
    summary = run_ok(cluster, "--workload", "matmul", "--a", str(tmp_path / "A.npy"),
                     "--b", str(tmp_path / "B.npy"), "--run-id", "files")  # fmt: skip
    a, _, c = product_of(cluster, "files")
    assert np.array_equal(a, np.load(tmp_path / "A.npy"))
    assert np.array_equal(c, np.load(tmp_path / "A.npy") @ np.load(tmp_path / "B.npy"))
    assert summary["shape"] == [97, 13]
    run_ok(cluster, "--workload", "matvec", "--a", str(tmp_path / "A.npy"),
           "--b", str(tmp_path / "x.npy"), "--run-id", "mv")  # fmt: skip
    assert np.array_equal(
        product_of(cluster, "mv")[2], np.load(tmp_path / "A.npy") @ np.load(tmp_path / "x.npy")
    )


SLOW = ["--workload", "matmul", "--size", "640", "--dtype", "int64", "--panel-rows", "16"]


def undisturbed(cluster: Cluster, seed: str) -> str:
    return str(run_ok(cluster, *SLOW, "--seed", seed, "--run-id", f"quiet-{seed}")["sha256"])


def results_in_journal(cluster: Cluster, run_id: str) -> int:
    path = cluster.state_dir / f"{run_id}.jsonl"
    return path.read_text().count('"type":"result"') if path.exists() else 0


def test_faults_leave_c_bit_identical(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    """Garbage answers, kill -9 of a worker mid-job, of beanstalkd and of the master: same C."""
    quiet = [cluster.worker(), cluster.worker()]
    expected = undisturbed(cluster, "8")
    for proc in quiet:
        proc.terminate()
        proc.wait(30)
    with beanstalkd.client(use="pi.results.hit") as client:
        client.put(b"garbage")
        forged = {"v": 2, "run": "hit", "job": 0, "host": "h", "worker": "w", "seconds": 1,
                  "reserves": 1, "value": {"rows": [0, 16], "sha256": "0" * 64}}  # fmt: skip
        client.put(json.dumps(forged).encode() + b"\nxx")
    master = cluster.master(*SLOW, "--seed", "8", "--run-id", "hit", "--ttr", "5")
    worker = cluster.worker()
    wait_for(lambda: results_in_journal(cluster, "hit") >= 3, timeout=60)
    worker.send_signal(signal.SIGSTOP)  # frozen mid-job: its job's TTR runs out
    beanstalkd.kill9()  # ... while the server is down: the binlog brings the jobs back
    beanstalkd.start()
    worker.send_signal(signal.SIGKILL)
    master.send_signal(signal.SIGKILL)
    master.wait(10)
    done = results_in_journal(cluster, "hit")
    cluster.worker()
    summary = run_ok(cluster, "--resume", "hit")
    assert done < summary["jobs"], "the faults came too late to matter"
    assert summary["sha256"] == expected
    assert summary["rejected"] >= 2
    a, b, c = product_of(cluster, "hit")
    assert np.array_equal(c, a @ b)
    # the run's shared input (B) is deleted from the server at the end
    assert beanstalkd.tube("pi.data.hit").get("current-jobs-ready", 0) == 0


def test_bad_inputs_queue_nothing(cluster: Cluster, beanstalkd: Beanstalkd, tmp_path: Path) -> None:
    np.save(tmp_path / "A.npy", np.ones((3, 4)))
    np.save(tmp_path / "B5.npy", np.ones((5, 2)))
    np.save(tmp_path / "nan.npy", np.full((4, 2), np.nan))
    np.save(tmp_path / "inf.npy", np.full((4, 2), np.inf))
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "cplx.npy", np.ones((4, 2), dtype=complex))
    np.save(tmp_path / "empty.npy", np.zeros((4, 0)))
    np.save(tmp_path / "vec.npy", np.ones(4))
    np.save(tmp_path / "Aint.npy", np.full((3, 4), 2**31, dtype=np.int64))
    np.save(tmp_path / "Bint.npy", np.full((4, 2), 2**31, dtype=np.int64))
    np.save(tmp_path / "Bi.npy", np.ones((4, 2), dtype=np.int64))
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    f = lambda name: str(tmp_path / name)  # noqa: E731
    cases = [
        (["--a", f("A.npy"), "--b", f("B5.npy")], "do not multiply"),
        (["--a", f("A.npy"), "--b", f("nan.npy")], "NaN or Inf"),
        (["--a", f("A.npy"), "--b", f("inf.npy")], "NaN or Inf"),
        (["--a", f("A.npy"), "--b", f("obj.npy")], "not a plain .npy"),
        (["--a", f("A.npy"), "--b", f("cplx.npy")], "dtype complex128"),
        (["--a", f("A.npy"), "--b", f("empty.npy")], "empty"),
        (["--a", f("A.npy"), "--b", f("vec.npy")], "not a matrix"),
        (["--a", f("A.npy"), "--b", f("missing.npy")], "no such file"),
        (["--a", f("A.npy"), "--b", f("junk.npy")], "not a plain .npy"),
        (["--a", f("Aint.npy"), "--b", f("Bint.npy")], "could overflow"),
        (["--a", f("A.npy"), "--b", f("Bi.npy")], "dtypes differ"),
        (["--a", f("A.npy")], "--a and --b go together"),
        (["--size", "0"], "out of range"),
        (["--size", "4", "--dtype", "complex64"], "invalid choice"),
        (["--size", "4", "--shape", "1", "2", "3"], "not both"),
        ([], "needs --size"),
        (["--size", "4096", "--panel-rows", "4096"], "exceed the server's largest body"),
        (["--a", f("A.npy"), "--b", f("B5.npy"), "--generate-on-workers"], "not files"),
    ]
    for extra, needle in cases:
        proc = cluster.run_master("--workload", "matmul", *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr, (extra, proc.stderr)
    assert beanstalkd.tube("pi.jobs") == {} and not list(cluster.state_dir.glob("*.jsonl"))


def test_largest_default_body_survives_a_server_crash(beanstalkd: Beanstalkd) -> None:
    """With -z/-s from beanstalkd_sizes(16 MiB): a 16 MiB body is kept across kill -9."""
    body = np.random.default_rng(2).bytes(MAX_BODY)
    with beanstalkd.client(use="big") as client:
        job_id = client.put(body)
        with pytest.raises(greenstalk.JobTooBigError):
            client.put(body + b"xyz")
    beanstalkd.kill9()
    beanstalkd.start()
    with beanstalkd.client() as client:
        assert hashlib.sha256(client.peek(job_id).body).digest() == hashlib.sha256(body).digest()
    assert beanstalkd_sizes(MAX_BODY) == (MAX_BODY + 2, 16 * 2**20 + 8192)


def test_example_workload_end_to_end(cluster: Cluster) -> None:
    proc = cluster.run("workloads")
    assert proc.returncode == 0 and "primes" in proc.stdout and "matmul" in proc.stdout
    cluster.worker()
    summary = run_ok(cluster, "--workload", "primes", "--below", "1e6")
    assert summary["primes"] == 78_498 and summary["workload"] == "primes"


def test_bulk_client_round_trips_bodies(beanstalkd: Beanstalkd) -> None:
    """connection.Client puts with sendmsg and reads without copies: same bytes as greenstalk."""
    rng = np.random.default_rng(3)
    server = parse_server(beanstalkd.address)
    sizes = [0, 1, 2, 8191, 8192, 8193, 4 * 2**20 + 3, MAX_BODY]
    with connect(server, use="bulk", watch="bulk") as fast, beanstalkd.client() as plain:
        for size in sizes:
            body = b"\r\n" + rng.bytes(size)[2:] if size >= 2 else rng.bytes(size)
            job_id = fast.put(body)
            assert plain.peek(job_id).body == body
            job = fast.reserve(timeout=5)
            assert (job.id, job.body) == (job_id, body)
            fast.delete(job)
            cut = size // 3
            parts = (body[:cut], memoryview(body)[cut:])
            job_id = fast.put_parts(parts, priority=7, ttr=9)
            assert fast.peek(job_id).body == body and plain.peek(job_id).body == body
            assert (fast.stats_job(job_id)["pri"], fast.stats_job(job_id)["ttr"]) == (7, 9)
            fast.delete(job_id)
        with pytest.raises(greenstalk.JobTooBigError):
            fast.put(rng.bytes(MAX_BODY + 3))
        assert fast.put(b"still in sync") > 0
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = Client(ours, encoding=None)
        theirs.sendall(b"RESERVED 1 10\r\nabc")
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError):
            client.reserve()


def test_worker_prefetches_the_next_panel_and_releases_it_on_stop(
    cluster: Cluster, beanstalkd: Beanstalkd
) -> None:
    """While it computes one panel, a worker holds the next (two reserved jobs, one worker);
    SIGTERM gives both back (or answers the one it computes), and the run's C stays exact."""
    worker = cluster.worker()
    master = cluster.master("--workload", "matmul", "--size", "768", "--dtype", "int64",
                            "--panel-rows", "8", "--seed", "9", "--run-id", "ahead")  # fmt: skip
    wait_for(lambda: results_in_journal(cluster, "ahead") >= 2, timeout=120)

    def stopped_holding_two() -> bool:
        """Freeze the worker; if it holds two jobs, SIGTERM reaches it in that state."""
        worker.send_signal(signal.SIGSTOP)
        try:
            held = int(beanstalkd.tube("pi.jobs").get("current-jobs-reserved", 0))
            if held == 2:
                worker.send_signal(signal.SIGTERM)  # pending until SIGCONT
            return held == 2
        finally:
            worker.send_signal(signal.SIGCONT)

    wait_for(stopped_holding_two, timeout=60, interval=0.01)
    assert worker.wait(30) == 0
    assert "released job" in cluster.log_of(worker)
    assert beanstalkd.tube("pi.jobs").get("current-jobs-reserved", 0) == 0
    cluster.worker()
    code, out = cluster.finish(master, timeout=300)
    assert code == 0, cluster.log_of(master)
    a, b, c = product_of(cluster, "ahead")
    assert np.array_equal(c, a @ b) and json.loads(out)["redeliveries"] >= 1


def test_generated_on_workers_is_the_same_product(cluster: Cluster) -> None:
    """--generate-on-workers: no A or B through the queue, C bit-identical to the shipped run."""
    cluster.worker()
    cluster.worker()
    for dtype, shape in (("int64", ["150", "70", "90"]), ("float64", ["200", "300", "100"])):
        args = ["--workload", "matmul", "--shape", *shape, "--dtype", dtype, "--seed", "12",
                "--panel-rows", "9"]  # fmt: skip
        shipped = run_ok(cluster, *args, "--run-id", f"ship-{dtype}")
        local = run_ok(cluster, *args, "--generate-on-workers", "--run-id", f"gen-{dtype}")
        assert local["sha256"] == shipped["sha256"] and local["generated_on_workers"]
        assert local["bytes_moved"] == (150 * 90 * 8 if dtype == "int64" else 200 * 100 * 8)
        assert local["verification"]["ok"]
        a, b, c = product_of(cluster, f"gen-{dtype}")
        if dtype == "int64":
            assert np.array_equal(c, a @ b)


def test_resume_with_the_runs_own_operands_is_no_clash() -> None:
    """pi-run@ID.service restarts a killed master with the run's first arguments: no clash."""
    from argparse import Namespace

    from pi_job.workloads.matmul.workload import MatMul, MatVec

    first = {"size": 64, "shape": None, "a": None, "b": None, "dtype": "int64", "panel_rows": 16,
             "generate_on_workers": None}  # fmt: skip
    for workload in (MatMul(), MatVec()):
        params = workload.parameters(Namespace(**first), workers=2)
        assert workload.check_resume(params, Namespace(**first)) == []
        n = 1 if workload.name == "matvec" else 64
        shape = Namespace(**{**first, "size": None, "shape": [64, 64, n]})
        assert workload.check_resume(params, shape) == []
        other = Namespace(**{**first, "size": 65, "dtype": "float64", "generate_on_workers": True})
        clashes = ("size", "dtype", "generate-on-workers")
        assert workload.check_resume(params, other) == [
            f"--{opt} (the run's operands are fixed)" for opt in clashes
        ]


def test_bulk_jobs_are_pushed_in_a_bounded_window(cluster: Cluster, beanstalkd: Beanstalkd) -> None:
    """A bulk run keeps few unanswered panels on the server: 8 until the first answer (so B goes
    out first), then at most 64; more are pushed as answers come, and C is exact."""
    master = cluster.master("--workload", "matmul", "--size", "600", "--dtype", "int64",
                            "--panel-rows", "3", "--seed", "4", "--run-id", "window")  # fmt: skip

    def queued() -> int:
        stats = beanstalkd.tube("pi.jobs")
        return sum(int(stats.get(f"current-jobs-{s}", 0)) for s in ("ready", "reserved"))

    wait_for(lambda: queued() == 8, timeout=60)
    assert queued() == 8 and int(beanstalkd.tube("pi.jobs")["total-jobs"]) == 8  # no worker yet
    cluster.worker()
    peak = 0
    while master.poll() is None:
        peak = max(peak, queued())
    code, out = cluster.finish(master)
    assert code == 0, cluster.log_of(master)
    assert 8 <= peak <= 64 and int(beanstalkd.tube("pi.jobs").get("total-jobs", 200)) == 200
    a, b, c = product_of(cluster, "window")
    assert np.array_equal(c, a @ b) and json.loads(out)["jobs"] == 200


def test_peek_into_and_bodies_sent_as_parts(beanstalkd: Beanstalkd) -> None:
    """A body put as (header, payload) parts is one body; ``peek_into`` reads it where asked
    (a body larger than the room raises and leaves the connection in step); a decoded
    payload is a view of its body, not a copy."""
    body = b'{"v":2}\n' + bytes(range(256)) * 40
    with connect(parse_server(beanstalkd.address), use="parts", watch="parts") as client:
        parts = (body[:8], memoryview(body)[8:])
        (job_id,) = put_pipelined(client, [parts], window=1)
        assert client.peek(job_id).body == body
        room = memoryview(bytearray(len(body) + 100))
        assert client.peek_into(job_id, room[50:]) == len(body)
        assert bytes(room[50 : 50 + len(body)]) == body and not any(room[:50])
        with pytest.raises(ValueError, match="room for"):
            client.peek_into(job_id, room[: len(body) - 1])
        with pytest.raises(greenstalk.NotFoundError):
            client.peek_into(job_id + 1000, room)
        assert client.peek(job_id).body == body
    header, payload = split_body(body)
    assert header == {"v": 2} and isinstance(payload, memoryview) and payload.obj is body


def test_input_that_does_not_match_its_reference_is_buried(
    cluster: Cluster, beanstalkd: Beanstalkd
) -> None:
    """A worker reads an input's chunks into a buffer of the size the job names: a chunk
    larger than that, or bytes with another sha256, bury the job; nothing is computed."""
    chunk = np.arange(16, dtype=np.float64).tobytes()  # B of a 4 x 4 product
    digest = hashlib.sha256(chunk).hexdigest()
    keyring = signing.read_key_file(cluster.key_file)
    with beanstalkd.client(use="pi.data.tampered") as client:
        chunk_id = client.put(chunk)
    refs = [InputRef((chunk_id,), digest, len(chunk) - 8), InputRef((chunk_id,), "0" * 64, 128)]
    spec = {"dtype": "float64", "rows": [0, 1], "k": 4, "n": 4}
    with beanstalkd.client(use="pi.jobs") as client:
        for index, ref in enumerate(refs):
            job = Job("tampered", index, "matmul", spec, bytes(32), {"B": ref}, "0" * 32)
            client.put(job.encode(keyring), ttr=30)
    cluster.worker()
    wait_for(lambda: beanstalkd.tube("pi.buried").get("current-jobs-ready", 0) == 2)
    with beanstalkd.client(watch="pi.buried") as client:
        reasons = [json.loads(client.reserve(timeout=5).body)["reason"] for _ in refs]
    assert reasons == ["input does not match its sha256"] * 2
    assert beanstalkd.tube("pi.results.tampered").get("current-jobs-ready", 0) == 0


def test_input_chunks_a_stopped_upload_left_are_deleted_at_the_end(
    cluster: Cluster, beanstalkd: Beanstalkd
) -> None:
    """Chunks on a run's data tube that its journal does not name (a master stopped while it
    uploaded them) are deleted with the run's own inputs when the run ends."""
    with beanstalkd.client(use="pi.data.orphans") as client:
        for _ in range(3):
            client.put(bytes(1000))
    cluster.worker()
    run_ok(cluster, "--workload", "matmul", "--size", "64", "--run-id", "orphans")
    assert beanstalkd.tube("pi.data.orphans").get("current-jobs-ready", 0) == 0  # or gone


def test_generated_operands_written_in_blocks_are_the_whole_operand(tmp_path: Path) -> None:
    """save_generated writes a few blocks at a time (and renames when whole): the file holds
    exactly what generating the operand in one piece gives, for rows not a multiple of a write."""
    rows = operands.SAVE_ROWS * 2 + 37
    for dtype in ("int64", "float64"):
        path = tmp_path / f"{dtype}.npy"
        operands.save_generated(path, 9, (rows, 40), dtype, 1)
        assert np.array_equal(np.load(path), operands.generate(9, (rows, 40), dtype, 1))
        assert not list(tmp_path.glob("*.part"))
