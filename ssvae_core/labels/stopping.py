"""When labels stop paying: the share of the unlabeled pool whose prediction changed.

After each round of a label loop the model predicts every training example; the *change*
is the share of the examples unlabeled in both this round and the last whose predicted
class differs. When new labels no longer move the predictions on the pool they have
stopped paying: ``ssvae loop --stop-when stable`` ends a strategy's rounds once the change
falls below ``--stable-below`` (default 1 %).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

STOP_WHEN = ("stable",)
DEFAULT_STABLE_BELOW = 0.01

__all__ = ["DEFAULT_STABLE_BELOW", "STOP_WHEN", "PoolPredictions", "pool_predictions", "prediction_change"]


class PoolPredictions:
    """A run's predicted class of each training example, and which were unlabeled."""

    def __init__(self, rows: np.ndarray, predicted: np.ndarray, unlabeled: np.ndarray):
        self.rows, self.predicted, self.unlabeled = rows, predicted, unlabeled


def pool_predictions(run_dir: str | os.PathLike[str], x: np.ndarray, train_rows: np.ndarray) -> PoolPredictions:
    """The run's model's predictions on its training rows (``x[train_rows]``), and which
    of those rows its label store leaves unlabeled."""
    from ssvae_core.api import SSVAEClassifier
    from ssvae_core.labels.store import STORE_NAME, LabelStore

    out = Path(os.fspath(run_dir))
    classifier = SSVAEClassifier.load(out / "model.ckpt")
    labeled = set(LabelStore.load(out / STORE_NAME).current())
    rows = np.asarray(train_rows, dtype=np.int64)
    predicted = np.asarray(classifier.predict(x[rows]))
    return PoolPredictions(rows, predicted, np.array([int(r) not in labeled for r in rows]))


def prediction_change(before: PoolPredictions, after: PoolPredictions) -> float:
    """The share of the rows unlabeled in both whose predicted class changed."""
    both = before.unlabeled & after.unlabeled
    if not np.any(both):
        return 0.0
    return float(np.mean(before.predicted[both] != after.predicted[both]))
