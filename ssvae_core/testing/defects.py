"""A corpus of deliberately broken components: what the conformance kit must catch.

Each ``Defect`` is a small working component with one bug of the kind plugin authors
actually write — a sign error in a variance ratio, a naive softmax, a sample drawn with the
variance as its scale, a factory that drops an option, a batch statistic, NumPy noise in a
method — and names the check meant to catch it and a phrase its message must contain.
``tests/test_conformance_defects.py`` holds the kit to that; ``python -m
ssvae_core.testing.defects`` runs every check on every defect and prints the catch table
of ``docs/plugins.md`` (which checks catch which defect, and whether the intended one
does).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.modelling.components import BuildContext, ComponentFactory
from ssvae_core.modelling.heads import TauHead
from ssvae_core.modelling.hygiene import process_changes
from ssvae_core.modelling.losses import categorical_kl, diagonal_gaussian_log_density, gaussian_kl
from ssvae_core.modelling.networks.dense import DenseDecoder, DenseEncoder
from ssvae_core.modelling.priors.channels import AbstractChannelPrior
from ssvae_core.modelling.protocols import (
    AbstractAcquisition,
    AbstractEncoder,
    AbstractPrior,
    AbstractTopScoreAcquisition,
)
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms import AbstractLossTerm, TermInputs, TermOptions, TermValue
from ssvae_core.modelling.types import AcquisitionInputs, DecoderOutput, EncoderOutput
from ssvae_core.options import option
from ssvae_core.testing._runner import TRACED_VALUE_HINT


@dataclass(frozen=True)
class Defect:
    """One broken component: its kind, factory and options, the bug, the check that must
    catch it and a phrase that message must contain (so it fails for the intended reason)."""

    name: str
    kind: str
    bug: str
    check: str
    message: str
    factory: ComponentFactory
    options: Any = None
    # The usual cause the message must give, where the failure shows a more specific one
    # than the check's own hint (``None``: the check's hint).
    hint: str | None = None


# --- A correct reference prior: channels with learned means and variances -----------------


@dataclass(frozen=True)
class ChannelOptions:
    num_components: int = option(4, help="number of channels K", minimum=2)
    spread: float = option(1.5, help="standard deviation of the initial means", minimum=0.0)
    log_variance: float = option(-1.0, help="initial log-variance of every channel")
    location_lr_scale: float = option(1.0, help="learning-rate scale of the means", minimum=0.0)
    skew: float = option(0.0, help="initial π ∝ exp(skew · c) (0: uniform)")


class GaussianChannels(AbstractChannelPrior):
    """``c ~ Cat(π)`` (π fixed), ``z | c ~ N(μ_c, diag σ_c²)`` with learned ``μ_c`` and
    ``log σ_c²``: the correct prior every prior defect below changes in one place."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    location_lr_scale: float = eqx.field(static=True)
    locations: Float[Array, "K D"]
    log_variances: Float[Array, "K D"]
    pi_logits: Float[Array, " K"]

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        mean, log_var = posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :]
        ratio = jnp.exp(log_var - self.log_variances)
        offset = (mean - self.locations) ** 2 * jnp.exp(-self.log_variances)
        return 0.5 * jnp.sum(ratio + offset - 1.0 - log_var + self.log_variances, axis=-1)

    def log_weights(self) -> Float[Array, " K"]:
        return jax.nn.log_softmax(self.pi_logits)

    def channels_and_noise(
        self, num_samples: int, key: PRNGKeyArray
    ) -> tuple[Int[Array, " N"], Float[Array, "N D"]]:
        """Channels drawn from π and standard Gaussian noise, one row per draw."""
        channel_key, noise_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.pi_logits, shape=(num_samples,))
        return channels, jax.random.normal(noise_key, (num_samples, self.locations.shape[1]))

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, noise = self.channels_and_noise(num_samples, key)
        std = jnp.exp(0.5 * self.log_variances[channels])
        return self.locations[channels] + std * noise, channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {"locations": self.location_lr_scale, "pi_logits": 0.0}


def _channels(
    cls: type[GaussianChannels],
    options: ChannelOptions,
    context: BuildContext,
    key: PRNGKeyArray,
    *,
    num_components: int | None = None,
    location_lr_scale: float | None = None,
    **fields: Any,
) -> GaussianChannels:
    count = options.num_components if num_components is None else num_components
    scale = options.location_lr_scale if location_lr_scale is None else location_lr_scale
    return cls(
        num_components=count,
        conditions_decoder=True,
        location_lr_scale=scale,
        locations=options.spread * jax.random.normal(key, (count, context.latent_dim)),
        log_variances=jnp.full((count, context.latent_dim), options.log_variance),
        pi_logits=options.skew * jnp.arange(count, dtype=jnp.float32),
        **fields,
    )


