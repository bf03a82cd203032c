"""The core's own components, registered through the same hooks as external plugins."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxtyping import PRNGKeyArray

from ssvae_core.hookspecs import hookimpl
from ssvae_core.labels.acquisitions import ACQUISITIONS
from ssvae_core.modelling.components import BuildContext, ComponentFactory
from ssvae_core.modelling.heads import SoftmaxHead, TauHead
from ssvae_core.modelling.networks.dense import ACTIVATIONS, DenseDecoder, DenseEncoder
from ssvae_core.modelling.priors.mixture import MixturePrior
from ssvae_core.modelling.priors.standard import StandardPrior
from ssvae_core.modelling.terms.builtin import LOSS_TERMS
from ssvae_core.options import option
from ssvae_core.runs.tracking import BUILTIN_TRACKERS, TrackerFactory


@dataclass(frozen=True)
class StandardOptions:
    """The standard normal prior has no options."""


@dataclass(frozen=True)
class MixtureOptions:
    num_components: int = option(10, help="number of channels K", minimum=2)
    learn_pi: bool = option(False, help="learn the channel weights π (else fixed uniform)")
    dirichlet_alpha: float = option(
        1.0, help="Dirichlet concentration α of the MAP penalty on a learnable π", minimum=0.0,
        exclusive_minimum=True,
    )


def _build_standard(options: StandardOptions, context: BuildContext, key: PRNGKeyArray) -> StandardPrior:
    return StandardPrior(latent_dim=context.latent_dim)


def _build_mixture(options: MixtureOptions, context: BuildContext, key: PRNGKeyArray) -> MixturePrior:
    return MixturePrior(
        latent_dim=context.latent_dim,
        num_components=options.num_components,
        learn_pi=options.learn_pi,
        dirichlet_alpha=options.dirichlet_alpha,
    )


@dataclass(frozen=True)
class DenseOptions:
    hidden: tuple[int, ...] = option((256, 256), help="hidden layer widths", minimum=1)
    activation: str = option("gelu", help="activation function", choices=tuple(ACTIVATIONS))


def _build_dense_encoder(options: DenseOptions, context: BuildContext, key: PRNGKeyArray) -> DenseEncoder:
    return DenseEncoder(
        context.input_shape,
        context.latent_dim,
        context.num_components,
        options.hidden,
        options.activation,
        key=key,
    )


def _build_dense_decoder(options: DenseOptions, context: BuildContext, key: PRNGKeyArray) -> DenseDecoder:
    return DenseDecoder(
        context.input_shape,
        context.latent_dim,
        options.hidden,
        options.activation,
        context.conditioning,
        context.embedding_dim,
        context.likelihood.scale_size(math.prod(context.input_shape)),
        key=key,
    )


@dataclass(frozen=True)
class TauOptions:
    alpha0: float = option(
        0.05, help="Dirichlet smoothing α₀ of τ rows", minimum=0.0, exclusive_minimum=True
    )
    count_decay: float = option(
        0.99, help="per-step decay of the soft counts, so τ follows the moving encoder (1 keeps every count)", minimum=0.0,
        maximum=1.0, exclusive_minimum=True,
    )
    initial_counts: float = option(
        10.0, help="seed counts s₀ giving channel c to label c for c < Y at the start; channels c ≥ Y start unowned (0: no seed)",
        minimum=0.0,
    )
    free_usage: float = option(
        1e-3, help="a channel whose usage p̂_c is below this is free (no label owns it)",
        minimum=0.0, maximum=1.0,
    )
    free_mass: float = option(
        0.01, help="a channel holding less than this share of the label mass Σ s is free; a class named after training claims free channels",
        minimum=0.0, maximum=1.0,
    )


def _build_tau(options: TauOptions, context: BuildContext, key: PRNGKeyArray) -> TauHead:
    if context.num_components == 0:
        raise ValueError("the tau head needs a prior with channels; use head 'softmax'")
    return TauHead(
        num_components=context.num_components,
        num_classes=context.num_classes,
        alpha0=options.alpha0,
        count_decay=options.count_decay,
        initial_counts=options.initial_counts,
        free_usage=options.free_usage,
        free_mass=options.free_mass,
    )


@dataclass(frozen=True)
class SoftmaxOptions:
    """The softmax head has no options."""


def _build_softmax(options: SoftmaxOptions, context: BuildContext, key: PRNGKeyArray) -> SoftmaxHead:
    return SoftmaxHead(context.latent_dim, context.num_classes, key=key)


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    return {
        "standard": ComponentFactory(
            StandardPrior, StandardOptions, _build_standard, "N(0, I); no channels, softmax head",
            channels=False,
        ),
        "mixture": ComponentFactory(
            MixturePrior, MixtureOptions, _build_mixture,
            "Cat(π) channels over N(0, I); τ head, component-aware decoder",
            channels=True, conditions_decoder=True,
        ),
    }


@hookimpl
def ssvae_register_encoders() -> dict[str, ComponentFactory]:
    return {
        "dense": ComponentFactory(
            DenseEncoder, DenseOptions, _build_dense_encoder, "MLP on the flattened input"
        )
    }


@hookimpl
def ssvae_register_decoders() -> dict[str, ComponentFactory]:
    return {
        "dense": ComponentFactory(
            DenseDecoder, DenseOptions, _build_dense_decoder,
            "MLP decoder with concat / film / cin / none conditioning",
        )
    }


@hookimpl
def ssvae_register_heads() -> dict[str, ComponentFactory]:
    return {
        "tau": ComponentFactory(
            TauHead, TauOptions, _build_tau, "Latent-only τ-classifier from channel soft counts",
            needs_channels=True,
        ),
        "softmax": ComponentFactory(
            SoftmaxHead, SoftmaxOptions, _build_softmax, "Linear softmax classifier on z"
        ),
    }


@hookimpl
def ssvae_register_loss_terms() -> dict[str, ComponentFactory]:
    return dict(LOSS_TERMS)


@hookimpl
def ssvae_register_acquisitions() -> dict[str, ComponentFactory]:
    return dict(ACQUISITIONS)


@hookimpl
def ssvae_register_trackers() -> dict[str, TrackerFactory]:
    return dict(BUILTIN_TRACKERS)
