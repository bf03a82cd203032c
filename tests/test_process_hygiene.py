"""Process hygiene: a plugin that changes process-wide state is refused and the state kept."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import jax
import numpy as np

from ssvae_core import registry as registry_module
from ssvae_core.modelling.hygiene import process_changes
from ssvae_core.registry import Registry


def test_process_changes_names_and_undoes_every_kind_of_change() -> None:
    before = np.random.get_state()[1].copy()
    with process_changes() as changes:
        jax.config.update("jax_debug_nans", True)
        np.random.seed(123)
        os.environ["SSVAE_HYGIENE_PROBE"] = "1"
    assert changes == [
        "JAX setting jax_debug_nans False -> True",
        "NumPy's global random state (np.random.seed or a draw from np.random)",
        "environment variable SSVAE_HYGIENE_PROBE set",
    ]
    assert not jax.config.jax_debug_nans
    assert "SSVAE_HYGIENE_PROBE" not in os.environ
    assert np.array_equal(np.random.get_state()[1], before)


def test_process_changes_is_empty_for_ordinary_work() -> None:
    with process_changes() as changes:
        jax.numpy.ones(3).sum()
    assert changes == []


def _entry_point(name: str, module: str) -> SimpleNamespace:
    def load() -> object:
        sys.modules.pop(module, None)
        __import__(module)
        return sys.modules[module]

    return SimpleNamespace(name=name, module=module, dist=None, load=load)


def test_registry_refuses_a_plugin_that_switches_on_float64_at_import(monkeypatch) -> None:
    saved = sys.modules.get("ssvae_core.testing._impure_plugin")
    monkeypatch.setattr(
        registry_module.importlib.metadata,
        "entry_points",
        lambda group: [_entry_point("double", "ssvae_core.testing._impure_plugin")],
    )
    try:
        registry = Registry()
    finally:
        if saved is not None:
            sys.modules["ssvae_core.testing._impure_plugin"] = saved
    (problem,) = registry.problems
    assert problem.plugin == "double"
    assert "\n" not in problem.reason
    assert problem.reason.startswith(
        "changes process-wide state: JAX setting jax_enable_x64 False -> True"
    )
    assert "double_precision" not in registry.names("prior")
    assert not jax.config.jax_enable_x64
