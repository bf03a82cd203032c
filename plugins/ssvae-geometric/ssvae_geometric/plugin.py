"""Registers the ``geometric_mog`` prior through the ``ssvae`` entry-point group."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from jaxtyping import PRNGKeyArray

from ssvae_core.plugin import BuildContext, ComponentFactory, hookimpl, option
from ssvae_geometric.prior import LAYOUTS, GeometricMixturePrior


@dataclass(frozen=True)
class GeometricOptions:
    num_components: int = option(
        9, help="number of channels K (a square number for the grid layout)", minimum=2
    )
    layout: str = option(
        "circle", help="centres on a circle, or on a √K×√K grid, in latent dims 1-2",
        choices=LAYOUTS,
    )
    radius: float = option(
        3.0, help="circle radius; for the grid, the spacing between neighbouring centres",
        minimum=0.0, exclusive_minimum=True,
    )
    centre_lr_scale: float = option(
        0.0, help="learning-rate scale of the centres, which then start at the layout and are trained in every latent dimension (0 = fixed centres)",
        minimum=0.0,
    )


def _build_geometric(
    options: GeometricOptions, context: BuildContext, key: PRNGKeyArray
) -> GeometricMixturePrior:
    prior = GeometricMixturePrior(
        context.latent_dim,
        options.num_components,
        layout=options.layout,
        radius=options.radius,
        centre_lr_scale=options.centre_lr_scale,
    )
    if options.centre_lr_scale > 0:
        return prior
    warnings.warn(
        f"prior 'geometric_mog' fixes its {options.num_components} channel centres on a "
        f"{options.layout} in the first two latent dimensions, which imposes that topology "
        "on the latent space; use it as a diagnostic or curriculum prior",
        UserWarning,
        stacklevel=2,
    )
    return prior


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    return {
        "geometric_mog": ComponentFactory(
            GeometricMixturePrior, GeometricOptions, _build_geometric,
            "N(μ_c, I) at fixed centres on a circle or grid; diagnostic / curriculum prior",
        )
    }
