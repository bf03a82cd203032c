"""Choosing the features a graph is built from by the labels left out in turn, and the
calibration's check of whether the model errs with the propagation."""

from __future__ import annotations

import numpy as np
import pytest

from ssvae_core.data import propagation as propagation_module
from ssvae_core.data.augment import AugmentConfig
from ssvae_core.data.graph import graph_labels, smoothed_rows
from ssvae_core.data.propagation import (
    choose_features,
    subsample,
    wilson_lower_bound,
    wilson_upper_bound,
)
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms.builtin import GraphLabelTerm
from ssvae_core.runs.calibration import CalibrationConfig, fit_calibration

ROWS = 200


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("the propagation was measured")


def _labels(truth: np.ndarray, per_class: int = 5) -> np.ndarray:
    labels = np.full(truth.size, -1)
    for label in np.unique(truth):
        labels[np.flatnonzero(truth == label)[:per_class]] = label
    return labels


def _checkerboards(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6×6 images of a checkerboard (class 0) or its inverse (class 1), a little noise:
    a blur of one pixel averages both to the same grey, the plain pixels keep them apart."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], ROWS // 2)
    board = (np.add.outer(np.arange(6), np.arange(6)) % 2).astype(np.float32)
    x = np.where(truth[:, None, None] == 0, board, 1 - board) + 0.3 * rng.standard_normal((ROWS, 6, 6))
    return x.astype(np.float32), truth


def _halves(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """16×16 images bright on the left (class 0) or the right half (class 1), under noise
    three times the signal: a blur of two pixels finds the halves, the plain pixels barely."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], ROWS // 2)
    half = np.zeros((16, 16), np.float32)
    half[:, :8] = 1.0
    x = np.where(truth[:, None, None] == 0, half, 1 - half) + 3.0 * rng.standard_normal((ROWS, 16, 16))
    return x.astype(np.float32), truth


def test_the_plain_pixels_replace_a_blur_that_erases_the_classes() -> None:
    x, truth = _checkerboards()
    choice = choose_features(x, _labels(truth), 2, blur=1.0, deskew=False, neighbours=5, alpha=0.9)
    assert (choice.blur, choice.deskew) == (0.0, False)
    assert choice.facts["chosen"] == "plain pixels" and choice.facts["held_out"] == 10
    assert choice.facts["accuracy_plain"] == 1.0 > choice.facts["accuracy_as_configured"]
    assert choice.facts["share_plain"] > 0.9 > choice.facts["share_as_configured"]
    np.testing.assert_array_equal(choice.propagation.labels, truth)


def test_the_configured_features_stay_where_they_propagate_better() -> None:
    x, truth = _halves()
    choice = choose_features(x, _labels(truth), 2, blur=2.0, deskew=False, neighbours=5, alpha=0.9)
    assert (choice.blur, choice.deskew, choice.facts["chosen"]) == (2.0, False, "as configured")
    assert choice.facts["accuracy_as_configured"] > choice.facts["accuracy_plain"]
    assert choice.facts["share_as_configured"] > choice.facts["share_plain"]


def test_nothing_is_measured_without_two_labels_of_a_class_or_for_plain_pixels(monkeypatch) -> None:
    x, truth = _checkerboards()
    monkeypatch.setattr(propagation_module, "propagate", _never)
    single = choose_features(x, _labels(truth, per_class=1), 2, blur=1.0, deskew=False, neighbours=5, alpha=0.9)
    assert (single.blur, single.propagation) == (1.0, None) and "two labels" in single.facts["chosen"]
    plain = choose_features(x, _labels(truth), 2, blur=0.0, deskew=False, neighbours=5, alpha=0.9)
    assert plain.blur == 0.0 and "plain pixels" in plain.facts["chosen"]


def test_the_same_question_of_the_same_rows_is_answered_once(monkeypatch) -> None:
    x, truth = _halves(seed=1)
    labels = _labels(truth)
    first = choose_features(x, labels, 2, blur=2.0, deskew=False, neighbours=5, alpha=0.9)
    monkeypatch.setattr(propagation_module, "propagate", _never)
    assert choose_features(x.copy(), labels.copy(), 2, blur=2.0, deskew=False, neighbours=5, alpha=0.9) is first
    other = labels.copy()
    other[np.flatnonzero(truth == 0)[5]] = 0
    with pytest.raises(AssertionError, match="measured"):
        choose_features(x, other, 2, blur=2.0, deskew=False, neighbours=5, alpha=0.9)


def test_a_subsample_keeps_every_labeled_row_and_a_seeded_draw_of_the_rest() -> None:
    labels = np.full(50, -1)
    labels[[3, 40]] = [0, 1]
    np.testing.assert_array_equal(subsample(labels, max_rows=60), np.arange(50))
    rows = subsample(labels, max_rows=10)
    assert rows.size == 12 and {3, 40} <= set(rows.tolist()) and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, subsample(labels, max_rows=10))


def test_the_graph_label_term_builds_its_graph_from_the_chosen_features() -> None:
    x, truth = _checkerboards()
    labels = _labels(truth)
    settings = dict(share=1.0, neighbours=5, alpha=0.9, per_class=False, blur=1.0)
    chosen = GraphLabelTerm(Schedule(1.0), **settings, choose_features=True).prepare(x, labels, 2)
    as_set = GraphLabelTerm(Schedule(1.0), **settings).prepare(x, labels, 2)
    expected = graph_labels(smoothed_rows(x, 0.0), labels, 2, share=1.0, num_neighbours=5, alpha=0.9, per_class=False)
    np.testing.assert_array_equal(chosen["graph_labels"], expected)
    unlabeled = labels < 0
    assert np.mean(chosen["graph_labels"][unlabeled] == truth[unlabeled]) == 1.0
    assert np.mean(as_set["graph_labels"][unlabeled] == truth[unlabeled]) < 0.8


@pytest.mark.parametrize("choose", [False, True])
def test_the_calibration_propagates_over_the_graph_of_its_metric(choose: bool) -> None:
    from ssvae_core.runs.calibration import _propagation

    x, truth = _checkerboards()
    x = x * np.linspace(0.05, 1.0, x.shape[0], dtype=np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    labels = _labels(truth)
    config = CalibrationConfig(neighbours=5, metric="cosine", choose_features=choose)
    found, _ = _propagation(config, x, labels, 2)
    rows = smoothed_rows(x, 0.0, metric="cosine")
    expected = propagation_module.propagate(rows, labels, 2, neighbours=5, alpha=config.alpha)
    np.testing.assert_allclose(found.spread, expected.spread, atol=1e-9)
    euclidean = propagation_module.propagate(smoothed_rows(x, 0.0), labels, 2, neighbours=5, alpha=config.alpha)
    assert not np.allclose(found.spread, euclidean.spread)


def test_a_left_out_rows_share_is_its_propagated_mass_on_its_own_label() -> None:
    x, truth = _halves()
    labels = _labels(truth)
    propagation = propagation_module.propagate(smoothed_rows(x, 2.0), labels, 2, neighbours=5, alpha=0.9)
    share = propagation.held_out_share
    assert share.shape == propagation.held_out.shape and np.all((share >= 0) & (share <= 1))
    # the left-out row is labeled right exactly where most of its mass is on its own label
    np.testing.assert_array_equal(share > 0.5, propagation.held_out)


def test_wilson_upper_bound_mirrors_the_lower_one() -> None:
    assert wilson_upper_bound(59, 100) == pytest.approx(1 - wilson_lower_bound(41, 100), abs=1e-12)
    assert wilson_lower_bound(59, 100) < 0.59 < wilson_upper_bound(59, 100) < 0.7
    assert wilson_upper_bound(10, 10) == pytest.approx(1.0, abs=1e-12)


def test_an_agreement_above_what_independent_mistakes_allow_is_taken_as_it_is() -> None:
    # The calibration's graph over the blurred checkerboards propagates at chance, yet a
    # model that predicts the propagation's own labels agrees with it everywhere: the two
    # err together, and dividing by the propagation's accuracy would claim more than 1.
    x, truth = _checkerboards()
    labels = _labels(truth)
    config = CalibrationConfig(neighbours=5, blur=1.0, errors="independent")
    blurred = propagation_module.propagate(smoothed_rows(x, 1.0), labels, 2, neighbours=5, alpha=0.9)
    propagated = {r.tobytes(): label for r, label in zip(x, blurred.labels, strict=True)}

    def predict(inputs: np.ndarray) -> np.ndarray:
        return np.where(np.eye(2)[[propagated[r.tobytes()] for r in inputs]] > 0, 0.95, 0.05)

    views = AugmentConfig(shift=0.0, rotation=0.0)
    fitted = fit_calibration(config, x, labels, 2, predict, views, graph_labels=False, step=0)
    assert fitted.facts["agreement"] == 1.0 and fitted.facts["propagation_accuracy"] < 0.5
    assert fitted.facts["independence_rejected"] is True
    assert fitted.facts["accuracy_estimate"] == 1.0 and fitted.temperature == 1.0
    # With the features chosen by the held-out labels the calibration's graph is the plain
    # pixels': it says so, and the same model is now measured against a propagation it
    # disagrees with where the blurred one erred.
    chosen = fit_calibration(
        CalibrationConfig(neighbours=5, blur=1.0, errors="independent", choose_features=True),
        x, labels, 2, predict, views, graph_labels=False, step=0,
    )  # fmt: skip
    assert chosen.facts["graph_features"]["chosen"] == "plain pixels"
    assert chosen.facts["propagation_accuracy"] == 1.0 and chosen.facts["independence_rejected"] is False
    assert chosen.facts["agreement"] < 0.8 and chosen.temperature > 1.0
