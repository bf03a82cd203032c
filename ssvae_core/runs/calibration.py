"""Calibrating ``p(y|x)`` after training, without a held-out labeled set.

With few labels τ's rows are near one-hot, so the confidence ``max_y p(y|x)`` is about
``max_c r_c(x)``: as high for a channel's look-alike minority as for its majority. No
labeled example is left out of training to fit a temperature on, so the accuracy the
confidence should match is estimated on the unlabeled training rows instead
(``docs/maths.md``, "Calibration"):

1. the few labels are propagated over the pixel kNN graph (``propagate``, the
   propagation of ``ssvae_core.data.graph``), a classifier that never sees the model; with
   ``choose_features`` the graph is built from the configured features (blur, deskewing)
   or the plain pixels, whichever propagates the held-out labels better
   (``ssvae_core.data.propagation.choose_features``);
2. each unlabeled training row is seen once more through an augmented view (the training
   augmentation, ``[augment]``): the model is surer of the very images it was trained on
   than of new ones, and a view stands in for a new image;
3. ``â``, the share of those views whose most probable class under the model is the
   propagation's label of the row, estimates the model's accuracy when the model learned
   from the propagated labels (the graph-label term, ``[loss.graph_label]``, is on), since
   their mistakes are then the model's. Otherwise the two err apart, and their agreement
   is about the model's accuracy times the propagation's: it is divided by the latter,
   measured by leaving each labeled example out of the propagation in turn, where every
   class has a label left (two or more labels per class), and taken at the lower end of
   its uncertainty (a one-sided 95 % Wilson bound), so that few held-out labels make the
   calibration do less rather than more. Independent mistakes cannot agree on much more
   than the propagation is right: an agreement above the upper end of that bound (the
   propagation's accuracy is low and the model errs with it) is taken as it is;
4. the temperature ``T ≥ 1`` of ``p_T(y|x) ∝ p(y|x)^{1/T}`` is the one whose mean confidence
   on the views is ``â`` (``T = 1`` when the model is no more confident than ``â``).

Raising ``p`` to a power and renormalising keeps every example's most probable class, so
the accuracy does not change. The fitted ``Calibration`` is kept by the classifier and
its checkpoint; predictions, evaluations, reports, the studio and the acquisitions read the
calibrated ``p(y|x)``. Training never does: its terms read the head's own probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from ssvae_core.data.augment import AugmentConfig, augment_batch
from ssvae_core.data.graph import (
    blur_option,
    choose_features_option,
    deskew_option,
    metric_option,
    smoothed_rows,
)
from ssvae_core.data.propagation import (
    Propagation,
    choose_features,
    propagate,
    subsample,
)
from ssvae_core.errors import DataError
from ssvae_core.options import option

CALIBRATION_METHODS = ("agreement", "none")
# How the model's mistakes are taken to relate to the propagation's (``CalibrationConfig.errors``).
ERROR_MODELS = ("auto", "shared", "independent")
# T is searched in [1, MAX_TEMPERATURE] by this many bisections of log T.
MAX_TEMPERATURE = 1e4
_BISECTIONS = 100
# The key of the augmented views of the rows the fit reads (``subsample``: every labeled
# row and a seeded draw of at most 20,000 unlabeled ones).
VIEWS_SEED = 0
VIEWS_BATCH = 1024

@dataclass(frozen=True)
class CalibrationConfig:
    method: str = option(
        "agreement",
        help="how p(y|x) is calibrated after training: 'agreement' fits a temperature T ≥ 1 so that the mean confidence on augmented views of the unlabeled training rows equals the model's estimated accuracy, its agreement there with the labels propagated over the pixel kNN graph (divided by a lower bound of the propagation's held-out accuracy unless the model was trained on those labels); 'none' keeps the head's p(y|x)",
        choices=CALIBRATION_METHODS,
    )
    neighbours: int = option(10, help="k of the pixel kNN graph the labels propagate over", minimum=1)
    alpha: float = option(
        0.9, help="α of the propagation F ← αSF + (1 − α)Y, 0 < α < 1", minimum=0.0, exclusive_minimum=True
    )
    blur: float = blur_option()
    deskew: bool = deskew_option()
    metric: str = metric_option()
    choose_features: bool = choose_features_option()
    errors: str = option(
        "auto",
        help="how the model's mistakes relate to the propagation's: 'shared' takes the agreement as the accuracy estimate (the model learned the propagated labels and their mistakes); 'independent' divides it by a lower bound of the propagation's held-out accuracy — unless the agreement is above the upper bound of that accuracy, which independent mistakes could not give, and is then taken as it is — and fits nothing (T = 1) where none is measurable (no class with two labels); 'auto' is 'shared' when the graph-label term [loss.graph_label] is on, else 'independent' but taking the agreement as it is where no held-out accuracy is measurable",
        choices=ERROR_MODELS,
    )

    def learned_propagation(self, graph_labels: bool) -> bool:
        """Whether the accuracy estimate takes the model's mistakes as the propagation's:
        ``errors = "shared"``, or ``"auto"`` with the graph-label term on (``graph_labels``)."""
        return self.errors == "shared" or (self.errors == "auto" and graph_labels)

    def validate(self) -> None:
        if self.alpha >= 1.0:
            raise ValueError(f"alpha must be < 1, got {self.alpha:g}")


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``p_T(y) = p(y)^{1/T} / Σ_{y'} p(y')^{1/T}`` per row (in log space); ``T = 1`` is
    the identity, ``T > 1`` flattens, the most probable class stays the same. Tempered
    rows are float64, so that two classes ``T`` brings close never round to a tie."""
    if temperature == 1.0:
        return np.asarray(probabilities)
    p = np.asarray(probabilities, dtype=np.float64)
    log_p = np.log(np.clip(p, np.finfo(np.float64).tiny, None)) / temperature
    log_p -= np.max(log_p, axis=-1, keepdims=True)
    tempered = np.exp(log_p)
    return tempered / np.sum(tempered, axis=-1, keepdims=True)


