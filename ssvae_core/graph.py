"""Label propagation over the input-space k-nearest-neighbour graph.

Before training, the few known labels are spread over a kNN graph of the training inputs
(Zhou et al., 2004, "Learning with local and global consistency"):

    W_ij = 1 if j is among the k nearest neighbours of i or i among those of j, else 0
    S    = D^{-1/2} W D^{-1/2}                  (D the degree matrix of W)
    F    ← α S F + (1 − α) Y                    (Y the one-hot known labels, 0 elsewhere)

``F`` is iterated to convergence and normalised per row; ``max_y F_iy`` is how confident
the graph is about row ``i``. The most confident unlabeled rows become *graph labels*, a
training signal for the head next to the true labels (``loss.graph_label_weight``). They
never enter the τ counts: τ stays an estimate from the true labels alone.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from ssvae_core.neighbours import nearest_neighbours


def knn_affinity(x: np.ndarray, num_neighbours: int) -> scipy.sparse.csr_matrix:
    """The symmetric 0/1 affinity ``W`` of the kNN graph of ``x`` (rows flattened)."""
    neighbours = nearest_neighbours(x, num_neighbours)
    count, k = neighbours.shape
    rows = np.repeat(np.arange(count), k)
    directed = scipy.sparse.csr_matrix(
        (np.ones(rows.size, dtype=np.float64), (rows, neighbours.reshape(-1))), shape=(count, count)
    )
    return directed.maximum(directed.T).tocsr()


def propagate_labels(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    num_neighbours: int = 10,
    alpha: float = 0.2,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
) -> np.ndarray:
    """Label distributions ``F`` (``N × Y``, rows summing to 1) spread from ``labels``.

    ``labels`` holds a class per row, ``-1`` where unknown. A row the graph never reaches
    (a component without any known label) gets the uniform distribution.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    labels = np.asarray(labels)
    affinity = knn_affinity(x, num_neighbours)
    degree = np.asarray(affinity.sum(axis=1)).reshape(-1)
    inverse_sqrt = scipy.sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    normalised = (inverse_sqrt @ affinity @ inverse_sqrt).tocsr()
    known = np.zeros((labels.shape[0], num_classes))
    labeled = labels >= 0
    known[np.flatnonzero(labeled), labels[labeled]] = 1.0
    clamped = (1.0 - alpha) * known
    spread = known
    for _ in range(max_iterations):
        updated = alpha * (normalised @ spread) + clamped
        converged = np.max(np.abs(updated - spread)) < tolerance
        spread = updated
        if converged:
            break
    totals = spread.sum(axis=1, keepdims=True)
    uniform = np.full_like(spread, 1.0 / num_classes)
    return np.where(totals > 0, spread / np.where(totals > 0, totals, 1.0), uniform)


def graph_labels(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    share: float,
    num_neighbours: int = 10,
    alpha: float = 0.2,
) -> np.ndarray:
    """A propagated label for the ``share`` most confident unlabeled rows, ``-1`` elsewhere.

    Known labels stay ``-1`` here: they reach the loss through the supervised term.
    Ties at the confidence cut-off are resolved by row order.
    """
    labels = np.asarray(labels)
    result = np.full(labels.shape[0], -1, dtype=np.int32)
    unlabeled = np.flatnonzero(labels < 0)
    chosen_count = round(share * unlabeled.size)
    if chosen_count == 0 or not np.any(labels >= 0):
        return result
    distributions = propagate_labels(
        x, labels, num_classes, num_neighbours=num_neighbours, alpha=alpha
    )[unlabeled]
    confidence = distributions.max(axis=1)
    order = np.argsort(-confidence, kind="stable")[:chosen_count]
    result[unlabeled[order]] = distributions[order].argmax(axis=1)
    return result
