"""Classification heads: the latent-only τ-classifier and a softmax head on ``z``."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ssvae_core.modelling.losses import tau_from_counts, tau_probabilities, tau_supervised_loss
from ssvae_core.modelling.protocols import AbstractChannelFreeHead, AbstractHead
from ssvae_core.modelling.types import EncoderOutput


def _responsibilities(posterior: EncoderOutput) -> Float[Array, "B K"]:
    responsibilities = posterior.responsibilities
    assert responsibilities is not None, "the τ head needs a prior with channels"
    return responsibilities


class TauHead(AbstractHead):
    """``p(y|x) = Σ_c r_c(x) τ_{c,y}`` with τ from soft counts kept in the head state.

    Counts update as ``s ← decay · s + Σ_{labeled i} sg(r(x_i)) onehot(y_i)``; the head has
    no trainable parameters, and the supervised loss sees τ through ``stop_gradient``.

    ``initial_counts`` seeds the counts with ``s₀ · onehot(c)`` for the first ``Y`` channels:
    channel ``c < Y`` starts out owned by label ``c``, so the supervised loss steers each
    label's examples to a channel of its own from the first step instead of letting two
    labels settle in one channel. Channels ``c ≥ Y`` start unowned. With
    ``count_decay < 1`` the seed fades and the labeled data take over.

    A channel is *free* while its usage ``p̂_c`` is below ``free_usage`` or it holds less
    than ``free_mass`` of the label mass ``Σ_{c,y} s_{c,y}``: no label owns it, and a class
    named after training may claim it (``assign_channels``).
    """

    num_components: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    alpha0: float = eqx.field(static=True)
    count_decay: float = eqx.field(static=True)
    initial_counts: float = eqx.field(static=True, default=0.0)
    free_usage: float = eqx.field(static=True, default=1e-3)
    free_mass: float = eqx.field(static=True, default=0.01)

    def init_state(self) -> Float[Array, "K Y"]:
        owners = jnp.arange(self.num_components)
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

    def label_mass(self, state: Float[Array, "K Y"]) -> Float[Array, " K"]:
        """``Σ_y s_{c,y}``: how much labeled responsibility each channel holds."""
        return jnp.sum(state, axis=-1)

    def free_channels(
        self, state: Float[Array, "K Y"], usage: Float[Array, " K"]
    ) -> Bool[Array, " K"]:
        """Channels with usage below ``free_usage`` or less than ``free_mass`` of the label
        mass."""
        mass = self.label_mass(state)
        share = mass / jnp.maximum(jnp.sum(mass), 1e-12)
        return (usage < self.free_usage) | (share < self.free_mass)

    def assign_channels(
        self, state: Float[Array, "K Y"], num_classes: int, owners: dict[int, tuple[int, ...]]
    ) -> tuple[TauHead, Float[Array, "K Y'"]]:
        """τ's label axis grows to ``num_classes``; class ``y`` owns ``owners[y]``.

        Columns of the old classes are kept; a claimed channel's row is replaced by
        ``max(s₀, 1) · onehot(y)``, so τ gives that channel to ``y`` until the labeled data
        say otherwise.
        """
        if num_classes < self.num_classes:
            raise ValueError(f"the label space cannot shrink ({self.num_classes} → {num_classes})")
        extra = num_classes - self.num_classes
        grown = jnp.concatenate([state, jnp.zeros((state.shape[0], extra), state.dtype)], axis=1)
        seed = max(self.initial_counts, 1.0)
        for label, channels in owners.items():
            if not 0 <= label < num_classes:
                raise ValueError(f"class {label} does not exist; there are {num_classes}")
            for channel in channels:
                if not 0 <= channel < self.num_components:
                    raise ValueError(
                        f"channel {channel} does not exist; the head has {self.num_components}"
                    )
                grown = grown.at[channel].set(jax.nn.one_hot(label, num_classes, dtype=grown.dtype) * seed)
        return dataclasses.replace(self, num_classes=num_classes), grown


class SoftmaxHead(AbstractChannelFreeHead):
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
