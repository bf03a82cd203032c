"""The VampPrior (Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018).

``p(z) = Σ_k π_k q(z | u_k)``: a mixture of the encoder's own posteriors at K learned
pseudo-inputs ``u_k`` (π uniform, or learned with ``learn_pi``). The pseudo-inputs are a
field of the prior, so they are ordinary trainable leaves; they are re-encoded with the
current encoder on every call, so the prior holds no encoder statistics of its own.
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
    pi_log_weights,
    pi_logits_field,
    pi_regularisers,
)


def vamp_log_density(
    z: Float[Array, "*b D"],
    means: Float[Array, "K D"],
    log_vars: Float[Array, "K D"],
    log_weights: Float[Array, " K"],
) -> Float[Array, "*b"]:
    """``log p(z) = logsumexp_k (log π_k + log N(z; m_k, diag v_k))``."""
    per_component = diagonal_gaussian_log_density(z[..., None, :], means, log_vars)
    return jax.nn.logsumexp(log_weights + per_component, axis=-1)


class VampPrior(AbstractChannelPrior):
    """K pseudo-inputs ``u_k`` define ``p(z) = Σ_k π_k q(z | u_k)``.

    ``KL_z`` has no closed form; it is the per-example Monte-Carlo estimate with S samples

        KL_z ≈ (1/S) Σ_s [log q(z_s | x) − log Σ_k π_k q(z_s | u_k)],   z_s ~ q(z | x),

    drawn with the ``key`` passed to ``kl_terms``. It compares ``q(z|x)`` with the whole
    mixture rather than with one channel, so ``channel_kl`` returns it as a single
    column, which ``AbstractChannelPrior.kl_terms`` takes as ``KL_z`` itself. The encoder's
    K channel logits give ``KL_c = KL(q(c|x) || π)`` so that the τ head classifies from the
    latent alone. The channels live in latent space only: the decoder is not conditioned
    on them.
    ``pseudo_lr_scale`` multiplies the pseudo-inputs' optimiser update.

    π is uniform unless ``learn_pi``: then ``π = softmax(pi_logits)`` with ``pi_logits`` a
    trainable field (zeros at the start, so π starts uniform) that enters ``log p(z)`` in
    ``KL_z``, ``KL_c`` and ``sample``, and the Dirichlet MAP penalty
    ``R_π = −Σ_k (α − 1) log π_k`` is one of the ``regularisers``. With a fixed π the
    prior holds no ``pi_logits`` at all (the field is ``None``), so nothing can move π and
    the model's arrays are those of a VampPrior with a uniform π: checkpoints written
    before π could be learned load unchanged.
    """

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    pseudo_lr_scale: float = eqx.field(static=True)
    learn_pi: bool = eqx.field(static=True)
    dirichlet_alpha: float = eqx.field(static=True)
    pseudo_inputs: Float[Array, "K ..."]
    pi_logits: Float[Array, " K"] | None

    def __init__(
        self,
        pseudo_inputs: Float[Array, "K ..."],
        *,
        num_samples: int = 1,
        pseudo_lr_scale: float = 1.0,
        learn_pi: bool = False,
        dirichlet_alpha: float = 1.0,
        pi_logits: Float[Array, " K"] | None = None,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples}")
        if pseudo_lr_scale <= 0:
            raise ValueError(f"pseudo_lr_scale must be a number > 0, got {pseudo_lr_scale}")
        self.pseudo_inputs = jnp.asarray(pseudo_inputs, dtype=jnp.float32)
        self.num_components = self.pseudo_inputs.shape[0]
        self.pi_logits = pi_logits_field(
            self.num_components,
            learn_pi=learn_pi,
            dirichlet_alpha=dirichlet_alpha,
            pi_logits=pi_logits,
        )
        self.conditions_decoder = False
        self.num_samples = num_samples
        self.pseudo_lr_scale = pseudo_lr_scale
        self.learn_pi = learn_pi
        self.dirichlet_alpha = dirichlet_alpha

    def log_weights(self) -> Float[Array, " K"]:
        """``log π``: ``log_softmax(pi_logits)`` when π is learned, else ``−log K``."""
        return pi_log_weights(self.pi_logits, self.num_components)

    def pseudo_posterior(self, encoder: AbstractEncoder) -> EncoderOutput:
        """``q(z | u_k)`` for every pseudo-input: means and log-variances of shape ``K × D``."""
        return jax.vmap(encoder)(self.pseudo_inputs)

    def log_density(
        self, z: Float[Array, "*b D"], *, encoder: AbstractEncoder
    ) -> Float[Array, "*b"]:
        """``log p(z) = log Σ_k π_k q(z | u_k)``."""
        pseudo = self.pseudo_posterior(encoder)
        return vamp_log_density(z, pseudo.z_mean, pseudo.z_log_var, self.log_weights())

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B 1"]:
        """Monte-Carlo ``KL(q(z|x) || p(z))`` from S fresh samples of ``key``, shape ``(B, 1)``.

        ``p(z)`` is the whole mixture, not one channel's ``p(z|c)``, so the estimate is one
        column: ``KL_z`` itself.
        """
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        samples = posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise
        log_q = diagonal_gaussian_log_density(samples, posterior.z_mean, posterior.z_log_var)
        log_p = self.log_density(samples, encoder=encoder)
        return jnp.mean(log_q - log_p, axis=0)[:, None]

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        """``k ~ π``, then ``z ~ q(z | u_k)``; returns ``(z, k)``."""
        channel_key, z_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.log_weights(), shape=(num_samples,))
        pseudo = self.pseudo_posterior(encoder)
        noise = jax.random.normal(z_key, (num_samples, pseudo.z_mean.shape[-1]))
        z = pseudo.z_mean[channels] + jnp.exp(0.5 * pseudo.z_log_var[channels]) * noise
        return z, channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        """The Dirichlet MAP penalty ``−Σ_k (α − 1) log π_k`` on a learned π; none otherwise."""
        return pi_regularisers(self.pi_logits, self.dirichlet_alpha)

    def parameter_scales(self) -> dict[str, float]:
        return {"pseudo_inputs": self.pseudo_lr_scale}
