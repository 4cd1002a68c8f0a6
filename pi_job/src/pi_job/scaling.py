"""Scaling-study math: speed-up and parallel efficiency from master result files.

A scaling study runs the *same* experiment (same total darts, same seed) with k = 1, 2, ... K
worker instances and keeps one master result JSON per k (see ``docs/CONTRACT.md``). This module
turns those results into table rows:

* wall time ``T(k)``: the result's ``seconds`` (the master's wall-clock time of the run);
* throughput: ``darts / T(k)`` in darts per second;
* speed-up ``S(k) = T(1) / T(k)``;
* parallel efficiency ``E(k) = S(k) / k`` (1.0 = perfect scaling).

Because the dart kernel is exact and chunk-invariant, every k must report the *same* ``inside``
count: a difference is a correctness failure, reported as :class:`CountMismatchError`.

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
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "SCALING_KEYS",
    "CountMismatchError",
    "ScalingError",
    "ScalingRow",
    "ScalingStudy",
    "build_study",
    "check_counts",
    "markdown_document",
    "markdown_table",
    "study_to_json",
    "workers_of",
]

#: Keys of a master result that a scaling study needs.
SCALING_KEYS: tuple[str, ...] = ("darts", "inside", "seconds", "per_job")


class ScalingError(ValueError):
    """The result files do not form a usable scaling study (bad input, exit code 2)."""


class CountMismatchError(RuntimeError):
    """The ``inside`` counts differ between k: a correctness failure (exit code 1)."""


@dataclass(frozen=True)
class ScalingRow:
    """One line of the scaling table: the run with ``workers`` worker instances."""

    workers: int
    seconds: float
    darts: int
    inside: int
    darts_per_second: float
    speedup: float
    efficiency: float
    source: str
    run_id: str


@dataclass(frozen=True)
class ScalingStudy:
    """All rows of a study, sorted by number of workers, plus the shared counts."""

    rows: tuple[ScalingRow, ...]
    darts: int
    inside: int
    baseline_workers: int
    counts_equal: bool


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


def _check_same_experiment(results: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Raise :class:`ScalingError` unless all results threw the same darts with the same seed."""
    darts = {int(_number(result, "darts", source)) for source, result in results}
    if len(darts) > 1:
        raise ScalingError(f"not one experiment: total darts differ between files {sorted(darts)}")
    seeds = {str(result["seed"]) for _, result in results if "seed" in result}
    if len(seeds) > 1:
        raise ScalingError(f"not one experiment: seeds differ between files {sorted(seeds)}")


def check_counts(results: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Raise :class:`CountMismatchError` unless every result has the same ``inside`` count."""
    counts = {source: int(_number(result, "inside", source)) for source, result in results}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{source}: {inside}" for source, inside in counts.items())
        raise CountMismatchError(f"inside counts differ between runs ({detail})")


def build_study(results: Sequence[tuple[str, Mapping[str, Any]]]) -> ScalingStudy:
    """Compute the scaling rows of ``results``, a sequence of ``(source name, result dict)``.

    Rows are sorted by number of workers; speed-up and efficiency use the baseline described in
    the module docstring.

    Raises:
        ScalingError: no results, two results with the same k, different darts or seeds,
            a non-positive wall time (bad input).
        CountMismatchError: the ``inside`` counts differ (correctness failure).
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

    base_k, base_seconds = measured[0][0], measured[0][1]
    rows: list[ScalingRow] = []
    for k, seconds, source, result in measured:
        darts = int(_number(result, "darts", source))
        speedup = base_k * base_seconds / seconds
        rows.append(
            ScalingRow(
                workers=k,
                seconds=seconds,
                darts=darts,
                inside=int(_number(result, "inside", source)),
                darts_per_second=darts / seconds,
                speedup=speedup,
                efficiency=speedup / k,
                source=source,
                run_id=str(result.get("run_id", "")),
            )
        )
    return ScalingStudy(
        rows=tuple(rows),
        darts=rows[0].darts,
        inside=rows[0].inside,
        baseline_workers=base_k,
        counts_equal=True,
    )


def _si(value: float) -> str:
    """Format a rate like ``12.3 M`` (SI prefix, three significant digits)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:#.3g} {prefix}"
    return f"{value:#.3g}"


def markdown_table(study: ScalingStudy) -> str:
    """Return the study as a markdown table: workers | seconds | darts/s | speed-up | efficiency."""
    lines = [
        "| workers | seconds | darts/s | speed-up | efficiency |",
        "|--------:|--------:|--------:|---------:|-----------:|",
    ]
    for row in study.rows:
        lines.append(
            f"| {row.workers} | {row.seconds:.3f} | {_si(row.darts_per_second)} "
            f"| {row.speedup:.2f} | {row.efficiency * 100:.0f} % |"
        )
    return "\n".join(lines) + "\n"


def markdown_document(study: ScalingStudy, name: str) -> str:
    """Return a short markdown page: a heading, the shared counts and :func:`markdown_table`."""
    return (
        f"# Scaling study {name}\n\n"
        f"{study.darts:,} darts per run; every run counted {study.inside:,} inside "
        f"(counts equal). Speed-up is relative to {study.baseline_workers} worker(s).\n\n"
        + markdown_table(study)
    )


def study_to_json(study: ScalingStudy, name: str) -> str:
    """Return the study as a JSON document: ``rows`` (one object per k) and ``counts_equal``."""
    document = {
        "name": name,
        "darts": study.darts,
        "inside": study.inside,
        "baseline_workers": study.baseline_workers,
        "counts_equal": study.counts_equal,
        "rows": [asdict(row) for row in study.rows],
    }
    return json.dumps(document, indent=2) + "\n"
