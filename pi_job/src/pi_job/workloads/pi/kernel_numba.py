"""The numba backend of the dart kernel: JIT-compiled loops that run on SIMD registers.

**Run stream** (:func:`count_outside_range`): the hot loop steps the :data:`~kernel.LANES`
xoshiro256++ lanes of a block together. It is written as explicit LLVM vector IR
(``<8 x i64>``, :func:`_run_lanes`, a numba ``@intrinsic``) rather than left to LLVM's
vectorisers, which on some CPUs (Intel Xeon tuned ``prefer-256-bit``) pick narrower vectors
or keep the lane states in memory: explicit 512-bit vectors become ``zmm`` code on every
AVX-512 CPU and are split into ``ymm``/``xmm`` halves elsewhere, with the same result. The
squares of the inside test are of the 31-bit high part and the signed 32-bit low part of
each output, which LLVM turns into 32x32->64-bit multiplies (``vpmuludq``/``vpmuldq``).
Partial steps at the ends of a range are done lane by lane. Every constant and index is
``uint64``: mixing ``int64`` and ``uint64`` would make numba promote to ``float64``.

Importing this module raises ``ImportError`` when numba is not installed. Compiled code is
cached on disk (``cache=True``; numba honours ``NUMBA_CACHE_DIR``); when no cache directory is
writable, the kernel is compiled in memory instead of failing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic

from pi_job.workloads.pi.kernel import (
    BLOCK,
    GAMMA,
    LANES,
    MASK32,
    MIX1,
    MIX2,
    STEPS,
)

__all__ = ["SLICE", "count_outside_range", "warm_up"]

SLICE = 1 << 30
"""Darts per compiled call (~0.3 s): keeps ``uint64`` loop bounds small and lets Python
handle signals between calls of a long job."""

_U64 = np.uint64
_GAMMA = _U64(GAMMA)
_MIX1 = _U64(MIX1)
_MIX2 = _U64(MIX2)
_S27 = _U64(27)
_S30 = _U64(30)
_S31 = _U64(31)
_S33 = _U64(33)
_S62 = _U64(62)
_S32 = _U64(32)
_MASK32 = _U64(MASK32)
_LANES = _U64(LANES)
_BLOCK = _U64(BLOCK)
_STEPS = _U64(STEPS)
cgutils: Any = _cgutils  # untyped helpers of numba's code generator
_VECTOR = 8
"""64-bit elements per explicit vector (512 bits)."""
_VECTORS = LANES // _VECTOR
"""Vectors per state word."""


def _compile(cache: bool, function: Callable[..., Any]) -> Any:
    """Return the lazily compiled dispatcher of ``function``."""
    return numba.njit(cache=cache, nogil=True)(function)


def _cached_or_in_memory(function: Callable[..., Any]) -> Any:
    """Prefer an on-disk cache; without a writable cache directory, compile in memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            return _compile(True, function)
    except (RuntimeError, OSError):  # "cannot cache function ...: no locator available"
        return _compile(False, function)


# --- run stream -------------------------------------------------------------------------------


def _run_lanes_typer(typingctx: Any, state: Any, steps: Any) -> Any:
    """``_run_lanes(state, steps)``: step every lane ``steps`` times; return the darts outside.

    ``state`` is a C-contiguous ``uint64`` array of ``4 * LANES`` words, word ``w`` of lane
    ``j`` at ``w * LANES + j``; it is updated in place. The loop keeps the states in
    ``4 * LANES / 8`` vectors of ``<8 x i64>`` and uses shifts, rotations, xors, adds and the
    two 32x32->64-bit squares only.
    """
    if not (
        isinstance(state, types.Array)
        and state.dtype == types.uint64
        and state.ndim == 1
        and state.layout == "C"
    ):
        return None
    signature = types.uint64(state, types.uint64)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        i64 = ir.IntType(64)
        vec = ir.VectorType(i64, _VECTOR)

        def splat(value: int) -> ir.Constant:
            return ir.Constant(vec, [ir.Constant(i64, value)] * _VECTOR)

        def rotl(value: ir.Value, bits: int) -> ir.Value:
            return builder.or_(
                builder.shl(value, splat(bits)), builder.lshr(value, splat(64 - bits))
            )

        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        pointers = [
            builder.bitcast(cgutils.gep(builder, data, index * _VECTOR), vec.as_pointer())
            for index in range(4 * _VECTORS)
        ]
        # Loop-carried values live in allocas; LLVM's SROA turns them into registers.
        slots = [cgutils.alloca_once(builder, vec) for _ in range(5 * _VECTORS)]
        for pointer, slot in zip(pointers, slots, strict=False):
            builder.store(builder.load(pointer, align=8, typ=vec), slot)
        for slot in slots[4 * _VECTORS :]:
            builder.store(splat(0), slot)
        with cgutils.for_range(builder, args[1]):
            for v in range(_VECTORS):
                word = [slots[w * _VECTORS + v] for w in range(4)]
                acc = slots[4 * _VECTORS + v]
                s0, s1, s2, s3 = (builder.load(slot, typ=vec) for slot in word)
                r = builder.add(rotl(builder.add(s0, s3), 23), s0)
                x = builder.lshr(r, splat(33))
                y = builder.ashr(builder.shl(r, splat(32)), splat(32))  # signed low half
                square = builder.add(builder.mul(x, x), builder.mul(y, y))
                total = builder.add(builder.load(acc, typ=vec), builder.lshr(square, splat(62)))
                builder.store(total, acc)
                # The xoshiro256 update, as xor trees whose inner nodes have one use each
                # (so that AVX-512 can fuse them into three-input vpternlogq).
                t = builder.shl(s1, splat(17))
                s3x = builder.xor(s3, s1)
                s0, s1, s2, s3 = (
                    builder.xor(s0, s3x),
                    builder.xor(builder.xor(s1, s2), s0),
                    builder.xor(builder.xor(s2, t), s0),
                    rotl(s3x, 45),
                )
                for slot, value in zip(word, (s0, s1, s2, s3), strict=True):
                    builder.store(value, slot)
        for pointer, slot in zip(pointers, slots, strict=False):
            builder.store(builder.load(slot, typ=vec), pointer, align=8)
        acc_total = builder.load(slots[4 * _VECTORS], typ=vec)
        for slot in slots[4 * _VECTORS + 1 :]:
            acc_total = builder.add(acc_total, builder.load(slot, typ=vec))
        outside = builder.extract_element(acc_total, ir.Constant(ir.IntType(32), 0))
        for lane in range(1, _VECTOR):
            element = builder.extract_element(acc_total, ir.Constant(ir.IntType(32), lane))
            outside = builder.add(outside, element)
        return outside

    return signature, codegen


