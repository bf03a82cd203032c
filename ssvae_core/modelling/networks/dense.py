"""Fully connected encoder and component-aware decoder."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.modelling.conditioning import ComponentConditioning
from ssvae_core.modelling.networks import PosteriorHeads
from ssvae_core.modelling.protocols import AbstractDecoder, AbstractEncoder
from ssvae_core.modelling.types import DecoderOutput, EncoderOutput

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}
"""The activation functions by name, for a network's ``activation`` option."""


def _layers(sizes: Sequence[int], key: PRNGKeyArray) -> list[eqx.nn.Linear]:
    pairs = list(itertools.pairwise(sizes))
    keys = jax.random.split(key, max(len(pairs), 1))
    return [eqx.nn.Linear(a, b, key=k) for (a, b), k in zip(pairs, keys[: len(pairs)], strict=True)]


class DenseEncoder(AbstractEncoder):
    """MLP on the flattened input; heads for ``μ``, ``log σ²`` and, with channels, logits."""

    input_shape: tuple[int, ...] = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    num_components: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    hidden: list[eqx.nn.Linear]
    heads: PosteriorHeads

    def __init__(
        self,
        input_shape: tuple[int, ...],
        latent_dim: int,
        num_components: int,
        hidden_sizes: Sequence[int],
        activation: str,
        *,
        key: PRNGKeyArray,
    ):
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.activation = activation
        body_key, heads_key = jax.random.split(key)
        sizes = [math.prod(input_shape), *hidden_sizes]
        self.hidden = _layers(sizes, body_key)
        self.heads = PosteriorHeads(sizes[-1], latent_dim, num_components, key=heads_key)

    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        act = ACTIVATIONS[self.activation]
        h = x.reshape(-1)
        for layer in self.hidden:
            h = act(layer(h))
        return self.heads(h)


class DenseDecoder(AbstractDecoder):
    """MLP from ``z`` to the sample; ``e_c`` enters by the chosen conditioning method.

    ``concat`` widens the input; ``film`` / ``cin`` modulate the first hidden layer.
    """

    output_shape: tuple[int, ...] = eqx.field(static=True)
    conditioning: str = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    condition: ComponentConditioning
    hidden: list[eqx.nn.Linear]
    loc_head: eqx.nn.Linear
    scale_head: eqx.nn.Linear | None

    def __init__(
        self,
        output_shape: tuple[int, ...],
        latent_dim: int,
        hidden_sizes: Sequence[int],
        activation: str,
        conditioning: str,
        embedding_dim: int,
        scale_size: int,
        *,
        key: PRNGKeyArray,
    ):
        if not hidden_sizes:
            raise ValueError("the dense decoder needs at least one hidden layer")
        self.output_shape = tuple(output_shape)
        self.conditioning = conditioning
        self.activation = activation
        cond_key, body_key, loc_key, scale_key = jax.random.split(key, 4)
        self.condition = ComponentConditioning(
            conditioning, embedding_dim, hidden_sizes[0], key=cond_key
        )
        sizes = [latent_dim + self.condition.extra_input_features(), *hidden_sizes]
        self.hidden = _layers(sizes, body_key)
        self.loc_head = eqx.nn.Linear(sizes[-1], math.prod(output_shape), key=loc_key)
        self.scale_head = eqx.nn.Linear(sizes[-1], scale_size, key=scale_key) if scale_size else None

    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        act = ACTIVATIONS[self.activation]
        h = self.condition.condition_input(z, embedding)
        for index, layer in enumerate(self.hidden):
            h = layer(h)
            if index == 0:
                h = self.condition.condition_hidden(h, embedding)
            h = act(h)
        loc = self.loc_head(h).reshape(self.output_shape)
        scale_raw = self.scale_head(h) if self.scale_head is not None else None
        return DecoderOutput(loc=loc, scale_raw=scale_raw)
