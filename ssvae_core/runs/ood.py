"""Out-of-distribution scores, the background model and tail probabilities.

Every score is higher for inputs less like the training data (``docs/maths.md``,
"Out-of-distribution scores"):

- ``certainty``: ``1 − max_c r_c(x) max_y τ_{c,y}`` (the head's certainty), in [0, 1];
- ``likelihood``: the responsibility-weighted reconstruction NLL at ``z = μ(x)``,
  ``L(x) = Σ_c r_c(x) NLL(x | μ(x), c)`` (nats);
- ``complexity``: ``L(x) − C(x)``, ``C(x)`` the input's lossless code length (PNG, in
  nats): a simple image is likely under any density model, and its short code length
  takes that out (input complexity, Serrà et al. 2020);
- ``excess``: ``L(x) − L*(x)``, ``L*(x)`` the NLL of a perfect reconstruction (the
  likelihood's own code length for ``x``: ``Σ_i H(x_i)`` for the Bernoulli likelihood on
  grey values, a constant for the Gaussian ones, taken as 0): how much worse than any
  decoder could do the model explains ``x``;
- ``ratio``: ``L(x) − L_bg(x)``, the same likelihood under a *background model* (the same
  architecture trained on the training images with a share of their pixels replaced by
  noise) taken out (likelihood ratio, Ren et al. 2019); needs ``train_background``;
- ``blend``, ``blend_complexity``, ``blend_excess``, ``blend_ratio``: the certainty score and the named
  likelihood score each turned into a tail probability under the training data (the
  ``OODReference`` a model keeps) and combined by Fisher's rule. ``blend`` is
  ``1 − q (1 − ln q)`` ∈ [0, 1]; the other two are ``−ln`` of Fisher's combined
  probability (unbounded, so that inputs far from every training example stay ranked).

``DEFAULT_SCORE`` was chosen on validation data (docs/maths.md).
``p_values`` turns any score into the share of training examples that score at least as
high: flagging inputs whose p-value is at most ``α`` flags about ``α`` of in-distribution
inputs.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import PyTree

from ssvae_core.errors import ConfigError, DataError

# The model's modules are imported where used: the acquisitions import this module's names
# while the registry is being built.
if TYPE_CHECKING:
    from ssvae_core.api import SSVAEClassifier
    from ssvae_core.data.loading import Dataset
    from ssvae_core.modelling.inference import Inference
    from ssvae_core.modelling.model import SSVAE

OOD_SCORES = (
    "certainty", "likelihood", "blend", "complexity", "excess", "ratio",
    "blend_complexity", "blend_excess", "blend_ratio",
)
# Chosen on the digits validation split against synthetic outliers (docs/maths.md).
DEFAULT_SCORE = "blend_excess"
# The likelihood score each blend combines with the certainty score.
BLENDS = {
    "blend": "likelihood", "blend_complexity": "complexity", "blend_excess": "excess", "blend_ratio": "ratio",
}
# Scores that need the background model.
NEEDS_BACKGROUND = frozenset({"ratio", "blend_ratio"})
# What ood_score(..., as_=...) returns.
OUTPUTS = ("score", "p_value")
# The training examples whose scores form the reference (a seeded subsample).
REFERENCE_SIZE = 2000
REFERENCE_SEED = 0
# The share of the reference's largest scores whose mean excess sets the tail beyond it.
TAIL_SHARE = 0.05
# The background model: the share of pixels replaced by uniform noise (Ren et al. 2019
# use 10–30 %).
BACKGROUND_NOISE = 0.2


def check_score(score: object) -> str:
    """``score`` if it names an OOD score, else one ``ConfigError`` listing them."""
    if not isinstance(score, str) or score not in OOD_SCORES:
        raise ConfigError(
            f"unknown OOD score {score!r}; choose one of {', '.join(map(repr, OOD_SCORES))}"
        )
    return score


def check_output(output: object) -> str:
    """``output`` checked to be one of ``OUTPUTS``."""
    if not isinstance(output, str) or output not in OUTPUTS:
        raise ConfigError(f"as_ must be one of {', '.join(map(repr, OUTPUTS))}; got {output!r}")
    return output


def check_fpr(fpr: object) -> float:
    """A false-positive rate strictly between 0 and 1, else one ``ConfigError``."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0.0 < float(fpr) < 1.0:
        raise ConfigError(f"the OOD false-positive rate must be a number strictly between 0 and 1; got {fpr!r}")
    return float(fpr)


# --- input complexity --------------------------------------------------------------------------


