"""Unit tests of the pure parts: counts, bodies, plans, statistics, journal, notify, logging."""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import signal
import socket

import greenstalk
import pytest
from conftest import Beanstalkd, Cluster, wait_for

from pi_job import workloads
from pi_job.core import logging_setup
from pi_job.core.ahead import map_ahead
from pi_job.core.connection import (
    Backoff,
    delete_all,
    parse_server,
    put_pipelined,
    reserve_ready,
)
from pi_job.core.envelope import (
    Answer,
    InputRef,
    InvalidBodyError,
    Job,
    decode_answer,
    decode_job,
)
from pi_job.core.journal import CorruptJournalError, Journal, RunExistsError, UnknownRunError
from pi_job.core.plan import Plan
from pi_job.core.sdnotify import Notifier
from pi_job.limits import MAX_DARTS, InvalidValueError, parse_count
from pi_job.workloads.pi.stats import estimate
from pi_job.workloads.pi.workload import job_count, job_starts


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("1e9", 10**9),
        ("1E9", 10**9),
        ("1_000_000_000", 10**9),
        ("2.5e9", 2_500_000_000),
        ("1e15", 10**15),
        ("123456789012345", 123456789012345),
        ("1.000", 1),
    ],
)
def test_parse_count_exact(text: str, value: int) -> None:
    assert parse_count(text, MAX_DARTS) == value


@pytest.mark.parametrize(
    "text", ["0", "-1", "1.5", "2.5", "1e-3", "1e16", "abc", "nan", "inf", "1__0", "_1", "0x10", ""]
)
def test_parse_count_rejects(text: str) -> None:
    with pytest.raises(InvalidValueError):
        parse_count(text, MAX_DARTS)


def test_job_roundtrip_and_strictness() -> None:
    job = Job("run-1", 3, "pi", {"seed": 2**63 - 1, "darts": 10**12}, b"\x00bulk\n")
    assert decode_job(job.encode()) == job
    head, _, payload = job.encode().partition(b"\n")
    good = json.loads(head)
    assert payload == b"\x00bulk\n"
    for key, bad in [("job", 1.0), ("job", -1), ("w", ""), ("spec", [1]), ("v", 1), ("run", "a b")]:
        with pytest.raises(InvalidBodyError):
            decode_job(json.dumps({**good, key: bad}).encode())
    with pytest.raises(InvalidBodyError, match="missing keys"):
        decode_job(json.dumps({k: v for k, v in good.items() if k != "spec"}).encode())
    with pytest.raises(InvalidBodyError, match="non-finite"):
        decode_job(b'{"v":2,"run":"r","job":0,"w":"pi","spec":{"seed":NaN}}')
    with pytest.raises(InvalidBodyError, match="no header line"):
        decode_job(b"x" * 5000)


def test_answer_roundtrip_and_pi_checks() -> None:
    answer = Answer("r", 0, "h", "h:1", 0.5, 1, {"darts": 100, "inside": 80, "backend": "numba"})
    assert decode_answer(answer.encode()) == answer
    pi = workloads.get("pi")
    params = {"darts": 1000, "job_darts": 100, "workers": 1, "jobs": 10, "guided": False}
    pi.check_answer(params, 0, answer.value, b"")
    for bad in [{**answer.value, "inside": 101}, {**answer.value, "darts": 99}, {"darts": 100}]:
        with pytest.raises(InvalidBodyError):
            pi.check_answer(params, 0, bad, b"")


def test_pipelined_puts(beanstalkd: Beanstalkd) -> None:
    with beanstalkd.client(use="t", watch="t") as client:
        bodies = [b"%d\r\n%s" % (n, b"y" * (n * 997)) for n in range(50)]
        for window in (1, 4, 100):
            ids = list(put_pipelined(client, iter(bodies), window=window, priority=7, ttr=9))
            assert len(ids) == 50 and ids == sorted(ids)
            for job_id, body in zip(ids, bodies, strict=True):
                assert client.peek(job_id).body == body
                stats = client.stats_job(job_id)
                assert (stats["pri"], stats["ttr"]) == (7, 9)
            assert delete_all(client, ids) == []
        # a refused put (body over the server's limit) raises where its id is due
        limit = int(client.stats()["max-job-size"])
        with pytest.raises(greenstalk.JobTooBigError):
            list(put_pipelined(client, [b"a", b"z" * (limit + 1)], window=4))


