"""Process hygiene: what importing or building a plugin must leave alone.

A plugin shares the process with every other plugin and with the user's runs, so importing
it, registering it or building its components must not change JAX's global configuration
(``jax_enable_x64``, the default device, matmul precision, debug flags, ...), NumPy's global
random state or the environment. ``process_changes`` records such changes around a
block and puts the state back; the registry refuses a plugin whose import changes any, and
the conformance kit's ``process_hygiene`` check builds a component under it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jax
import numpy as np

# JAX settings that change what a program computes or how it runs, process-wide.
JAX_SETTINGS = (
    "jax_enable_x64",
    "jax_default_device",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_disable_jit",
    "jax_enable_checks",
    "jax_check_tracer_leaks",
    "jax_log_compiles",
    "jax_platforms",
)


def _jax_settings() -> dict[str, Any]:
    return {name: getattr(jax.config, name) for name in JAX_SETTINGS if hasattr(jax.config, name)}


class ProcessState:
    """A snapshot of the process-wide state a plugin must leave alone."""

    def __init__(self) -> None:
        self.jax = _jax_settings()
        self.numpy = np.random.get_state()
        self.python = random.getstate()
        self.environ = dict(os.environ)

    def changes(self) -> list[str]:
        """What differs now from the snapshot, one short phrase each."""
        found = []
        for name, before in self.jax.items():
            after = getattr(jax.config, name)
            if after != before:
                found.append(f"JAX setting {name} {before!r} -> {after!r}")
        state = np.random.get_state()
        if state[0] != self.numpy[0] or not np.array_equal(state[1], self.numpy[1]) or any(
            a != b for a, b in zip(state[2:], self.numpy[2:], strict=True)
        ):
            found.append("NumPy's global random state (np.random.seed or a draw from np.random)")
        if random.getstate() != self.python:
            found.append("Python's global random state (random.seed or a draw from random)")
        environ = dict(os.environ)
        for name in sorted(set(environ) | set(self.environ)):
            before, after = self.environ.get(name), environ.get(name)
            if before != after:
                what = "set" if before is None else "removed" if after is None else "changed"
                found.append(f"environment variable {name} {what}")
        return found

    def restore(self) -> None:
        """Put every recorded setting back as it was."""
        for name, value in self.jax.items():
            if getattr(jax.config, name) != value:
                jax.config.update(name, value)
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        for name in set(os.environ) - set(self.environ):
            del os.environ[name]
        for name, value in self.environ.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextmanager
def process_changes() -> Iterator[list[str]]:
    """Record what the block changes in the process-wide state, then undo it.

    Yields a list that holds, after the block, one phrase per change (empty when the block
    left everything alone)::

        with process_changes() as changes:
            import some_plugin
        if changes:
            ...  # refuse it: "; ".join(changes)
    """
    state = ProcessState()
    changes: list[str] = []
    try:
        yield changes
    finally:
        changes.extend(state.changes())
        if changes:
            state.restore()


def describe_changes(changes: list[str]) -> str:
    """One line naming the changes and the rule they break."""
    return (
        f"changes process-wide state: {'; '.join(changes)} (a plugin must leave JAX's "
        "configuration, NumPy's and Python's global random state and the environment alone)"
    )
