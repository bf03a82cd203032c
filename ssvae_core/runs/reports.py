"""The report of a run: held-out metrics and run facts, as ``report.json`` and ``report.md``.

``build_report`` measures a classifier on held-out examples (accuracy, ECE, confusion,
reliability, channel diagnostics, how the channels cluster the classes, OOD scores when
given data to score); ``markdown_report`` writes it for people; ``write_report`` writes both
files and the plots of a run directory. ``held_out_evaluator`` is the evaluation a run logs
while it trains (``time_to_accuracy`` reads it back), and ``evaluate_run`` reloads a run's
checkpoint to report again, on its own test set or other data, with or without OOD data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssvae_core.api import EvaluateCallback, SSVAEClassifier
from ssvae_core.data.loading import Dataset, Split, load_dataset
from ssvae_core.errors import DataError
from ssvae_core.registry import Registry
from ssvae_core.runs.metrics import clustering_metrics
from ssvae_core.runs.ood import check_fpr, check_score
from ssvae_core.runs.run import Run, split_dataset, split_protocol, training_view, write_text
from ssvae_core.training.checkpoint import read_manifest


def build_report(
    classifier: SSVAEClassifier,
    dataset: Dataset,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_labels: int | None,
    ood: Dataset | None = None,
    ood_scores: Sequence[str] | None = None,
    ood_fpr: float | None = None,
    hidden: tuple[np.ndarray, np.ndarray] | None = None,
    **facts: Any,
) -> dict[str, Any]:
    """The report of a run: what was trained, then held-out metrics on ``(x, y)``.

    ``facts`` adds run facts (training set size, wall time, throughput). Accuracy, ECE,
    confusion, reliability, channel diagnostics and how the channels cluster the classes
    (``clustering``: clustering accuracy, many-to-one accuracy, NMI, ARI) come from
    ``SSVAEClassifier.evaluate``, with the OOD AUROC against ``ood`` when given
    (``ood_auroc``: the certainty score; ``ood``: AUROC, FPR95 and AUPR per score;
    ``ood_flagged`` with ``ood_fpr``). ``hidden``,
    the training inputs whose labels the model never saw and those labels, adds
    ``clustering_train``, the same clustering figures on them.

    A run with no labels (``num_labels`` 0) has no classifier to measure: its
    ``test_accuracy`` and ``ece`` are ``None`` (``label_free`` says why), and confusion,
    per-class accuracy and reliability are left out.
    """
    config = classifier.config
    evaluation = (
        classifier.evaluate(x, y, ood=ood, fpr=ood_fpr)
        if ood_scores is None
        else classifier.evaluate(x, y, ood=ood, scores=ood_scores, fpr=ood_fpr)
    )
    label_free = num_labels == 0
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "prior": config.prior.name,
        "head": config.head.name,
        "seed": config.seed,
        "steps": int(classifier.state.step) if classifier.state is not None else 0,
        "num_labels": num_labels,
        "label_free": label_free,
        **facts,
        "test_accuracy": evaluation.pop("accuracy"),
        "num_test": evaluation.pop("num_examples"),
        **evaluation,
    }
    if label_free:
        report.update(test_accuracy=None, ece=None)
        for key in ("confusion", "per_class_accuracy", "reliability"):
            report.pop(key, None)
    if hidden is not None and len(hidden[1]):
        responsibilities = classifier.infer(hidden[0]).responsibilities
        if responsibilities.shape[-1]:
            report["clustering_train"] = clustering_metrics(responsibilities, hidden[1])
    if ood is not None:
        report["ood_dataset"] = ood.name
    return report


def hidden_training_labels(dataset: Dataset, split: Split, labeled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The training inputs that carry a label in the data the model never saw, and those
    labels (``labeled``: the training rows it did see, default the split's)."""
    seen = split.labeled if labeled is None else labeled
    rows = split.train[(dataset.y[split.train] >= 0) & ~np.isin(split.train, seen)]
    return dataset.x[rows], dataset.y[rows]


