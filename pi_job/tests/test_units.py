"""Unit tests of the pure parts: counts, bodies, plans, statistics, journal, notify, logging."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import signal
import socket

import pytest
from conftest import Cluster, wait_for

from pi_job.core import logging_setup
from pi_job.core.connection import Backoff, parse_server
from pi_job.core.envelope import (
    MAX_DARTS,
    InvalidBodyError,
    InvalidValueError,
    JobSpec,
    Result,
    decode_job,
    decode_result,
    parse_count,
)
from pi_job.core.journal import CorruptJournalError, Journal, RunExistsError, UnknownRunError
from pi_job.core.plan import Plan, job_count
from pi_job.core.sdnotify import Notifier
from pi_job.workloads.pi.stats import estimate


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
    spec = JobSpec("run-1", 3, 2**63 - 1, 10**12)
    assert decode_job(spec.encode()) == spec
    good = json.loads(spec.encode())
    for key, bad in [("darts", True), ("job", 1.0), ("seed", -1), ("darts", 0), ("v", 2)]:
        with pytest.raises(InvalidBodyError):
            decode_job(json.dumps({**good, key: bad}).encode())
    with pytest.raises(InvalidBodyError, match="missing keys"):
        decode_job(json.dumps({k: v for k, v in good.items() if k != "seed"}).encode())
    with pytest.raises(InvalidBodyError, match="non-finite"):
        decode_job(b'{"v":1,"run":"r","job":0,"seed":NaN,"darts":1}')


def test_result_roundtrip_and_range() -> None:
    result = Result("r", 0, 100, 80, "h", "h:1", 0.5, 1, "numba")
    assert decode_result(result.encode()) == result
    with pytest.raises(InvalidBodyError, match="inside"):
        decode_result(Result("r", 0, 100, 101, "h", "h:1", 0.5, 1, "numba").encode())


def test_parse_server() -> None:
    assert str(parse_server("example.org:11300")) == "example.org:11300"
    assert parse_server("[::1]:80").host == "::1"
    for bad in ["x", "x:0", "x:99999", "[::1]", "x:y"]:
        with pytest.raises(InvalidValueError):
            parse_server(bad)


def test_plan_darts_sum_exactly() -> None:
    plan = Plan("p", 1, 10**9 + 7, 16, 60, 0)
    sizes = [plan.job_darts(i) for i in range(plan.jobs)]
    assert sum(sizes) == plan.darts and max(sizes) - min(sizes) == 1
    assert sizes[:7] == [plan.max_job_darts] * 7
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
    plan = Plan("j1", 1, 100, 2, 60, 0)
    with Journal.create(tmp_path, plan) as journal:
        journal.start_session()
        journal.pushed(0, 11)
        journal.pushed(1, 12)
        result = Result("j1", 0, 50, 40, "h", "w", 0.1, 1, "numba")
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
    assert list(state.results) == [0] and state.duplicates == 1 and state.missing() == [1]
    assert state.result_ids == {99, 100}
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
