"""Extension points: the abstract modules every encoder, decoder, prior and head implements.

Each class is abstract in the Equinox sense (``AbstractVar`` fields, abstract methods);
implementations are final classes that fill in every field and method and override nothing.
Networks work on a single example and are ``vmap``-ed by the model; priors and heads see
the whole batch, but must return per-example values so that no example's loss depends on
another's.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.types import DecoderOutput, EncoderOutput


class AbstractEncoder(eqx.Module):
    """Maps one input to ``EncoderOutput`` (``q(z|x)`` and, with channels, ``q(c|x)`` logits)."""

    input_shape: eqx.AbstractVar[tuple[int, ...]]
    latent_dim: eqx.AbstractVar[int]
    num_components: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        """Encode one example; ``logits`` must be ``None`` iff ``num_components == 0``."""


class AbstractDecoder(eqx.Module):
    """Maps a latent ``z`` (and a component embedding ``e_c``) to ``DecoderOutput``."""

    output_shape: eqx.AbstractVar[tuple[int, ...]]
    conditioning: eqx.AbstractVar[str]

    @abc.abstractmethod
    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        """Decode one example; ``embedding`` is ``None`` exactly when ``conditioning == 'none'``."""


class AbstractPrior(eqx.Module):
    """The prior ``p(c) p(z|c)``: KL terms, samples, regularisers and optimiser scales.

    ``num_components`` is ``K`` (0 for a prior without channels). ``conditions_decoder``
    says whether the decoder receives the component embedding ``e_c``.
    """

    num_components: eqx.AbstractVar[int]
    conditions_decoder: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def log_weights(self) -> Float[Array, " K"]:
        """``log π``; an empty array for a prior without channels."""

    @abc.abstractmethod
    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        """Per-example KL terms by name.

        ``"kl_z"`` is weighted by the annealed ``β_z(t)`` and ``"kl_c"`` (``KL(q(c|x)||π)``)
        by ``β_c``; any other name enters the loss with weight 1. ``encoder`` is there for
        priors defined through it (a VampPrior re-encodes its pseudo-inputs).
        """

    @abc.abstractmethod
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        """Draw ``(z, c)`` from the prior; ``c`` is all zeros without channels."""

    @abc.abstractmethod
    def regularisers(self) -> dict[str, Float[Array, ""]]:
        """Scalar penalties on the prior's own parameters (e.g. a Dirichlet on π)."""

    @abc.abstractmethod
    def parameter_scales(self) -> dict[str, float]:
        """Learning-rate scale per field name; ``0.0`` freezes the field exactly."""


class AbstractHead(eqx.Module):
    """Turns the posterior into class probabilities and a supervised loss.

    Non-differentiable statistics (τ's soft counts) live in a head state pytree that the
    training state carries; the head itself holds only parameters and static options.
    """

    num_classes: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init_state(self) -> PyTree[Any]:
        """The head's initial state (e.g. zero soft counts)."""

    @abc.abstractmethod
    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: PyTree[Any]
    ) -> Float[Array, "B Y"]:
        """``p(y|x)`` for each example; rows sum to 1."""

    @abc.abstractmethod
    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: PyTree[Any]
    ) -> Float[Array, " B"]:
        """Certainty in [0, 1]; the OOD score is ``1 - certainty``."""

    @abc.abstractmethod
    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: PyTree[Any],
    ) -> Float[Array, " B"]:
        """Per-example supervised loss; the caller masks unlabeled rows (label ``-1``)."""

    @abc.abstractmethod
    def update_state(
        self, state: PyTree[Any], posterior: EncoderOutput, labels: Int[Array, " B"]
    ) -> PyTree[Any]:
        """New head state after seeing a batch; rows with label ``-1`` contribute nothing."""

    @abc.abstractmethod
    def class_map(self, state: PyTree[Any]) -> Float[Array, "K Y"] | None:
        """The channel→label map ``τ`` (``K × Y``, rows sum to 1), or ``None`` for a head
        without one (a head that does not classify through channels)."""
