"""The record that makes a module an ``ssvae`` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One ``ssvae`` command: what ``ssvae --help`` lists and what runs it.

    ``name`` is the word typed after ``ssvae``; ``help`` the line ``ssvae --help`` shows for
    it; ``description`` the text above the options in ``ssvae NAME --help`` (none: argparse
    shows nothing there). ``add_arguments`` adds the command's arguments to the parser
    argparse made for it; ``run`` receives the parsed arguments and returns the exit code
    (``EXIT_OK``), raising ``SSVAEError`` for bad input, which ``main`` reports on one line
    of stderr with exit code 2. A command is registered by adding it to
    ``ssvae_core.cli.COMMANDS``.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
