"""Evaluation metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ssvae_core.runs.metrics import (
    auroc,
    confusion_matrix,
    expected_calibration_error,
    reliability_table,
)

# Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right).
PROBABILITIES = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
LABELS = np.array([0, 1, 1, 0])


def test_ece_matches_hand_value() -> None:
    # Bin (13/15, 14/15]: n=2, accuracy 0.5, confidence 0.9 → 2/4 · 0.4
    # Bin (8/15, 9/15]:  n=2, accuracy 1.0, confidence 0.6 → 2/4 · 0.4
    assert expected_calibration_error(PROBABILITIES, LABELS) == pytest.approx(0.4)


def test_ece_is_zero_when_confidence_equals_accuracy() -> None:
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probabilities, np.array([0, 1])) == pytest.approx(0.0)


def test_reliability_table_counts_every_example_once() -> None:
    rows = reliability_table(PROBABILITIES, LABELS)
    assert len(rows) == 15
    assert sum(r["count"] for r in rows) == 4
    assert [r["count"] for r in rows if r["count"]] == [2, 2]


def test_confusion_matrix_rows_are_true_labels() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 0]), LABELS, 2)
    np.testing.assert_array_equal(matrix, [[2, 0], [1, 1]])


def test_auroc_is_one_when_every_outlier_scores_higher() -> None:
    assert auroc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == pytest.approx(1.0)
    assert auroc(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == pytest.approx(0.0)