def mean_confidence(probabilities: np.ndarray) -> float:
    """``mean_i max_y p(y|x_i)``."""
    return float(np.mean(np.max(probabilities, axis=-1)))


def fit_temperature(probabilities: np.ndarray, target: float) -> float:
    """The ``T ≥ 1`` whose tempered probabilities have mean confidence ``target``.

    The mean confidence falls monotonically as ``T`` grows (towards ``1/Y``), so ``T`` is
    found by bisection on ``log T`` in ``[1, 10⁴]``. ``T = 1`` when the probabilities are
    already no more confident than ``target``; a ``target`` at or below what ``T = 10⁴``
    reaches gives ``10⁴``.
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"the target confidence must lie in [0, 1], got {target}")
    if mean_confidence(probabilities) <= target:
        return 1.0
    low, high = 0.0, float(np.log(MAX_TEMPERATURE))
    if mean_confidence(temper(probabilities, MAX_TEMPERATURE)) >= target:
        return MAX_TEMPERATURE
    for _ in range(_BISECTIONS):
        middle = 0.5 * (low + high)
        if mean_confidence(temper(probabilities, float(np.exp(middle)))) > target:
            low = middle
        else:
            high = middle
    return float(np.exp(0.5 * (low + high)))


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: ``p(y|x) ↦ p(y|x)^{1/T}`` renormalised.

    ``step`` is the training step of the model it was fitted for; ``facts`` are the
    figures of the fit (how many rows, the agreement, mean confidence before and after),
    or ``reason`` why nothing could be fitted (``temperature`` is then 1).
    """

    method: str
    temperature: float
    step: int
    facts: dict[str, Any] = field(default_factory=dict)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """The calibrated ``p(y|x)``; each row's most probable class is unchanged."""
        return temper(probabilities, self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "temperature": float(self.temperature),
            "step": int(self.step),
            **self.facts,
        }

    @classmethod
    def from_dict(cls, raw: object) -> Calibration:
        """The calibration saved by ``to_dict``; a malformed one is a ``DataError``."""
        try:
            assert isinstance(raw, dict)
            method, temperature, step = raw["method"], raw["temperature"], raw["step"]
            assert method in CALIBRATION_METHODS
            assert isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            assert np.isfinite(temperature) and 1.0 <= temperature <= MAX_TEMPERATURE
            assert isinstance(step, int) and not isinstance(step, bool) and step >= 0
        except (AssertionError, KeyError, TypeError):
            raise DataError(
                "the checkpoint's calibration is malformed (expected a method among "
                f"{', '.join(CALIBRATION_METHODS)}, a temperature from 1 to {MAX_TEMPERATURE:g} "
                "and an integer step)"
            ) from None
        facts = {k: v for k, v in raw.items() if k not in ("method", "temperature", "step")}
        return cls(method=method, temperature=float(temperature), step=step, facts=facts)


_augment = jax.jit(augment_batch, static_argnums=2)


def augmented_views(x: np.ndarray, augment: AugmentConfig, seed: int = VIEWS_SEED) -> np.ndarray:
    """One augmented view of each row of ``x`` (``x`` itself when ``augment`` is off), in
    chunks of ``VIEWS_BATCH`` rows (the last one padded: one compile per input shape)."""
    x = np.asarray(x, dtype=np.float32)
    if not augment.enabled or x.shape[0] == 0:
        return x
    key = jax.random.PRNGKey(seed)
    chunks = []
    for start in range(0, x.shape[0], VIEWS_BATCH):
        chunk = x[start : start + VIEWS_BATCH]
        padded = np.concatenate([chunk, np.zeros((VIEWS_BATCH - chunk.shape[0], *x.shape[1:]), np.float32)])
        views = _augment(padded, jax.random.fold_in(key, start), augment)
        chunks.append(np.asarray(views)[: chunk.shape[0]])
    return np.concatenate(chunks)


