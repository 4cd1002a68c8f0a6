"""Scaling-study math: speed-up and parallel efficiency from master result files.

A scaling study runs the *same* experiment (same workload, parameters and seed) with k = 1, 2,
... K worker instances and keeps one master result JSON per k (see ``docs/CONTRACT.md``). This
module turns those results into table rows:

* wall time ``T(k)``: the result's ``seconds`` (the master's wall-clock time of the run);
* throughput: work per second (pi: darts/s; matmul and matvec: GFLOP/s; any other workload: its
  progress unit per second, the envelope's ``unit``);
* speed-up ``S(k) = T(1) / T(k)``;
* parallel efficiency ``E(k) = S(k) / k`` (1.0 = perfect scaling);
* busy share ``B(k)``: the workers' compute seconds (``per_job`` seconds) over ``k * T(k)``, the
  share of the wall time the k workers spent computing rather than waiting for the queue, the
  network or the master.

Every k must give the *same answer*: pi the same ``inside`` count (the dart kernel is exact and
chunk-invariant), matmul and matvec the same ``sha256`` of C, any other workload the same
integer result keys. A difference is a correctness failure, :class:`CountMismatchError`.

Number of workers of a result
    ``k`` is taken from the result's ``workers`` key (an integer count; a list or mapping of worker
    ids counts its entries). Only when that key is absent or unusable does the fallback apply: the
    number of distinct ``worker`` ids in ``per_job``. See :func:`workers_of`.

Baseline
    ``T(1)`` is the time of the result with one worker. When the study has no k = 1 run, the
    smallest k0 is the baseline and assumed to scale perfectly, ``S(k) = k0 * T(k0) / T(k)``
    (which is ``T(1) / T(k)`` when k0 = 1); ``baseline_workers`` in the JSON says which.

This module is pure Python (no numpy, no matplotlib) so it is cheap to import and easy to test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "GENERIC_SCALING_KEYS",
    "SCALING_KEYS",
    "CountMismatchError",
    "ScalingError",
    "ScalingRow",
    "ScalingStudy",
    "answer_of",
    "answer_text",
    "build_study",
    "check_counts",
    "experiment_of",
    "markdown_document",
    "markdown_table",
    "rate_of",
    "study_from_json",
    "study_to_json",
    "workers_of",
    "workload_of",
]

#: Keys of a pi result that a scaling study needs.
SCALING_KEYS: tuple[str, ...] = ("darts", "inside", "seconds", "per_job")
#: Keys of any workload's result that a scaling study needs.
GENERIC_SCALING_KEYS: tuple[str, ...] = ("workload", "seconds", "per_job")


class ScalingError(ValueError):
    """The result files do not form a usable scaling study (bad input, exit code 2)."""


class CountMismatchError(RuntimeError):
    """The runs' answers differ between k (pi: ``inside`` counts): a correctness failure (exit
    code 1)."""


@dataclass(frozen=True)
class ScalingRow:
    """One line of the scaling table: the run with ``workers`` worker instances."""

    workers: int
    seconds: float
    darts: int | None
    inside: int | None
    darts_per_second: float | None
    speedup: float
    efficiency: float
    source: str
    run_id: str
    work: int = 0
    work_per_second: float = 0.0
    gflops: float | None = None
    busy: float | None = None


@dataclass(frozen=True)
class ScalingStudy:
    """All rows of a study, sorted by number of workers, plus the shared counts."""

    rows: tuple[ScalingRow, ...]
    darts: int | None
    inside: int | None
    baseline_workers: int
    counts_equal: bool
    workload: str = "pi"
    unit: str = "darts"
    answer: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""


def workers_of(result: Mapping[str, Any]) -> int:
    """Return the number of workers k of one master result.

    The ``workers`` key wins: an ``int`` is the count itself, a list or mapping counts its
    entries. If it is absent (or not one of those, or not positive) the fallback is the number of
    distinct ``worker`` ids in ``per_job``.

    Raises:
        ScalingError: neither source gives a positive number of workers.
    """
    value = result.get("workers")
    if isinstance(value, bool):  # bool is an int subclass; never a worker count
        value = None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list | dict) and len(value) > 0:
        return len(value)
    per_job = result.get("per_job")
    if isinstance(per_job, list):
        ids = {
            str(item["worker"]) for item in per_job if isinstance(item, dict) and "worker" in item
        }
        if ids:
            return len(ids)
    raise ScalingError("cannot tell the number of workers: no 'workers' key and no per_job workers")


def _number(result: Mapping[str, Any], key: str, source: str) -> float:
    """Return ``result[key]`` as a number, or raise :class:`ScalingError` naming the file."""
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScalingError(f"{source}: '{key}' is not a number: {value!r}")
    return float(value)


def workload_of(result: Mapping[str, Any]) -> str:
    """The result's workload (results written before workloads existed are pi's)."""
    return str(result.get("workload", "pi"))


def answer_of(result: Mapping[str, Any], source: str = "result") -> dict[str, Any]:
    """What every k must agree on: pi's ``inside``, matmul's ``sha256`` of C, else the integer
    result keys (e.g. the example's ``primes``)."""
    if workload_of(result) == "pi":
        return {"inside": int(_number(result, "inside", source))}
    if "sha256" in result:
        return {"sha256": str(result["sha256"])}
    keys = result.get("result_keys") or []
    answer = {
        key: result[key]
        for key in keys
        if isinstance(result.get(key), int) and not isinstance(result.get(key), bool)
    }
    if not answer:
        raise ScalingError(f"{source}: no result key to compare between runs")
    return answer


def experiment_of(result: Mapping[str, Any]) -> str:
    """A short description of the experiment, e.g. ``matmul 2048 x 2048 @ 2048 x 2048 float64``."""
    workload = workload_of(result)
    params = result.get("params")
    if workload == "pi":
        return f"pi {int(result.get('darts', 0)):,} darts"
    if isinstance(params, Mapping) and {"m", "k", "n", "dtype"} <= params.keys():
        m, k, n = params["m"], params["k"], params["n"]
        return f"{workload} {m} x {k} @ {k} x {n} {params['dtype']}"
    if isinstance(params, Mapping):
        shown = ", ".join(f"{key}={value}" for key, value in sorted(params.items()))
        return f"{workload} {shown}"
    return workload


def _check_same_experiment(results: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Raise :class:`ScalingError` unless all results ran the same experiment with the same seed
    (pi: the same darts; every workload: the same parameters)."""
    kinds = {workload_of(result) for _, result in results}
    if len(kinds) > 1:
        raise ScalingError(f"not one experiment: workloads differ between files {sorted(kinds)}")
    if kinds == {"pi"}:
        darts = {int(_number(result, "darts", source)) for source, result in results}
        if len(darts) > 1:
            raise ScalingError(
                f"not one experiment: total darts differ between files {sorted(darts)}"
            )
    params = {json.dumps(result.get("params"), sort_keys=True) for _, result in results}
    if kinds != {"pi"} and len(params) > 1:
        raise ScalingError(f"not one experiment: parameters differ between files {sorted(params)}")
    seeds = {str(result["seed"]) for _, result in results if "seed" in result}
    if len(seeds) > 1:
        raise ScalingError(f"not one experiment: seeds differ between files {sorted(seeds)}")


def check_counts(results: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Raise :class:`CountMismatchError` unless every result gave the same answer
    (:func:`answer_of`: pi's ``inside`` count, matmul's ``sha256`` of C, ...)."""
    answers = {source: answer_of(result, source) for source, result in results}
    if len({json.dumps(answer, sort_keys=True) for answer in answers.values()}) > 1:
        keys = sorted({key for answer in answers.values() for key in answer})
        what = "inside counts" if keys == ["inside"] else ", ".join(keys)
        detail = ", ".join(
            f"{source}: {' '.join(str(value) for value in answer.values())}"
            for source, answer in answers.items()
        )
        raise CountMismatchError(f"{what} differ between runs ({detail})")


def _work(result: Mapping[str, Any], source: str) -> int:
    """Units of work of a run: pi's darts, else the sum of ``per_job`` work."""
    if workload_of(result) == "pi":
        return int(_number(result, "darts", source))
    per_job = result.get("per_job") or []
    return sum(int(item.get("work", 0)) for item in per_job if isinstance(item, Mapping))


def _busy(result: Mapping[str, Any], workers: int, seconds: float) -> float | None:
    """The workers' compute seconds over ``workers * seconds`` (None without job times)."""
    per_job = result.get("per_job")
    if not isinstance(per_job, list) or not per_job:
        return None
    total = 0.0
    for item in per_job:
        value = item.get("seconds") if isinstance(item, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        total += float(value)
    return total / (workers * seconds)


def build_study(results: Sequence[tuple[str, Mapping[str, Any]]]) -> ScalingStudy:
    """Compute the scaling rows of ``results``, a sequence of ``(source name, result dict)``.

    Rows are sorted by number of workers; speed-up and efficiency use the baseline described in
    the module docstring.

    Raises:
        ScalingError: no results, two results with the same k, different workloads, darts,
            parameters or seeds, a non-positive wall time (bad input).
        CountMismatchError: the answers differ (correctness failure).
    """
    if not results:
        raise ScalingError("a scaling study needs at least one result file")
    _check_same_experiment(results)
    check_counts(results)

    measured: list[tuple[int, float, str, Mapping[str, Any]]] = []
    seen: dict[int, str] = {}
    for source, result in results:
        k = workers_of(result)
        if k in seen:
            raise ScalingError(f"two results for {k} workers: {seen[k]} and {source}")
        seen[k] = source
        seconds = _number(result, "seconds", source)
        if seconds <= 0:
            raise ScalingError(f"{source}: 'seconds' must be positive, got {seconds}")
        measured.append((k, seconds, source, result))
    measured.sort(key=lambda item: item[0])

    first = measured[0][3]
    pi = workload_of(first) == "pi"
    base_k, base_seconds = measured[0][0], measured[0][1]
    rows: list[ScalingRow] = []
    for k, seconds, source, result in measured:
        work = _work(result, source)
        speedup = base_k * base_seconds / seconds
        gflops = result.get("gflops")
        rows.append(
            ScalingRow(
                workers=k,
                seconds=seconds,
                darts=work if pi else None,
                inside=int(_number(result, "inside", source)) if pi else None,
                darts_per_second=work / seconds if pi else None,
                speedup=speedup,
                efficiency=speedup / k,
                source=source,
                run_id=str(result.get("run_id", "")),
                work=work,
                work_per_second=work / seconds,
                gflops=float(gflops) if isinstance(gflops, int | float) else None,
                busy=_busy(result, k, seconds),
            )
        )
    return ScalingStudy(
        rows=tuple(rows),
        darts=rows[0].darts,
        inside=rows[0].inside,
        baseline_workers=base_k,
        counts_equal=True,
        workload=workload_of(first),
        unit="darts" if pi else str(first.get("unit", "work")),
        answer=answer_of(first),
        experiment=experiment_of(first),
    )


def _si(value: float) -> str:
    """Format a rate like ``12.3 M`` (SI prefix, three significant digits)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:#.3g} {prefix}"
    return f"{value:#.3g}"


def rate_of(study: ScalingStudy, row: ScalingRow) -> tuple[str, float]:
    """The throughput column's label and value: GFLOP/s when the workload reports it (matmul,
    matvec), else its unit per second (pi: darts/s)."""
    if row.gflops is not None:
        return "GFLOP/s", row.gflops
    return f"{study.unit}/s", row.work_per_second


def markdown_table(study: ScalingStudy) -> str:
    """Return the study as a markdown table: workers | seconds | rate | speed-up | efficiency
    (and the workers' busy share when the results have job times and the workload is not pi)."""
    label = rate_of(study, study.rows[0])[0]
    busy = study.workload != "pi" and all(row.busy is not None for row in study.rows)
    head = f"| workers | seconds | {label} | speed-up | efficiency |"
    rule = "|--------:|--------:|--------:|---------:|-----------:|"
    if busy:
        head, rule = head + " busy |", rule + "-----:|"
    lines = [head, rule]
    for row in study.rows:
        rate = rate_of(study, row)[1]
        shown = f"{rate:.3g}" if label == "GFLOP/s" else _si(rate)
        line = (
            f"| {row.workers} | {row.seconds:.3f} | {shown} "
            f"| {row.speedup:.2f} | {row.efficiency * 100:.0f} % |"
        )
        if busy and row.busy is not None:
            line += f" {row.busy * 100:.0f} % |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def answer_text(study: ScalingStudy) -> str:
    """What every run agreed on, for the page and the plot (e.g. ``sha256(C) = 3f2a...``)."""
    if study.workload == "pi" and study.inside is not None:
        return f"inside = {study.inside:,}"
    if "sha256" in study.answer:
        return f"sha256(C) = {str(study.answer['sha256'])[:16]}..."
    return ", ".join(f"{key} = {value:,}" for key, value in study.answer.items())


def markdown_document(study: ScalingStudy, name: str) -> str:
    """Return a short markdown page: a heading, the shared answer and :func:`markdown_table`."""
    if study.workload == "pi" and study.darts is not None and study.inside is not None:
        what = (
            f"{study.darts:,} darts per run; every run counted {study.inside:,} inside "
            "(counts equal)."
        )
    else:
        what = f"{study.experiment}, same seed; every run gave {answer_text(study)} (equal)."
    busy = (
        " Busy = the workers' compute seconds / (k x wall time)." if study.workload != "pi" else ""
    )
    return (
        f"# Scaling study {name}\n\n"
        f"{what} Speed-up is relative to {study.baseline_workers} worker(s).{busy}\n\n"
        + markdown_table(study)
    )


def study_to_json(study: ScalingStudy, name: str) -> str:
    """Return the study as a JSON document: ``rows`` (one object per k) and ``counts_equal``."""
    document = {
        "name": name,
        "workload": study.workload,
        "experiment": study.experiment,
        "unit": study.unit,
        "darts": study.darts,
        "inside": study.inside,
        "answer": study.answer,
        "baseline_workers": study.baseline_workers,
        "counts_equal": study.counts_equal,
        "rows": [asdict(row) for row in study.rows],
    }
    return json.dumps(document, indent=2) + "\n"


def study_from_json(document: Mapping[str, Any]) -> ScalingStudy:
    """A study written by :func:`study_to_json` (to compare studies side by side)."""
    fields = ScalingRow.__dataclass_fields__
    try:
        rows = tuple(
            ScalingRow(**{key: value for key, value in row.items() if key in fields})
            for row in document["rows"]
        )
        return ScalingStudy(
            rows=rows,
            darts=document.get("darts"),
            inside=document.get("inside"),
            baseline_workers=int(document["baseline_workers"]),
            counts_equal=bool(document["counts_equal"]),
            workload=str(document.get("workload", "pi")),
            unit=str(document.get("unit", "darts")),
            answer=dict(document.get("answer") or {}),
            experiment=str(document.get("experiment", "")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ScalingError(
            f"not a scaling study written by pi-job report --scaling: {error}"
        ) from None
