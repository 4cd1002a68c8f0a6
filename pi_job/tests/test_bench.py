"""Tests of ``pi-job bench``."""

from __future__ import annotations

import argparse
import json

import pytest

from pi_job.workloads.pi import bench, kernel


def test_json_output_maps_every_backend_to_a_rate(capsys):
    assert bench.main(["--json", "--seconds", "0.02"]) == 0
    rates = json.loads(capsys.readouterr().out)
    assert list(rates) == kernel.available_backends()
    assert {"numba", "numpy", "python"} <= set(rates)
    assert all(isinstance(rate, float) and rate > 0 for rate in rates.values())


def test_table_output(capsys):
    assert bench.main(["--seconds", "0.02"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["backend", "darts/s", "x", "python"]
    assert [line.split()[0] for line in lines[1:]] == kernel.available_backends()
    assert lines[-1].split()[-1] == "1.0"  # python relative to itself


def test_format_table_without_python_reference():
    assert "-" in bench.format_table({"numpy": 1e8}).splitlines()[1]


def test_configure_parser_on_a_subcommand():
    parser = argparse.ArgumentParser(prog="pi-job")
    sub = parser.add_subparsers(dest="cmd", required=True)
    bench.configure_parser(sub.add_parser("bench"))
    args = parser.parse_args(["bench", "--json", "--seconds", "0.5"])
    assert args.json is True
    assert args.seconds == 0.5
    defaults = parser.parse_args(["bench"])
    assert defaults.json is False
    assert defaults.seconds == bench.DEFAULT_SECONDS


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan"])
def test_bad_seconds_exit_with_code_2(value, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--seconds", value])
    assert exc.value.code == 2
    assert "--seconds" in capsys.readouterr().err


def test_measure_rejects_a_non_positive_budget():
    with pytest.raises(ValueError):
        bench.measure(0)


def test_measure_ranks_numba_above_python():
    rates = bench.measure(0.05)
    assert rates["numba"] > rates["python"]
    assert rates["numpy"] > rates["python"]


def test_bench_seed_is_a_run_stream_seed():
    """The timed kernel is the run stream, whose seeds are below 2**63."""
    assert 0 <= bench.BENCH_SEED <= kernel.SEED_MAX
    assert kernel.count_inside_range(bench.BENCH_SEED, 0, 1000) == kernel.count_inside_range(
        bench.BENCH_SEED, 0, 1000, backend="python"
    )
