"""How flags become configuration: the one place the commands call ``ssvae_core.config``.

Config values given as flags (``--steps``, ``--seed``, ``--data``, …) travel as typed values
by dotted key, a layer below the ``--set`` strings, so a ``--set`` of the same key wins.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssvae_core.config import label_budget_argument
from ssvae_core.errors import ConfigError, SSVAEError

if TYPE_CHECKING:
    from ssvae_core.config import Config

__all__ = ["label_budget_argument", "planned_steps", "run_config", "strategy_options"]


def run_config(
    args: argparse.Namespace, *, labels_per_class: object = None, seed: int | None = None
) -> Config:
    """The config of a new run: ``--preset``, then ``--config``, then the config values given
    as flags (``--steps``, ``seed``, ``labels_per_class``, ``--data``, ``--test-data``; typed,
    by dotted key), then the ``--set`` strings."""
    from ssvae_core.config import load_config

    flags = {
        "data.dataset": args.data, "data.test_dataset": args.test_data,
        "data.labels_per_class": labels_per_class,
        "seed": seed, "train.steps": args.steps,
    }
    values = {key: value for key, value in flags.items() if value is not None}
    return load_config(args.config, args.set, preset=args.preset, values=values)


def strategy_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set option=value`` pairs of a strategy, values read as TOML."""
    from ssvae_core.config import parse_override

    options: dict[str, Any] = {}
    for pair in pairs:
        keys, value = parse_override(pair)
        if len(keys) != 1:
            raise ConfigError(f"--set of a strategy expects OPTION=VALUE (one name), got {pair!r}")
        options[keys[0]] = value
    return options


def planned_steps(run_dir: str) -> int:
    """The run's own ``train.steps`` (for the progress bar; 0 when it cannot be read)."""
    from ssvae_core.config import read_toml

    try:
        steps = read_toml(Path(run_dir) / "config.toml").get("train", {}).get("steps", 0)
    except SSVAEError:
        return 0
    return steps if isinstance(steps, int) else 0
