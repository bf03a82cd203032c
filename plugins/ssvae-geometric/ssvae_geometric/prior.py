"""The geometric mixture of Gaussians: ``c ~ Cat(π)`` uniform, ``z | c ~ N(μ_c, I)``.

The centres ``μ_c`` start in the first two latent dimensions (zero elsewhere): evenly
spaced on a circle, or on a √K × √K grid centred at the origin. By default they are fixed:
computed from static options, never stored as parameters, so no optimiser can move them —
a diagnostic / curriculum prior that imposes its layout on the latent space. With
``centre_lr_scale > 0`` the centres are a trainable field that starts at the layout and
learns at that scale of the networks' learning rate, in every latent dimension.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.plugin import (
    AbstractChannelPrior,
    AbstractEncoder,
    EncoderOutput,
    gaussian_kl,
    uniform_log_weights,
)

LAYOUTS = ("circle", "grid")


def geometric_centres(
    num_components: int, latent_dim: int, layout: str, radius: float
) -> Float[np.ndarray, "K D"]:
    """The fixed centres ``μ_c``; only the first two coordinates are non-zero.

    ``circle``: ``μ_c = r (cos 2πc/K, sin 2πc/K)``.
    ``grid``: with ``m = √K``, ``μ_{im+j} = r (i − (m−1)/2, j − (m−1)/2)`` for
    ``i, j = 0 … m−1``, so ``r`` is the spacing between neighbouring centres.
    Raises ``ValueError`` for ``latent_dim < 2``, a non-square K on the grid, or an
    unknown layout.
    """
    if latent_dim < 2:
        raise ValueError(
            "needs model.latent_dim >= 2 (its centres live in the first two latent "
            f"dimensions), got {latent_dim}"
        )
    centres = np.zeros((num_components, latent_dim), dtype=np.float32)
    if layout == "circle":
        angles = 2.0 * np.pi * np.arange(num_components) / num_components
        centres[:, 0], centres[:, 1] = radius * np.cos(angles), radius * np.sin(angles)
        return centres
    if layout == "grid":
        side = math.isqrt(num_components)
        if side * side != num_components:
            raise ValueError(
                "layout 'grid' needs num_components to be a square number (4, 9, 16, ...) "
                f"for a √K × √K grid, got {num_components}"
            )
        offsets = radius * (np.arange(side) - (side - 1) / 2.0)
        rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
        centres[:, 0], centres[:, 1] = rows.reshape(-1), cols.reshape(-1)
        return centres
    raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")


class GeometricMixturePrior(AbstractChannelPrior):
    """K channels with uniform ``π`` and ``p(z|c) = N(μ_c, I)``, centres fixed or learned.

    Closed form, per example:

        KL_z = Σ_c r_c KL(q(z|x) || N(μ_c, I))
             = Σ_c r_c · ½ Σ_d (σ_d² + (μ_d − μ_{c,d})² − 1 − log σ_d²)
        KL_c = KL(q(c|x) || π) = Σ_c r_c (log r_c + log K)

    (``KL_z`` and ``KL_c`` from ``AbstractChannelPrior.kl_terms``, with the per-channel KL of
    ``channel_kl``.) The decoder is conditioned on the channel (every conditioning
    method works). With ``centre_lr_scale = 0`` (the default) the prior holds no arrays;
    otherwise ``learned_centres`` (``K × D``, starting at the layout) is trained with that
    learning-rate scale.
    """

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    layout: str = eqx.field(static=True)
    radius: float = eqx.field(static=True)
    centre_lr_scale: float = eqx.field(static=True)
    learned_centres: Float[Array, "K D"] | None

    def __init__(
        self,
        latent_dim: int,
        num_components: int,
        *,
        layout: str = "circle",
        radius: float = 3.0,
        centre_lr_scale: float = 0.0,
    ):
        # Computing the centres once validates the layout before the prior is used.
        start = geometric_centres(num_components, latent_dim, layout, radius)
        if centre_lr_scale < 0:
            raise ValueError(f"centre_lr_scale must be a number >= 0, got {centre_lr_scale}")
        self.num_components = num_components
        self.conditions_decoder = True
        self.latent_dim = latent_dim
        self.layout = layout
        self.radius = radius
        self.centre_lr_scale = centre_lr_scale
        self.learned_centres = jnp.asarray(start, dtype=jnp.float32) if centre_lr_scale > 0 else None

    def centres(self) -> Float[Array, "K D"]:
        """The centres ``μ_c``: the layout's constants (no gradient), or the learned field."""
        if self.learned_centres is not None:
            return self.learned_centres
        return jnp.asarray(
            geometric_centres(self.num_components, self.latent_dim, self.layout, self.radius)
        )

    def log_weights(self) -> Float[Array, " K"]:
        return uniform_log_weights(self.num_components)

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        """``KL(q(z|x) || N(μ_c, I))`` for every example and channel."""
        return gaussian_kl(
            posterior.z_mean[:, None, :], posterior.z_log_var[:, None, :], self.centres()
        )

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        """``c ~ π`` (uniform), then ``z ~ N(μ_c, I)``."""
        channel_key, z_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.log_weights(), shape=(num_samples,))
        noise = jax.random.normal(z_key, (num_samples, self.latent_dim))
        return self.centres()[channels] + noise, channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        if self.learned_centres is None:
            return {}
        return {"learned_centres": self.centre_lr_scale}
