"""The run-stream dart kernel against hand-written C of the same stream, one core, one run.

Writes a small C program (below) to a temporary directory, compiles it with
``gcc -O3 -march=native`` and times, in the same process run and interleaved round by round
(this machine is shared; the best of several repetitions is kept):

- ``C``: the stream of ``count_inside_range`` (CONTRACT.md, "Kernel") written by hand with
  AVX-512 intrinsics (``vprolq``, ``vpternlogq``, ``vpmuldq``), four ``zmm`` vectors per state
  word; without AVX-512 the same loops in portable C, left to gcc's vectoriser;
- ``numba``, ``numpy`` and ``python``: :func:`pi_job.workloads.pi.kernel.count_inside_range`.

The C program counts whole blocks and its count must equal the package's for the same darts
("same stream"). Prints the CPU model, darts/s per core of each and the ratio numba / C.

    .venv/bin/python pi_job/benchmarks/kernel_vs_c.py [--rounds 15] [--blocks 1024] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pi_job.workloads.pi import kernel

C_SOURCE = r"""
/* The run stream of pi_job's count_inside_range, whole blocks only. Usage:
 *   darts SEED FIRST_BLOCK BLOCKS REPS  ->  prints "KIND INSIDE BEST_SECONDS" */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LANES 32
#define BLOCK 65536
#define STEPS (BLOCK / LANES)
#define GAMMA 0x9E3779B97F4A7C15ULL

static uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Word w of lane j of block b: output 4*(b*LANES + j) + w of SplitMix64 seeded with key. */
static void seed_block(uint64_t key, uint64_t block, uint64_t s[4][LANES]) {
    for (int j = 0; j < LANES; j++)
        for (int w = 0; w < 4; w++)
            s[w][j] = splitmix64(key + (4 * (block * LANES + j) + w + 1) * GAMMA);
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define KIND "avx512-intrinsics"
#define V (LANES / 8)
/* Darts outside among the BLOCK darts of one block. */
static uint64_t block_outside(uint64_t s[4][LANES]) {
    __m512i s0[V], s1[V], s2[V], s3[V], acc[V];
    for (int v = 0; v < V; v++) {
        s0[v] = _mm512_loadu_si512(&s[0][8 * v]);
        s1[v] = _mm512_loadu_si512(&s[1][8 * v]);
        s2[v] = _mm512_loadu_si512(&s[2][8 * v]);
        s3[v] = _mm512_loadu_si512(&s[3][8 * v]);
        acc[v] = _mm512_setzero_si512();
    }
    for (int t = 0; t < STEPS; t++) {
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) {
            /* r = rotl(s0 + s3, 23) + s0; x = r >> 33; y = (int32_t)r */
            __m512i r = _mm512_rol_epi64(_mm512_add_epi64(s0[v], s3[v]), 23);
            r = _mm512_add_epi64(r, s0[v]);
            __m512i x = _mm512_srli_epi64(r, 33);
            __m512i q = _mm512_add_epi64(_mm512_mul_epu32(x, x), _mm512_mul_epi32(r, r));
            acc[v] = _mm512_add_epi64(acc[v], _mm512_srli_epi64(q, 62));
            __m512i t17 = _mm512_slli_epi64(s1[v], 17);
            __m512i a = _mm512_xor_si512(s3[v], s1[v]);
            __m512i n1 = _mm512_ternarylogic_epi64(s1[v], s2[v], s0[v], 0x96);
            __m512i n2 = _mm512_ternarylogic_epi64(s2[v], s0[v], t17, 0x96);
            s0[v] = _mm512_xor_si512(s0[v], a);
            s1[v] = n1;
            s2[v] = n2;
            s3[v] = _mm512_rol_epi64(a, 45);
        }
    }
    __m512i sum = acc[0];
    for (int v = 1; v < V; v++) sum = _mm512_add_epi64(sum, acc[v]);
    return (uint64_t)_mm512_reduce_add_epi64(sum);
}
#else
#define KIND "portable-c"
static uint64_t block_outside(uint64_t s[4][LANES]) {
    uint64_t acc[LANES] = {0};
    for (int t = 0; t < STEPS; t++) {
        for (int j = 0; j < LANES; j++) {
            uint64_t s0 = s[0][j], s1 = s[1][j], s2 = s[2][j], s3 = s[3][j];
            uint64_t r = s0 + s3;
            r = ((r << 23) | (r >> 41)) + s0;
            uint64_t x = r >> 33;
            int64_t y = (int32_t)(uint32_t)r;
            acc[j] += (x * x + (uint64_t)(y * y)) >> 62;
            uint64_t t17 = s1 << 17;
            s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t17;
            s[0][j] = s0; s[1][j] = s1; s[2][j] = s2; s[3][j] = (s3 << 45) | (s3 >> 19);
        }
    }
    uint64_t outside = 0;
    for (int j = 0; j < LANES; j++) outside += acc[j];
    return outside;
}
#endif

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    uint64_t seed = strtoull(argv[1], 0, 0), first = strtoull(argv[2], 0, 0);
    uint64_t blocks = strtoull(argv[3], 0, 0), reps = strtoull(argv[4], 0, 0);
    uint64_t key = splitmix64(seed), inside = 0;
    double best = 1e300;
    static uint64_t s[4][LANES] __attribute__((aligned(64)));
    for (uint64_t rep = 0; rep < reps; rep++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        uint64_t outside = 0;
        for (uint64_t b = first; b < first + blocks; b++) {
            seed_block(key, b, s);
            outside += block_outside(s);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (sec < best) best = sec;
        inside = blocks * BLOCK - outside;
    }
    printf("%s %llu %.9f\n", KIND, (unsigned long long)inside, best);
    return 0;
}
"""

SEED = 2026
"""Run seed of the timed darts (the speed does not depend on it)."""


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llvm_cpu_name() -> str:
    """LLVM's name of this CPU (what numba compiles for), or ``?``."""
    try:
        import llvmlite.binding as llvm  # type: ignore[import-untyped]

        return str(llvm.get_host_cpu_name())
    except ImportError:
        return "?"


