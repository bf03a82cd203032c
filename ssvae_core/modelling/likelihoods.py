"""Observation models ``p(x | z, c)``: Bernoulli, fixed-σ Gaussian, heteroscedastic Gaussian."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ssvae_core.modelling.types import DecoderOutput


class AbstractLikelihood(eqx.Module):
    """Negative log-likelihood of one example given the decoder's output."""

    @abc.abstractmethod
    def scale_size(self, sample_size: int) -> int:
        """How many unconstrained scale values the decoder must emit (0 for none)."""

    @abc.abstractmethod
    def nll(self, x: Float[Array, "*sample"], output: DecoderOutput) -> Float[Array, ""]:
        """``-log p(x | z, c)`` up to a constant that does not depend on the parameters."""

    @abc.abstractmethod
    def mean(self, output: DecoderOutput) -> Float[Array, "*sample"]:
        """The expected reconstruction ``E[x | z, c]``."""


class Bernoulli(AbstractLikelihood):
    """``-log p = Σ_i BCE(x_i, sigmoid(loc_i))`` for data in [0, 1]; ``loc`` holds logits."""

    def scale_size(self, sample_size: int) -> int:
        return 0

    def nll(self, x: Float[Array, "*sample"], output: DecoderOutput) -> Float[Array, ""]:
        logits = output.loc
        # softplus(l) - x·l is the numerically stable form of BCE with logits.
        return jnp.sum(jax.nn.softplus(logits) - x * logits)

    def mean(self, output: DecoderOutput) -> Float[Array, "*sample"]:
        return jax.nn.sigmoid(output.loc)


class Gaussian(AbstractLikelihood):
    """Fixed σ: ``-log p = ‖x − μ‖² / (2σ²)`` (constants dropped)."""

    sigma: float = eqx.field(static=True)

    def scale_size(self, sample_size: int) -> int:
        return 0

    def nll(self, x: Float[Array, "*sample"], output: DecoderOutput) -> Float[Array, ""]:
        return jnp.sum((x - output.loc) ** 2) / (2.0 * self.sigma**2)

    def mean(self, output: DecoderOutput) -> Float[Array, "*sample"]:
        return output.loc


def heteroscedastic_sigma(
    scale_raw: Float[Array, "*s"], sigma_min: float, sigma_max: float
) -> Float[Array, "*s"]:
    """``σ = clip(σ_min + softplus(s), σ_min, σ_max)``."""
    return jnp.clip(sigma_min + jax.nn.softplus(scale_raw), sigma_min, sigma_max)


class HeteroscedasticGaussian(AbstractLikelihood):
    """Learned σ: ``-log p = ‖x − μ‖² / (2σ²) + D log σ``, σ per image or per pixel."""

    sigma_min: float = eqx.field(static=True)
    sigma_max: float = eqx.field(static=True)
    per_pixel: bool = eqx.field(static=True)

    def scale_size(self, sample_size: int) -> int:
        return sample_size if self.per_pixel else 1

    def nll(self, x: Float[Array, "*sample"], output: DecoderOutput) -> Float[Array, ""]:
        assert output.scale_raw is not None
        sigma = heteroscedastic_sigma(output.scale_raw, self.sigma_min, self.sigma_max)
        sigma = jnp.broadcast_to(sigma.reshape(-1) if self.per_pixel else sigma, (x.size,))
        squared = (x.reshape(-1) - output.loc.reshape(-1)) ** 2
        return jnp.sum(squared / (2.0 * sigma**2) + jnp.log(sigma))

    def mean(self, output: DecoderOutput) -> Float[Array, "*sample"]:
        return output.loc


LIKELIHOODS = ("bernoulli", "gaussian", "heteroscedastic")


def make_likelihood(
    name: str,
    *,
    sigma: float = 0.1,
    sigma_min: float = 0.05,
    sigma_max: float = 0.5,
    per_pixel: bool = False,
) -> AbstractLikelihood:
    """Build a likelihood by its config name (one of ``LIKELIHOODS``)."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(sigma=sigma)
    if name == "heteroscedastic":
        return HeteroscedasticGaussian(sigma_min=sigma_min, sigma_max=sigma_max, per_pixel=per_pixel)
    raise ValueError(f"unknown likelihood {name!r}; allowed: {', '.join(LIKELIHOODS)}")
