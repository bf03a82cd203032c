"""The example loss term: hand values, the conformance kit, and a training run with it on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ssvae_laplace.terms import ResponsibilityEntropyTerm

from ssvae_core import SSVAEClassifier, config_from_dict, default_registry
from ssvae_core.plugin import Schedule, TermInputs
from ssvae_core.testing import check_loss_term


def test_the_term_is_registered_off_by_default() -> None:
    component = default_registry().get("loss_term", "responsibility_entropy")
    assert component.package == "ssvae-laplace"
    assert component.factory.default_options().weight == 0.0


def test_value_is_the_entropy_of_each_rows_responsibilities() -> None:
    logits = jnp.log(jnp.array([[1.0, 1.0], [1.0, 3.0], [1.0, 1e-9]]))

    class Posterior:
        responsibilities = jax.nn.softmax(logits, axis=-1)

    class Batch:
        labels = jnp.array([-1, -1, 0])

    inputs = TermInputs(None, None, Batch(), Posterior(), jnp.zeros((3, 2)), jnp.asarray(0))  # type: ignore[arg-type]
    result = ResponsibilityEntropyTerm(Schedule(1.0), unlabeled_only=True)(inputs, jax.random.PRNGKey(0))
    expected = [np.log(2.0), -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), 0.0]
    np.testing.assert_allclose(np.asarray(result.values), expected, atol=1e-6)
    assert np.asarray(result.mask).tolist() == [1.0, 1.0, 0.0]


def test_term_passes_the_conformance_kit() -> None:
    report = check_loss_term("responsibility_entropy", max_examples=5)
    assert report["per_example_independence"] == "passed"
    assert report["weights_are_traced"] == "passed"


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_training_logs_the_term_only_when_it_is_on(weight: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 4, 4), dtype=np.float32)
    y = np.full(40, -1)
    y[:6] = np.arange(6) % 3
    config = config_from_dict(
        {
            "model": {"latent_dim": 2, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": 4},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 4, "batch_size": 8, "log_every": 4},
            "loss": {"responsibility_entropy": {"weight": weight}},
        }
    )
    classifier = SSVAEClassifier(config).fit(x, y, num_classes=3)
    logged = classifier.history[-1]
    assert ("responsibility_entropy" in logged) == (weight > 0)
    if weight > 0:
        assert 0.0 <= logged["responsibility_entropy"] <= np.log(4.0) + 1e-6
