"""Built-in network families and the pieces every family shares."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.modelling.types import EncoderOutput

LOG_VAR_BOUND = 6.0


def bounded_log_var(raw: Float[Array, " D"]) -> Float[Array, " D"]:
    """``log σ² = b · tanh(raw / b)`` with ``b = 6``: keeps ``exp(log σ²)`` finite early in training."""
    return LOG_VAR_BOUND * jnp.tanh(raw / LOG_VAR_BOUND)


class PosteriorHeads(eqx.Module):
    """Linear heads from an encoder's feature vector to ``μ``, bounded ``log σ²`` and logits.

    There is no logits head when ``num_components == 0`` (a prior without channels).
    """

    mean: eqx.nn.Linear
    log_var: eqx.nn.Linear
    logits: eqx.nn.Linear | None

    def __init__(self, features: int, latent_dim: int, num_components: int, *, key: PRNGKeyArray):
        mean_key, var_key, logit_key = jax.random.split(key, 3)
        self.mean = eqx.nn.Linear(features, latent_dim, key=mean_key)
        self.log_var = eqx.nn.Linear(features, latent_dim, key=var_key)
        self.logits = (
            eqx.nn.Linear(features, num_components, key=logit_key) if num_components > 0 else None
        )

    def __call__(self, features: Float[Array, " F"]) -> EncoderOutput:
        """``q(z|x)`` (mean, bounded log-variance) and the channel logits from one example's
        features."""
        return EncoderOutput(
            z_mean=self.mean(features),
            z_log_var=bounded_log_var(self.log_var(features)),
            logits=self.logits(features) if self.logits is not None else None,
        )
