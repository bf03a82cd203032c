"""The built-in acquisition functions against hand values, selection rules, building by name."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.errors import ConfigError, DataError
from ssvae_core.labels.active import build_acquisition, query
from ssvae_core.modelling.components import BuildContext
from ssvae_core.modelling.likelihoods import make_likelihood
from ssvae_core.modelling.protocols import top_unlabeled
from ssvae_core.modelling.types import AcquisitionInputs
from ssvae_core.registry import default_registry

KEY = jax.random.PRNGKey(0)


def _context(num_components: int = 2) -> BuildContext:
    return BuildContext(
        input_shape=(4,), latent_dim=2, num_classes=2, num_components=num_components,
        conditioning="film" if num_components else "none", embedding_dim=2,
        likelihood=make_likelihood("bernoulli"),
    )


def _inputs(**changes: object) -> AcquisitionInputs:
    """Three examples, two classes, two channels; τ sends channel 0 to class 0, 1 to 1."""
    tau = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    responsibilities = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]], np.float32)
    values: dict[str, object] = {
        "probabilities": jnp.asarray(responsibilities @ tau),
        "certainty": jnp.asarray(np.max(responsibilities * tau.max(axis=-1), axis=-1)),
        "responsibilities": jnp.asarray(responsibilities),
        "tau": jnp.asarray(tau),
        "z_mean": jnp.asarray([[0.0, 0.0], [1.0, 0.0], [3.0, 4.0]], jnp.float32),
        "z_log_var": jnp.zeros((3, 2)),
        "sample_probabilities": jnp.zeros((0, 3, 2)),
        "labeled": jnp.asarray([False, False, False]),
    }
    values.update(changes)
    return AcquisitionInputs(**values)  # type: ignore[arg-type]


def _h(*p: float) -> float:
    return -sum(v * math.log(v) for v in p if v > 0)


def _score(name: str, inputs: AcquisitionInputs, **options: object) -> np.ndarray:
    acquisition = build_acquisition(name, _context(), options or None)
    return np.asarray(acquisition.score(inputs, KEY))


# p(y|x): [0.9, 0.1], [0.55, 0.45], [0.34, 0.66]
def test_least_confidence_margin_and_entropy_by_hand() -> None:
    inputs = _inputs()
    np.testing.assert_allclose(_score("least_confidence", inputs), [0.1, 0.45, 0.34], atol=1e-6)
    np.testing.assert_allclose(_score("margin", inputs), [0.2, 0.9, 0.68], atol=1e-6)
    np.testing.assert_allclose(
        _score("entropy", inputs), [_h(0.9, 0.1), _h(0.55, 0.45), _h(0.34, 0.66)], atol=1e-5
    )


def test_ood_score_is_one_minus_the_heads_certainty() -> None:
    # max_c r_c max_y τ_{c,y}: 1·0.9, max(0.5·0.9, 0.5·0.8), max(0.2·0.9, 0.8·0.8)
    np.testing.assert_allclose(_score("ood", _inputs()), [0.1, 0.55, 0.36], atol=1e-6)


def test_channel_entropy_and_disagreement_by_hand() -> None:
    inputs = _inputs()
    np.testing.assert_allclose(
        _score("channel_entropy", inputs), [0.0, math.log(2), _h(0.2, 0.8)], atol=1e-5
    )
    h0, h1 = _h(0.9, 0.1), _h(0.2, 0.8)
    expected = [
        0.0,  # one channel: no disagreement
        _h(0.55, 0.45) - (0.5 * h0 + 0.5 * h1),
        _h(0.34, 0.66) - (0.2 * h0 + 0.8 * h1),
    ]
    np.testing.assert_allclose(_score("disagreement", inputs), expected, atol=1e-5)
    # channels that agree on the label do not disagree, however split the example is
    same = jnp.asarray([[0.9, 0.1], [0.9, 0.1]])
    assert np.allclose(_score("disagreement", _inputs(tau=same)), 0.0, atol=1e-6)


def test_bald_is_the_mutual_information_over_samples() -> None:
    samples = jnp.asarray(
        [
            [[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
            [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],
        ]
    )
    scores = _score("bald", _inputs(sample_probabilities=samples), num_samples=2)
    # agreeing samples: 0, however uncertain; confident samples that disagree: log 2
    np.testing.assert_allclose(scores, [0.0, 0.0, math.log(2)], atol=1e-5)


def test_random_scores_follow_the_key() -> None:
    inputs = _inputs()
    acquisition = build_acquisition("random", _context())
    first = np.asarray(acquisition.score(inputs, KEY))
    assert np.array_equal(first, np.asarray(acquisition.score(inputs, KEY)))
    assert not np.array_equal(first, np.asarray(acquisition.score(inputs, jax.random.PRNGKey(1))))
    assert np.all((first >= 0) & (first < 1))


def test_top_unlabeled_skips_labeled_and_breaks_ties_by_index() -> None:
    scores = jnp.asarray([0.5, 0.9, 0.5, 0.9, 0.1])
    labeled = jnp.asarray([False, True, False, False, False])
    assert np.asarray(top_unlabeled(scores, labeled, 3)).tolist() == [3, 0, 2]
    # -inf scores still rank above labeled examples, and the whole pool can be taken
    worst = jnp.asarray([-jnp.inf, 1.0, 0.0])
    assert sorted(np.asarray(top_unlabeled(worst, jnp.asarray([False, True, False]), 2)).tolist()) == [0, 2]
    with pytest.raises(ValueError, match="between 0 and the 4 unlabeled"):
        top_unlabeled(scores, labeled, 5)


def test_kcenter_covers_the_latent_space() -> None:
    z = jnp.asarray([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0], [0.0, 3.0]], jnp.float32)
    labeled = jnp.asarray([True, False, False, False, False])
    inputs = _inputs(
        z_mean=z, labeled=labeled, probabilities=jnp.full((5, 2), 0.5), certainty=jnp.full((5,), 0.5),
        responsibilities=jnp.full((5, 2), 0.5), z_log_var=jnp.zeros((5, 2)),
        sample_probabilities=jnp.zeros((0, 5, 2)),
    )
    acquisition = build_acquisition("kcenter", _context())
    # farthest from 0 is 3 (5.1); then 4 (3 away from 0, 5.9 from 3); then 2 or 1 — 1 is
    # 0.1 from a labeled one, 2 is 0.1 from a chosen one: the lower index wins the tie
    assert np.asarray(acquisition.select(inputs, 3, KEY)).tolist() == [3, 4, 1]
    np.testing.assert_allclose(np.asarray(acquisition.score(inputs, KEY)), [0, 0.1, 5, 5.1, 3], atol=1e-5)


def test_diverse_weighs_uncertainty_by_distance() -> None:
    z = jnp.asarray([[0.0, 0.0], [1.0, 0.0], [1.01, 0.0], [3.0, 0.0]], jnp.float32)
    probabilities = jnp.asarray([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.99, 0.01]])
    inputs = _inputs(
        z_mean=z, probabilities=probabilities, certainty=jnp.max(probabilities, axis=-1),
        responsibilities=probabilities, z_log_var=jnp.zeros((4, 2)),
        sample_probabilities=jnp.zeros((0, 4, 2)), labeled=jnp.asarray([True, False, False, False]),
    )
    acquisition = build_acquisition("diverse", _context(), {"uncertainty": "least_confidence"})
    # u·d²: 0.5·1, 0.5·1.02, 0.01·9 → 2 first; then 1 sits on top of 2 (d² = 1e-4) and 3
    # (0.01·3.96) beats it: no near-duplicate in the batch
    assert np.asarray(acquisition.select(inputs, 2, KEY)).tolist() == [2, 3]
    entropy = build_acquisition("entropy", _context())
    assert np.asarray(entropy.select(inputs, 2, KEY)).tolist() == [1, 2]


def test_every_builtin_is_registered_with_its_options() -> None:
    registry = default_registry()
    assert {
        "random", "least_confidence", "margin", "entropy", "ood", "channel_entropy",
        "disagreement", "bald", "kcenter", "diverse", "typical", "badge",
    } <= set(registry.names("acquisition"))
    assert registry.get("acquisition", "bald").factory.default_options().num_samples == 8


def test_unknown_strategy_and_bad_options_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"strategy 'entopy' is not registered \(did you mean 'entropy'\?\); allowed: badge, bald"):
        build_acquisition("entopy", _context())
    with pytest.raises(ConfigError, match=r"bald\.num_samples must be an integer >= 2, got 1"):
        build_acquisition("bald", _context(), {"num_samples": 1})
    with pytest.raises(ConfigError, match=r"unknown option entropy\.foo"):
        build_acquisition("entropy", _context(), {"foo": 1})
    with pytest.raises(ConfigError, match="reads the channels"):
        build_acquisition("disagreement", _context(num_components=0))


def test_query_refuses_more_examples_than_the_unlabeled_pool() -> None:
    from ssvae_core.config import config_from_dict
    from ssvae_core.modelling.model import build_model
    from ssvae_core.training import init_state

    config = config_from_dict({"encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}})
    model, _ = build_model(config, input_shape=(4,), num_classes=2, key=KEY)
    state = init_state(model, KEY)
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    labeled = np.array([True, False, False, True, False])
    with pytest.raises(DataError, match="cannot query 4 examples: only 3 of the 5"):
        query(model, state.head_state, x, labeled, 4)
    with pytest.raises(DataError, match="positive integer"):
        query(model, state.head_state, x, labeled, 0)
    result = query(model, state.head_state, x, labeled, 3, strategy="bald")
    assert sorted(result.indices.tolist()) == [1, 2, 4] and result.scores.shape == (3,)


def test_balanced_batches_go_round_robin_over_predicted_classes() -> None:
    from ssvae_core.labels.acquisitions import class_balanced

    scores = jnp.asarray([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    predictions = jnp.asarray([0, 0, 0, 1, 2, 1])
    labeled = jnp.asarray([False, False, False, False, False, True])
    # each class's best (0, 3, 4), then each class's second best (1), ...
    assert np.asarray(class_balanced(scores, labeled, predictions, 5)).tolist() == [0, 3, 4, 1, 2]
    probabilities = (jax.nn.one_hot(predictions, 3) * 0.5 + 0.25) / 1.25  # rows sum to 1
    inputs = _inputs(
        probabilities=probabilities, certainty=jnp.max(probabilities, axis=-1),
        responsibilities=jnp.full((6, 2), 0.5), z_mean=jnp.zeros((6, 2)), z_log_var=jnp.zeros((6, 2)),
        sample_probabilities=jnp.zeros((0, 6, 2)), labeled=labeled,
    )
    balanced = build_acquisition("entropy", _context(), {"balance": True})
    assert np.asarray(balanced.select(inputs, 3, KEY)).tolist() == [0, 3, 4]
