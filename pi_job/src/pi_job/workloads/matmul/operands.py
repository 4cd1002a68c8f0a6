"""The operands of a matrix product: generated from a seed or loaded from ``.npy`` files.

Loading never unpickles (``allow_pickle=False``) and every check gives one line: dtype (float64
or int64 only), shape, emptiness, NaN/Inf, size limit, int64 overflow of the product.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pi_job.errors import UsageError

DTYPES: Final = ("float64", "int64")
MAX_OPERAND_BYTES: Final = 2**31
"""Largest operand file (2 GiB): the master keeps it, every worker holds B."""
MAX_DIM: Final = 2**20
INT_RANGE: Final = 1000
"""Generated int64 entries are drawn from -INT_RANGE..INT_RANGE."""
BLOCK_ROWS: Final = 64
"""Rows drawn from one random stream when operands are generated."""


def generate(seed: int, shape: tuple[int, int], dtype: str, which: int) -> npt.NDArray[np.generic]:
    """Operand ``which`` (0 for A, 1 for B) of the product generated from ``seed``, in memory
    (the master writes it with :func:`save_generated` instead)."""
    return generate_rows(seed, which, 0, shape[0], shape[1], dtype)


SAVE_ROWS: Final = 16 * BLOCK_ROWS
"""Rows generated and written at a time by :func:`save_generated`."""


def save_generated(path: Path, seed: int, shape: tuple[int, int], dtype: str, which: int) -> None:
    """Write operand ``which`` (0 for A, 1 for B) of the product generated from ``seed`` to the
    ``.npy`` file ``path``, a few blocks at a time (never the whole matrix in memory). The file
    appears whole or not at all (a master killed half way must not leave a file of the right
    size whose rows are zeros)."""
    part = path.with_name(path.name + ".part")
    out = np.lib.format.open_memmap(part, mode="w+", dtype=np.dtype(dtype), shape=shape)
    try:
        for start in range(0, shape[0], SAVE_ROWS):
            stop = min(start + SAVE_ROWS, shape[0])
            out[start:stop] = generate_rows(seed, which, start, stop, shape[1], dtype)
        out.flush()
    finally:
        del out
    os.replace(part, path)


def save(path: Path, array: npt.NDArray[Any]) -> None:
    """``numpy.save`` of ``array`` to ``path``, appearing whole or not at all."""
    part = path.with_name(path.name + ".part")
    with part.open("wb") as file:
        np.save(file, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(part, path)


def generate_rows(
    seed: int, which: int, start: int, stop: int, columns: int, dtype: str
) -> npt.NDArray[Any]:
    """Rows ``[start, stop)`` of operand ``which``, the same wherever they are made: every block
    of :data:`BLOCK_ROWS` rows has its own stream (``seed``, ``which``, block), so a worker can
    make its panel of A, or all of B, without the master sending them."""
    out = np.empty((stop - start, columns), dtype=np.dtype(dtype))
    for block in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
        first, last = block * BLOCK_ROWS, (block + 1) * BLOCK_ROWS
        rng = np.random.default_rng([seed, which, block])
        rows: npt.NDArray[np.generic]
        if dtype == "int64":
            rows = rng.integers(
                -INT_RANGE, INT_RANGE, size=(BLOCK_ROWS, columns), dtype=np.int64, endpoint=True
            )
        else:
            rows = rng.standard_normal((BLOCK_ROWS, columns))
        lo, hi = max(first, start), min(last, stop)
        out[lo - start : hi - start] = rows[lo - first : hi - first]
    return out


def load(path: Path, name: str) -> npt.NDArray[np.generic]:
    """Load and check one operand file (memory-mapped, never unpickled)."""
    if not path.is_file():
        raise UsageError(f"{name}: no such file: {path}")
    size = path.stat().st_size
    if size > MAX_OPERAND_BYTES:
        raise UsageError(f"{name}: {path} has {size} bytes (limit {MAX_OPERAND_BYTES})")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise UsageError(f"{name}: {path} is not a plain .npy array: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot read {path}: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise UsageError(f"{name}: {path} is not a single .npy array")
    if array.dtype.name not in DTYPES:
        raise UsageError(f"{name}: dtype {array.dtype} is not one of {', '.join(DTYPES)}")
    if array.ndim != 2:
        raise UsageError(f"{name}: shape {array.shape} is not a matrix (2 dimensions)")
    if array.size == 0:
        raise UsageError(f"{name}: empty array of shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UsageError(f"{name}: contains NaN or Inf")
    return array


def check_pair(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> None:
    """Shapes that multiply, one dtype, no int64 overflow possible."""
    if a.shape[1] != b.shape[0]:
        raise UsageError(
            f"shapes {a.shape} and {b.shape} do not multiply (A's columns != B's rows)"
        )
    if a.dtype != b.dtype:
        raise UsageError(f"dtypes differ: A is {a.dtype}, B is {b.dtype}")
    if a.dtype == np.int64:
        bound = int(np.abs(a).max()) * int(np.abs(b).max()) * int(a.shape[1])
        if bound >= 2**63:
            raise UsageError(
                f"int64 product could overflow: max|A| * max|B| * k = {bound} >= 2**63"
            )