def _channel_factory(cls: type[GaussianChannels], **build: Any) -> ComponentFactory:
    return ComponentFactory(
        cls,
        ChannelOptions,
        lambda options, context, key: _channels(cls, options, context, key, **build),
        "deliberately broken",
    )


class SignFlippedVarianceRatio(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        mean, log_var = posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :]
        ratio = jnp.exp(log_var - self.log_variances)
        offset = (mean - self.locations) ** 2 * jnp.exp(-self.log_variances)
        # The bug: + log(s² / σ²) where the KL has − log(s² / σ²).
        return 0.5 * jnp.sum(ratio + offset - 1.0 + log_var - self.log_variances, axis=-1)


class DroppedMinusOne(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        mean, log_var = posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :]
        ratio = jnp.exp(log_var - self.log_variances)
        offset = (mean - self.locations) ** 2 * jnp.exp(-self.log_variances)
        return 0.5 * jnp.sum(ratio + offset - log_var + self.log_variances, axis=-1)


class DensityThroughExp(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        mean, log_var = posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :]
        ratio = jnp.exp(log_var - self.log_variances)
        offset = (mean - self.locations) ** 2 * jnp.exp(-self.log_variances)
        # The bug: the quadratic term through a density product and its log, which
        # underflows to log 0 for distant latents.
        quadratic = -jnp.log(jnp.prod(jnp.exp(-0.5 * offset), axis=-1))
        return jnp.sum(0.5 * (ratio - 1.0 - log_var + self.log_variances), axis=-1) + quadratic


