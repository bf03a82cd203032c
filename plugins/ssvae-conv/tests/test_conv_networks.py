"""The conv encoder and decoder: shapes, conditioning, likelihoods, size rule, training."""

from __future__ import annotations

import importlib.metadata
import itertools
import math
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ssvae_conv import ConvDecoder, ConvEncoder, image_shape, plugin

from ssvae_core import (
    ConfigError,
    Registry,
    SSVAEClassifier,
    build_model,
    config_from_dict,
    default_registry,
)
from ssvae_core.plugin import make_likelihood

LATENT_DIM = 3
EMBEDDING_DIM = 4
LIKELIHOODS = {
    "bernoulli": make_likelihood("bernoulli"),
    "gaussian": make_likelihood("gaussian"),
    "heteroscedastic": make_likelihood("heteroscedastic"),
    "heteroscedastic_per_pixel": make_likelihood("heteroscedastic", per_pixel=True),
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(entry_points=False, plugins=[("ssvae_conv", plugin)])


def _decoder(shape: tuple[int, ...], conditioning: str, scale_size: int, kernel_size: int = 4) -> ConvDecoder:
    return ConvDecoder(
        shape, LATENT_DIM, (4, 8), kernel_size, "relu", conditioning, EMBEDDING_DIM, scale_size,
        key=jax.random.PRNGKey(0),
    )


def _config(registry: Registry, *, encoder: str = "conv", **model: object):
    return config_from_dict(
        {
            "model": {"latent_dim": LATENT_DIM, "embedding_dim": EMBEDDING_DIM, **model},
            "prior": {"name": "mixture", "num_components": 3},
            "encoder": {"name": encoder, **({"channels": [4, 8]} if encoder == "conv" else {"hidden": [8]})},
            "decoder": {"name": "conv", "channels": [4, 8]},
            "train": {"steps": 3, "batch_size": 8, "log_every": 3},
        },
        registry,
    )


def test_image_shape_adds_a_channel_axis_to_2d_samples() -> None:
    assert image_shape((28, 28)) == (1, 28, 28)
    assert image_shape((3, 16, 8)) == (3, 16, 8)
    assert image_shape((16, 8, 3)) == (3, 16, 8)  # colour last, as image files are read
    assert image_shape((1, 16, 8)) == (1, 16, 8)
    with pytest.raises(ValueError, match=r"\(H, W\), \(C, H, W\) or \(H, W, C\), got sample shape \(64,\)"):
        image_shape((64,))


def test_colour_last_images_give_the_numbers_of_the_same_images_colour_first() -> None:
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 8, 12))
    first = ConvEncoder((3, 8, 12), LATENT_DIM, 4, (4, 8), 3, "gelu", key=jax.random.PRNGKey(0))
    last = ConvEncoder((8, 12, 3), LATENT_DIM, 4, (4, 8), 3, "gelu", key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(last(jnp.moveaxis(x, 0, -1)).z_mean, first(x).z_mean, rtol=1e-5, atol=1e-6)
    scale_size = LIKELIHOODS["heteroscedastic_per_pixel"].scale_size(3 * 8 * 12)
    z, e = jnp.ones((LATENT_DIM,)), jnp.ones((EMBEDDING_DIM,))
    out_first = _decoder((3, 8, 12), "film", scale_size)(z, e)
    out_last = _decoder((8, 12, 3), "film", scale_size)(z, e)
    np.testing.assert_allclose(out_last.loc, jnp.moveaxis(out_first.loc, 0, -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        out_last.scale_raw, jnp.moveaxis(out_first.scale_raw.reshape(3, 8, 12), 0, -1).reshape(-1), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (3, 8, 12), (8, 12, 3)])
@pytest.mark.parametrize("conditioning", ["concat", "film", "cin", "none"])
def test_decoder_output_matches_sample_and_likelihood(shape: tuple[int, ...], conditioning: str) -> None:
    # Shapes only: eval_shape traces the networks without running (or compiling) them.
    z = jnp.zeros((LATENT_DIM,))
    embedding = None if conditioning == "none" else jnp.ones((EMBEDDING_DIM,))
    for likelihood, kernel_size in itertools.product(LIKELIHOODS.values(), (3, 4)):
        scale_size = likelihood.scale_size(math.prod(shape))
        decoder = eqx.filter_eval_shape(_decoder, shape, conditioning, scale_size, kernel_size)
        output = eqx.filter_eval_shape(lambda d: d(z, embedding), decoder)
        assert output.loc.shape == shape
        if scale_size:
            assert output.scale_raw.shape == (scale_size,)
        else:
            assert output.scale_raw is None
        nll = eqx.filter_eval_shape(likelihood.nll, jnp.zeros(shape), output)
        assert nll.shape == ()


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (3, 8, 12), (7, 9)])
@pytest.mark.parametrize("num_components", [0, 5])
def test_encoder_outputs_posterior_for_any_image_size(shape: tuple[int, ...], num_components: int) -> None:
    encoder = eqx.filter_eval_shape(
        ConvEncoder, shape, LATENT_DIM, num_components, (4, 8), 3, "gelu", key=jax.random.PRNGKey(0)
    )
    output = eqx.filter_eval_shape(lambda e: e(jnp.zeros(shape)), encoder)
    assert output.z_mean.shape == output.z_log_var.shape == (LATENT_DIM,)
    if num_components:
        assert output.logits.shape == (num_components,)
    else:
        assert output.logits is None


