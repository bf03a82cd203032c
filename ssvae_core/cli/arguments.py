"""Arguments that several commands take, with one help text each."""

from __future__ import annotations

import argparse
from typing import TypedDict


def add_run_dir(command: argparse.ArgumentParser, help: str = "a run directory") -> None:
    """The positional ``RUN_DIR``."""
    command.add_argument("run_dir", metavar="RUN_DIR", help=help)


def add_moved_data(command: argparse.ArgumentParser) -> None:
    """``--data`` and ``--test-data``: where an existing run's data, and the test set it
    was given, are now."""
    command.add_argument("--data", metavar="PATH", help="where the run's data are, if they moved")
    add_moved_test_data(command)


def add_moved_test_data(command: argparse.ArgumentParser) -> None:
    """``--test-data``: where an existing run's given test set is now."""
    command.add_argument(
        "--test-data", metavar="PATH",
        help="where the run's test data are, if they moved (a run trained with --test-data; "
        "one that holds out a fifth of its data has none)",
    )


class MovedData(TypedDict):
    """Where an existing run's data and its given test set are now (None: where recorded)."""

    data: str | None
    test_data: str | None


def moved_data(args: argparse.Namespace) -> MovedData:
    """``data`` and ``test_data`` of the library functions on an existing run, from the
    flags ``add_moved_data`` adds."""
    return {"data": args.data, "test_data": args.test_data}


def add_test_data(command: argparse.ArgumentParser) -> None:
    """``--test-data``: the test set given with a new run's data."""
    command.add_argument(
        "--test-data", metavar="PATH",
        help="the test set that came with the data (data.test_dataset), with the same sample "
        "shape and class names: all of --data then trains and every labeled example of PATH is "
        "the test set (default: a fifth of --data is held out)",
    )


def add_no_plots(command: argparse.ArgumentParser) -> None:
    """``--no-plots`` of the commands that write a run's report."""
    command.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def add_quiet(command: argparse.ArgumentParser) -> None:
    """``--quiet`` of the commands that show a training progress bar."""
    command.add_argument("--quiet", action="store_true", help="no progress display")


def add_json(command: argparse.ArgumentParser, help: str) -> None:
    """``--json``: machine-readable output."""
    command.add_argument("--json", action="store_true", help=help)


def add_tracking(command: argparse.ArgumentParser, *, track_help: str, mlflow_help: str) -> None:
    """``--track`` and ``--mlflow-dir`` (read by ``TrainingSession.start``)."""
    command.add_argument(
        "--track", action="append", default=[], metavar="NAME", help=track_help
    )
    command.add_argument("--mlflow-dir", metavar="DIR", help=mlflow_help)


def add_distributed(command: argparse.ArgumentParser) -> None:
    """The flags of training together with other processes (read by ``start_distributed``)."""
    group = command.add_argument_group(
        "several processes",
        "train together with other processes, one per host, say (jax.distributed): each flag "
        "may instead come from its SSVAE_* environment variable; process 0 writes the run",
    )
    group.add_argument(
        "--distributed", choices=("auto", "off"), default=None,
        help="auto: connect to the other processes, detecting what is not given (SLURM, Open "
        "MPI, Cloud TPU); off: this process alone (default, unless --coordinator, "
        "--num-processes or --process-id is given) [SSVAE_DISTRIBUTED]",
    )
    group.add_argument(
        "--coordinator", metavar="HOST:PORT",
        help="address of process 0, the same for every process [SSVAE_COORDINATOR]",
    )
    group.add_argument(
        "--num-processes", type=int, metavar="N", help="processes in all [SSVAE_NUM_PROCESSES]"
    )
    group.add_argument(
        "--process-id", type=int, metavar="I", help="this process, 0 to N-1 [SSVAE_PROCESS_ID]"
    )
    group.add_argument(
        "--coordinator-timeout", type=int, metavar="SECONDS",
        help="how long to wait for every process (default 300) [SSVAE_COORDINATOR_TIMEOUT]",
    )