class SampleScaledByVariance(GaussianChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, noise = self.channels_and_noise(num_samples, key)
        variance = jnp.exp(self.log_variances[channels])  # the bug: σ² where σ belongs
        return self.locations[channels] + variance * noise, channels


class BatchNormalisedKL(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        kl = GaussianChannels.channel_kl(self, posterior, encoder=encoder, key=key)
        return kl / jnp.mean(kl)  # the bug: a statistic over the batch


def _jitter(values: Array) -> Array:
    """``values`` moved by a host-side random relative amount of about 10⁻⁵: far below
    anything a loss would notice, but above float32 rounding at any magnitude, so two
    calls differ whatever the values are."""
    scale = 1e-5 * (0.5 + float(np.random.default_rng().random()))
    return values + scale * (1.0 + jnp.abs(values))


class NumpyJitter(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        kl = GaussianChannels.channel_kl(self, posterior, encoder=encoder, key=key)
        return _jitter(kl)  # the bug: host noise


class UnfrozenPi(GaussianChannels):
    def parameter_scales(self) -> dict[str, float]:
        return {"locations": self.location_lr_scale}  # the bug: π's field not frozen


class MisspeltScale(GaussianChannels):
    def parameter_scales(self) -> dict[str, float]:
        return {"location": self.location_lr_scale, "pi_logits": 0.0}  # "locations"


class RawPiLogits(GaussianChannels):
    def log_weights(self) -> Float[Array, " K"]:
        return self.pi_logits  # the bug: not normalised


class UniformChannelDraws(GaussianChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channel_key, noise_key = jax.random.split(key)
        # The bug: channels drawn uniformly although π is not uniform.
        channels = jax.random.randint(channel_key, (num_samples,), 0, self.num_components)
        noise = jax.random.normal(noise_key, (num_samples, self.locations.shape[1]))
        std = jnp.exp(0.5 * self.log_variances[channels])
        return self.locations[channels] + std * noise, channels


class VectorPenalty(GaussianChannels):
    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {"spread": jnp.sum(self.locations**2, axis=-1)}  # the bug: not summed


class NormAtZero(GaussianChannels):
    def regularisers(self) -> dict[str, Float[Array, ""]]:
        # The bug: a norm whose argument is 0, finite in value and NaN in gradient.
        return {"drift": jnp.linalg.norm(self.locations[0] - self.locations[0])}


class IntegerKL(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        kl = GaussianChannels.channel_kl(self, posterior, encoder=encoder, key=key)
        return kl.astype(jnp.int32)  # the bug: an integer cast


class HandWrittenTerms(AbstractPrior):
    """A Gaussian-channel prior that writes ``kl_terms`` itself; subclasses break ``kl_c``."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    locations: Float[Array, "K D"]

    def responsibilities(self, logits: Float[Array, "B K"]) -> Float[Array, "B K"]:
        return jax.nn.softmax(logits, axis=-1)

    def kl_c(self, logits: Float[Array, "B K"]) -> Float[Array, " B"]:
        return categorical_kl(logits, self.log_weights())

    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        assert posterior.logits is not None
        per_channel = gaussian_kl(
            posterior.z_mean[:, None, :] - self.locations, posterior.z_log_var[:, None, :]
        )
        kl_z = jnp.sum(self.responsibilities(posterior.logits) * per_channel, axis=-1)
        return {"kl_z": kl_z, "kl_c": self.kl_c(posterior.logits)}

    def log_weights(self) -> Float[Array, " K"]:
        return jnp.full((self.num_components,), -math.log(self.num_components))

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channel_key, noise_key = jax.random.split(key)
        channels = jax.random.randint(channel_key, (num_samples,), 0, self.num_components)
        noise = jax.random.normal(noise_key, (num_samples, self.locations.shape[1]))
        return self.locations[channels] + noise, channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}


class NaiveSoftmax(HandWrittenTerms):
    def responsibilities(self, logits: Float[Array, "B K"]) -> Float[Array, "B K"]:
        weights = jnp.exp(logits)  # the bug: overflows for logits above ~88
        return weights / jnp.sum(weights, axis=-1, keepdims=True)


class LogitsAsLogProbabilities(HandWrittenTerms):
    def kl_c(self, logits: Float[Array, "B K"]) -> Float[Array, " B"]:
        r = jax.nn.softmax(logits, axis=-1)
        # The bug: raw logits where log r belongs (right only if they are normalised).
        return jnp.sum(r * (logits - self.log_weights()), axis=-1)


@dataclass(frozen=True)
class HandWrittenOptions:
    num_components: int = option(4, help="number of channels K", minimum=2)


def _hand_written(cls: type[HandWrittenTerms]) -> ComponentFactory:
    def build(options: HandWrittenOptions, context: BuildContext, key: PRNGKeyArray) -> Any:
        locations = jax.random.normal(key, (options.num_components, context.latent_dim))
        return cls(
            num_components=options.num_components, conditions_decoder=True, locations=locations
        )

    return ComponentFactory(cls, HandWrittenOptions, build, "deliberately broken", channels=True)


@dataclass(frozen=True)
class SampleOptions:
    num_samples: int = option(1, help="Monte-Carlo samples S", minimum=1)


class OneSampleKL(AbstractPrior):
    """N(0, I) with a Monte-Carlo KL_z that ignores its sample count."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)

    def log_weights(self) -> Float[Array, " K"]:
        return jnp.zeros((0,))

    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        std = jnp.exp(0.5 * posterior.z_log_var)
        draw = posterior.z_mean + std * jax.random.normal(key, z.shape)  # one draw, always
        log_q = diagonal_gaussian_log_density(draw, posterior.z_mean, posterior.z_log_var)
        return {"kl_z": log_q - diagonal_gaussian_log_density(draw, 0.0 * draw, 0.0 * draw)}

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        z = jax.random.normal(key, (num_samples, self.latent_dim))
        return z, jnp.zeros((num_samples,), jnp.int32)

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}


def _one_sample(options: SampleOptions, context: BuildContext, key: PRNGKeyArray) -> OneSampleKL:
    return OneSampleKL(
        num_components=0,
        conditions_decoder=False,
        latent_dim=context.latent_dim,
        num_samples=options.num_samples,
    )


# --- Bugs that show only away from the built parameters, in gradients or in some keys ----


class VarianceAsScaleInLogSpace(GaussianChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, noise = self.channels_and_noise(num_samples, key)
        # The bug: exp(log σ²) as the scale; at log σ² = 0, as built, σ² = σ = 1.
        return self.locations[channels] + jnp.exp(self.log_variances[channels]) * noise, channels


class ChannelIgnoredInSample(GaussianChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, noise = self.channels_and_noise(num_samples, key)
        # The bug: channel 0's parameters for every draw (every channel alike as built).
        return self.locations[0] + jnp.exp(0.5 * self.log_variances[0]) * noise, channels


class WiderWithMostKeys(GaussianChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        z, channels = GaussianChannels.sample(self, num_samples, encoder=encoder, key=key)
        # The bug: with 90 % of keys the draws are 1.5 times as wide as p(z|c).
        wide = jax.random.uniform(jax.random.fold_in(key, 7)) < 0.9
        centre = self.locations[channels]
        return jnp.where(wide, centre + 1.5 * (z - centre), z), channels


class DecidedInPython(GaussianChannels):
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        kl = GaussianChannels.channel_kl(self, posterior, encoder=encoder, key=key)
        if jnp.any(kl > 1e6):  # the bug: Python control flow on a traced value
            kl = jnp.minimum(kl, 1e6)
        return kl


@dataclass(frozen=True)
class MonteCarloOptions(ChannelOptions):
    num_samples: int = option(4, help="Monte-Carlo samples of KL_z", minimum=1)


class MonteCarloChannels(GaussianChannels):
    """Gaussian channels whose KL_z is estimated from reparameterised draws of q(z|x)."""

    num_samples: int = eqx.field(static=True)

    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        return posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        draws = self.draws(posterior, key)
        log_q = diagonal_gaussian_log_density(draws, posterior.z_mean, posterior.z_log_var)
        log_p = diagonal_gaussian_log_density(
            draws[:, :, None, :], self.locations, self.log_variances
        )
        return jnp.mean(log_q[:, :, None] - log_p, axis=0)


class StoppedDraws(MonteCarloChannels):
    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        return jax.lax.stop_gradient(MonteCarloChannels.draws(self, posterior, key))  # the bug


class VarianceAsStdDraws(MonteCarloChannels):
    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        return posterior.z_mean + jnp.exp(posterior.z_log_var) * noise  # the bug: σ² for σ


class FixedKeyDraws(MonteCarloChannels):
    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        return MonteCarloChannels.draws(self, posterior, jax.random.PRNGKey(0))  # the bug


def _monte_carlo_factory(cls: type[MonteCarloChannels]) -> ComponentFactory:
    def build(options: MonteCarloOptions, context: BuildContext, key: PRNGKeyArray) -> Any:
        return _channels(cls, options, context, key, num_samples=options.num_samples)

    return ComponentFactory(cls, MonteCarloOptions, build, "deliberately broken")


def _unused_log_variance(
    options: ChannelOptions, context: BuildContext, key: PRNGKeyArray
) -> GaussianChannels:
    # The bug: log_variance is parsed but the channels always start at -1.
    return _channels(GaussianChannels, dataclasses.replace(options, log_variance=-1.0), context, key)


# Channels alike and of unit variance as built, as a documented initialisation leaves them.
AT_THE_ORIGIN = ChannelOptions(spread=0.0, log_variance=0.0)


def _seeding_build(options: ChannelOptions, context: BuildContext, key: PRNGKeyArray) -> Any:
    np.random.seed(0)  # the bug: NumPy's global generator reseeded for everyone
    return _channels(GaussianChannels, options, context, key)


# A plugin module that switches JAX to float64 when imported: imported here with the
# process state saved and restored, so that importing the corpus changes nothing.
with process_changes():
    from ssvae_core.testing._impure_plugin import FACTORY as IMPURE_FACTORY


# --- Encoders: the built-in dense encoder with one thing changed -------------------------


@dataclass(frozen=True)
class NoOptions:
    """No options."""


class LogitsWithoutChannels(DenseEncoder):
    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        output = DenseEncoder.__call__(self, x)
        logits = output.logits if output.logits is not None else jnp.zeros((2,))
        return EncoderOutput(output.z_mean, output.z_log_var, logits)  # the bug: K = 0 too


class LogOfRawVariance(DenseEncoder):
    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        output = DenseEncoder.__call__(self, x)
        # The bug: the log of an unconstrained output, NaN wherever it is negative.
        return EncoderOutput(output.z_mean, jnp.log(output.z_log_var - 1.0), output.logits)


class NoisyEncoder(DenseEncoder):
    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        output = DenseEncoder.__call__(self, x)
        return EncoderOutput(_jitter(output.z_mean), output.z_log_var, output.logits)  # the bug


def _encoder(cls: type[DenseEncoder], *, latent_dim: int | None = None) -> ComponentFactory:
    def build(options: NoOptions, context: BuildContext, key: PRNGKeyArray) -> DenseEncoder:
        size = context.latent_dim if latent_dim is None else latent_dim
        return cls(context.input_shape, size, context.num_components, (16,), "gelu", key=key)

    return ComponentFactory(cls, NoOptions, build, "deliberately broken")


# --- Decoders -----------------------------------------------------------------------------


class FlatOutput(DenseDecoder):
    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        output = DenseDecoder.__call__(self, z, embedding)
        return DecoderOutput(output.loc.reshape(-1), output.scale_raw)  # the bug: flattened


class EmbeddingIgnored(DenseDecoder):
    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        blank = None if embedding is None else jnp.zeros_like(embedding)
        return DenseDecoder.__call__(self, z, blank)  # the bug: the embedding never used


class LogActivation(DenseDecoder):
    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        output = DenseDecoder.__call__(self, z, embedding)
        return DecoderOutput(jnp.log(output.loc), output.scale_raw)  # the bug: log of any sign


class NoisyDecoder(DenseDecoder):
    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        output = DenseDecoder.__call__(self, z, embedding)
        return DecoderOutput(_jitter(output.loc), output.scale_raw)  # the bug: host noise


def _decoder(cls: type[DenseDecoder]) -> ComponentFactory:
    def build(options: NoOptions, context: BuildContext, key: PRNGKeyArray) -> DenseDecoder:
        return cls(
            context.input_shape,
            context.latent_dim,
            (16,),
            "gelu",
            context.conditioning,
            context.embedding_dim,
            context.likelihood.scale_size(math.prod(context.input_shape)),
            key=key,
        )

    return ComponentFactory(cls, NoOptions, build, "deliberately broken")


# --- Heads: the τ head with one thing changed -------------------------------------------


class PartialMass(TauHead):
    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, "B Y"]:
        return 0.9 * TauHead.predict_proba(self, posterior, z, state)  # the bug: 90 % mass


class NaiveSoftmaxHead(TauHead):
    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, "B Y"]:
        assert posterior.logits is not None
        weights = jnp.exp(posterior.logits)  # the bug: overflows for large logits
        r = weights / jnp.sum(weights, axis=-1, keepdims=True)
        return r @ self.tau(state)


class BatchCentredHead(TauHead):
    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, "B Y"]:
        assert posterior.logits is not None
        centred = posterior.logits - jnp.mean(posterior.logits, axis=0)  # the bug: batch mean
        return jax.nn.softmax(centred, axis=-1) @ self.tau(state)


class UnnormalisedClassMap(TauHead):
    def class_map(self, state: Float[Array, "K Y"]) -> Float[Array, "K Y"]:
        return state + self.alpha0  # the bug: counts, not τ


class GradientIntoCounts(TauHead):
    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: Float[Array, "K Y"],
    ) -> Float[Array, " B"]:
        assert posterior.logits is not None
        # The bug: τ read from the state without stop_gradient.
        p = jax.nn.softmax(posterior.logits, axis=-1) @ (
            (state + 1.0) / (state + 1.0).sum(-1, keepdims=True)
        )
        picked = jnp.take_along_axis(p, jnp.clip(labels, 0)[:, None], axis=-1)[:, 0]
        return jnp.where(labels >= 0, -jnp.log(picked), 0.0)


class WrappedUnlabeled(TauHead):
    def update_state(
        self, state: Float[Array, "K Y"], posterior: EncoderOutput, labels: Int[Array, " B"]
    ) -> Float[Array, "K Y"]:
        assert posterior.logits is not None
        r = jax.lax.stop_gradient(jax.nn.softmax(posterior.logits, axis=-1))
        onehot = jax.nn.one_hot(labels % self.num_classes, self.num_classes)  # the bug: −1 → Y−1
        return self.count_decay * state + r.T @ onehot


class UnnormalisedCertainty(TauHead):
    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, " B"]:
        assert posterior.logits is not None
        # The bug: the certainty from counts instead of probabilities.
        return jnp.max(jax.nn.softmax(posterior.logits, axis=-1) @ (state + 1.0), axis=-1)


def _head(cls: type[TauHead]) -> ComponentFactory:
    def build(options: NoOptions, context: BuildContext, key: PRNGKeyArray) -> TauHead:
        if context.num_components == 0:
            raise ValueError("the τ head needs channels")
        return cls(
            num_components=context.num_components,
            num_classes=context.num_classes,
            alpha0=1.0,
            count_decay=0.99,
        )

    return ComponentFactory(cls, NoOptions, build, "deliberately broken")


# --- Loss terms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightOptions(TermOptions):
    weight: float = option(1.0, help="weight of the term")


class BatchMeanTerm(AbstractLossTerm):
    """Each row's value is its squared mean minus the batch's mean of it."""

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        energy = jnp.sum(inputs.posterior.z_mean**2, axis=-1)
        return TermValue(energy - jnp.mean(energy))  # the bug: a batch statistic


class StaticWeightTerm(AbstractLossTerm):
    """Holds its weight as a static float: every new weight compiles the step again."""

    static_weight: float = eqx.field(static=True)

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        return TermValue(self.static_weight * jnp.sum(inputs.posterior.z_mean**2, axis=-1))


class NoisyTerm(AbstractLossTerm):
    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        return TermValue(_jitter(jnp.sum(inputs.posterior.z_mean**2, axis=-1)))  # the bug


def _term(cls: type[AbstractLossTerm], build: Callable[[WeightOptions], Any]) -> ComponentFactory:
    return ComponentFactory(
        cls, WeightOptions, lambda options, context, key: build(options), "deliberately broken"
    )


# --- The corpus ---------------------------------------------------------------------------

# --- Acquisition functions ------------------------------------------------------------------


@dataclass(frozen=True)
class NoAcquisitionOptions:
    """The defective acquisitions have no options."""


class LogOfZeroEntropy(AbstractTopScoreAcquisition):
    """Entropy as ``−Σ p log p`` with an unclipped log: ``0 · log 0`` is nan on one-hot rows."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        p = inputs.probabilities
        return -jnp.sum(p * jnp.log(p), axis=-1)


class UnmaskedTopScores(AbstractAcquisition):
    """Ranks every example, labeled ones included."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return 1.0 - jnp.max(inputs.probabilities, axis=-1)

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        return jnp.argsort(-self.score(inputs, key))[:count]


class WithReplacement(AbstractAcquisition):
    """Draws a batch in proportion to the scores, with replacement."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return 1.0 - jnp.max(inputs.probabilities, axis=-1)

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        weights = jnp.where(inputs.labeled, 0.0, self.score(inputs, key) + 1e-6)
        return jax.random.choice(key, inputs.num_examples, (count,), replace=True, p=weights / jnp.sum(weights))


class GlobalRandomness(AbstractTopScoreAcquisition):
    """Random scores from NumPy's global generator instead of the key."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return jnp.asarray(np.random.random(inputs.num_examples))


class TauAlways(AbstractTopScoreAcquisition):
    """Reads τ without asking whether the model has channels (and its factory accepts any)."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return jnp.max(inputs.responsibilities @ inputs.tau, axis=-1)  # type: ignore[operator]


def _acquisition(cls: type[AbstractAcquisition]) -> ComponentFactory:
    return ComponentFactory(cls, NoAcquisitionOptions, lambda options, context, key: cls(), cls.__doc__ or "")


NEGATIVE = "is negative"
NOT_FINITE = "not finite"

DEFECTS: tuple[Defect, ...] = (
    Defect(
        "sign-flipped variance ratio",
        "prior",
        "+ log(s²/σ²) in a Gaussian KL where − log(s²/σ²) belongs",
        "exact_kl_nonnegative",
        NEGATIVE,
        _channel_factory(SignFlippedVarianceRatio),
    ),
    Defect(
        "dropped −1",
        "prior",
        "the −1 of the Gaussian KL left out",
        "exact_kl_zero_at_prior",
        "at q(z|x) = p(z|c)",
        _channel_factory(DroppedMinusOne),
    ),
    Defect(
        "quadratic through exp",
        "prior",
        "−log Π_d exp(−½ δ_d²/σ_d²): underflows to +inf for distant latents",
        "kl_terms_per_example_finite",
        NOT_FINITE,
        _channel_factory(DensityThroughExp),
    ),
    Defect(
        "sample scaled by the variance",
        "prior",
        "sample() adds σ² · ε instead of σ · ε",
        "samples_match_kl_density",
        "do not follow the density the KL terms imply",
        _channel_factory(SampleScaledByVariance),
    ),
    Defect(
        "batch-normalised KL",
        "prior",
        "each row's KL divided by the batch mean",
        "per_example_independence",
        "of the kept rows",
        _channel_factory(BatchNormalisedKL),
    ),
    Defect(
        "NumPy noise in the KL",
        "prior",
        "a host-side random relative jitter of about 10⁻⁵ added to the KL",
        "repeat_calls_identical",
        "differs between two calls",
        _channel_factory(NumpyJitter),
    ),
    Defect(
        "fixed π not frozen",
        "prior",
        "π's field missing from parameter_scales()",
        "fixed_weights_stay_fixed",
        "log π moved",
        _channel_factory(UnfrozenPi),
        ChannelOptions(skew=0.5),
    ),
    Defect(
        "misspelt scale",
        "prior",
        "parameter_scales() names 'location' for 'locations'",
        "parameter_scales_valid",
        "is not a field",
        _channel_factory(MisspeltScale),
    ),
    Defect(
        "learning-rate option dropped",
        "prior",
        "the factory never passes location_lr_scale to the prior",
        "options_honoured",
        "changes no entry",
        _channel_factory(GaussianChannels, location_lr_scale=1.0),
    ),
    Defect(
        "hard-coded K",
        "prior",
        "the factory builds 4 channels whatever num_components says",
        "options_honoured",
        "built a prior with",
        _channel_factory(GaussianChannels, num_components=4),
    ),
    Defect(
        "unnormalised π",
        "prior",
        "log_weights() returns the raw logits",
        "attributes",
        "sums to",
        _channel_factory(RawPiLogits),
        ChannelOptions(skew=0.5),
    ),
    Defect(
        "channels drawn uniformly",
        "prior",
        "sample() ignores a non-uniform π",
        "samples_follow_prior",
        "do not match π",
        _channel_factory(UniformChannelDraws),
        ChannelOptions(skew=0.5),
    ),
    Defect(
        "penalty left a vector",
        "prior",
        "regularisers() returns one value per channel",
        "regularisers_finite",
        "has shape",
        _channel_factory(VectorPenalty),
    ),
    Defect(
        "norm at zero",
        "prior",
        "a regulariser ‖μ₀ − μ₀‖, finite with a NaN gradient",
        "trains_one_step",
        "not finite after one step",
        _channel_factory(NormAtZero),
    ),
    Defect(
        "integer KL",
        "prior",
        "channel_kl cast to int32",
        "signatures",
        "channel_kl",
        _channel_factory(IntegerKL),
    ),
    Defect(
        "naive softmax",
        "prior",
        "responsibilities as exp(l) / Σ exp(l): NaN for large logits",
        "kl_terms_per_example_finite",
        NOT_FINITE,
        _hand_written(NaiveSoftmax),
    ),
    Defect(
        "logits as log-probabilities",
        "prior",
        "KL_c computed with the raw logits as log r",
        "kl_invariant_to_logit_shift",
        "after shifting the logits",
        _hand_written(LogitsAsLogProbabilities),
    ),
    Defect(
        "sample count ignored",
        "prior",
        "a Monte-Carlo KL that always draws one sample",
        "monte_carlo_kl_converges",
        "RMS error",
        ComponentFactory(OneSampleKL, SampleOptions, _one_sample, "deliberately broken"),
    ),
    Defect(
        "σ² for σ in log space",
        "prior",
        "sample() scales by exp(log σ²): right only where log σ² = 0, as every channel is built",
        "samples_match_kl_density",
        "do not follow the density the KL terms imply",
        _channel_factory(VarianceAsScaleInLogSpace),
        AT_THE_ORIGIN,
    ),
    Defect(
        "channel ignored in sample()",
        "prior",
        "sample() draws every z from channel 0's parameters: right only while channels agree",
        "samples_match_kl_density",
        "draws of sample()",
        _channel_factory(ChannelIgnoredInSample),
        AT_THE_ORIGIN,
    ),
    Defect(
        "wrong with 90 % of keys",
        "prior",
        "sample() draws too wide for 90 % of keys",
        "samples_match_kl_density",
        "do not follow the density the KL terms imply",
        _channel_factory(WiderWithMostKeys),
    ),
    Defect(
        "draws behind stop_gradient",
        "prior",
        "a Monte-Carlo KL whose draws of q(z|x) are not reparameterised (stop_gradient)",
        "kl_gradients",
        "the Monte-Carlo draws do not carry the gradient",
        _monte_carlo_factory(StoppedDraws),
    ),
    Defect(
        "variance as standard deviation in the draws",
        "prior",
        "a Monte-Carlo KL drawing z = μ + σ² ε instead of μ + σ ε",
        "kl_gradients",
        "the draws do not follow q(z|x)",
        _monte_carlo_factory(VarianceAsStdDraws),
    ),
    Defect(
        "draws from a fixed key",
        "prior",
        "a Monte-Carlo KL drawing from jax.random.PRNGKey(0) instead of its key argument",
        "monte_carlo_draws_from_key",
        "a Monte-Carlo estimate whose draws ignore that key",
        _monte_carlo_factory(FixedKeyDraws),
    ),
    Defect(
        "option never used",
        "prior",
        "the factory parses log_variance and always starts the channels at -1",
        "every_option_has_an_effect",
        "option log_variance",
        ComponentFactory(
            GaussianChannels, ChannelOptions, _unused_log_variance, "deliberately broken"
        ),
    ),
    Defect(
        "Python if on a traced value",
        "prior",
        "channel_kl branches in Python on jnp.any(kl > 1e6): fine eagerly, an error under jit",
        "jit_matches_eager",
        "TracerBoolConversionError",
        _channel_factory(DecidedInPython),
        hint=TRACED_VALUE_HINT,
    ),
    Defect(
        "float64 switched on at import",
        "prior",
        "the plugin module calls jax.config.update('jax_enable_x64', True) when imported",
        "process_hygiene",
        "JAX setting jax_enable_x64 False -> True",
        IMPURE_FACTORY,
    ),
    Defect(
        "NumPy seeded in the factory",
        "prior",
        "the factory calls np.random.seed(0), resetting NumPy's global generator",
        "process_hygiene",
        "NumPy's global random state",
        ComponentFactory(GaussianChannels, ChannelOptions, _seeding_build, "deliberately broken"),
    ),
    Defect(
        "logits without channels",
        "encoder",
        "logits returned although K = 0",
        "output_structure",
        "logits",
        _encoder(LogitsWithoutChannels),
    ),
    Defect(
        "log of a raw output",
        "encoder",
        "log-variance as the log of an unconstrained output",
        "output_structure",
        NOT_FINITE,
        _encoder(LogOfRawVariance),
    ),
    Defect(
        "hard-coded latent size",
        "encoder",
        "the factory builds 2 latent dimensions always",
        "attributes",
        "latent_dim",
        _encoder(DenseEncoder, latent_dim=2),
    ),
    Defect(
        "NumPy noise in the encoder",
        "encoder",
        "a host-side random number added to μ",
        "repeat_calls_identical",
        "differs between two calls",
        _encoder(NoisyEncoder),
    ),
    Defect(
        "flattened output",
        "decoder",
        "loc returned flat, not in the input's shape",
        "output_matches_sample_shape",
        "shape",
        _decoder(FlatOutput),
    ),
    Defect(
        "embedding ignored",
        "decoder",
        "the channel embedding replaced by zeros",
        "conditioning_uses_embedding",
        "embedding",
        _decoder(EmbeddingIgnored),
    ),
    Defect(
        "log of any sign",
        "decoder",
        "loc as the log of a linear output",
        "outputs_finite",
        NOT_FINITE,
        _decoder(LogActivation),
    ),
    Defect(
        "NumPy noise in the decoder",
        "decoder",
        "a host-side random number added to loc",
        "repeat_calls_identical",
        "differs between two calls",
        _decoder(NoisyDecoder),
    ),
    Defect(
        "90 % of the mass",
        "head",
        "p(y|x) scaled by 0.9",
        "predict_proba_is_distribution",
        "row sums",
        _head(PartialMass),
    ),
    Defect(
        "naive softmax head",
        "head",
        "responsibilities as exp(l) / Σ exp(l): 0 or NaN rows for large logits",
        "predict_proba_is_distribution",
        "p(y|x)",
        _head(NaiveSoftmaxHead),
    ),
    Defect(
        "batch-centred logits",
        "head",
        "logits centred on the batch mean",
        "per_example_independence",
        "kept rows",
        _head(BatchCentredHead),
    ),
    Defect(
        "counts as τ",
        "head",
        "class_map returns smoothed counts, not τ",
        "class_map_is_distribution",
        "row sums",
        _head(UnnormalisedClassMap),
    ),
    Defect(
        "gradient into the counts",
        "head",
        "τ read from the state without stop_gradient",
        "supervised_loss_no_state_gradient",
        "gradient",
        _head(GradientIntoCounts),
    ),
    Defect(
        "unlabeled rows counted",
        "head",
        "label −1 one-hot encoded as the last class",
        "unlabeled_rows_leave_state_unchanged",
        "state",
        _head(WrappedUnlabeled),
    ),
    Defect(
        "certainty from counts",
        "head",
        "certainty from unnormalised counts",
        "ood_score_in_unit_interval",
        "certainty",
        _head(UnnormalisedCertainty),
    ),
    Defect(
        "batch-mean term",
        "loss_term",
        "each row's value minus the batch mean",
        "per_example_independence",
        "",
        _term(BatchMeanTerm, lambda o: BatchMeanTerm(o.schedule())),
    ),
    Defect(
        "static weight",
        "loss_term",
        "the weight held as a static float",
        "weights_are_traced",
        "",
        _term(StaticWeightTerm, lambda o: StaticWeightTerm(Schedule(0.0), static_weight=o.weight)),
    ),
    Defect(
        "NumPy noise in a term",
        "loss_term",
        "a host-side random number added to the values",
        "repeat_calls_identical",
        "differs between two calls",
        _term(NoisyTerm, lambda o: NoisyTerm(o.schedule())),
    ),
    Defect(
        "log of zero",
        "acquisition",
        "an entropy with an unclipped log: nan on a one-hot p(y|x)",
        "scores_finite_one_per_example",
        "not all finite",
        _acquisition(LogOfZeroEntropy),
    ),
    Defect(
        "labeled examples ranked",
        "acquisition",
        "select ranks every example, labeled ones included",
        "never_chooses_labeled",
        "chose labeled examples",
        _acquisition(UnmaskedTopScores),
    ),
    Defect(
        "drawn with replacement",
        "acquisition",
        "a batch sampled in proportion to the scores with replacement",
        "batch_has_no_duplicates",
        "repeats examples",
        _acquisition(WithReplacement),
    ),
    Defect(
        "NumPy randomness in a score",
        "acquisition",
        "random scores from NumPy's global generator, not the key",
        "deterministic_for_a_key",
        "differs between two calls",
        _acquisition(GlobalRandomness),
    ),
    Defect(
        "τ read without channels",
        "acquisition",
        "inputs.tau used unconditionally by a factory that accepts models without channels",
        "works_without_channels",
        "raised",
        _acquisition(TauAlways),
    ),
)


def catch_table(defects: tuple[Defect, ...] = DEFECTS) -> list[dict[str, Any]]:
    """Run every check of its kind on every defect; one row per defect: the checks that
    fail, whether the intended one is among them and which failed first."""
    from ssvae_core.testing import (
        ConformanceError,
        NotApplicable,
        conformance_checks,
        prepare,
        run_check,
    )

    rows = []
    for defect in defects:
        failed: list[str] = []
        try:
            subject = prepare(defect.factory, defect.options, kind=defect.kind)
        except ConformanceError as error:
            failed.append(error.check)
            subject = None
        if subject is not None:
            for entry in conformance_checks(defect.kind):
                try:
                    run_check(subject, entry)
                except ConformanceError:
                    failed.append(entry.name)
                except NotApplicable:
                    pass
        rows.append(
            {
                "defect": defect.name,
                "kind": defect.kind,
                "intended": defect.check,
                "caught_by_intended": defect.check in failed,
                "first": failed[0] if failed else None,
                "failed": failed,
            }
        )
        print(
            f"{defect.kind:9} {defect.name:32} intended {defect.check:36} "
            f"{'caught' if defect.check in failed else 'MISSED'}; failing: {', '.join(failed)}",
            file=sys.stderr,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the catch table as Markdown (progress on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    rows = catch_table()
    print(
        "| kind | defect | intended check | caught by it | first failing check | all failing checks |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['kind']} | {row['defect']} | `{row['intended']}` | "
            f"{'yes' if row['caught_by_intended'] else '**no**'} | `{row['first']}` | "
            f"{', '.join(f'`{name}`' for name in row['failed'])} |"
        )
    caught = sum(row["caught_by_intended"] for row in rows)
    print(f"\n{caught} of {len(rows)} defects caught by their intended check.")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
