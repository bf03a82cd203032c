"""``ssvae background``: train a run's background model (for the ratio OOD scores)."""

from __future__ import annotations

import argparse

from ssvae_core.cli.arguments import add_run_dir
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_OK
from ssvae_core.runs.ood import BACKGROUND_NOISE


def add_arguments(background: argparse.ArgumentParser) -> None:
    """The run, the share of noise and the training steps."""
    add_run_dir(background)
    background.add_argument(
        "--noise", type=float, default=BACKGROUND_NOISE, metavar="RATE",
        help="the share of pixels replaced by uniform noise, in (0, 1]",
    )
    background.add_argument(
        "--steps", type=int, default=None, metavar="N", help="training steps (default: the run's train.steps)",
    )


def run(args: argparse.Namespace) -> int:
    """Train the background model and say where it went."""
    from ssvae_core.cli.workflows import background_run

    info = background_run(args.run_dir, noise=args.noise, steps=args.steps)
    print(
        f"background model: {info['steps']} steps in {info['train_time_s']:.1f} s, noise "
        f"{info['noise']:g}, {info['bytes'] / 1e6:.2f} MB in {info['file']}"
    )
    return EXIT_OK


COMMAND = Command(
    name="background",
    help="train a run's background model (the ratio OOD scores)",
    description="Trains a model of the run's config on its training images with a share of "
    "their pixels replaced by noise, and stores it in the run (model.background.ckpt); the "
    "run's own model is not changed.",
    add_arguments=add_arguments,
    run=run,
)
