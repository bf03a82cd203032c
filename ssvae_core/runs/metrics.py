"""Evaluation metrics: accuracy, calibration, confusion, OOD AUROC and FPR95, channel
diagnostics, and how well the channels cluster the classes (clustering accuracy, NMI, ARI)."""

from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 15


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose most probable class is the label."""
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


def reliability_table(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per-bin count, mean confidence and accuracy (the data of a reliability diagram).

    Bin ``b`` holds confidences in ``(edge_b, edge_{b+1}]``; a confidence of exactly 0 joins
    bin 0.
    """
    confidence = np.max(probabilities, axis=-1)
    correct = np.argmax(probabilities, axis=-1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    rows = []
    for b in range(num_bins):
        members = bins == b
        count = int(np.sum(members))
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(np.mean(confidence[members])) if count else 0.0,
                "accuracy": float(np.mean(correct[members])) if count else 0.0,
            }
        )
    return rows


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS
) -> float:
    """``ECE = Σ_b (n_b / N) |acc_b − conf_b|`` over equal-width confidence bins."""
    rows = reliability_table(probabilities, labels, num_bins)
    total = len(labels)
    return float(sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows))


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``M[i, j]`` = number of examples of class ``i`` predicted as ``j``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def clustering_accuracy(clusters: np.ndarray, labels: np.ndarray, num_clusters: int | None = None) -> float:
    """Accuracy of the best one-to-one map from clusters to classes (the Hungarian method on
    the cluster × class counts). With more clusters than classes only as many clusters as
    classes get one; the examples of the others count as wrong."""
    from scipy.optimize import linear_sum_assignment

    counts = _contingency(clusters, labels, num_clusters)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / max(len(labels), 1))


def many_to_one_accuracy(clusters: np.ndarray, labels: np.ndarray, num_clusters: int | None = None) -> float:
    """Accuracy when each cluster is named after its majority class (several clusters may
    share a class): what one label per cluster could reach."""
    counts = _contingency(clusters, labels, num_clusters)
    return float(counts.max(axis=1).sum() / max(len(labels), 1))


def clustering_metrics(responsibilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """How the channels ``argmax_c q(c|x)`` cluster the classes ``labels``:
    ``clustering_accuracy`` (one-to-one, Hungarian), ``many_to_one_accuracy`` (each channel
    → its majority class), ``nmi`` and ``ari`` (scikit-learn), and the channel count."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters = np.argmax(responsibilities, axis=-1)
    num_clusters = int(np.shape(responsibilities)[-1])
    return {
        "clustering_accuracy": clustering_accuracy(clusters, labels, num_clusters),
        "many_to_one_accuracy": many_to_one_accuracy(clusters, labels, num_clusters),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "num_channels": num_clusters,
        "num_classes_present": int(np.unique(labels).size),
    }


def _contingency(clusters: np.ndarray, labels: np.ndarray, num_clusters: int | None) -> np.ndarray:
    """Counts ``n[k, y]`` of examples in cluster ``k`` with class ``y``."""
    clusters, labels = np.asarray(clusters, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if clusters.shape != labels.shape:
        raise ValueError(f"clusters {clusters.shape} and labels {labels.shape} must have the same shape")
    k = int(clusters.max(initial=-1)) + 1 if num_clusters is None else max(num_clusters, int(clusters.max(initial=-1)) + 1)
    counts = np.zeros((max(k, 1), int(labels.max(initial=-1)) + 1 or 1), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    return counts


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling ``out`` (positive) from ``in`` by a score.

    Computed as the Mann–Whitney probability ``P(s_out > s_in) + ½ P(s_out = s_in)``.
    """
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([in_scores, out_scores])
    targets = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    return float(roc_auc_score(targets, scores))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at ``tpr`` true-positive rate, ``out`` the positives (FPR95).

    The threshold ``t`` is the ``⌈tpr · n_out⌉``-th largest ``out`` score — the largest
    threshold flagging at least a ``tpr`` share of ``out`` as ``s ≥ t`` — and the result is
    the share of ``in`` scores ``≥ t``: lower is better, 0 when the two sets separate.
    """
    inside = np.asarray(in_scores, dtype=np.float64).ravel()
    outside = np.asarray(out_scores, dtype=np.float64).ravel()
    if inside.size == 0 or outside.size == 0:
        raise ValueError("fpr_at_tpr needs at least one in and one out score")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1]; got {tpr}")
    k = int(np.ceil(tpr * outside.size - 1e-9))
    threshold = np.sort(outside)[::-1][max(k, 1) - 1]
    return float(np.mean(inside >= threshold))


def aupr(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the precision–recall curve with ``out`` the positives (average precision)."""
    from sklearn.metrics import average_precision_score

    scores = np.concatenate([in_scores, out_scores])
    targets = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    return float(average_precision_score(targets, scores))


def ood_table(in_scores: dict[str, np.ndarray], out_scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{score: {"auroc": …, "fpr95": …, "aupr": …}}`` for each score named in both dicts
    (``out`` the positives)."""
    return {
        name: {
            "auroc": auroc(in_scores[name], out_scores[name]),
            "fpr95": fpr_at_tpr(in_scores[name], out_scores[name]),
            "aupr": aupr(in_scores[name], out_scores[name]),
        }
        for name in in_scores
        if name in out_scores
    }


def channel_diagnostics(responsibilities: np.ndarray, tau: np.ndarray | None) -> dict[str, Any]:
    """Channel usage ``p̂``, the number of channels in use, and τ's dominant label per channel."""
    if responsibilities.shape[-1] == 0:
        return {}
    usage = np.mean(responsibilities, axis=0)
    result: dict[str, Any] = {
        "usage": [round(float(u), 5) for u in usage],
        "active_channels": int(np.sum(usage >= 1e-3)),
        "mean_responsibility_entropy": float(
            np.mean(-np.sum(responsibilities * np.log(np.clip(responsibilities, 1e-12, None)), axis=-1))
        ),
    }
    if tau is not None:
        result["tau_label"] = [int(i) for i in np.argmax(tau, axis=-1)]
        result["tau_confidence"] = [round(float(v), 4) for v in np.max(tau, axis=-1)]
    return result
