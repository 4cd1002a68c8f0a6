"""Tests of the dart kernel (the run stream, ``count_inside_range``): exactness, determinism,
split, chunk and backend invariance. Nothing here depends on the CPU: counts are compared,
never instructions or speeds.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import pi_job
from pi_job.workloads.pi import kernel, kernel_numba, kernel_numpy
from pi_job.workloads.pi.kernel import (
    BLOCK,
    LANES,
    available_backends,
    count_inside_range,
    default_backend,
    warm_up,
)

FAST = ["numba", "numpy"]
SRC = str(Path(pi_job.__file__).resolve().parents[1])


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter that imports this package; return its stdout."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join([SRC, full_env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- the run stream ----------------------------------------------------------------------------


def _splitmix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def _rotl(v: int, k: int) -> int:
    return ((v << k) | (v >> (64 - k))) % 2**64


def _xoshiro256pp(s: list[int]) -> Iterator[int]:
    """xoshiro256++ as published (Blackman & Vigna), one output per step."""
    s = list(s)
    while True:
        yield (_rotl((s[0] + s[3]) % 2**64, 23) + s[0]) % 2**64
        t = (s[1] << 17) % 2**64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)


def contract_range_count(seed: int, start: int, darts: int) -> int:
    """CONTRACT.md's run stream, written out independently of the package (slow)."""
    key = _splitmix64(seed)
    blocks: dict[int, list[int]] = {}
    inside = 0
    for i in range(start, start + darts):
        b, k = divmod(i, 2**16)
        if b not in blocks:
            lanes = [
                _xoshiro256pp(
                    [
                        _splitmix64((key + (4 * (b * 32 + j) + w + 1) * 0x9E3779B97F4A7C15) % 2**64)
                        for w in range(4)
                    ]
                )
                for j in range(32)
            ]
            last = (min(start + darts, (b + 1) * 2**16) - 1 - b * 2**16) // 32
            blocks[b] = [next(lanes[j]) for _ in range(last + 1) for j in range(32)]
        r = blocks[b][k]
        x, y = r >> 33, ctypes.c_int32(r & (2**32 - 1)).value  # low half, two's complement
        inside += x * x + y * y < 2**62
    return inside


RANGE_SEEDS = [0, 1, 12345, 2**63 - 1, 3102501257819834503]


def test_stream_layout_constants():
    assert BLOCK == 2**16
    assert LANES == 32


@pytest.mark.parametrize(
    ("seed", "start", "darts"),
    [
        (0, 0, 0),
        (0, 0, 1),
        (1, 0, 100),
        (12345, 3, 50),
        (7, 2**16 - 40, 80),
        (2**63 - 1, 2**64 - 40, 40),
    ],
)
def test_python_range_matches_contract_formula(seed, start, darts):
    assert count_inside_range(seed, start, darts, "python") == contract_range_count(
        seed, start, darts
    )


@pytest.mark.parametrize(
    ("seed", "start", "darts", "inside"),
    [
        (0, 0, 65536, 51456),
        (1, 0, 131072, 103044),
        (2**63 - 1, 2**64 - 1000, 1000, 779),
        (12345, 3 * 65536 - 17, 50, 42),
        (7, 10**9 + 3, 2000, 1563),
    ],
)
def test_pinned_range_counts(seed, start, darts, inside):
    """Pinned values (checked against the pure-Python reference): the stream never changes."""
    for backend in available_backends():
        assert count_inside_range(seed, start, darts, backend) == inside


def test_pinned_million_matches_reference():
    expected = 786111
    assert count_inside_range(2026, 0, 10**6, "python") == expected
    for backend in FAST:
        assert count_inside_range(2026, 0, 10**6, backend) == expected


def _edges() -> list[tuple[int, int]]:
    """Ranges starting and ending around block and lane boundaries."""
    ranges = []
    for block in (0, 1, 5, 2**47):
        for delta in (-33, -32, -31, -1, 0, 1, 31, 32, 33):
            begin = max(0, block * BLOCK + delta)
            for length in (1, 2, 31, 32, 33, 64, 65):
                ranges.append((begin, length))
    return ranges