_run_lanes: Any = intrinsic(_run_lanes_typer)


def _seed_block_py(state: np.ndarray, key: np.uint64, block: np.uint64) -> None:
    """Fill ``state`` with the xoshiro256++ states of every lane of ``block`` (SplitMix64)."""
    first = _U64(4) * block * _LANES + _U64(1)
    for w in range(4):
        for j in range(LANES):
            z = key + (first + _U64(4 * j + w)) * _GAMMA
            z = (z ^ (z >> _S30)) * _MIX1
            z = (z ^ (z >> _S27)) * _MIX2
            state[w * LANES + j] = z ^ (z >> _S31)


def _one_step_py(state: np.ndarray, first: np.uint64, lo: np.uint64, hi: np.uint64) -> np.uint64:
    """Step every lane once; count outside the darts ``first + j`` that lie in ``[lo, hi)``."""
    outside = _U64(0)
    for j in range(LANES):
        s0 = state[j]
        s1 = state[LANES + j]
        s2 = state[2 * LANES + j]
        s3 = state[3 * LANES + j]
        r = s0 + s3
        r = ((r << _U64(23)) | (r >> _U64(41))) + s0
        t = s1 << _U64(17)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        state[j] = s0
        state[LANES + j] = s1
        state[2 * LANES + j] = s2
        state[3 * LANES + j] = (s3 << _U64(45)) | (s3 >> _U64(19))
        dart = first + _U64(j)
        if lo <= dart and dart < hi:
            x = r >> _S33
            y = (r & _MASK32) - (((r >> _S31) & _U64(1)) << _S32)  # signed low half, mod 2**64
            outside += (x * x + y * y) >> _S62
    return outside


_seed_block: Any = numba.njit(nogil=True, inline="always")(_seed_block_py)
_one_step: Any = numba.njit(nogil=True)(_one_step_py)


def _outside_range(key: np.uint64, start: np.uint64, darts: np.uint64) -> np.uint64:
    """Count darts outside among the run stream's ``start .. start+darts-1`` (``key`` hashed).

    ``start + darts`` may be ``2**64`` (never computed); ``darts`` must be below ``2**63``.
    """
    state = np.empty(4 * LANES, dtype=np.uint64)
    outside = _U64(0)
    block = start // _BLOCK
    lo = start % _BLOCK
    left = darts
    while left > _U64(0):
        hi = min(_BLOCK, lo + left)
        _seed_block(state, key, block)
        if lo == _U64(0) and hi == _BLOCK:
            outside += _run_lanes(state, _STEPS)
        else:
            step = lo // _LANES
            _run_lanes(state, step)  # darts before lo: generated, not counted
            if lo % _LANES != _U64(0):
                outside += _one_step(state, step * _LANES, lo, hi)
                step += _U64(1)
            full = hi // _LANES
            if full > step:
                outside += _run_lanes(state, full - step)
                step = full
            if step * _LANES < hi:
                outside += _one_step(state, step * _LANES, lo, hi)
        left -= hi - lo
        lo = _U64(0)
        block += _U64(1)
    return outside


_range_kernel = _cached_or_in_memory(_outside_range)


def _call_range(key: int, start: int, darts: int) -> int:
    """Run the compiled run-stream kernel once; retry in memory if writing the cache fails."""
    global _range_kernel
    try:
        return int(_range_kernel(_U64(key), _U64(start), _U64(darts)))
    except OSError:
        _range_kernel = _compile(False, _outside_range)
        return int(_range_kernel(_U64(key), _U64(start), _U64(darts)))


def count_outside_range(key: int, start: int, darts: int) -> int:
    """Count darts outside among the run stream's ``start .. start+darts-1`` (``key`` hashed).

    Long ranges are cut into calls of at most :data:`SLICE` darts (the stream is
    split-invariant), so Python can handle signals between them.
    """
    outside = 0
    done = 0
    while done < darts:
        m = min(SLICE, darts - done)
        outside += _call_range(key, start + done, m)
        done += m
    return outside


def warm_up() -> None:
    """Compile (or load from the cache) the kernel by counting a few darts across a block edge."""
    _call_range(1, BLOCK - 3, 6)