def _propagation(
    config: CalibrationConfig, x: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[Propagation, dict[str, Any]]:
    """The labels propagated over the graph of ``x`` — its configured features, or with
    ``choose_features`` whichever of them and the plain pixels the held-out labels prefer —
    and the facts of that choice."""
    if not config.choose_features:
        rows = smoothed_rows(x, config.blur, deskew=config.deskew, metric=config.metric)
        return propagate(rows, labels, num_classes, neighbours=config.neighbours, alpha=config.alpha), {}
    choice = choose_features(
        x, labels, num_classes, blur=config.blur, deskew=config.deskew, metric=config.metric,
        neighbours=config.neighbours, alpha=config.alpha,
    )
    propagation = choice.propagation
    if propagation is None:
        rows = smoothed_rows(x, choice.blur, deskew=choice.deskew, metric=config.metric)
        propagation = propagate(rows, labels, num_classes, neighbours=config.neighbours, alpha=config.alpha)
    return propagation, {"graph_features": choice.facts}


def _accuracy_estimate(
    agreement: float, propagation: Propagation, learned_propagation: bool, num_classes: int
) -> tuple[float, bool]:
    """``â`` and whether independent mistakes were ruled out: the agreement as it is where
    the model learned the propagation, or where no held-out accuracy is measurable, or where
    the agreement is above the upper bound of that accuracy (independent mistakes agree on
    about the propagation's accuracy at most, so the two err together); else the agreement
    over the lower bound."""
    bound = propagation.accuracy_bound
    if learned_propagation or bound is None:
        return agreement, False
    if agreement > propagation.accuracy_upper_bound:
        return agreement, True
    return min(1.0, agreement / max(bound, 1.0 / num_classes)), False


def fit_calibration(
    config: CalibrationConfig,
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    predict: Callable[[np.ndarray], np.ndarray],
    augment: AugmentConfig,
    *,
    graph_labels: bool,
    step: int,
) -> Calibration:
    """Fit ``config.method`` on the training data: inputs ``x`` and ``labels`` (``-1``
    where unlabeled); ``predict(inputs)`` gives the model's uncalibrated ``p(y|x)``;
    ``augment`` makes the views; ``graph_labels`` says whether the model was trained on
    propagated labels, which with ``config.errors`` decides whether the agreement is the
    accuracy estimate as it is (``CalibrationConfig.learned_propagation``).

    Without unlabeled rows, or without labels of two classes, nothing is estimable: the
    result keeps ``T = 1`` and says why.
    """
    labels = np.asarray(labels)
    if config.method == "none":
        return Calibration("none", 1.0, step)
    unlabeled = np.flatnonzero(labels < 0)
    known = np.unique(labels[labels >= 0])
    reason = None
    if unlabeled.size == 0:
        reason = "every training row is labeled: no unlabeled rows to estimate the accuracy on"
    elif known.size < 2:
        reason = "the training rows hold labels of fewer than two classes: nothing to propagate"
    if reason is not None:
        return Calibration(config.method, 1.0, step, {"reason": reason})
    rows = subsample(labels)
    propagation, facts = _propagation(config, x[rows], labels[rows], num_classes)
    pool = (labels[rows] < 0) & (propagation.labels >= 0)
    if not np.any(pool):
        reason = "no label reaches an unlabeled training row over the graph"
        return Calibration(config.method, 1.0, step, {"reason": reason})
    if config.errors == "independent" and propagation.held_out is None:
        reason = (
            "no class has two labels, so the propagation's accuracy cannot be measured by "
            "leaving labels out, and the model's mistakes are taken as independent of it "
            "(calibration.errors = 'independent')"
        )
        return Calibration(config.method, 1.0, step, {"reason": reason})
    learned_propagation = config.learned_propagation(graph_labels)
    probabilities = np.asarray(predict(augmented_views(x[rows][pool], augment)))
    agreement = float(np.mean(np.argmax(probabilities, axis=-1) == propagation.labels[pool]))
    propagation_accuracy, bound = propagation.accuracy, propagation.accuracy_bound
    estimate, rejected = _accuracy_estimate(agreement, propagation, learned_propagation, num_classes)
    temperature = fit_temperature(probabilities, estimate)
    return Calibration(
        config.method,
        temperature,
        step,
        {
            "rows": int(pool.sum()),
            "agreement": round(agreement, 6),
            "propagation_accuracy": None if propagation_accuracy is None else round(propagation_accuracy, 6),
            "propagation_accuracy_bound": None if bound is None else round(bound, 6),
            "held_out": 0 if propagation.held_out is None else int(propagation.held_out.size),
            "learned_propagation": bool(learned_propagation),
            "independence_rejected": bool(rejected),
            "accuracy_estimate": round(estimate, 6),
            "confidence_before": round(mean_confidence(probabilities), 6),
            "confidence_after": round(mean_confidence(temper(probabilities, temperature)), 6),
            **facts,
        },
    )
