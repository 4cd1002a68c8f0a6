"""A run's plan: which workload with which parameters, its seed and its number of jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pi_job.limits import MAX_JOBS, InvalidValueError, check_run_id


@dataclass(frozen=True, slots=True)
class Plan:
    """A run: ``jobs`` jobs of workload ``workload`` with ``params`` and ``seed``."""

    run_id: str
    workload: str
    seed: int
    jobs: int
    ttr: int
    priority: int
    params: dict[str, Any] = field(default_factory=dict)
    nonce: str = ""
    """32 random hex digits drawn at plan time: every job and answer of the run carries them
    (signed), so answers cannot be replayed into another run. Empty in journals from before
    signing (the master then derives one from the run id)."""

    def __post_init__(self) -> None:
        """Check the invariants (raise :class:`InvalidValueError`)."""
        check_run_id(self.run_id)
        if not 0 < self.jobs <= MAX_JOBS:
            raise InvalidValueError(f"{self.jobs} jobs (must be 1..{MAX_JOBS})")

    def to_record(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dict."""
        return {
            "run": self.run_id,
            "workload": self.workload,
            "seed": self.seed,
            "jobs": self.jobs,
            "ttr": self.ttr,
            "priority": self.priority,
            "params": self.params,
            **({"nonce": self.nonce} if self.nonce else {}),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Plan:
        """Rebuild a plan from :meth:`to_record` output."""
        return cls(
            run_id=str(record["run"]),
            workload=str(record["workload"]),
            seed=int(record["seed"]),
            jobs=int(record["jobs"]),
            ttr=int(record["ttr"]),
            priority=int(record["priority"]),
            params=dict(record["params"]),
            nonce=str(record.get("nonce", "")),
        )
