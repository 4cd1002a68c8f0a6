"""How a run is split into jobs: job count, per-job darts (summing exactly), job bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pi_job.core.envelope import MAX_JOBS, InvalidValueError, JobSpec, check_run_id

DARTS_PER_SECOND_GUESS: Final = 10**9
"""Assumed speed of one worker, used to size jobs at about one second of work."""
DEFAULT_JOB_DARTS: Final = DARTS_PER_SECOND_GUESS
JOBS_PER_WORKER: Final = 4
"""Minimum number of jobs per connected worker, so that small runs use every worker."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A run: ``darts`` darts in ``jobs`` jobs; job i gets one extra dart if i < darts % jobs."""

    run_id: str
    seed: int
    darts: int
    jobs: int
    ttr: int
    priority: int

    def __post_init__(self) -> None:
        """Check the invariants (raise :class:`InvalidValueError`)."""
        check_run_id(self.run_id)
        if not 0 < self.jobs <= min(self.darts, MAX_JOBS):
            raise InvalidValueError(
                f"{self.jobs} jobs for {self.darts} darts (max {MAX_JOBS} jobs)"
            )

    def job_darts(self, index: int) -> int:
        """Return the number of darts of job ``index``."""
        base, extra = divmod(self.darts, self.jobs)
        return base + 1 if index < extra else base

    @property
    def max_job_darts(self) -> int:
        """The size of the largest job."""
        return self.job_darts(0)

    def job(self, index: int) -> JobSpec:
        """Return job ``index``."""
        if not 0 <= index < self.jobs:
            raise IndexError(index)
        return JobSpec(run=self.run_id, job=index, seed=self.seed, darts=self.job_darts(index))

    def to_record(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dict (the split rule is implied by darts and jobs)."""
        return {
            "run": self.run_id,
            "seed": self.seed,
            "darts": self.darts,
            "jobs": self.jobs,
            "split": "first darts%jobs jobs get darts//jobs+1, the others darts//jobs",
            "ttr": self.ttr,
            "priority": self.priority,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Plan:
        """Rebuild a plan from :meth:`to_record` output."""
        return cls(
            run_id=str(record["run"]),
            seed=int(record["seed"]),
            darts=int(record["darts"]),
            jobs=int(record["jobs"]),
            ttr=int(record["ttr"]),
            priority=int(record["priority"]),
        )


def job_count(darts: int, job_darts: int | None, workers: int) -> int:
    """Choose the number of jobs.

    With ``job_darts`` given: ``ceil(darts / job_darts)``. Otherwise jobs of at most
    :data:`DEFAULT_JOB_DARTS` (about a second of work), and at least :data:`JOBS_PER_WORKER`
    per connected worker (``workers`` >= 1), never more jobs than darts.
    """
    size = DEFAULT_JOB_DARTS if job_darts is None else job_darts
    jobs = -(-darts // size)
    if jobs > MAX_JOBS:
        raise InvalidValueError(
            f"{darts} darts in jobs of at most {size} would need {jobs} jobs (max {MAX_JOBS} jobs)"
        )
    if job_darts is None:
        jobs = max(jobs, min(MAX_JOBS, JOBS_PER_WORKER * max(1, workers)))
    return min(jobs, darts)
