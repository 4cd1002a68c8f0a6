"""Cost of signed bodies: microseconds added per pi job, and MAC throughput on bulk payloads.

Per pi job: the master signs the job, a worker verifies it and signs its answer, the master
verifies the answer. Measured as encode+decode with the cluster key minus the same without a
key (the difference is what signing adds). Bulk: verifying one signed answer whose payload is
4 MiB or 16 MiB (one SHA-256 of the payload plus one HMAC over the small header).

    python benchmarks/signing.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from pi_job.core.envelope import Answer, Job, decode_answer, decode_job
from pi_job.core.signing import Keyring


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else the platform's)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def per_job_seconds(keyring: Keyring | None, repeat: int) -> float:
    """Seconds for one round trip of a pi job and its answer through encode and decode."""
    nonce = os.urandom(16).hex()
    spec = {"seed": 123456789012345, "start": 40_000_000_000, "darts": 1_000_000_000}
    value = {"darts": 1_000_000_000, "inside": 785_398_163, "backend": "numba"}
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for index in range(repeat):
            body = Job("r20261127-abcdef", index, "pi", spec, nonce=nonce).encode(keyring)
            job = decode_job(body, keyring)
            answer = Answer(job.run, job.job, "worker1", "worker1-3", 1.000123, 1, value)
            decode_answer(answer.encode(keyring), keyring)
        best = min(best, (time.perf_counter() - started) / repeat)
    return best


def bulk_gbps(keyring: Keyring, size: int) -> float:
    """GB/s of verifying a signed answer with a ``size``-byte payload (best of several)."""
    payload = os.urandom(size)
    body = Answer("r1", 0, "h", "w", 1.0, 1, {"rows": [0, 16]}, payload, "a" * 32).encode(keyring)
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        decode_answer(body, keyring)
        best = min(best, time.perf_counter() - started)
    return size / best / 1e9


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args()
    keyring = Keyring((os.urandom(32),), "benchmark")
    plain = per_job_seconds(None, args.repeat)
    signed = per_job_seconds(keyring, args.repeat)
    print(f"cpu: {cpu_model()}")
    print(
        f"per pi job (sign+verify of the job and of its answer): {1e6 * (signed - plain):.1f} us "
        f"added ({1e6 * plain:.1f} us unsigned, {1e6 * signed:.1f} us signed; goal <= 20 us)"
    )
    for mib in (4, 16):
        print(
            f"MAC verify, {mib} MiB payload: {bulk_gbps(keyring, mib * 2**20):.2f} GB/s "
            "(goal >= 1 GB/s)"
        )


if __name__ == "__main__":
    main()
