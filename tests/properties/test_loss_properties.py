"""Properties of the core's loss terms, over the kit's strategies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ssvae_core.modelling.likelihoods import heteroscedastic_sigma
from ssvae_core.modelling.losses import (
    categorical_kl,
    diagonal_gaussian_log_density,
    entropy,
    gaussian_kl,
    tau_from_counts,
    tau_probabilities,
    tau_supervised_loss,
)
from ssvae_core.testing import strategies

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _gaussian_case(batch: int, latent: int) -> st.SearchStrategy[dict[str, np.ndarray]]:
    return st.fixed_dictionaries(
        {
            "mean": strategies.means(batch, latent),
            "log_var": strategies.log_variances(batch, latent),
            "prior_mean": strategies.means(batch, latent),
        }
    )


GAUSSIAN_CASES = st.tuples(strategies.batch_sizes(), strategies.latent_dims()).flatmap(
    lambda shape: _gaussian_case(*shape)
)


@st.composite
def channel_cases(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Logits, log-weights, soft counts, labels and a channel permutation of matching shapes."""
    batch, count, classes = (
        draw(strategies.batch_sizes()),
        draw(strategies.num_components()),
        draw(strategies.num_classes()),
    )
    return {
        "logits": draw(strategies.logits(batch, count)),
        "weight_logits": draw(strategies.float_arrays((count,), -3.0, 3.0)),
        "counts": draw(strategies.float_arrays((count, classes), 0.0, 50.0)),
        "alpha0": draw(st.floats(1e-3, 2.0)),
        "labels": draw(strategies.labels(batch, classes, unlabeled=False)),
        "permutation": draw(strategies.channel_permutations(count)),
    }


@PROPERTY
@given(GAUSSIAN_CASES)
def test_gaussian_kl_is_finite_and_nonnegative(case: dict[str, np.ndarray]) -> None:
    kl = np.asarray(gaussian_kl(case["mean"], case["log_var"], case["prior_mean"]))
    assert kl.shape == case["mean"].shape[:1]
    assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-5)


@PROPERTY
@given(GAUSSIAN_CASES)
def test_gaussian_kl_is_zero_when_q_equals_p(case: dict[str, np.ndarray]) -> None:
    kl = gaussian_kl(case["prior_mean"], np.zeros_like(case["log_var"]), case["prior_mean"])
    np.testing.assert_allclose(kl, 0.0, atol=1e-6)


@PROPERTY
@given(
    st.sampled_from((16, 1024)).flatmap(
        lambda samples: st.tuples(st.just(samples), _gaussian_case(3, 2), strategies.seeds())
    )
)
def test_monte_carlo_kl_agrees_with_the_analytic_kl_within_a_tolerance_shrinking_with_samples(
    case: tuple[int, dict[str, np.ndarray], int],
) -> None:
    samples, gaussian, seed = case
    mean, log_var, prior_mean = gaussian["mean"], gaussian["log_var"], gaussian["prior_mean"]
    noise = jax.random.normal(jax.random.PRNGKey(seed), (samples, *mean.shape))
    z = mean + np.exp(0.5 * log_var) * noise
    log_ratio = diagonal_gaussian_log_density(z, mean, log_var) - diagonal_gaussian_log_density(
        z, prior_mean, np.zeros_like(log_var)
    )
    estimate, spread = jnp.mean(log_ratio, axis=0), jnp.std(log_ratio, axis=0)
    tolerance = 6.0 * spread / np.sqrt(samples) + 1e-3
    assert np.all(np.abs(estimate - gaussian_kl(mean, log_var, prior_mean)) <= tolerance)


@PROPERTY
@given(channel_cases())
def test_categorical_kl_is_nonnegative_and_zero_at_the_weights(case: dict[str, np.ndarray]) -> None:
    log_weights = jax.nn.log_softmax(case["weight_logits"])
    assert np.all(np.asarray(categorical_kl(case["logits"], log_weights)) >= -1e-5)
    at_prior = categorical_kl(np.broadcast_to(log_weights + 1.5, case["logits"].shape), log_weights)
    np.testing.assert_allclose(at_prior, 0.0, atol=1e-5)


@PROPERTY
@given(channel_cases())
def test_responsibilities_are_distributions(case: dict[str, np.ndarray]) -> None:
    responsibilities = np.asarray(jax.nn.softmax(case["logits"], axis=-1))
    assert np.all(responsibilities >= 0)
    np.testing.assert_allclose(responsibilities.sum(-1), 1.0, atol=1e-5)


@PROPERTY
@given(channel_cases())
def test_tau_rows_are_distributions(case: dict[str, np.ndarray]) -> None:
    tau = np.asarray(tau_from_counts(case["counts"], case["alpha0"]))
    assert np.all(tau >= 0)
    np.testing.assert_allclose(tau.sum(-1), 1.0, atol=1e-5)


@PROPERTY
@given(channel_cases())
def test_label_probabilities_sum_to_one(case: dict[str, np.ndarray]) -> None:
    tau = tau_from_counts(case["counts"], case["alpha0"])
    probabilities = np.asarray(tau_probabilities(jax.nn.softmax(case["logits"]), tau))
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


@PROPERTY
@given(channel_cases())
def test_supervised_loss_passes_no_gradient_into_tau_or_counts(case: dict[str, np.ndarray]) -> None:
    responsibilities = jax.nn.softmax(case["logits"])

    def loss(counts: jax.Array) -> jax.Array:
        tau = tau_from_counts(counts, case["alpha0"])
        return jnp.sum(tau_supervised_loss(responsibilities, tau, case["labels"]))

    assert not np.any(np.asarray(jax.grad(loss)(jnp.asarray(case["counts"]))))


@PROPERTY
@given(channel_cases())
def test_permuting_channels_leaves_tau_predictions_and_loss_unchanged(
    case: dict[str, np.ndarray],
) -> None:
    permutation = case["permutation"]
    responsibilities = jax.nn.softmax(case["logits"])
    tau = tau_from_counts(case["counts"], case["alpha0"])
    permuted_r, permuted_tau = responsibilities[:, permutation], tau[permutation]
    np.testing.assert_allclose(
        tau_probabilities(permuted_r, permuted_tau),
        tau_probabilities(responsibilities, tau),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        tau_supervised_loss(permuted_r, permuted_tau, case["labels"]),
        tau_supervised_loss(responsibilities, tau, case["labels"]),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        entropy(jnp.mean(permuted_r, axis=0)),
        entropy(jnp.mean(responsibilities, axis=0)),
        rtol=1e-5,
        atol=1e-6,
    )


@PROPERTY
@given(channel_cases())
def test_entropy_lies_between_zero_and_log_k(case: dict[str, np.ndarray]) -> None:
    values = np.asarray(entropy(jax.nn.softmax(case["logits"])))
    assert np.all(values >= -1e-6) and np.all(values <= np.log(case["logits"].shape[-1]) + 1e-5)


@PROPERTY
@given(
    strategies.float_arrays((8,), -1e4, 1e4),
    st.floats(1e-3, 1.0).flatmap(lambda low: st.tuples(st.just(low), st.floats(low * 1.01, 10.0))),
)
def test_heteroscedastic_sigma_lies_within_its_bounds(
    scale_raw: np.ndarray, bounds: tuple[float, float]
) -> None:
    sigma_min, sigma_max = bounds
    sigma = np.asarray(heteroscedastic_sigma(scale_raw, sigma_min, sigma_max))
    assert np.all(sigma >= np.float32(sigma_min)) and np.all(sigma <= np.float32(sigma_max))
