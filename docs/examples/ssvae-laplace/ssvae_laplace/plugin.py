"""Registers the ``laplace`` prior and the ``responsibility_entropy`` loss term through the
``ssvae`` entry-point group."""

from __future__ import annotations

from dataclasses import dataclass

import jax
from jaxtyping import PRNGKeyArray

from ssvae_core.plugin import BuildContext, ComponentFactory, hookimpl, option
from ssvae_laplace.prior import ESTIMATORS, LaplaceMixturePrior
from ssvae_laplace.terms import ResponsibilityEntropyOptions, ResponsibilityEntropyTerm


@dataclass(frozen=True)
class LaplaceOptions:
    num_components: int = option(10, help="number of channels K", minimum=2)
    scale: float = option(
        1.0,
        help="Laplace scale b of every p(z|c) (variance 2b²)",
        minimum=0.0,
        exclusive_minimum=True,
    )
    spread: float = option(
        0.0,
        help="standard deviation of the initial locations μ_c (0: all at the origin)",
        minimum=0.0,
    )
    location_lr_scale: float = option(
        1.0, help="learning-rate scale of the locations μ_c (0 freezes them)", minimum=0.0
    )
    kl_estimator: str = option(
        "analytic",
        help="KL_z in closed form, or by Monte Carlo with num_samples draws",
        choices=ESTIMATORS,
    )
    num_samples: int = option(
        1, help="Monte-Carlo samples S of KL_z (kl_estimator 'monte_carlo')", minimum=1
    )


def _build_laplace(
    options: LaplaceOptions, context: BuildContext, key: PRNGKeyArray
) -> LaplaceMixturePrior:
    locations = options.spread * jax.random.normal(
        key, (options.num_components, context.latent_dim)
    )
    return LaplaceMixturePrior(
        locations,
        scale=options.scale,
        kl_estimator=options.kl_estimator,
        num_samples=options.num_samples,
        location_lr_scale=options.location_lr_scale,
    )


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    return {
        "laplace": ComponentFactory(
            LaplaceMixturePrior,
            LaplaceOptions,
            _build_laplace,
            "Cat(π) channels over factorised Laplace(μ_c, b) with learned locations; τ head",
        )
    }


def _build_entropy(
    options: ResponsibilityEntropyOptions, context: BuildContext, key: PRNGKeyArray
) -> ResponsibilityEntropyTerm:
    return ResponsibilityEntropyTerm(options.schedule(), unlabeled_only=options.unlabeled_only)


@hookimpl
def ssvae_register_loss_terms() -> dict[str, ComponentFactory]:
    return {
        "responsibility_entropy": ComponentFactory(
            ResponsibilityEntropyTerm,
            ResponsibilityEntropyOptions,
            _build_entropy,
            "Entropy of each row's responsibilities (entropy minimisation); off by default",
        )
    }
