"""``ssvae train --resume RUN_DIR``: continue a run from its last checkpoint."""

from __future__ import annotations

import argparse

from ssvae_core.cli.arguments import moved_data
from ssvae_core.cli.config_flags import planned_steps
from ssvae_core.cli.context import EXIT_OK, TrainingSession, notice
from ssvae_core.errors import ConfigError

# The flags of ``ssvae train`` that would change the run; ``--resume`` refuses them.
CLASHING = (
    ("--config", "config"), ("--preset", "preset"),
    ("--labels-per-class", "labels_per_class"),
    ("--seed", "seed"), ("--out", "out"), ("--set", "set"), ("--track", "track"),
    ("--mlflow-dir", "mlflow_dir"),
)


def add_resume_flag(train: argparse.ArgumentParser) -> None:
    """``--resume RUN_DIR`` of ``ssvae train``."""
    train.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint up to --steps total (default: the "
        "run's own train.steps; same data, split, config; --data and --test-data then say "
        "where the run's data and its given test set are, if they moved); finishes a killed run",
    )


def run(args: argparse.Namespace) -> int:
    """Continue ``args.resume`` up to ``--steps`` (default: its own ``train.steps``)."""
    from ssvae_core.cli.workflows import resume_run

    clashing = [flag for flag, name in CLASHING if getattr(args, name) not in (None, [])]
    if clashing:
        raise ConfigError(
            f"--resume continues a run with its own config; drop {', '.join(clashing)} "
            "(only --steps, --data and --test-data (where the run's data and its given test set "
            "have moved), --no-plots, --quiet and the flags of several processes apply)"
        )
    session = TrainingSession.start(args, tracking=False)
    total = args.steps if args.steps is not None else planned_steps(args.resume)
    session.train(
        args.resume, total,
        lambda sinks, on_start: resume_run(
            args.resume, args.steps, sinks=sinks, on_start=on_start, on_notice=notice,
            plots=not args.no_plots, **moved_data(args),
        ),
    )
    return EXIT_OK
