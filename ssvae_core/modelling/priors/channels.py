"""Priors with channels: the shared ``KL_z`` / ``KL_c`` body of ``p(c) p(z|c)`` mixtures.

Every prior with ``K > 0`` channels ``c ~ Cat(π)``, ``z | c ~ p(z|c)`` has the same two KL
terms per example, with responsibilities ``r = softmax(logits)``:

    KL_z = Σ_c r_c KL(q(z|x) || p(z|c))
    KL_c = KL(q(c|x) || π) = Σ_c r_c (log r_c − log π_c)

``AbstractChannelPrior`` implements both once; a subclass supplies the per-channel
``KL(q(z|x) || p(z|c))`` in ``AbstractChannelPrior.channel_kl`` and ``log π`` in
``log_weights``. A prior without channels (``K = 0``) subclasses ``AbstractPrior`` directly.

The ``pi_*`` helpers give a prior an optional learned π = softmax(pi_logits): the field is
``None`` when π is fixed (uniform), so a fixed π has no leaf to update and the prior's arrays
are those of a uniform-π prior.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.modelling.losses import categorical_kl, dirichlet_penalty
from ssvae_core.modelling.protocols import AbstractEncoder, AbstractPrior
from ssvae_core.modelling.types import EncoderOutput


def uniform_log_weights(num_components: int) -> Float[Array, " K"]:
    """``log π_c = −log K`` for every channel: the log-weights of a uniform ``π``."""
    return jnp.full((num_components,), -jnp.log(num_components))


def pi_logits_field(
    num_components: int,
    *,
    learn_pi: bool,
    dirichlet_alpha: float,
    pi_logits: Float[Array, " K"] | None = None,
) -> Float[Array, " K"] | None:
    """The value of an optional ``pi_logits`` field, with ``π = softmax(pi_logits)``.

    ``None`` when π is fixed (uniform, ``learn_pi`` False); else ``pi_logits`` as float32,
    zeros (a uniform π at the start) when not given. Checks ``α = dirichlet_alpha > 0``,
    that ``pi_logits`` are given only with ``learn_pi`` and that they have shape ``(K,)``.
    """
    if dirichlet_alpha <= 0:
        raise ValueError(f"dirichlet_alpha must be a number > 0, got {dirichlet_alpha}")
    if pi_logits is not None and not learn_pi:
        raise ValueError("pi_logits are given but learn_pi is False (a fixed π is uniform)")
    if not learn_pi:
        return None
    if pi_logits is None:
        return jnp.zeros((num_components,), dtype=jnp.float32)
    logits = jnp.asarray(pi_logits, dtype=jnp.float32)
    if logits.shape != (num_components,):
        raise ValueError(f"pi_logits have shape {logits.shape}, expected ({num_components},)")
    return logits


def pi_log_weights(pi_logits: Float[Array, " K"] | None, num_components: int) -> Float[Array, " K"]:
    """``log π``: ``log_softmax(pi_logits)`` for a learned π, else (``None``) ``−log K``."""
    if pi_logits is None:
        return uniform_log_weights(num_components)
    return jax.nn.log_softmax(pi_logits)


def pi_regularisers(
    pi_logits: Float[Array, " K"] | None, dirichlet_alpha: float
) -> dict[str, Float[Array, ""]]:
    """``{"dirichlet_pi": R_π}`` for a learned π, ``{}`` when ``pi_logits`` is ``None``.

    ``R_π = −Σ_c (α − 1) log π_c`` with ``log π = log_softmax(pi_logits)``: the Dirichlet
    MAP penalty (``dirichlet_penalty``).
    """
    if pi_logits is None:
        return {}
    return {"dirichlet_pi": dirichlet_penalty(jax.nn.log_softmax(pi_logits), dirichlet_alpha)}


class AbstractChannelPrior(AbstractPrior):
    """A prior ``p(c) p(z|c)`` with ``K > 0`` channels whose KL terms follow from ``channel_kl``.

    ``kl_terms`` is concrete (do not override it):

        KL_z = Σ_c r_c · channel_kl[:, c]         (channel_kl of shape (B, K))
        KL_z = channel_kl[:, 0]                   (channel_kl of shape (B, 1))
        KL_c = categorical_kl(logits, log_weights())

    with ``r = softmax(logits)`` from the encoder's channel logits, which must be present.
    A subclass fills in the abstract fields and ``channel_kl``, ``log_weights``, ``sample``,
    ``regularisers`` and ``parameter_scales``, and overrides nothing.
    """

    @abc.abstractmethod
    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        """``KL(q(z|x) || p(z|c))`` per example and channel, shape ``(B, K)``.

        An estimate (Monte Carlo) draws its randomness from ``key`` only; ``encoder`` is
        there for priors defined through it. A prior whose ``p(z|c)`` is the same for
        every channel may return one column, shape ``(B, 1)``: that column is then
        ``KL_z`` itself, with no ``Σ_c r_c`` weighting (the weights sum to 1, so the value
        is the same up to rounding, and the column gets no gradient through ``r``). With
        ``K = 1`` the two shapes coincide and give the same numbers.
        """

    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        """``{"kl_z": Σ_c r_c KL(q(z|x) || p(z|c)), "kl_c": KL(q(c|x) || π)}`` per example."""
        logits = posterior.logits
        assert logits is not None, f"{type(self).__name__} needs channel logits"
        per_channel = self.channel_kl(posterior, encoder=encoder, key=key)
        batch, count = logits.shape
        if per_channel.shape == (batch, 1):
            kl_z = per_channel[:, 0]
        elif per_channel.shape == (batch, count):
            responsibilities = jax.nn.softmax(logits, axis=-1)
            kl_z = jnp.sum(responsibilities * per_channel, axis=-1)
        else:
            raise ValueError(
                f"{type(self).__name__}.channel_kl returned shape {per_channel.shape}, "
                f"expected ({batch}, {count}) or ({batch}, 1)"
            )
        return {"kl_z": kl_z, "kl_c": categorical_kl(logits, self.log_weights())}
