"""Typed containers passed between encoder, prior, decoder, head and the loss pipeline."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int


class EncoderOutput(eqx.Module):
    """The amortised posterior for one example, or a batch of them after ``vmap``.

    ``q(z|x) = N(z_mean, diag exp(z_log_var))`` and ``q(c|x) = softmax(logits)``.
    ``logits`` is ``None`` for priors without channels.
    """

    z_mean: Float[Array, "*batch d"]
    z_log_var: Float[Array, "*batch d"]
    logits: Float[Array, "*batch K"] | None

    @property
    def responsibilities(self) -> Float[Array, "*batch K"] | None:
        """``r_c(x) = softmax(logits)_c``; ``None`` without channels."""
        if self.logits is None:
            return None
        return jax.nn.softmax(self.logits, axis=-1)


class DecoderOutput(eqx.Module):
    """Parameters of ``p(x | z, c)`` for one example.

    ``loc`` has the sample's shape: Bernoulli logits or a Gaussian mean.
    ``scale_raw`` is the unconstrained scale of a heteroscedastic likelihood
    (one value per image, or one per pixel) and ``None`` otherwise.
    """

    loc: Float[Array, "*sample"]
    scale_raw: Float[Array, " S"] | None


class Batch(eqx.Module):
    """Inputs and labels (``-1`` = unlabeled) for one step.

    ``x_view`` is an augmented view of ``x`` and ``x_neighbour`` a nearest neighbour of each
    row, present when the consistency or neighbour terms are on; ``graph_labels`` the labels
    propagated over the kNN graph (``-1`` = none), present when the graph-label term is on.
    """

    x: Float[Array, "B ..."]
    labels: Int[Array, " B"]
    x_view: Float[Array, "B ..."] | None = None
    x_neighbour: Float[Array, "B ..."] | None = None
    graph_labels: Int[Array, " B"] | None = None
