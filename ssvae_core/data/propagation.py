"""Labels propagated over a kNN graph, with each label left out in turn to measure them.

``propagate`` spreads the known labels over the symmetric kNN graph of some rows, as the
graph labels of ``ssvae_core.data.graph`` do, by conjugate gradients, and leaves each
labeled row out of the propagation in turn: whether the graph gives it its own label back
measures how far the graph's neighbours share a class, from the labels alone. Two uses:

- the calibration (``ssvae_core.runs.calibration``) divides the model's agreement with the
  propagation by that accuracy;
- ``choose_features`` keeps the features a graph is configured to be built from (blurred,
  deskewed images) only where they propagate the held-out labels at least as well as the
  plain pixels: deskewing suits handwriting and not clothes, and the labels can tell.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse

from ssvae_core.data.graph import knn_affinity, smoothed_rows

# The propagation's solves stop when every column's residual has shrunk by this factor.
TOLERANCE = 1e-10
MAX_ITERATIONS = 1000
# The labeled rows left out in turn (a seeded subsample when there are more), and the
# normal quantile of the one-sided bounds taken of their accuracy (95 %).
MAX_HELD_OUT = 200
BOUND_Z = 1.645
# The seeded subsample of unlabeled rows a measure reads (all of them when fewer).
MAX_ROWS = 20000
ROWS_SEED = 0


def _solve(operator: scipy.sparse.csr_matrix, alpha: float, source: np.ndarray) -> np.ndarray:
    """``(I − αS)⁻¹ source``, column by column, by conjugate gradients: ``S`` is symmetric
    with eigenvalues in ``[−1, 1]``, so ``I − αS`` is positive definite with condition
    number at most ``(1 + α)/(1 − α)`` (about 40 steps at α = 0.9, where the fixed-point
    iteration ``u ← αSu + source`` needs about 250)."""
    solution = np.zeros_like(source)
    residual = source.copy()
    direction = residual.copy()
    squares = np.sum(residual * residual, axis=0)
    stop = TOLERANCE**2 * squares
    for _ in range(MAX_ITERATIONS):
        if np.all(squares <= stop):
            break
        image = direction - alpha * (operator @ direction)
        curvature = np.sum(direction * image, axis=0)
        step = np.divide(squares, curvature, out=np.zeros_like(squares), where=curvature > 0)
        solution += step * direction
        residual -= step * image
        following = np.sum(residual * residual, axis=0)
        ratio = np.divide(following, squares, out=np.zeros_like(squares), where=squares > 0)
        direction = residual + ratio * direction
        squares = following
    return solution


@dataclass(frozen=True)
class Propagation:
    """Labels spread over the pixel kNN graph (as in ``ssvae_core.data.graph``):
    ``F = (1 − α)(I − αS)⁻¹ Y``, unnormalised; ``held_out``, whether each labeled row
    left out of ``Y`` gets its own label back, and ``held_out_share``, the share of its
    propagated mass on its own label (both ``None`` when no class has two labels)."""

    spread: np.ndarray  # (N, Y)
    held_out: np.ndarray | None  # (n,) bool
    held_out_share: np.ndarray | None = None  # (n,) in [0, 1]

    @property
    def labels(self) -> np.ndarray:
        """``argmax_y F_iy``; ``-1`` for a row no label reaches."""
        reached = np.max(self.spread, axis=-1) > 0
        return np.where(reached, np.argmax(self.spread, axis=-1), -1)

    @property
    def accuracy(self) -> float | None:
        """The share of held-out labeled rows the propagation labels right."""
        return None if self.held_out is None else float(np.mean(self.held_out))

    @property
    def accuracy_bound(self) -> float | None:
        """``wilson_lower_bound`` of ``accuracy``."""
        if self.held_out is None:
            return None
        return wilson_lower_bound(int(np.sum(self.held_out)), int(self.held_out.size))

    @property
    def accuracy_upper_bound(self) -> float | None:
        """``wilson_upper_bound`` of ``accuracy``."""
        if self.held_out is None:
            return None
        return wilson_upper_bound(int(np.sum(self.held_out)), int(self.held_out.size))


def wilson_lower_bound(successes: int, trials: int, z: float = BOUND_Z) -> float:
    """The lower end of Wilson's score interval for a share ``successes / trials``:
    ``(p̂ + z²/2n − z √(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)``; below ``p̂``, the more so the
    fewer the trials."""
    return _wilson(successes, trials, z, -1.0)


def wilson_upper_bound(successes: int, trials: int, z: float = BOUND_Z) -> float:
    """The upper end of Wilson's score interval (``wilson_lower_bound`` with ``+ z √…``)."""
    return _wilson(successes, trials, z, 1.0)


def _wilson(successes: int, trials: int, z: float, side: float) -> float:
    if trials < 1:
        raise ValueError("a share needs at least one trial")
    share = successes / trials
    z2 = z * z
    centre = share + z2 / (2 * trials)
    spread = z * np.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    return float((centre + side * spread) / (1 + z2 / trials))


def propagate(
    x: np.ndarray, labels: np.ndarray, num_classes: int, *, neighbours: int, alpha: float
) -> Propagation:
    """Spread ``labels`` (``-1`` unknown) over the kNN graph of ``x`` and leave each
    labeled row out in turn.

    ``S = D^{−1/2} W D^{−1/2}`` (``ssvae_core.data.graph.knn_affinity``); ``F`` is the fixed
    point of ``F ← αSF + (1 − α)Y``, as in ``ssvae_core.data.graph``. Leaving row ``i``
    out removes ``(1 − α) G_{·i} onehot(y_i)`` from ``F``, ``G = (I − αS)⁻¹``, so its own
    row becomes ``F_i − (1 − α) G_ii onehot(y_i)``: one solve per left-out row, for at most
    ``MAX_HELD_OUT`` rows (seeded) of classes with another label.
    """
    labels = np.asarray(labels)
    affinity = knn_affinity(x, neighbours)
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    scale = scipy.sparse.diags(1.0 / np.sqrt(np.maximum(degree, np.finfo(np.float64).tiny)))
    operator = (scale @ affinity @ scale).tocsr()
    known = np.flatnonzero(labels >= 0)
    seeds = np.zeros((labels.size, num_classes))
    seeds[known, labels[known]] = 1.0 - alpha
    spread = _solve(operator, alpha, seeds)
    per_class = np.bincount(labels[known], minlength=num_classes)
    eligible = known[per_class[labels[known]] >= 2]
    if eligible.size == 0:
        return Propagation(spread, None)
    if eligible.size > MAX_HELD_OUT:
        eligible = np.sort(np.random.default_rng(ROWS_SEED).choice(eligible, MAX_HELD_OUT, replace=False))
    units = np.zeros((labels.size, eligible.size))
    units[eligible, np.arange(eligible.size)] = 1.0
    own = _solve(operator, alpha, units)[eligible, np.arange(eligible.size)]
    left_out = spread[eligible].copy()
    left_out[np.arange(eligible.size), labels[eligible]] -= (1.0 - alpha) * own
    mass = np.clip(left_out, 0.0, None)
    total = mass.sum(axis=-1)
    own_mass = mass[np.arange(eligible.size), labels[eligible]]
    share = np.divide(own_mass, total, out=np.zeros_like(total), where=total > 0)
    return Propagation(spread, np.argmax(left_out, axis=-1) == labels[eligible], share)


def subsample(labels: np.ndarray, max_rows: int = MAX_ROWS) -> np.ndarray:
    """The rows a measure over the training data reads, in order: every labeled row and at
    most ``max_rows`` unlabeled ones (a seeded draw when there are more)."""
    labels = np.asarray(labels)
    unlabeled = np.flatnonzero(labels < 0)
    if unlabeled.size <= max_rows:
        return np.arange(labels.size)
    keep = np.random.default_rng(ROWS_SEED).choice(unlabeled, max_rows, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(labels >= 0), keep]))


