"""Augmentation: shapes, determinism under a key, identity at zero strength, real warps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.data.augment import AugmentConfig, augment_batch, augment_example

IMAGES = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8))
STRONG = AugmentConfig(shift=2.0, rotation=15.0, elastic=0.5, noise=0.05)


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 2, 8, 8), (3, 10)])
def test_augmented_batch_keeps_its_shape(shape: tuple[int, ...]) -> None:
    x = jax.random.uniform(jax.random.PRNGKey(1), shape)
    assert augment_batch(x, jax.random.PRNGKey(2), STRONG).shape == shape


def test_zero_strength_is_the_identity() -> None:
    zero = AugmentConfig(shift=0.0, rotation=0.0, elastic=0.0, noise=0.0)
    assert not zero.enabled
    out = augment_batch(IMAGES, jax.random.PRNGKey(3), zero)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(IMAGES))


def test_same_key_gives_the_same_augmentation() -> None:
    first = augment_batch(IMAGES, jax.random.PRNGKey(4), STRONG)
    second = augment_batch(IMAGES, jax.random.PRNGKey(4), STRONG)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_different_keys_give_different_augmentations() -> None:
    first = augment_batch(IMAGES, jax.random.PRNGKey(5), STRONG)
    second = augment_batch(IMAGES, jax.random.PRNGKey(6), STRONG)
    assert float(jnp.max(jnp.abs(first - second))) > 1e-3


def test_each_example_gets_its_own_warp() -> None:
    same = jnp.stack([IMAGES[0]] * 2)
    out = augment_batch(same, jax.random.PRNGKey(7), AugmentConfig(shift=2.0, rotation=0.0))
    assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-3


def test_half_turn_rotation_maps_a_pixel_to_its_mirror_position() -> None:
    # A rotation of 180° maps pixel (r, c) to (H-1-r, W-1-c) about the centre.
    image = jnp.zeros((5, 5)).at[0, 1].set(1.0)
    config = AugmentConfig(shift=0.0, rotation=180.0)
    keys = jax.random.split(jax.random.PRNGKey(8), 200)
    outputs = jax.vmap(lambda k: augment_example(image, k, config))(keys)
    # Some draw lands close to ±180°; its output has the pixel near (4, 3).
    best = jnp.max(outputs[:, 4, 3])
    assert float(best) > 0.9


def test_values_stay_in_the_unit_interval() -> None:
    out = augment_batch(IMAGES, jax.random.PRNGKey(9), STRONG)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_channels_of_one_image_share_the_warp() -> None:
    image = jnp.stack([IMAGES[0], IMAGES[0]])
    out = augment_example(image, jax.random.PRNGKey(10), AugmentConfig(shift=2.0, rotation=20.0))
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(out[1]))


def test_colour_last_images_get_one_warp_for_every_channel() -> None:
    grey = jax.random.uniform(jax.random.PRNGKey(3), (8, 8))
    colour = jnp.stack([grey, grey * 0.5, grey * 0.25], axis=-1)  # (H, W, 3)
    config = AugmentConfig(shift=2.0, rotation=30.0)
    key = jax.random.PRNGKey(4)
    warped = augment_example(colour, key, config)
    alone = augment_example(grey, key, config)
    assert warped.shape == (8, 8, 3)
    np.testing.assert_allclose(warped[..., 0], alone, atol=1e-6)
    np.testing.assert_allclose(warped[..., 2], alone * 0.25, atol=1e-6)
