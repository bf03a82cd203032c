"""Batched inference: class probabilities, certainty, OOD scores, latents, reconstruction error.

Three out-of-distribution scores (``docs/maths.md``, "Out-of-distribution scores"); higher
means more likely out of distribution:

- ``certainty``: ``1 − max_c r_c(x) max_y τ_{c,y}`` (the head's certainty), in [0, 1];
- ``likelihood``: the responsibility-weighted reconstruction NLL at ``z = μ(x)``,
  ``Σ_c r_c(x) NLL(x | μ(x), c)`` (nats; unbounded; chosen over the negative ELBO on the
  validation split, docs/maths.md);
- ``blend``: both turned into tail probabilities under the training data (an
  ``OODReference`` the model keeps) and combined by Fisher's rule, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ssvae_core.calibration import Calibration
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.model import SSVAE

DEFAULT_BATCH = 512
OOD_SCORES = ("certainty", "likelihood", "blend")
# The training examples whose scores form the blend's reference (a seeded subsample).
REFERENCE_SIZE = 2000
REFERENCE_SEED = 0
# The share of the reference's largest scores whose mean excess sets the tail beyond it.
TAIL_SHARE = 0.05
# The prior's KL terms take a key (a prior may sample); inference uses a fixed one.
_KL_KEY = 0


def check_score(score: object) -> str:
    """``score`` if it names an OOD score, else one ``ConfigError`` listing them."""
    if not isinstance(score, str) or score not in OOD_SCORES:
        raise ConfigError(
            f"unknown OOD score {score!r}; choose one of {', '.join(map(repr, OOD_SCORES))}"
        )
    return score


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


@dataclass(frozen=True)
class OODReference:
    """The training data's OOD scores, sorted: the empirical distribution the blend reads
    tail probabilities from. ``step`` and ``classes`` identify the model that scored them
    (the training step, the number of classes of its head)."""

    likelihood: np.ndarray  # (n,) sorted reconstruction NLLs
    certainty: np.ndarray  # (n,) sorted 1 − certainty
    step: int
    classes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": int(self.step),
            "classes": int(self.classes),
            "likelihood": [float(v) for v in self.likelihood],
            "certainty": [float(v) for v in self.certainty],
        }

    @classmethod
    def from_dict(cls, raw: object) -> OODReference:
        """The reference saved by ``to_dict``; a malformed one is a ``DataError``."""
        try:
            assert isinstance(raw, dict)
            likelihood = np.sort(np.asarray(raw["likelihood"], dtype=np.float64))
            certainty = np.sort(np.asarray(raw["certainty"], dtype=np.float64))
            step, classes = raw["step"], raw["classes"]
            assert isinstance(step, int) and isinstance(classes, int)
            assert likelihood.ndim == certainty.ndim == 1
            assert likelihood.size > 0 and certainty.size > 0
            assert np.all(np.isfinite(likelihood)) and np.all(np.isfinite(certainty))
        except (AssertionError, KeyError, TypeError, ValueError):
            raise DataError(
                "the checkpoint's OOD reference is malformed (expected integers step and "
                "classes, and likelihood and certainty lists of finite numbers)"
            ) from None
        return cls(likelihood=likelihood, certainty=certainty, step=step, classes=classes)

    @staticmethod
    def tail(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """How often the training data score at least ``s``: ``(1 + #{r_i ≥ s}) / (n + 1)``
        within the reference's range; beyond its largest value ``r_max`` an exponential
        tail ``exp(−(s − r_max) / a) / (n + 1)``, ``a`` the mean excess of the largest 5 %
        over the value below them (peaks over a threshold), so inputs far beyond every
        training example keep being ranked by how far. Never 0 in exact arithmetic."""
        reference = np.asarray(reference, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        n = reference.size
        at_least = n - np.searchsorted(reference, scores, side="left")
        p = (1.0 + at_least) / (n + 1.0)
        k = min(max(1, int(np.ceil(TAIL_SHARE * n))), n - 1) if n > 1 else 1
        top = reference[n - k :]
        scale = max(float(np.mean(top - reference[n - k - 1])) if n > 1 else 0.0, 1e-12)
        beyond = scores > reference[-1]
        p[beyond] = np.exp(-(scores[beyond] - reference[-1]) / scale) / (n + 1.0)
        return np.maximum(p, np.finfo(np.float64).tiny)


def blend_score(result: Inference, reference: OODReference) -> np.ndarray:
    """Fisher's combination of the two tail probabilities, as a score in [0, 1]:

    ``q = p_L p_C`` (``OODReference.tail``), ``blend = 1 − q (1 − ln q)`` (``q (1 − ln q)`` is the chance that two
    independent uniform p-values have a product ≤ q).
    """
    p_likelihood = OODReference.tail(reference.likelihood, result.likelihood_score)
    p_certainty = OODReference.tail(reference.certainty, result.ood_score)
    log_q = np.log(p_likelihood) + np.log(p_certainty)
    return np.clip(1.0 - np.exp(log_q) * (1.0 - log_q), 0.0, 1.0)


def ood_scores(
    result: Inference, reference: OODReference | None, scores: tuple[str, ...] = OOD_SCORES
) -> dict[str, np.ndarray]:
    """The named OOD scores of ``result`` (``blend`` needs ``reference``)."""
    out: dict[str, np.ndarray] = {}
    for score in scores:
        check_score(score)
        if score == "certainty":
            out[score] = result.ood_score
        elif score == "likelihood":
            out[score] = result.likelihood_score
        else:
            if reference is None:
                raise ValueError("the blend score needs an OODReference")
            out[score] = blend_score(result, reference)
    return out


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
    ``calibration`` the probabilities are calibrated (``ssvae_core.calibration``); the
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


def reference_rows(count: int, size: int = REFERENCE_SIZE, seed: int = REFERENCE_SEED) -> np.ndarray:
    """The training rows the reference scores: all of them, or a seeded subsample of
    ``size`` (sorted) when there are more."""
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def ood_reference(
    model: SSVAE, head_state: PyTree[Any], x: np.ndarray, *, step: int, classes: int
) -> OODReference:
    """The training data's likelihood and certainty scores (``reference_rows`` of ``x``)."""
    result = infer(model, head_state, x[reference_rows(x.shape[0])], likelihood=True)
    return OODReference(
        likelihood=np.sort(result.likelihood_score.astype(np.float64)),
        certainty=np.sort(result.ood_score.astype(np.float64)),
        step=int(step),
        classes=int(classes),
    )
