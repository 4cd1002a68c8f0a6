"""Tests of the dart kernel: exactness, determinism, chunk and backend invariance."""

from __future__ import annotations

import itertools
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pi_job
from pi_job.workloads.pi import kernel, kernel_numba, kernel_numpy
from pi_job.workloads.pi.kernel import (
    available_backends,
    count_inside,
    default_backend,
    job_seed,
    warm_up,
)

M64 = (1 << 64) - 1
FAST = ["numba", "numpy"]
SRC = str(Path(pi_job.__file__).resolve().parents[1])


def contract_count(seed: int, darts: int, start: int = 0) -> int:
    """The contract's formula, written out independently of the package (slow)."""
    inside = 0
    for i in range(start, start + darts):
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        z ^= z >> 31
        x, y = z >> 33, z & (2**31 - 1)
        inside += x * x + y * y < 2**62
    return inside


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


SEEDS = [0, 1, 12345, M64, job_seed(2026, 7)]


@pytest.mark.parametrize("seed", SEEDS)
def test_python_backend_matches_contract_formula(seed):
    for start, darts in [(0, 0), (0, 1), (0, 100), (3, 50), (2**64 - 40, 40)]:
        expected = contract_count(seed, darts, start)
        assert count_inside(seed, darts, start, backend="python") == expected


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("darts", [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 2**16 + 3])
def test_backends_agree_on_small_counts(seed, darts):
    expected = count_inside(seed, darts, backend="python")
    for backend in FAST:
        assert count_inside(seed, darts, backend=backend) == expected
        assert count_inside(seed, darts, start=2**64 - darts, backend=backend) == count_inside(
            seed, darts, start=2**64 - darts, backend="python"
        )


def test_numba_equals_numpy_on_ten_million():
    seed = job_seed(1, 2)
    darts = 10**7 + 3
    assert count_inside(seed, darts, 5, "numba") == count_inside(seed, darts, 5, "numpy")


def test_count_is_a_python_int():
    for backend in available_backends():
        assert type(count_inside(1, 10, backend=backend)) is int


def split_points(total: int, rng: random.Random) -> list[int]:
    """Cut ``0 .. total`` into chunks of random sizes, including single darts."""
    points = [0]
    while points[-1] < total:
        step = rng.choice([1, 1, 2, 3, 15, 16, 17, 255, 4096, 2**16 + 1, 2**17 + 3])
        points.append(min(total, points[-1] + step))
    return points


@pytest.mark.parametrize("backend", FAST)
def test_any_split_gives_the_same_count(backend):
    seed = job_seed(99, 3)
    total = 3 * 2**17 + 11
    whole = count_inside(seed, total, backend=backend)
    rng = random.Random(4)
    for _ in range(3):
        points = split_points(total, rng)
        parts = [
            count_inside(seed, b - a, start=a, backend=backend)
            for a, b in itertools.pairwise(points)
        ]
        assert sum(parts) == whole
    for size in (15, 17, 2**17 + 3):
        parts = [
            count_inside(seed, min(size, total - a), start=a, backend=backend)
            for a in range(0, total, size)
        ]
        assert sum(parts) == whole
    ones = [count_inside(seed, 1, start=a, backend=backend) for a in range(3000)]
    assert sum(ones) == count_inside(seed, 3000, backend=backend)


def test_additivity_identity():
    seed = job_seed(5, 0)
    for a, b in [(1, 1), (17, 15), (2**16 + 3, 2**17 - 1), (10**6, 10**6 + 1)]:
        assert count_inside(seed, a + b) == count_inside(seed, a) + count_inside(seed, b, start=a)


def test_internal_chunk_sizes_do_not_change_counts(monkeypatch):
    seed = job_seed(8, 8)
    darts = 10_007
    expected = count_inside(seed, darts, 3, "python")
    for chunk in (1, 5, 16, 4096):
        monkeypatch.setattr(kernel_numpy, "CHUNK", chunk)
        assert count_inside(seed, darts, 3, "numpy") == expected
    for slice_size in (1, 7, 1024):
        monkeypatch.setattr(kernel_numba, "SLICE", slice_size)
        assert count_inside(seed, darts, 3, "numba") == expected


