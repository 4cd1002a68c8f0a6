"""Dart kernel: the exact, deterministic Monte-Carlo test behind every job.

**The run stream** (:func:`count_inside_range`). One stream of darts per run, keyed only by the
run ``seed``; dart ``i`` has a global index, so any split of ``[0, N)`` into ranges, counted
anywhere, sums to the same total. The stream is cut into blocks of :data:`BLOCK` darts; block
``b`` runs :data:`LANES` independent xoshiro256++ generators (Blackman & Vigna) whose states
are hashed from ``(seed, b)`` by SplitMix64::

    key         = splitmix64(seed)
    word w of lane j of block b
                = splitmix64((key + (4*(b*LANES + j) + w + 1) * GAMMA) mod 2**64),  w = 0..3
    dart b*BLOCK + k  (0 <= k < BLOCK) is output k // LANES of lane k % LANES of block b
    r = xoshiro256++ output (64 bits)
    x = r >> 33                            # 31 bits, 0 <= x < 2**31
    y = low 32 bits of r, two's complement # -2**31 <= y < 2**31
    inside  iff  x*x + y*y < 2**62

So the dart falls in the rectangle ``[0, 2**31) x [-2**31, 2**31)`` and is inside the half disc
of radius ``2**31``: probability ``pi/4``, as with a quarter circle. The generator needs only
shifts, rotations, xors and adds; the test's squares are 32x32->64-bit multiplies of the two
halves of ``r`` (``y`` needs no masking), so the hot loop runs at SIMD speed on every x86-64.

All arithmetic is on unsigned 64-bit integers (``x*x + y*y < 2**63`` cannot overflow), so
counts depend only on the arguments: not on the backend, the chunk size or the machine.

Backends (fastest first): ``numba`` (when importable, JIT-compiled and vectorised),
``numpy`` (always available, chunked, bounded memory) and ``python`` (the slow reference).
Backend modules count the darts *outside* the circle: since ``x*x + y*y < 2**63``, a dart is
outside iff ``(x*x + y*y) >> 62 == 1``, which turns the test into a plain integer sum.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

__all__ = [
    "BACKENDS",
    "BLOCK",
    "GAMMA",
    "LANES",
    "SEED_MAX",
    "available_backends",
    "count_inside_range",
    "default_backend",
    "warm_up",
]

MASK64 = (1 << 64) - 1
"""All counter arithmetic is modulo 2**64."""
MASK32 = (1 << 32) - 1
"""Mask of the low 32 bits (``y`` of the run stream, before its sign is applied)."""
GAMMA = 0x9E3779B97F4A7C15
"""Weyl increment of SplitMix64 (golden ratio): the counter that seeds the lanes."""
MIX1 = 0xBF58476D1CE4E5B9
"""First multiplier of the SplitMix64 finaliser."""
MIX2 = 0x94D049BB133111EB
"""Second multiplier of the SplitMix64 finaliser."""
LIMIT = 1 << 62
"""A dart is inside iff ``x*x + y*y < LIMIT`` (the square of the 31-bit radius)."""
DARTS_MAX = 1 << 64
"""Dart indices are 64-bit: ``start + darts`` may not exceed this."""

BLOCK = 1 << 16
"""Darts per block of the run stream (a power of two, a multiple of :data:`LANES`)."""
LANES = 32
"""Independent xoshiro256++ generators per block; dart ``k`` of a block is on lane ``k % LANES``."""
STEPS = BLOCK // LANES
"""Outputs of each lane per block."""
SEED_MAX = (1 << 63) - 1
"""Largest run seed of :func:`count_inside_range`."""

BACKENDS = ("numba", "numpy", "python")
"""Every backend name, fastest first."""

RangeCounter = Callable[[int, int, int], int]
"""``f(key, start, darts)``: darts outside among the run stream's ``start .. start+darts-1``."""


def _as_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int``; reject bools and non-integers with ``TypeError``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


def splitmix64(z: int) -> int:
    """Return the SplitMix64 finaliser of the 64-bit integer ``z`` (reference, pure Python)."""
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int) -> int:
    """Return the key of the run stream of ``seed``: ``splitmix64(seed)``."""
    return splitmix64(seed)


def block_state(key: int, block: int) -> list[list[int]]:
    """Return the xoshiro256++ states ``[s0, s1, s2, s3]`` of every lane of ``block``.

    Word ``w`` of lane ``j`` is ``splitmix64(key + (4*(block*LANES + j) + w + 1) * GAMMA)``:
    the SplitMix64 generator seeded with ``key``, its outputs taken four at a time. At most
    one word of a lane can be zero (the finaliser is a bijection), so no state is all zeros.
    """
    first = 4 * block * LANES
    return [
        [splitmix64((key + (first + 4 * j + w + 1) * GAMMA) & MASK64) for w in range(4)]
        for j in range(LANES)
    ]


