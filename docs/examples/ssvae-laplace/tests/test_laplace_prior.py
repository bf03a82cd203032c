"""The Laplace prior: its closed-form KL, and the ssvae conformance kit over it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ssvae_laplace
from ssvae_laplace import LaplaceMixturePrior, gaussian_laplace_kl, laplace_log_density
from ssvae_laplace.plugin import LaplaceOptions

from ssvae_core import default_registry
from ssvae_core.plugin import (
    AbstractChannelPrior,
    EncoderOutput,
    categorical_kl,
    diagonal_gaussian_log_density,
)
from ssvae_core.testing import check_prior


def test_the_laplace_prior_is_registered_by_its_entry_point() -> None:
    component = default_registry().get("prior", "laplace")
    assert (component.package, component.version) == ("ssvae-laplace", ssvae_laplace.__version__)


def test_the_laplace_prior_passes_the_conformance_kit() -> None:
    report = check_prior("laplace")
    # A Gaussian q(z|x) never equals a Laplace p(z|c), so only kl_c can reach 0.
    assert "not a diagonal Gaussian" in report["exact_kl_zero_at_prior"]
    assert report["channel_permutation"].startswith("passed (every term")
    assert report["parameter_scales_honoured"] == "passed"


def test_the_monte_carlo_estimator_passes_the_conformance_kit() -> None:
    report = check_prior("laplace", LaplaceOptions(kl_estimator="monte_carlo", num_samples=1))
    assert report["monte_carlo_kl_converges"] == "passed (Monte-Carlo terms: kl_z)"


@pytest.mark.parametrize("offset", [0.0, 0.7, -2.5])
@pytest.mark.parametrize("log_var", [-2.0, 0.0, 1.0])
def test_closed_form_kl_agrees_with_a_monte_carlo_estimate(offset: float, log_var: float) -> None:
    samples = 200_000
    mean, location, scale = jnp.array([offset, 0.3]), jnp.array([0.0, -0.4]), 0.8
    log_vars = jnp.full((2,), log_var)
    z = mean + jnp.exp(0.5 * log_vars) * jax.random.normal(jax.random.PRNGKey(0), (samples, 2))
    log_ratio = diagonal_gaussian_log_density(z, mean, log_vars) - laplace_log_density(
        z, location, scale
    )
    tolerance = 5.0 * float(jnp.std(log_ratio)) / np.sqrt(samples)
    assert (
        abs(float(jnp.mean(log_ratio) - gaussian_laplace_kl(mean, log_vars, location, scale)))
        < tolerance
    )


def test_closed_form_kl_is_smallest_at_the_matching_spread() -> None:
    scale = 0.8
    log_var = 2.0 * np.log(scale * np.sqrt(np.pi / 2.0))  # s = b √(π/2)
    kl = gaussian_laplace_kl(jnp.zeros(1), jnp.full((1,), log_var), jnp.zeros(1), scale)
    np.testing.assert_allclose(kl, np.log(2.0) + 0.5 - np.log(np.pi), rtol=1e-5)


def _kl_terms_by_hand(
    prior: LaplaceMixturePrior, posterior: EncoderOutput, key: jax.Array
) -> dict[str, jax.Array]:
    """``Σ_c r_c KL(q(z|x) || p(z|c))`` and ``KL(q(c|x) || π)``, written out in full."""
    mean, log_var = posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :]
    if prior.kl_estimator == "analytic":
        per_channel = gaussian_laplace_kl(mean, log_var, prior.locations, prior.scale)
    else:
        noise = jax.random.normal(key, (prior.num_samples, *posterior.z_mean.shape))
        samples = (posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise)[:, :, None, :]
        log_q = diagonal_gaussian_log_density(samples, mean, log_var)
        per_channel = jnp.mean(log_q - laplace_log_density(samples, prior.locations, prior.scale), axis=0)
    responsibilities = jax.nn.softmax(posterior.logits, axis=-1)
    return {
        "kl_z": jnp.sum(responsibilities * per_channel, axis=-1),
        "kl_c": categorical_kl(posterior.logits, prior.log_weights()),
    }


@pytest.mark.parametrize("kl_estimator", ["analytic", "monte_carlo"])
def test_kl_terms_equal_the_hand_formula_bit_for_bit(kl_estimator: str) -> None:
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    prior = LaplaceMixturePrior(
        jax.random.normal(keys[0], (4, 3)), scale=0.8, kl_estimator=kl_estimator, num_samples=3
    )
    assert type(prior).kl_terms is AbstractChannelPrior.kl_terms
    posterior = EncoderOutput(
        z_mean=jax.random.normal(keys[1], (6, 3)),
        z_log_var=0.5 * jax.random.normal(keys[2], (6, 3)),
        logits=2.0 * jax.random.normal(keys[3], (6, 4)),
    )
    actual = prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=keys[4])
    expected = _kl_terms_by_hand(prior, posterior, keys[4])
    for name in ("kl_z", "kl_c"):
        np.testing.assert_array_equal(np.asarray(actual[name]), np.asarray(expected[name]))