def test_full_64_bit_range_is_accepted():
    assert count_inside(7, 10, start=2**64 - 10) == count_inside(7, 10, 2**64 - 10, "python")
    assert count_inside(M64, 1, start=M64) in (0, 1)


def test_estimate_is_within_five_standard_errors():
    darts = 10**8
    inside = count_inside(job_seed(2026, 0), darts)
    p = math.pi / 4
    std_error = 4 * math.sqrt(p * (1 - p) / darts)
    assert abs(4 * inside / darts - math.pi) < 5 * std_error


def test_job_seed_is_deterministic_and_matches_seed_sequence():
    for run_seed, index in [(0, 0), (1, 2), (2**64 - 1, 10**6), (2**80, 3)]:
        expected = np.random.SeedSequence(run_seed, spawn_key=(index,)).generate_state(
            1, np.uint64
        )[0]
        assert job_seed(run_seed, index) == int(expected)
        assert job_seed(run_seed, index) == job_seed(run_seed, index)
        assert 0 <= job_seed(run_seed, index) <= M64
        assert type(job_seed(run_seed, index)) is int


def test_job_seeds_are_distinct():
    seeds = {job_seed(run, index) for run in range(5) for index in range(2000)}
    assert len(seeds) == 5 * 2000


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((-1, 10), {}),
        ((2**64, 10), {}),
        ((1, -1), {}),
        ((1, 10), {"start": -1}),
        ((1, 11), {"start": 2**64 - 10}),
        ((1, 2**64 + 1), {}),
        ((1, 10), {"backend": "fortran"}),
    ],
)
def test_invalid_arguments_raise_value_error(args, kwargs):
    with pytest.raises(ValueError):
        count_inside(*args, **kwargs)


@pytest.mark.parametrize("bad", [1.0, "1", None, True])
def test_non_integers_raise_type_error(bad):
    with pytest.raises(TypeError):
        count_inside(bad, 10)
    with pytest.raises(TypeError):
        count_inside(1, bad)
    with pytest.raises(TypeError):
        job_seed(bad, 0)


def test_numpy_integers_are_accepted():
    assert count_inside(np.uint64(M64), np.int64(100), np.uint8(3)) == count_inside(M64, 100, 3)


@pytest.mark.parametrize(("run_seed", "index"), [(-1, 0), (0, -1)])
def test_job_seed_rejects_negative_arguments(run_seed, index):
    with pytest.raises(ValueError):
        job_seed(run_seed, index)


def test_backends_with_numba_installed():
    assert available_backends() == ["numba", "numpy", "python"]
    assert default_backend() == "numba"


def test_warm_up_compiles_the_numba_kernel():
    warm_up()
    assert kernel_numba._kernel.signatures  # compiled (or loaded from the cache)


def test_fresh_numba_compile_matches_the_reference():
    """The uncached JIT code, whatever vector width LLVM picks on this CPU, counts exactly.

    Lengths straddle every lane count a vectoriser may use (remainder loops included);
    the speed is a benchmark figure (``pi-job bench``), not a test.
    """
    jitted = kernel_numba._compile(cache=False)
    for base in (1, 0x9E3779B97F4A7C15, 2**64 - 1):
        for n in (1, 7, 8, 9, 31, 33, 64, 65, 1000):
            outside = int(jitted(np.uint64(base), np.uint64(n)))
            assert outside == kernel.count_outside_python(base, n)


def test_numpy_fallback_without_numba():
    out = run_python(
        """
        import sys
        sys.modules["numba"] = None  # makes "import numba" raise ImportError
        from pi_job.workloads.pi import kernel
        print(kernel.default_backend(), kernel.available_backends())
        kernel.warm_up()
        print(kernel.count_inside(11, 1000), kernel.count_inside(11, 1000, backend="python"))
        try:
            kernel.count_inside(11, 1000, backend="numba")
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
        print(kernel.default_backend(), kernel.count_inside(3, 1000))
        print(kernel.count_inside(3, 1000, backend="python"))
        print(type(kernel_numba._kernel._cache).__name__)
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
        print(kernel.count_inside(3, 1000), kernel.count_inside(3, 1000, backend="python"))
        print(type(kernel_numba._kernel._cache).__name__)
        """
    )
    first, second, cache = out.split()
    assert first == second
    assert cache == "NullCache"
