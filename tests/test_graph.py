"""Label propagation over the input kNN graph (ssvae_core.data.graph) against hand values."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.data.graph import graph_labels, knn_affinity, propagate_labels
from ssvae_core.modelling.objective import Objective
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms.builtin import GraphLabelTerm
from ssvae_core.training import sample_batch, training_arrays


def _only(term: GraphLabelTerm) -> Objective:
    one = Schedule(1.0)
    return Objective(one, one, one, (term,), ("graph_label",), True)

# Three points on a line, each joined to its nearest neighbour: 0–1 and 2–1 (|3 − 1| < |3 − 0|).
LINE = np.array([[0.0], [1.0], [3.0]])


def test_knn_affinity_is_symmetric_binary_and_has_no_self_loops() -> None:
    affinity = knn_affinity(LINE, 1).toarray()
    assert affinity.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_propagation_matches_the_closed_form_fixed_point() -> None:
    alpha = 0.5
    labels = np.array([0, -1, 1])
    # S = D^{-1/2} W D^{-1/2} with degrees 1, 2, 1: S01 = S12 = 1/√2.
    s = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) / np.sqrt(2.0)
    known = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    fixed_point = (1 - alpha) * np.linalg.solve(np.eye(3) - alpha * s, known)
    expected = fixed_point / fixed_point.sum(axis=1, keepdims=True)
    result = propagate_labels(LINE, labels, 2, num_neighbours=1, alpha=alpha, tolerance=1e-12)
    np.testing.assert_allclose(result, expected, atol=1e-9)
    # The middle point sits symmetrically between the two labels.
    np.testing.assert_allclose(result[1], [0.5, 0.5], atol=1e-9)


def test_propagation_gives_an_unreachable_component_the_uniform_distribution() -> None:
    # Two pairs far apart; only the first pair holds a label.
    x = np.array([[0.0], [0.1], [10.0], [10.1]])
    result = propagate_labels(x, np.array([1, -1, -1, -1]), 3, num_neighbours=1)
    np.testing.assert_allclose(result[:2], [[0.0, 1.0, 0.0]] * 2, atol=1e-9)
    np.testing.assert_allclose(result[2:], np.full((2, 3), 1 / 3))


def test_propagation_refuses_alpha_outside_the_open_unit_interval() -> None:
    with pytest.raises(ValueError, match="alpha"):
        propagate_labels(LINE, np.array([0, -1, -1]), 2, num_neighbours=1, alpha=1.0)


def test_graph_labels_label_the_most_confident_share_of_unlabeled_rows() -> None:
    # Two clusters of four points, one label each; the labeled points' neighbours are the
    # most confident unlabeled rows.
    x = np.array([[0.0], [0.2], [0.5], [0.9], [10.0], [10.2], [10.5], [10.9]])
    labels = np.array([0, -1, -1, -1, 1, -1, -1, -1])
    result = graph_labels(x, labels, 2, share=0.5, num_neighbours=1)
    assert result[[0, 4]].tolist() == [-1, -1]  # known labels stay with the supervised term
    chosen = np.flatnonzero(result >= 0)
    assert chosen.size == 3  # round(0.5 · 6)
    assert all(result[i] == (0 if i < 4 else 1) for i in chosen)
    assert graph_labels(x, labels, 2, share=1.0, num_neighbours=1).tolist() == [
        -1, 0, 0, 0, -1, 1, 1, 1,
    ]


def test_graph_labels_per_class_give_every_class_its_share() -> None:
    # Two disconnected clusters: every unlabeled row is fully confident, so the global cut
    # of round(0.5 · 6) = 3 rows takes them in row order, all from class 0.
    x = np.array([[0.0], [0.2], [0.5], [0.9], [10.0], [10.2], [10.5], [10.9]])
    labels = np.array([0, -1, -1, -1, 1, -1, -1, -1])
    overall = graph_labels(x, labels, 2, share=0.5, num_neighbours=1)
    assert overall.tolist() == [-1, 0, 0, 0, -1, -1, -1, -1]
    # Per class, each of the two propagated classes keeps round(0.5 · 3) = 2 rows.
    each = graph_labels(x, labels, 2, share=0.5, num_neighbours=1, per_class=True)
    assert each.tolist() == [-1, 0, 0, -1, -1, 1, 1, -1]
    assert graph_labels(x, labels, 2, share=1.0, num_neighbours=1, per_class=True).tolist() == [
        -1, 0, 0, 0, -1, 1, 1, 1,
    ]


@pytest.mark.parametrize("per_class", [False, True])
def test_graph_labels_leave_rows_the_graph_never_reached_unlabeled(per_class: bool) -> None:
    # The second pair holds no label: its rows are uniform, not class 0's least confident.
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1]])
    labels = np.array([1, -1, -1, -1, -1])
    result = graph_labels(x, labels, 2, share=1.0, num_neighbours=1, per_class=per_class)
    assert result.tolist() == [-1, 1, 1, -1, -1]


def test_graph_labels_are_empty_without_any_known_label_or_with_zero_share() -> None:
    assert graph_labels(LINE, np.array([-1, -1, -1]), 2, share=1.0, num_neighbours=1).tolist() == [-1] * 3
    assert graph_labels(LINE, np.array([0, -1, -1]), 2, share=0.0, num_neighbours=1).tolist() == [-1] * 3


def test_batches_carry_the_prepared_graph_labels_of_their_rows() -> None:
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1)
    propagated = np.array([-1, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    labels = np.full(10, -1)
    labels[[0, 3]] = 0
    term = GraphLabelTerm(Schedule(1.0), share=0.8, neighbours=2, alpha=0.2, per_class=False)
    data = training_arrays(
        x, labels, objective=_only(term), num_classes=3
    )
    data = eqx.tree_at(lambda d: d.fields["graph_labels"], data, jnp.asarray(propagated))
    batch = sample_batch(data, jax.random.PRNGKey(0), 16, 4)
    rows = np.asarray(batch.x).reshape(-1).astype(int)
    np.testing.assert_array_equal(np.asarray(batch.rows), rows)
    np.testing.assert_array_equal(np.asarray(batch.fields["graph_labels"]), propagated[rows])


def _slanted_bar(size: int, slope: float, shift: int = 0) -> np.ndarray:
    """A one-pixel bar running down the image, ``slope`` columns per row, off centre."""
    image = np.zeros((size, size), dtype=np.float32)
    for row in range(2, size - 2):
        image[row, round(size / 2 + shift + slope * (row - size / 2))] = 1.0
    return image


def _column_spread(image: np.ndarray) -> float:
    cols = np.arange(image.shape[1])
    centres = [(row * cols).sum() / row.sum() for row in image if row.sum() > 0]
    return float(np.std(centres))


def test_deskewing_stands_slanted_strokes_upright_and_centres_them() -> None:
    from ssvae_core.data.graph import deskewed

    images = np.stack([_slanted_bar(20, 0.4, shift=3), _slanted_bar(20, -0.3), np.zeros((20, 20), np.float32)])
    upright = deskewed(images)
    assert _column_spread(images[0]) > 1.5
    for image in upright[:2]:
        assert _column_spread(image) < 0.3
        cols = np.arange(20)
        centre = (image.sum(axis=0) * cols).sum() / image.sum()
        assert abs(centre - 9.5) < 0.6
    np.testing.assert_array_equal(upright[2], images[2])
    # One trailing channel is kept; several channels or flat rows are refused.
    assert deskewed(images[..., None]).shape == (3, 20, 20, 1)
    with pytest.raises(ValueError, match="one-channel images"):
        deskewed(np.zeros((2, 20, 20, 3)))
    with pytest.raises(ValueError, match="one-channel images"):
        deskewed(np.zeros((2, 64)))


def test_the_graph_terms_build_their_graph_from_deskewed_images_when_told() -> None:
    from ssvae_core.data.graph import deskewed, smoothed_rows
    from ssvae_core.modelling.terms.builtin import GraphClusterTerm

    bars = np.stack([_slanted_bar(16, s, shift=t) for s, t in ((0.0, 0), (0.6, 2), (-0.5, -2))])
    np.testing.assert_allclose(smoothed_rows(bars, 0.0, deskew=True), deskewed(bars).reshape(3, -1))
    # Deskewed (and blurred a little, as bilinear resampling spreads a bar over two
    # pixels), bars of every slant and place nearly coincide; as they are, they do not.
    upright = smoothed_rows(bars, 1.0, deskew=True)
    as_drawn = smoothed_rows(bars, 1.0)
    assert np.linalg.norm(upright - upright[0], axis=1).max() < 0.2
    assert np.linalg.norm(as_drawn - as_drawn[0], axis=1)[1:].min() > 1.5
    flat = np.zeros((6, 5), np.float32)
    labels = np.array([0, 1, -1, -1, -1, -1])
    one = Schedule(1.0)
    for term in (
        GraphLabelTerm(one, share=1.0, neighbours=2, alpha=0.9, per_class=False, deskew=True),
        GraphClusterTerm(one, clusters=2, neighbours=2, blur=0.0, only_without_labels=False, deskew=True),
    ):
        with pytest.raises(ValueError, match="one-channel images"):
            term.prepare(flat, labels, 2)


def _faint_and_bold(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 4-pixel rows: ink mostly on the first two pixels or on the last two,
    its direction turning a little from row to row, each row drawn at an intensity from 0.02
    to 1 in shuffled order. In Euclidean distance a faint row of one class is nearer a faint
    row of the other than a bold row of its own; in direction it is not."""
    turn = np.linspace(0.0, 0.3, count)[:, None]
    strength = np.random.default_rng(0).permutation(np.linspace(0.02, 1.0, count))[:, None]
    first = strength * (np.array([1.0, 0.6, 0.0, 0.0]) + turn * np.array([0.0, 1.0, 0.3, 0.0]))
    second = strength * (np.array([0.0, 0.0, 0.6, 1.0]) + turn * np.array([0.0, 0.3, 1.0, 0.0]))
    return np.concatenate([first, second]), np.repeat([0, 1], count)


