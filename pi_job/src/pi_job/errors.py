"""The one exception root of pi_job and its two kinds; the CLI maps them to exit codes once.

Standard library only: the Ansible filter plugins load :mod:`pi_job.limits`, which uses it.
"""

from __future__ import annotations


class PiJobError(Exception):
    """Root of every error pi_job reports to a user (``str()`` is the one-line message)."""

    exit_code = 1


class UsageError(PiJobError):
    """A bad value or combination of values: nothing was queued or changed (exit code 2)."""

    exit_code = 2


class RunError(PiJobError):
    """A run could not be carried out or finished (exit code 1); it stays resumable."""

    exit_code = 1
