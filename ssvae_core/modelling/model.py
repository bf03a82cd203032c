"""The SSVAE model: one pytree holding encoder, decoder, prior, head and embeddings."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.config import ComponentConfig, Config, resolve_components
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.components import BuildContext
from ssvae_core.modelling.likelihoods import AbstractLikelihood, make_likelihood
from ssvae_core.modelling.protocols import (
    AbstractDecoder,
    AbstractEncoder,
    AbstractHead,
    AbstractPrior,
)
from ssvae_core.modelling.types import EncoderOutput, reparameterise
from ssvae_core.registry import PROTOCOLS, Registry, default_registry

__all__ = ["SSVAE", "build_model", "reparameterise"]


class SSVAE(eqx.Module):
    """Encoder ``q(z, c | x)``, prior ``p(c) p(z|c)``, decoder ``p(x | z, c)`` and a head.

    ``embeddings`` holds the component embeddings ``e_c`` (``K × E``) when the decoder is
    conditioned on channels, and is ``None`` otherwise.
    """

    encoder: AbstractEncoder
    decoder: AbstractDecoder
    prior: AbstractPrior
    head: AbstractHead
    likelihood: AbstractLikelihood
    embeddings: Float[Array, "K E"] | None

    @property
    def num_components(self) -> int:
        return self.prior.num_components

    def encode(self, x: Float[Array, "B ..."]) -> EncoderOutput:
        """``q(z|x)`` and ``q(c|x)`` logits for a batch."""
        return jax.vmap(self.encoder)(x)

    def channel_nll(
        self, x: Float[Array, "B ..."], z: Float[Array, "B D"]
    ) -> Float[Array, "B K"]:
        """``NLL(x | z, c)`` for every channel (one column when the decoder ignores ``c``)."""
        if self.embeddings is None:
            outputs = jax.vmap(lambda z_i: self.decoder(z_i, None))(z)
            return jax.vmap(self.likelihood.nll)(x, outputs)[:, None]

        def per_example(x_i: Float[Array, "*sample"], z_i: Float[Array, " D"]) -> Float[Array, " K"]:
            outputs = jax.vmap(lambda e: self.decoder(z_i, e))(self.embeddings)
            return jax.vmap(lambda o: self.likelihood.nll(x_i, o))(outputs)

        return jax.vmap(per_example)(x, z)

    def selected_channel_nll(
        self, x: Float[Array, "B ..."], z: Float[Array, "B D"], channels: Int[Array, "B M"]
    ) -> Float[Array, "B M"]:
        """``NLL(x | z, c)`` for the ``M`` channels ``channels[i]`` of each example ``i`` only.

        The decoder runs ``M`` times per example rather than ``K``; without embeddings it
        ignores the channel, runs once and the column is repeated.
        """
        if self.embeddings is None:
            return jnp.broadcast_to(self.channel_nll(x, z), channels.shape)
        embeddings = self.embeddings[channels]

        def per_example(x_i: Float[Array, "*sample"], z_i: Float[Array, " D"], e_i: Float[Array, "M E"]) -> Float[Array, " M"]:
            outputs = jax.vmap(lambda e: self.decoder(z_i, e))(e_i)
            return jax.vmap(lambda o: self.likelihood.nll(x_i, o))(outputs)

        return jax.vmap(per_example)(x, z, embeddings)

    def reconstruct(
        self, z: Float[Array, "B D"], channels: Int[Array, " B"]
    ) -> Float[Array, "B ..."]:
        """Mean reconstruction ``E[x | z, c]``; ``channels`` is ignored without embeddings."""
        if self.embeddings is None:
            return jax.vmap(lambda z_i: self.likelihood.mean(self.decoder(z_i, None)))(z)
        embeddings = self.embeddings[channels]
        return jax.vmap(lambda z_i, e: self.likelihood.mean(self.decoder(z_i, e)))(z, embeddings)


def _build(kind: str, component: ComponentConfig, context: BuildContext, key: PRNGKeyArray, registry: Registry):
    registered = registry.get(kind, component.name)
    try:
        built = registered.factory.build(component.options, context, key)
    except ValueError as error:
        raise ConfigError(f"{kind} {component.name!r}: {error}") from None
    if not isinstance(built, PROTOCOLS[kind]):
        raise ConfigError(
            f"{kind} {component.name!r} from plugin {registered.plugin!r} built "
            f"{type(built).__name__}, which is not an {PROTOCOLS[kind].__name__}"
        )
    return built


def build_model(
    config: Config,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    key: PRNGKeyArray,
    data: np.ndarray | None = None,
    registry: Registry | None = None,
) -> tuple[SSVAE, Config]:
    """Build the model a config describes; returns it and the config, resolved.

    A config from ``load_config`` or ``config_from_dict`` is already resolved; one put
    together by hand with ``"auto"`` left in it is resolved here (``resolve_components``).
    ``data`` (training inputs) is offered to components with data-dependent
    initialisation; it is ``None`` when rebuilding a skeleton for a checkpoint.
    """
    registry = registry or default_registry()
    config = resolve_components(config, registry)
    model_config = config.model
    likelihood = make_likelihood(
        model_config.likelihood,
        sigma=model_config.sigma,
        sigma_min=model_config.sigma_min,
        sigma_max=model_config.sigma_max,
        per_pixel=model_config.sigma_per_pixel,
    )
    context = BuildContext(
        input_shape=tuple(input_shape),
        latent_dim=model_config.latent_dim,
        num_classes=num_classes,
        num_components=0,
        conditioning="none",
        embedding_dim=model_config.embedding_dim,
        likelihood=likelihood,
        data=data,
    )
    prior_key, encoder_key, decoder_key, head_key, embedding_key = jax.random.split(key, 5)
    prior = _build("prior", config.prior, context, prior_key, registry)
    _check_declared(prior, config.prior, registry)
    context = dataclasses.replace(
        context, num_components=prior.num_components, conditioning=model_config.conditioning
    )
    encoder = _build("encoder", config.encoder, context, encoder_key, registry)
    decoder = _build("decoder", config.decoder, context, decoder_key, registry)
    head = _build("head", config.head, context, head_key, registry)
    embeddings = None
    if model_config.conditioning != "none":
        embeddings = jax.random.normal(
            embedding_key, (prior.num_components, model_config.embedding_dim)
        )
    model = SSVAE(
        encoder=encoder,
        decoder=decoder,
        prior=prior,
        head=head,
        likelihood=likelihood,
        embeddings=embeddings,
    )
    return model, config


def _check_declared(prior: AbstractPrior, component: ComponentConfig, registry: Registry) -> None:
    """The built prior has channels and conditions the decoder as its factory declares."""
    registered = registry.get("prior", component.name)
    declared = (
        registered.factory.has_channels(component.options),
        registered.factory.channels_condition_decoder(component.options),
    )
    built = (prior.num_components > 0, bool(prior.conditions_decoder) and prior.num_components > 0)
    if declared != built:
        raise ConfigError(
            f"prior {component.name!r} from plugin {registered.plugin!r} built a prior with "
            f"num_components={prior.num_components} and conditions_decoder="
            f"{prior.conditions_decoder}, but its ComponentFactory declares channels="
            f"{declared[0]} and conditions_decoder={declared[1]}; declare channels= and "
            "conditions_decoder= in its ComponentFactory"
        )
