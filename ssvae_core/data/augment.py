"""Image augmentation in JAX, applied inside the jitted train step.

One random warp per image: a rotation by ``θ ~ U(−r, r)`` degrees about the centre, a
translation by ``t ~ U(−s, s)`` pixels per axis, and an elastic displacement field (white
noise on a coarse grid, upsampled bilinearly, scaled by ``elastic`` pixels); the image is
resampled at the warped coordinates with bilinear interpolation and zero fill outside.
Optional additive Gaussian pixel noise follows, clipped to [0, 1]. At zero strength the
warp is the identity and the image comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.options import option

ELASTIC_GRID = 4
COLOUR_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def channels_last(sample_shape: tuple[int, ...]) -> bool:
    """Whether a 3-D sample is an image ``(H, W, C)`` with its channels last (``C`` grey,
    RGB or RGBA and ``H`` not) rather than ``(C, H, W)``: ``(32, 32, 3)`` is, ``(3, 32, 32)``
    and ``(1, 28, 28)`` are not."""
    shape = tuple(sample_shape)
    return len(shape) == 3 and shape[-1] in COLOUR_CHANNELS and shape[0] not in COLOUR_CHANNELS


@dataclass(frozen=True)
class AugmentConfig:
    shift: float = option(1.0, help="maximum translation in pixels per axis", minimum=0.0)
    rotation: float = option(10.0, help="maximum rotation in degrees", minimum=0.0, maximum=180.0)
    elastic: float = option(
        0.0, help="elastic displacement scale in pixels (smooth random field)", minimum=0.0
    )
    noise: float = option(0.0, help="standard deviation of additive pixel noise", minimum=0.0)
    apply_to_inputs: bool = option(
        False, help="train on augmented inputs (not only use them as views for consistency)"
    )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation has a non-zero strength."""
        return any(v > 0 for v in (self.shift, self.rotation, self.elastic, self.noise))


def _warp_image(
    image: Float[Array, "H W"], key: PRNGKeyArray, config: AugmentConfig
) -> Float[Array, "H W"]:
    height, width = image.shape
    angle_key, shift_key, elastic_key = jax.random.split(key, 3)
    theta = jnp.deg2rad(config.rotation) * jax.random.uniform(angle_key, (), minval=-1.0, maxval=1.0)
    shift = config.shift * jax.random.uniform(shift_key, (2,), minval=-1.0, maxval=1.0)
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")
    centre_r, centre_c = (height - 1) / 2.0, (width - 1) / 2.0
    dr, dc = rows - centre_r, cols - centre_c
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    source_r = cos * dr - sin * dc + centre_r - shift[0]
    source_c = sin * dr + cos * dc + centre_c - shift[1]
    if config.elastic > 0:
        coarse = jax.random.normal(elastic_key, (2, ELASTIC_GRID, ELASTIC_GRID))
        field = jax.image.resize(coarse, (2, height, width), method="linear")
        source_r = source_r + config.elastic * field[0]
        source_c = source_c + config.elastic * field[1]
    return map_coordinates(image, [source_r, source_c], order=1, mode="constant", cval=0.0)


def augment_example(
    x: Float[Array, "..."], key: PRNGKeyArray, config: AugmentConfig
) -> Float[Array, "..."]:
    """Augment one example: images ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` (``channels_last``)
    are warped, any shape gets noise."""
    warp_key, noise_key = jax.random.split(key)
    warps = config.shift > 0 or config.rotation > 0 or config.elastic > 0
    if warps and x.ndim == 2:
        x = _warp_image(x, warp_key, config)
    elif warps and channels_last(x.shape):
        x = jax.vmap(lambda channel: _warp_image(channel, warp_key, config), in_axes=-1, out_axes=-1)(x)
    elif warps and x.ndim == 3:
        # The same warp for every channel of one image.
        x = jax.vmap(lambda channel: _warp_image(channel, warp_key, config))(x)
    if config.noise > 0:
        x = jnp.clip(x + config.noise * jax.random.normal(noise_key, x.shape), 0.0, 1.0)
    return x


def augment_batch(
    x: Float[Array, "B ..."], key: PRNGKeyArray, config: AugmentConfig
) -> Float[Array, "B ..."]:
    """Augment every example of a batch with its own key."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: augment_example(xi, ki, config))(x, keys)