def test_map_ahead_keeps_order_and_bounds_the_lookahead() -> None:
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        return item * item

    results = map_ahead(work, range(10), depth=2)
    assert next(results) == 0
    assert max(started) <= 2  # the next two at most, not the whole sequence
    assert list(results) == [n * n for n in range(1, 10)]

    def fails(item: int) -> int:
        if item == 3:
            raise RuntimeError("three")
        return item

    with pytest.raises(RuntimeError, match="three"):
        list(map_ahead(fails, range(6), depth=2))
    with pytest.raises(ValueError, match="depth"):
        list(map_ahead(work, range(3), depth=0))


def test_pipelined_reserve_and_delete(beanstalkd: Beanstalkd) -> None:
    with beanstalkd.client(use="t", watch="t") as client:
        assert reserve_ready(client, 10) == []  # nothing ready: no wait, nothing held
        bodies = [b"%d\n\r\n%s" % (n, b"x" * n) for n in range(300)]  # CRLF inside bodies
        ids = [client.put(body) for body in bodies]
        first = reserve_ready(client, 256)
        assert [m.body for m in first] == bodies[:256] and [m.id for m in first] == ids[:256]
        rest = reserve_ready(client, 256)
        assert [m.body for m in rest] == bodies[256:]
        assert delete_all(client, [m.id for m in first + rest] + [10**9]) == [10**9]
        assert beanstalkd.tube("t")["current-jobs-reserved"] == 0
        assert beanstalkd.tube("t")["total-jobs"] == 300
        # holding a message in its last second (ttr 1): the server says DEADLINE_SOON instead
        # of TIMED_OUT once the tube is empty; the ready messages are still all taken
        client.put(b"soon", priority=0, ttr=1)
        later = [client.put(b"%d" % n) for n in range(20)]
        held = reserve_ready(client, 100)
        assert [m.body for m in held] == [b"soon"] + [b"%d" % n for n in range(20)]
        assert delete_all(client, [m.id for m in held]) == []
        assert later == [m.id for m in held[1:]]
        client.use("t")  # the connection is still in step after the pipelined replies
        assert client.stats_tube("t")["current-jobs-ready"] == 0


def test_parse_server() -> None:
    assert str(parse_server("example.org:11300")) == "example.org:11300"
    assert parse_server("[::1]:80").host == "::1"
    for bad in ["x", "x:0", "x:99999", "[::1]", "x:y"]:
        with pytest.raises(InvalidValueError):
            parse_server(bad)


def test_pi_jobs_cover_the_darts_once_and_shrink_at_the_end() -> None:
    starts = job_starts(10**10 + 7, 10**9, 2)
    sizes = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == 0 and starts[-1] == 10**10 + 7 and min(sizes) > 0
    assert sizes[0] == 10**9 and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] <= 10**9 // 8  # the tail is short, so no worker idles long
    assert job_starts(1000, 7, 4, guided=False) == (*tuple(range(0, 1000, 7)), 1000)
    assert job_count(10**6, None, 3) == 12  # >= 4 jobs per worker
    assert job_count(10, None, 5) == 10  # never more jobs than darts
    assert job_count(5 * 10**9 + 1, None, 0) == 6  # <= 1e9 darts per job
    assert job_count(100, 30, 8) == 4


def test_estimate() -> None:
    est = estimate(785398, 10**6)
    assert est.pi == pytest.approx(3.141592)
    assert est.std_error == pytest.approx(4 * math.sqrt(0.785398 * 0.214602 / 1e6))
    assert est.ci95[0] < est.pi < est.ci95[1]
    with pytest.raises(ValueError):
        estimate(5, 0)


