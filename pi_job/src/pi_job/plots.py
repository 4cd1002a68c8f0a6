"""``pi-job report``: plots from master result files, and the scaling study.

Single run (``pi-job report RESULT.json [--out-dir DIR]``) writes, next to the result file or in
``DIR``:

* ``<stem>.convergence.png``: the running estimate of pi against the cumulative number of darts
  (``per_job`` in job order), inside the 95 % band ``pi +- 1.96 * 4 * sqrt(p (1 - p) / N)`` with
  ``p = pi / 4`` that narrows as ``1 / sqrt(N)``; a lower panel shows the absolute error on
  log-log axes against the same ``1 / sqrt(N)`` line.
* ``<stem>.hosts.png``: darts per host (from ``per_host``) and per worker (from ``per_job``).

Scaling study (``pi-job report --scaling R1.json R2.json ... [--out-dir DIR] [--name NAME]``)
writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` (speed-up against workers with the ideal line,
and parallel efficiency) for any workload; the math and the rule for the number of workers of a
result file (its ``workers`` key, else the distinct ``worker`` ids in ``per_job``) are in
:mod:`pi_job.scaling`.

Side by side (``pi-job report --compare S1.json S2.json ... [--name NAME]``, the ``NAME.json``
files of several studies) writes ``NAME.png`` with every study's speed-up and efficiency.

Exit codes: 0 success; 1 runtime failure (``inside`` counts differ between the runs of a scaling
study, matplotlib missing, output not writable); 2 bad input (missing file, invalid JSON, missing
keys), reported as one line on stderr.

matplotlib (and numpy) are imported only inside the plotting functions, with the headless ``Agg``
backend selected before ``pyplot`` is imported, so ``import pi_job.plots`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pi_job.scaling import (
    GENERIC_SCALING_KEYS,
    SCALING_KEYS,
    CountMismatchError,
    ScalingError,
    ScalingStudy,
    answer_text,
    build_study,
    markdown_document,
    study_from_json,
    study_to_json,
    workload_of,
)
from pi_job.workloads.pi.stats import P_INSIDE, half_width_95

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "JOB_KEYS",
    "REQUIRED_KEYS",
    "ReportInputError",
    "band_half_width",
    "command",
    "configure_parser",
    "convergence_series",
    "darts_per_worker",
    "load_result",
    "plot_compare",
    "plot_convergence",
    "plot_hosts",
    "plot_scaling",
    "render_compare",
    "render_report",
    "render_scaling",
]

#: Keys a master result must have for ``pi-job report``.
REQUIRED_KEYS: tuple[str, ...] = ("run_id", "darts", "inside", "pi", "per_host", "per_job")
#: Keys every ``per_job`` entry must have.
JOB_KEYS: tuple[str, ...] = ("job", "darts", "inside", "host", "worker", "seconds")
#: Keys every ``per_job`` entry of any workload has.
GENERIC_JOB_KEYS: tuple[str, ...] = ("job", "host", "worker", "seconds", "work")

DPI = 120
PROG = "pi-job report"


class ReportInputError(ValueError):
    """A result file is missing, not JSON, or lacks keys (exit code 2)."""


# --------------------------------------------------------------------------------------- input


def _missing(mapping: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """Return the keys of ``keys`` that ``mapping`` does not have, in order."""
    return [key for key in keys if key not in mapping]


def _check_per_job(per_job: Any, source: str, keys: Sequence[str] = JOB_KEYS) -> None:
    """Raise :class:`ReportInputError` unless ``per_job`` is a non-empty list of job records."""
    if not isinstance(per_job, list) or not per_job:
        raise ReportInputError(f"{source}: 'per_job' must be a non-empty list")
    for index, item in enumerate(per_job):
        if not isinstance(item, dict):
            raise ReportInputError(f"{source}: per_job[{index}] is not an object")
        missing = _missing(item, keys)
        if missing:
            raise ReportInputError(
                f"{source}: per_job[{index}] is missing keys: {', '.join(missing)}"
            )


def load_result(path: Path, required: Sequence[str] = REQUIRED_KEYS) -> dict[str, Any]:
    """Read one master result JSON and check that it has the ``required`` keys.

    ``per_job`` (when required) must also be a non-empty list whose entries have
    :data:`JOB_KEYS`, and ``per_host`` an object.

    Raises:
        ReportInputError: the file is missing or unreadable, is not valid JSON, is not a JSON
            object, or lacks keys (the message lists which).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ReportInputError(f"{path}: cannot read: {error}") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportInputError(f"{path}: invalid JSON: {error}") from None
    if not isinstance(result, dict):
        raise ReportInputError(f"{path}: not a master result (expected a JSON object)")
    missing = _missing(result, required)
    if missing:
        raise ReportInputError(f"{path}: missing required keys: {', '.join(missing)}")
    if "per_job" in required:
        pi = result.get("workload", "pi") == "pi"
        _check_per_job(result["per_job"], str(path), JOB_KEYS if pi else GENERIC_JOB_KEYS)
    if "per_host" in required and not isinstance(result["per_host"], dict):
        raise ReportInputError(f"{path}: 'per_host' must be an object host -> darts")
    return result


