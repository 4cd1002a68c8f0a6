"""Example workload: count the primes below N with a segmented sieve, one segment per job."""

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from pi_job.core import argtypes
from pi_job.core.envelope import InvalidBodyError, Payload, check_exact_keys, int_field
from pi_job.errors import RunError, UsageError
from pi_job.workloads.base import Fold, JobContext, Prepared, Workload

LIMIT, SEGMENT = 10**12, 10**7


class Primes(Workload):
    name = "primes"
    description = "count the primes below N (segmented sieve of Eratosthenes)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--below", type=argtypes.count(LIMIT), help="primes: the bound N")

    def parameters(self, args: argparse.Namespace, workers: int, max_body: int = 0) -> Any:
        if args.below is None:
            raise UsageError("primes needs --below N")
        return {"below": args.below, "segment": SEGMENT}

    def prepare(self, params: dict[str, Any], seed: int, run_dir: Path) -> Prepared:
        return Prepared(jobs=-(-params["below"] // params["segment"]), inputs={})

    def job(self, params: dict[str, Any], seed: int, run_dir: Path, index: int) -> Any:
        start, size = index * params["segment"], params["segment"]
        return {"start": start, "stop": min(params["below"], start + size)}, b""

    def compute(self, spec: dict[str, Any], payload: Payload, context: JobContext) -> Any:
        check_exact_keys(spec, frozenset({"start", "stop"}), "spec")
        start, stop = int_field(spec, "start", 0, LIMIT), int_field(spec, "stop", 1, LIMIT)
        if stop <= start or stop - start > SEGMENT:
            raise InvalidBodyError(f"bad segment [{start}, {stop})")
        root = math.isqrt(stop - 1)
        small = np.ones(root + 1, dtype=bool)  # the primes up to sqrt(stop), sieved here
        small[:2] = False
        for p in range(2, math.isqrt(root) + 1):
            if small[p]:
                small[p * p :: p] = False
        sieve = np.ones(stop - start, dtype=bool)  # then the segment, by those primes
        sieve[: max(0, 2 - start)] = False
        for p in np.flatnonzero(small).tolist():
            first = max(p * p, -(-start // p) * p)
            sieve[first - start :: p] = False
        return {"start": start, "count": int(sieve.sum())}, b""

    def check_answer(
        self, params: dict[str, Any], index: int, value: Any, payload: Payload
    ) -> None:
        check_exact_keys(value, frozenset({"start", "count"}), "answer")
        if value["start"] != index * params["segment"] or payload:
            raise InvalidBodyError(f"answer for segment {value['start']} in job {index}")
        int_field(value, "count", 0, params["segment"])

    def fold(self, params: dict[str, Any], seed: int, jobs: int, run_dir: Path) -> Fold:
        return PrimeCount(params)


class PrimeCount(Fold):
    def __init__(self, params: dict[str, Any]) -> None:
        self.params, self.total = params, 0

    def restore(self, job: int, value: dict[str, Any]) -> None:
        self.total += value["count"]

    def summary(self, seconds: float) -> dict[str, Any]:
        return {"below": self.params["below"], "primes": self.total}

    def verify(self) -> dict[str, Any]:
        n = self.params["below"]  # pi(n) lies between n/ln n and 1.26 n/ln n (Rosser, Schoenfeld)
        if n > 17 and not n / math.log(n) <= self.total <= 1.25506 * n / math.log(n):
            raise RunError(f"{self.total} primes below {n} is outside Rosser's bounds")
        return {"bounds": "Rosser-Schoenfeld", "ok": True}