@dataclass(frozen=True)
class FeatureChoice:
    """The features a graph is built from: ``blur`` and ``deskew`` (as configured, or the
    plain pixels); ``facts``: which (``chosen``: "as configured", "plain pixels", or why no
    choice was made), and each candidate's mean held-out share and held-out accuracy; ``propagation``: the
    chosen features' propagation over ``subsample(labels)``, where one was measured."""

    blur: float
    deskew: bool
    facts: dict[str, Any]
    propagation: Propagation | None = field(default=None, compare=False, repr=False)


_CHOICES: OrderedDict[tuple, FeatureChoice] = OrderedDict()
_CACHED_CHOICES = 4


def choose_features(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    blur: float,
    deskew: bool,
    neighbours: int,
    alpha: float,
    metric: str = "euclidean",
) -> FeatureChoice:
    """The configured features (``blur``, ``deskew``) or the plain pixels, both on the
    configured ``metric``, whichever propagates the held-out labels better over the kNN
    graph (``propagate``, on ``subsample(labels)``): the larger mean share of a left-out
    labeled row's propagated mass on its own label (``Propagation.held_out_share``; smoother
    than the share of rows labeled right, which few labels make a coarse count); a tie
    keeps the configured ones. Nothing is measured — the configured features kept — when
    they are the plain pixels already or no class has two labels. The graph-label term and
    the calibration ask the same question of the same rows, so the last few answers are
    kept (keyed by a digest of the rows and labels).
    """
    labels = np.asarray(labels)
    if blur == 0 and not deskew:
        return FeatureChoice(blur, deskew, {"chosen": "as configured (the plain pixels)"})
    rows = subsample(labels)
    x, labels = np.ascontiguousarray(x[rows]), labels[rows]
    known = labels[labels >= 0]
    if not np.any(np.bincount(known, minlength=num_classes) >= 2):
        return FeatureChoice(blur, deskew, {"chosen": "as configured (no class has two labels to leave one out)"})
    digest = hashlib.blake2b(x.view(np.uint8).ravel(), digest_size=16)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).view(np.uint8).ravel())
    key = (digest.hexdigest(), x.shape, num_classes, float(blur), bool(deskew), metric, int(neighbours), float(alpha))
    if key in _CHOICES:
        _CHOICES.move_to_end(key)
        return _CHOICES[key]
    configured = propagate(
        smoothed_rows(x, blur, deskew=deskew, metric=metric), labels, num_classes, neighbours=neighbours, alpha=alpha
    )
    plain = propagate(smoothed_rows(x, 0.0, metric=metric), labels, num_classes, neighbours=neighbours, alpha=alpha)
    ours, theirs = float(np.mean(configured.held_out_share)), float(np.mean(plain.held_out_share))
    keep = ours >= theirs
    choice = FeatureChoice(
        blur if keep else 0.0,
        deskew if keep else False,
        {
            "chosen": "as configured" if keep else "plain pixels",
            "held_out": int(configured.held_out.size),
            "share_as_configured": round(ours, 6),
            "share_plain": round(theirs, 6),
            "accuracy_as_configured": round(configured.accuracy, 6),
            "accuracy_plain": round(plain.accuracy, 6),
        },
        configured if keep else plain,
    )
    _CHOICES[key] = choice
    while len(_CHOICES) > _CACHED_CHOICES:
        _CHOICES.popitem(last=False)
    return choice
