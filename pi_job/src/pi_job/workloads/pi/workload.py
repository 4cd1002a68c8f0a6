"""Monte-Carlo pi on the workload interface: darts split into jobs, counts summed exactly."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any, Final

from pi_job.core import argtypes
from pi_job.core.envelope import InvalidBodyError, Payload, check_exact_keys, int_field, text_field
from pi_job.errors import RunError, UsageError
from pi_job.limits import MAX_DARTS, MAX_JOB_DARTS, MAX_JOBS, MAX_SEED
from pi_job.workloads.base import MAX_BODY, Fold, JobContext, Prepared, Workload
from pi_job.workloads.pi import kernel
from pi_job.workloads.pi.stats import estimate

DARTS_PER_SECOND_GUESS: Final = 10**9
"""Assumed speed of one worker, used to size jobs at about one second of work."""
DEFAULT_JOB_DARTS: Final = DARTS_PER_SECOND_GUESS
JOBS_PER_WORKER: Final = 4
"""Minimum number of jobs per connected worker, so that small runs use every worker."""
CHUNK_DARTS: Final = {"numba": 2**25, "numpy": 2**22, "python": 2**16}
"""Darts per chunk between progress ticks: roughly 10-50 ms of work for each backend."""

TAIL_SHARE: Final = 2
"""Guided self-scheduling: near the end a job takes 1/(TAIL_SHARE * workers) of what is left."""
MIN_TAIL_DARTS: Final = 10**7
"""Smallest job the tail shrinks to (~5 ms of work): the queue's per-job cost stays negligible."""

_SPEC_KEYS: Final = frozenset({"seed", "start", "darts"})
_VALUE_KEYS: Final = frozenset({"darts", "inside", "backend"})


