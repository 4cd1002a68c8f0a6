"""The numpy backend of the dart kernel: batched, in place, bounded memory.

:func:`count_outside_range` steps up to :data:`BATCH` blocks of the run stream together, their
``LANES`` lanes side by side in a few preallocated ``uint64`` arrays of ``BATCH * LANES`` words,
one array operation per generator operation and step. The memory used does not depend on the
number of darts, and numpy's ``uint64`` arithmetic wraps modulo 2**64, exactly like the
reference.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pi_job.workloads.pi.kernel import BLOCK, GAMMA, LANES, MASK64, MIX1, MIX2

__all__ = ["BATCH", "count_outside_range"]

BATCH = 1 << 9
"""Blocks stepped together by :func:`count_outside_range`: seven arrays of 2^14 words (128 KiB
each; fewer blocks pay more per-call overhead, more leave the L2 cache)."""

_U64 = np.uint64
_GAMMA = _U64(GAMMA)
_MIX1 = _U64(MIX1)
_MIX2 = _U64(MIX2)


def _seed_lanes(key: int, first_block: int, blocks: int, out: list[npt.NDArray[np.uint64]]) -> None:
    """Write the lane states of ``blocks`` blocks from ``first_block`` into ``out[0..3]``.

    Element ``i * LANES + j`` of ``out[w]`` is word ``w`` of lane ``j`` of block
    ``first_block + i``: ``splitmix64(key + (4 * (first_block * LANES + i * LANES + j) + w + 1)
    * GAMMA)``.
    """
    n = blocks * LANES
    counters = np.arange(n, dtype=_U64)
    np.multiply(counters, _U64(4), out=counters)
    np.add(counters, _U64((4 * first_block * LANES + 1) & MASK64), out=counters)
    t = np.empty(n, dtype=_U64)
    for w, z in enumerate(out):
        z = z[:n]
        np.add(counters, _U64(w), out=z)
        np.multiply(z, _GAMMA, out=z)
        np.add(z, _U64(key), out=z)
        np.right_shift(z, _U64(30), out=t)
        np.bitwise_xor(z, t, out=z)
        np.multiply(z, _MIX1, out=z)
        np.right_shift(z, _U64(27), out=t)
        np.bitwise_xor(z, t, out=z)
        np.multiply(z, _MIX2, out=z)
        np.right_shift(z, _U64(31), out=t)
        np.bitwise_xor(z, t, out=z)


def _batch_outside(key: int, first_block: int, lo: list[int], hi: list[int]) -> int:
    """Count darts outside among offsets ``lo[i] .. hi[i]-1`` of block ``first_block + i``.

    The blocks are stepped together for ``max(ceil(hi / LANES))`` steps. The count of the
    first ``n`` darts of a block is read ("probed") at step ``n // LANES``: the per-lane sums
    so far plus the first ``n % LANES`` lanes of that step; the range is ``C(hi) - C(lo)``.
    """
    blocks = len(lo)
    n = blocks * LANES
    s0, s1, s2, s3, r, t, acc = (np.empty(n, dtype=_U64) for _ in range(7))
    r_signed = r.view(np.int64)
    _seed_lanes(key, first_block, blocks, [s0, s1, s2, s3])
    acc.fill(0)
    steps = max(-(-h // LANES) for h in hi)
    probes: dict[int, list[tuple[int, int, int]]] = {}  # step -> (block, lanes, sign)
    for i in range(blocks):
        for offset, sign in ((hi[i], 1), (lo[i], -1)):
            if offset:
                probes.setdefault(offset // LANES, []).append((i, offset % LANES, sign))
    outside = 0
    s23, s41, s33, s62, s17, s45, s19 = (_U64(v) for v in (23, 41, 33, 62, 17, 45, 19))
    for step in range(steps):
        # r = rotl(s0 + s3, 23) + s0: the xoshiro256++ output.
        np.add(s0, s3, out=r)
        np.left_shift(r, s23, out=t)
        np.right_shift(r, s41, out=r)
        np.bitwise_or(r, t, out=r)
        np.add(r, s0, out=r)
        # x = r >> 33; y = the low half of r, signed. Outside iff bit 62 of x*x + y*y is set
        # (the sum is below 2**63).
        np.right_shift(r, s33, out=t)
        np.multiply(t, t, out=t)
        np.left_shift(r_signed, 32, out=r_signed)
        np.right_shift(r_signed, 32, out=r_signed)  # arithmetic shift: sign-extends
        np.multiply(r_signed, r_signed, out=r_signed)
        np.add(r, t, out=r)
        np.right_shift(r, s62, out=r)
        for i, lanes, sign in probes.get(step, ()):
            row = slice(i * LANES, (i + 1) * LANES)
            outside += sign * (int(acc[row].sum()) + int(r[row][:lanes].sum()))
        np.add(acc, r, out=acc)
        # The xoshiro256 state update.
        np.left_shift(s1, s17, out=t)
        np.bitwise_xor(s2, s0, out=s2)
        np.bitwise_xor(s3, s1, out=s3)
        np.bitwise_xor(s1, s2, out=s1)
        np.bitwise_xor(s0, s3, out=s0)
        np.bitwise_xor(s2, t, out=s2)
        np.left_shift(s3, s45, out=t)
        np.right_shift(s3, s19, out=s3)
        np.bitwise_or(s3, t, out=s3)
    sums = acc.reshape(blocks, LANES).sum(axis=1)
    for i, _, sign in probes.get(steps, ()):
        outside += sign * int(sums[i])
    return outside


def count_outside_range(key: int, start: int, darts: int) -> int:
    """Count darts outside among the run stream's ``start .. start+darts-1`` (``key`` hashed).

    Blocks are taken :data:`BATCH` at a time; only the first and the last block of the range
    can be partial.
    """
    outside = 0
    end = start + darts
    block = start // BLOCK
    last = (end - 1) // BLOCK if darts else block - 1
    while block <= last:
        count = min(BATCH, last - block + 1)
        lo = [max(start - (block + i) * BLOCK, 0) for i in range(count)]
        hi = [min(end - (block + i) * BLOCK, BLOCK) for i in range(count)]
        outside += _batch_outside(key, block, lo, hi)
        block += count
    return outside
