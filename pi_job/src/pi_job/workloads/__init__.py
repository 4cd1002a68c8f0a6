"""Workloads: what the cluster computes, found through the ``pi_job.workloads`` entry points.

A separate pip-installable package adds one by declaring, in its ``pyproject.toml``::

    [project.entry-points."pi_job.workloads"]
    primes = "lab_primes:Primes"

and ``pi-job workloads`` lists it. See ``docs/WORKLOADS.md``.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Final

from pi_job.errors import UsageError
from pi_job.workloads.base import Workload

GROUP: Final = "pi_job.workloads"
DEFAULT: Final = "pi"


@cache
def registry() -> dict[str, str]:
    """Installed workload names and their entry point targets (``module:Class``)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    """Sorted names of the installed workloads."""
    return sorted(registry())


@cache
def get(name: str) -> Workload:
    """The workload ``name`` (raise UsageError when it is not installed)."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise UsageError(f"unknown workload {name!r} (installed: {', '.join(names()) or 'none'})")
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Workload)) or cls.name != name:
        raise UsageError(f"entry point {name!r} ({found[0].value}) is not a Workload named {name}")
    return cls()
