"""Installed plugins register cleanly: a broken plugin is reported, never silently ignored."""

from __future__ import annotations

from ssvae_core.modelling.components import KINDS
from ssvae_core.registry import default_registry


def test_every_installed_plugin_registers_without_problems() -> None:
    problems = default_registry().problems
    assert not problems, "plugins that failed to register:\n" + "\n".join(
        f"  {problem.plugin}: {problem.reason}" for problem in problems
    )


def test_every_kind_has_a_registered_component() -> None:
    registry = default_registry()
    assert all(registry.names(kind) for kind in KINDS), {
        kind: registry.names(kind) for kind in KINDS
    }
