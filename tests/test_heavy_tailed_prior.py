"""A heavy-tailed prior written as a plugin author would, against the conformance kit.

``StudentTChannels`` is a channel prior with multivariate Student-t ``p(z|c)`` (ν = 1.5:
infinite variance) and a Monte-Carlo ``KL_z``; it imports only ``ssvae_core.plugin``. The
correct prior passes every check; each variant below has one bug of a kind the kit once
missed and must be caught by the check meant for it, with a message that names the cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.plugin import (
    AbstractChannelPrior,
    AbstractEncoder,
    BuildContext,
    ComponentFactory,
    EncoderOutput,
    option,
    uniform_log_weights,
)
from ssvae_core.testing import (
    ConformanceError,
    check_prior,
    conformance_checks,
    prepare,
    run_check,
)


@dataclass(frozen=True)
class StudentTOptions:
    num_components: int = option(3, help="number of channels K", minimum=2)
    dof: float = option(1.5, help="degrees of freedom ν", minimum=0.0, exclusive_minimum=True)
    spread: float = option(0.0, help="standard deviation of the initial locations", minimum=0.0)
    num_samples: int = option(4, help="Monte-Carlo samples of KL_z", minimum=1)
    location_lr_scale: float = option(1.0, help="learning-rate scale of the locations", minimum=0.0)


def t_log_density(
    z: Float[Array, "*b D"], location: Float[Array, "*b D"], log_var: Float[Array, "*b D"], dof: float
) -> Float[Array, "*b"]:
    """``log t_ν(z; μ, diag σ²)`` of the multivariate Student-t (σ² from ``log_var``)."""
    dim = z.shape[-1]
    squared = jnp.sum((z - location) ** 2 * jnp.exp(-log_var), axis=-1)
    normaliser = (
        math.lgamma(0.5 * (dof + dim))
        - math.lgamma(0.5 * dof)
        - 0.5 * dim * math.log(dof * math.pi)
        - 0.5 * jnp.sum(log_var, axis=-1)
    )
    return normaliser - 0.5 * (dof + dim) * jnp.log1p(squared / dof)


class StudentTChannels(AbstractChannelPrior):
    """``c ~ uniform``, ``z | c ~ t_ν(μ_c, diag σ_c²)``; KL_z by Monte Carlo."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    dof: float = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    location_lr_scale: float = eqx.field(static=True)
    locations: Float[Array, "K D"]
    log_variances: Float[Array, "K D"]

    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        return posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        draws = self.draws(posterior, key)[:, :, None, :]
        log_p = t_log_density(draws, self.locations, self.log_variances, self.dof)
        dim = posterior.z_mean.shape[-1]
        entropy = 0.5 * jnp.sum(posterior.z_log_var, axis=-1) + 0.5 * dim * math.log(
            2 * math.pi * math.e
        )
        return -entropy[:, None] - jnp.mean(log_p, axis=0)

    def log_weights(self) -> Float[Array, " K"]:
        return uniform_log_weights(self.num_components)

    def scale_draws(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Float[Array, "N D"]:
        """Standard multivariate t draws: a Gaussian over √(χ²_ν / ν), shared by the row."""
        normal_key, gamma_key = jax.random.split(key)
        gaussian = jax.random.normal(normal_key, shape)
        chi2 = 2.0 * jax.random.gamma(gamma_key, 0.5 * self.dof, (shape[0], 1))
        return gaussian / jnp.sqrt(chi2 / self.dof)

    def channels_and_standard(
        self, num_samples: int, key: PRNGKeyArray
    ) -> tuple[Int[Array, " N"], Float[Array, "N D"]]:
        channel_key, z_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.log_weights(), shape=(num_samples,))
        return channels, self.scale_draws(z_key, (num_samples, self.locations.shape[1]))

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, standard = self.channels_and_standard(num_samples, key)
        std = jnp.exp(0.5 * self.log_variances[channels])
        return self.locations[channels] + std * standard, channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {"locations": self.location_lr_scale}


def _factory(cls: type[StudentTChannels], **fixed: Any) -> ComponentFactory:
    def build(options: StudentTOptions, context: BuildContext, key: PRNGKeyArray) -> Any:
        shape = (options.num_components, context.latent_dim)
        values = {"dof": options.dof, **fixed}
        return cls(
            num_components=options.num_components,
            conditions_decoder=True,
            dof=values["dof"],
            num_samples=options.num_samples,
            location_lr_scale=options.location_lr_scale,
            locations=options.spread * jax.random.normal(key, shape),
            log_variances=jnp.zeros(shape),
        )

    return ComponentFactory(cls, StudentTOptions, build, "a heavy-tailed test prior")