@pytest.mark.parametrize(("shape", "kernel_size"), [((28, 28), 4), ((3, 9, 12), 3), ((7, 9), 4)])
def test_encoder_runs_channels_last_with_the_channels_first_numbers(
    shape: tuple[int, ...], kernel_size: int
) -> None:
    """The encoder lays activations out (H, W, C) for speed; its outputs are those of the
    Equinox convolutions on (C, H, W) maps with the same weights."""
    encoder = ConvEncoder(shape, LATENT_DIM, 4, (4, 8), kernel_size, "gelu", key=jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, *shape))

    def channels_first(sample: jax.Array):
        h = sample.reshape(image_shape(shape))
        for conv in encoder.convs:
            h = jax.nn.gelu(conv(h))
        return encoder.heads(h.reshape(-1))

    got, expected = jax.vmap(encoder)(x), jax.vmap(channels_first)(x)
    for name in ("z_mean", "z_log_var", "logits"):
        np.testing.assert_allclose(
            np.asarray(getattr(got, name)), np.asarray(getattr(expected, name)), rtol=1e-5, atol=1e-6
        )


def test_decoder_forward_is_finite_and_conditioned_on_the_channel() -> None:
    decoder = _decoder((8, 8), "film", 1)
    decode = eqx.filter_jit(lambda d, e: d(jnp.ones((LATENT_DIM,)), e))
    first, second = decode(decoder, jnp.ones((EMBEDDING_DIM,))), decode(decoder, -jnp.ones((EMBEDDING_DIM,)))
    assert first.loc.shape == (8, 8) and np.all(np.isfinite(first.loc))
    assert not np.allclose(first.loc, second.loc)


def test_per_pixel_scale_comes_from_extra_output_channels() -> None:
    decoder = eqx.filter_eval_shape(_decoder, (3, 8, 8), "none", 3 * 8 * 8)
    assert decoder.per_pixel_scale and decoder.scale_head is None
    assert decoder.deconvs[-1].out_channels == 6


@pytest.mark.parametrize("shape", [(10, 10), (28, 30), (3, 6, 8)])
def test_decoder_rejects_sizes_it_cannot_produce(registry: Registry, shape: tuple[int, ...]) -> None:
    config = _config(registry, encoder="dense")
    # Traced abstractly: the encoder built before the decoder draws no weights.
    with pytest.raises(ConfigError, match=rf"decoder 'conv': .*multiples of 2\*\*len\(channels\) = 4 .*got sample shape {re.escape(str(shape))}"):
        eqx.filter_eval_shape(build_model, config, input_shape=shape, num_classes=2, key=jax.random.PRNGKey(0))


def test_encoder_rejects_non_image_samples(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"encoder 'conv': .*\(H, W\), \(C, H, W\) or \(H, W, C\), got sample shape \(64,\)"):
        build_model(_config(registry), input_shape=(64,), num_classes=2, key=jax.random.PRNGKey(0))


def test_empty_channels_are_rejected(registry: Registry) -> None:
    config = config_from_dict({"encoder": {"name": "conv", "channels": []}}, registry)
    with pytest.raises(ConfigError, match="encoder 'conv': channels must list at least one"):
        build_model(config, input_shape=(8, 8), num_classes=2, key=jax.random.PRNGKey(0))


def test_trains_a_few_steps_on_8x8_images(registry: Registry) -> None:
    x = np.random.default_rng(0).random((16, 8, 8), dtype=np.float32)
    y = np.where(np.arange(16) < 4, np.arange(16) % 2, -1)
    classifier = SSVAEClassifier(_config(registry, likelihood="heteroscedastic"), registry=registry)
    classifier.fit(x, y, num_classes=2)
    assert isinstance(classifier.model.encoder, ConvEncoder)
    assert isinstance(classifier.model.decoder, ConvDecoder)
    assert int(classifier.state.step) == 3
    assert np.isfinite(classifier.history[-1]["loss"])


def test_entry_point_registers_conv_encoder_and_decoder() -> None:
    try:
        importlib.metadata.version("ssvae-conv")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ssvae-conv is not installed")
    registry = default_registry()
    assert registry.get("encoder", "conv").package == "ssvae-conv"
    assert registry.get("decoder", "conv").package == "ssvae-conv"
