"""The flow prior: its KL against closed forms, its density, π, the kit, a short digits fit."""

from __future__ import annotations

import importlib.metadata
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
import pytest
from flowjax.bijections import Affine
from ssvae_flow import FlowPrior, masked_autoregressive_bijection, plugin

from ssvae_core import ConfigError, Registry, SSVAEClassifier, config_from_dict, default_registry
from ssvae_core.plugin import EncoderOutput, uniform_log_weights
from ssvae_core.testing import check_prior

LATENT_DIM = 2  # one latent size throughout: each size compiles the flow's construction
K = 4
BATCH = 5
KL_SAMPLES = 1 << 14


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, plugins=[("ssvae_flow", plugin)])


def _bijection(latent_dim: int = LATENT_DIM, seed: int = 0, **options: object):
    settings = {"depth": 2, "width": 16, **options}
    return masked_autoregressive_bijection(latent_dim, key=jax.random.PRNGKey(seed), **settings)


def _means(latent_dim: int = LATENT_DIM) -> np.ndarray:
    return np.random.default_rng(1).normal(0.0, 1.0, (K, latent_dim)).astype(np.float32)


def _randomised(prior: FlowPrior, scale: float = 0.4) -> FlowPrior:
    """The prior with every flow array redrawn, so that the flow is far from a permutation."""
    params, static = eqx.partition(prior.bijection, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(2)
    drawn = [jnp.asarray(rng.normal(0.0, scale, leaf.shape), leaf.dtype) for leaf in leaves]
    bijection = eqx.combine(jax.tree.unflatten(treedef, drawn), static)
    return eqx.tree_at(lambda p: p.bijection, prior, bijection)


def _posterior() -> EncoderOutput:
    rng = np.random.default_rng(3)
    return EncoderOutput(
        z_mean=jnp.asarray(rng.normal(0.0, 1.5, (BATCH, LATENT_DIM)), jnp.float32),
        z_log_var=jnp.asarray(rng.uniform(-1.5, 0.5, (BATCH, LATENT_DIM)), jnp.float32),
        logits=jnp.asarray(rng.normal(0.0, 1.0, (BATCH, K)), jnp.float32),
    )


@eqx.filter_jit
def _channel_kl(prior: FlowPrior, posterior: EncoderOutput, seed: int) -> jax.Array:
    return prior.channel_kl(posterior, encoder=None, key=jax.random.PRNGKey(seed))


def _gaussian_kl(
    mean: np.ndarray, log_var: np.ndarray, loc: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """``KL(N(mean, diag e^log_var) || N(loc_c, diag scale_c²))`` for every row and channel."""
    mean, log_var = mean[:, None, :], log_var[:, None, :]
    variance = scale**2
    terms = np.log(variance) - log_var + (np.exp(log_var) + (mean - loc) ** 2) / variance - 1.0
    return 0.5 * terms.sum(-1)


def test_the_flow_starts_as_a_permutation_of_the_coordinates() -> None:
    bijection = _bijection(seed=5)
    u = np.random.default_rng(0).normal(0.0, 3.0, (6, LATENT_DIM)).astype(np.float32)
    prior = FlowPrior(np.zeros((K, LATENT_DIM)), bijection)
    base, log_det = prior.to_base(jnp.asarray(u))
    np.testing.assert_array_equal(np.sort(np.asarray(base), axis=1), np.sort(u, axis=1))
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_kl_of_the_initial_flow_is_the_gaussian_kl_to_the_permuted_means() -> None:
    # Each layer's map starts as the identity, so p(z|c) = N(P μ_c, I) for the flow's
    # permutation P, and KL(q(z|x) || p(z|c)) is the Gaussian KL.
    means = _means()
    prior = FlowPrior(means, _bijection(), num_samples=KL_SAMPLES)
    posterior = _posterior()
    permuted = np.asarray(jax.vmap(paramax.unwrap(prior.bijection).transform)(jnp.asarray(means)))
    exact = _gaussian_kl(
        np.asarray(posterior.z_mean), np.asarray(posterior.z_log_var), permuted, np.ones(LATENT_DIM)
    )
    estimate = np.asarray(_channel_kl(prior, posterior, 0))
    assert estimate.shape == (BATCH, K)
    np.testing.assert_allclose(estimate, exact, rtol=0.02, atol=0.05)


def test_kl_through_an_affine_flow_is_the_gaussian_kl() -> None:
    # T(u) = a ⊙ u + b makes p(z|c) = N(a ⊙ μ_c + b, diag a²): the log-determinant counts.
    loc, scale = np.array([0.5, -1.0]), np.array([0.5, 2.0])
    means = _means()
    prior = FlowPrior(means, Affine(loc, scale), num_samples=KL_SAMPLES)
    posterior = _posterior()
    exact = _gaussian_kl(
        np.asarray(posterior.z_mean), np.asarray(posterior.z_log_var), scale * means + loc, scale
    )
    np.testing.assert_allclose(
        np.asarray(_channel_kl(prior, posterior, 1)), exact, rtol=0.02, atol=0.05
    )


def test_kl_estimate_draws_from_the_key_only() -> None:
    prior, posterior = FlowPrior(_means(), _bijection(), num_samples=2), _posterior()
    first, again, other = (np.asarray(_channel_kl(prior, posterior, s)) for s in (7, 7, 8))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@eqx.filter_jit
def _samples(prior: FlowPrior) -> tuple[jax.Array, jax.Array]:
    return prior.sample(20_000, encoder=None, key=jax.random.PRNGKey(0))


@eqx.filter_jit
def _log_density(prior: FlowPrior, z: jax.Array) -> jax.Array:
    return prior.log_density(z)


@pytest.mark.parametrize("transformer", ["affine", "spline"])
def test_density_of_a_trained_looking_flow_integrates_to_one_and_matches_its_samples(
    transformer: str,
) -> None:
    # log p(z) = logsumexp_c(log π_c + log N(T⁻¹(z); μ_c, I) + log |det J_T⁻¹(z)|) of a flow
    # far from its initial permutation: a wrong sign of the log-determinant fails here.
    prior = FlowPrior(
        _means(),
        _bijection(transformer=transformer, interval=3.0),
        learn_pi=True,
        pi_logits=np.array([0.5, 0.0, -0.5, 1.0]),
    )
    prior = _randomised(prior, scale=0.2)
    z, channels = (np.asarray(a) for a in _samples(prior))
    z = z.astype(np.float64)
    low, high = z.min(0) - 1.0, z.max(0) + 1.0
    axes = [np.linspace(low[d], high[d], 201) for d in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = np.asarray(_log_density(prior, jnp.asarray(grid, jnp.float32)), np.float64)
    density = np.exp(log_p) * (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    assert abs(density.sum() - 1.0) < 0.01
    mean = (density[:, None] * grid).sum(0)
    np.testing.assert_allclose(mean, z.mean(0), atol=0.03 * z.std(0).max())
    np.testing.assert_allclose((density[:, None] * (grid - mean) ** 2).sum(0), z.var(0), rtol=0.05)
    frequencies = np.bincount(channels, minlength=K) / len(channels)
    np.testing.assert_allclose(frequencies, np.exp(prior.log_weights()), atol=0.015)


def test_gradients_reach_the_means_and_the_flow_from_the_first_step() -> None:
    prior, posterior = FlowPrior(_means(), _bijection(), num_samples=4), _posterior()

    @eqx.filter_jit
    @eqx.filter_grad
    def gradient(prior: FlowPrior) -> jax.Array:
        terms = prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=jax.random.PRNGKey(0))
        return jnp.sum(terms["kl_z"])

    grads = gradient(prior)
    assert np.all(np.abs(np.asarray(grads.means)) > 0)
    # The conditioners' output layers start at zero, so they take the first gradient.
    flow = [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(eqx.filter(grads.bijection, eqx.is_inexact_array))
    ]
    assert flow and all(np.all(np.isfinite(leaf)) for leaf in flow)
    assert sum(int(np.any(leaf != 0)) for leaf in flow) >= 2


def test_fixed_and_learned_pi() -> None:
    fixed = FlowPrior(_means(), _bijection(), flow_lr_scale=0.5)
    assert fixed.pi_logits is None and fixed.regularisers() == {}
    assert fixed.parameter_scales() == {"bijection": 0.5}
    np.testing.assert_array_equal(fixed.log_weights(), uniform_log_weights(K))
    logits = np.array([1.5, -0.5, 0.0, -2.0], np.float32)
    learned = FlowPrior(
        _means(), _bijection(), learn_pi=True, dirichlet_alpha=3.0, pi_logits=logits
    )
    log_pi = np.asarray(jax.nn.log_softmax(logits), np.float64)
    np.testing.assert_allclose(learned.log_weights(), log_pi, atol=1e-6)
    np.testing.assert_allclose(
        float(learned.regularisers()["dirichlet_pi"]), -2.0 * log_pi.sum(), rtol=1e-6
    )
    with pytest.raises(ValueError, match="learn_pi is False"):
        FlowPrior(_means(), _bijection(), pi_logits=logits)
    with pytest.raises(ValueError, match=r"bijection of shape \(3,\), got shape \(2,\)"):
        FlowPrior(_means(3), _bijection())


def test_invalid_options_are_config_errors(registry: Registry) -> None:
    def config(**options: object) -> object:
        return config_from_dict({"prior": {"name": "flow", **options}}, registry)

    with pytest.raises(ConfigError, match=re.escape("prior.depth must be an integer >= 1, got 0")):
        config(depth=0)
    with pytest.raises(ConfigError, match=re.escape("prior.transformer must be one of")):
        config(transformer="planar")
    with pytest.raises(ConfigError, match=re.escape("prior.flow_lr_scale must be a number >= 0")):
        config(flow_lr_scale=-1.0)


def test_learned_pi_variant_passes_the_conformance_kit(registry: Registry) -> None:
    # The property suite checks the default options (a fixed π); this is the learned one.
    # The checks that involve π run; those of KL_z alone, which learn_pi leaves as it is
    # (π starts uniform), are left to the property suite.
    component = registry.get("prior", "flow")
    options = component.factory.options(learn_pi=True, depth=2, width=16, num_components=5)
    report = check_prior(
        component,
        options,
        latent_dim=LATENT_DIM,
        max_examples=3,
        skip=(
            "signatures",
            "kl_terms_per_example_finite",
            "exact_kl_nonnegative",
            "monte_carlo_kl_converges",
            "per_example_independence",
            "jit_matches_eager",
            "repeat_calls_identical",
            "samples_match_kl_density",
            "monte_carlo_draws_from_key",
            "kl_gradients",
            "every_option_has_an_effect",
        ),
    )
    assert report["fixed_weights_stay_fixed"].startswith("not applicable")
    assert report["options_honoured"] == "passed (checked num_components, flow_lr_scale, learn_pi)"
    assert (
        report["channel_permutation"]
        == "passed (every term, with the channel-indexed fields permuted)"
    )
    for check in (
        "attributes",
        "samples_follow_prior",
        "regularisers_finite",
        "parameter_scales_honoured",
        "trains_one_step",
    ):
        assert report[check].startswith("passed"), (check, report[check])


@eqx.filter_jit
def _terms_and_gradient(prior: FlowPrior, posterior: EncoderOutput) -> tuple[dict, FlowPrior]:
    def total(prior: FlowPrior) -> tuple[jax.Array, dict]:
        terms = prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=jax.random.PRNGKey(0))
        return jnp.sum(terms["kl_z"] + terms["kl_c"]), terms

    return eqx.filter_grad(total, has_aux=True)(prior)[::-1]


def test_spline_flow_is_finite_at_the_edges_of_the_domain() -> None:
    # Latents far outside the splines' interval, where each spline is the identity.
    prior = _randomised(
        FlowPrior(_means(), _bijection(transformer="spline", interval=3.0), num_samples=2), 0.2
    )
    rng = np.random.default_rng(4)
    posterior = EncoderOutput(
        z_mean=jnp.asarray(
            rng.choice([-100.0, -3.0, 0.0, 3.0, 100.0], (BATCH, LATENT_DIM)), jnp.float32
        ),
        z_log_var=jnp.asarray(rng.choice([-20.0, 0.0, 10.0], (BATCH, LATENT_DIM)), jnp.float32),
        logits=jnp.asarray(rng.choice([-60.0, 0.0, 60.0], (BATCH, K)), jnp.float32),
    )
    terms, grads = _terms_and_gradient(prior, posterior)
    for value in terms.values():
        assert value.shape == (BATCH,) and np.all(np.isfinite(np.asarray(value)))
    assert all(
        np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(eqx.filter(grads, eqx.is_array))
    )


@pytest.fixture(scope="module")
def digits_fit(registry: Registry) -> tuple[SSVAEClassifier, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, labels = digits.images.astype(np.float32) / 16.0, digits.target
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[: len(x) // 5], order[len(x) // 5 :]
    labeled = np.concatenate([train[labels[train] == c][:10] for c in range(10)])
    y = np.full(len(x), -1)
    y[labeled] = labels[labeled]
    config = config_from_dict(
        {
            "seed": 0,
            "model": {"latent_dim": 8},
            "prior": {"name": "flow", "num_components": 10, "depth": 2, "width": 32},
            "encoder": {"hidden": [64]},
            "decoder": {"hidden": [64]},
            "loss": {"consistency": {"weight": 0.0}, "graph_label": {"weight": 0.0}},
            "train": {"steps": 300, "batch_size": 64, "log_every": 100, "fuse_steps": True},
        },
        registry,
    )
    classifier = SSVAEClassifier(config, registry=registry)
    classifier.fit(x[train], y[train], num_classes=10)
    return classifier, x[test], labels[test]


def test_trains_on_digits_and_classifies_above_chance(digits_fit) -> None:
    classifier, x_test, y_test = digits_fit
    assert classifier.config.model.conditioning != "none"
    assert classifier.config.head.name == "tau"
    assert all(np.isfinite(row["kl_z"]) for row in classifier.history)
    accuracy = float(np.mean(classifier.predict(x_test) == y_test))
    assert accuracy > 0.4, accuracy  # chance is 0.1


def test_checkpoint_roundtrip_restores_the_flow(digits_fit, registry: Registry, tmp_path) -> None:
    classifier, x_test, _ = digits_fit
    path = tmp_path / "flow.ckpt"
    classifier.save(path)
    loaded = SSVAEClassifier.load(path, registry=registry)
    for saved, restored in zip(
        jax.tree.leaves(eqx.filter(classifier.model.prior, eqx.is_array)),
        jax.tree.leaves(eqx.filter(loaded.model.prior, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    x = x_test[:64]
    np.testing.assert_allclose(loaded.predict_proba(x), classifier.predict_proba(x), atol=1e-6)


def test_entry_point_registers_flow() -> None:
    try:
        importlib.metadata.version("ssvae-flow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ssvae-flow is not installed")
    assert default_registry().get("prior", "flow").package == "ssvae-flow"
