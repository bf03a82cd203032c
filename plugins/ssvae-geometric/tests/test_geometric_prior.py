"""The geometric mixture prior: centres, closed-form KL, validation, end-to-end training."""

from __future__ import annotations

import importlib.metadata
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ssvae_geometric import GeometricMixturePrior, geometric_centres, plugin

from ssvae_core import (
    ConfigError,
    Registry,
    SSVAEClassifier,
    build_model,
    config_from_dict,
    default_registry,
)
from ssvae_core.plugin import AbstractChannelPrior, EncoderOutput, categorical_kl, gaussian_kl

pytestmark = pytest.mark.filterwarnings("ignore:prior 'geometric_mog' fixes:UserWarning")

INPUT_SHAPE = (4, 4)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, plugins=[("ssvae_geometric", plugin)])


def _config(registry: Registry, *, latent_dim: int = 3, conditioning: str = "auto", **prior_options: object):
    return config_from_dict(
        {
            "model": {"latent_dim": latent_dim, "embedding_dim": 4, "conditioning": conditioning},
            "prior": {"name": "geometric_mog", "num_components": 4, **prior_options},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 3, "batch_size": 8, "log_every": 3},
        },
        registry,
    )


def _build(config, **kwargs):
    return build_model(config, input_shape=INPUT_SHAPE, num_classes=2, key=jax.random.PRNGKey(0), **kwargs)


def test_circle_centres_lie_evenly_on_the_radius() -> None:
    centres = geometric_centres(6, 4, "circle", 2.5)
    np.testing.assert_allclose(np.linalg.norm(centres[:, :2], axis=1), 2.5, rtol=1e-6)
    angles = np.sort(np.mod(np.arctan2(centres[:, 1], centres[:, 0]), 2 * np.pi))
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 6, rtol=1e-5)
    np.testing.assert_array_equal(centres[:, 2:], 0.0)


def test_grid_centres_form_a_square_centred_at_zero() -> None:
    centres = geometric_centres(9, 3, "grid", 2.0)
    points = {tuple(p) for p in centres[:, :2].round(6)}
    assert points == {(a, b) for a in (-2.0, 0.0, 2.0) for b in (-2.0, 0.0, 2.0)}
    np.testing.assert_allclose(centres.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_array_equal(centres[:, 2:], 0.0)


def test_centres_are_not_parameters() -> None:
    prior = GeometricMixturePrior(3, 4)
    assert jax.tree.leaves(eqx.filter(prior, eqx.is_inexact_array)) == []
    assert prior.parameter_scales() == {}


def test_kl_is_zero_when_q_is_a_centre_with_one_hot_responsibilities() -> None:
    prior = GeometricMixturePrior(3, 4, layout="grid", radius=1.5)
    centres = prior.centres()
    posterior = EncoderOutput(
        z_mean=centres, z_log_var=jnp.zeros_like(centres), logits=40.0 * jnp.eye(4)
    )
    terms = prior.kl_terms(posterior, centres, encoder=None, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(terms["kl_z"], 0.0, atol=1e-5)


def test_kl_terms_are_non_negative_and_finite() -> None:
    prior = GeometricMixturePrior(3, 4)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    posterior = EncoderOutput(
        z_mean=3.0 * jax.random.normal(keys[0], (4, 3)),
        z_log_var=jax.random.normal(keys[1], (4, 3)),
        logits=jax.random.normal(keys[2], (4, 4)),
    )
    terms = prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=jax.random.PRNGKey(0))
    for values in terms.values():
        assert values.shape == (4,)
        assert np.all(np.isfinite(values)) and np.all(values >= -1e-6)


def test_kl_matches_the_hand_computed_closed_form() -> None:
    # Unit circle, K = 4: centres (1, 0), (0, 1), (-1, 0), (0, -1) (and 0 in the third
    # dimension); q = N((1, 0, 0), diag(2, 1, 1)); r = (1/2, 1/4, 1/8, 1/8).
    prior = GeometricMixturePrior(3, 4, radius=1.0)
    posterior = EncoderOutput(
        z_mean=jnp.tile(jnp.array([1.0, 0.0, 0.0]), (4, 1)),
        z_log_var=jnp.tile(jnp.log(jnp.array([2.0, 1.0, 1.0])), (4, 1)),
        logits=jnp.tile(jnp.log(jnp.array([0.5, 0.25, 0.125, 0.125])), (4, 1)),
    )
    terms = prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=jax.random.PRNGKey(0))
    # KL to each centre: ½(1 − log 2), ½(3 − log 2), ½(5 − log 2), ½(3 − log 2).
    np.testing.assert_allclose(terms["kl_z"], 0.5 * (2.25 - np.log(2.0)), rtol=1e-5)
    np.testing.assert_allclose(terms["kl_c"], 0.25 * np.log(2.0), rtol=1e-5)


def _kl_terms_by_hand(
    prior: GeometricMixturePrior, posterior: EncoderOutput
) -> dict[str, jax.Array]:
    """The KL terms as they were written before ``AbstractChannelPrior`` took them over."""
    responsibilities = jax.nn.softmax(posterior.logits, axis=-1)
    kl_per_channel = gaussian_kl(
        posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :], prior.centres()
    )
    return {
        "kl_z": jnp.sum(responsibilities * kl_per_channel, axis=-1),
        "kl_c": categorical_kl(posterior.logits, prior.log_weights()),
    }