def test_journal_replay_and_torn_line(tmp_path) -> None:
    plan = Plan("j1", "pi", 1, 2, 60, 0, {"darts": 100, "jobs": 2})
    with Journal.create(tmp_path, plan) as journal:
        journal.start_session()
        journal.pushed(0, 11)
        journal.pushed(1, 12)
        result = Answer("j1", 0, "h", "w", 0.1, 1, {"darts": 50, "inside": 40, "backend": "x"})
        journal.input("B", InputRef((5, 6), "0" * 64, 10))
        journal.rejected("bad", 101)
        body = Answer("j1", 1, "h", "w", 0.1, 1, {"rows": [1, 2]}, b"\0" * 4096).encode()
        answer = decode_answer(body)
        assert isinstance(answer.payload, memoryview) and answer.payload.obj is body
        journal.result(answer, 98)  # kept without its payload (a view of the whole body)
        assert journal.state.results[1].payload == b"" and answer.payload.nbytes == 4096
        journal.result(result, 99)
        journal.duplicate(result, 100)
    with pytest.raises(RunExistsError):
        Journal.create(tmp_path, plan)
    path = Journal.path_for(tmp_path, "j1")
    with path.open("a") as handle:
        handle.write('{"type":"result","t":1,')  # a crash in the middle of a write
    journal = Journal.load(tmp_path, "j1")
    state = journal.state
    assert state.pushed == {0: 11, 1: 12}
    assert list(state.results) == [1, 0] and state.duplicates == 1 and state.missing() == []
    assert state.result_ids == {98, 99, 100}
    assert state.rejected == 1 and state.inputs == {"B": InputRef((5, 6), "0" * 64, 10)}
    assert state.results[0].value["inside"] == 40
    journal.close()
    assert path.read_text().endswith("}\n")
    with pytest.raises(UnknownRunError):
        Journal.load(tmp_path, "j2")
    (tmp_path / "bad.jsonl").write_text('{"type":"pushed","t":1,"job":0,"id":1}\n')
    with pytest.raises(CorruptJournalError):
        Journal.load(tmp_path, "bad")


def test_backoff_is_capped() -> None:
    backoff = Backoff(0.1, 2.0, 1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays[0] <= 0.1 and max(delays) <= 1.0 and delays[-1] >= 0.8
    backoff.reset()
    assert backoff.next_delay() <= 0.1


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_datagrams(tmp_path, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if abstract:
            name = f"pi-job-test-{os.getpid()}"
            sock.bind("\0" + name)
            address = "@" + name
        else:
            address = str(tmp_path / "notify")
            sock.bind(address)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": address})
        notifier.ready("idle")
        assert sock.recv(4096) == b"READY=1\nSTATUS=idle"
        notifier.status("idle")  # unchanged: not sent again
        notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    assert not Notifier({}).enabled and not Notifier({}).send(READY=1)


def test_log_lines(monkeypatch) -> None:
    stream = io.StringIO()
    logging_setup.configure(stream=stream, environ={"JOURNAL_STREAM": "8:123"})
    logging.getLogger("x").info("two\nlines")
    assert stream.getvalue() == "INFO x: two | lines\n"
    stream = io.StringIO()
    logging_setup.configure(stream=stream, environ={})
    logging.getLogger("x").warning("hello")
    assert stream.getvalue()[:2] == "20" and stream.getvalue().endswith("WARNING x: hello\n")


def test_worker_under_systemd(cluster: Cluster, tmp_path) -> None:
    """READY=1, STATUS= and STOPPING=1 reach $NOTIFY_SOCKET; journald format has no timestamp."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(10)
        env = {**cluster.env, "NOTIFY_SOCKET": str(tmp_path / "notify"), "JOURNAL_STREAM": "9:9"}
        proc = cluster.spawn("worker", "--server", cluster.server.address, env=env)
        messages = [sock.recv(4096).decode()]
        assert messages[0].startswith("READY=1\nSTATUS=connecting to")
        messages.append(sock.recv(4096).decode())
        assert messages[1] == "STATUS=idle"
        wait_for(lambda: cluster.server.watching() == 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert sock.recv(4096) == b"STOPPING=1"
    first = cluster.log_of(proc).splitlines()[0]
    assert first.startswith("INFO pi_job.core.worker: worker ")


def test_input_reference_size_is_bounded_by_its_chunks() -> None:
    """A job cannot make a worker allocate more than its input's chunks could hold."""
    ok = {"ids": [1, 2], "sha256": "0" * 64, "size": 2 * (2**30 - 2)}
    assert InputRef.from_json(ok).size == ok["size"]
    for size in (ok["size"] + 1, 2**63):
        with pytest.raises(InvalidBodyError, match="more than 2 chunks hold"):
            InputRef.from_json({**ok, "size": size})
