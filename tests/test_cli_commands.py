"""The ``ssvae`` command line as a list of commands: a new command is one module and one
registration."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import ssvae_core.cli as cli
from ssvae_core.cli import COMMANDS, Command, main

CLI_DIR = Path(cli.__file__).parent

GREET = '''
"""``ssvae greet``: say hello (a command added outside ssvae_core)."""

import argparse

from ssvae_core.cli import EXIT_OK, Command
from ssvae_core.errors import ConfigError


def add_arguments(greet: argparse.ArgumentParser) -> None:
    greet.add_argument("name", metavar="NAME", help="whom to greet")
    greet.add_argument("--times", type=int, default=1, metavar="N", help="how often")


def run(args: argparse.Namespace) -> int:
    if args.times < 1:
        raise ConfigError(f"--times must be at least 1, got {args.times}")
    for _ in range(args.times):
        print(f"hello {args.name}")
    return EXIT_OK


COMMAND = Command(
    name="greet", help="say hello", description="Greets NAME.", add_arguments=add_arguments, run=run
)
'''


@pytest.fixture
def greet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Command:
    """The greet command, written as its own module and registered in ``COMMANDS``."""
    (tmp_path / "ssvae_greet_command.py").write_text(textwrap.dedent(GREET), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ssvae_greet_command", raising=False)
    import ssvae_greet_command  # type: ignore[import-not-found]

    monkeypatch.setattr(cli, "COMMANDS", [*COMMANDS, ssvae_greet_command.COMMAND])
    return ssvae_greet_command.COMMAND


def test_a_registered_command_runs_through_main(greet: Command, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["greet", "Ada", "--times", "2"]) == 0
    assert capsys.readouterr().out == "hello Ada\nhello Ada\n"


def test_a_registered_command_is_listed_and_has_its_own_help(
    greet: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "    greet" in listing and "say hello" in listing
    with pytest.raises(SystemExit):
        main(["greet", "--help"])
    help_text = capsys.readouterr().out
    assert "Greets NAME." in help_text and "--times N" in help_text


def test_bad_input_to_a_registered_command_is_exit_code_2(
    greet: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["greet", "Ada", "--times", "0"]) == 2
    assert capsys.readouterr().err == "ssvae: error: --times must be at least 1, got 0\n"


def test_an_unregistered_command_is_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["greet", "Ada"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'greet'" in capsys.readouterr().err


def test_two_commands_of_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", [*COMMANDS, COMMANDS[0]])
    with pytest.raises(ValueError, match="two ssvae commands are named 'train'"):
        main(["plugins"])


def test_every_command_module_is_registered() -> None:
    shared = {"__init__", "__main__", "arguments", "command", "config_flags", "context", "resume", "workflows"}
    modules = {path.stem for path in CLI_DIR.glob("*.py")} - shared
    assert modules == {command.run.__module__.rsplit(".", 1)[1] for command in COMMANDS}

