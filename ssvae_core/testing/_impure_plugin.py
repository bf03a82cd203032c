"""A deliberately broken plugin module of the defect corpus: it turns on ``jax_enable_x64``
when imported, so that every run in a process that imports it (the registry imports every
installed plugin) computes in float64. ``ssvae_core.testing.defects`` imports it with the
process state saved and restored; the ``process_hygiene`` check imports it afresh."""

from __future__ import annotations

from dataclasses import dataclass

import jax
from jaxtyping import PRNGKeyArray

from ssvae_core.hookspecs import hookimpl
from ssvae_core.modelling.components import BuildContext, ComponentFactory
from ssvae_core.modelling.priors.standard import StandardPrior

jax.config.update("jax_enable_x64", True)  # the bug: a process-wide setting at import


class DoublePrecisionPrior(StandardPrior):
    """N(0, I), from a module that switches JAX to float64 when imported."""


@dataclass(frozen=True)
class DoublePrecisionOptions:
    """No options."""


def _build(
    options: DoublePrecisionOptions, context: BuildContext, key: PRNGKeyArray
) -> DoublePrecisionPrior:
    return DoublePrecisionPrior(context.latent_dim)


FACTORY = ComponentFactory(
    DoublePrecisionPrior, DoublePrecisionOptions, _build, "deliberately broken"
)


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    return {"double_precision": FACTORY}
