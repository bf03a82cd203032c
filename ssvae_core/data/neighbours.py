"""Nearest neighbours of the training inputs, for the terms and the label propagation that
need a kNN graph.

Up to ``EXACT_UP_TO`` rows (``data.exact_neighbours``) the neighbours are exact
(scikit-learn's ``NearestNeighbors``, whose cost grows as N²); above it they are
approximate: pynndescent's nearest-neighbour descent (Dong, Moses and Li, 2011), whose cost
grows about as N·k and which on 60,000 MNIST rows finds nearly all of the exact neighbours
(``docs/benchmarks.md``, "Scale").
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np

EXACT_UP_TO = 50_000
"""Rows up to which ``nearest_neighbours`` is exact unless told otherwise."""

_exact_up_to: contextvars.ContextVar[int] = contextvars.ContextVar("exact_up_to", default=EXACT_UP_TO)


@contextlib.contextmanager
def exact_neighbours_up_to(rows: int) -> Iterator[None]:
    """Within the block, ``nearest_neighbours`` is exact up to ``rows`` rows (not above)."""
    if rows < 0:
        raise ValueError(f"exact_neighbours_up_to needs rows >= 0, got {rows}")
    token = _exact_up_to.set(rows)
    try:
        yield
    finally:
        _exact_up_to.reset(token)


def nearest_neighbours(x: np.ndarray, count: int, *, exact_up_to: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of each row's ``count`` nearest neighbours in pixel space (itself excluded).

    Exact for at most ``exact_up_to`` rows (default: ``exact_neighbours_up_to``'s setting,
    else ``EXACT_UP_TO``), else approximate (``approximate_neighbours``).
    ``count`` is capped at ``N − 1``; fewer than two rows is a ``ValueError``.
    """
    flat = x.reshape(x.shape[0], -1)
    count = min(count, flat.shape[0] - 1)
    if count < 1:
        raise ValueError("a nearest-neighbour graph needs at least two training examples")
    limit = _exact_up_to.get() if exact_up_to is None else exact_up_to
    if flat.shape[0] > limit:
        return approximate_neighbours(flat, count, seed=seed)
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=count + 1).fit(flat)
    return index.kneighbors(flat, return_distance=False)[:, 1:]


def approximate_neighbours(flat: np.ndarray, count: int, *, seed: int = 0) -> np.ndarray:
    """Each row's ``count`` approximate nearest neighbours (Euclidean, itself excluded) by
    nearest-neighbour descent, deterministic for a given ``seed``."""
    from pynndescent import NNDescent

    flat = np.ascontiguousarray(flat, dtype=np.float32)
    index = NNDescent(flat, n_neighbors=count + 1, metric="euclidean", random_state=seed, low_memory=True)
    found, _ = index.neighbor_graph
    # A row is usually its own first neighbour; where a duplicate took that place, the row
    # itself is dropped wherever it sits (or the farthest found, if it is missing).
    itself = found == np.arange(found.shape[0])[:, None]
    order = np.argsort(itself, axis=1, kind="stable")
    return np.take_along_axis(found, order, axis=1)[:, :count].astype(np.int64)
