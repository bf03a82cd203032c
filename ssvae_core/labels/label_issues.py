"""Label issues: the labeled examples the model most disputes, with the label it suggests.

Each labeled example gets *out-of-sample* class probabilities — what the model would say
about it had its own label not been given — from two estimates, averaged:

``τ left out``
    For a model with channels, ``p̃(y|x_i) = Σ_c q(c|x_i) τ⁻ⁱ_{c,y}`` where ``τ⁻ⁱ`` is τ
    rebuilt from the soft counts ``s_{c,y} = Σ_j q(c|x_j) [y_j = y]`` of every *other*
    labeled example (``τ_{c,y} = (s_{c,y} + α₀) / Σ_{y'} (s_{c,y'} + α₀)``). A model without
    channels gives its own ``p(y|x_i)`` here.
``neighbours``
    The labels of the ``k`` labeled examples nearest to ``x_i`` in the latent space (the
    posterior means), weighted by ``1 / distance``, with add-one smoothing.

The examples are ranked by their *self-confidence*, the out-of-sample probability of the
label they hold (lowest first; confident learning's ranking, Northcutt et al. 2021), and the
suggested label is the most probable one. An example whose label a person confirmed (the
store's ``confirmed`` flag, set by the studio's label-issue view or ``ssvae label
--confirm``) is not proposed again until its label changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssvae_core.errors import ConfigError

DEFAULT_ISSUES = 20
NEIGHBOURS = 10
_CHUNK = 1024

__all__ = [
    "DEFAULT_ISSUES",
    "LabelIssue",
    "find_label_issues",
    "out_of_sample_probabilities",
    "review_run",
    "run_issues",
    "wrong_labels",
]


@dataclass(frozen=True)
class LabelIssue:
    """One labeled example the model disputes."""

    index: int
    label: str
    suggested: str
    p_label: float
    p_suggested: float
    source: str

    def to_json(self) -> dict[str, Any]:
        """The issue as a JSON object."""
        return {
            "index": self.index,
            "label": self.label,
            "suggested": self.suggested,
            "p_label": round(self.p_label, 5),
            "p_suggested": round(self.p_suggested, 5),
            "source": self.source,
        }


def _left_out_tau(r: np.ndarray, y: np.ndarray, num_classes: int, alpha0: float) -> np.ndarray:
    onehot = np.eye(num_classes)[y]
    counts = r.T @ onehot  # (K, Y)
    totals = counts.sum(axis=1)  # (K,)
    out = np.empty((len(y), num_classes))
    for start in range(0, len(y), _CHUNK):
        part = slice(start, start + _CHUNK)
        rp, hp = r[part], onehot[part]
        numer = counts[None] + alpha0 - rp[:, :, None] * hp[:, None, :]  # (B, K, Y)
        denom = totals[None] + num_classes * alpha0 - rp  # (B, K)
        out[part] = np.einsum("bk,bky->by", rp, numer / denom[:, :, None])
    return out


def _neighbour_votes(z: np.ndarray, y: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(y) - 1)
    votes = np.ones((len(y), num_classes))  # add-one smoothing
    if k < 1:
        return votes / votes.sum(axis=1, keepdims=True)
    distance, nearest = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    for row in range(len(y)):
        others = nearest[row] != row
        chosen, far = nearest[row][others][:k], distance[row][others][:k]
        weight = 1.0 / np.maximum(far, 1e-6)
        np.add.at(votes[row], y[chosen], k * weight / weight.sum())
    return votes / votes.sum(axis=1, keepdims=True)


def out_of_sample_probabilities(
    y: np.ndarray,
    num_classes: int,
    *,
    responsibilities: np.ndarray,
    z: np.ndarray,
    probabilities: np.ndarray,
    alpha0: float = 1.0,
    k: int = NEIGHBOURS,
) -> np.ndarray:
    """``(N, Y)`` class probabilities of the labeled examples (labels ``y``, positions in
    the classes), each estimated without its own label (see the module docstring)."""
    y = np.asarray(y, dtype=np.int64)
    r = np.asarray(responsibilities, dtype=np.float64)
    if r.ndim == 2 and r.shape[1] > 0:
        held_out = _left_out_tau(r, y, num_classes, alpha0)
    else:
        held_out = np.asarray(probabilities, dtype=np.float64)[:, :num_classes]
    neighbours = _neighbour_votes(np.asarray(z, dtype=np.float64).reshape(len(y), -1), y, num_classes, k)
    return 0.5 * held_out + 0.5 * neighbours


def find_label_issues(
    indices: Sequence[int],
    labels: Sequence[str],
    names: Sequence[str],
    probabilities: np.ndarray,
    *,
    sources: Sequence[str] | None = None,
    confirmed: set[int] | frozenset[int] = frozenset(),
    n: int = DEFAULT_ISSUES,
) -> list[LabelIssue]:
    """The ``n`` examples (``indices`` with ``labels``, out-of-sample ``probabilities`` over
    ``names``) with the lowest probability of their own label, the suggested label above
    it; examples in ``confirmed`` and those whose label is the suggestion are left out."""
    position = {name: i for i, name in enumerate(names)}
    order = np.argsort(
        [probabilities[row, position[label]] for row, label in enumerate(labels)], kind="stable"
    )
    issues: list[LabelIssue] = []
    for row in order:
        index, label = int(indices[row]), labels[row]
        best = int(np.argmax(probabilities[row]))
        if index in confirmed or names[best] == label:
            continue
        issues.append(LabelIssue(
            index=index, label=label, suggested=names[best],
            p_label=float(probabilities[row, position[label]]),
            p_suggested=float(probabilities[row, best]),
            source=sources[row] if sources is not None else "",
        ))
        if len(issues) == n:
            break
    return issues


def classifier_issues(
    classifier: Any, x: np.ndarray, store: Any, *, n: int = DEFAULT_ISSUES
) -> list[LabelIssue]:
    """The label issues of ``store``'s current labels of the model's classes, for the
    ``classifier`` trained on the examples ``x`` (rows of the run's dataset)."""
    from ssvae_core.modelling.inference import infer

    names = list(classifier.label_names)
    latest = {entry.index: entry for entry in store.entries}
    chosen = [entry for index, entry in sorted(latest.items()) if entry.label in names]
    if len(chosen) < 2:
        return []
    rows = np.asarray([entry.index for entry in chosen], dtype=np.int64)
    result = infer(classifier.model, classifier.state.head_state, x[rows], calibration=classifier.calibration)
    head = classifier.model.head
    p = out_of_sample_probabilities(
        np.asarray([names.index(entry.label) for entry in chosen]), len(names),
        responsibilities=result.responsibilities, z=result.z_mean, probabilities=result.probabilities,
        alpha0=float(getattr(head, "alpha0", 1.0)),
    )
    return find_label_issues(
        rows.tolist(), [entry.label for entry in chosen], names, p,
        sources=[entry.source for entry in chosen],
        confirmed={entry.index for entry in chosen if entry.confirmed}, n=n,
    )


def run_issues(
    run_dir: str | os.PathLike[str],
    *,
    n: int = DEFAULT_ISSUES,
    data: str | None = None,
    test_data: str | None = None,
) -> list[LabelIssue]:
    """``ssvae labels RUN --issues``: the label issues of a run's store under its model."""
    from ssvae_core.runs.run import Run

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive integer; got {n!r}")
    run = Run.open(run_dir, "labels", data=data, test_data=test_data)
    run.require_checkpoint("before looking for label issues")
    store = run.label_store()
    return classifier_issues(run.load_classifier(), run.dataset.x, store, n=n)


def review_run(run_dir: str | os.PathLike[str], oracle: Any, n: int) -> dict[str, int]:
    """A careful review of a run's top ``n`` label issues, as a loop simulates it: the
    ``oracle``'s true label (``Oracle.truth``) replaces a wrong one and confirms a
    right one (source ``review``). Returns ``{"reviewed": ..., "corrected": ...}``."""
    from ssvae_core.runs.run import Run

    issues = run_issues(run_dir, n=n)
    if not issues:
        return {"reviewed": 0, "corrected": 0}
    indices = [issue.index for issue in issues]
    truth = oracle.truth(indices)
    run = Run(Path(run_dir))
    with run.lock():
        store = run.label_store(oracle.dataset, oracle.split)
        updated = store.add(
            indices, truth, x=oracle.dataset.x, source="review", allowed=oracle.split.train,
            relabel=True, confirm=True,
        )
        updated.save(run.store_path)
    corrected = sum(1 for issue, name in zip(issues, truth, strict=True) if issue.label != name)
    return {"reviewed": len(issues), "corrected": corrected}


def wrong_labels(run_dir: str | os.PathLike[str], oracle: Any) -> int:
    """How many of a run's current labels differ from the data's own (a loop's noisy oracle)."""
    from ssvae_core.labels.store import LabelStore
    from ssvae_core.runs.run import Run

    current = LabelStore.load(Run(Path(run_dir)).store_path).current()
    indices = sorted(current)
    return sum(1 for index, name in zip(indices, oracle.truth(indices), strict=True) if current[index] != name)
