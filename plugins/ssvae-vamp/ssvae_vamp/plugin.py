"""Registers the ``vamp`` prior through the ``ssvae`` entry-point group."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import PRNGKeyArray

from ssvae_core.plugin import BuildContext, ComponentFactory, hookimpl, option
from ssvae_vamp.prior import VampPrior
from ssvae_vamp.pseudo_inputs import INITS, initial_pseudo_inputs


@dataclass(frozen=True)
class VampOptions:
    num_components: int = option(10, help="number of pseudo-inputs and channels K", minimum=2)
    num_samples: int = option(1, help="Monte-Carlo samples S of KL_z per example", minimum=1)
    init: str = option(
        "random", help="pseudo-input init: random training inputs or k-means centres",
        choices=INITS,
    )
    pseudo_lr_scale: float = option(
        1.0, help="learning-rate scale of the pseudo-inputs (1 = the networks' rate)",
        minimum=0.0, exclusive_minimum=True,
    )
    learn_pi: bool = option(False, help="learn the channel weights π (else fixed uniform)")
    dirichlet_alpha: float = option(
        1.0, help="Dirichlet concentration α of the MAP penalty on a learnable π", minimum=0.0,
        exclusive_minimum=True,
    )


def _build_vamp(options: VampOptions, context: BuildContext, key: PRNGKeyArray) -> VampPrior:
    pseudo_inputs = initial_pseudo_inputs(
        options.init, options.num_components, context.input_shape, context.data, key
    )
    return VampPrior(
        pseudo_inputs,
        num_samples=options.num_samples,
        pseudo_lr_scale=options.pseudo_lr_scale,
        learn_pi=options.learn_pi,
        dirichlet_alpha=options.dirichlet_alpha,
    )


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    return {
        "vamp": ComponentFactory(
            VampPrior, VampOptions, _build_vamp,
            "VampPrior: mixture of q(z|u_k) over K learned pseudo-inputs; Monte-Carlo KL_z, τ head",
            channels=True, conditions_decoder=False,  # the channels live in latent space only
        )
    }
