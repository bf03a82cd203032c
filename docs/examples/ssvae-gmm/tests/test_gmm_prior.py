"""The Gaussian mixture prior: its KL against the textbook formula, the conformance kit,
and a short training run whose learned means and variances are read back."""

from __future__ import annotations

from importlib.metadata import version

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ssvae_gmm import GaussianMixturePrior, GMMOptions

from ssvae_core import SSVAEClassifier, default_registry, load_config
from ssvae_core.plugin import AbstractChannelPrior, EncoderOutput
from ssvae_core.testing import check_prior


def test_the_gmm_prior_is_registered_by_its_entry_point() -> None:
    component = default_registry().get("prior", "gmm")
    assert (component.package, component.version) == ("ssvae-gmm", version("ssvae-gmm"))
    assert component.factory.options is GMMOptions


def test_the_gmm_prior_passes_the_conformance_kit() -> None:
    report = check_prior("gmm")
    # p(z|c) is a diagonal Gaussian, so every exact term must vanish when q equals it.
    assert report["exact_kl_zero_at_prior"].startswith("passed")
    assert "not a diagonal Gaussian" not in report["exact_kl_zero_at_prior"]
    assert report["channel_permutation"].startswith("passed (every term")
    assert report["parameter_scales_honoured"] == "passed"


def _prior(key: jax.Array, count: int = 4, dim: int = 3) -> GaussianMixturePrior:
    mean_key, var_key = jax.random.split(key)
    means = jax.random.normal(mean_key, (count, dim))
    log_vars = 0.7 * jax.random.normal(var_key, (count, dim))
    return GaussianMixturePrior(count, means, log_vars, 1.0)


def test_channel_kl_is_the_textbook_gaussian_kl() -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    prior = _prior(keys[0])
    posterior = EncoderOutput(
        z_mean=jax.random.normal(keys[1], (5, 3)),
        z_log_var=0.5 * jax.random.normal(keys[2], (5, 3)),
        logits=jax.random.normal(keys[3], (5, 4)),
    )
    actual = prior.channel_kl(posterior, encoder=None, key=keys[0])
    m, s2 = np.asarray(posterior.z_mean)[:, None], np.exp(np.asarray(posterior.z_log_var))[:, None]
    mu, v = np.asarray(prior.means)[None], np.exp(np.asarray(prior.log_vars))[None]
    expected = 0.5 * np.sum(np.log(v / s2) + (s2 + (m - mu) ** 2) / v - 1.0, axis=-1)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5)
    assert type(prior).kl_terms is AbstractChannelPrior.kl_terms


def test_kl_z_vanishes_when_q_is_a_channel() -> None:
    prior = _prior(jax.random.PRNGKey(1))
    posterior = EncoderOutput(
        z_mean=prior.means[2:3], z_log_var=prior.log_vars[2:3], logits=jnp.zeros((1, 4))
    )
    kl = prior.channel_kl(posterior, encoder=None, key=jax.random.PRNGKey(0))
    assert float(kl[0, 2]) == pytest.approx(0.0, abs=1e-6)
    assert float(jnp.min(jnp.delete(kl[0], 2))) > 0.1


def test_samples_have_each_channels_mean_and_variance() -> None:
    prior = _prior(jax.random.PRNGKey(2), count=2, dim=2)
    z, c = prior.sample(40_000, encoder=None, key=jax.random.PRNGKey(3))
    for channel in range(2):
        rows = np.asarray(z)[np.asarray(c) == channel]
        np.testing.assert_allclose(rows.mean(0), prior.means[channel], atol=0.05)
        np.testing.assert_allclose(rows.var(0), np.exp(prior.log_vars[channel]), rtol=0.05)


def test_training_moves_means_and_variances_that_the_classifier_exposes() -> None:
    config = load_config(overrides=["prior.name='gmm'", "train.steps=20", "train.batch_size=32"])
    x = np.random.default_rng(0).random((64, 8, 8)).astype(np.float32)
    y = np.tile(np.arange(4), 16)
    y[8:] = -1
    classifier = SSVAEClassifier(config).fit(x, y)
    prior = classifier.model.prior
    assert isinstance(prior, GaussianMixturePrior)
    assert prior.means.shape == (10, config.model.latent_dim)
    assert float(jnp.max(jnp.abs(prior.means))) > 0.0  # they start at the origin
    assert float(jnp.max(jnp.abs(prior.log_vars))) > 0.0  # and at σ_c² = 1
