"""Loss terms as small pure functions; each docstring carries its formula.

All functions work on one example's arrays (the last axis is the latent or channel
axis) and broadcast over leading batch axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

_EPS = 1e-12


def gaussian_kl(
    mean: Float[Array, "*b D"],
    log_var: Float[Array, "*b D"],
    prior_mean: Float[Array, "*b D"] | float = 0.0,
) -> Float[Array, "*b"]:
    """``KL(N(μ, diag σ²) || N(m, I)) = ½ Σ_d (σ² + (μ − m)² − 1 − log σ²)``."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + (mean - prior_mean) ** 2 - 1.0 - log_var, axis=-1)


def diagonal_gaussian_log_density(
    z: Float[Array, "*b D"], mean: Float[Array, "*b D"], log_var: Float[Array, "*b D"]
) -> Float[Array, "*b"]:
    """``log N(z; μ, diag σ²) = −½ Σ_d (log 2π + log σ² + (z − μ)² / σ²)``."""
    return -0.5 * jnp.sum(
        jnp.log(2.0 * jnp.pi) + log_var + (z - mean) ** 2 * jnp.exp(-log_var), axis=-1
    )


def categorical_kl(
    logits: Float[Array, "*b K"], log_weights: Float[Array, " K"]
) -> Float[Array, "*b"]:
    """``KL(q(c|x) || π) = Σ_c r_c (log r_c − log π_c)`` with ``r = softmax(logits)``."""
    log_r = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_r) * (log_r - log_weights), axis=-1)


def entropy(probabilities: Float[Array, "*b K"]) -> Float[Array, "*b"]:
    """``H(p) = −Σ_c p_c log p_c`` (with ``0 log 0 = 0``)."""
    return -jnp.sum(probabilities * jnp.log(jnp.clip(probabilities, _EPS)), axis=-1)


def dirichlet_penalty(log_weights: Float[Array, " K"], alpha: float) -> Float[Array, ""]:
    """Dirichlet MAP penalty on π: ``R_π = −Σ_c (α − 1) log π_c``."""
    return -(alpha - 1.0) * jnp.sum(log_weights)


def expected_reconstruction(
    responsibilities: Float[Array, "*b K"], nll_per_channel: Float[Array, "*b K"]
) -> Float[Array, "*b"]:
    """``Σ_c r_c(x) · NLL(x | z, c)``: the reconstruction expected over channels."""
    return jnp.sum(responsibilities * nll_per_channel, axis=-1)


def top_channel_reconstruction(
    responsibilities: Float[Array, "*b M"], nll_top: Float[Array, "*b M"]
) -> Float[Array, "*b"]:
    """``Σ_{c∈T} r_c NLL_c / Σ_{c∈T} r_c`` over the ``M`` decoded channels ``T``.

    The expected reconstruction under ``q(c|x)`` restricted to ``T`` and renormalised: equal
    to ``expected_reconstruction`` when ``T`` holds all of ``q(c|x)``'s mass.
    """
    mass = jnp.clip(jnp.sum(responsibilities, axis=-1), _EPS)
    return jnp.sum(responsibilities * nll_top, axis=-1) / mass


def tau_probabilities(
    responsibilities: Float[Array, "*b K"], tau: Float[Array, "K Y"]
) -> Float[Array, "*b Y"]:
    """``p(y|x) = Σ_c r_c(x) τ_{c,y}``."""
    return responsibilities @ tau


def tau_supervised_loss(
    responsibilities: Float[Array, "*b K"], tau: Float[Array, "K Y"], labels: Int[Array, "*b"]
) -> Float[Array, "*b"]:
    """``−log Σ_c r_c(x) · sg(τ)_{c,y}``; τ is wrapped in ``stop_gradient``.

    Labels of ``-1`` are clipped to class 0 here; the caller masks those rows.
    """
    probabilities = tau_probabilities(responsibilities, jax.lax.stop_gradient(tau))
    safe = jnp.clip(labels, 0)
    picked = jnp.take_along_axis(probabilities, safe[..., None], axis=-1)[..., 0]
    return -jnp.log(jnp.clip(picked, _EPS))


