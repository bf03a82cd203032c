"""The ``ssvae`` command line: ``train``, ``evaluate``, ``report``, ``background``,
``label``, ``labels``, ``retrain``, ``query``, ``loop``, ``studio`` and ``plugins``.

Exit codes: 0 success, 2 bad input (config, data, checkpoint, plugin; one line on
stderr, nothing overwritten), 1 internal failure.

Each command is one module of this package that ends with a ``Command`` record (name,
help, the function adding its arguments, the function running it); ``COMMANDS`` below is
the one place where commands are registered, in the order ``ssvae --help`` lists them.
What several commands share lives beside them: ``arguments`` (flags with one help text),
``context`` (exit codes, error reporting, the training session of the commands that write
a run), ``config_flags`` (flags to configuration) and ``workflows`` (the library
functions the commands call).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ssvae_core.cli import (
    background,
    evaluate,
    label,
    labels,
    loop,
    plugins,
    query,
    report,
    retrain,
    studio,
    train,
)
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, run_command

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "Command", "build_parser", "main"]

COMMANDS: list[Command] = [
    train.COMMAND,
    evaluate.COMMAND,
    report.COMMAND,
    background.COMMAND,
    label.COMMAND,
    labels.COMMAND,
    retrain.COMMAND,
    query.COMMAND,
    loop.COMMAND,
    studio.COMMAND,
    plugins.COMMAND,
]


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """The ``ssvae`` parser with one sub-command per entry of ``commands``."""
    parser = argparse.ArgumentParser(
        prog="ssvae",
        description="Semi-supervised VAEs whose latent space is the classifier.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seen: set[str] = set()
    for command in commands:
        if command.name in seen:
            raise ValueError(f"two ssvae commands are named {command.name!r}")
        seen.add(command.name)
        command.add_arguments(
            subparsers.add_parser(command.name, help=command.help, description=command.description)
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssvae`` console script: parse ``argv`` (default: the process's
    arguments) and run the command it names with the commands in ``COMMANDS``."""
    args = build_parser(COMMANDS).parse_args(argv)
    run = next(command.run for command in COMMANDS if command.name == args.command)
    return run_command(run, args)
