"""Batched inference: class probabilities, certainty, latents, reconstruction error and
the reconstruction likelihood the OOD scores read (``ssvae_core.runs.ood``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ssvae_core.modelling.model import SSVAE
from ssvae_core.runs.calibration import Calibration

DEFAULT_BATCH = 512
# The prior's KL terms take a key (a prior may sample); inference uses a fixed one.
_KL_KEY = 0


@dataclass(frozen=True)
class Inference:
    """Per-example outputs for a set of inputs (NumPy arrays).

    ``reconstruction_nll`` and ``negative_elbo`` are filled only by
    ``infer(..., likelihood=True)`` (they decode every channel for every example).
    """

    probabilities: np.ndarray  # (N, Y): p(y|x)
    certainty: np.ndarray  # (N,)
    responsibilities: np.ndarray  # (N, K); (N, 0) without channels
    z_mean: np.ndarray  # (N, D)
    reconstruction_error: np.ndarray  # (N,): mean squared error of the reconstruction
    reconstruction_nll: np.ndarray | None = None  # (N,): Σ_c r_c NLL(x | μ, c)
    negative_elbo: np.ndarray | None = None  # (N,): reconstruction_nll + Σ KL terms

    @property
    def ood_score(self) -> np.ndarray:
        """``1 − certainty`` ∈ [0, 1]."""
        return np.clip(1.0 - self.certainty, 0.0, 1.0)

    @property
    def likelihood_score(self) -> np.ndarray:
        """``Σ_c r_c(x) NLL(x | μ(x), c)``: higher is less like the training data."""
        if self.reconstruction_nll is None:
            raise ValueError("this Inference was computed without likelihood=True")
        return self.reconstruction_nll

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=-1)


def _batch_outputs(
    model: SSVAE, head_state: PyTree[Any], x: Float[Array, "B ..."], likelihood: bool
) -> dict[str, Array]:
    posterior = model.encode(x)
    z = posterior.z_mean
    responsibilities = posterior.responsibilities
    if responsibilities is None:
        responsibilities = jnp.zeros((x.shape[0], 0))
        channels = jnp.zeros((x.shape[0],), dtype=jnp.int32)
    else:
        channels = jnp.argmax(responsibilities, axis=-1)
    reconstruction = model.reconstruct(z, channels)
    error = jnp.mean((reconstruction - x).reshape(x.shape[0], -1) ** 2, axis=-1)
    outputs = {
        "probabilities": model.head.predict_proba(posterior, z, head_state),
        "certainty": model.head.certainty(posterior, z, head_state),
        "responsibilities": responsibilities,
        "z_mean": z,
        "reconstruction_error": error,
    }
    if likelihood:
        nll = model.channel_nll(x, z)
        if posterior.responsibilities is None or nll.shape[-1] == 1:
            expected = nll[:, 0]
        else:
            expected = jnp.sum(posterior.responsibilities * nll, axis=-1)
        kl_terms = model.prior.kl_terms(
            posterior, z, encoder=model.encoder, key=jax.random.PRNGKey(_KL_KEY)
        )
        outputs["reconstruction_nll"] = expected
        outputs["negative_elbo"] = expected + sum(kl_terms.values(), jnp.zeros_like(expected))
    return outputs


# ``likelihood`` is a Python bool, hence static: one compile per (model, batch shape, flag).
_infer_batch = eqx.filter_jit(_batch_outputs)


def infer(
    model: SSVAE,
    head_state: PyTree[Any],
    x: np.ndarray,
    *,
    batch_size: int = DEFAULT_BATCH,
    likelihood: bool = False,
    calibration: Calibration | None = None,
) -> Inference:
    """Run the model over ``x`` in fixed-size batches (the last one padded, so one compile).

    ``likelihood=True`` also computes ``reconstruction_nll`` and ``negative_elbo``. With a
    ``calibration`` the probabilities are calibrated (``ssvae_core.runs.calibration``); the
    certainty, and so every OOD score, is the head's own.
    """
    count = x.shape[0]
    size = min(batch_size, count)
    outputs: list[dict[str, np.ndarray]] = []
    for start in range(0, count, size):
        chunk = np.asarray(x[start : start + size], dtype=np.float32)
        valid = chunk.shape[0]
        if valid < size:
            chunk = np.concatenate([chunk, np.zeros((size - valid, *chunk.shape[1:]), np.float32)])
        result = jax.device_get(_infer_batch(model, head_state, jnp.asarray(chunk), bool(likelihood)))
        outputs.append({k: np.asarray(v)[:valid] for k, v in result.items()})
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    if calibration is not None:
        merged["probabilities"] = calibration.apply(merged["probabilities"])
    return Inference(**merged)