def count_outside_range_python(key: int, start: int, darts: int) -> int:
    """Count darts outside among the run stream's ``start .. start+darts-1`` (reference).

    Every block touched is generated from its first step up to the last dart asked for; darts
    before ``start`` are generated and skipped.
    """
    outside = 0
    end = start + darts
    position = start
    while position < end:
        block, lo = divmod(position, BLOCK)
        hi = min(BLOCK, end - block * BLOCK)
        lanes = block_state(key, block)
        for step in range(-(-hi // LANES)):
            for lane, s in enumerate(lanes):
                s0, s1, s2, s3 = s
                r = (s0 + s3) & MASK64
                r = (((r << 23) | (r >> 41)) + s0) & MASK64
                t = (s1 << 17) & MASK64
                s2 ^= s0
                s3 ^= s1
                s1 ^= s2
                s0 ^= s3
                s2 ^= t
                s3 = ((s3 << 45) | (s3 >> 19)) & MASK64
                s[:] = (s0, s1, s2, s3)
                if lo <= step * LANES + lane < hi:
                    x = r >> 33
                    y = (r & MASK32) - ((r >> 31) & 1) * (1 << 32)
                    outside += x * x + y * y >= LIMIT
        position = block * BLOCK + hi
    return outside


@functools.cache
def _numba_counter() -> RangeCounter | None:
    """Return the numba backend's counter, or ``None`` when numba cannot be imported."""
    try:
        from pi_job.workloads.pi import kernel_numba
    except ImportError:
        return None
    return kernel_numba.count_outside_range


def _range_counter(backend: str) -> RangeCounter:
    """Return the run-stream counter of ``backend`` (``ValueError`` if unavailable)."""
    if backend == "numba":
        counter = _numba_counter()
        if counter is None:
            raise ValueError("backend 'numba' is not available (numba cannot be imported)")
        return counter
    if backend == "numpy":
        from pi_job.workloads.pi import kernel_numpy

        return kernel_numpy.count_outside_range
    if backend == "python":
        return count_outside_range_python
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    """Return the names of the usable backends, fastest first (``python`` is always last)."""
    return [name for name in BACKENDS if name != "numba" or _numba_counter() is not None]


def default_backend() -> str:
    """Return ``"numba"`` when numba can be imported, else ``"numpy"``."""
    return "numba" if _numba_counter() is not None else "numpy"


def _checked_range(seed: object, start: object, darts: object) -> tuple[int, int, int]:
    """The integer ``(seed, start, darts)`` of a count; ``ValueError``/``TypeError`` otherwise."""
    seed, start, darts = _as_int("seed", seed), _as_int("start", start), _as_int("darts", darts)
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be in 0 .. 2**63-1, got {seed}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if darts < 0:
        raise ValueError(f"darts must be >= 0, got {darts}")
    if start + darts > DARTS_MAX:
        raise ValueError(f"start + darts must be <= 2**64, got {start + darts}")
    return seed, start, darts


def count_inside_range(seed: int, start: int, darts: int, backend: str | None = None) -> int:
    """Return how many darts of the run stream of ``seed`` with index ``start .. start+darts-1``
    land inside the circle (probability pi/4 each).

    Exact and split-invariant: ``count_inside_range(s, a, n + m)`` equals
    ``count_inside_range(s, a, n) + count_inside_range(s, a + n, m)`` on every backend, so the
    total of a run does not depend on how it is cut into jobs. ``backend`` is one of
    :func:`available_backends` (default: :func:`default_backend`). Raises ``ValueError`` unless
    ``0 <= seed <= SEED_MAX``, ``start >= 0``, ``darts >= 0`` and ``start + darts <= 2**64``
    (or for an unknown or unavailable backend), and ``TypeError`` for non-integer arguments.
    """
    seed, start, darts = _checked_range(seed, start, darts)
    counter = _range_counter(default_backend() if backend is None else backend)
    if darts == 0:
        return 0
    return darts - counter(stream_key(seed), start, darts)


def warm_up() -> None:
    """Compile (or load from numba's cache) the numba kernel so the first job runs at speed.

    A no-op when numba is not available.
    """
    if _numba_counter() is not None:
        from pi_job.workloads.pi import kernel_numba

        kernel_numba.warm_up()
