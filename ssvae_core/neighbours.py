"""Nearest neighbours of the training inputs, for the terms and the label propagation that
need a kNN graph."""

from __future__ import annotations

import numpy as np


def nearest_neighbours(x: np.ndarray, count: int) -> np.ndarray:
    """Indices of each row's ``count`` nearest neighbours in pixel space (itself excluded).

    ``count`` is capped at ``N − 1``; fewer than two rows is a ``ValueError``.
    """
    from sklearn.neighbors import NearestNeighbors

    flat = x.reshape(x.shape[0], -1)
    count = min(count, flat.shape[0] - 1)
    if count < 1:
        raise ValueError("a nearest-neighbour graph needs at least two training examples")
    index = NearestNeighbors(n_neighbors=count + 1).fit(flat)
    return index.kneighbors(flat, return_distance=False)[:, 1:]
