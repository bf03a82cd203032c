"""The mixture prior: ``c ~ Cat(π)``, ``z | c ~ N(0, I)``, component-aware decoder."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.modelling.losses import gaussian_kl
from ssvae_core.modelling.priors.channels import AbstractChannelPrior, pi_regularisers
from ssvae_core.modelling.protocols import AbstractEncoder
from ssvae_core.modelling.types import EncoderOutput


class MixturePrior(AbstractChannelPrior):
    """K channels with weights ``π = softmax(pi_logits)``.

    ``KL_z = Σ_c r_c KL(q(z|x) || N(0, I))`` (every ``p(z|c)`` is ``N(0, I)``, so this is the
    plain Gaussian KL) and ``KL_c = KL(q(c|x) || π)``, both from
    ``AbstractChannelPrior``. With ``learn_pi`` the Dirichlet MAP
    penalty ``−Σ_c (α − 1) log π_c`` is added; otherwise π gets exactly zero update.
    """

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    learn_pi: bool = eqx.field(static=True)
    dirichlet_alpha: float = eqx.field(static=True)
    pi_logits: Float[Array, " K"]

    def __init__(
        self,
        latent_dim: int,
        num_components: int,
        *,
        learn_pi: bool = False,
        dirichlet_alpha: float = 1.0,
        pi_logits: Float[Array, " K"] | None = None,
    ):
        self.num_components = num_components
        self.conditions_decoder = True
        self.latent_dim = latent_dim
        self.learn_pi = learn_pi
        self.dirichlet_alpha = dirichlet_alpha
        self.pi_logits = jnp.zeros((num_components,)) if pi_logits is None else pi_logits

    def log_weights(self) -> Float[Array, " K"]:
        return jax.nn.log_softmax(self.pi_logits)

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        """``KL(q(z|x) || N(0, I))`` in every channel's column.

        All columns are equal, but returning ``(B, K)`` rather than ``(B, 1)`` keeps
        ``KL_z = Σ_c r_c KL`` computed exactly as it always was, to the last bit.
        """
        kl = gaussian_kl(posterior.z_mean, posterior.z_log_var)
        return jnp.broadcast_to(kl[:, None], (kl.shape[0], self.num_components))

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        channel_key, z_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.pi_logits, shape=(num_samples,))
        return jax.random.normal(z_key, (num_samples, self.latent_dim)), channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return pi_regularisers(self.pi_logits if self.learn_pi else None, self.dirichlet_alpha)

    def parameter_scales(self) -> dict[str, float]:
        return {} if self.learn_pi else {"pi_logits": 0.0}
