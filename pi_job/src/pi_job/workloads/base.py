"""The workload interface: what a parallel algorithm implements to run on the cluster.

The generic machinery (:mod:`pi_job.core`) owns everything about the queue: journal, resume,
dedup, TTR touches, reconnects, bury-with-reason, stall detection, progress and the summary
envelope. A workload only knows about the work:

1. :meth:`Workload.add_arguments` / :meth:`Workload.parameters`: its options, checked at once
   (a bad value raises :class:`~pi_job.errors.UsageError`: nothing is queued);
2. :meth:`Workload.prepare`: the run's shared inputs (sent once per worker, not per job) and
   the number of jobs;
3. :meth:`Workload.job`: the spec (a small JSON object) and payload (bytes) of job ``index``;
   payloads and shared inputs come back as :data:`Payload` (bytes, or a read-only memoryview
   of the body they came in: no copy of the megabytes);
4. :meth:`Workload.compute`: a pure function of the job and the run's inputs, on a worker;
5. :meth:`Workload.fold`: a :class:`Fold` that takes each job's answer once, as it arrives, in
   bounded memory, then verifies the result and adds its keys and lines to the summary.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

from pi_job.core.envelope import Payload

MAX_BODY: Final = 2**30
"""Largest body beanstalkd can take at all (its -z limit), when the server's is not known yet."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :meth:`Workload.prepare` decided: the job count and the shared inputs' bytes."""

    jobs: int
    inputs: Mapping[str, bytes]


class JobContext(Protocol):
    """What a worker offers to :meth:`Workload.compute`."""

    backend: str | None
    """The backend asked for on the worker's command line (``--backend``), if any."""
    chunk: int | None
    """The step size asked for on the worker's command line (``--chunk-darts``), if any."""

    def input(self, name: str) -> Payload:
        """The run's shared input ``name`` (fetched once per worker and run, then cached)."""
        ...

    def tick(self, fraction: float) -> None:
        """Report progress (0..1); touches the job when due; raises if the job must be let go."""
        ...


class Fold(ABC):
    """Folds the answers of one run into its result; each job index arrives once."""

    def add(self, job: int, value: dict[str, Any], payload: Payload) -> None:
        """Take the answer of job ``job`` (checked by :meth:`Workload.check_answer`).

        Anything written to disk must be durable when this returns: the master journals the
        answer next and then deletes it from the queue. By default: :meth:`restore` (for
        answers whose payload is not kept).
        """
        self.restore(job, value)

    @abstractmethod
    def restore(self, job: int, value: dict[str, Any]) -> None:
        """Take an answer replayed from the journal (its payload was kept by :meth:`add`)."""

    @abstractmethod
    def summary(self, seconds: float) -> dict[str, Any]:
        """The workload's keys of the run summary (after every job is in, in ``seconds``)."""

    def verify(self) -> dict[str, Any]:
        """Check the finished result; return its figures, raise RunError when it is wrong."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and memory."""


class Workload(ABC):
    """A parallel algorithm: one instance per process, found by :attr:`name`."""

    name: ClassVar[str]
    """Name used by ``pi-job run --workload NAME`` and in job bodies."""
    description: ClassVar[str]
    """One line for ``pi-job workloads``."""
    prefetch: ClassVar[bool] = False
    """True for jobs that carry bulk data: a worker then reserves and reads its next job (and
    sends its last answer) while it computes this one, so transfer and compute overlap. Off
    for compute-only jobs, where a job held ahead would only wait (and unbalance the end)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027
        """Add this workload's options to ``pi-job run`` (every option must default to None)."""

    def backends(self) -> list[str]:
        """Names a worker's ``--backend`` may choose for this workload (none: one way only)."""
        return []

    def warm_up(self, backend: str | None) -> None:  # noqa: B027
        """Prepare a worker (compile kernels) before it says it is ready."""

    @abstractmethod
    def parameters(
        self, args: argparse.Namespace, workers: int, max_body: int = MAX_BODY
    ) -> dict[str, Any]:
        """Check this workload's options; return its JSON parameters (raise UsageError).

        ``workers`` are connected now; job and answer bodies must not exceed ``max_body``.
        """

    def check_resume(self, params: dict[str, Any], args: argparse.Namespace) -> list[str]:
        """Options given on a resume that contradict the journaled ``params`` (one text each)."""
        return []

    @abstractmethod
    def prepare(self, params: dict[str, Any], seed: int, run_dir: Path) -> Prepared:
        """Count the jobs and build the shared inputs; may keep files in ``run_dir``."""

    @abstractmethod
    def job(
        self, params: dict[str, Any], seed: int, run_dir: Path, index: int
    ) -> tuple[dict[str, Any], bytes]:
        """The spec and payload of job ``index`` (the same every time it is asked for)."""

    @abstractmethod
    def compute(
        self, spec: dict[str, Any], payload: Payload, context: JobContext
    ) -> tuple[dict[str, Any], Payload]:
        """Do job ``spec`` on a worker; return the answer's value and payload.

        Raise :class:`~pi_job.core.envelope.InvalidBodyError` for a spec or payload that is
        not valid (the worker buries the job with that reason).
        """

    @abstractmethod
    def check_answer(
        self, params: dict[str, Any], index: int, value: dict[str, Any], payload: Payload
    ) -> None:
        """On the master: raise InvalidBodyError unless the answer fits job ``index``."""

    @abstractmethod
    def fold(self, params: dict[str, Any], seed: int, jobs: int, run_dir: Path) -> Fold:
        """A fold for a (new or resumed) run."""

    def lines(self, summary: dict[str, Any]) -> list[str]:
        """Human-readable lines of this workload's summary keys (default: ``key value``)."""
        return []

    def progress_units(self, params: dict[str, Any]) -> tuple[str, int]:
        """Name and total of the work the progress display and ``per_host`` count."""
        return ("jobs", 0)

    def weight(self, value: dict[str, Any]) -> int:
        """How much work one answer stands for, in :meth:`progress_units` (default: 1 job)."""
        return 1
