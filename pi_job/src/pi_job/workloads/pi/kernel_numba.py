"""The numba backend of the dart kernel: one JIT-compiled loop that LLVM vectorises.

The loop body is branch-free ``uint64`` arithmetic whose only loop-carried value is an integer
sum, so LLVM vectorises it (8 lanes of 64 bits per AVX-512 ``zmm`` register, ``vpmullq``
multiplies, interleaved). Every constant and the loop index are ``uint64``: mixing ``int64`` and
``uint64`` would make numba promote to ``float64``.

Importing this module raises ``ImportError`` when numba is not installed. Compiled code is
cached on disk (``cache=True``; numba honours ``NUMBA_CACHE_DIR``); when no cache directory is
writable, the kernel is compiled in memory instead of failing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numba
import numpy as np

from pi_job.workloads.pi.kernel import GAMMA, MASK31, MASK64, MIX1, MIX2

__all__ = ["SLICE", "count_outside", "warm_up"]

SLICE = 1 << 30
"""Darts per compiled call (~0.3 s): keeps ``uint64`` loop bounds small and lets Python
handle signals between calls of a long job."""

_U64 = np.uint64
_GAMMA = _U64(GAMMA)
_MIX1 = _U64(MIX1)
_MIX2 = _U64(MIX2)
_MASK31 = _U64(MASK31)
_S27 = _U64(27)
_S30 = _U64(30)
_S31 = _U64(31)
_S33 = _U64(33)
_S62 = _U64(62)


def _outside(base: np.uint64, n: np.uint64) -> np.uint64:
    """Count darts outside among ``n`` darts whose counters are ``base + k * GAMMA``."""
    outside = _U64(0)
    for k in range(n):
        z = base + _U64(k) * _GAMMA
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        z = z ^ (z >> _S31)
        x = z >> _S33
        y = z & _MASK31
        outside += (x * x + y * y) >> _S62
    return outside


def _compile(cache: bool) -> Callable[[np.uint64, np.uint64], np.uint64]:
    """Return the lazily compiled dispatcher of :func:`_outside`."""
    jitted: Callable[[np.uint64, np.uint64], np.uint64] = numba.njit(cache=cache, nogil=True)(
        _outside
    )
    return jitted


def _cached_or_in_memory() -> Callable[[np.uint64, np.uint64], np.uint64]:
    """Prefer an on-disk cache; without a writable cache directory, compile in memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            return _compile(cache=True)
    except (RuntimeError, OSError):  # "cannot cache function ...: no locator available"
        return _compile(cache=False)


_kernel = _cached_or_in_memory()


def _call(base: int, n: int) -> int:
    """Run the compiled kernel once; retry in memory if writing the cache fails."""
    global _kernel
    try:
        return int(_kernel(_U64(base), _U64(n)))
    except OSError:
        _kernel = _compile(cache=False)
        return int(_kernel(_U64(base), _U64(n)))


def count_outside(base: int, n: int) -> int:
    """Count darts outside among the ``n`` darts whose counters are ``base + k * GAMMA``."""
    outside = 0
    done = 0
    while done < n:
        m = min(SLICE, n - done)
        outside += _call(base, m)
        base = (base + m * GAMMA) & MASK64
        done += m
    return outside


def warm_up() -> None:
    """Compile (or load from the cache) the kernel by counting one dart."""
    _call(1, 1)