def clustering_lines(report: dict[str, Any]) -> list[str]:
    """The report's clustering rows (held-out and hidden training labels), as table lines."""
    lines = []
    for key, where in (("clustering", "test"), ("clustering_train", "hidden training labels")):
        figures = report.get(key)
        if not figures:
            continue
        lines += [
            f"| clustering accuracy, channels matched one-to-one ({where}) | {figures['clustering_accuracy']:.4f} |",
            f"| clustering accuracy, each channel → its majority class ({where}) | {figures['many_to_one_accuracy']:.4f} |",
            f"| NMI / ARI of the channels ({where}) | {figures['nmi']:.4f} / {figures['ari']:.4f} |",
        ]
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of ``report.json``."""
    lines = [
        f"# ssvae run — {report['dataset']}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    if report.get("label_free"):
        lines += [
            "| test accuracy, ECE | none: no labels were used (label-free run); the channels "
            "are measured against the data's hidden labels below |",
        ]
    else:
        lines += [
            f"| test accuracy (τ/softmax head, latent only) | {report['test_accuracy']:.4f} |",
            f"| expected calibration error (15 bins) | {report['ece']:.4f} |",
        ]
    lines += [
        *clustering_lines(report),
        f"| labels used | {report['num_labels']} |",
        *(
            [f"| test set | {report['protocol']}" + (f" ({report['test_dataset']})" if report.get("test_dataset") else "") + " |"]
            if report.get("protocol")
            else []
        ),
        f"| prior | {report['prior']} |",
        f"| training steps | {report['steps']} |",
        f"| wall time (s) | {report['wall_time_s']:.1f} |",
        f"| training images / s | {report['images_per_s']:.0f} |",
        f"| reconstruction MSE | {report['reconstruction_error']:.4f} |",
    ]
    calibration = report.get("calibration")
    if calibration:
        lines.append(f"| calibration of p(y\\|x) | {calibration_summary(calibration)} |")
    if "ood_auroc" in report:
        lines.append(f"| OOD AUROC vs {report['ood_dataset']} | {report['ood_auroc']:.4f} |")
    for goal, seconds in (report.get("time_to_accuracy") or {}).items():
        shown = "not reached" if seconds is None else f"{seconds:.1f}"
        lines.append(f"| training time (s) to held-out accuracy {goal} | {shown} |")
    splits = report.get("channel_splits")
    if splits is not None:
        done = splits.get("splits", [])
        lines += ["", f"Channel splits at the start of this retrain: {len(done) if splits['applied'] else 'none'}."]
        lines += [f"- {entry['why']}" for entry in done]
        lines += [f"- left merged: {entry['why']} ({', '.join(entry['classes'])} in channel {entry['channel']})"
                  for entry in splits.get("unresolved", [])]
        if "why" in splits:
            lines.append(f"- {splits['why']}")
    channels = report.get("channels") or {}
    if channels:
        lines += ["", f"Active channels: {channels['active_channels']} of {len(channels['usage'])}."]
    table = channels.get("table") or []
    if table:
        free = channels.get("free_channels", [])
        lines += [
            f"Free channels (no label owns them; a new class claims them): "
            f"{', '.join(map(str, free)) if free else 'none'}.",
            "",
            "| channel | usage p̂_c | owner | max_y τ_{c,y} | label-mass share | free |",
            "|---|---|---|---|---|---|",
        ]
        for row in table:
            owner = "—" if row.get("owner") is None else row["owner"]
            lines.append(
                f"| {row['channel']} | {row['usage']:.4f} | {owner} | {row.get('tau_max', float('nan')):.3f} "
                f"| {row.get('label_mass_share', float('nan')):.4f} | {'yes' if row['free'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def calibration_summary(calibration: dict[str, Any]) -> str:
    """One line saying how ``p(y|x)`` was calibrated (the report's ``calibration``)."""
    method = calibration.get("method", "none")
    before = calibration.get("ece_uncalibrated")
    ece = f"; ECE without it {before:.4f}" if before is not None else ""
    if method == "none":
        return f"none{ece}"
    text = f"{method}: temperature T = {calibration['temperature']:.3f}"
    if "agreement" in calibration:
        text += (
            f", fitted so that the mean confidence on views of {calibration['rows']} unlabeled "
            f"training rows ({calibration['confidence_before']:.4f} before) equals the estimated "
            f"accuracy {calibration['accuracy_estimate']:.4f}: the agreement with the labels "
            f"propagated over the pixel graph ({calibration['agreement']:.4f})"
        )
        bound = calibration.get("propagation_accuracy_bound")
        features = calibration.get("graph_features", {}).get("chosen")
        if features == "plain pixels":
            text += " (a graph of the plain pixels, which propagate the held-out labels better than the configured features)"
        if calibration.get("learned_propagation"):
            text += ", which the model learned from"
        elif calibration.get("independence_rejected"):
            text += (
                f", taken as it is: above what independent mistakes allow, the upper bound of the "
                f"propagation's accuracy on {calibration['held_out']} held-out labels ({calibration['propagation_accuracy']:.4f})"
            )
        elif bound is not None:
            text += (
                f" over {bound:.4f}, the lower bound of the propagation's accuracy on "
                f"{calibration['held_out']} held-out labels ({calibration['propagation_accuracy']:.4f})"
            )
    elif "reason" in calibration:
        text += f" (nothing fitted: {calibration['reason']})"
    return text + ece


def write_report(
    run: Run,
    classifier: SSVAEClassifier,
    dataset: Dataset,
    split: Split,
    *,
    wall_time: float,
    steps_trained: int,
    plots: bool,
    num_labels: int | None = None,
) -> dict[str, Any]:
    """Write the run's report (``report.json``, ``report.md``) of ``classifier`` on the
    split's held-out examples, and its plots; returns the report. ``num_labels`` defaults to
    the split's labeled examples."""
    config = classifier.config
    num_labels = len(split.labeled) if num_labels is None else num_labels
    labeled = None
    if classifier.training_data is not None and len(classifier.training_data.y) == len(split.train):
        labeled = split.train[classifier.training_data.y >= 0]
    report = build_report(
        classifier,
        dataset,
        dataset.x[split.test],
        dataset.y[split.test],
        num_labels=num_labels,
        hidden=hidden_training_labels(dataset, split, labeled),
        num_train=len(split.train),
        **split_protocol(config),
        wall_time_s=wall_time,
        images_per_s=steps_trained * config.train.batch_size / max(wall_time, 1e-9),
    )
    if classifier.channel_splits is not None:
        report["channel_splits"] = classifier.channel_splits
    reached = time_to_accuracy(run.metrics())
    if reached is not None:
        report["time_to_accuracy"] = reached
    write_text(run.report_path, json.dumps(report, indent=2))
    write_text(run.report_md_path, markdown_report(report))
    if plots:
        from ssvae_core.runs.plots import write_run_plots

        labels = (classifier.training_data.y >= 0) if classifier.training_data is not None else None
        write_run_plots(
            run.path, classifier, run.metrics(), report, x_train=dataset.x[split.train],
            labeled=labels if labels is not None and len(labels) == len(split.train) else None,
        )
    return report


TIME_TO_ACCURACY = (0.8, 0.9, 0.95, 0.97, 0.99)


def held_out_evaluator(run: Run, dataset: Dataset, split: Split) -> EvaluateCallback:
    """The run's evaluation every ``train.eval_every`` steps: ``held_out_accuracy`` and
    ``held_out_ece`` on the held-out split (a model trained without labels:
    ``held_out_clustering_accuracy`` instead), and ``train_time_s``, the training time so
    far: the ``seconds`` of every chunk in ``metrics.jsonl``, earlier commands' included
    (evaluations and checkpoints not counted)."""
    from ssvae_core.modelling.inference import infer
    from ssvae_core.runs.metrics import accuracy, expected_calibration_error

    x, y = dataset.x[split.test], dataset.y[split.test]
    before = sum(float(row.get("seconds", 0.0)) for row in run.metrics())

    def evaluate(classifier: SSVAEClassifier, seconds: float) -> dict[str, float]:
        assert classifier.model is not None and classifier.state is not None
        result = infer(classifier.model, classifier.state.head_state, x)
        data = classifier.training_data
        if data is not None and not np.any(data.y >= 0) and result.responsibilities.shape[-1]:
            # no labels yet: no classifier to score, only how the channels cluster
            return {
                "held_out_clustering_accuracy": clustering_metrics(result.responsibilities, y)["clustering_accuracy"],
                "train_time_s": round(before + seconds, 3),
            }
        probabilities = result.probabilities
        return {
            "held_out_accuracy": accuracy(probabilities, y),
            "held_out_ece": expected_calibration_error(probabilities, y),
            "train_time_s": round(before + seconds, 3),
        }

    return evaluate


def time_to_accuracy(history: Sequence[dict[str, Any]]) -> dict[str, float | None] | None:
    """The training wall time at which the held-out accuracy first reached each of
    ``TIME_TO_ACCURACY`` (``None``: not reached), from the evaluations in
    ``metrics.jsonl``; ``None`` when the run has none."""
    curve = [(row["train_time_s"], row["held_out_accuracy"]) for row in history if "held_out_accuracy" in row]
    if not curve:
        return None
    return {
        f"{goal:g}": next((round(t, 3) for t, a in curve if a >= goal), None) for goal in TIME_TO_ACCURACY
    }


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    data: str | None = None,
    ood: str | None = None,
    ood_scores: Sequence[str] | None = None,
    ood_fpr: float | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Reload a run's checkpoint and report the held-out metrics again.

    Without ``data`` the run's own dataset and split are rebuilt and its test set is used;
    with ``data`` every labeled example of that dataset is evaluated. With ``ood`` the
    report adds AUROC, FPR95 and AUPR per OOD score (``report["ood"]``; ``ood_scores`` names
    them, default all), and with ``ood_fpr`` the shares flagged at that false-positive
    rate (``report["ood_flagged"]``); a checkpoint saved without the OOD scores' reference
    gets it recomputed from the run's training examples (when the run's data can be read).
    """
    for score in ood_scores or ():
        check_score(score)
    if ood_fpr is not None:
        check_fpr(ood_fpr)
    path = Path(run_dir)
    checkpoint = Run(path).checkpoint_path if path.is_dir() else path
    manifest = read_manifest(checkpoint)  # a clear error for a missing or foreign file
    classifier = SSVAEClassifier.load(checkpoint, registry=registry)
    config = classifier.config
    ood_dataset = load_dataset(ood) if ood is not None else None
    if ood_dataset is not None and not classifier.ood_reference_complete():
        try:
            own = load_dataset(config.data.dataset, config.data.test_dataset)
            classifier.training_data = training_view(own, split_dataset(own, config))
        except DataError:
            pass  # the run's data have moved: the report notes the missing blend score
    if data is None:
        dataset = load_dataset(config.data.dataset, config.data.test_dataset)
        split = split_dataset(dataset, config)
        x, y = dataset.x[split.test], dataset.y[split.test]
    else:
        dataset = load_dataset(data)
        keep = dataset.y >= 0
        if not np.any(keep):
            raise DataError(f"dataset {data!r} has no labels to evaluate against")
        x, y = dataset.x[keep], dataset.y[keep]
    num_labels = manifest.get("data", {}).get("num_labels")
    return build_report(
        classifier, dataset, x, y, num_labels=num_labels, ood=ood_dataset, ood_scores=ood_scores,
        ood_fpr=ood_fpr,
    )


__all__ = [
    "TIME_TO_ACCURACY",
    "build_report",
    "calibration_summary",
    "clustering_lines",
    "evaluate_run",
    "held_out_evaluator",
    "hidden_training_labels",
    "markdown_report",
    "time_to_accuracy",
    "write_report",
]