@pytest.mark.parametrize("seed", [0, 2**63 - 1, 987654321])
def test_backends_identical_on_block_and_lane_edges(seed):
    for begin, length in _edges():
        expected = count_inside_range(seed, begin, length, "python")
        for backend in FAST:
            assert count_inside_range(seed, begin, length, backend) == expected, (begin, length)


@pytest.mark.parametrize("seed", RANGE_SEEDS)
def test_fast_backends_identical_on_long_straddling_ranges(seed):
    for begin in (0, 1, 31, 32, 33, BLOCK - 1, BLOCK + 17, 7 * BLOCK - 5):
        for length in (BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 5, 3 * BLOCK - 33, 10**6 + 7):
            counts = {count_inside_range(seed, begin, length, b) for b in FAST}
            assert len(counts) == 1, (begin, length, counts)


def test_python_identical_on_a_range_over_three_blocks():
    begin, length = BLOCK - 45, 2 * BLOCK + 90
    expected = count_inside_range(5, begin, length, "python")
    for backend in FAST:
        assert count_inside_range(5, begin, length, backend) == expected


def _cuts(total: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(size, total - a)) for a in range(0, total, size)]


def test_split_invariance_at_job_scale():
    """Jobs of 1e6 and 1e7 darts, odd sizes and single blocks sum to one range of 1e8+7."""
    seed = 2026
    total = 10**8 + 7
    whole = count_inside_range(seed, 0, total)
    for size in (10**6, 10**7, 3 * 10**7 + 1, BLOCK, BLOCK + 1, 999_983):
        assert sum(count_inside_range(seed, a, n) for a, n in _cuts(total, size)) == whole


@pytest.mark.parametrize("backend", ["numba", "numpy", "python"])
def test_any_split_of_a_range_gives_the_same_count(backend):
    total = {"numba": 3 * BLOCK + 11, "numpy": 3 * BLOCK + 11, "python": 2 * BLOCK + 11}[backend]
    begin = BLOCK - 100  # ranges straddle blocks
    whole = count_inside_range(3, begin, total, backend)
    rng = random.Random(4)
    points = [0]
    while points[-1] < total:
        step = rng.choice([1, 2, 31, 32, 33, 1000, BLOCK - 1, BLOCK + 1])
        points.append(min(total, points[-1] + step))
    parts = [
        count_inside_range(3, begin + a, b - a, backend) for a, b in itertools.pairwise(points)
    ]
    assert sum(parts) == whole
    if backend != "python":
        for size in (1_000_003, 10**4 + 1, 1):
            cuts = _cuts(total, size) if size > 1 else _cuts(3000, 1)
            expected = whole if size > 1 else count_inside_range(3, begin, 3000, backend)
            assert sum(count_inside_range(3, begin + a, n, backend) for a, n in cuts) == expected


def test_internal_batch_and_slice_sizes_do_not_change_range_counts(monkeypatch):
    begin, length = BLOCK - 77, 3 * BLOCK + 5
    expected = count_inside_range(9, begin, length, "numba")
    for batch in (1, 2, 3):
        monkeypatch.setattr(kernel_numpy, "BATCH", batch)
        assert count_inside_range(9, begin, length, "numpy") == expected
    for slice_size in (1000, BLOCK, BLOCK + 1):
        monkeypatch.setattr(kernel_numba, "SLICE", slice_size)
        assert count_inside_range(9, begin, length, "numba") == expected


def test_range_estimate_is_within_five_standard_errors():
    darts = 2 * 10**8
    inside = count_inside_range(2026, 0, darts)
    p = math.pi / 4
    std_error = 4 * math.sqrt(p * (1 - p) / darts)
    assert abs(4 * inside / darts - math.pi) < 5 * std_error


def test_seeds_and_offsets_give_different_streams():
    counts = {count_inside_range(seed, 0, BLOCK) for seed in range(20)}
    assert len(counts) > 10
    assert count_inside_range(1, 0, BLOCK) != count_inside_range(1, BLOCK, BLOCK)


def test_range_count_is_a_python_int():
    for backend in available_backends():
        assert type(count_inside_range(1, 5, 10, backend)) is int
        assert count_inside_range(1, 5, 0, backend) == 0


