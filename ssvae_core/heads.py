"""Classification heads: the latent-only τ-classifier and a softmax head on ``z``."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.losses import tau_from_counts, tau_probabilities, tau_supervised_loss
from ssvae_core.protocols import AbstractHead
from ssvae_core.types import EncoderOutput


def _responsibilities(posterior: EncoderOutput) -> Float[Array, "B K"]:
    responsibilities = posterior.responsibilities
    assert responsibilities is not None, "the τ head needs a prior with channels"
    return responsibilities


class TauHead(AbstractHead):
    """``p(y|x) = Σ_c r_c(x) τ_{c,y}`` with τ from soft counts kept in the head state.

    Counts update as ``s ← decay · s + Σ_{labeled i} sg(r(x_i)) onehot(y_i)``; the head has
    no trainable parameters, and the supervised loss sees τ through ``stop_gradient``.

    ``initial_counts`` seeds the counts with ``s₀ · onehot(c mod Y)``: channel ``c`` starts
    out owned by label ``c mod Y``, so the supervised loss steers each label's examples to
    its own channels from the first step instead of letting two labels settle in one
    channel. With ``count_decay < 1`` the seed fades and the labeled data take over.
    """

    num_components: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    alpha0: float = eqx.field(static=True)
    count_decay: float = eqx.field(static=True)
    initial_counts: float = eqx.field(static=True, default=0.0)

    def init_state(self) -> Float[Array, "K Y"]:
        owners = jnp.arange(self.num_components) % max(self.num_classes, 1)
        seeded = self.initial_counts * jax.nn.one_hot(owners, self.num_classes)
        return seeded.astype(jnp.float32)

    def tau(self, counts: Float[Array, "K Y"]) -> Float[Array, "K Y"]:
        """``τ_{c,y} = (s_{c,y} + α₀) / Σ_{y'} (s_{c,y'} + α₀)``."""
        return tau_from_counts(counts, self.alpha0)

    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, "B Y"]:
        return tau_probabilities(_responsibilities(posterior), self.tau(state))

    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, " B"]:
        """``max_c r_c(x) · max_y τ_{c,y}``."""
        per_channel = _responsibilities(posterior) * jnp.max(self.tau(state), axis=-1)
        return jnp.max(per_channel, axis=-1)

    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: Float[Array, "K Y"],
    ) -> Float[Array, " B"]:
        return tau_supervised_loss(_responsibilities(posterior), self.tau(state), labels)

    def update_state(
        self, state: Float[Array, "K Y"], posterior: EncoderOutput, labels: Int[Array, " B"]
    ) -> Float[Array, "K Y"]:
        responsibilities = jax.lax.stop_gradient(_responsibilities(posterior))
        onehot = jax.nn.one_hot(labels, self.num_classes) * (labels >= 0)[:, None]
        return self.count_decay * state + responsibilities.T @ onehot

    def class_map(self, state: Float[Array, "K Y"]) -> Float[Array, "K Y"]:
        """τ from the counts in ``state``."""
        return self.tau(state)


class SoftmaxHead(AbstractHead):
    """``p(y|x) = softmax(W z + b)``; trained with cross-entropy on sampled ``z``."""

    num_classes: int = eqx.field(static=True)
    linear: eqx.nn.Linear

    def __init__(self, latent_dim: int, num_classes: int, *, key: PRNGKeyArray):
        self.num_classes = num_classes
        self.linear = eqx.nn.Linear(latent_dim, num_classes, key=key)

    def init_state(self) -> None:
        return None

    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: None
    ) -> Float[Array, "B Y"]:
        return jax.nn.softmax(jax.vmap(self.linear)(z), axis=-1)

    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: None
    ) -> Float[Array, " B"]:
        return jnp.max(self.predict_proba(posterior, z, state), axis=-1)

    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: None,
    ) -> Float[Array, " B"]:
        log_p = jax.nn.log_softmax(jax.vmap(self.linear)(z), axis=-1)
        return -jnp.take_along_axis(log_p, jnp.clip(labels, 0)[:, None], axis=-1)[:, 0]

    def update_state(self, state: None, posterior: EncoderOutput, labels: Int[Array, " B"]) -> None:
        return None

    def class_map(self, state: None) -> None:
        """``None``: the softmax head classifies from ``z``, not through channels."""
        return None
