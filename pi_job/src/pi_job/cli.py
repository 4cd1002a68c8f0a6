"""The ``pi-job`` console script: one argparse parser with a table of subcommands.

Every bad command-line value ends with exactly one line on stderr and exit code 2, before any
connection is made (see :class:`OneLineParser`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NamedTuple, NoReturn

from pi_job import __version__, plots, workloads
from pi_job.core import heap, logging_setup, master, runs, status, worker
from pi_job.errors import PiJobError, UsageError
from pi_job.workloads.pi import bench


class Subcommand(NamedTuple):
    """One ``pi-job`` subcommand: its name, help, option setup and implementation."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def configure_workloads(parser: argparse.ArgumentParser) -> None:
    """``pi-job workloads`` has no options."""


def list_workloads(args: argparse.Namespace) -> int:
    """Print one line per installed workload."""
    for name in workloads.names():
        print(f"{name:<12} {workloads.get(name).description}")
    return 0


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("worker", "serve jobs from beanstalkd", worker.configure_parser, worker.command),
    Subcommand(
        "run",
        "run a workload: plan, push, collect",
        master.configure_parser,
        master.command,
    ),
    Subcommand(
        "status",
        "show tubes, workers, runs and buried jobs",
        status.configure_parser,
        status.command,
    ),
    Subcommand("workloads", "list the installed workloads", configure_workloads, list_workloads),
    Subcommand(
        "runs", "list this host's runs; cancel or prune them", runs.configure_parser, runs.command
    ),
    Subcommand("bench", "measure the dart kernels", bench.configure_parser, bench.command),
    Subcommand("report", "plot result files", plots.configure_parser, plots.command),
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``PROG: error: MESSAGE``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print the error on one line without the usage block, exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> OneLineParser:
    """Build the full ``pi-job`` parser."""
    parser = OneLineParser(
        prog="pi-job", description="Monte-Carlo pi over a beanstalkd work queue."
    )
    parser.add_argument("--version", action="version", version=f"pi-job {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in SUBCOMMANDS:
        child = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        sub.configure(child)
        child.set_defaults(handler=sub.run, subparser=child)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging_setup.configure()
    heap.keep_freed_buffers()  # process-wide: bulk bodies reuse freed memory
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        subparser: OneLineParser = args.subparser
        subparser.error(str(exc))
    except PiJobError as exc:
        print(f"pi-job {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
