"""``pi-job bench``: darts per second of every kernel backend on one core.

The timed kernel is the run stream, :func:`~pi_job.workloads.pi.kernel.count_inside_range`,
counting consecutive ranges of darts of one seed. Every available backend (``numba``,
``numpy``) and the pure-Python reference loop (``python``) are timed in the same run, one after
the other, in this single-threaded process.
Each backend counts batches of darts of doubling size until a batch takes a good fraction of
its time budget; the best rate seen is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pi_job.workloads.pi import kernel

__all__ = ["command", "configure_parser", "format_table", "main", "measure"]

DEFAULT_SECONDS = 2.0
"""Default time budget per backend."""
BENCH_SEED = 0x5EED_0F_0B_E7C4
"""Fixed seed of the timed darts (the result does not depend on it)."""
_FIRST_BATCH = {"numba": 1 << 20, "numpy": 1 << 20, "python": 1 << 10}
"""Darts in the first timed batch of each backend."""
_GROW_BELOW = 0.125
"""Double the batch while one batch takes less than this fraction of the budget."""


def _time_backend(backend: str, seconds: float) -> float:
    """Return the best darts/s of ``backend`` within about ``seconds`` (at least one batch)."""
    darts = _FIRST_BATCH.get(backend, 1 << 10)
    start = 0
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        began = time.perf_counter()
        kernel.count_inside_range(BENCH_SEED, start, darts, backend=backend)
        elapsed = time.perf_counter() - began
        start += darts
        if elapsed > 0:
            best = max(best, darts / elapsed)
        now = time.perf_counter()
        if now >= deadline:
            return best
        if elapsed < _GROW_BELOW * seconds:
            darts *= 2
        if now + elapsed > deadline and best > 0:
            return best  # the next batch would overrun the budget


def measure(seconds: float = DEFAULT_SECONDS) -> dict[str, float]:
    """Return ``{backend: darts per second}`` for every available backend, ``python`` last.

    ``seconds`` is the time budget of each backend (numba's compilation is done before and
    not counted).
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    kernel.warm_up()
    return {backend: _time_backend(backend, seconds) for backend in kernel.available_backends()}


def format_table(rates: dict[str, float]) -> str:
    """Return a plain-text table: backend, darts/s and the ratio to the ``python`` backend."""
    reference = rates.get("python", 0.0)
    lines = [f"{'backend':<8} {'darts/s':>10} {'x python':>9}"]
    for backend, rate in rates.items():
        ratio = f"{rate / reference:9.1f}" if reference > 0 else f"{'-':>9}"
        lines.append(f"{backend:<8} {rate:10.3e} {ratio}")
    return "\n".join(lines)


def _positive_seconds(text: str) -> float:
    """argparse type of ``--seconds``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options (``--json``, ``--seconds``) to ``parser``."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object mapping backend name to darts per second",
    )
    parser.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=DEFAULT_SECONDS,
        metavar="S",
        help=f"time budget per backend in seconds (default {DEFAULT_SECONDS:g})",
    )


def command(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed ``args``, print the table or JSON, return exit code 0."""
    rates = measure(args.seconds)
    if args.json:
        print(json.dumps(rates))
    else:
        print(format_table(rates))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m pi_job.workloads.pi.bench [--json] [--seconds S]``."""
    parser = argparse.ArgumentParser(
        prog="pi-job bench", description="Darts per second of each kernel backend, one core."
    )
    configure_parser(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
