"""Peak memory of the dart kernel: does a worker's RSS grow with the job size?

Each measurement runs in a fresh interpreter that imports the pi kernel, warms up numba
and then counts darts of the run stream (``count_inside_range``) with one backend; the child
reports its peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before and
after the count. A bounded kernel
shows the same peak for a small and a big count. Prints a table (or JSON with ``--json``).

    .venv/bin/python pi_job/benchmarks/kernel_memory.py [--big-numba 2e10] [--big-numpy 1e9]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD = """
import json, resource, sys, time
backend, darts, hide_numba = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if hide_numba:
    sys.modules["numba"] = None  # as if numba were not installed
from pi_job.workloads.pi import kernel
kernel.warm_up()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
inside = kernel.count_inside_range(1, 0, darts, backend=backend)
seconds = time.perf_counter() - began
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "peak_kib": after, "seconds": seconds,
                  "numba_loaded": sys.modules.get("numba") is not None}))
"""


def measure(backend: str, darts: int, timeout: float, hide_numba: bool = False) -> dict[str, Any]:
    """Count ``darts`` with ``backend`` in a child process; return its figures.

    With ``hide_numba`` the child cannot import numba (the RSS of a numpy-only worker).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    row: dict[str, Any] = {"backend": backend, "darts": darts}
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, backend, str(darts), "1" if hide_numba else "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        row["error"] = f"timeout after {timeout:g} s"
        return row
    except subprocess.CalledProcessError as exc:
        row["error"] = exc.stderr.strip().splitlines()[-1] if exc.stderr else "failed"
        return row
    row.update(json.loads(done.stdout))
    return row


def _count(text: str) -> int:
    """argparse type: a dart count such as ``2e10`` or ``1000000``."""
    value = int(float(text))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _table(rows: list[dict[str, Any]]) -> str:
    """Format the measurements as a plain-text table."""
    lines = [
        f"{'backend':<7} {'darts':>9} {'RSS warm MiB':>12} {'peak MiB':>9} {'seconds':>8}"
        f" {'darts/s':>9} numba"
    ]
    for row in rows:
        head = f"{row['backend']!s:<7} {row['darts']:>9.2e}"
        if "error" in row:
            lines.append(f"{head} {row['error']}")
            continue
        before = row["before_kib"] / 1024
        peak = row["peak_kib"] / 1024
        seconds = row["seconds"]
        rate = row["darts"] / seconds if seconds > 0 else float("nan")
        lines.append(
            f"{head} {before:12.1f} {peak:9.1f} {seconds:8.2f} {rate:9.2e} {row['numba_loaded']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure small and big counts per backend and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", type=_count, default=10**6, help="small count (1e6)")
    parser.add_argument("--big-numba", type=_count, default=2 * 10**10, help="(2e10)")
    parser.add_argument("--big-numpy", type=_count, default=10**9, help="(1e9)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per child, seconds")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args(argv)
    plan = [
        ("numba", args.small),
        ("numba", args.big_numba),
        ("numpy", args.small),
        ("numpy", args.big_numpy),
        ("python", min(args.small, 10**5)),
    ]
    rows = [measure(backend, darts, args.timeout) for backend, darts in plan]
    rows += [
        measure("numpy", darts, args.timeout, hide_numba=True)
        for darts in (args.small, args.big_numpy)
    ]
    print(json.dumps(rows, indent=1) if args.json else _table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
