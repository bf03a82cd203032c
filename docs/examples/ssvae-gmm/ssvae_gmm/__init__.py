"""Gaussian mixture prior for ssvae: z | c ~ N(μ_c, diag σ_c²) with learned μ_c, σ_c²; π uniform."""

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.plugin import (
    AbstractChannelPrior,
    BuildContext,
    ComponentFactory,
    gaussian_kl,
    hookimpl,
    option,
    uniform_log_weights,
)


class GaussianMixturePrior(AbstractChannelPrior):
    """``KL(N(m, s²) || N(μ_c, σ_c²)) = KL(N((m − μ_c)/σ_c, s²/σ_c²) || N(0, I))`` per channel."""

    num_components: int = eqx.field(static=True)
    means: Float[Array, "K D"]
    log_vars: Float[Array, "K D"]
    variance_lr_scale: float = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True, default=True)

    def log_weights(self):
        return uniform_log_weights(self.num_components)

    def channel_kl(self, posterior, *, encoder, key):
        offsets = (posterior.z_mean[:, None, :] - self.means) * jnp.exp(-0.5 * self.log_vars)
        return gaussian_kl(offsets, posterior.z_log_var[:, None, :] - self.log_vars)

    def sample(self, num_samples, *, encoder, key):
        channel_key, noise_key = jax.random.split(key)
        c = jax.random.categorical(channel_key, self.log_weights(), shape=(num_samples,))
        std = jnp.exp(0.5 * self.log_vars[c])
        return self.means[c] + std * jax.random.normal(noise_key, std.shape), c

    def regularisers(self):
        return {}

    def parameter_scales(self):
        return {"log_vars": self.variance_lr_scale}


@dataclass(frozen=True)
class GMMOptions:
    num_components: int = option(10, help="number of channels K", minimum=2)
    spread: float = option(0.0, help="std of the initial means μ_c (0: at the origin)", minimum=0.0)
    variance_lr_scale: float = option(1.0, help="learning-rate scale of log σ_c²", minimum=0.0)


def _build(options: GMMOptions, context: BuildContext, key: PRNGKeyArray) -> GaussianMixturePrior:
    shape = (options.num_components, context.latent_dim)
    means = options.spread * jax.random.normal(key, shape)
    return GaussianMixturePrior(shape[0], means, jnp.zeros(shape), options.variance_lr_scale)


@hookimpl
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    description = "Cat(π) channels over N(μ_c, diag σ_c²), learned means and variances; τ head"
    return {"gmm": ComponentFactory(GaussianMixturePrior, GMMOptions, _build, description)}
