"""``ssvae retrain``: continue a run warm with every label in its store."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssvae_core.cli.arguments import (
    add_distributed,
    add_moved_data,
    add_no_plots,
    add_quiet,
    add_run_dir,
    add_tracking,
    moved_data,
)
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_OK, TrainingSession, notice
from ssvae_core.errors import SSVAEError


def add_arguments(retrain: argparse.ArgumentParser) -> None:
    """The run, its further steps, tracking and several processes."""
    add_run_dir(retrain)
    retrain.add_argument(
        "--steps", type=int, default=1000, metavar="N", help="further optimiser steps (default 1000)"
    )
    add_moved_data(retrain)
    add_no_plots(retrain)
    retrain.add_argument(
        "--no-split", action="store_true",
        help="keep channels where labeled examples of two classes sit merged this time "
        "(by default such a channel is split first: train.split_channels)",
    )
    add_quiet(retrain)
    add_tracking(
        retrain,
        track_help="also log to a tracker (repeatable, or comma-separated): tensorboard "
        "(RUN/tensorboard/), mlflow (RUN/mlruns/; the run's MLflow run continues), or one a "
        "plugin adds",
        mlflow_help="with --track mlflow: the MLflow file store (default RUN/mlruns)",
    )
    add_distributed(retrain)


def checkpoint_step(run_dir: str) -> int:
    """The step of the run's checkpoint (for the progress bar; 0 when it cannot be read)."""
    from ssvae_core.training.checkpoint import read_manifest

    try:
        step = read_manifest(Path(run_dir) / "model.ckpt").get("step", 0)
    except SSVAEError:
        return 0
    return step if isinstance(step, int) else 0


def run(args: argparse.Namespace) -> int:
    """Retrain ``args.run_dir`` for ``--steps`` more steps on its label store."""
    from ssvae_core.cli.workflows import retrain_run

    done = checkpoint_step(args.run_dir)
    session = TrainingSession.start(args)
    session.train(
        args.run_dir, done + max(args.steps, 0),
        lambda sinks, on_start: retrain_run(
            args.run_dir, args.steps, sinks=sinks, on_start=on_start, on_notice=notice,
            plots=not args.no_plots, **moved_data(args),
            split_channels=False if args.no_split else None,
        ),
    )
    return EXIT_OK


COMMAND = Command(
    name="retrain",
    help="continue a run warm with every label in its store",
    description="Continue from the run's checkpoint (parameters, optimiser state, τ "
    "counts) for --steps more steps on the labels in its label store; new label names "
    "claim free channels. Appends metrics, rewrites checkpoint and report, and records "
    "the round in rounds.jsonl.",
    add_arguments=add_arguments,
    run=run,
)
