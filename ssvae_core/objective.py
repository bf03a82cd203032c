"""The loss pipeline: combines reconstruction, the prior's KL terms, the head and regularisers.

    L(x) = Σ_c r_c(x) NLL(x | z, c) + β_z(t) KL_z + β_c KL_c + R_usage + λ_π R_π
         + λ_sup · E_labeled[ supervised loss ]
         + optional consistency, neighbour, pseudo-label and repulsion terms

Every term keeps its name in the returned metrics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.config import LossConfig
from ssvae_core.losses import (
    agreement_loss,
    confident_pseudo_labels,
    embedding_repulsion,
    entropy,
    expected_reconstruction,
    kl_warmup,
)
from ssvae_core.model import SSVAE, reparameterise
from ssvae_core.types import EncoderOutput


def _masked_mean(values: Float[Array, " B"], mask: Float[Array, " B"]) -> Float[Array, ""]:
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def objective(
    model: SSVAE,
    head_state: PyTree[Any],
    x: Float[Array, "B ..."],
    labels: Int[Array, " B"],
    step: Int[Array, ""],
    key: PRNGKeyArray,
    config: LossConfig,
    *,
    x_view: Float[Array, "B ..."] | None = None,
    x_neighbour: Float[Array, "B ..."] | None = None,
    graph_labels: Int[Array, " B"] | None = None,
) -> tuple[Float[Array, ""], tuple[dict[str, Float[Array, ""]], EncoderOutput]]:
    """Total loss and ``(metrics, posterior)``; ``labels == -1`` marks unlabeled rows.

    ``x_view`` (an augmented view per row) and ``x_neighbour`` (a nearest neighbour per row)
    enable the consistency, pseudo-label and neighbour terms; all act on responsibilities, so
    a prior without channels skips them. The pseudo-label term trains the view of each
    unlabeled row whose clean image the head classifies with ``p(y|x) ≥ θ`` towards that
    prediction (the labels never reach the τ counts). ``graph_labels`` (``-1`` = none) adds
    the supervised loss on rows labeled by propagation over the input kNN graph
    (:mod:`ssvae_core.graph`); those labels do not reach the τ counts either.
    """
    z_key, prior_key = jax.random.split(key)
    posterior = model.encode(x)
    z = reparameterise(posterior, z_key)
    responsibilities = posterior.responsibilities
    nll = model.channel_nll(x, z)
    if responsibilities is None or nll.shape[-1] == 1:
        reconstruction = nll[:, 0]
    else:
        reconstruction = expected_reconstruction(responsibilities, nll)

    labeled = (labels >= 0).astype(jnp.float32)
    unsupervised_rows = jnp.ones_like(labeled) if config.reconstruct_labeled else 1.0 - labeled
    kl_terms = model.prior.kl_terms(posterior, z, encoder=model.encoder, key=prior_key)
    beta_z = kl_warmup(step, config.beta_z, config.kl_warmup_steps)
    weights: dict[str, Float[Array, ""] | float] = {"kl_z": beta_z, "kl_c": config.beta_c}

    metrics: dict[str, Float[Array, ""]] = {
        "reconstruction": _masked_mean(reconstruction, unsupervised_rows)
    }
    per_example = reconstruction
    for name, values in kl_terms.items():
        per_example = per_example + weights.get(name, 1.0) * values
        metrics[name] = _masked_mean(values, unsupervised_rows)
    total = _masked_mean(per_example, unsupervised_rows)

    if responsibilities is not None:
        usage_entropy = entropy(jnp.mean(responsibilities, axis=0))
        metrics["usage_entropy"] = usage_entropy
        total = total + config.usage_weight * usage_entropy
    with_channels = responsibilities is not None
    view = model.encode(x_view) if x_view is not None and with_channels else None
    neighbour = None
    if x_neighbour is not None and with_channels and config.neighbour_weight > 0:
        neighbour = model.encode(x_neighbour)
    for name, partner, weight in (
        ("consistency", view, config.consistency_weight),
        ("neighbour", neighbour, config.neighbour_weight),
    ):
        if partner is None or weight == 0.0:
            continue
        assert responsibilities is not None and partner.responsibilities is not None
        metrics[name] = jnp.mean(agreement_loss(responsibilities, partner.responsibilities))
        total = total + weight * metrics[name]
    if view is not None and config.pseudo_label_weight > 0:
        view_key, z_key = jax.random.split(z_key)
        targets, confident = confident_pseudo_labels(
            model.head.predict_proba(posterior, z, head_state), labels, config.pseudo_label_threshold
        )
        view_z = reparameterise(view, view_key)
        pseudo = model.head.supervised_loss(view, view_z, targets, head_state)
        metrics["pseudo_label"] = _masked_mean(pseudo, confident)
        metrics["pseudo_label_share"] = jnp.sum(confident) / jnp.maximum(jnp.sum(1.0 - labeled), 1.0)
        total = total + config.pseudo_label_weight * metrics["pseudo_label"]
    if model.embeddings is not None and config.embedding_repulsion > 0:
        metrics["embedding_repulsion"] = embedding_repulsion(model.embeddings)
        total = total + config.embedding_repulsion * metrics["embedding_repulsion"]
    for name, value in model.prior.regularisers().items():
        metrics[name] = value
        total = total + config.dirichlet_weight * value

    supervised = model.head.supervised_loss(posterior, z, labels, head_state)
    metrics["supervised"] = _masked_mean(supervised, labeled)
    total = total + config.supervised_weight * metrics["supervised"]
    if graph_labels is not None and config.graph_label_weight > 0:
        propagated = model.head.supervised_loss(posterior, z, graph_labels, head_state)
        metrics["graph_label"] = _masked_mean(propagated, (graph_labels >= 0).astype(jnp.float32))
        total = total + config.graph_label_weight * metrics["graph_label"]
    metrics["beta_z"] = beta_z
    metrics["loss"] = total
    return total, (metrics, posterior)