def _as_image(example: np.ndarray) -> np.ndarray:
    """An 8-bit image PNG can hold: (H, W) as is, (H, W, 1|3|4) as grey/RGB/RGBA, else a row."""
    pixels = np.clip(np.rint(np.asarray(example, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4)):
        return pixels
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        return pixels[..., 0]
    return pixels.reshape(1, -1)


def code_length(x: np.ndarray) -> np.ndarray:
    """Each example's lossless PNG code length in nats (values in [0, 1] stored as 8 bits;
    Pillow's encoder at its highest compression). ``(N, ...)`` → ``(N,)``."""
    from PIL import Image

    lengths = np.empty(len(x), dtype=np.float64)
    for i, example in enumerate(np.asarray(x)):
        buffer = io.BytesIO()
        Image.fromarray(_as_image(example)).save(buffer, format="PNG", compress_level=9)
        lengths[i] = 8.0 * buffer.tell() * math.log(2.0)
    return lengths


def saturated_nll(model: SSVAE, x: np.ndarray) -> np.ndarray:
    """The NLL of each example under a perfect reconstruction, as ``model``'s likelihood
    computes it: ``Σ_i H(x_i)`` (binary entropy) for the Bernoulli likelihood, 0 for the
    others (their minimum is a constant the NLL already drops)."""
    from ssvae_core.modelling.likelihoods import Bernoulli

    if not isinstance(model.likelihood, Bernoulli):
        return np.zeros(len(x))
    p = np.clip(np.asarray(x, dtype=np.float64).reshape(len(x), -1), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0))
    return np.sum(h, axis=-1)


# --- the background model ----------------------------------------------------------------------


