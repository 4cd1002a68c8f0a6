"""Command-line validation: every bad value exits 2 with one line, before anything is queued."""

from __future__ import annotations

import pytest
from conftest import Beanstalkd, Cluster, free_port

from pi_job import __version__
from pi_job.cli import main
from pi_job.core.journal import Journal
from pi_job.core.plan import Plan

BAD_RUN = [
    ("--darts", "0"),
    ("--darts", "-1"),
    ("--darts", "1.5"),
    ("--darts", "1e-3"),
    ("--darts", "1e16"),
    ("--darts", "1000000000000001"),
    ("--darts", "abc"),
    ("--darts", "nan"),
    ("--darts", "inf"),
    ("--darts", "1__0"),
    ("--darts", "0x10"),
    ("--darts", ""),
    ("--job-darts", "0"),
    ("--job-darts", "1e13"),
    ("--seed", "-1"),
    ("--seed", str(2**63)),
    ("--seed", "1.5"),
    ("--seed", "1e3"),
    ("--run-id", "bad id"),
    ("--run-id", "-x"),
    ("--run-id", "a" * 65),
    ("--run-id", "a/b"),
    ("--resume", "../etc"),
    ("--ttr", "0"),
    ("--ttr", "86401"),
    ("--ttr", "ten"),
    ("--output", "/nonexistent-dir/out.json"),
    ("--output", "/tmp"),
    ("--stall-timeout", "0"),
    ("--stall-timeout", "nan"),
    ("--state-dir", "/etc/hostname"),
    ("--progress-interval", "0"),
    ("--priority", "-1"),
    ("--priority", str(2**32)),
    ("--connect-timeout", "0"),
    ("--connect-timeout", "inf"),
]
BAD_SERVERS = ["nohost", "host:0", "host:65536", "host:port", "host:", ":11300", "a b:1"]
BAD_WORKER = [
    ("--reserve-timeout", "0"),
    ("--reserve-timeout", "x"),
    ("--chunk-darts", "0"),
    ("--chunk-darts", "2.5"),
    ("--backend", "fortran"),
    ("--id", "has space"),
    ("--id", ""),
    ("--connect-timeout", "-1"),
]


def assert_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "error:" in err and needle in err, err


def assert_nothing_queued(server: Beanstalkd) -> None:
    stats = server.stats()
    assert stats["cmd-put"] == 0 and stats["total-jobs"] == 0


def test_bad_run_values(beanstalkd: Beanstalkd, tmp_path, capsys) -> None:
    base = ["run", "--server", beanstalkd.address, "--state-dir", str(tmp_path / "state")]
    for option, value in BAD_RUN:
        argv = (
            [*base, "--darts", "1e6", option, value]
            if option != "--darts"
            else [*base, option, value]
        )
        assert_usage_error(capsys, argv, f"pi-job run: error: argument {option}")
    for server in BAD_SERVERS:
        assert_usage_error(capsys, ["run", "--server", server, "--darts", "1e6"], "--server")
    assert_nothing_queued(beanstalkd)
    assert not (tmp_path / "state").exists()


def test_bad_run_combinations(beanstalkd: Beanstalkd, tmp_path, capsys) -> None:
    state = tmp_path / "state"
    base = ["run", "--server", beanstalkd.address, "--state-dir", str(state)]
    assert_usage_error(capsys, base, "--darts is required")
    assert_usage_error(
        capsys, [*base, "--darts", "1e15", "--job-darts", "1"], "more than 1000000 jobs"
    )
    assert_usage_error(capsys, [*base, "--resume", "a", "--run-id", "b"], "different runs")
    params = {"darts": 1000, "job_darts": 100, "workers": 1, "guided": False, "jobs": 10}
    Journal.create(state, Plan("known", "pi", 5, 10, 60, 0, params)).close()
    assert_usage_error(capsys, [*base, "--run-id", "known", "--darts", "2000"], "--darts 2000")
    assert_usage_error(capsys, [*base, "--run-id", "known", "--seed", "6"], "--seed 6")
    assert_nothing_queued(beanstalkd)


def test_bad_worker_and_status_values(beanstalkd: Beanstalkd, capsys) -> None:
    for option, value in BAD_WORKER:
        argv = ["worker", "--server", beanstalkd.address, option, value]
        assert_usage_error(capsys, argv, f"pi-job worker: error: argument {option}")
    for server in BAD_SERVERS:
        assert_usage_error(capsys, ["worker", "--server", server], "--server")
        assert_usage_error(capsys, ["status", "--server", server], "--server")
    assert_usage_error(
        capsys, ["status", "--server", beanstalkd.address, "--connect-timeout", "x"], "--connect"
    )
    assert_usage_error(capsys, ["nosuchcommand"], "invalid choice")
    assert_usage_error(capsys, [], "required")
    assert_nothing_queued(beanstalkd)


def test_console_script_exit_code(cluster: Cluster) -> None:
    proc = cluster.run("run", "--server", cluster.server.address, "--darts", "2.5")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        'pi-job run: error: argument --darts: not a whole number: "2.5"'
    ]
    version = cluster.run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"pi-job {__version__}"
    assert_nothing_queued(cluster.server)


def test_resume_unknown_run(cluster: Cluster) -> None:
    proc = cluster.run_master("--resume", "never-was")
    assert proc.returncode == 1
    assert "unknown run id 'never-was'" in proc.stderr
    assert_nothing_queued(cluster.server)


def test_server_unreachable(cluster: Cluster, tmp_path) -> None:
    port = free_port()
    proc = cluster.run(
        "run", "--server", f"127.0.0.1:{port}", "--darts", "1e6", "--connect-timeout", "0.5",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot connect to beanstalkd at 127.0.0.1:{port} within 0.5 s" in proc.stderr
    assert proc.stderr.count("pi-job run:") == 1
    assert not (tmp_path / "state").exists()  # nothing changed
    status = cluster.run("status", "--server", f"127.0.0.1:{port}")
    assert status.returncode == 1 and "cannot query beanstalkd" in status.stderr