def job_count(darts: int, job_darts: int | None, workers: int) -> int:
    """Choose the number of jobs.

    With ``job_darts`` given: ``ceil(darts / job_darts)``. Otherwise jobs of at most
    :data:`DEFAULT_JOB_DARTS` (about a second of work), and at least :data:`JOBS_PER_WORKER`
    per connected worker (``workers`` >= 1), never more jobs than darts.
    """
    size = DEFAULT_JOB_DARTS if job_darts is None else job_darts
    jobs = -(-darts // size)
    if jobs > MAX_JOBS:
        raise UsageError(
            f"{darts} darts in jobs of at most {size} would need {jobs} jobs (max {MAX_JOBS} jobs)"
        )
    if job_darts is None:
        jobs = max(jobs, min(MAX_JOBS, JOBS_PER_WORKER * max(1, workers)))
    return min(jobs, darts)


@functools.lru_cache(maxsize=8)
def job_starts(darts: int, size: int, workers: int, guided: bool = True) -> tuple[int, ...]:
    """First dart of every job, and ``darts`` at the end.

    Guided self-scheduling (the default job size): jobs of ``size`` darts while plenty is left,
    then each job takes 1/(2 * workers) of what is left, down to :data:`MIN_TAIL_DARTS` (or
    ``size`` if smaller), so that the last round of jobs is short and no worker idles long at
    the end. Not guided (``--job-darts`` given): every job has ``size`` darts but the last.
    The count does not depend on the split (one dart stream per run), only the balance does.
    """
    too_many = UsageError(f"{darts} darts in jobs of at most {size} need more than {MAX_JOBS} jobs")
    if -(-darts // size) > MAX_JOBS:
        raise too_many
    floor = size if not guided else max(min(size, MIN_TAIL_DARTS), size // 16)
    starts, at = [0], 0
    while at < darts:
        share = -(-(darts - at) // (TAIL_SHARE * max(1, workers)))
        at += min(size, max(floor, share), darts - at)
        starts.append(at)
        if len(starts) > MAX_JOBS + 1:
            raise too_many
    return tuple(starts)


def job_range(params: dict[str, Any], index: int) -> tuple[int, int]:
    """``(start, darts)`` of job ``index`` of a run with ``params``."""
    starts = job_starts(params["darts"], params["job_darts"], params["workers"], params["guided"])
    return starts[index], starts[index + 1] - starts[index]


class Pi(Workload):
    """Throw darts at the unit square; pi ~ 4 * inside / darts."""

    name = "pi"
    description = "Monte-Carlo pi: throw darts, count those inside the quarter circle (exact)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--darts`` and ``--job-darts``."""
        parser.add_argument(
            "--darts",
            type=argtypes.count(MAX_DARTS),
            metavar="N",
            help=f"pi: darts to throw, e.g. 1e9 (max {MAX_DARTS:.0e})",
        )
        parser.add_argument(
            "--job-darts",
            type=argtypes.count(MAX_JOB_DARTS),
            metavar="N",
            help="pi: darts per job (default: ~1 s of work, >= 4 jobs per worker)",
        )

    def backends(self) -> list[str]:
        """numba (when installed), numpy, python."""
        return kernel.available_backends()

    def warm_up(self, backend: str | None) -> None:
        """Compile (or load) the numba kernel."""
        kernel.warm_up()

    def parameters(
        self, args: argparse.Namespace, workers: int, max_body: int = MAX_BODY
    ) -> dict[str, Any]:
        """``{"darts": N, "jobs": J}`` from ``--darts`` and ``--job-darts``."""
        if args.darts is None:
            raise UsageError("--darts is required for a new pi run")
        darts: int = args.darts
        guided = args.job_darts is None
        size = args.job_darts or -(-darts // job_count(darts, None, workers))
        params = {"darts": darts, "job_darts": size, "workers": max(1, workers), "guided": guided}
        params["jobs"] = len(job_starts(darts, size, params["workers"], guided)) - 1
        return params

    def check_resume(self, params: dict[str, Any], args: argparse.Namespace) -> list[str]:
        """``--darts`` and ``--job-darts`` must agree with the journal."""
        clashes = []
        if args.darts is not None and args.darts != params["darts"]:
            clashes.append(f"--darts {args.darts} (journal has {params['darts']})")
        largest = params["job_darts"]
        size = args.job_darts
        if size is not None and size < largest:
            clashes.append(f"--job-darts {size} (journal has {largest})")
        return clashes

    def prepare(self, params: dict[str, Any], seed: int, run_dir: Path) -> Prepared:
        """No shared inputs: a job is its seed and size."""
        return Prepared(jobs=int(params["jobs"]), inputs={})

    def job(
        self, params: dict[str, Any], seed: int, run_dir: Path, index: int
    ) -> tuple[dict[str, Any], bytes]:
        """Job ``index`` throws darts ``start .. start+darts-1`` of the run's stream."""
        start, darts = job_range(params, index)
        return {"seed": seed, "start": start, "darts": darts}, b""

    def compute(
        self, spec: dict[str, Any], payload: Payload, context: JobContext
    ) -> tuple[dict[str, Any], bytes]:
        """Count the darts inside, in chunks (a tick between chunks touches the job)."""
        check_exact_keys(spec, _SPEC_KEYS, "spec")
        seed = int_field(spec, "seed", 0, MAX_SEED)
        start = int_field(spec, "start", 0, MAX_DARTS)
        darts = int_field(spec, "darts", 1, MAX_JOB_DARTS)
        if payload:
            raise InvalidBodyError("a pi job has no payload")
        backend = context.backend or kernel.default_backend()
        chunk = context.chunk or CHUNK_DARTS.get(backend, 2**20)
        inside = done = 0
        while done < darts:
            step = min(chunk, darts - done)
            inside += kernel.count_inside_range(seed, start + done, step, backend=backend)
            done += step
            if done < darts:
                context.tick(done / darts)
        return {"darts": darts, "inside": inside, "backend": backend}, b""

    def check_answer(
        self, params: dict[str, Any], index: int, value: dict[str, Any], payload: Payload
    ) -> None:
        """The planned darts, 0 <= inside <= darts, a backend name, no payload."""
        check_exact_keys(value, _VALUE_KEYS, "answer")
        planned = job_range(params, index)[1]
        darts = int_field(value, "darts", 1, MAX_JOB_DARTS)
        if darts != planned:
            raise InvalidBodyError(f"job {index} has {darts} darts, planned {planned}")
        int_field(value, "inside", 0, darts)
        text_field(value, "backend")
        if payload:
            raise InvalidBodyError("a pi answer has no payload")

    def fold(self, params: dict[str, Any], seed: int, jobs: int, run_dir: Path) -> Fold:
        """Sums of darts and inside."""
        return PiFold(params)

    def lines(self, summary: dict[str, Any]) -> list[str]:
        """pi, its error and interval, the darts."""
        low, high = summary["ci95"]
        rate = summary["darts_per_second"]
        return [
            f"pi             {summary['pi']:.12f}",
            f"|pi - math.pi| {summary['abs_error']:.3e}",
            f"std error      {summary['std_error']:.3e}",
            f"95% interval   [{low:.12f}, {high:.12f}]",
            f"darts          {summary['darts']:,} in {summary['jobs']} jobs"
            f" (at most {summary['job_darts']:,} per job), {summary['inside']:,} inside",
            f"darts/s        {rate:.4g}" if rate is not None else "darts/s        n/a",
        ]

    def progress_units(self, params: dict[str, Any]) -> tuple[str, int]:
        """Darts."""
        return ("darts", int(params["darts"]))

    def weight(self, value: dict[str, Any]) -> int:
        """Darts of an answer (what ``per_host`` and the progress count)."""
        return int(value["darts"])


class PiFold(Fold):
    """Exact sums; the estimate and its interval at the end."""

    def __init__(self, params: dict[str, Any]) -> None:
        """Start from zero."""
        self.params = params
        self.darts = 0
        self.inside = 0
        self.started = time.monotonic()

    def restore(self, job: int, value: dict[str, Any]) -> None:
        """Add one job's counts."""
        self.darts += int(value["darts"])
        self.inside += int(value["inside"])

    def summary(self, seconds: float) -> dict[str, Any]:
        """The keys pi has always written (``darts_per_second`` is added by the envelope)."""
        est = estimate(self.inside, self.darts)
        return {
            "darts": self.darts,
            "inside": self.inside,
            "pi": est.pi,
            "abs_error": est.abs_error,
            "std_error": est.std_error,
            "ci95": list(est.ci95),
            "job_darts": self.params["job_darts"],
        }

    def verify(self) -> dict[str, Any]:
        """Every planned dart was counted once."""
        if self.darts != self.params["darts"]:
            raise RunError(f"counted {self.darts} darts, planned {self.params['darts']}")
        return {}
