"""``ssvae plugins``: list the registered components, trackers and their options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ssvae_core.cli.arguments import add_json
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import print_result


def add_arguments(plugins: argparse.ArgumentParser) -> None:
    """Only the output format."""
    add_json(plugins, help="machine-readable listing")


def listing() -> dict[str, list[dict[str, Any]]]:
    """Every registered component with its options, every tracker, every plugin that failed
    to load."""
    from ssvae_core.options import describe_options
    from ssvae_core.registry import default_registry

    registry = default_registry()
    components = [
        {
            "kind": c.kind,
            "name": c.name,
            "package": c.package,
            "version": c.version,
            "description": c.factory.description,
            "options": describe_options(c.factory.options),
        }
        for c in registry
    ]
    trackers = [
        {"name": t.name, "package": t.package, "version": t.version, "description": t.factory.description}
        for t in registry.trackers.values()
    ]
    problems = [{"plugin": p.plugin, "reason": p.reason} for p in registry.problems]
    return {"components": components, "trackers": trackers, "problems": problems}


def run(args: argparse.Namespace) -> int:
    """Print the listing (as JSON with ``--json``)."""
    return print_result(listing(), args.json, print_listing, default=str)


def print_listing(found: dict[str, list[dict[str, Any]]]) -> None:
    """One line per component and tracker, one per option; failed plugins go to stderr."""
    for entry in [*found["components"], *({"kind": "tracker", "options": [], **t} for t in found["trackers"])]:
        print(f"{entry['kind']:9} {entry['name']:19} {entry['package']} {entry['version']}  — {entry['description']}")
        for opt in entry["options"]:
            allowed = f" {opt['choices']}" if "choices" in opt else ""
            print(f"    {opt['name']} = {opt['default']!r}  ({opt['type']}{allowed}) {opt['help']}")
    for problem in found["problems"]:
        print(f"problem: plugin {problem['plugin']!r}: {problem['reason']}", file=sys.stderr)


COMMAND = Command(
    name="plugins",
    help="list registered components and their options",
    add_arguments=add_arguments,
    run=run,
)
