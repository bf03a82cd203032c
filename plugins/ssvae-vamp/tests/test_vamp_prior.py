"""The VampPrior: Monte-Carlo KL, pseudo-input init and learning rate, learnable π,
end-to-end training."""

from __future__ import annotations

import importlib.metadata
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ssvae_vamp import VampPrior, initial_pseudo_inputs, plugin

from ssvae_core import (
    ConfigError,
    Registry,
    SSVAEClassifier,
    build_model,
    config_from_dict,
    default_registry,
)
from ssvae_core.plugin import (
    AbstractChannelPrior,
    AbstractEncoder,
    EncoderOutput,
    categorical_kl,
    diagonal_gaussian_log_density,
    uniform_log_weights,
)
from ssvae_core.testing import check_prior, conformance_checks, prepare, run_check

INPUT_SHAPE = (4, 4)
LATENT_DIM = 3
K = 4
REFERENCE_SAMPLES = 1 << 14
NUM_KEYS = 16


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, plugins=[("ssvae_vamp", plugin)])


@pytest.fixture(scope="module")
def encoder(registry: Registry) -> AbstractEncoder:
    # The dense encoder of a built model: 16 hidden units, K channel logits.
    model, _ = build_model(
        _config(registry), input_shape=INPUT_SHAPE, num_classes=3, key=jax.random.PRNGKey(1)
    )
    return model.encoder


def _prior(
    num_samples: int, pseudo_inputs: np.ndarray | None = None, **options: object
) -> VampPrior:
    if pseudo_inputs is None:
        pseudo_inputs = initial_pseudo_inputs("random", K, INPUT_SHAPE, None, jax.random.PRNGKey(2))
    return VampPrior(pseudo_inputs, num_samples=num_samples, **options)


@eqx.filter_jit
def _encode(encoder: AbstractEncoder, x: jax.Array) -> EncoderOutput:
    return jax.vmap(encoder)(x)


def _posterior(encoder: AbstractEncoder) -> EncoderOutput:
    # A batch of K examples, the pseudo-inputs' shape, so both share one compiled encoder.
    x = jax.random.uniform(jax.random.PRNGKey(3), (K, *INPUT_SHAPE))
    return _encode(encoder, x)


@eqx.filter_jit
def _kl_terms_per_key(
    prior: VampPrior, encoder: AbstractEncoder, posterior: EncoderOutput, key: jax.Array
) -> dict[str, jax.Array]:
    keys = jax.random.split(key, NUM_KEYS)
    return jax.vmap(lambda k: prior.kl_terms(posterior, posterior.z_mean, encoder=encoder, key=k))(keys)


def _kl_terms(
    prior: VampPrior, encoder: AbstractEncoder, posterior: EncoderOutput, seed: int = 0
) -> dict[str, jax.Array]:
    """The KL terms for NUM_KEYS keys at once, shape ``(NUM_KEYS, B)`` (one compile per S)."""
    return _kl_terms_per_key(prior, encoder, posterior, jax.random.PRNGKey(seed))


def _config(registry: Registry, **prior_options: object):
    return config_from_dict(
        {
            "model": {"latent_dim": LATENT_DIM, "embedding_dim": 4},
            "prior": {"name": "vamp", "num_components": K, **prior_options},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 3, "batch_size": 8, "log_every": 3},
        },
        registry,
    )