@pytest.mark.parametrize("layout", ["circle", "grid"])
def test_kl_terms_of_the_channel_prior_base_equal_the_hand_formula_bit_for_bit(
    layout: str,
) -> None:
    prior = GeometricMixturePrior(3, 4, layout=layout, radius=2.0)
    assert type(prior).kl_terms is AbstractChannelPrior.kl_terms
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    posterior = EncoderOutput(
        z_mean=2.0 * jax.random.normal(keys[0], (6, 3)),
        z_log_var=jax.random.normal(keys[1], (6, 3)),
        logits=3.0 * jax.random.normal(keys[2], (6, 4)),
    )

    def terms(posterior: EncoderOutput, by_hand: bool) -> dict[str, jax.Array]:
        if by_hand:
            return _kl_terms_by_hand(prior, posterior)
        return prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=keys[0])

    def total(posterior: EncoderOutput, by_hand: bool) -> jax.Array:
        values = terms(posterior, by_hand)
        return jnp.sum(values["kl_z"]) + 0.5 * jnp.sum(values["kl_c"])

    for function in (terms, jax.grad(total)):
        for transform in (lambda f: f, eqx.filter_jit):
            actual = transform(function)(posterior, False)
            expected = transform(function)(posterior, True)
            for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_sample_draws_around_the_centres() -> None:
    prior = GeometricMixturePrior(3, 4, radius=50.0)
    z, channels = prior.sample(256, encoder=None, key=jax.random.PRNGKey(0))
    assert z.shape == (256, 3) and channels.shape == (256,)
    assert set(np.unique(channels)) == {0, 1, 2, 3}
    distances = np.linalg.norm(z[:, None, :] - prior.centres()[None], axis=-1)
    np.testing.assert_array_equal(np.argmin(distances, axis=1), channels)


def test_grid_with_non_square_num_components_is_a_config_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"prior 'geometric_mog': layout 'grid' needs num_components to be a square number .* got 6"):
        _build(_config(registry, layout="grid", num_components=6))


def test_latent_dim_below_two_is_a_config_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=re.escape("prior 'geometric_mog': needs model.latent_dim >= 2")):
        _build(_config(registry, latent_dim=1))


def test_building_warns_that_the_prior_imposes_a_topology(registry: Registry) -> None:
    with pytest.warns(UserWarning, match="imposes that topology"):
        _build(_config(registry, layout="grid"))


@pytest.mark.parametrize("conditioning", ["film", "cin", "concat", "none"])
def test_trains_a_few_steps_with_each_conditioning(registry: Registry, conditioning: str) -> None:
    x = np.random.default_rng(0).random((16, *INPUT_SHAPE), dtype=np.float32)
    y = np.where(np.arange(16) < 4, np.arange(16) % 2, -1)
    classifier = SSVAEClassifier(_config(registry, conditioning=conditioning), registry=registry)
    classifier.fit(x, y, num_classes=2)
    assert classifier.config.model.conditioning == conditioning
    assert (classifier.model.embeddings is None) == (conditioning == "none")
    assert int(classifier.state.step) == 3
    assert classifier.history[-1]["kl_z"] >= 0.0 and np.isfinite(classifier.history[-1]["loss"])


def test_entry_point_registers_geometric_mog() -> None:
    try:
        importlib.metadata.version("ssvae-geometric")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ssvae-geometric is not installed")
    assert default_registry().get("prior", "geometric_mog").package == "ssvae-geometric"


# --- learned centres ---------------------------------------------------------------------


def test_learned_centres_start_at_the_layout_with_their_scale() -> None:
    prior = GeometricMixturePrior(3, 4, radius=2.0, centre_lr_scale=0.5)
    np.testing.assert_array_equal(np.asarray(prior.centres()), geometric_centres(4, 3, "circle", 2.0))
    assert prior.parameter_scales() == {"learned_centres": 0.5}
    assert [leaf.shape for leaf in jax.tree.leaves(eqx.filter(prior, eqx.is_inexact_array))] == [(4, 3)]


def test_kl_reads_the_learned_centres() -> None:
    prior = GeometricMixturePrior(3, 4, centre_lr_scale=1.0)
    moved = eqx.tree_at(lambda p: p.learned_centres, prior, prior.centres() + 1.0)
    z_mean = moved.centres()
    posterior = EncoderOutput(z_mean, jnp.zeros_like(z_mean), jnp.eye(4) * 50.0)
    kl = moved.kl_terms(posterior, z_mean, encoder=None, key=jax.random.PRNGKey(0))["kl_z"]
    np.testing.assert_allclose(np.asarray(kl), 0.0, atol=1e-5)


def test_learned_centres_move_in_training_and_round_trip_a_checkpoint(registry: Registry, tmp_path) -> None:
    x = np.random.default_rng(0).random((16, *INPUT_SHAPE), dtype=np.float32)
    y = np.where(np.arange(16) < 4, np.arange(16) % 2, -1)
    classifier = SSVAEClassifier(_config(registry, centre_lr_scale=1.0), registry=registry)
    classifier.fit(x, y, num_classes=2)
    centres = np.asarray(classifier.model.prior.centres())
    assert np.any(centres != geometric_centres(4, 3, "circle", 3.0))
    path = tmp_path / "geometric.ckpt"
    classifier.save(path)
    loaded = SSVAEClassifier.load(path, registry=registry)
    np.testing.assert_array_equal(np.asarray(loaded.model.prior.centres()), centres)


def test_negative_centre_lr_scale_is_a_config_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="centre_lr_scale"):
        _build(_config(registry, centre_lr_scale=-1.0))
