"""Spectral clusters of the input kNN graph and the graph_cluster term (ssvae_core.data.graph)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.data.graph import clusters_to_channels, smoothed_rows, spectral_clusters
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms.builtin import GraphClusterTerm


def _blobs(per_blob: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 5 dimensions, shuffled."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 5, [10.0] + [0.0] * 4, [0.0, 10.0, 0.0, 0.0, 0.0]])
    truth = np.repeat(np.arange(3), per_blob)
    x = centres[truth] + rng.normal(scale=0.5, size=(truth.size, 5))
    order = rng.permutation(truth.size)
    return x[order].astype(np.float32), truth[order]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(i), int(j)) for i, j in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_spectral_clusters_recover_separated_blobs() -> None:
    x, truth = _blobs()
    clusters = spectral_clusters(x, 3, num_neighbours=5)
    assert _same_partition(clusters, truth)


def test_spectral_clusters_are_deterministic_and_refuse_too_many_clusters() -> None:
    x, _ = _blobs()
    np.testing.assert_array_equal(spectral_clusters(x, 3), spectral_clusters(x, 3))
    with pytest.raises(ValueError, match="2 <= clusters < rows"):
        spectral_clusters(x[:3], 3)


def test_blur_smooths_images_only() -> None:
    image = np.zeros((1, 5, 5), dtype=np.float32)
    image[0, 2, 2] = 1.0
    blurred = smoothed_rows(image, 1.0).reshape(5, 5)
    assert blurred[2, 2] < 1.0 and blurred[2, 1] > 0.0
    np.testing.assert_allclose(blurred.sum(), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(smoothed_rows(image, 0.0), image.reshape(1, 25))
    with pytest.raises(ValueError, match=r"blur needs images"):
        smoothed_rows(np.zeros((4, 6)), 1.0)


def test_clusters_go_to_the_channel_of_the_label_they_hold() -> None:
    clusters = np.array([0, 0, 1, 1, 2, 2])
    # Cluster 0 holds label 2, cluster 1 label 0, cluster 2 nothing known.
    mass = np.zeros((6, 3))
    mass[0, 2] = 1.0
    mass[3, 0] = 1.0
    mapping = clusters_to_channels(clusters, mass, 4)
    assert mapping[0] == 2 and mapping[1] == 0
    assert len(set(mapping.tolist())) == 3
    np.testing.assert_array_equal(clusters_to_channels(clusters, None, 4), [0, 1, 2])
    with pytest.raises(ValueError, match="cannot be matched"):
        clusters_to_channels(clusters, None, 2)


def test_the_term_targets_unlabeled_rows_at_their_clusters_channel() -> None:
    x, truth = _blobs()
    labels = np.full(truth.size, -1)
    # One known label per blob: blob b carries label (b + 1) mod 3.
    for blob in range(3):
        labels[np.flatnonzero(truth == blob)[0]] = (blob + 1) % 3
    term = GraphClusterTerm(Schedule(1.0), clusters=3, neighbours=5, blur=0.0, only_without_labels=False)
    targets = term.prepare(x, labels, 3)["cluster_targets"]
    assert np.all(targets[labels >= 0] == -1)
    unlabeled = labels < 0
    np.testing.assert_array_equal(targets[unlabeled], (truth[unlabeled] + 1) % 3)


def test_the_term_is_the_cross_entropy_of_the_responsibilities() -> None:
    class Inputs:
        responsibilities = jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])

        @staticmethod
        def field(name: str) -> jnp.ndarray:
            assert name == "cluster_targets"
            return jnp.array([0, -1])

    term = GraphClusterTerm(Schedule(1.0), clusters=3, neighbours=5, blur=0.0)
    value = term(Inputs(), None)  # type: ignore[arg-type]
    np.testing.assert_allclose(np.asarray(value.values)[0], np.log(2.0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(value.mask), [1.0, 0.0])


def test_the_term_does_nothing_in_a_run_with_labels_unless_told_to() -> None:
    x, truth = _blobs()
    labels = np.full(truth.size, -1)
    term = GraphClusterTerm(Schedule(1.0), clusters=3, neighbours=5, blur=0.0)
    without = term.prepare(x, labels, 3)["cluster_targets"]
    assert _same_partition(without, truth)
    labels[0] = truth[0]
    assert np.all(term.prepare(x, labels, 3)["cluster_targets"] == -1)