def tau_from_counts(counts: Float[Array, "K Y"], alpha0: float) -> Float[Array, "K Y"]:
    """``τ_{c,y} = (s_{c,y} + α₀) / Σ_{y'} (s_{c,y'} + α₀)``; each row sums to 1."""
    smoothed = counts + alpha0
    return smoothed / jnp.sum(smoothed, axis=-1, keepdims=True)


def kl_warmup(step: Int[Array, ""], beta: float, warmup_steps: int) -> Float[Array, ""]:
    """``β_z(t) = β_z · min(1, t / T_warm)`` (``β_z`` at once when ``T_warm = 0``)."""
    if warmup_steps <= 0:
        return jnp.asarray(beta, dtype=jnp.float32)
    return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def agreement_loss(
    responsibilities_a: Float[Array, "*b K"], responsibilities_b: Float[Array, "*b K"]
) -> Float[Array, "*b"]:
    """``−log Σ_c r_c(a) r_c(b)``: minus the log-probability that two views share a channel.

    Zero exactly when both views put all their mass on the same channel.
    """
    agreement = jnp.sum(responsibilities_a * responsibilities_b, axis=-1)
    return -jnp.log(jnp.clip(agreement, _EPS))


def view_mutual_information(
    responsibilities_a: Float[Array, "B K"],
    responsibilities_b: Float[Array, "B K"],
    marginal_weight: float | Float[Array, ""] = 1.0,
) -> Float[Array, ""]:
    """``I_λ(c; c')`` of the channels of two views of the same batch (invariant information
    clustering): with ``P = sym(mean_b r(a_b) r(b_b)ᵀ)``, the ``K × K`` joint of the two
    views' channels, and ``P_c``, ``P_c'`` its marginals,
    ``Σ_{cc'} P_{cc'} (log P_{cc'} − λ log P_c − λ log P_c')``.

    With ``λ = 1`` this is the mutual information: largest when every channel is used
    equally and both views always fall into the same one. ``λ > 1`` weighs the marginals'
    entropy (balanced usage) more.
    """
    joint = jnp.mean(responsibilities_a[:, :, None] * responsibilities_b[:, None, :], axis=0)
    joint = jnp.clip(0.5 * (joint + joint.T), _EPS)
    joint = joint / jnp.sum(joint)
    row = jnp.sum(joint, axis=1, keepdims=True)
    column = jnp.sum(joint, axis=0, keepdims=True)
    return jnp.sum(joint * (jnp.log(joint) - marginal_weight * (jnp.log(row) + jnp.log(column))))


def embedding_repulsion(embeddings: Float[Array, "K E"]) -> Float[Array, ""]:
    """``mean_{c≠c'} exp(−‖e_c − e_{c'}‖² / (2E))``: an RBF penalty on near-duplicate embeddings."""
    count, dim = embeddings.shape
    squared = jnp.sum((embeddings[:, None, :] - embeddings[None, :, :]) ** 2, axis=-1)
    kernel = jnp.exp(-squared / (2.0 * dim))
    off_diagonal = jnp.sum(kernel) - jnp.trace(kernel)
    return off_diagonal / (count * (count - 1))


def confident_pseudo_labels(
    probabilities: Float[Array, "*b Y"],
    labels: Int[Array, "*b"],
    threshold: float | Float[Array, ""],
) -> tuple[Int[Array, "*b"], Float[Array, "*b"]]:
    """``(ŷ, m)`` with ``ŷ = argmax_y p(y|x)`` and ``m = [label = −1] · [max_y p(y|x) ≥ θ]``.

    Only unlabeled rows (``labels == -1``) whose prediction is at least ``θ`` confident get a
    pseudo-label. Both outputs are integer- or comparison-valued, so no gradient flows back.
    """
    confident = jnp.max(probabilities, axis=-1) >= threshold
    mask = (confident & (labels < 0)).astype(jnp.float32)
    return jnp.argmax(probabilities, axis=-1).astype(jnp.int32), mask
