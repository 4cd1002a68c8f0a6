"""Checks of a finished product C = A @ B that cost O(n^2), plus a full one when it is small."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pi_job.errors import RunError

FULL_CHECK_MAX: Final = 2048
"""Largest dimension for which C is also compared with numpy's own A @ B."""
TRIALS: Final = 8
"""Freivalds trials (each misses a wrong C with probability <= 1/2, so 2**-8 in all)."""
ROW_CHUNK: Final = 4096


def _times(
    matrix: npt.NDArray[Any], vector: npt.NDArray[Any], absolute: bool = False
) -> npt.NDArray[Any]:
    """matrix @ vector (``absolute``: abs(matrix) @ vector), in row chunks so that a memory
    map is never read, nor its absolute values made, all at once."""
    out = np.empty(matrix.shape[0], dtype=np.result_type(matrix.dtype, vector.dtype))
    for start in range(0, matrix.shape[0], ROW_CHUNK):
        rows = matrix[start : start + ROW_CHUNK]
        out[start : start + ROW_CHUNK] = (np.abs(rows) if absolute else rows) @ vector
    return out


def verify_product(
    a: npt.NDArray[Any], b: npt.NDArray[Any], c: npt.NDArray[Any], seed: int, full: bool = False
) -> dict[str, Any]:
    """Return the verification's figures; raise RunError if C is not A @ B.

    Freivalds (O(n^2), always): int64 with 0/1 vectors, compared exactly (wrap-around
    arithmetic is the same on both sides); float64 with normal vectors, within a rounding
    bound. ``full`` (when every dimension is at most :data:`FULL_CHECK_MAX`): also against
    numpy's own ``A @ B``, exactly for int64 (the run's master skips it: it costs as much as the
    product; ``pi-job check-product`` runs it on the controller).
    """
    rng = np.random.default_rng(seed)
    k = a.shape[1]
    exact = c.dtype == np.int64
    worst = 0.0
    for _ in range(TRIALS):
        r: npt.NDArray[Any] = np.asarray(
            rng.integers(0, 2, size=c.shape[1], dtype=np.int64)
            if exact
            else rng.standard_normal(c.shape[1])
        )
        left, right = _times(a, _times(b, r)), _times(c, r)
        if exact:
            if not np.array_equal(left, right):
                raise RunError("verification failed: C != A @ B (Freivalds, int64)")
            continue
        scale = _times(a, _times(b, np.abs(r), absolute=True), absolute=True) + 1e-300
        error = float(np.max(np.abs(left - right) / scale))
        worst = max(worst, error)
    bound = 4.0 * k * float(np.finfo(np.float64).eps)
    if not exact and worst > bound:
        raise RunError(f"verification failed: Freivalds relative error {worst:.3g} > {bound:.3g}")
    figures: dict[str, Any] = {
        "method": "freivalds",
        "trials": TRIALS,
        "max_relative_error": worst,
        "bound": 0.0 if exact else bound,
        "ok": True,
    }
    if full and max(a.shape[0], k, c.shape[1]) <= FULL_CHECK_MAX:
        reference = np.asarray(a) @ np.asarray(b)
        if exact:
            equal = bool(np.array_equal(reference, c))
        else:
            equal = bool(
                np.allclose(reference, c, rtol=bound, atol=bound * float(np.abs(reference).max()))
            )
        if not equal:
            raise RunError("verification failed: C differs from numpy's A @ B")
        figures["method"] = "freivalds+numpy"
        figures["numpy_equal"] = bool(np.array_equal(reference, c))
    return figures


def main(argv: list[str] | None = None) -> int:
    """``python -m pi_job.workloads.matmul.verify A.npy B.npy C.npy``: the full check.

    Prints the figures as JSON; exit 0 when C is A @ B, 1 when it is not, 2 for bad files.
    """
    import argparse
    import json
    from pathlib import Path

    from pi_job.errors import UsageError
    from pi_job.workloads.matmul.operands import load

    parser = argparse.ArgumentParser(description="check that C = A @ B")
    for name in ("a", "b", "c"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args(argv)
    try:
        a, b, c = (load(getattr(args, n), n.upper()) for n in ("a", "b", "c"))
        figures = verify_product(a, b, c, seed=0, full=True)
    except UsageError as exc:
        print(f"check: error: {exc}")
        return 2
    except RunError as exc:
        print(f"check: {exc}")
        return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
