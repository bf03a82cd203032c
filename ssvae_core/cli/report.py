"""``ssvae report``: rewrite a run's report and plots from its checkpoint."""

from __future__ import annotations

import argparse

from ssvae_core.cli.arguments import add_no_plots, add_run_dir
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_OK, notice, print_train_summary


def add_arguments(report: argparse.ArgumentParser) -> None:
    """The run, and whether to draw its plots."""
    add_run_dir(report)
    add_no_plots(report)


def run(args: argparse.Namespace) -> int:
    """Rewrite the report (and plots) and print its summary line."""
    from ssvae_core.cli.workflows import report_run

    report = report_run(args.run_dir, on_notice=notice, plots=not args.no_plots)
    print_train_summary(report, args.run_dir)
    return EXIT_OK


COMMAND = Command(
    name="report",
    help="rewrite a run's report and plots from its checkpoint",
    description="For a run whose report is missing or out of date (e.g. killed after its "
    "last checkpoint).",
    add_arguments=add_arguments,
    run=run,
)
