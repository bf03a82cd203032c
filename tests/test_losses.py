"""Each loss term in ssvae_core.modelling.losses against values worked out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.modelling.losses import (
    categorical_kl,
    diagonal_gaussian_log_density,
    dirichlet_penalty,
    entropy,
    expected_reconstruction,
    gaussian_kl,
    kl_warmup,
    tau_from_counts,
    tau_probabilities,
    tau_supervised_loss,
)

# --- gaussian_kl -------------------------------------------------------------------------


def test_gaussian_kl_matches_hand_value() -> None:
    mean = jnp.array([0.5, -1.0])
    log_var = jnp.array([np.log(2.0), 0.0])
    # ½ Σ (σ² + μ² − 1 − log σ²): dim 0 has σ²=2, μ=0.5; dim 1 has σ²=1, μ=−1.
    expected = 0.5 * ((2.0 + 0.25 - 1.0 - np.log(2.0)) + (1.0 + 1.0 - 1.0 - 0.0))
    assert float(gaussian_kl(mean, log_var)) == pytest.approx(expected, rel=1e-6)


def test_gaussian_kl_with_prior_mean_matches_hand_value() -> None:
    mean = jnp.array([0.5, -1.0])
    log_var = jnp.array([np.log(2.0), 0.0])
    prior_mean = jnp.array([1.0, 1.0])
    # (μ − m)² is 0.25 and 4.
    expected = 0.5 * ((2.0 + 0.25 - 1.0 - np.log(2.0)) + (1.0 + 4.0 - 1.0 - 0.0))
    assert float(gaussian_kl(mean, log_var, prior_mean)) == pytest.approx(expected, rel=1e-6)


def test_gaussian_kl_is_zero_when_q_equals_standard_normal() -> None:
    assert float(gaussian_kl(jnp.zeros(3), jnp.zeros(3))) == 0.0


def test_gaussian_kl_is_zero_when_q_equals_shifted_prior() -> None:
    centre = jnp.array([1.5, -2.0, 0.25])
    assert float(gaussian_kl(centre, jnp.zeros(3), centre)) == 0.0


def test_gaussian_kl_is_per_row_over_a_batch() -> None:
    mean = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    log_var = jnp.zeros((2, 2))
    np.testing.assert_allclose(np.asarray(gaussian_kl(mean, log_var)), [0.0, 0.5], atol=1e-7)


def test_gaussian_kl_is_non_negative_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    mean = jnp.asarray(rng.normal(size=(16, 3)) * 3)
    log_var = jnp.asarray(rng.normal(size=(16, 3)) * 3)
    assert bool(jnp.all(gaussian_kl(mean, log_var) >= 0.0))


def test_diagonal_gaussian_log_density_matches_hand_value() -> None:
    z = jnp.array([1.0, 0.0])
    mean = jnp.array([0.0, 0.0])
    log_var = jnp.array([0.0, np.log(4.0)])
    expected = -0.5 * ((np.log(2 * np.pi) + 0.0 + 1.0) + (np.log(2 * np.pi) + np.log(4.0) + 0.0))
    assert float(diagonal_gaussian_log_density(z, mean, log_var)) == pytest.approx(
        expected, rel=1e-6
    )


# --- categorical_kl / entropy --------------------------------------------------------------


def test_categorical_kl_matches_hand_value() -> None:
    logits = jnp.log(jnp.array([1.0, 2.0, 3.0]))  # r = (1/6, 1/3, 1/2)
    log_weights = jnp.log(jnp.full(3, 1.0 / 3.0))
    expected = (1 / 6) * np.log((1 / 6) / (1 / 3)) + (1 / 3) * np.log(1.0) + (1 / 2) * np.log(1.5)
    assert float(categorical_kl(logits, log_weights)) == pytest.approx(expected, abs=1e-6)


def test_categorical_kl_is_zero_when_responsibilities_equal_pi() -> None:
    pi = jnp.array([0.2, 0.3, 0.5])
    logits = jnp.log(pi) + 7.0  # softmax is shift invariant
    assert float(categorical_kl(logits, jnp.log(pi))) == pytest.approx(0.0, abs=1e-6)


def test_entropy_matches_hand_value() -> None:
    p = jnp.array([0.5, 0.25, 0.25])
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    assert float(entropy(p)) == pytest.approx(expected, rel=1e-6)


def test_entropy_treats_zero_probability_as_zero_contribution() -> None:
    assert float(entropy(jnp.array([1.0, 0.0, 0.0]))) == pytest.approx(0.0, abs=1e-7)


# --- regularisers --------------------------------------------------------------------------


def test_dirichlet_penalty_matches_hand_value() -> None:
    log_pi = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    expected = -(3.0 - 1.0) * (np.log(0.2) + np.log(0.3) + np.log(0.5))
    assert float(dirichlet_penalty(log_pi, 3.0)) == pytest.approx(expected, rel=1e-6)


def test_dirichlet_penalty_vanishes_at_alpha_one() -> None:
    log_pi = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    assert float(dirichlet_penalty(log_pi, 1.0)) == 0.0


# --- reconstruction ------------------------------------------------------------------------


def test_expected_reconstruction_weights_channel_nll_by_responsibilities() -> None:
    responsibilities = jnp.array([[0.2, 0.8], [1.0, 0.0]])
    nll = jnp.array([[10.0, 5.0], [3.0, 100.0]])
    expected = [0.2 * 10.0 + 0.8 * 5.0, 1.0 * 3.0 + 0.0 * 100.0]
    np.testing.assert_allclose(np.asarray(expected_reconstruction(responsibilities, nll)), expected)


# --- τ -------------------------------------------------------------------------------------

TAU = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])


def test_tau_from_counts_matches_hand_values() -> None:
    counts = jnp.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    expected = np.array([[2.5, 0.5, 0.5], [1.5, 1.5, 0.5]]) / 3.5
    np.testing.assert_allclose(np.asarray(tau_from_counts(counts, 0.5)), expected, rtol=1e-6)


def test_tau_from_counts_rows_sum_to_one() -> None:
    counts = jnp.array([[0.0, 0.0, 0.0], [5.0, 0.1, 2.0], [1e4, 0.0, 3.0]])
    np.testing.assert_allclose(np.asarray(tau_from_counts(counts, 0.05).sum(-1)), 1.0, rtol=1e-6)


def test_tau_from_zero_counts_is_uniform() -> None:
    np.testing.assert_allclose(np.asarray(tau_from_counts(jnp.zeros((2, 4)), 0.05)), 0.25)


def test_tau_probabilities_matches_hand_value_and_sums_to_one() -> None:
    responsibilities = jnp.array([[0.25, 0.75]])
    expected = 0.25 * np.array([0.7, 0.2, 0.1]) + 0.75 * np.array([0.1, 0.1, 0.8])
    probabilities = np.asarray(tau_probabilities(responsibilities, TAU))
    np.testing.assert_allclose(probabilities[0], expected, rtol=1e-6)
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-6)


def test_tau_supervised_loss_is_negative_log_of_label_probability() -> None:
    responsibilities = jnp.array([[0.25, 0.75], [1.0, 0.0]])
    labels = jnp.array([2, 0])
    expected = [-np.log(0.25 * 0.1 + 0.75 * 0.8), -np.log(0.7)]
    loss = tau_supervised_loss(responsibilities, TAU, labels)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-6)


def test_tau_supervised_loss_passes_no_gradient_into_tau() -> None:
    responsibilities = jnp.array([[0.25, 0.75], [0.6, 0.4]])
    labels = jnp.array([2, 0])
    grad = jax.grad(lambda tau: jnp.sum(tau_supervised_loss(responsibilities, tau, labels)))(TAU)
    assert np.array_equal(np.asarray(grad), np.zeros_like(TAU))


def test_tau_supervised_loss_passes_gradient_into_responsibilities() -> None:
    responsibilities = jnp.array([[0.25, 0.75], [0.6, 0.4]])
    labels = jnp.array([2, 0])
    grad = jax.grad(lambda r: jnp.sum(tau_supervised_loss(r, TAU, labels)))(responsibilities)
    assert bool(jnp.all(grad != 0.0))


# --- KL warm-up ----------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (5, 1.0), (10, 2.0), (25, 2.0)])
def test_kl_warmup_rises_linearly_then_holds(step: int, expected: float) -> None:
    value = kl_warmup(jnp.asarray(step, dtype=jnp.int32), 2.0, 10)
    assert float(value) == pytest.approx(expected)


def test_kl_warmup_without_warmup_gives_full_beta_at_step_zero() -> None:
    assert float(kl_warmup(jnp.asarray(0, dtype=jnp.int32), 0.7, 0)) == pytest.approx(0.7)


# --- consistency and repulsion terms ------------------------------------------------------


def test_agreement_loss_matches_hand_value() -> None:
    from ssvae_core.modelling.losses import agreement_loss

    a = np.array([0.5, 0.5, 0.0])
    b = np.array([0.25, 0.25, 0.5])
    # −log(0.5·0.25 + 0.5·0.25 + 0) = −log 0.25
    assert float(agreement_loss(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(np.log(4.0))


def test_agreement_loss_is_zero_for_identical_one_hot_views() -> None:
    from ssvae_core.modelling.losses import agreement_loss

    one_hot = jnp.asarray([0.0, 1.0, 0.0])
    assert float(agreement_loss(one_hot, one_hot)) == pytest.approx(0.0, abs=1e-6)


def test_view_mutual_information_of_agreeing_balanced_views_is_log_k() -> None:
    from ssvae_core.modelling.losses import view_mutual_information

    one_hot = jnp.eye(4)[jnp.arange(40) % 4]
    assert float(view_mutual_information(one_hot, one_hot)) == pytest.approx(np.log(4.0), rel=1e-5)
    # one channel for everything: no information, however well the views agree
    collapsed = jnp.eye(4)[jnp.zeros(40, dtype=jnp.int32)]
    assert float(view_mutual_information(collapsed, collapsed)) == pytest.approx(0.0, abs=1e-5)


def test_view_mutual_information_matches_a_hand_joint() -> None:
    from ssvae_core.modelling.losses import view_mutual_information

    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    # mean outer product [[.5, 0], [.5, 0]], symmetrised [[.5, .25], [.25, 0]]; marginals (.75, .25)
    joint = np.array([[0.5, 0.25], [0.25, 1e-12]])
    joint /= joint.sum()
    marginal = joint.sum(axis=1)
    for weight in (1.0, 2.0):
        expected = np.sum(joint * (np.log(joint) - weight * np.log(marginal)[:, None] - weight * np.log(marginal)[None, :]))
        value = view_mutual_information(jnp.asarray(a), jnp.asarray(b), weight)
        assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_embedding_repulsion_matches_hand_value() -> None:
    from ssvae_core.modelling.losses import embedding_repulsion

    embeddings = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    # squared distances: d01 = 4, d02 = 0, d12 = 4; kernel exp(−d / (2·2))
    k01, k02, k12 = np.exp(-1.0), 1.0, np.exp(-1.0)
    expected = 2 * (k01 + k02 + k12) / (3 * 2)
    assert float(embedding_repulsion(jnp.asarray(embeddings))) == pytest.approx(expected, rel=1e-6)


def test_embedding_repulsion_falls_as_embeddings_spread() -> None:
    from ssvae_core.modelling.losses import embedding_repulsion

    near = jnp.asarray([[0.0, 0.0], [0.1, 0.0]])
    far = jnp.asarray([[0.0, 0.0], [5.0, 0.0]])
    assert float(embedding_repulsion(far)) < float(embedding_repulsion(near))


# --- pseudo-labels ------------------------------------------------------------------------


def test_confident_pseudo_labels_pick_argmax_of_confident_unlabeled_rows_only() -> None:
    from ssvae_core.modelling.losses import confident_pseudo_labels

    probabilities = jnp.asarray(
        [
            [0.96, 0.04],  # unlabeled, confident → pseudo-label 0
            [0.30, 0.70],  # unlabeled, not confident
            [0.02, 0.98],  # labeled: keeps its own label, no pseudo-label
            [0.05, 0.95],  # unlabeled, exactly at the threshold → pseudo-label 1
        ]
    )
    labels = jnp.asarray([-1, -1, 0, -1])
    targets, mask = confident_pseudo_labels(probabilities, labels, 0.95)
    assert np.asarray(targets).tolist() == [0, 1, 1, 1]
    assert np.asarray(mask).tolist() == [1.0, 0.0, 0.0, 1.0]

