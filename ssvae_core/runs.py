"""Run directories: train on a dataset split and write config, metrics, checkpoint, report, plots.

A run directory holds:

    config.toml      the resolved configuration
    metrics.jsonl    one JSON object per logged chunk of steps
    model.ckpt       the checkpoint (see ssvae_core.checkpoint), rewritten every
                     train.checkpoint_every steps and at the end
    report.json      held-out metrics and run facts; report.md the same for people
    labels.json      the label store: every label an example received (ssvae_core.labels)
    rounds.jsonl     one JSON object per training round (train, each retrain): labels
                     used, steps, classes added, held-out accuracy
    plots/           loss curves, τ heat-map, reliability diagram, channel usage, latent
                     map, channel members and their reconstructions
    .lock            held by the one command writing the directory (ssvae_core.rundir)

Labels given after training (``ssvae label``, ``label_run``) go to the label store;
``retrain_run`` continues from the checkpoint with the store's labels (never the
split's), and a label name the model has not seen claims free channels.

A killed ``ssvae train`` loses at most the steps since its last checkpoint:
``resume_run`` continues from that checkpoint (or from the start, if the kill came
before the first one) and ``report_run`` rewrites a missing report.

With several processes (``ssvae_core.distributed``) every process runs
``train_run``, ``resume_run`` or ``retrain_run`` alike and trains its part of
each batch, but only process 0 writes the run directory (and calls the sinks); the others
read what they need (the data; for a resume or retrain, the run's checkpoint and label
store) and write nothing. All of them check their input first and learn whether every
other one did, so that one refusal stops them all before training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ssvae_core.api import CheckpointCallback, EvaluateCallback, SSVAEClassifier
from ssvae_core.checkpoint import atomic_write_bytes, read_manifest
from ssvae_core.config import Config, check_steps, config_from_dict, dumps_toml, read_toml
from ssvae_core.data import Dataset, Split, benchmark_split, from_arrays, load_dataset
from ssvae_core.distributed import PeerStopped, all_agree, is_main_process, process_count
from ssvae_core.errors import CheckpointError, ConfigError, DataError
from ssvae_core.labels import STORE_NAME, LabelStore
from ssvae_core.metrics import clustering_metrics
from ssvae_core.model import build_model
from ssvae_core.registry import Registry, default_registry
from ssvae_core.rounds import (
    ROUNDS_NAME,
    last_step,
    record_round,
    round_info,
    seconds_between,
    trained_classes,
    unrecorded_round,
)
from ssvae_core.rundir import (
    LOCK_NAME,
    METRICS_NAME,
    RunLock,
    check_fresh_dir,
    claim_new_run_dir,
    recover,
)
from ssvae_core.runfiles import append_json_line as append_json_line  # re-exported
from ssvae_core.runfiles import read_metrics, read_report
from ssvae_core.training import JsonLinesSink, MetricSink, data_mesh

CHECKPOINT_NAME = "model.ckpt"
DEFAULT_RETRAIN_STEPS = 1000


def new_run_dir(root: str | os.PathLike[str] = "runs") -> Path:
    """A fresh timestamped folder name under ``root`` (not yet created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(root) / f"{stamp}-{suffix}"
    return candidate


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def split_dataset(dataset: Dataset, config: Config) -> Split:
    """The benchmark split of ``dataset`` with the config's label budget and seed."""
    return benchmark_split(dataset.y, config.data.label_budget, config.seed, dataset.num_classes)


def chosen_labels(dataset: Dataset, split: Split, rows: Sequence[int]) -> Split:
    """``split`` with ``rows`` as its labeled examples; each must be a labeled training row."""
    chosen = np.unique(np.asarray(rows, dtype=np.int64))
    outside = np.setdiff1d(chosen, split.train)
    if outside.size:
        raise DataError(f"examples {outside[:5].tolist()} are not training examples of this split; only those can be labeled")
    unknown = chosen[dataset.y[chosen] < 0]
    if unknown.size:
        raise DataError(f"the data have no label for examples {unknown[:5].tolist()}")
    return dataclasses.replace(split, labeled=chosen)


def training_view(dataset: Dataset, split: Split) -> Dataset:
    """The training examples, with labels kept only for the labeled subset."""
    labels = np.full(len(split.train), -1, dtype=np.int32)
    is_labeled = np.isin(split.train, split.labeled)
    labels[is_labeled] = dataset.y[split.train[is_labeled]]
    return from_arrays(
        dataset.x[split.train],
        labels,
        name=dataset.name,
        num_classes=dataset.num_classes,
        label_names=dataset.label_names,
        unlabeled_classes=True,
    )


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


def _clustering_lines(report: dict[str, Any]) -> list[str]:
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
        *_clustering_lines(report),
        f"| labels used | {report['num_labels']} |",
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
        if calibration.get("learned_propagation"):
            text += ", which the model learned from"
        elif bound is not None:
            text += (
                f" over {bound:.4f}, the lower bound of the propagation's accuracy on "
                f"{calibration['held_out']} held-out labels ({calibration['propagation_accuracy']:.4f})"
            )
    elif "reason" in calibration:
        text += f" (nothing fitted: {calibration['reason']})"
    return text + ece


def _checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    path = Path(run_dir)
    return path / CHECKPOINT_NAME if path.is_dir() else path


@contextlib.contextmanager
def _checked_everywhere() -> Iterator[None]:
    """Around the checks before training: with several processes, every process learns
    whether all of them passed; one that failed raises its own error, the others
    ``PeerStopped`` (instead of waiting in the first step for a process that left)."""
    try:
        yield
    except Exception:
        if process_count() > 1:
            all_agree(False)
        raise
    if not all_agree(True):
        raise PeerStopped("another process stopped before training (see its error); nothing was trained")


def _held(lock: RunLock | None) -> contextlib.AbstractContextManager[Any]:
    """The run's lock as a context (nothing where this process holds none)."""
    return lock if lock is not None else contextlib.nullcontext()


def _follower_result(classifier: SSVAEClassifier) -> dict[str, Any]:
    """What ``train_run`` and the others return on a process other than 0."""
    return {
        "process_index": int(jax.process_index()),
        "process_count": process_count(),
        "steps": int(classifier.state.step) if classifier.state is not None else 0,
    }


def _train_logged(
    out: Path,
    train: Callable[[Sequence[MetricSink]], object],
    *,
    append: bool,
    sinks: Sequence[MetricSink],
    on_start: Callable[[], None] | None,
    writer: bool = True,
) -> float:
    """Run ``train(sinks)`` with ``metrics.jsonl`` as the first sink; returns the wall time.
    A process that does not write (``writer`` off) trains without any sink."""
    if not writer:
        started = time.perf_counter()
        train(())
        return time.perf_counter() - started
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    with JsonLinesSink(out / METRICS_NAME, append=append) as log:
        train([log, *sinks])
    return time.perf_counter() - started


def _write_results(
    out: Path,
    classifier: SSVAEClassifier,
    dataset: Dataset,
    split: Split,
    *,
    wall_time: float,
    steps_trained: int,
    plots: bool,
    save: dict[str, Any] | None = None,
    num_labels: int | None = None,
) -> dict[str, Any]:
    """Checkpoint (when ``save`` gives its round, ``ssvae_core.rounds.round_info``),
    report (JSON + Markdown) and plots of a run."""
    config = classifier.config
    num_labels = len(split.labeled) if num_labels is None else num_labels
    labeled = None
    if classifier.training_data is not None and len(classifier.training_data.y) == len(split.train):
        labeled = split.train[classifier.training_data.y >= 0]
    if save is not None:
        _checkpointer(out, num_labels, save)(classifier)
        write_text(out / "config.toml", dumps_toml(config.to_dict()))
    report = build_report(
        classifier,
        dataset,
        dataset.x[split.test],
        dataset.y[split.test],
        num_labels=num_labels,
        hidden=hidden_training_labels(dataset, split, labeled),
        num_train=len(split.train),
        wall_time_s=wall_time,
        images_per_s=steps_trained * config.train.batch_size / max(wall_time, 1e-9),
    )
    if classifier.channel_splits is not None:
        report["channel_splits"] = classifier.channel_splits
    reached = time_to_accuracy(_history(out))
    if reached is not None:
        report["time_to_accuracy"] = reached
    write_text(out / "report.json", json.dumps(report, indent=2))
    write_text(out / "report.md", markdown_report(report))
    if plots:
        from ssvae_core.plots import write_run_plots

        labels = (classifier.training_data.y >= 0) if classifier.training_data is not None else None
        write_run_plots(
            out, classifier, _history(out), report, x_train=dataset.x[split.train],
            labeled=labels if labels is not None and len(labels) == len(split.train) else None,
        )
    return report


def _history(out: Path) -> list[dict[str, Any]]:
    return read_metrics(out / METRICS_NAME)


TIME_TO_ACCURACY = (0.8, 0.9, 0.95, 0.97, 0.99)


def held_out_evaluator(out: Path, dataset: Dataset, split: Split) -> EvaluateCallback:
    """The run's evaluation every ``train.eval_every`` steps: ``held_out_accuracy`` and
    ``held_out_ece`` on the held-out split (a model trained without labels:
    ``held_out_clustering_accuracy`` instead), and ``train_time_s``, the training time so
    far: the ``seconds`` of every chunk in ``metrics.jsonl``, earlier commands' included
    (evaluations and checkpoints not counted)."""
    from ssvae_core.inference import infer
    from ssvae_core.metrics import accuracy, expected_calibration_error

    x, y = dataset.x[split.test], dataset.y[split.test]
    before = sum(float(row.get("seconds", 0.0)) for row in _history(out))

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


def _checkpointer(out: Path, num_labels: int, round_: dict[str, Any]) -> CheckpointCallback:
    """Saves the classifier's current state as the run's checkpoint (atomically), with
    the round it belongs to (``ssvae_core.rounds``)."""

    def save(classifier: SSVAEClassifier) -> None:
        config = classifier.config
        facts = {"dataset": config.data.dataset, "seed": config.seed, "num_labels": num_labels}
        classifier.save(out / CHECKPOINT_NAME, extra={"data": facts, "round": round_})

    return save


def _with_data(config: Config, data: str | None) -> Config:
    """``config`` reading its data from ``data`` (where the run's data have moved), if given."""
    if data is None:
        return config
    return _resolvable(config.replace(data=dataclasses.replace(config.data, dataset=data)))


def _resolvable(config: Config) -> Config:
    """The config with a data path made absolute, so the run finds it from anywhere."""
    name = config.data.dataset
    if name == "digits" or not Path(name).exists():
        return config
    return config.replace(data=dataclasses.replace(config.data, dataset=os.path.abspath(name)))


def train_run(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    dataset: Dataset | None = None,
    registry: Registry | None = None,
    sinks: Sequence[MetricSink] = (),
    on_start: Callable[[], None] | None = None,
    plots: bool = True,
    labeled: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train with the benchmark split and write a complete run directory; returns the report.

    Everything that can be rejected (config, data, output folder) is checked before the
    directory is created; ``on_start()`` is called once training begins. With several
    processes, process 0 does all of this and the others train alongside, writing nothing
    and calling no sink; they return ``{"process_index", "process_count", "steps"}``.
    ``labeled`` (rows of the dataset, training rows of the split) replaces the split's
    labeled examples: the first labels a query chose (they go to the run's label store).
    """
    registry = registry or default_registry()
    out = Path(out_dir)
    writer = is_main_process()
    lock: RunLock | None = None
    try:
        with _checked_everywhere():
            if writer:
                check_fresh_dir(out)
            dataset = dataset if dataset is not None else load_dataset(config.data.dataset)
            config = _resolvable(config)
            split = split_dataset(dataset, config)
            if labeled is not None:
                split = chosen_labels(dataset, split, labeled)
            config = check_trainable(config, dataset, registry)
            if writer:
                lock = claim_new_run_dir(out)
    except PeerStopped:
        if lock is not None:  # leave no empty run directory behind
            lock.release()
            with contextlib.suppress(OSError):
                (out / LOCK_NAME).unlink()
                out.rmdir()
        raise
    with _held(lock):
        train = training_view(dataset, split)
        classifier = SSVAEClassifier(config, registry=registry)
        if not writer:
            classifier.fit(train)
            return _follower_result(classifier)
        write_text(out / "config.toml", dumps_toml(config.to_dict()))
        split_store(dataset, split).save(out / STORE_NAME)
        info = round_info("train", 0, config.train.steps, train.label_names, train.y)
        checkpoint = _checkpointer(out, len(split.labeled), info)
        wall_time = _train_logged(
            out,
            lambda all_sinks: classifier.fit(
                train, sinks=all_sinks, on_checkpoint=checkpoint,
                evaluate=held_out_evaluator(out, dataset, split),
            ),
            append=False,
            sinks=sinks,
            on_start=on_start,
        )
        return _finish_round(
            out, info, classifier, dataset, split,
            wall_time=wall_time, steps_trained=config.train.steps, plots=plots,
        )


def check_trainable(config: Config, dataset: Dataset, registry: Registry) -> Config:
    """``config`` as the model built from it resolves it; every config error surfaces here,
    before anything is written (the model is built once up front)."""
    _, config = build_model(
        config,
        input_shape=dataset.sample_shape,
        num_classes=dataset.num_classes,
        key=jax.random.PRNGKey(config.seed),
        registry=registry,
    )
    data_mesh(config.train.devices, config.train.batch_size)  # devices and batch agree
    return config


def _run_dir(run_dir: str | os.PathLike[str], command: str) -> Path:
    """``run_dir`` checked to be a run directory, before anything (its lock) is written there."""
    out = Path(run_dir)
    if not out.is_dir():
        raise CheckpointError(f"{command} expects a run directory, got {os.fspath(out)!r}")
    if not (out / CHECKPOINT_NAME).exists() and not (out / "config.toml").exists():
        raise CheckpointError(
            f"{os.fspath(out)!r} is not a run directory (it has neither {CHECKPOINT_NAME} "
            "nor config.toml)"
        )
    return out


def resume_run(
    run_dir: str | os.PathLike[str],
    steps: int | None = None,
    *,
    registry: Registry | None = None,
    sinks: Sequence[MetricSink] = (),
    on_start: Callable[[], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    plots: bool = True,
    data: str | None = None,
) -> dict[str, Any]:
    """Continue a run from its last checkpoint up to ``steps`` total (default: the run's
    own ``train.steps``), on its own data and split.

    After a kill this finishes the run: a run killed before its first checkpoint starts
    again from its ``config.toml``; leftovers of interrupted writes are removed and
    ``metrics.jsonl`` is cut back to the checkpoint's step (each repair is passed to
    ``on_notice``). A run that has all its steps but no report, or no line in
    ``rounds.jsonl`` for its last round, gets them; a round a kill interrupted is continued
    and recorded as one round (``ssvae_core.rounds``). The
    directory is locked for the whole command; metrics are appended, and checkpoint,
    config and reports are replaced atomically. ``data`` points to the run's dataset
    where it has moved (the same data, split by the run's seed). With several processes
    only process 0 locks, repairs and writes the directory (see ``train_run``).
    """
    writer = is_main_process()
    with _checked_everywhere():
        out = _run_dir(run_dir, "--resume")
        lock = RunLock(out).acquire() if writer else None
    with _held(lock):
        with _checked_everywhere():
            checkpoint = out / CHECKPOINT_NAME
            classifier: SSVAEClassifier | None = None
            if checkpoint.exists():
                classifier = SSVAEClassifier.load(checkpoint, registry=registry)
                config = classifier.config
                done = int(classifier.state.step) if classifier.state is not None else 0
            elif (out / "config.toml").exists():
                config = config_from_dict(read_toml(out / "config.toml"), registry)
                done = 0
            else:
                raise CheckpointError(
                    f"{os.fspath(out)!r} is not a run directory (it has neither {CHECKPOINT_NAME} "
                    "nor config.toml)"
                )
            if data is not None:
                config = _with_data(config, data)
                if classifier is not None:
                    classifier.config = config
            for note in recover(out, done) if writer else ():
                if on_notice is not None:
                    on_notice(note)
            target = config.train.steps if steps is None else steps
            check_steps(target, "--steps")
            # the round a kill left unrecorded; a damaged rounds.jsonl is refused here, before training
            unrecorded = None
            if classifier is None:
                last_step(out)
            else:
                unrecorded = unrecorded_round(out, read_manifest(checkpoint), done)
            if target <= done:
                if classifier is not None and steps is None and not writer:
                    return _follower_result(classifier)
                if classifier is not None and steps is None and (
                    unrecorded is not None or not (out / "report.json").exists()
                ):
                    return _complete_round(out, classifier, unrecorded, plots=plots, on_notice=on_notice)
                if steps is None:
                    raise ConfigError(
                        f"this run has taken all of its {done} steps; pass --steps N > {done} to train further"
                    )
                raise ConfigError(f"--steps must exceed the {done} steps this run has taken, got {target}")
            dataset = load_dataset(config.data.dataset)
            split = split_dataset(dataset, config)
            train = training_view(dataset, split)
            if classifier is not None:
                train = _labeled_by_store(out, classifier, dataset, split)
            num_labels = int(np.sum(train.y >= 0))
            # the round a kill interrupted continues; otherwise the resume is a round of its own
            command, start = ("train", 0) if classifier is None else ("resume", done)
            if unrecorded is not None:
                command, start = unrecorded["command"], unrecorded["from_step"]
            names = train.label_names if classifier is None else classifier.label_names
            info = round_info(command, start, target, names, train.y)
            save = _checkpointer(out, num_labels, info) if writer else None
            evaluate = held_out_evaluator(out, dataset, split) if writer else None
            if classifier is None:
                config = config.replace(train=dataclasses.replace(config.train, steps=target))
                fresh = SSVAEClassifier(config, registry=registry)
                classifier = fresh

                def run_training(all_sinks: Sequence[MetricSink]) -> object:
                    return fresh.fit(train, sinks=all_sinks, on_checkpoint=save, evaluate=evaluate)
            else:
                loaded = classifier

                def run_training(all_sinks: Sequence[MetricSink]) -> object:
                    return loaded.resume(
                        train, until_step=target, sinks=all_sinks, on_checkpoint=save, evaluate=evaluate
                    )

        wall_time = _train_logged(
            out, run_training, append=True, sinks=sinks, on_start=on_start, writer=writer
        )
        if not writer:
            return _follower_result(classifier)
        return _finish_round(
            out, info, classifier, dataset, split, wall_time=wall_time,
            steps_trained=target - done, plots=plots, **({"resumed_at": done} if done > start else {}),
        )


def _report(out: Path, classifier: SSVAEClassifier, *, plots: bool) -> dict[str, Any]:
    config = classifier.config
    dataset = load_dataset(config.data.dataset)
    split = split_dataset(dataset, config)
    history = _history(out)
    wall_time = float(sum(record.get("seconds", 0.0) for record in history))
    steps = int(classifier.state.step) if classifier.state is not None else 0
    return _write_results(
        out, classifier, dataset, split, wall_time=wall_time, steps_trained=steps, plots=plots,
        num_labels=len(run_store(out, dataset, split).current()),  # the labels it trained on
    )


def _complete_round(
    out: Path,
    classifier: SSVAEClassifier,
    unrecorded: dict[str, Any] | None,
    *,
    plots: bool,
    on_notice: Callable[[str], None] | None,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of the run's checkpoint (``report``, or the run's own when it is of this
    step, or written anew), and the record of the checkpoint's round when ``rounds.jsonl``
    lacks it (``unrecorded``, ``ssvae_core.rounds.unrecorded_round``)."""
    step = int(classifier.state.step) if classifier.state is not None else 0
    if report is None:
        report = read_report(out / "report.json")
        if report is None or report.get("steps") != step:
            report = _report(out, classifier, plots=plots)
    if unrecorded is None:
        return report
    info = unrecorded
    if info["labels_by_class"] is None:  # a checkpoint written before checkpoints knew their round
        names = classifier.label_names
        current = run_store(out, *_run_data(classifier)).current().values()
        info = {**info, "labels_by_class": {name: sum(1 for n in current if n == name) for name in names}}
    record = record_round(
        out, info, classifier, report, seconds_between(out, info["from_step"], step)
    )
    if on_notice is not None:
        stopped = f"; it stopped before step {info['to_step']}" if record.get("partial") else ""
        on_notice(
            f"recorded round {record['round']} in {ROUNDS_NAME} ({record['command']}, steps "
            f"{record['from_step']} to {step}{stopped}), which an interrupted command had not"
        )
    return report


def _run_data(classifier: SSVAEClassifier) -> tuple[Dataset, Split]:
    dataset = load_dataset(classifier.config.data.dataset)
    return dataset, split_dataset(dataset, classifier.config)


def report_run(
    run_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    on_notice: Callable[[str], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Rewrite ``report.json``, ``report.md`` and the plots from the run's checkpoint, and
    record the checkpoint's round in ``rounds.jsonl`` if a kill left it unrecorded.

    For a run killed after its last checkpoint landed, or whose report was lost. The wall
    time is the sum of the logged chunks' times.
    """
    out = _run_dir(run_dir, "report")
    with RunLock(out):
        classifier = SSVAEClassifier.load(out / CHECKPOINT_NAME, registry=registry)
        done = int(classifier.state.step) if classifier.state is not None else 0
        for note in recover(out, done):
            if on_notice is not None:
                on_notice(note)
        report = _report(out, classifier, plots=plots)
        unrecorded = unrecorded_round(out, read_manifest(out / CHECKPOINT_NAME), done)
        return _complete_round(out, classifier, unrecorded, plots=plots, on_notice=on_notice, report=report)


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
    from ssvae_core.ood import check_fpr, check_score

    for score in ood_scores or ():
        check_score(score)
    if ood_fpr is not None:
        check_fpr(ood_fpr)
    checkpoint = _checkpoint_path(run_dir)
    manifest = read_manifest(checkpoint)  # a clear error for a missing or foreign file
    classifier = SSVAEClassifier.load(checkpoint, registry=registry)
    config = classifier.config
    ood_dataset = load_dataset(ood) if ood is not None else None
    if ood_dataset is not None and not classifier.ood_reference_complete():
        try:
            own = load_dataset(config.data.dataset)
            classifier.training_data = training_view(own, split_dataset(own, config))
        except DataError:
            pass  # the run's data have moved: the report notes the missing blend score
    if data is None:
        dataset = load_dataset(config.data.dataset)
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


# --- labels after training ------------------------------------------------------------------


def split_store(dataset: Dataset, split: Split) -> LabelStore:
    """The label store of a new run: the split's labeled examples, source ``split``."""
    names = [dataset.label_names[int(dataset.y[i])] for i in split.labeled]
    return LabelStore.empty().add(
        [int(i) for i in split.labeled], names, x=dataset.x, source="split"
    )


def run_store(out: Path, dataset: Dataset, split: Split) -> LabelStore:
    """The run's label store, checked against the data (a run written before the store
    existed gets the split's labels)."""
    path = out / STORE_NAME
    store = LabelStore.load(path) if path.exists() else split_store(dataset, split)
    store.verify(dataset.x)
    return store


def _labeled_by_store(
    out: Path, classifier: SSVAEClassifier, dataset: Dataset, split: Split,
    store: LabelStore | None = None,
) -> Dataset:
    """The run's training examples labeled by its label store, ready to train on.

    Labels of classes the classifier knows fill ``y``; labels naming classes it has not
    seen (or known classes without labels so far) go through
    ``SSVAEClassifier.add_labels``, which claims free channels for them.
    """
    store = run_store(out, dataset, split) if store is None else store
    position = {int(row): i for i, row in enumerate(split.train)}
    names = classifier.label_names
    y = np.full(len(split.train), -1, dtype=np.int32)
    later_rows, later_names = [], []
    labeled_classes = _trained_classes(out, dataset, split)
    for index, name in store.current().items():
        if index not in position:
            raise DataError(
                f"label store: example {index} is not a training example of this run "
                "(it is in the held-out test set); remove it from labels.json"
            )
        if name in labeled_classes and name in names:
            y[position[index]] = names.index(name)
        else:
            later_rows.append(position[index])
            later_names.append(name)
    classifier.training_data = from_arrays(
        dataset.x[split.train], y, name=dataset.name, num_classes=len(names), label_names=names,
        unlabeled_classes=True,
    )
    if later_rows:
        classifier.add_labels(np.asarray(later_rows), later_names)
    assert classifier.training_data is not None
    return classifier.training_data


def _trained_classes(out: Path, dataset: Dataset, split: Split) -> set[str]:
    """The classes that had labels when the run last trained (from ``rounds.jsonl``, or
    the split's classes for a run without rounds)."""
    trained = trained_classes(out)
    if trained is not None:
        return trained
    return {dataset.label_names[int(dataset.y[i])] for i in split.labeled}


def _finish_round(
    out: Path,
    info: dict[str, Any],
    classifier: SSVAEClassifier,
    dataset: Dataset,
    split: Split,
    *,
    wall_time: float,
    steps_trained: int,
    plots: bool,
    **more: Any,
) -> dict[str, Any]:
    """Checkpoint, report and plots of a finished round (``info``:
    ``ssvae_core.rounds.round_info``), and its line in ``rounds.jsonl``."""
    report = _write_results(
        out, classifier, dataset, split, wall_time=wall_time, steps_trained=steps_trained,
        plots=plots, num_labels=sum(info["labels_by_class"].values()), save=info,
    )
    record_round(out, info, classifier, report, wall_time, **more)
    return report


def require_checkpoint(out: Path, before: str) -> Path:
    """The run's checkpoint path; a ``CheckpointError`` if the run has none yet."""
    checkpoint = out / CHECKPOINT_NAME
    if not checkpoint.exists():
        raise CheckpointError(
            f"{os.fspath(out)!r} has no checkpoint yet; finish the run with "
            f"`ssvae train --resume` {before}"
        )
    return checkpoint


def _run_config(out: Path, data: str | None) -> Config:
    return _with_data(config_from_dict(read_manifest(out / CHECKPOINT_NAME)["config"]), data)


def label_run(
    run_dir: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    *,
    source: str = "file",
    data: str | None = None,
    relabel: bool = False,
    annotator: str | None = None,
) -> dict[str, Any]:
    """Add the labels of a CSV file (``index,label``; rows of the run's dataset, label
    names, new names allowed) to the run's label store. With ``relabel`` the rows are a
    review: they replace the labels examples hold, and confirm those they keep.

    Every row is checked first — an unknown index, a held-out test example, an example
    given two different labels, a malformed file — and any problem changes nothing.
    Returns ``{"added": n, "new_classes": [...], "counts": ...}``.
    """
    from ssvae_core.label_io import read_label_file

    out = _run_dir(run_dir, "label")
    indices, names = read_label_file(labels_file)
    with RunLock(out):
        require_checkpoint(out, "before labeling")
        manifest = read_manifest(out / CHECKPOINT_NAME)
        config = _run_config(out, data)
        recover(out, int(manifest["step"]))  # what an interrupted command left, the store's included
        dataset = load_dataset(config.data.dataset)
        split = split_dataset(dataset, config)
        store = run_store(out, dataset, split)
        updated = store.add(
            indices, names, x=dataset.x, source=source, allowed=split.train, known=manifest["label_names"],
            relabel=relabel, confirm=relabel, annotator=annotator,
        )
        updated.save(out / STORE_NAME)
        known = set(manifest["label_names"])
        return {
            "added": len(updated) - len(store),
            "new_classes": [name for name in updated.label_names() if name not in known],
            "counts": updated.counts(),
        }


def labels_summary(run_dir: str | os.PathLike[str], *, data: str | None = None) -> dict[str, Any]:
    """The run's label store in numbers: labels per class and per source. The store is
    checked as every command that trains on it checks it (against the run's data, which
    ``data`` points to where they have moved): an invalid store is refused, not counted."""
    out = _run_dir(run_dir, "labels")
    path = out / STORE_NAME
    if not path.exists():
        raise CheckpointError(
            f"{os.fspath(out)!r} has no label store ({STORE_NAME}); it was written before "
            "runs kept one — `ssvae retrain` creates it from the split"
        )
    store = LabelStore.load(path)
    require_checkpoint(out, "before counting its labels")
    manifest = read_manifest(out / CHECKPOINT_NAME)
    config = _run_config(out, data)
    dataset = load_dataset(config.data.dataset)
    split = split_dataset(dataset, config)
    from ssvae_core.annotators import agreement

    store.verify(dataset.x)
    outside = sorted(set(store.current()) - {int(row) for row in split.train})
    if outside:
        raise DataError(
            f"label store: example {outside[0]} is not a training example of this run (it is "
            "in the held-out test set); remove it from labels.json"
        )
    known = list(manifest.get("label_names", []))
    counts = store.counts()
    # the model's classes in its order, then classes it has not trained on yet
    order = {name: i for i, name in enumerate(dict.fromkeys([*known, *store.label_names()]))}
    by_label = dict(sorted(counts["by_label"].items(), key=lambda item: order.get(item[0], len(order))))
    return {
        "total": len(store.current()),
        "entries": len(store),
        "by_label": by_label,
        "by_source": counts["by_source"],
        "untrained_classes": [n for n in store.label_names() if known and n not in known],
        **agreement(store),
    }


def retrain_run(
    run_dir: str | os.PathLike[str],
    steps: int = DEFAULT_RETRAIN_STEPS,
    *,
    registry: Registry | None = None,
    sinks: Sequence[MetricSink] = (),
    on_start: Callable[[], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    plots: bool = True,
    data: str | None = None,
    held_lock: RunLock | None = None,
    intermediate_checkpoints: bool = True,
    store: LabelStore | None = None,
    split_channels: bool | None = None,
) -> dict[str, Any]:
    """Continue a finished run for ``steps`` more steps with every label in its store.

    Warm: parameters, optimiser state and τ counts carry on from the checkpoint; labels of
    known classes change values only (nothing compiles anew); a label name the model has
    not seen claims free channels and grows τ. Metrics are appended, the checkpoint and
    report are replaced, and the round is recorded in ``rounds.jsonl`` (first the round of a
    checkpoint that a killed command left unrecorded, ``"partial"`` if it stopped early).

    ``held_lock`` is the run's lock when the caller holds it already (the studio holds it
    while it is open). Without ``intermediate_checkpoints`` the checkpoint is written only
    at the end, so a retrain stopped by an exception from a sink leaves the run's model as
    it was (its extra lines in ``metrics.jsonl`` are removed by ``recover``). ``store``
    is the label store to train with, when the caller took it already (the studio takes it
    when the retrain starts; labels given later wait for the next one). ``split_channels``
    overrides the run's ``train.split_channels`` for this retrain. With several
    processes only process 0 locks, repairs and writes the directory (see ``train_run``).
    """
    writer = is_main_process()
    with _checked_everywhere():
        check_steps(steps, "--steps")
        out = _run_dir(run_dir, "retrain")
        if held_lock is not None and held_lock.run_dir.resolve() != out.resolve():
            raise ConfigError(f"the lock given is on {os.fspath(held_lock.run_dir)!r}, not on {os.fspath(out)!r}")
        lock = RunLock(out).acquire() if held_lock is None and writer else None
    with _held(lock):
        with _checked_everywhere():
            checkpoint = require_checkpoint(out, "first")
            classifier = SSVAEClassifier.load(checkpoint, registry=registry)
            classifier.config = config = _with_data(classifier.config, data)
            done = int(classifier.state.step) if classifier.state is not None else 0
            check_steps(done + steps, f"the {done} steps taken and --steps {steps} together")
            # a caller holding the lock (the studio) may be writing the label store meanwhile
            spare = (STORE_NAME,) if held_lock is not None else ()
            for note in recover(out, done, spare=spare) if writer else ():
                if on_notice is not None:
                    on_notice(note)
            dataset = load_dataset(config.data.dataset)
            split = split_dataset(dataset, config)
            unrecorded = unrecorded_round(out, read_manifest(checkpoint), done) if writer else None
            if unrecorded is not None:  # a round an interrupted command left unrecorded
                _complete_round(out, classifier, unrecorded, plots=False, on_notice=on_notice)
            train = _labeled_by_store(out, classifier, dataset, split, store)
            num_labels = int(np.sum(train.y >= 0))
            info = round_info("retrain", done, done + steps, classifier.label_names, train.y)
            save = _checkpointer(out, num_labels, info) if writer and intermediate_checkpoints else None
            evaluate = held_out_evaluator(out, dataset, split) if writer else None
        wall_time = _train_logged(
            out,
            lambda all_sinks: classifier.retrain(
                steps, sinks=all_sinks, on_checkpoint=save, evaluate=evaluate,
                split_channels=split_channels,
            ),
            append=True,
            sinks=sinks,
            on_start=on_start,
            writer=writer,
        )
        if not writer:
            return _follower_result(classifier)
        return _finish_round(
            out, info, classifier, dataset, split, wall_time=wall_time, steps_trained=steps, plots=plots
        )