def _synthetic(num: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(num) % 3
    x = np.clip(rng.normal(0.2 + 0.3 * y[:, None, None], 0.1, (num, *INPUT_SHAPE)), 0.0, 1.0)
    labels = np.where(np.arange(num) < 6, y, -1)
    return x.astype(np.float32), labels


def test_kl_terms_are_finite_per_example(encoder: AbstractEncoder) -> None:
    terms = _kl_terms(_prior(4), encoder, _posterior(encoder))
    assert set(terms) == {"kl_z", "kl_c"}
    for values in terms.values():
        assert values.shape == (NUM_KEYS, K)
        assert np.all(np.isfinite(values))
    assert np.all(terms["kl_c"] >= -1e-6)


def test_kl_c_is_zero_for_uniform_responsibilities(encoder: AbstractEncoder) -> None:
    posterior = _posterior(encoder)
    uniform = EncoderOutput(posterior.z_mean, posterior.z_log_var, jnp.zeros((K, K)))
    np.testing.assert_allclose(_kl_terms(_prior(4), encoder, uniform)["kl_c"], 0.0, atol=1e-6)


def _kl_terms_by_hand(
    prior: VampPrior, posterior: EncoderOutput, encoder: AbstractEncoder, key: jax.Array
) -> dict[str, jax.Array]:
    """The KL terms as they were written before ``AbstractChannelPrior`` took them over."""
    noise = jax.random.normal(key, (prior.num_samples, *posterior.z_mean.shape))
    samples = posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise
    log_q = diagonal_gaussian_log_density(samples, posterior.z_mean, posterior.z_log_var)
    log_p = prior.log_density(samples, encoder=encoder)
    return {
        "kl_z": jnp.mean(log_q - log_p, axis=0),
        "kl_c": categorical_kl(posterior.logits, prior.log_weights()),
    }


def test_kl_terms_of_the_channel_prior_base_equal_the_hand_formula_bit_for_bit(
    encoder: AbstractEncoder,
) -> None:
    prior, posterior, key = _prior(3), _posterior(encoder), jax.random.PRNGKey(11)
    assert type(prior).kl_terms is AbstractChannelPrior.kl_terms
    assert prior.channel_kl(posterior, encoder=encoder, key=key).shape == (K, 1)

    def terms(inputs: tuple, by_hand: bool) -> dict[str, jax.Array]:
        prior, posterior, encoder = inputs
        if by_hand:
            return _kl_terms_by_hand(prior, posterior, encoder, key)
        return prior.kl_terms(posterior, posterior.z_mean, encoder=encoder, key=key)

    @eqx.filter_grad
    def gradients(inputs: tuple, by_hand: bool) -> jax.Array:
        values = terms(inputs, by_hand)
        return jnp.sum(values["kl_z"]) + 0.5 * jnp.sum(values["kl_c"])

    # Values and gradients (pseudo-inputs, posterior, encoder), eagerly and compiled.
    for function in (terms, gradients):
        for transform in (lambda f: f, eqx.filter_jit):
            actual = transform(function)((prior, posterior, encoder), False)
            expected = transform(function)((prior, posterior, encoder), True)
            for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_different_keys_give_different_estimates(encoder: AbstractEncoder) -> None:
    posterior = _posterior(encoder)
    estimates = _kl_terms(_prior(4), encoder, posterior)["kl_z"]
    assert not np.allclose(estimates[0], estimates[1])
    np.testing.assert_array_equal(estimates, _kl_terms(_prior(4), encoder, posterior)["kl_z"])


def test_monte_carlo_error_shrinks_with_num_samples(encoder: AbstractEncoder) -> None:
    posterior = _posterior(encoder)
    reference = jnp.mean(_kl_terms(_prior(REFERENCE_SAMPLES), encoder, posterior, 99)["kl_z"], axis=0)

    def mean_error(num_samples: int) -> float:
        estimates = _kl_terms(_prior(num_samples), encoder, posterior)["kl_z"]
        return float(jnp.mean(jnp.abs(estimates - reference)))

    assert mean_error(256) < 0.5 * mean_error(4)


def test_matches_analytic_kl_when_all_pseudo_posteriors_coincide(encoder: AbstractEncoder) -> None:
    # Identical pseudo-inputs make p(z) the single Gaussian N(m, diag v) = q(z|u).
    pseudo_inputs = np.full((K, *INPUT_SHAPE), 0.3, dtype=np.float32)
    posterior = _posterior(encoder)
    target = _encode(encoder, pseudo_inputs)
    mean_q, log_var_q = np.asarray(posterior.z_mean), np.asarray(posterior.z_log_var)
    mean_p, log_var_p = np.asarray(target.z_mean[0]), np.asarray(target.z_log_var[0])
    analytic = 0.5 * np.sum(
        log_var_p - log_var_q + (np.exp(log_var_q) + (mean_q - mean_p) ** 2) / np.exp(log_var_p) - 1.0,
        axis=-1,
    )
    estimates = _kl_terms(_prior(REFERENCE_SAMPLES, pseudo_inputs), encoder, posterior)["kl_z"]
    np.testing.assert_allclose(jnp.mean(estimates, axis=0), analytic, atol=0.02, rtol=0.01)


def test_sample_picks_a_channel_then_its_pseudo_posterior(encoder: AbstractEncoder) -> None:
    prior = _prior(1)
    sample = eqx.filter_jit(lambda prior, encoder, key: prior.sample(64, encoder=encoder, key=key))
    z, channels = sample(prior, encoder, jax.random.PRNGKey(0))
    assert z.shape == (64, LATENT_DIM) and channels.shape == (64,)
    assert np.all((channels >= 0) & (channels < K))
    assert len(np.unique(channels)) > 1
    assert np.all(np.isfinite(z))


def test_random_init_draws_training_inputs() -> None:
    data = np.random.default_rng(0).random((20, *INPUT_SHAPE), dtype=np.float32)
    pseudo = initial_pseudo_inputs("random", K, INPUT_SHAPE, data, jax.random.PRNGKey(0))
    assert pseudo.shape == (K, *INPUT_SHAPE)
    rows = {row.tobytes() for row in data}
    assert all(p.tobytes() in rows for p in pseudo)
    assert len({p.tobytes() for p in pseudo}) == K
    again = initial_pseudo_inputs("random", K, INPUT_SHAPE, data, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(pseudo, again)


def test_kmeans_init_finds_cluster_centres_in_unit_range() -> None:
    rng = np.random.default_rng(0)
    levels = np.array([0.1, 0.4, 0.7, 0.95])
    data = levels[np.arange(80) % K][:, None, None] + rng.normal(0, 0.02, (80, *INPUT_SHAPE))
    pseudo = initial_pseudo_inputs("kmeans", K, INPUT_SHAPE, data, jax.random.PRNGKey(0))
    assert pseudo.shape == (K, *INPUT_SHAPE)
    assert pseudo.min() >= 0.0 and pseudo.max() <= 1.0
    np.testing.assert_allclose(np.sort(pseudo.mean(axis=(1, 2))), levels, atol=0.02)


def test_kmeans_init_needs_as_many_inputs_as_components() -> None:
    data = np.zeros((2, *INPUT_SHAPE))
    with pytest.raises(ValueError, match="at least num_components = 4"):
        initial_pseudo_inputs("kmeans", K, INPUT_SHAPE, data, jax.random.PRNGKey(0))


def test_init_without_data_is_deterministic_uniform_noise() -> None:
    pseudo = initial_pseudo_inputs("kmeans", K, INPUT_SHAPE, None, jax.random.PRNGKey(0))
    assert pseudo.shape == (K, *INPUT_SHAPE)
    assert pseudo.min() >= 0.0 and pseudo.max() < 1.0
    again = initial_pseudo_inputs("kmeans", K, INPUT_SHAPE, None, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(pseudo, again)


def test_init_rejects_data_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"sample shape \(5,\), expected \(4, 4\)"):
        initial_pseudo_inputs("random", K, INPUT_SHAPE, np.zeros((10, 5)), jax.random.PRNGKey(0))


def test_invalid_options_are_config_errors(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=re.escape("prior.num_components must be an integer >= 2, got 1")):
        _config(registry, num_components=1)
    with pytest.raises(ConfigError, match=re.escape("prior.pseudo_lr_scale must be a number > 0")):
        _config(registry, pseudo_lr_scale=0.0)
    with pytest.raises(ConfigError, match=re.escape("prior.dirichlet_alpha must be a number > 0")):
        _config(registry, learn_pi=True, dirichlet_alpha=0.0)


def test_decoder_conditioning_on_channels_is_rejected_when_the_config_is_loaded(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=re.escape("model.conditioning must be 'none' or 'auto'")):
        config_from_dict({"prior": {"name": "vamp"}, "model": {"conditioning": "film"}}, registry)
    assert config_from_dict({"prior": {"name": "vamp"}}, registry).model.conditioning == "none"


def test_pseudo_lr_scale_multiplies_the_pseudo_input_update(registry: Registry) -> None:
    config = _config(registry, pseudo_lr_scale=0.25)
    model, _ = build_model(
        config, input_shape=INPUT_SHAPE, num_classes=3, key=jax.random.PRNGKey(0)
    )
    assert model.prior.parameter_scales() == {"pseudo_inputs": 0.25}
    # The kit's check: after one optimiser step the pseudo-inputs moved 0.25 times the
    # unscaled Adam update (the other parameters are not named, so they take the plain one).
    component = registry.get("prior", "vamp")
    subject = prepare(component, component.factory.options(pseudo_lr_scale=0.25))
    (entry,) = [e for e in conformance_checks("prior") if e.name == "parameter_scales_honoured"]
    assert run_check(subject, entry) in (None, "")


@pytest.fixture(scope="module")
def fitted(registry: Registry) -> tuple[SSVAEClassifier, np.ndarray]:
    x, y = _synthetic()
    classifier = SSVAEClassifier(_config(registry, num_samples=2), registry=registry)
    return classifier.fit(x, y, num_classes=3), x


def test_trains_end_to_end_with_tau_head_and_unconditioned_decoder(fitted) -> None:
    classifier, x = fitted
    assert classifier.config.model.conditioning == "none"
    assert classifier.config.head.name == "tau"
    assert classifier.model.embeddings is None
    probabilities = classifier.predict_proba(x)
    assert probabilities.shape == (len(x), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert all(np.isfinite(row["kl_z"]) for row in classifier.history)


def test_checkpoint_roundtrip_restores_pseudo_inputs(fitted, registry: Registry, tmp_path) -> None:
    classifier, x = fitted
    path = tmp_path / "vamp.ckpt"
    classifier.save(path)
    loaded = SSVAEClassifier.load(path, registry=registry)
    np.testing.assert_array_equal(loaded.model.prior.pseudo_inputs, classifier.model.prior.pseudo_inputs)
    np.testing.assert_allclose(loaded.predict_proba(x), classifier.predict_proba(x), atol=1e-6)


def test_entry_point_registers_vamp() -> None:
    try:
        importlib.metadata.version("ssvae-vamp")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ssvae-vamp is not installed")
    assert default_registry().get("prior", "vamp").package == "ssvae-vamp"


# Learnable π ----------------------------------------------------------------------------

PI_LOGITS = np.array([1.5, -0.5, 0.0, -2.0], dtype=np.float32)


def test_fixed_pi_holds_no_parameters_so_the_checkpoint_layout_is_unchanged() -> None:
    prior = _prior(1)
    assert prior.pi_logits is None
    # The prior's arrays are its pseudo-inputs alone, as before π could be learned, so a
    # checkpoint written then has the same leaves (and optimiser-state groups) as one now.
    assert [leaf.shape for leaf in jax.tree.leaves(prior)] == [(K, *INPUT_SHAPE)]
    assert prior.parameter_scales() == {"pseudo_inputs": 1.0}
    assert prior.regularisers() == {}
    np.testing.assert_array_equal(prior.log_weights(), uniform_log_weights(K))


def test_learned_pi_starts_uniform_and_is_softmax_of_its_logits() -> None:
    start = _prior(1, learn_pi=True)
    np.testing.assert_array_equal(start.pi_logits, np.zeros(K))
    np.testing.assert_allclose(start.log_weights(), uniform_log_weights(K), atol=1e-7)
    prior = _prior(1, learn_pi=True, pi_logits=PI_LOGITS)
    np.testing.assert_allclose(prior.log_weights(), jax.nn.log_softmax(PI_LOGITS), atol=1e-6)
    assert prior.parameter_scales() == {"pseudo_inputs": 1.0}
    with pytest.raises(ValueError, match="learn_pi is False"):
        _prior(1, pi_logits=PI_LOGITS)
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(4,\)"):
        _prior(1, learn_pi=True, pi_logits=PI_LOGITS[:3])


def test_dirichlet_penalty_on_a_learned_pi() -> None:
    prior = _prior(1, learn_pi=True, dirichlet_alpha=3.0, pi_logits=PI_LOGITS)
    penalty = prior.regularisers()["dirichlet_pi"]
    expected = -(3.0 - 1.0) * np.sum(np.asarray(jax.nn.log_softmax(PI_LOGITS), dtype=np.float64))
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-6)
    # α = 1 is a flat Dirichlet: no pull, and no gradient into π.
    flat = _prior(1, learn_pi=True, dirichlet_alpha=1.0, pi_logits=PI_LOGITS)
    assert float(flat.regularisers()["dirichlet_pi"]) == 0.0
    # α > 1 pulls π towards uniform: the gradient raises the smallest logit.
    def penalty_of(logits: jax.Array) -> jax.Array:
        return _prior(1, learn_pi=True, dirichlet_alpha=3.0, pi_logits=logits).regularisers()[
            "dirichlet_pi"
        ]

    grads = jax.grad(penalty_of)(jnp.asarray(PI_LOGITS))
    assert int(np.argmin(np.asarray(grads))) == int(np.argmin(PI_LOGITS))


@eqx.filter_jit
def _learned_pi_terms(
    logits: jax.Array, pseudo_inputs: jax.Array, encoder: AbstractEncoder, posterior: EncoderOutput
) -> tuple[dict[str, jax.Array], dict[str, jax.Array], jax.Array, jax.Array]:
    """KL terms with π = softmax(logits) and with a uniform π, their gradient in the logits,
    and 4096 sampled channels."""
    key = jax.random.PRNGKey(4)

    def terms(logits: jax.Array) -> dict[str, jax.Array]:
        prior = VampPrior(pseudo_inputs, num_samples=2, learn_pi=True, pi_logits=logits)
        return prior.kl_terms(posterior, posterior.z_mean, encoder=encoder, key=key)

    def total(logits: jax.Array) -> jax.Array:
        values = terms(logits)
        return jnp.sum(values["kl_z"]) + jnp.sum(values["kl_c"])

    prior = VampPrior(pseudo_inputs, learn_pi=True, pi_logits=logits)
    _, channels = prior.sample(4096, encoder=encoder, key=jax.random.PRNGKey(0))
    return terms(logits), terms(jnp.zeros_like(logits)), jax.grad(total)(logits), channels


def test_learned_pi_enters_kl_c_kl_z_and_sample(encoder: AbstractEncoder) -> None:
    posterior = _posterior(encoder)
    learned, uniform, grads, channels = _learned_pi_terms(
        jnp.asarray(PI_LOGITS), _prior(1).pseudo_inputs, encoder, posterior
    )
    log_pi = jax.nn.log_softmax(PI_LOGITS)
    np.testing.assert_allclose(learned["kl_c"], categorical_kl(posterior.logits, log_pi), atol=1e-6)
    assert not np.allclose(learned["kl_z"], uniform["kl_z"])
    assert np.all(np.asarray(grads) != 0)
    frequencies = np.bincount(np.asarray(channels), minlength=K) / len(channels)
    np.testing.assert_allclose(frequencies, np.exp(log_pi), atol=0.03)


def test_learned_pi_variant_passes_the_conformance_kit(registry: Registry) -> None:
    # The property suite checks the default options (a fixed π); this is the learned one.
    # The checks that involve π run; those about KL_z's Monte-Carlo estimate alone, which
    # learn_pi leaves as it is (π starts uniform), are left to the property suite.
    component = registry.get("prior", "vamp")
    report = check_prior(
        component,
        component.factory.options(learn_pi=True, dirichlet_alpha=2.0),
        max_examples=5,
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
    assert report["options_honoured"] == "passed (checked num_components, pseudo_lr_scale, learn_pi)"
    for check in (
        "attributes",
        "channel_permutation",
        "samples_follow_prior",
        "regularisers_finite",
        "parameter_scales_honoured",
        "trains_one_step",
    ):
        assert report[check].startswith("passed"), (check, report[check])


def test_fixed_pi_is_exactly_uniform_after_training(fitted) -> None:
    classifier, _ = fitted
    prior = classifier.model.prior
    assert prior.pi_logits is None
    np.testing.assert_array_equal(prior.log_weights(), uniform_log_weights(K))
    assert all("dirichlet_pi" not in row for row in classifier.history)


@pytest.fixture(scope="module")
def fitted_learned_pi(registry: Registry) -> tuple[SSVAEClassifier, np.ndarray]:
    x, y = _synthetic()
    config = _config(registry, learn_pi=True, dirichlet_alpha=2.0)
    return SSVAEClassifier(config, registry=registry).fit(x, y, num_classes=3), x


def test_learned_pi_moves_in_training(fitted_learned_pi) -> None:
    classifier, _ = fitted_learned_pi
    prior = classifier.model.prior
    assert prior.learn_pi and prior.dirichlet_alpha == 2.0
    assert np.all(np.isfinite(prior.pi_logits))
    assert np.abs(np.asarray(prior.pi_logits)).max() > 1e-4
    assert not np.allclose(prior.log_weights(), uniform_log_weights(K))
    np.testing.assert_allclose(float(jax.nn.logsumexp(prior.log_weights())), 0.0, atol=1e-6)
    assert all(np.isfinite(row["dirichlet_pi"]) for row in classifier.history)


def test_checkpoint_roundtrip_restores_learned_pi(
    fitted_learned_pi, registry: Registry, tmp_path
) -> None:
    classifier, x = fitted_learned_pi
    path = tmp_path / "vamp-pi.ckpt"
    classifier.save(path)
    loaded = SSVAEClassifier.load(path, registry=registry)
    assert loaded.model.prior.learn_pi and loaded.model.prior.dirichlet_alpha == 2.0
    np.testing.assert_array_equal(loaded.model.prior.pi_logits, classifier.model.prior.pi_logits)
    np.testing.assert_array_equal(loaded.model.prior.pseudo_inputs, classifier.model.prior.pseudo_inputs)
    np.testing.assert_allclose(loaded.predict_proba(x), classifier.predict_proba(x), atol=1e-6)
