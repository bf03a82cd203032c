"""Initial pseudo-inputs: random training inputs, k-means centres, or uniform noise.

Every choice is deterministic in the JAX key: a NumPy generator is seeded from it.
"""

from __future__ import annotations

import jax
import numpy as np
from jaxtyping import Float, PRNGKeyArray

INITS = ("random", "kmeans")


def _generator(key: PRNGKeyArray) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.bits(key, (4,))))


def initial_pseudo_inputs(
    init: str,
    num_components: int,
    input_shape: tuple[int, ...],
    data: Float[np.ndarray, "N ..."] | None,
    key: PRNGKeyArray,
) -> Float[np.ndarray, "K ..."]:
    """K pseudo-inputs of the input's shape.

    ``"random"`` draws K training inputs (without replacement when there are enough);
    ``"kmeans"`` takes the centres of k-means (K clusters) on the flattened training
    inputs, clipped to [0, 1]. Without ``data`` (a skeleton rebuilt to load a checkpoint,
    whose pseudo-inputs are overwritten) they are uniform noise on [0, 1).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    rng = _generator(key)
    shape = (num_components, *input_shape)
    if data is None:
        return rng.random(shape, dtype=np.float32)
    data = np.asarray(data, dtype=np.float32)
    if data.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"training inputs have sample shape {data.shape[1:]}, expected {tuple(input_shape)}"
        )
    if init == "random":
        picked = rng.choice(len(data), num_components, replace=len(data) < num_components)
        return data[picked]
    if len(data) < num_components:
        raise ValueError(
            f"init 'kmeans' needs at least num_components = {num_components} training inputs, "
            f"got {len(data)}"
        )
    from sklearn.cluster import KMeans  # imported on use: scikit-learn takes seconds to load

    kmeans = KMeans(num_components, n_init=1, random_state=int(rng.integers(2**31 - 1)))
    kmeans.fit(data.reshape(len(data), -1))
    return np.clip(kmeans.cluster_centers_, 0.0, 1.0).reshape(shape).astype(np.float32)
