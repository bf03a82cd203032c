"""Registers the ``flow`` prior through the ``ssvae`` entry-point group."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ssvae_core.plugin import BuildContext, ComponentFactory, hookimpl, option
from ssvae_flow.prior import TRANSFORMERS, FlowPrior, masked_autoregressive_bijection


@dataclass(frozen=True)
class FlowOptions:
    num_components: int = option(10, help="number of channels K", minimum=2)
    depth: int = option(4, help="flow layers (masked autoregressive layers)", minimum=1)
    width: int = option(64, help="hidden units of each layer's conditioner network", minimum=1)
    transformer: str = option(
        "affine", help="each layer's map of one coordinate: affine, or a rational-quadratic spline",
        choices=TRANSFORMERS,
    )
    knots: int = option(8, help="inner knots of each spline (transformer 'spline')", minimum=2)
    interval: float = option(
        4.0, help="the splines act on [-interval, interval], the identity outside (transformer 'spline')",
        minimum=0.0, exclusive_minimum=True,
    )
    num_samples: int = option(1, help="Monte-Carlo samples S of KL_z per example", minimum=1)
    flow_lr_scale: float = option(
        1.0, help="learning-rate scale of the flow's parameters (0 freezes the flow)", minimum=0.0,
    )
    learn_pi: bool = option(False, help="learn the channel weights π (else fixed uniform)")
    dirichlet_alpha: float = option(
        1.0, help="Dirichlet concentration α of the MAP penalty on a learnable π", minimum=0.0,
        exclusive_minimum=True,
    )


def _build_flow(options: FlowOptions, context: BuildContext, key: PRNGKeyArray) -> FlowPrior:
    bijection = masked_autoregressive_bijection(
        context.latent_dim,
        depth=options.depth,
        width=options.width,
        transformer=options.transformer,
        knots=options.knots,
        interval=options.interval,
        key=key,
    )
    return FlowPrior(
        jnp.zeros((options.num_components, context.latent_dim)),
        bijection,
        num_samples=options.num_samples,
        flow_lr_scale=options.flow_lr_scale,
        learn_pi=options.learn_pi,
        dirichlet_alpha=options.dirichlet_alpha,
    )


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    return {
        "flow": ComponentFactory(
            FlowPrior, FlowOptions, _build_flow,
            "Cat(π) channels N(μ_c, I) through a shared masked autoregressive flow (flowjax); Monte-Carlo KL_z, τ head, component-aware decoder",
        )
    }
