"""The standard normal prior ``p(z) = N(0, I)``: no channels, softmax head."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.modelling.losses import gaussian_kl
from ssvae_core.modelling.protocols import AbstractEncoder, AbstractPrior
from ssvae_core.modelling.types import EncoderOutput


class StandardPrior(AbstractPrior):
    """``p(z) = N(0, I)``; ``KL_z`` analytic."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)

    def __init__(self, latent_dim: int):
        self.num_components = 0
        self.conditions_decoder = False
        self.latent_dim = latent_dim

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
        return {"kl_z": gaussian_kl(posterior.z_mean, posterior.z_log_var)}

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        z = jax.random.normal(key, (num_samples, self.latent_dim))
        return z, jnp.zeros((num_samples,), dtype=jnp.int32)

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}
