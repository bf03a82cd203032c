"""Model-level properties of the whole objective: channel relabelling symmetry."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from ssvae_core.config import config_from_dict
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.modelling.objective import Objective, build_objective
from ssvae_core.modelling.types import Batch
from ssvae_core.testing import permute_channels, strategies

# K differs from every other leading size in the model (latent 4, hidden 16, classes 3),
# so permute_channels touches exactly the channel-indexed arrays.
K, SHAPE, CLASSES, BATCH = 5, (4, 4), 3, 8


@pytest.fixture(scope="module")
def mixture_model() -> tuple[SSVAE, Any, Any]:
    config = config_from_dict(
        {
            "model": {"latent_dim": 4, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": K, "learn_pi": True},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            # Every built-in term that needs no prepared data, the view-based ones included.
            "loss": {"graph_label": {"weight": 0.0}, "embedding_repulsion": {"weight": 0.1}},
        }
    )
    model, config = build_model(
        config, input_shape=SHAPE, num_classes=CLASSES, key=jax.random.PRNGKey(0)
    )
    objective = build_objective(config, model, input_shape=SHAPE, num_classes=CLASSES)
    # Non-uniform π and non-zero counts, so a wrong relabelling would show.
    model = eqx.tree_at(lambda m: m.prior.pi_logits, model, jnp.linspace(-1.0, 1.0, K))
    counts = jax.random.uniform(jax.random.PRNGKey(1), (K, CLASSES)) * 5.0
    return model, counts, objective


@eqx.filter_jit
def _loss(
    model: SSVAE,
    counts: jax.Array,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    objective: Objective,
) -> Any:
    batch = Batch(x=x, labels=labels, x_view=jnp.flip(x, axis=-1))
    total, (metrics, _) = objective(model, counts, batch, jnp.asarray(0), key)
    return total, metrics


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(
    strategies.inputs(BATCH, SHAPE),
    strategies.labels(BATCH, CLASSES),
    strategies.channel_permutations(K),
    strategies.seeds(),
)
def test_relabelling_channels_leaves_every_loss_term_unchanged(
    mixture_model: tuple[SSVAE, Any, Any],
    x: np.ndarray,
    labels: np.ndarray,
    permutation: np.ndarray,
    seed: int,
) -> None:
    """Encoder logit rows, embeddings, π and τ counts permuted together: the same objective."""
    model, counts, config = mixture_model
    key = jax.random.PRNGKey(seed)
    total, metrics = _loss(model, counts, x, labels, key, config)
    permuted_total, permuted_metrics = _loss(
        permute_channels(model, permutation),
        permute_channels(counts, permutation),
        x,
        labels,
        key,
        config,
    )
    np.testing.assert_allclose(permuted_total, total, rtol=1e-5, atol=1e-5)
    for name, value in metrics.items():
        np.testing.assert_allclose(
            permuted_metrics[name], value, rtol=1e-5, atol=1e-5, err_msg=name
        )
