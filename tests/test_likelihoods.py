"""Observation models: NLLs against hand-written formulas, and the bounded σ."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.modelling.likelihoods import (
    Bernoulli,
    Gaussian,
    HeteroscedasticGaussian,
    heteroscedastic_sigma,
    make_likelihood,
)
from ssvae_core.modelling.types import DecoderOutput

X = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
LOC = np.array([[-1.0, 2.0], [0.5, 0.0]], dtype=np.float32)


def _output(loc: np.ndarray, scale_raw: np.ndarray | None = None) -> DecoderOutput:
    return DecoderOutput(
        loc=jnp.asarray(loc), scale_raw=None if scale_raw is None else jnp.asarray(scale_raw)
    )


def test_bernoulli_nll_equals_binary_cross_entropy() -> None:
    p = 1.0 / (1.0 + np.exp(-LOC.astype(np.float64)))
    expected = -np.sum(X * np.log(p) + (1.0 - X) * np.log(1.0 - p))
    assert float(Bernoulli().nll(jnp.asarray(X), _output(LOC))) == pytest.approx(expected, rel=1e-5)


def test_bernoulli_nll_is_finite_for_extreme_logits() -> None:
    loc = np.array([[-1e4, 1e4], [1e4, -1e4]], dtype=np.float32)
    x = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    assert np.isfinite(float(Bernoulli().nll(jnp.asarray(x), _output(loc))))


def test_bernoulli_mean_is_sigmoid_of_logits() -> None:
    expected = 1.0 / (1.0 + np.exp(-LOC))
    np.testing.assert_allclose(np.asarray(Bernoulli().mean(_output(LOC))), expected, rtol=1e-6)


def test_gaussian_fixed_sigma_nll_is_scaled_squared_error() -> None:
    sigma = 0.5
    expected = np.sum((X - LOC) ** 2) / (2 * sigma**2)
    nll = Gaussian(sigma=sigma).nll(jnp.asarray(X), _output(LOC))
    assert float(nll) == pytest.approx(expected, rel=1e-6)


def test_gaussian_mean_is_loc() -> None:
    np.testing.assert_array_equal(np.asarray(Gaussian(sigma=0.1).mean(_output(LOC))), LOC)


@pytest.mark.parametrize("raw", [-1e6, -50.0, 0.0, 50.0, 1e6])
def test_heteroscedastic_sigma_stays_within_bounds(raw: float) -> None:
    sigma = float(heteroscedastic_sigma(jnp.asarray(raw), 0.05, 0.5))
    assert 0.05 <= sigma <= 0.5


def test_heteroscedastic_sigma_hits_each_bound_at_the_extremes() -> None:
    sigma = heteroscedastic_sigma(jnp.array([-1e6, 1e6]), 0.05, 0.5)
    np.testing.assert_allclose(np.asarray(sigma), [0.05, 0.5], rtol=1e-6)


def test_heteroscedastic_sigma_is_min_plus_softplus_inside_the_range() -> None:
    # softplus(0) = log 2 ≈ 0.693, so σ = 0.05 + log 2 with σ_max = 1.
    assert float(heteroscedastic_sigma(jnp.asarray(0.0), 0.05, 1.0)) == pytest.approx(
        0.05 + np.log(2.0), rel=1e-6
    )


def test_heteroscedastic_per_image_nll_matches_hand_value() -> None:
    raw = np.array([0.3], dtype=np.float32)
    sigma = 0.05 + np.log1p(np.exp(0.3))  # inside [0.05, 1.0]
    expected = np.sum((X - LOC) ** 2) / (2 * sigma**2) + X.size * np.log(sigma)
    likelihood = HeteroscedasticGaussian(sigma_min=0.05, sigma_max=1.0, per_pixel=False)
    assert float(likelihood.nll(jnp.asarray(X), _output(LOC, raw))) == pytest.approx(
        expected, rel=1e-5
    )


def test_heteroscedastic_per_pixel_nll_uses_one_sigma_per_pixel() -> None:
    raw = np.array([-2.0, -1.0, 0.0, 0.5], dtype=np.float32)
    sigma = np.clip(0.05 + np.log1p(np.exp(raw.astype(np.float64))), 0.05, 0.5)
    squared = (X.reshape(-1) - LOC.reshape(-1)) ** 2
    expected = np.sum(squared / (2 * sigma**2) + np.log(sigma))
    likelihood = HeteroscedasticGaussian(sigma_min=0.05, sigma_max=0.5, per_pixel=True)
    assert float(likelihood.nll(jnp.asarray(X), _output(LOC, raw))) == pytest.approx(
        expected, rel=1e-5
    )


def test_heteroscedastic_nll_is_finite_for_extreme_raw_scale() -> None:
    likelihood = HeteroscedasticGaussian(sigma_min=0.05, sigma_max=0.5, per_pixel=False)
    for raw in (-1e6, 1e6):
        nll = likelihood.nll(jnp.asarray(X), _output(LOC, np.array([raw], dtype=np.float32)))
        assert np.isfinite(float(nll))


@pytest.mark.parametrize(
    ("likelihood", "expected"),
    [
        (Bernoulli(), 0),
        (Gaussian(sigma=0.1), 0),
        (HeteroscedasticGaussian(sigma_min=0.05, sigma_max=0.5, per_pixel=False), 1),
        (HeteroscedasticGaussian(sigma_min=0.05, sigma_max=0.5, per_pixel=True), 16),
    ],
)
def test_scale_size_is_what_each_likelihood_needs(likelihood, expected: int) -> None:
    assert likelihood.scale_size(16) == expected


def test_make_likelihood_builds_each_named_likelihood() -> None:
    assert isinstance(make_likelihood("bernoulli"), Bernoulli)
    assert make_likelihood("gaussian", sigma=0.3) == Gaussian(sigma=0.3)
    built = make_likelihood("heteroscedastic", sigma_min=0.1, sigma_max=0.2, per_pixel=True)
    assert built == HeteroscedasticGaussian(sigma_min=0.1, sigma_max=0.2, per_pixel=True)


def test_make_likelihood_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        make_likelihood("poisson")
