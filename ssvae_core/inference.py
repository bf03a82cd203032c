"""Batched inference: class probabilities, certainty, OOD score, latents, reconstruction error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ssvae_core.model import SSVAE

DEFAULT_BATCH = 512


@dataclass(frozen=True)
class Inference:
    """Per-example outputs for a set of inputs (NumPy arrays)."""

    probabilities: np.ndarray  # (N, Y): p(y|x)
    certainty: np.ndarray  # (N,)
    responsibilities: np.ndarray  # (N, K); (N, 0) without channels
    z_mean: np.ndarray  # (N, D)
    reconstruction_error: np.ndarray  # (N,): mean squared error of the reconstruction

    @property
    def ood_score(self) -> np.ndarray:
        """``1 − certainty`` ∈ [0, 1]."""
        return np.clip(1.0 - self.certainty, 0.0, 1.0)

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=-1)


@eqx.filter_jit
def _infer_batch(
    model: SSVAE, head_state: PyTree[Any], x: Float[Array, "B ..."]
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
    return {
        "probabilities": model.head.predict_proba(posterior, z, head_state),
        "certainty": model.head.certainty(posterior, z, head_state),
        "responsibilities": responsibilities,
        "z_mean": z,
        "reconstruction_error": error,
    }


def infer(
    model: SSVAE, head_state: PyTree[Any], x: np.ndarray, *, batch_size: int = DEFAULT_BATCH
) -> Inference:
    """Run the model over ``x`` in fixed-size batches (the last one padded, so one compile)."""
    count = x.shape[0]
    size = min(batch_size, count)
    outputs: list[dict[str, np.ndarray]] = []
    for start in range(0, count, size):
        chunk = np.asarray(x[start : start + size], dtype=np.float32)
        valid = chunk.shape[0]
        if valid < size:
            chunk = np.concatenate([chunk, np.zeros((size - valid, *chunk.shape[1:]), np.float32)])
        result = jax.device_get(_infer_batch(model, head_state, jnp.asarray(chunk)))
        outputs.append({k: np.asarray(v)[:valid] for k, v in result.items()})
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    return Inference(**merged)