def background_path(path: str | os.PathLike[str]) -> Path:
    """Where the background model of the checkpoint ``path`` is kept: ``NAME.background.EXT``
    beside it (``model.ckpt`` → ``model.background.ckpt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.background{path.suffix}")


def perturb(x: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """``x`` with each value replaced, with probability ``rate``, by uniform noise in [0, 1]."""
    rng = np.random.default_rng([seed, 7])
    x = np.asarray(x, dtype=np.float32)
    mask = rng.random(x.shape) < rate
    return np.where(mask, rng.random(x.shape, dtype=np.float32), x)


@dataclass(frozen=True)
class Background:
    """A background model: its network, head state, the noise rate it was trained with,
    and its training time."""

    model: SSVAE
    head_state: PyTree[Any]
    noise: float
    train_time_s: float


def train_background(
    classifier: SSVAEClassifier,
    data: Dataset,
    *,
    noise: float = BACKGROUND_NOISE,
    steps: int | None = None,
) -> SSVAEClassifier:
    """A classifier of ``classifier``'s config (``steps`` training steps if given; no
    calibration) trained on ``data`` with ``noise`` of its values replaced by uniform noise
    (``perturb``): the background model of the ``ratio`` scores. ``classifier`` itself
    is not touched."""
    import dataclasses

    from ssvae_core.api import SSVAEClassifier
    from ssvae_core.data.loading import from_arrays

    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 < noise <= 1.0:
        raise ConfigError(f"the background noise rate must be in (0, 1]; got {noise!r}")
    # only its likelihoods are read: no calibration of its p(y|x) after training
    config = dataclasses.replace(
        classifier.config, calibration=dataclasses.replace(classifier.config.calibration, method="none")
    )
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"background steps must be a positive integer; got {steps!r}")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=steps))
    noisy = from_arrays(
        perturb(data.x, float(noise), config.seed), data.y, name=f"{data.name}-background",
        num_classes=data.num_classes, label_names=data.label_names, unlabeled_classes=True,
    )
    background = SSVAEClassifier(config, registry=classifier.registry)
    started = time.perf_counter()
    background.fit(noisy)
    background.background_info = {"noise": float(noise), "train_time_s": time.perf_counter() - started}
    background.training_data = None
    return background


def background_run(
    run_dir: str | os.PathLike[str], *, noise: float = BACKGROUND_NOISE, steps: int | None = None
) -> dict[str, Any]:
    """Train the background model of a run directory on the run's training images and store
    it beside the run's checkpoint (which is rewritten with the same model, its OOD
    reference now holding the ratio scores). Returns the background's noise rate, steps,
    training time, file name and size."""
    from ssvae_core.runs.run import CHECKPOINT_NAME, Run, training_view

    run = Run.open(run_dir, "background")
    with run.lock():
        checkpoint = run.checkpoint_path
        if not checkpoint.is_file():
            raise DataError(f"{run.path} has no checkpoint ({CHECKPOINT_NAME}); train the run first")
        classifier = run.load_classifier()
        classifier.training_data = training_view(run.dataset, run.split)
        classifier.fit_background(noise=noise, steps=steps)
        classifier.save(checkpoint)
    assert classifier.background is not None and classifier.background.state is not None
    info = classifier.background.background_info or {}
    path = background_path(checkpoint)
    return {
        "noise": float(info.get("noise", noise)),
        "steps": int(classifier.background.state.step),
        "train_time_s": float(info.get("train_time_s", 0.0)),
        "file": path.name,
        "bytes": path.stat().st_size,
    }


# --- the scores --------------------------------------------------------------------------------


def no_background() -> ConfigError:
    """The error of a ratio score asked of a classifier without a background model."""
    return ConfigError(
        "the ratio OOD scores need a background model, and this classifier has none; "
        "train one with fit_background() (or `ssvae background RUN_DIR`)"
    )


@dataclass(frozen=True)
class OODInputs:
    """What the scores are computed from: the main model's outputs (with likelihoods), the
    inputs' code lengths and the background model's likelihood score (where needed)."""

    result: Inference
    code_length: np.ndarray | None = None
    background_nll: np.ndarray | None = None
    saturated_nll: np.ndarray | None = None


def score_inputs(
    model: SSVAE,
    head_state: PyTree[Any],
    x: np.ndarray,
    names: Sequence[str],
    *,
    background: Background | None = None,
    result: Inference | None = None,
) -> OODInputs:
    """Run what ``names`` need over ``x`` (``result``: the model's outputs on ``x`` with
    likelihoods, if already computed); a ratio score without a background model is a
    ``ConfigError``."""
    needs_background = any(name in NEEDS_BACKGROUND for name in names)
    if needs_background and background is None:
        raise no_background()
    from ssvae_core.modelling.inference import infer

    if result is None:
        result = infer(model, head_state, x, likelihood=any(name != "certainty" for name in names))
    codes = code_length(x) if any(name in ("complexity", "blend_complexity") for name in names) else None
    saturated = saturated_nll(model, x) if any(name in ("excess", "blend_excess") for name in names) else None
    background_nll = None
    if needs_background:
        assert background is not None
        background_nll = infer(background.model, background.head_state, x, likelihood=True).likelihood_score
    return OODInputs(result=result, code_length=codes, background_nll=background_nll, saturated_nll=saturated)


def tail(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """How often the training data score at least ``s``: ``(1 + #{r_i ≥ s}) / (n + 1)``
    within the reference's range; beyond its largest value ``r_max`` an exponential tail
    ``exp(−(s − r_max) / a) / (n + 1)``, ``a`` the mean excess of the largest 5 % over the
    value below them (peaks over a threshold), so inputs far beyond every training example
    keep being ranked by how far. Never 0 in exact arithmetic."""
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


def fisher_log_p(log_p: Sequence[np.ndarray]) -> np.ndarray:
    """``ln`` of Fisher's combined probability of ``k`` independent p-values given as logs:
    ``ln(q Σ_{i<k} (−ln q)^i / i!)`` with ``q`` their product (the chance that ``k``
    uniform p-values have a product ≤ q)."""
    log_q = np.sum(np.stack([np.asarray(v, dtype=np.float64) for v in log_p]), axis=0)
    terms = np.stack([i * np.log(np.maximum(-log_q, 1e-300)) - math.lgamma(i + 1) for i in range(len(log_p))])
    terms[0] = 0.0
    return log_q + np.logaddexp.reduce(terms, axis=0)


@dataclass(frozen=True)
class OODReference:
    """The training data's OOD scores, each sorted: the empirical distributions the blends
    and the p-values read tail probabilities from. ``step`` and ``classes`` identify the
    model that scored them (the training step, the number of classes of its head);
    ``scores`` maps score names to their sorted values (``likelihood`` and ``certainty``
    always; the others where they could be computed)."""

    scores: dict[str, np.ndarray]
    step: int
    classes: int

    @property
    def likelihood(self) -> np.ndarray:
        """The reference's likelihood scores (the training examples')."""
        return self.scores["likelihood"]

    @property
    def certainty(self) -> np.ndarray:
        """The reference's certainty scores (the training examples')."""
        return self.scores["certainty"]

    def has(self, names: Sequence[str], *, own: bool = False) -> bool:
        """Whether the reference holds what the scores ``names`` read (a blend: its parts),
        and with ``own`` their own distributions too (what their p-values read)."""
        return all(
            all(part in self.scores for part in (("certainty", BLENDS[name]) if name in BLENDS else ()))
            and (name in self.scores or (name in BLENDS and not own))
            for name in names
        )

    def to_dict(self) -> dict[str, Any]:
        """The reference as the checkpoint stores it."""
        return {
            "step": int(self.step),
            "classes": int(self.classes),
            **{name: [float(v) for v in values] for name, values in self.scores.items()},
        }

    @classmethod
    def from_dict(cls, raw: object) -> OODReference:
        """The reference saved by ``to_dict``; a malformed one is a ``DataError``."""
        try:
            assert isinstance(raw, dict)
            step, classes = raw["step"], raw["classes"]
            assert isinstance(step, int) and isinstance(classes, int)
            scores = {}
            for name in OOD_SCORES:
                if name not in raw:
                    assert name not in ("likelihood", "certainty")
                    continue
                values = np.sort(np.asarray(raw[name], dtype=np.float64))
                assert values.ndim == 1 and values.size > 0 and np.all(np.isfinite(values))
                scores[name] = values
        except (AssertionError, KeyError, TypeError, ValueError):
            raise DataError(
                "the checkpoint's OOD reference is malformed (expected integers step and "
                "classes, and likelihood and certainty lists of finite numbers)"
            ) from None
        return cls(scores=scores, step=step, classes=classes)

    @staticmethod
    def tail(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``tail``."""
        return tail(reference, scores)


