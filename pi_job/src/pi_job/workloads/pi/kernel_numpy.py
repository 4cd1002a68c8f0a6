"""The numpy backend of the dart kernel: chunked, in place, bounded memory.

Darts are processed in chunks of :data:`CHUNK` in two preallocated ``uint64`` buffers, so the
memory used does not depend on the number of darts. numpy's ``uint64`` arithmetic wraps modulo
2**64, exactly like the reference.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from pi_job.workloads.pi.kernel import GAMMA, MASK31, MASK64, MIX1, MIX2

__all__ = ["CHUNK", "count_outside"]

CHUNK = 1 << 16
"""Darts per chunk: two 512 KiB buffers (speed is flat from 2^15 to 2^19, drops below 2^14)."""

_U64 = np.uint64
_GAMMA = _U64(GAMMA)
_MIX1 = _U64(MIX1)
_MIX2 = _U64(MIX2)
_MASK31 = _U64(MASK31)


@functools.cache
def _offsets(size: int) -> npt.NDArray[np.uint64]:
    """Return the read-only array ``k * GAMMA mod 2**64`` for ``k`` in ``0 .. size-1``."""
    offsets = np.arange(size, dtype=_U64)
    np.multiply(offsets, _GAMMA, out=offsets)
    offsets.flags.writeable = False
    return offsets


def count_outside(base: int, n: int) -> int:
    """Count darts outside among the ``n`` darts whose counters are ``base + k * GAMMA``."""
    size = min(CHUNK, n)
    if size <= 0:
        return 0
    offsets = _offsets(CHUNK)
    z_buf = np.empty(size, dtype=_U64)
    t_buf = np.empty(size, dtype=_U64)
    outside = 0
    done = 0
    while done < n:
        m = min(size, n - done)
        z, t = z_buf[:m], t_buf[:m]
        np.add(offsets[:m], _U64(base), out=z)
        # SplitMix64 finaliser, in place.
        np.right_shift(z, 30, out=t)
        np.bitwise_xor(z, t, out=z)
        np.multiply(z, _MIX1, out=z)
        np.right_shift(z, 27, out=t)
        np.bitwise_xor(z, t, out=z)
        np.multiply(z, _MIX2, out=z)
        np.right_shift(z, 31, out=t)
        np.bitwise_xor(z, t, out=z)
        # x*x + y*y < 2**63; the dart is outside iff bit 62 of the sum is set.
        np.right_shift(z, 33, out=t)
        np.multiply(t, t, out=t)
        np.bitwise_and(z, _MASK31, out=z)
        np.multiply(z, z, out=z)
        np.add(z, t, out=z)
        np.right_shift(z, 62, out=z)
        outside += int(np.count_nonzero(z))
        base = (base + m * GAMMA) & MASK64
        done += m
    return outside
