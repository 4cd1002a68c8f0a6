"""Tests of the scaling study: speed-up/efficiency math, outputs and the count check."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pi_job import plots, scaling

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DARTS = 120_000_000
JOBS = 24
#: Wall times of a plausible study on 1..4 workers (sub-linear: queue and start-up overhead).
TIMES = {1: 40.0, 2: 20.5, 3: 14.2, 4: 11.0}


def job_counts(seed: int = 99) -> list[tuple[int, int]]:
    """(darts, inside) per job: identical for every k, as the exact kernel guarantees."""
    rng = np.random.default_rng(seed)
    darts = DARTS // JOBS
    return [(darts, int(rng.binomial(darts, math.pi / 4))) for _ in range(JOBS)]


def make_result(k: int, seconds: float, workers_key: Any = "count") -> dict[str, Any]:
    """Return a master result of the study run with ``k`` worker instances on two hosts."""
    workers = [f"node{1 + i % 2}:pi-worker@{1 + i // 2}" for i in range(k)]
    per_job: list[dict[str, Any]] = [
        {
            "job": job,
            "darts": darts,
            "inside": inside,
            "host": workers[job % k].split(":")[0],
            "worker": workers[job % k],
            "seconds": seconds * k / JOBS,
        }
        for job, (darts, inside) in enumerate(job_counts())
    ]
    per_host: dict[str, int] = {}
    for item in per_job:
        per_host[item["host"]] = per_host.get(item["host"], 0) + item["darts"]
    inside = sum(item["inside"] for item in per_job)
    result: dict[str, Any] = {
        "run_id": f"scale-k{k}",
        "seed": 2026,
        "darts": DARTS,
        "inside": inside,
        "pi": 4 * inside / DARTS,
        "seconds": seconds,
        "darts_per_second": DARTS / seconds,
        "per_host": per_host,
        "per_job": per_job,
        "jobs": JOBS,
    }
    if workers_key == "count":
        result["workers"] = k
    elif workers_key is not None:
        result["workers"] = workers_key
    return result


def write_study(directory: Path, times: dict[int, float] = TIMES) -> list[Path]:
    paths = []
    for k, seconds in times.items():
        path = directory / f"result_k{k}.json"
        path.write_text(json.dumps(make_result(k, seconds)), encoding="utf-8")
        paths.append(path)
    return paths


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pi-job report")
    plots.configure_parser(parser)
    return plots.command(parser.parse_args(list(argv)))


def pairs(*results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"r{index}.json", result) for index, result in enumerate(results)]


# ----------------------------------------------------------------------------------------- math


def test_speedup_and_efficiency() -> None:
    study = scaling.build_study(pairs(*(make_result(k, t) for k, t in TIMES.items())))
    assert [row.workers for row in study.rows] == [1, 2, 3, 4]
    for row in study.rows:
        assert row.speedup == pytest.approx(TIMES[1] / TIMES[row.workers])
        assert row.efficiency == pytest.approx(TIMES[1] / TIMES[row.workers] / row.workers)
        assert row.darts_per_second == pytest.approx(DARTS / TIMES[row.workers])
    assert study.rows[0].speedup == 1.0 and study.rows[0].efficiency == 1.0
    assert study.rows[1].speedup == pytest.approx(40.0 / 20.5)
    assert study.rows[3].efficiency == pytest.approx(40.0 / 11.0 / 4)
    assert study.counts_equal and study.baseline_workers == 1
    assert study.inside == sum(inside for _, inside in job_counts())


def test_rows_are_sorted_by_workers_whatever_the_file_order() -> None:
    results = [make_result(k, TIMES[k]) for k in (3, 1, 4, 2)]
    study = scaling.build_study(pairs(*results))
    assert [row.workers for row in study.rows] == [1, 2, 3, 4]
    assert [row.run_id for row in study.rows] == ["scale-k1", "scale-k2", "scale-k3", "scale-k4"]


def test_baseline_without_k1_assumes_perfect_scaling_at_smallest_k() -> None:
    study = scaling.build_study(pairs(make_result(2, 20.0), make_result(4, 12.5)))
    assert study.baseline_workers == 2
    assert [row.speedup for row in study.rows] == pytest.approx([2.0, 2 * 20.0 / 12.5])
    assert [row.efficiency for row in study.rows] == pytest.approx([1.0, 0.8])


@pytest.mark.parametrize(
    ("workers_key", "expected"),
    [
        ("count", 3),  # the result's own integer count wins
        (["a", "b", "c", "d", "e"], 5),  # a list of worker ids counts its entries
        ({"a": 1, "b": 2}, 2),  # so does a mapping
        (None, 3),  # fallback: distinct worker ids in per_job
        (0, 3),  # unusable count: fallback
    ],
)
def test_workers_of(workers_key: Any, expected: int) -> None:
    assert scaling.workers_of(make_result(3, 10.0, workers_key)) == expected


def test_workers_key_wins_over_per_job() -> None:
    result = make_result(3, 10.0)
    result["workers"] = 8  # e.g. 8 instances running, only 3 of them got jobs
    assert scaling.workers_of(result) == 8


def test_count_mismatch_is_a_correctness_failure() -> None:
    bad = make_result(2, 20.5)
    bad["per_job"][5]["inside"] += 1
    bad["inside"] += 1
    with pytest.raises(scaling.CountMismatchError, match="inside counts differ"):
        scaling.build_study(pairs(make_result(1, 40.0), bad))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"darts": DARTS * 2}, "total darts differ"),
        ({"seed": 7}, "seeds differ"),
        ({"workers": 1}, "two results for 1 workers"),
        ({"seconds": 0}, "must be positive"),
        ({"seconds": "fast"}, "not a number"),
    ],
)
def test_not_one_study_is_bad_input(change: dict[str, Any], message: str) -> None:
    other = make_result(2, 20.5)
    other.update(change)
    with pytest.raises(scaling.ScalingError, match=message):
        scaling.build_study(pairs(make_result(1, 40.0), other))


def test_markdown_table_rows() -> None:
    study = scaling.build_study(pairs(*(make_result(k, t) for k, t in TIMES.items())))
    table = scaling.markdown_table(study).splitlines()
    assert table[0] == "| workers | seconds | darts/s | speed-up | efficiency |"
    assert table[1].startswith("|--")
    assert table[2:] == [
        "| 1 | 40.000 | 3.00 M | 1.00 | 100 % |",
        "| 2 | 20.500 | 5.85 M | 1.95 | 98 % |",
        "| 3 | 14.200 | 8.45 M | 2.82 | 94 % |",
        "| 4 | 11.000 | 10.9 M | 3.64 | 91 % |",
    ]


# ------------------------------------------------------------------------------------------ CLI


def test_cli_writes_json_markdown_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import matplotlib.image

    paths = write_study(tmp_path)
    out_dir = tmp_path / "study"
    code = run_cli("--scaling", *map(str, paths), "--out-dir", str(out_dir), "--name", "pi-scale")
    assert code == 0
    expected = [out_dir / "pi-scale.json", out_dir / "pi-scale.md", out_dir / "pi-scale.png"]
    assert capsys.readouterr().out.splitlines() == list(map(str, expected))

    document = json.loads(expected[0].read_text(encoding="utf-8"))
    assert document["counts_equal"] is True
    assert [row["workers"] for row in document["rows"]] == [1, 2, 3, 4]
    assert document["rows"][2]["speedup"] == pytest.approx(40.0 / 14.2)
    assert document["rows"][2]["efficiency"] == pytest.approx(40.0 / 14.2 / 3)

    markdown = expected[1].read_text(encoding="utf-8")
    assert "| workers | seconds | darts/s | speed-up | efficiency |" in markdown
    assert "| 4 | 11.000 | 10.9 M | 3.64 | 91 % |" in markdown

    data = expected[2].read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000
    image = matplotlib.image.imread(expected[2])
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] > 300


def test_cli_default_name_and_directory(tmp_path: Path) -> None:
    assert run_cli("--scaling", *map(str, write_study(tmp_path, {1: 3.0, 2: 1.6}))) == 0
    assert {p.name for p in tmp_path.glob("scaling.*")} == {
        "scaling.json",
        "scaling.md",
        "scaling.png",
    }


def test_cli_count_mismatch_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_study(tmp_path, {1: 4.0, 2: 2.1})
    bad = json.loads(paths[1].read_text(encoding="utf-8"))
    bad["inside"] -= 3
    paths[1].write_text(json.dumps(bad), encoding="utf-8")
    assert run_cli("--scaling", *map(str, paths), "--out-dir", str(tmp_path / "out")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "correctness failure" in captured.err and "inside counts differ" in captured.err
    assert not (tmp_path / "out").exists()


def test_cli_bad_scaling_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_study(tmp_path, {1: 4.0})
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"darts": DARTS, "inside": 1}), encoding="utf-8")
    assert run_cli("--scaling", str(paths[0]), str(broken)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert "missing required keys: seconds, per_job" in err[0]


# ------------------------------------------------------------------------- any workload (matmul)

MATMUL_TIMES = {1: 8.0, 2: 4.4, 4: 2.6}


def make_matmul_result(k: int, seconds: float, sha: str = "ab" * 32) -> dict[str, Any]:
    """A matmul summary of a 1024 x 1024 product in 16 panels, run on ``k`` workers."""
    per_job = [
        {
            "job": job,
            "rows": [job * 64, job * 64 + 64],
            "work": 64,
            "host": f"node{1 + job % 2}",
            "worker": f"node{1 + job % 2}:pi-worker@{1 + job % k}",
            "seconds": 0.5 * seconds * k / 16,
        }
        for job in range(16)
    ]
    flops = 2.0 * 1024**3
    return {
        "run_id": f"scale-mm-k{k}",
        "workload": "matmul",
        "seed": 7,
        "jobs": 16,
        "seconds": seconds,
        "workers": k,
        "per_host": {"node1": 512, "node2": 512},
        "per_job": per_job,
        "params": {"dtype": "float64", "m": 1024, "k": 1024, "n": 1024, "rows": 64},
        "shape": [1024, 1024],
        "k": 1024,
        "gflops": flops / seconds / 1e9,
        "sha256": sha,
        "unit": "rows",
        "rows_per_second": 1024 / seconds,
        "result_keys": ["dtype", "gflops", "k", "sha256", "shape"],
    }


def test_any_workload_study_compares_answers_and_reports_gflops() -> None:
    study = scaling.build_study(pairs(*(make_matmul_result(k, t) for k, t in MATMUL_TIMES.items())))
    assert study.workload == "matmul" and study.unit == "rows"
    assert study.answer == {"sha256": "ab" * 32}
    assert study.experiment == "matmul 1024 x 1024 @ 1024 x 1024 float64"
    assert study.darts is None and study.inside is None
    assert [row.speedup for row in study.rows] == pytest.approx([1.0, 8.0 / 4.4, 8.0 / 2.6])
    assert [row.busy for row in study.rows] == pytest.approx([0.5, 0.5, 0.5])
    assert study.rows[2].gflops == pytest.approx(2.0 * 1024**3 / 2.6 / 1e9)
    table = scaling.markdown_table(study).splitlines()
    assert table[0] == "| workers | seconds | GFLOP/s | speed-up | efficiency | busy |"
    assert table[2] == "| 1 | 8.000 | 0.268 | 1.00 | 100 % | 50 % |"
    page = scaling.markdown_document(study, "mm")
    assert "matmul 1024 x 1024 @ 1024 x 1024 float64, same seed" in page
    again = scaling.study_from_json(json.loads(scaling.study_to_json(study, "mm")))
    assert again == study


def test_any_workload_different_products_are_a_correctness_failure() -> None:
    results = pairs(make_matmul_result(1, 8.0), make_matmul_result(2, 4.4, sha="cd" * 32))
    with pytest.raises(scaling.CountMismatchError, match="sha256 differ between runs"):
        scaling.build_study(results)


def test_any_workload_different_parameters_are_not_one_study() -> None:
    other = make_matmul_result(2, 4.4)
    other["params"] = {**other["params"], "rows": 32}
    with pytest.raises(scaling.ScalingError, match="parameters differ"):
        scaling.build_study(pairs(make_matmul_result(1, 8.0), other))
    with pytest.raises(scaling.ScalingError, match="workloads differ"):
        scaling.build_study(pairs(make_matmul_result(1, 8.0), make_result(2, 20.5)))


def test_integer_result_keys_are_the_answer_of_other_workloads() -> None:
    result = {
        "workload": "primes",
        "below": 10**7,
        "primes": 664_579,
        "result_keys": ["below", "primes"],
    }
    assert scaling.answer_of(result) == {"below": 10**7, "primes": 664_579}
    with pytest.raises(scaling.ScalingError, match="no result key"):
        scaling.answer_of({"workload": "x", "result_keys": ["ratio"], "ratio": 0.5})


def test_cli_compare_draws_studies_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pi").mkdir()
    pi_paths = write_study(tmp_path / "pi")
    mm_dir = tmp_path / "mm"
    mm_dir.mkdir()
    mm_paths = []
    for k, seconds in MATMUL_TIMES.items():
        path = mm_dir / f"k{k}.json"
        path.write_text(json.dumps(make_matmul_result(k, seconds)), encoding="utf-8")
        mm_paths.append(path)
    assert (
        run_cli("--scaling", *map(str, pi_paths), "--name", "pi", "--out-dir", str(tmp_path)) == 0
    )
    assert (
        run_cli("--scaling", *map(str, mm_paths), "--name", "mm", "--out-dir", str(tmp_path)) == 0
    )
    capsys.readouterr()
    studies = [str(tmp_path / "pi.json"), str(tmp_path / "mm.json")]
    assert run_cli("--compare", *studies, "--name", "both", "--out-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "both.png")]
    data = (tmp_path / "both.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000
    assert run_cli("--compare", str(pi_paths[0])) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "missing required keys: rows" in err[0], err