def _raw_score(inputs: OODInputs, name: str) -> np.ndarray:
    result = inputs.result
    if name == "certainty":
        return result.ood_score
    if name == "likelihood":
        return result.likelihood_score
    if name == "complexity":
        assert inputs.code_length is not None
        return result.likelihood_score - inputs.code_length
    if name == "excess":
        assert inputs.saturated_nll is not None
        return result.likelihood_score - inputs.saturated_nll
    assert inputs.background_nll is not None
    return result.likelihood_score - inputs.background_nll


def blend(p_likelihood: np.ndarray, p_certainty: np.ndarray, unit: bool) -> np.ndarray:
    """Fisher's combination of two tail probabilities: ``1 − q (1 − ln q)`` in [0, 1] with
    ``unit``, else ``−ln(q (1 − ln q))``."""
    log_p = fisher_log_p([np.log(p_likelihood), np.log(p_certainty)])
    return np.clip(1.0 - np.exp(log_p), 0.0, 1.0) if unit else -log_p


def ood_scores(
    inputs: OODInputs, reference: OODReference | None, names: Sequence[str] = OOD_SCORES
) -> dict[str, np.ndarray]:
    """The named OOD scores (the blends need ``reference``)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        check_score(name)
        if name not in BLENDS:
            out[name] = _raw_score(inputs, name)
            continue
        if reference is None:
            raise ValueError(f"the {name} score needs an OODReference")
        part = BLENDS[name]
        out[name] = blend(
            tail(reference.scores[part], _raw_score(inputs, part)),
            tail(reference.certainty, inputs.result.ood_score),
            unit=name == "blend",
        )
    return out


def p_values(scores: np.ndarray, reference: OODReference, name: str) -> np.ndarray:
    """The share of training examples scoring at least ``scores`` under ``name`` (``tail``)."""
    if name not in reference.scores:
        raise ConfigError(f"the OOD reference holds no {name!r} scores; it has {', '.join(reference.scores)}")
    return tail(reference.scores[name], scores)


def reference_rows(count: int, size: int = REFERENCE_SIZE, seed: int = REFERENCE_SEED) -> np.ndarray:
    """The training rows the reference scores: all of them, or a seeded subsample of
    ``size`` (sorted) when there are more."""
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def ood_reference(
    model: SSVAE,
    head_state: PyTree[Any],
    x: np.ndarray,
    *,
    step: int,
    classes: int,
    background: Background | None = None,
) -> OODReference:
    """Every score (the ratio scores with a background model) of the training data
    (``reference_rows`` of ``x``), sorted."""
    names = [name for name in OOD_SCORES if background is not None or name not in NEEDS_BACKGROUND]
    inputs = score_inputs(model, head_state, x[reference_rows(x.shape[0])], names, background=background)
    plain = [name for name in names if name not in BLENDS]
    partial = OODReference(
        scores={k: np.sort(v.astype(np.float64)) for k, v in ood_scores(inputs, None, plain).items()},
        step=int(step), classes=int(classes),
    )
    blends = ood_scores(inputs, partial, [name for name in names if name in BLENDS])
    return OODReference(
        scores={**partial.scores, **{k: np.sort(v.astype(np.float64)) for k, v in blends.items()}},
        step=int(step), classes=int(classes),
    )
