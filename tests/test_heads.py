"""The τ-classifier head and the softmax head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.config import ComponentConfig, config_from_dict
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.heads import SoftmaxHead, TauHead
from ssvae_core.modelling.model import build_model
from ssvae_core.modelling.types import EncoderOutput

LOGITS = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 3.0]], dtype=np.float32)
COUNTS = np.array([[4.0, 1.0, 0.0], [0.0, 0.5, 3.0]], dtype=np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _posterior(logits: np.ndarray | jax.Array) -> EncoderOutput:
    batch = logits.shape[0]
    return EncoderOutput(
        z_mean=jnp.zeros((batch, 2)), z_log_var=jnp.zeros((batch, 2)), logits=jnp.asarray(logits)
    )


def _tau_head(count_decay: float = 1.0) -> TauHead:
    return TauHead(num_components=2, num_classes=3, alpha0=0.5, count_decay=count_decay)


def _tau_by_hand(counts: np.ndarray, alpha0: float = 0.5) -> np.ndarray:
    smoothed = counts + alpha0
    return smoothed / smoothed.sum(-1, keepdims=True)


# --- τ head: state -------------------------------------------------------------------------


def test_tau_head_initial_state_is_zero_counts() -> None:
    state = _tau_head().init_state()
    assert state.shape == (2, 3)
    assert not np.any(np.asarray(state))


def test_update_state_adds_responsibilities_of_labeled_rows_to_their_label_column() -> None:
    labels = jnp.array([0, -1, 2])
    r = _softmax(LOGITS)
    expected = COUNTS.copy()
    expected[:, 0] += r[0]
    expected[:, 2] += r[2]
    new = _tau_head().update_state(jnp.asarray(COUNTS), _posterior(LOGITS), labels)
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-6)


def test_update_state_ignores_unlabeled_rows() -> None:
    labels = jnp.array([-1, -1, -1])
    new = _tau_head().update_state(jnp.asarray(COUNTS), _posterior(LOGITS), labels)
    np.testing.assert_array_equal(np.asarray(new), COUNTS)


def test_update_state_applies_count_decay_before_adding() -> None:
    labels = jnp.array([1, -1, -1])
    expected = 0.5 * COUNTS
    expected[:, 1] += _softmax(LOGITS)[0]
    new = _tau_head(count_decay=0.5).update_state(jnp.asarray(COUNTS), _posterior(LOGITS), labels)
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-6)


def test_update_state_passes_no_gradient_to_the_encoder_logits() -> None:
    labels = jnp.array([0, 1, 2])

    def total(logits: jax.Array) -> jax.Array:
        return jnp.sum(_tau_head().update_state(jnp.asarray(COUNTS), _posterior(logits), labels))

    grad = jax.grad(total)(jnp.asarray(LOGITS))
    assert np.array_equal(np.asarray(grad), np.zeros_like(LOGITS))


# --- τ head: prediction --------------------------------------------------------------------


def test_tau_head_tau_rows_sum_to_one() -> None:
    np.testing.assert_allclose(
        np.asarray(_tau_head().tau(jnp.asarray(COUNTS)).sum(-1)), 1.0, rtol=1e-6
    )


def test_tau_head_class_map_is_tau_of_the_counts() -> None:
    head, counts = _tau_head(), jnp.asarray(COUNTS)
    class_map = head.class_map(counts)
    assert class_map is not None
    np.testing.assert_array_equal(np.asarray(class_map), np.asarray(head.tau(counts)))
    np.testing.assert_allclose(np.asarray(class_map), _tau_by_hand(COUNTS), rtol=1e-6)


def test_tau_predict_proba_is_responsibilities_times_tau() -> None:
    expected = _softmax(LOGITS) @ _tau_by_hand(COUNTS)
    probabilities = _tau_head().predict_proba(_posterior(LOGITS), None, jnp.asarray(COUNTS))
    np.testing.assert_allclose(np.asarray(probabilities), expected, rtol=1e-5)


def test_tau_predict_proba_rows_sum_to_one() -> None:
    probabilities = _tau_head().predict_proba(_posterior(LOGITS), None, jnp.asarray(COUNTS))
    np.testing.assert_allclose(np.asarray(probabilities).sum(-1), 1.0, rtol=1e-6)


def test_tau_certainty_is_max_over_channels_of_responsibility_times_tau_peak() -> None:
    r = _softmax(LOGITS)
    tau_peak = _tau_by_hand(COUNTS).max(-1)
    expected = np.max(r * tau_peak, axis=-1)
    certainty = _tau_head().certainty(_posterior(LOGITS), None, jnp.asarray(COUNTS))
    np.testing.assert_allclose(np.asarray(certainty), expected, rtol=1e-5)


def test_tau_ood_score_lies_in_unit_interval() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(32, 2)).astype(np.float32) * 5
    counts = jnp.asarray(rng.exponential(size=(2, 3)).astype(np.float32) * 10)
    ood = 1.0 - np.asarray(_tau_head().certainty(_posterior(logits), None, counts))
    assert np.all((ood >= 0.0) & (ood <= 1.0))


def test_tau_supervised_loss_is_negative_log_probability_of_label() -> None:
    labels = jnp.array([0, 2, 1])
    p = _softmax(LOGITS) @ _tau_by_hand(COUNTS)
    expected = -np.log(p[np.arange(3), [0, 2, 1]])
    loss = _tau_head().supervised_loss(_posterior(LOGITS), None, labels, jnp.asarray(COUNTS))
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)


def test_tau_supervised_loss_passes_no_gradient_into_counts() -> None:
    labels = jnp.array([0, 2, 1])
    grad = jax.grad(
        lambda counts: jnp.sum(
            _tau_head().supervised_loss(_posterior(LOGITS), None, labels, counts)
        )
    )(jnp.asarray(COUNTS))
    assert np.array_equal(np.asarray(grad), np.zeros_like(COUNTS))


def test_tau_head_needs_a_prior_with_channels() -> None:
    with pytest.raises(ConfigError, match="needs a prior with channels"):  # when loaded
        config_from_dict(
            {"prior": {"name": "standard"}, "head": {"name": "tau"}, "model": {"latent_dim": 2}}
        )
    config = config_from_dict({"prior": {"name": "standard"}, "model": {"latent_dim": 2}})
    by_hand = config.replace(head=ComponentConfig("tau", {}))
    with pytest.raises(ConfigError, match="needs a prior with channels"):  # put together by hand
        build_model(by_hand, input_shape=(4,), num_classes=3, key=jax.random.PRNGKey(0))


# --- softmax head --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def softmax_head() -> SoftmaxHead:
    return SoftmaxHead(latent_dim=2, num_classes=3, key=jax.random.PRNGKey(0))


Z = np.array([[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]], dtype=np.float32)


def _softmax_by_hand(head: SoftmaxHead) -> np.ndarray:
    weight = np.asarray(head.linear.weight)
    bias = np.asarray(head.linear.bias)
    return _softmax(Z @ weight.T + bias)


def test_softmax_head_predict_proba_is_softmax_of_linear_map(softmax_head: SoftmaxHead) -> None:
    probabilities = softmax_head.predict_proba(_posterior(LOGITS), jnp.asarray(Z), None)
    np.testing.assert_allclose(np.asarray(probabilities), _softmax_by_hand(softmax_head), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(probabilities).sum(-1), 1.0, rtol=1e-6)


def test_softmax_head_certainty_is_max_probability(softmax_head: SoftmaxHead) -> None:
    certainty = softmax_head.certainty(_posterior(LOGITS), jnp.asarray(Z), None)
    np.testing.assert_allclose(
        np.asarray(certainty), _softmax_by_hand(softmax_head).max(-1), rtol=1e-5
    )


def test_softmax_head_supervised_loss_is_cross_entropy(softmax_head: SoftmaxHead) -> None:
    labels = jnp.array([2, 0, 1])
    expected = -np.log(_softmax_by_hand(softmax_head)[np.arange(3), [2, 0, 1]])
    loss = softmax_head.supervised_loss(_posterior(LOGITS), jnp.asarray(Z), labels, None)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)


def test_softmax_head_is_stateless(softmax_head: SoftmaxHead) -> None:
    assert softmax_head.init_state() is None
    assert softmax_head.update_state(None, _posterior(LOGITS), jnp.array([0, 1, 2])) is None


def test_softmax_head_has_no_class_map(softmax_head: SoftmaxHead) -> None:
    assert softmax_head.class_map(softmax_head.init_state()) is None


def test_initial_counts_give_channel_c_to_label_c_and_leave_the_rest_unowned() -> None:
    head = TauHead(num_components=5, num_classes=3, alpha0=0.5, count_decay=1.0, initial_counts=2.0)
    expected = np.array([[2, 0, 0], [0, 2, 0], [0, 0, 2], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(head.init_state()), expected)


def test_seeded_counts_fade_with_the_decay() -> None:
    head = TauHead(num_components=2, num_classes=2, alpha0=0.5, count_decay=0.5, initial_counts=4.0)
    posterior = EncoderOutput(
        z_mean=jnp.zeros((1, 2)), z_log_var=jnp.zeros((1, 2)), logits=jnp.zeros((1, 2))
    )
    state = head.update_state(head.init_state(), posterior, jnp.asarray([-1]))
    np.testing.assert_allclose(np.asarray(state), [[2.0, 0.0], [0.0, 2.0]])


def test_default_tau_head_seeds_its_counts() -> None:
    config = config_from_dict({"prior": {"num_components": 4}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}})
    model, _ = build_model(config, input_shape=(4,), num_classes=2, key=jax.random.PRNGKey(0))
    # the first two channels, one per class; the other two start unowned (free)
    assert float(jnp.sum(model.head.init_state())) == pytest.approx(2 * 10.0)
