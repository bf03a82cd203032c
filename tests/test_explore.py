"""Pictures of a trained model: the latent map's projection, each channel's members and
their reconstructions through it, image tiles, the run plots that use them, and the label
store's withdraw (the studio's undo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.labels.store import LabelStore
from ssvae_core.runs.explore import as_image, channel_members, project, reconstruct_through, tile
from ssvae_core.runs.plots import write_latent_plots


def test_pca_projection_finds_the_spread_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    t = rng.standard_normal(200)
    direction = np.array([1.0, 2.0, -2.0]) / 3.0
    z = 5.0 + np.outer(t, direction) + 0.01 * rng.standard_normal((200, 3))
    points = project(z, "pca")
    assert points.shape == (200, 2)
    assert np.allclose(points.mean(axis=0), 0.0, atol=1e-9)
    # the first axis carries the line, the second only the noise
    assert np.corrcoef(points[:, 0], t)[0, 1] ** 2 > 0.999
    assert np.std(points[:, 1]) < 0.05 * np.std(points[:, 0])
    assert np.array_equal(project(z, "pca"), points)
    assert np.allclose(project(-z, "pca"), -points)  # the axes are fixed by the rule, not by the SVD


def _two_groups_apart(points: np.ndarray) -> bool:
    """The first and second halves of ``points`` lie far apart for their spread."""
    half = len(points) // 2
    first, second = points[:half], points[half:]
    gap = np.linalg.norm(first.mean(axis=0) - second.mean(axis=0))
    return bool(gap > 3 * max(np.linalg.norm(first.std(axis=0)), np.linalg.norm(second.std(axis=0))))


def test_tsne_projection_and_unknown_projections() -> None:
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(0, 0.1, (40, 4)), rng.normal(5, 0.1, (40, 4))])
    points = project(z, "tsne")
    assert points.shape == (80, 2) and np.all(np.isfinite(points))
    assert _two_groups_apart(points)
    # the same means in two channels: t-SNE of the means alone cannot tell them apart,
    # the means with the responsibilities can
    same = np.concatenate([z[:40], z[:40]])
    r = np.repeat(np.eye(2), 40, axis=0)
    joint = project(same, "tsne-channels", responsibilities=r)
    assert _two_groups_apart(joint)
    assert project(z, "tsne-channels").shape == (80, 2)  # no channels: t-SNE of the means
    with pytest.raises(ConfigError, match="unknown projection 'umap'; allowed: classes, pca, channels, tsne, tsne-channels"):
        project(z, "umap")
    assert project(z[:1], "pca").shape == (1, 2) and project(z[:, :1], "pca").shape == (80, 2)


def test_channels_projection_separates_channels_that_share_their_means() -> None:
    """The run's latent map: the same means in three channels land in three places, each
    at its channel's anchor (in the given order around the circle), and a model without
    channels gets the PCA of its means."""
    rng = np.random.default_rng(2)
    z = rng.normal(0, 1, (30, 4))
    same = np.concatenate([z, z, z])
    r = np.repeat(np.eye(3), 30, axis=0)
    points = project(same, "channels", responsibilities=r, order=[2, 0, 1])
    centres = [points[30 * c : 30 * (c + 1)].mean(axis=0) for c in range(3)]
    spread = max(np.linalg.norm(points[30 * c : 30 * (c + 1)].std(axis=0)) for c in range(3))
    assert min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :]) > 3 * spread
    angles = [np.arctan2(c[1], c[0]) % (2 * np.pi) for c in centres]
    assert np.argsort(angles).tolist() == [2, 0, 1]  # channel 2 first around the circle
    undecided = project(same[:1], "channels", responsibilities=np.full((1, 3), 1 / 3))
    assert np.allclose(undecided, 0.0, atol=1e-9)
    assert np.array_equal(project(z, "channels"), project(z, "pca"))


def test_channel_members_are_the_channels_own_rows_most_typical_first() -> None:
    r = np.array([
        [0.9, 0.1, 0.0],
        [0.6, 0.4, 0.0],
        [0.2, 0.8, 0.0],
        [0.45, 0.55, 0.0],
        [0.7, 0.3, 0.0],
    ])
    members = channel_members(r, count=3)
    assert [m.tolist() for m in members] == [[0, 4, 1], [2, 3, 1], [0, 1, 2]]
    assert channel_members(np.zeros((5, 0))) == []


def test_tile_lays_out_scaled_images_and_as_image_shapes() -> None:
    images = [[np.zeros((8, 8)), np.ones((8, 8)), np.full((8, 8), 0.5)], [np.ones((8, 8))]]
    canvas = tile(images, scale=2, gap=1)
    assert canvas.shape == (2 * 16 + 1, 3 * 16 + 2) and canvas.dtype == np.uint8
    assert canvas[0, 0] == 0 and canvas[0, 17] == 255 and canvas[0, 34] == 128
    assert np.all(canvas[17:, 17:] == 255)  # the short second row is padded with background
    standardised = tile([[np.array([[-2.0, 0.0], [1.0, 2.0]])]], scale=1, gap=0)
    assert standardised.min() == 0 and standardised.max() == 255
    assert as_image(np.zeros(64)).shape == (8, 8)
    assert as_image(np.zeros((1, 28, 28))).shape == (28, 28)
    assert as_image(np.zeros((28, 28, 1))).shape == (28, 28)
    assert as_image(np.zeros((3, 5, 5))).shape == (5, 5, 3)
    assert as_image(np.zeros(10)).shape == (1, 10)


def test_reconstruction_through_a_channel_uses_that_channels_embedding(
    fitted_classifier: SSVAEClassifier, synthetic: dict[str, np.ndarray]
) -> None:
    model = fitted_classifier.model
    z = fitted_classifier.encode(synthetic["x"][:5])[0]
    through = [reconstruct_through(model, z, c) for c in range(4)]
    assert through[0].shape == (5, 4, 4)
    expected = np.asarray(model.reconstruct(z, np.full(5, 2, dtype=np.int32)))
    assert np.allclose(through[2], expected, atol=1e-6)
    assert not np.allclose(through[0], through[1])


def test_run_plots_draw_the_latent_map_and_channel_reconstructions(
    fitted_classifier: SSVAEClassifier, synthetic: dict[str, np.ndarray], tmp_path: Path
) -> None:
    written = write_latent_plots(tmp_path, fitted_classifier, synthetic["x"], synthetic["partial"] >= 0)
    assert [p.name for p in written] == ["latent_map.png", "channel_reconstructions.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    standard = SSVAEClassifier(config_from_dict({
        "model": {"latent_dim": 2}, "prior": {"name": "standard"},
        "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}, "head": {"name": "softmax"},
        "train": {"steps": 2, "batch_size": 8, "log_every": 2},
    })).fit(synthetic["x"], synthetic["partial"])
    (tmp_path / "standard").mkdir()
    written = write_latent_plots(tmp_path / "standard", standard, synthetic["x"])
    assert [p.name for p in written] == ["latent_map.png"]  # no channels, no reconstructions


def test_withdraw_takes_back_exactly_the_named_label_from_its_source() -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    store = LabelStore.empty().add([1, 2], ["a", "b"], x=x, source="split")
    store = store.add([3, 4], ["a", "c"], x=x, source="studio")
    smaller, removed = store.withdraw(3, "a", source="studio")
    assert removed.index == 3 and removed.label == "a" and removed.source == "studio"
    assert smaller.current() == {1: "a", 2: "b", 4: "c"} and len(store) == 4  # store unchanged
    relabeled = smaller.add([3], ["b"], x=x, source="studio")  # an undone label can be given anew
    assert relabeled.current()[3] == "b"
    with pytest.raises(DataError, match="example 5 has no label to withdraw"):
        store.withdraw(5, "a", source="studio")
    with pytest.raises(DataError, match="labeled 'c', not 'a'"):
        store.withdraw(4, "a", source="studio")
    with pytest.raises(DataError, match="from 'split'; only labels from 'studio'"):
        store.withdraw(1, "a", source="studio")


def test_loss_curves_are_every_registered_term_the_objective_logged() -> None:
    """The curves come from the registry (a plugin's term too), in summing order, after the
    total, the reconstruction and the prior's KL terms; other metrics are not curves."""
    from ssvae_core.registry import default_registry
    from ssvae_core.runs.plots import curve_names

    terms = default_registry().ordered("loss_term")
    row = {"step": 1, "grad_norm": 2.0, **{name: 0.0 for name in reversed(terms)}}
    row.update({"kl_extra": 0.0, "reconstruction": 0.0, "loss": 0.0})
    assert curve_names(row) == ["loss", "reconstruction", "kl_extra", *terms]


def test_withdraw_last_takes_back_one_action_and_relabel_supersedes(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    store = LabelStore.empty().add([1, 2], ["a", "b"], x=x, source="split")
    store = store.add([3], ["a"], x=x, source="studio")
    store = store.add([4, 5, 6], ["c", "c", "c"], x=x, source="studio", batch="b1")
    with pytest.raises(DataError, match="already labeled 'a'"):
        store.add([1], ["b"], x=x, source="studio")
    store = store.add([1], ["b"], x=x, source="studio", relabel=True)  # a correction
    assert store.current()[1] == "b"
    store.save(tmp_path / "labels.json")
    store = LabelStore.load(tmp_path / "labels.json")  # the batch survives a save and a load
    assert [e.batch for e in store.entries] == [None, None, None, "b1", "b1", "b1", None]
    store, removed = store.withdraw_last(source="studio")
    assert [e.index for e in removed] == [1] and store.current()[1] == "a"  # the split's label again
    store, removed = store.withdraw_last(source="studio")
    assert [e.index for e in removed] == [4, 5, 6]
    store, removed = store.withdraw_last(source="studio")
    assert [e.index for e in removed] == [3] and store.current() == {1: "a", 2: "b"}
    with pytest.raises(DataError, match="no label from 'studio' to take back"):
        store.withdraw_last(source="studio")
    with pytest.raises(DataError, match="batch must match"):
        store.add([7], ["a"], x=x, source="studio", batch="no spaces")


def test_the_class_layout_puts_each_point_among_its_classes() -> None:
    rng = np.random.default_rng(2)
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    z = rng.normal(size=(4, 3))
    points = project(z, "classes", probabilities=p)
    anchors = np.array([[0.0, 1.0], [np.sqrt(3) / 2, -0.5], [-np.sqrt(3) / 2, -0.5]])
    # the confident points at their anchors (the first two predicted class 0 share its spread);
    # the torn one near halfway between its two classes
    assert np.allclose(points[[1, 3]], anchors[[1, 2]], atol=1e-9)
    assert np.linalg.norm(points[0] - anchors[0]) <= 0.12 * np.sqrt(2) + 1e-9
    assert np.linalg.norm(points[2] - anchors[:2].mean(axis=0)) <= 0.12 * np.sqrt(2) + 1e-9
    many = rng.dirichlet(np.full(10, 0.1), size=5000)
    spread = project(rng.normal(size=(5000, 6)), "classes", probabilities=many)
    assert spread.shape == (5000, 2) and np.all(np.linalg.norm(spread, axis=1) <= 1.0 + 0.12 * np.sqrt(2))
    with pytest.raises(ConfigError, match="needs the class probabilities"):
        project(z, "classes")


def test_tsne_past_its_point_budget_embeds_a_subset_and_places_the_rest(monkeypatch) -> None:
    from ssvae_core.runs import explore
    monkeypatch.setattr(explore, "TSNE_POINTS", 60)
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(0, 0.1, (100, 4)), rng.normal(5, 0.1, (100, 4))])
    points = project(z, "tsne")
    assert points.shape == (200, 2) and np.all(np.isfinite(points))
    assert _two_groups_apart(points)