def test_cosine_rows_have_unit_length_and_an_unknown_metric_is_refused() -> None:
    from ssvae_core.data.graph import smoothed_rows

    rows, _ = _faint_and_bold(5)
    rows = np.concatenate([rows, np.zeros((1, 4))])
    unit = smoothed_rows(rows, 0.0, metric="cosine")
    np.testing.assert_allclose(np.linalg.norm(unit[:-1], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(unit[-1], np.zeros(4))
    np.testing.assert_array_equal(smoothed_rows(rows, 0.0), rows.astype(np.float32))
    with pytest.raises(ValueError, match="unknown graph metric 'manhattan'; allowed: euclidean, cosine"):
        smoothed_rows(rows, 0.0, metric="manhattan")


def test_a_cosine_graph_joins_rows_by_their_direction_not_their_intensity() -> None:
    from ssvae_core.data.graph import smoothed_rows

    rows, classes = _faint_and_bold(20)
    across = classes[:, None] != classes[None, :]
    euclidean = knn_affinity(smoothed_rows(rows, 0.0), 3).toarray()
    cosine = knn_affinity(smoothed_rows(rows, 0.0, metric="cosine"), 3).toarray()
    assert euclidean[across].sum() > 0  # faint rows of the two classes are joined
    assert cosine[across].sum() == 0
    labels = np.full(40, -1)
    labels[[0, 20]] = [0, 1]
    term = GraphLabelTerm(Schedule(1.0), share=1.0, neighbours=3, alpha=0.9, per_class=False, metric="cosine")
    found = term.prepare(rows, labels, 2)["graph_labels"]
    unlabeled = labels < 0
    assert np.all(found[unlabeled] == classes[unlabeled])
    # The cluster term cuts the same cosine graph: its two clusters are the two classes.
    from ssvae_core.modelling.terms.builtin import GraphClusterTerm

    clusters = GraphClusterTerm(
        Schedule(1.0), clusters=2, neighbours=3, blur=0.0, only_without_labels=True, metric="cosine"
    ).prepare(rows, np.full(40, -1), 2)["cluster_targets"]
    assert len(set(clusters[:20])) == 1 and len(set(clusters[20:])) == 1 and clusters[0] != clusters[20]


def test_the_graph_metric_is_a_validated_option_of_every_graph_section() -> None:
    from ssvae_core.config import load_config
    from ssvae_core.errors import ConfigError

    config = load_config(
        None,
        ["loss.graph_label.metric=cosine", "calibration.metric=cosine", "loss.graph_cluster.metric=cosine"],
        preset="digits",
    )
    assert config.calibration.metric == "cosine"
    with pytest.raises(ConfigError, match="metric") as raised:
        load_config(None, ["loss.graph_label.metric=manhattan"], preset="digits")
    assert "cosine" in str(raised.value)


# --- approximate neighbours above a size ----------------------------------------------------


def _blobs(rows: int = 1500, seed: int = 0) -> np.ndarray:
    """Rows in 15 tight clusters in 20 dimensions, with a few exact duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(size=(15, 20)) * 4.0
    x = centres[rng.integers(0, 15, rows)] + 0.3 * rng.standard_normal((rows, 20))
    x[1] = x[0]  # a duplicate may take a row's own first place among its neighbours
    return x.astype(np.float32)


def test_up_to_the_limit_neighbours_are_exact_and_above_it_approximate_but_close() -> None:
    from sklearn.neighbors import NearestNeighbors

    from ssvae_core.data.neighbours import EXACT_UP_TO, exact_neighbours_up_to, nearest_neighbours

    x = _blobs()
    exact = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    assert EXACT_UP_TO >= 50_000
    assert np.array_equal(nearest_neighbours(x, 10), exact)
    with exact_neighbours_up_to(x.shape[0] - 1):
        approximate = nearest_neighbours(x, 10)
        affinity = knn_affinity(x, 10)
    assert approximate.shape == exact.shape
    assert not np.any(approximate == np.arange(x.shape[0])[:, None])  # never a row itself
    assert all(len(set(row)) == 10 for row in approximate)
    recall = np.mean([np.intersect1d(a, e).size for a, e in zip(approximate, exact, strict=True)]) / 10
    assert 0.9 <= recall < 1.0 or np.array_equal(np.sort(approximate), np.sort(exact))
    assert np.array_equal(nearest_neighbours(x, 10, exact_up_to=0), approximate)  # seeded
    assert affinity.nnz >= 10 * x.shape[0] and affinity.diagonal().sum() == 0
    with pytest.raises(ValueError, match="rows >= 0"), exact_neighbours_up_to(-1):
        pass


def test_the_exact_neighbour_limit_is_a_validated_data_option() -> None:
    from ssvae_core.config import config_from_dict
    from ssvae_core.errors import ConfigError

    assert config_from_dict({}).data.exact_neighbours == 50_000
    with pytest.raises(ConfigError, match="exact_neighbours"):
        config_from_dict({"data": {"exact_neighbours": -1}})


def test_a_fit_above_the_limit_builds_every_graph_approximately(monkeypatch, synthetic) -> None:
    """Graph labels and the calibration's propagation both go through the approximate
    neighbours when the training rows exceed ``data.exact_neighbours`` (and only then)."""
    from sklearn.neighbors import NearestNeighbors

    from ssvae_core.api import SSVAEClassifier
    from ssvae_core.config import config_from_dict
    from ssvae_core.data import neighbours

    calls: list[int] = []

    def counted(flat: np.ndarray, count: int, *, seed: int = 0) -> np.ndarray:
        calls.append(flat.shape[0])
        return NearestNeighbors(n_neighbors=count + 1).fit(flat).kneighbors(flat, return_distance=False)[:, 1:]

    monkeypatch.setattr(neighbours, "approximate_neighbours", counted)

    def fit(limit: int) -> None:
        config = config_from_dict(
            {
                "data": {"exact_neighbours": limit},
                "model": {"latent_dim": 2, "embedding_dim": 4},
                "prior": {"name": "mixture", "num_components": 4},
                "encoder": {"hidden": [16]},
                "decoder": {"hidden": [16]},
                "loss": {"graph_label": {"weight": 1.0}},
                "train": {"steps": 2, "batch_size": 8, "log_every": 2},
            }
        )
        SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])

    fit(len(synthetic["x"]))
    assert calls == []
    fit(len(synthetic["x"]) - 1)
    assert len(calls) >= 2 and set(calls) <= {len(synthetic["x"])}