def build(directory: Path) -> Path:
    """Write and compile the C program; return the executable."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc (or cc) is needed to build the C kernel")
    source = directory / "darts.c"
    source.write_text(C_SOURCE)
    binary = directory / "darts"
    subprocess.run([gcc, "-O3", "-march=native", str(source), "-o", str(binary)], check=True)
    return binary


def time_c(binary: Path, first_block: int, blocks: int, reps: int) -> tuple[str, int, float]:
    """Run the C program; return its kind, count and best seconds."""
    done = subprocess.run(
        [str(binary), str(SEED), str(first_block), str(blocks), str(reps)],
        capture_output=True,
        text=True,
        check=True,
    )
    kind, inside, seconds = done.stdout.split()
    return kind, int(inside), float(seconds)


def time_backend(backend: str, start: int, darts: int, reps: int) -> tuple[int, float]:
    """Best seconds of ``reps`` counts of ``darts`` darts from ``start`` with ``backend``."""
    best = float("inf")
    inside = 0
    for _ in range(reps):
        began = time.perf_counter()
        inside = kernel.count_inside_range(SEED, start, darts, backend)
        best = min(best, time.perf_counter() - began)
    return inside, best


def measure(rounds: int, blocks: int, reps: int) -> dict[str, Any]:
    """Time C and every backend; return the figures (darts/s per core) and checks."""
    kernel.warm_up()
    darts = blocks * kernel.BLOCK
    rates: dict[str, float] = {}
    same_stream = True
    kind = "?"
    with tempfile.TemporaryDirectory(prefix="kernel_vs_c.") as tmp:
        binary = build(Path(tmp))
        for round_ in range(rounds):
            first = round_ * blocks  # fresh darts every round
            kind, c_inside, c_seconds = time_c(binary, first, blocks, reps)
            rates["C"] = max(rates.get("C", 0.0), darts / c_seconds)
            if "numba" in kernel.available_backends():
                inside, seconds = time_backend("numba", first * kernel.BLOCK, darts, reps)
                rates["numba"] = max(rates.get("numba", 0.0), darts / seconds)
                same_stream &= inside == c_inside
        # The slow ones: a few blocks (numpy) and a fraction of one (python), checked against C.
        small = max(1, blocks // 2)
        kind, c_inside, _ = time_c(binary, 0, small, 1)
        inside, seconds = time_backend("numpy", 0, small * kernel.BLOCK, 2)
        rates["numpy"] = small * kernel.BLOCK / seconds
        same_stream &= inside == c_inside
        kind, c_inside, _ = time_c(binary, 0, 1, 1)
        inside, seconds = time_backend("python", 0, kernel.BLOCK, 1)
        rates["python"] = kernel.BLOCK / seconds
        same_stream &= inside == c_inside
    ratio = rates["numba"] / rates["C"] if "numba" in rates else None
    return {
        "cpu": cpu_model(),
        "llvm_cpu": llvm_cpu_name(),
        "c_kind": kind,
        "rates": rates,
        "numba_over_c": ratio,
        "same_stream": same_stream,
        "rounds": rounds,
        "darts_per_timing": darts,
    }


def main(argv: list[str] | None = None) -> int:
    """Build, time and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    parser.add_argument("--blocks", type=int, default=1024, help="blocks per timing (1024)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per round (3)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if min(args.rounds, args.blocks, args.reps) < 1:
        parser.error("--rounds, --blocks and --reps must be >= 1")
    result = measure(args.rounds, args.blocks, args.reps)
    if args.json:
        print(json.dumps(result))
        return 0 if result["same_stream"] else 1
    print(f"CPU: {result['cpu']} (LLVM: {result['llvm_cpu']}); C kernel: {result['c_kind']}")
    print(f"{'kernel':<7} {'darts/s/core':>13} {'vs C':>6}")
    c_rate = result["rates"]["C"]
    for name, rate in result["rates"].items():
        print(f"{name:<7} {rate:13.3e} {rate / c_rate:6.3f}")
    ratio = result["numba_over_c"]
    print(f"numba / C = {ratio:.3f}" if ratio is not None else "numba: not available")
    print(f"same stream (counts equal C's): {'yes' if result['same_stream'] else 'NO'}")
    sys.stdout.flush()
    return 0 if result["same_stream"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
