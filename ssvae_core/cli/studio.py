"""``ssvae studio``: a local web page to explore a run, label what it asks for and retrain."""

from __future__ import annotations

import argparse

from ssvae_core.cli.arguments import add_moved_data, add_run_dir, moved_data
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_OK
from ssvae_core.errors import ConfigError


def add_arguments(studio: argparse.ArgumentParser) -> None:
    """The run, where to listen, the access token."""
    add_run_dir(studio)
    studio.add_argument(
        "--host", default="127.0.0.1", metavar="HOST",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    studio.add_argument(
        "--port", type=int, default=8765, metavar="N", help="port (default 8765; 0 picks a free one)"
    )
    studio.add_argument(
        "--token", metavar="TOKEN", help="access token (default: a new random one each start)"
    )
    studio.add_argument("--open", action="store_true", help="open the page in the default browser")
    add_moved_data(studio)


def check_token(token: str | None) -> None:
    """A token given on the command line is long enough and prints as one word."""
    if token is not None and (
        len(token) < 8 or not all(char.isprintable() and not char.isspace() for char in token)
    ):
        raise ConfigError(
            "--token must be at least 8 characters long, without spaces or control characters"
        )


def run(args: argparse.Namespace) -> int:
    """Serve the studio until Ctrl+C."""
    try:
        from ssvae_core.studio.server import serve
    except ImportError as error:
        raise ConfigError(
            f"ssvae studio needs the studio extra ({error.name} is missing): "
            "pip install 'ssvae-core[studio]'"
        ) from None
    check_token(args.token)

    def ready(url: str) -> None:
        print(f"ssvae studio: serving {args.run_dir} at\n    {url}\n(Ctrl+C stops it)", flush=True)

    try:
        serve(
            args.run_dir, host=args.host, port=args.port, token=args.token, **moved_data(args),
            open_browser=args.open, on_ready=ready,
        )
    except KeyboardInterrupt:  # Ctrl+C is how the studio is stopped: the run is closed by now
        pass
    print("ssvae studio: stopped", flush=True)
    return EXIT_OK


COMMAND = Command(
    name="studio",
    help="a local web page to explore a run, label what it asks for and retrain",
    description="Serve the labeling studio for RUN_DIR on http://HOST:PORT/ and print its "
    "URL with a random access token (every request needs it). The studio holds the run "
    "while it is open: labels go to the run's label store (source 'studio'), retrains "
    "continue the run warm. Stop it with Ctrl+C. Needs: pip install 'ssvae-core[studio]'.",
    add_arguments=add_arguments,
    run=run,
)
