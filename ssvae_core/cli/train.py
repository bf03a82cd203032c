"""``ssvae train``: train a model and write a run directory (``--resume`` continues one)."""

from __future__ import annotations

import argparse

from ssvae_core.cli import resume
from ssvae_core.cli.arguments import (
    add_distributed,
    add_no_plots,
    add_quiet,
    add_test_data,
    add_tracking,
)
from ssvae_core.cli.command import Command
from ssvae_core.cli.config_flags import label_budget_argument, run_config
from ssvae_core.cli.context import EXIT_OK, TrainingSession


def add_arguments(train: argparse.ArgumentParser) -> None:
    """The new run's data, config and output, then tracking and several processes."""
    train.add_argument("--config", metavar="PATH", help="TOML config file (applied over --preset)")
    train.add_argument(
        "--preset", metavar="NAME",
        help="a tuned configuration shipped with ssvae: digits, mnist, or auto (chosen for the "
        "data's shape and size; see docs/user-guide.md)",
    )
    train.add_argument(
        "--data", metavar="PATH",
        help="an .npz or .csv file, or a folder: an MNIST-style IDX pair, x.npy (and y.npy), or "
        "one subfolder of PNG/JPEG images per class (default: digits)",
    )
    add_test_data(train)
    train.add_argument(
        "--labels-per-class", type=label_budget_argument, metavar="N",
        help="label budget per class: an integer (0: no labels, the model learns from the "
        "unlabeled data alone and the report gives clustering accuracy, NMI and ARI) or 'all' "
        "(every training label)",
    )
    train.add_argument("--seed", type=int, metavar="N", help="seed of the split and the model")
    train.add_argument("--steps", type=int, metavar="N", help="optimiser steps")
    train.add_argument(
        "--out", metavar="DIR", help="run directory (default: a new timestamped folder under runs/)"
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set prior.num_components=20",
    )
    resume.add_resume_flag(train)
    add_no_plots(train)
    add_quiet(train)
    add_tracking(
        train,
        track_help="also log to a tracker (repeatable, or comma-separated): tensorboard, event "
        "files in RUN/tensorboard/ (needs: pip install 'ssvae-core[track]'); mlflow, MLflow's "
        "file store in RUN/mlruns/ (needs: pip install 'ssvae-core[mlflow]'); or one a plugin "
        "adds (ssvae plugins lists them)",
        mlflow_help="with --track mlflow: the MLflow file store to log into (a folder or a "
        "file: URI; default RUN/mlruns); one store for several runs lets MLflow compare them",
    )
    add_distributed(train)


def run(args: argparse.Namespace) -> int:
    """Train a new run (or, with ``--resume``, continue one)."""
    if args.resume is not None:
        return resume.run(args)
    from ssvae_core.cli.workflows import new_run_dir, train_run

    config = run_config(args, labels_per_class=args.labels_per_class, seed=args.seed)
    session = TrainingSession.start(args)
    out = args.out if args.out is not None else new_run_dir()
    session.train(
        out, config.train.steps,
        lambda sinks, on_start: train_run(
            config, out, sinks=sinks, on_start=on_start, plots=not args.no_plots
        ),
        config=config.to_dict(),
    )
    return EXIT_OK


COMMAND = Command(
    name="train",
    help="train a model and write a run directory",
    description="Train on the embedded digits data (default) or on your own data, "
    "with the benchmark split (20% held out) and a label budget.",
    add_arguments=add_arguments,
    run=run,
)
