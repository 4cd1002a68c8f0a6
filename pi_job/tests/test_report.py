"""Tests of ``pi-job report`` for one master result: math, PNG output and input errors."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_job import plots
from pi_job.workloads.pi.stats import Z95

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(
    darts: int = 200_000_000,
    jobs: int = 20,
    hosts: tuple[str, ...] = ("node1", "node2", "node3"),
    workers_per_host: int = 2,
    seconds: float = 6.0,
    seed: int = 12345,
    run_id: str = "test-run",
) -> dict[str, Any]:
    """Return a plausible master result: binomial inside counts, jobs dealt round-robin."""
    rng = np.random.default_rng(seed)
    workers = [f"{host}:pi-worker@{i}" for host in hosts for i in range(1, workers_per_host + 1)]
    per_job: list[dict[str, Any]] = []
    per_host: dict[str, int] = {}
    for job in range(jobs):
        job_darts = darts // jobs + (1 if job < darts % jobs else 0)
        worker = workers[job % len(workers)]
        host = worker.split(":")[0]
        per_job.append(
            {
                "job": job,
                "darts": job_darts,
                "inside": int(rng.binomial(job_darts, math.pi / 4)),
                "host": host,
                "worker": worker,
                "seconds": seconds * len(workers) / jobs,
            }
        )
        per_host[host] = per_host.get(host, 0) + job_darts
    inside = sum(item["inside"] for item in per_job)
    estimate = 4 * inside / darts
    std_error = 4 * math.sqrt(estimate / 4 * (1 - estimate / 4) / darts)
    return {
        "run_id": run_id,
        "seed": seed,
        "darts": darts,
        "inside": inside,
        "pi": estimate,
        "abs_error": abs(estimate - math.pi),
        "std_error": std_error,
        "ci95": [estimate - 1.96 * std_error, estimate + 1.96 * std_error],
        "jobs": jobs,
        "duplicates": 0,
        "redeliveries": 0,
        "seconds": seconds,
        "darts_per_second": darts / seconds,
        "per_host": per_host,
        "per_job": per_job,
        "job_darts": darts // jobs,
        "workers": len(workers),
        "started": "2026-11-27T06:00:00Z",
        "finished": "2026-11-27T06:00:06Z",
        "version": "0.1.0",
    }


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pi-job report")
    plots.configure_parser(parser)
    return plots.command(parser.parse_args(list(argv)))


def assert_real_png(path: Path, min_bytes: int = 5_000) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.shape[2] in (3, 4)
    assert float(image[..., :3].std()) > 0.01, "the image is a blank canvas"


# ----------------------------------------------------------------------------------------- math


def test_convergence_series_is_cumulative_in_job_order() -> None:
    per_job = [
        {"job": 1, "darts": 100, "inside": 80},
        {"job": 0, "darts": 100, "inside": 70},
        {"job": 2, "darts": 200, "inside": 160},
    ]
    darts, estimates = plots.convergence_series(per_job)
    assert darts == [100, 200, 400]
    assert estimates == pytest.approx([4 * 70 / 100, 4 * 150 / 200, 4 * 310 / 400])


def test_convergence_series_skips_leading_empty_jobs() -> None:
    per_job = [{"job": 0, "darts": 0, "inside": 0}, {"job": 1, "darts": 10, "inside": 8}]
    assert plots.convergence_series(per_job) == ([10], [3.2])


def test_band_half_width_narrows_as_inverse_sqrt() -> None:
    p = math.pi / 4
    assert plots.band_half_width(1) == pytest.approx(Z95 * 4 * math.sqrt(p * (1 - p)))
    ratio = plots.band_half_width(10_000) / plots.band_half_width(100)
    assert ratio == pytest.approx(0.1)


def test_final_estimate_lies_in_band_for_plausible_run() -> None:
    result = make_result()
    darts, estimates = plots.convergence_series(result["per_job"])
    assert darts[-1] == result["darts"]
    assert estimates[-1] == pytest.approx(result["pi"])
    assert abs(estimates[-1] - math.pi) < plots.band_half_width(darts[-1]) * 2


def test_darts_per_worker_sums_and_keeps_host() -> None:
    per_job = [
        {"job": 0, "darts": 5, "host": "b", "worker": "b:1"},
        {"job": 1, "darts": 7, "host": "a", "worker": "a:1"},
        {"job": 2, "darts": 3, "host": "b", "worker": "b:1"},
    ]
    assert plots.darts_per_worker(per_job) == {"a:1": ("a", 7), "b:1": ("b", 8)}


# ------------------------------------------------------------------------------------- plotting


def test_render_report_writes_two_real_pngs(tmp_path: Path) -> None:
    source = write_json(tmp_path / "run-42.json", make_result(run_id="run-42"))
    out_dir = tmp_path / "plots"
    written = plots.render_report(source, out_dir)
    assert written == [out_dir / "run-42.convergence.png", out_dir / "run-42.hosts.png"]
    for path in written:
        assert_real_png(path)


def test_command_prints_paths_and_defaults_to_result_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_json(tmp_path / "result.json", make_result(jobs=1, hosts=("solo",)))
    assert run_cli(str(source)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(tmp_path / "result.convergence.png"), str(tmp_path / "result.hosts.png")]
    for line in out:
        assert_real_png(Path(line))


def test_many_workers_render(tmp_path: Path) -> None:
    hosts = tuple(f"worker-node-{i:02d}" for i in range(8))
    result = make_result(jobs=96, hosts=hosts, workers_per_host=4)
    written = plots.render_report(write_json(tmp_path / "big.json", result), tmp_path)
    for path in written:
        assert_real_png(path)


def test_plots_use_the_headless_agg_backend(tmp_path: Path) -> None:
    import matplotlib

    plots.plot_hosts(make_result(jobs=3), tmp_path / "h.png")
    assert matplotlib.get_backend().lower() == "agg"


def test_import_does_not_load_matplotlib_or_numpy() -> None:
    code = "import sys, pi_job.plots; print('matplotlib' in sys.modules, 'numpy' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------- bad input


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pi-job report: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(str(tmp_path / "nope.json")) == 2
    assert_one_line_error(capsys, "nope.json", "no such file")
    assert list(tmp_path.iterdir()) == []


def test_invalid_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "broken.json"
    source.write_text('{"run_id": "x",\n "darts": ', encoding="utf-8")
    assert run_cli(str(source)) == 2
    assert_one_line_error(capsys, "broken.json", "invalid JSON")


def test_json_that_is_not_an_object_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(str(write_json(tmp_path / "list.json", [1, 2, 3]))) == 2
    assert_one_line_error(capsys, "list.json", "JSON object")


def test_missing_keys_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = make_result()
    del result["per_job"], result["pi"]
    source = write_json(tmp_path / "partial.json", result)
    assert run_cli(str(source), "--out-dir", str(tmp_path / "out")) == 2
    assert_one_line_error(capsys, "missing required keys", "pi", "per_job")
    assert not (tmp_path / "out").exists()


def test_job_record_missing_keys_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = make_result(jobs=4)
    del result["per_job"][2]["worker"]
    assert run_cli(str(write_json(tmp_path / "r.json", result))) == 2
    assert_one_line_error(capsys, "per_job[2]", "worker")


def test_empty_per_job_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = make_result(jobs=4)
    result["per_job"] = []
    assert run_cli(str(write_json(tmp_path / "r.json", result))) == 2
    assert_one_line_error(capsys, "per_job", "non-empty")


def test_name_without_scaling_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_json(tmp_path / "r.json", make_result(jobs=2))
    assert run_cli(str(source), "--name", "x") == 2
    assert_one_line_error(capsys, "--scaling")