# ----------------------------------------------------------------------------------------- math


def _jobs_in_order(per_job: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return the job records sorted by job index (the contract already promises job order)."""
    return sorted(per_job, key=lambda item: int(item["job"]))


def convergence_series(per_job: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
    """Return ``(N, estimate)``: cumulative darts and ``4 * cum_inside / cum_darts`` per job.

    Jobs are taken in job order; leading jobs with zero darts (no estimate yet) are skipped.
    """
    darts_so_far = 0
    inside_so_far = 0
    cumulative: list[int] = []
    estimates: list[float] = []
    for item in _jobs_in_order(per_job):
        darts_so_far += int(item["darts"])
        inside_so_far += int(item["inside"])
        if darts_so_far > 0:
            cumulative.append(darts_so_far)
            estimates.append(4.0 * inside_so_far / darts_so_far)
    return cumulative, estimates


def band_half_width(darts: float) -> float:
    """Half-width of the 95 % band of the estimate after ``darts`` darts.

    ``1.96 * 4 * sqrt(p (1 - p) / N)`` with the true ``p = pi / 4``: it shrinks as ``1/sqrt(N)``.
    """
    return half_width_95(P_INSIDE, darts)


def darts_per_worker(
    per_job: Sequence[Mapping[str, Any]], key: str = "darts"
) -> dict[str, tuple[str, int]]:
    """Return ``worker id -> (host, work)`` summed over ``per_job`` (``key``: darts for pi, work
    for every workload), sorted by host then worker."""
    totals: dict[str, tuple[str, int]] = {}
    for item in per_job:
        worker = str(item["worker"])
        host, darts = totals.get(worker, (str(item["host"]), 0))
        totals[worker] = (host, darts + int(item[key]))
    return dict(sorted(totals.items(), key=lambda entry: (entry[1][0], entry[0])))


# ------------------------------------------------------------------------------------- plotting


def _plural(count: int, noun: str) -> str:
    """Return ``"1 job"`` or ``"3 jobs"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _use_agg() -> None:
    """Select the headless Agg backend; call before importing ``matplotlib.pyplot``."""
    import matplotlib

    matplotlib.use("Agg")


def _eng_axis(axis_owner: Axes, axis: str = "y") -> None:
    """Label ``axis`` of ``axis_owner`` with SI prefixes (``250M``) instead of ``2.5e8``."""
    from matplotlib.ticker import EngFormatter

    formatter = EngFormatter(sep="")
    if axis == "y":
        axis_owner.yaxis.set_major_formatter(formatter)
    else:
        axis_owner.xaxis.set_major_formatter(formatter)


def _category_ticks(axes: Axes, names: Sequence[str], crowded: int) -> None:
    """Label bars ``0..len(names)-1`` with ``names``, slanted and smaller when there are many."""
    if len(names) > 64:  # unreadable anyway: count them instead
        axes.set_xticks([])
        axes.set_xlabel(f"{axes.get_xlabel()} ({len(names)}, left to right)")
        return
    slanted = len(names) > crowded or max(map(len, names), default=0) * len(names) > 60
    axes.set_xticks(
        range(len(names)),
        list(names),
        rotation=35 if slanted else 0,
        ha="right" if slanted else "center",
        rotation_mode="anchor",
        fontsize=10 if len(names) <= 8 else 8 if len(names) <= 24 else 6,
    )


def plot_convergence(result: Mapping[str, Any], path: Path) -> Path:
    """Write the convergence plot of one master result to ``path`` and return ``path``.

    Upper panel: running estimate against cumulative darts (log x), the true pi, and the 95 %
    band around pi. Lower panel: ``|estimate - pi|`` on log-log axes with the band half-width.
    """
    _use_agg()
    import matplotlib.pyplot as plt
    import numpy as np

    darts, estimates = convergence_series(result["per_job"])
    low = darts[0] if len(darts) > 1 else max(darts[0] / 100.0, 1.0)
    grid = np.geomspace(low, darts[-1], 200)
    half = np.array([band_half_width(float(n)) for n in grid])

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 7.5), sharex=True, height_ratios=(3, 2), layout="constrained"
    )
    top.fill_between(
        grid,
        math.pi - half,
        math.pi + half,
        color="tab:blue",
        alpha=0.18,
        label=r"95 % band: $\pi \pm 1.96 \cdot 4\sqrt{p(1-p)/N}$",
    )
    top.plot(grid, math.pi + half, color="tab:blue", linewidth=0.8)
    top.plot(grid, math.pi - half, color="tab:blue", linewidth=0.8)
    top.axhline(
        math.pi, color="black", linestyle="--", linewidth=1.2, label=rf"true $\pi$ = {math.pi:.6f}"
    )
    top.plot(
        darts,
        estimates,
        color="tab:red",
        marker="o",
        markersize=3,
        linewidth=1.5,
        label="running estimate 4 · inside / N",
    )
    top.set_xscale("log")
    top.ticklabel_format(axis="y", useOffset=False, style="plain")
    top.set_ylabel(r"estimate of $\pi$")
    top.legend(loc="upper right", fontsize=10)
    top.grid(True, which="both", alpha=0.3)

    errors = np.maximum(np.abs(np.asarray(estimates) - math.pi), 1e-12)
    bottom.plot(grid, half, color="tab:blue", label=r"95 % half-width $\propto 1/\sqrt{N}$")
    bottom.plot(
        darts,
        errors,
        color="tab:red",
        marker="o",
        markersize=3,
        linewidth=1.0,
        label=r"|estimate $-\ \pi$|",
    )
    bottom.set_yscale("log")
    bottom.set_xlabel("darts thrown so far, N (cumulative over jobs, log scale)")
    bottom.set_ylabel("absolute error")
    bottom.legend(loc="lower left", fontsize=10)
    bottom.grid(True, which="both", alpha=0.3)

    final = estimates[-1]
    jobs = _plural(len(result["per_job"]), "job")
    fig.suptitle(
        f"Run {result['run_id']}: {int(result['darts']):,} darts in {jobs}\n"
        f"final estimate π ≈ {final:.6f} ± {band_half_width(darts[-1]):.6f} (95 %)",
        fontsize=12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _bar_panel(
    axes: Axes,
    names: Sequence[str],
    darts: Sequence[int],
    colours: Sequence[str],
    what: str,
    unit: str = "darts",
) -> None:
    """Draw one bar per name (darts thrown), labelled with its share of the panel's total."""
    total = sum(darts) or 1
    bars = axes.bar(range(len(names)), darts, color=list(colours))
    if len(names) <= 16:
        axes.bar_label(
            bars,
            labels=[f"{value / total:.0%}" for value in darts],
            fontsize=10 if len(names) <= 6 else 8,
        )
    axes.set_xlabel(what)
    axes.set_ylabel("darts thrown" if unit == "darts" else unit)
    _category_ticks(axes, names, crowded=6)


def plot_hosts(result: Mapping[str, Any], path: Path) -> Path:
    """Write the work-distribution plot (darts per host and per worker) to ``path``."""
    _use_agg()
    import matplotlib.pyplot as plt

    unit = str(result.get("unit", "darts"))
    per_host = {str(host): int(darts) for host, darts in sorted(result["per_host"].items())}
    workers = darts_per_worker(result["per_job"], "darts" if unit == "darts" else "work")
    colours = {host: f"C{index % 10}" for index, host in enumerate(per_host)}

    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 5), width_ratios=(1, 2), layout="constrained"
    )
    hosts = list(per_host)
    _bar_panel(
        left, hosts, list(per_host.values()), [colours[host] for host in hosts], "host", unit
    )
    left.set_title(f"per host (share of all {unit})")
    names = list(workers)
    worker_colours = [colours.get(host, "grey") for host, _ in workers.values()]
    work = [darts for _, darts in workers.values()]
    _bar_panel(right, names, work, worker_colours, "worker", unit)
    right.set_title("per worker (colour = host)")
    for axes in (left, right):
        _eng_axis(axes)
        axes.grid(True, axis="y", alpha=0.3)
        axes.margins(y=0.12)

    fig.suptitle(
        f"Run {result['run_id']}: {sum(per_host.values()):,} {unit} over "
        f"{_plural(len(per_host), 'host')}, {_plural(len(names), 'worker')}",
        fontsize=12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_scaling(study: ScalingStudy, path: Path, name: str = "scaling") -> Path:
    """Write the scaling plot: speed-up vs workers (with ideal y = x) and efficiency (0-110 %)."""
    _use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    workers = [row.workers for row in study.rows]
    speedups = [row.speedup for row in study.rows]
    efficiencies = [100.0 * row.efficiency for row in study.rows]
    top = max(workers)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    left.plot([0, top], [0, top], color="grey", linestyle="--", label="ideal: S(k) = k")
    base = study.baseline_workers
    formula = "T(1)/T(k)" if base == 1 else f"{base}·T({base})/T(k)"
    left.plot(workers, speedups, color="tab:red", marker="o", label=f"measured S(k) = {formula}")
    for k, speedup in zip(workers, speedups, strict=True):
        left.annotate(
            f"{speedup:.2f}\N{MULTIPLICATION SIGN}",
            (k, speedup),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=9,
        )
    left.set_xlim(0, top + 0.5)
    left.set_ylim(0, max(top, *speedups) + 0.5)
    left.set_xlabel("worker instances k")
    left.set_ylabel("speed-up S(k) (times faster than 1 worker)")
    left.set_title("speed-up")
    left.legend(loc="upper left")

    right.axhline(100, color="grey", linestyle="--", label="ideal: E(k) = 100 %")
    right.plot(workers, efficiencies, color="tab:green", marker="s", label="measured E(k) = S(k)/k")
    for k, efficiency in zip(workers, efficiencies, strict=True):
        right.annotate(
            f"{efficiency:.0f} %",
            (k, min(efficiency, 104.0)),
            textcoords="offset points",
            xytext=(0, -15),
            ha="center",
            fontsize=9,
        )
    right.set_ylim(0, 110)
    right.yaxis.set_major_formatter(PercentFormatter(100))
    right.set_xlabel("worker instances k")
    right.set_ylabel("parallel efficiency E(k)")
    right.set_title("parallel efficiency")
    right.legend(loc="lower left")
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)

    what = f"{study.darts:,} darts" if study.darts is not None else study.experiment
    fig.suptitle(
        f"Scaling study {name}: {what}, same seed, k = {min(workers)}..{top}\n"
        f"{answer_text(study)} for every k",
        fontsize=12,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_compare(
    studies: Sequence[tuple[str, ScalingStudy]], path: Path, name: str = "compare"
) -> Path:
    """Write the speed-up and efficiency curves of several studies side by side (one colour per
    study, labelled with ``label``), e.g. a compute-bound and a bandwidth-bound workload."""
    _use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    top = max(row.workers for _, study in studies for row in study.rows)
    highest = max(row.speedup for _, study in studies for row in study.rows)
    best = max(100.0 * row.efficiency for _, study in studies for row in study.rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6.5), layout="constrained")
    left.plot(
        [0, top], [0, top], color="grey", linestyle="--", label="ideal: S(k) = k, E(k) = 100 %"
    )
    right.axhline(100, color="grey", linestyle="--")
    markers = "osD^v<>ph*"
    for index, (label, study) in enumerate(studies):
        workers = [row.workers for row in study.rows]
        marker = markers[index % len(markers)]
        left.plot(workers, [row.speedup for row in study.rows], marker=marker, label=label)
        right.plot(workers, [100.0 * row.efficiency for row in study.rows], marker=marker)
    left.set_xlim(0, top + 0.5)
    left.set_ylim(0, max(top, highest) + 0.5)
    left.set_xlabel("worker instances k")
    left.set_ylabel("speed-up S(k) = T(1)/T(k)")
    left.set_title("speed-up")
    right.set_ylim(0, max(110.0, best + 10.0))
    right.yaxis.set_major_formatter(PercentFormatter(100))
    right.set_xlabel("worker instances k")
    right.set_ylabel("parallel efficiency E(k) = S(k)/k")
    right.set_title("parallel efficiency")
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(3, len(studies) + 1), fontsize=9)
    fig.suptitle(f"{name}: speed-up of each workload, same answer for every k", fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- commands


def render_report(result_path: Path, out_dir: Path | None = None) -> list[Path]:
    """Render ``<stem>.convergence.png`` and ``<stem>.hosts.png`` for one result file.

    ``out_dir`` defaults to the result file's directory. Returns the paths written.

    Raises:
        ReportInputError: bad input file (see :func:`load_result`).
    """
    directory = out_dir if out_dir is not None else result_path.parent
    stem = result_path.name.removesuffix(".json")
    probe = load_result(result_path, ("run_id", "per_host", "per_job"))
    if probe.get("workload", "pi") != "pi":  # every other workload: the work per host
        return [plot_hosts(probe, directory / f"{stem}.hosts.png")]
    result = load_result(result_path)
    return [
        plot_convergence(result, directory / f"{stem}.convergence.png"),
        plot_hosts(result, directory / f"{stem}.hosts.png"),
    ]


def render_scaling(
    result_paths: Sequence[Path], out_dir: Path | None = None, name: str = "scaling"
) -> list[Path]:
    """Write ``NAME.json``, ``NAME.md`` and ``NAME.png`` of a scaling study.

    ``out_dir`` defaults to the directory of the first result file. Returns the paths written.

    Raises:
        ReportInputError: a bad input file.
        ScalingError: the files do not form one study (same darts and seed, one file per k).
        CountMismatchError: the ``inside`` counts differ (correctness failure).
    """
    results = []
    for path in result_paths:
        result = load_result(path, ("seconds", "per_job"))
        keys = SCALING_KEYS if workload_of(result) == "pi" else GENERIC_SCALING_KEYS
        missing = _missing(result, keys)
        if missing:
            raise ReportInputError(f"{path}: missing required keys: {', '.join(missing)}")
        results.append((str(path), result))
    study = build_study(results)
    directory = out_dir if out_dir is not None else result_paths[0].parent
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{name}.json"
    json_path.write_text(study_to_json(study, name), encoding="utf-8")
    md_path = directory / f"{name}.md"
    md_path.write_text(markdown_document(study, name), encoding="utf-8")
    return [json_path, md_path, plot_scaling(study, directory / f"{name}.png", name)]


def render_compare(
    study_paths: Sequence[Path], out_dir: Path | None = None, name: str = "compare"
) -> list[Path]:
    """Write ``NAME.png``: the studies (``NAME.json`` files of ``--scaling``) side by side.

    Raises:
        ReportInputError: a file is missing or not JSON.
        ScalingError: a file is not a scaling study.
    """
    studies = []
    for path in study_paths:
        document = load_result(path, ("rows", "baseline_workers", "counts_equal"))
        study = study_from_json(document)
        studies.append((study.experiment or str(document.get("name", path.stem)), study))
    directory = out_dir if out_dir is not None else study_paths[0].parent
    return [plot_compare(studies, directory / f"{name}.png", name)]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``pi-job report`` to ``parser``; sets ``func`` to :func:`command`."""
    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        metavar="RESULT.json",
        help="master result file(s) written by 'pi-job run --output'",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write the plots (default: next to the (first) result file)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="treat the files as one scaling study (same darts and seed, k = 1..K workers) and "
        "write NAME.json, NAME.md and NAME.png with speed-up and efficiency",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="the files are scaling studies (NAME.json of --scaling): draw their speed-up and "
        "efficiency curves side by side in NAME.png",
    )
    parser.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help="base name of the outputs (default: scaling or compare); needs --scaling/--compare",
    )
    parser.set_defaults(func=command)


def _fail(code: int, message: str) -> int:
    """Print ``message`` as one line on stderr and return ``code``."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def command(args: argparse.Namespace) -> int:
    """Run ``pi-job report`` with parsed ``args``; print the paths written; return the exit code."""
    paths: list[Path] = list(args.results)
    scaling: bool = bool(getattr(args, "scaling", False))
    compare: bool = bool(getattr(args, "compare", False))
    name: str | None = getattr(args, "name", None)
    out_dir: Path | None = getattr(args, "out_dir", None)
    if scaling and compare:
        return _fail(2, "give --scaling or --compare, not both")
    if name is not None and not (scaling or compare):
        return _fail(2, "--name is only used with --scaling")
    if name is not None and (not name or "/" in name or name in {".", ".."}):
        return _fail(2, f"--name must be a plain file name, got {name!r}")
    try:
        if scaling:
            written = render_scaling(paths, out_dir, name or "scaling")
        elif compare:
            written = render_compare(paths, out_dir, name or "compare")
        else:
            written = [png for path in paths for png in render_report(path, out_dir)]
    except (ReportInputError, ScalingError) as error:
        return _fail(2, str(error))
    except CountMismatchError as error:
        return _fail(1, f"correctness failure: {error}")
    except ImportError as error:
        return _fail(1, f"plots need matplotlib (pip install 'pi-job[plot]'): {error}")
    except OSError as error:
        return _fail(1, f"cannot write output: {error}")
    for path in written:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m pi_job.plots``) until ``cli.py`` registers it."""
    parser = argparse.ArgumentParser(prog=PROG, description="Plots from master result files.")
    configure_parser(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
