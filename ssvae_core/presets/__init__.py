"""Tuned configurations shipped with the package (``ssvae train --preset NAME``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ssvae_core.errors import ConfigError
from ssvae_core.options import suggest


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_path(name: str) -> Path:
    """The TOML file of preset ``name``; an unknown name is a ``ConfigError``."""
    names = preset_names()
    if name not in names:
        raise ConfigError(
            f"unknown preset {name!r}{suggest(name, names)}; allowed: {', '.join(names)}"
        )
    return Path(str(resources.files(__name__).joinpath(f"{name}.toml")))
