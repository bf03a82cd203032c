"""Typed containers passed between encoder, prior, decoder, head and the loss pipeline."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray


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


def reparameterise(posterior: EncoderOutput, key: PRNGKeyArray) -> Float[Array, "B D"]:
    """``z = μ + σ ⊙ ε`` with ``ε ~ N(0, I)``."""
    noise = jax.random.normal(key, posterior.z_mean.shape)
    return posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise


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

    ``rows`` are the rows of the training data the batch was drawn from; ``x_view`` an
    augmented view of ``x``, present when a loss term requires it; ``fields`` the per-row
    arrays that loss terms prepared over the training data (propagated labels, neighbour
    indices), gathered at ``rows``.
    """

    x: Float[Array, "B ..."]
    labels: Int[Array, " B"]
    rows: Int[Array, " B"] | None = None
    x_view: Float[Array, "B ..."] | None = None
    fields: dict[str, Array] = eqx.field(default_factory=dict)


class AcquisitionInputs(eqx.Module):
    """What an acquisition function reads about ``N`` candidate examples.

    ``probabilities`` is ``p(y|x)`` (``N × Y``), ``certainty`` the head's certainty (the OOD
    score is ``1 − certainty``), ``responsibilities`` ``q(c|x)`` (``N × K``; width 0
    without channels), ``tau`` the channel→label map (``K × Y``, or ``None`` for a head
    without one), ``z_mean``/``z_log_var`` the posterior ``q(z|x)``, and
    ``sample_probabilities`` ``p(y | x, z_s)`` for ``S`` posterior samples ``z_s ~ q(z|x)``
    (``S × N × Y``; ``S`` is the acquisition's ``num_samples``, possibly 0). ``labeled``
    marks the examples that already carry a label: they are never chosen, and batch-aware
    acquisitions treat them as covered. ``ood`` holds a named OOD score per example
    (``ssvae_core.runs.ood``) where the acquisition asked for one (the ``ood`` acquisition's
    ``score``), else ``None``.
    """

    probabilities: Float[Array, "N Y"]
    certainty: Float[Array, " N"]
    responsibilities: Float[Array, "N K"]
    tau: Float[Array, "K Y"] | None
    z_mean: Float[Array, "N D"]
    z_log_var: Float[Array, "N D"]
    sample_probabilities: Float[Array, "S N Y"]
    labeled: Bool[Array, " N"]
    ood: Float[Array, " N"] | None = None

    @property
    def num_examples(self) -> int:
        return int(self.probabilities.shape[0])