# --- One bug each, of the kinds the kit once missed ---------------------------------------


class ChannelIgnoredInSample(StudentTChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, standard = self.channels_and_standard(num_samples, key)
        # The bug: channel 0's parameters for every draw (all channels agree when built).
        return self.locations[0] + jnp.exp(0.5 * self.log_variances[0]) * standard, channels


class VarianceAsScaleInSample(StudentTChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channels, standard = self.channels_and_standard(num_samples, key)
        # The bug: exp(log σ²) as the scale (σ² = σ = 1 when built).
        return self.locations[channels] + jnp.exp(self.log_variances[channels]) * standard, channels


class DrawBehindStopGradient(StudentTChannels):
    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        return jax.lax.stop_gradient(StudentTChannels.draws(self, posterior, key))  # the bug


class VarianceAsStdInDraws(StudentTChannels):
    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        return posterior.z_mean + jnp.exp(posterior.z_log_var) * noise  # the bug: σ² for σ


class FixedKeyDraws(StudentTChannels):
    def draws(self, posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "S B D"]:
        return StudentTChannels.draws(self, posterior, jax.random.PRNGKey(0))  # the bug


class IndependentCoordinates(StudentTChannels):
    def scale_draws(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Float[Array, "N D"]:
        # The bug: a product of univariate t's (same moments, not the multivariate t).
        return jax.random.t(key, self.dof, shape)


class WrongWithMostKeys(StudentTChannels):
    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        z, channels = StudentTChannels.sample(self, num_samples, encoder=encoder, key=key)
        # The bug: with 90 % of keys, draws twice as wide as they should be.
        wide = jax.random.uniform(jax.random.fold_in(key, 1)) < 0.9
        centre = self.locations[channels]
        return jnp.where(wide, centre + 2.0 * (z - centre), z), channels


CORRECT = _factory(StudentTChannels)
VARIANTS = {
    "channel ignored in sample()": (
        _factory(ChannelIgnoredInSample),
        "samples_match_kl_density",
        "do not follow the density the KL terms imply",
    ),
    "log-variance as log-scale in sample()": (
        _factory(VarianceAsScaleInSample),
        "samples_match_kl_density",
        "do not follow the density the KL terms imply",
    ),
    "draws behind stop_gradient": (
        _factory(DrawBehindStopGradient),
        "kl_gradients",
        "the Monte-Carlo draws do not carry the gradient",
    ),
    "variance as standard deviation in the draws": (
        _factory(VarianceAsStdInDraws),
        "kl_gradients",
        "the draws do not follow q(z|x)",
    ),
    "draws from a fixed key": (
        _factory(FixedKeyDraws),
        "monte_carlo_draws_from_key",
        "a Monte-Carlo estimate whose draws ignore that key",
    ),
    "product of univariate t's": (
        _factory(IndependentCoordinates),
        "samples_match_kl_density",
        "do not follow the density the KL terms imply",
    ),
    "wrong with 90 % of keys": (
        _factory(WrongWithMostKeys),
        "samples_match_kl_density",
        "with key",
    ),
    "degrees of freedom option ignored": (
        _factory(StudentTChannels, dof=1.5),
        "every_option_has_an_effect",
        "option dof",
    ),
}


def test_a_correct_student_t_prior_with_nu_one_and_a_half_passes_every_check() -> None:
    report = check_prior(CORRECT, max_examples=3)  # every check; fewer drawn examples
    assert report["samples_match_kl_density"].startswith("passed (box mass")
    assert report["kl_gradients"].startswith("passed (")
    assert "reference" in report["kl_gradients"]
    assert report["monte_carlo_kl_converges"].startswith("passed")
    assert report["every_option_has_an_effect"] == "passed (5 options)"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_student_t_bug_is_caught_by_its_check(name: str) -> None:
    factory, check, message = VARIANTS[name]
    subject = prepare(factory, kind="prior", shrink=False)
    (entry,) = [entry for entry in conformance_checks("prior") if entry.name == check]
    with pytest.raises(ConformanceError) as caught:
        run_check(subject, entry)
    assert caught.value.check == check
    assert message in str(caught.value), str(caught.value)