def test_full_64_bit_range_end_is_accepted():
    for backend in available_backends():
        assert count_inside_range(2**63 - 1, 2**64 - 1, 1, backend) in (0, 1)
        assert count_inside_range(3, 2**64 - 70, 70, backend) == contract_range_count(
            3, 2**64 - 70, 70
        )


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, 10),
        (2**63, 0, 10),
        (1, -1, 10),
        (1, 0, -1),
        (1, 2**64 - 10, 11),
        (1, 0, 2**64 + 1),
    ],
)
def test_range_rejects_bad_values(args):
    for backend in (*available_backends(), None):
        with pytest.raises(ValueError):
            count_inside_range(*args, backend=backend)


def test_range_rejects_unknown_backend():
    with pytest.raises(ValueError):
        count_inside_range(1, 0, 10, backend="fortran")


@pytest.mark.parametrize("bad", [1.0, "1", None, True])
def test_range_rejects_non_integers(bad):
    for args in ((bad, 0, 1), (1, bad, 1), (1, 0, bad)):
        with pytest.raises(TypeError):
            count_inside_range(*args)


def test_range_accepts_numpy_integers():
    assert count_inside_range(np.int64(5), np.uint64(3), np.uint8(100)) == count_inside_range(
        5, 3, 100
    )


def test_fresh_numba_range_compile_matches_the_reference():
    """The uncached JIT code, whatever vectors this CPU has, counts exactly."""
    jitted = kernel_numba._compile(False, kernel_numba._outside_range)
    key = kernel.stream_key(77)
    for begin, length in [(0, 1), (0, 64), (5, 100), (BLOCK - 33, 70), (3 * BLOCK + 31, 33)]:
        outside = int(jitted(np.uint64(key), np.uint64(begin), np.uint64(length)))
        assert outside == kernel.count_outside_range_python(key, begin, length)


def test_backends_with_numba_installed():
    assert available_backends() == ["numba", "numpy", "python"]
    assert default_backend() == "numba"


def test_warm_up_compiles_the_numba_kernel():
    warm_up()
    assert kernel_numba._range_kernel.signatures  # compiled (or loaded from the cache)


def test_numpy_fallback_without_numba():
    out = run_python(
        """
        import sys
        sys.modules["numba"] = None  # makes "import numba" raise ImportError
        from pi_job.workloads.pi import kernel
        print(kernel.default_backend(), kernel.available_backends())
        kernel.warm_up()
        print(kernel.count_inside_range(11, 65500, 100),
              kernel.count_inside_range(11, 65500, 100, backend="python"))
        try:
            kernel.count_inside_range(11, 0, 1000, backend="numba")
        except ValueError:
            print("ValueError")
        """
    )
    lines = out.splitlines()
    assert lines[0] == "numpy ['numpy', 'python']"
    first, second = lines[1].split()
    assert first == second
    assert lines[2] == "ValueError"


def test_kernel_works_without_a_writable_numba_cache():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = run_python(
        """
        import warnings
        warnings.simplefilter("error")
        import numba.core.caching as caching

        def read_only(self):
            raise PermissionError(13, "Read-only file system", self.get_cache_path())

        caching._CacheLocator.ensure_cache_path = read_only
        from pi_job.workloads.pi import kernel
        from pi_job.workloads.pi import kernel_numba
        kernel.warm_up()
        print(kernel.default_backend(), kernel.count_inside_range(3, 65500, 100))
        print(kernel.count_inside_range(3, 65500, 100, backend="python"))
        print(type(kernel_numba._range_kernel._cache).__name__)
        """,
        env,
    )
    first, second, cache = out.splitlines()
    assert first == f"numba {second}"
    assert cache == "NullCache"  # compiled in memory


def test_kernel_survives_a_cache_write_failure():
    out = run_python(
        """
        import numba.core.caching as caching

        def fail(self, sig, data):
            raise OSError(28, "No space left on device")

        caching.Cache.save_overload = fail
        caching.Cache.load_overload = lambda self, sig, ctx: None
        from pi_job.workloads.pi import kernel
        from pi_job.workloads.pi import kernel_numba
        kernel.warm_up()
        print(kernel.count_inside_range(3, 65500, 100),
              kernel.count_inside_range(3, 65500, 100, backend="python"))
        print(type(kernel_numba._range_kernel._cache).__name__)
        """
    )
    first, second, cache = out.split()
    assert first == second
    assert cache == "NullCache"
