"""The Laplace mixture prior: ``c ~ Cat(π)`` uniform, ``z | c ~ Π_d Laplace(μ_{c,d}, b)``.

Heavier tails than the Gaussian mixture: a channel tolerates the odd outlying latent
without pulling its location, and the ``|z − μ|`` penalty is sparsity-friendly. The
locations ``μ_c`` are learned (a field of the prior, so an ordinary trainable leaf); the
scale ``b`` is fixed.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.plugin import (
    AbstractChannelPrior,
    AbstractEncoder,
    EncoderOutput,
    diagonal_gaussian_log_density,
    uniform_log_weights,
)

ESTIMATORS = ("analytic", "monte_carlo")


def laplace_log_density(
    z: Float[Array, "*b D"], location: Float[Array, "*b D"], scale: float
) -> Float[Array, "*b"]:
    """``log Π_d Laplace(z_d; μ_d, b) = −Σ_d (log 2b + |z_d − μ_d| / b)``."""
    return -jnp.sum(jnp.log(2.0 * scale) + jnp.abs(z - location) / scale, axis=-1)


def gaussian_laplace_kl(
    mean: Float[Array, "*b D"],
    log_var: Float[Array, "*b D"],
    location: Float[Array, "*b D"],
    scale: float,
) -> Float[Array, "*b"]:
    """``KL(N(m, diag s²) || Π_d Laplace(μ_d, b))`` in closed form.

    With ``δ = m − μ``, ``E_q|z − μ|`` is the mean of a folded normal,
    ``s √(2/π) exp(−δ² / 2s²) + δ erf(δ / (s √2))``, so per dimension

        KL_d = log 2b − ½ log(2πe s²) + E_q|z_d − μ_d| / b.

    It is never 0 (a Gaussian is not a Laplace): its minimum, at ``δ = 0`` and
    ``s = b √(π/2)``, is ``log 2 + ½ − log π ≈ 0.048`` nats per dimension.
    """
    std = jnp.exp(0.5 * log_var)
    offset = mean - location
    folded_mean = std * jnp.sqrt(2.0 / jnp.pi) * jnp.exp(
        -0.5 * (offset / std) ** 2
    ) + offset * jax.scipy.special.erf(offset / (std * jnp.sqrt(2.0)))
    per_dim = (
        jnp.log(2.0 * scale) - 0.5 * (jnp.log(2.0 * jnp.pi) + 1.0 + log_var) + folded_mean / scale
    )
    return jnp.sum(per_dim, axis=-1)


class LaplaceMixturePrior(AbstractChannelPrior):
    """K channels with uniform weights and factorised Laplace ``p(z|c)`` around ``μ_c``.

    Per example, with ``r = softmax(logits)``:

        KL_z = Σ_c r_c KL(q(z|x) || p(z|c))        closed form, or Monte Carlo:
             ≈ Σ_c r_c (1/S) Σ_s [log q(z_s|x) − log p(z_s|c)],  z_s ~ q(z|x) from ``key``
        KL_c = KL(q(c|x) || π) = Σ_c r_c (log r_c + log K)

    ``AbstractChannelPrior`` computes both terms; this class supplies the per-channel KL
    (``channel_kl``). The decoder is conditioned on the channel (every conditioning
    method works). ``location_lr_scale`` scales the locations' optimiser update; 0 freezes them.
    """

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    kl_estimator: str = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    location_lr_scale: float = eqx.field(static=True)
    locations: Float[Array, "K D"]

    def __init__(
        self,
        locations: Float[Array, "K D"],
        *,
        scale: float,
        kl_estimator: str = "analytic",
        num_samples: int = 1,
        location_lr_scale: float = 1.0,
    ):
        if kl_estimator not in ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {kl_estimator!r}"
            )
        self.locations = jnp.asarray(locations, dtype=jnp.float32)
        self.num_components = self.locations.shape[0]
        self.conditions_decoder = True
        self.scale = scale
        self.kl_estimator = kl_estimator
        self.num_samples = num_samples
        self.location_lr_scale = location_lr_scale

    def log_weights(self) -> Float[Array, " K"]:
        return uniform_log_weights(self.num_components)

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        """``KL(q(z|x) || p(z|c))`` for every example and channel (estimated when Monte Carlo)."""
        mean, log_var = posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :]
        if self.kl_estimator == "analytic":
            return gaussian_laplace_kl(mean, log_var, self.locations, self.scale)
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        samples = (posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise)[:, :, None, :]
        log_q = diagonal_gaussian_log_density(samples, mean, log_var)
        log_p = laplace_log_density(samples, self.locations, self.scale)
        return jnp.mean(log_q - log_p, axis=0)

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        """``c ~ π``, then ``z = μ_c + b · Laplace(0, 1)`` noise."""
        channel_key, z_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.log_weights(), shape=(num_samples,))
        noise = jax.random.laplace(z_key, (num_samples, self.locations.shape[1]))
        return self.locations[channels] + self.scale * noise, channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {"locations": self.location_lr_scale}
