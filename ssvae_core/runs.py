"""Run directories: train on a dataset split and write config, metrics, checkpoint, report, plots.

A run directory holds::

    config.toml      the resolved configuration
    metrics.jsonl    one JSON object per logged chunk of steps
    model.ckpt       the checkpoint (see ssvae_core.checkpoint), rewritten every
                     train.checkpoint_every steps and at the end
    report.json      held-out metrics and run facts; report.md the same for people
    plots/           loss curves, τ heat-map, reliability diagram, channel usage
    .lock            held by the one command writing the directory (ssvae_core.rundir)

A killed ``ssvae train`` loses at most the steps since its last checkpoint:
:func:`resume_run` continues from that checkpoint (or from the start, if the kill came
before the first one) and :func:`report_run` rewrites a missing report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ssvae_core.api import CheckpointCallback, SSVAEClassifier
from ssvae_core.checkpoint import atomic_write_bytes, read_manifest
from ssvae_core.config import Config, config_from_dict, dumps_toml, read_toml
from ssvae_core.data import Dataset, Split, benchmark_split, from_arrays, load_dataset
from ssvae_core.errors import CheckpointError, ConfigError, DataError
from ssvae_core.model import build_model
from ssvae_core.registry import Registry, default_registry
from ssvae_core.rundir import METRICS_NAME, RunLock, check_fresh_dir, claim_new_run_dir, recover
from ssvae_core.training import JsonLinesSink, MetricSink

CHECKPOINT_NAME = "model.ckpt"


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
    )


def build_report(
    classifier: SSVAEClassifier,
    dataset: Dataset,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_labels: int | None,
    ood: Dataset | None = None,
    **facts: Any,
) -> dict[str, Any]:
    """The report of a run: what was trained, then held-out metrics on ``(x, y)``.

    ``facts`` adds run facts (training set size, wall time, throughput). Accuracy, ECE,
    confusion, reliability and channel diagnostics come from
    :meth:`SSVAEClassifier.evaluate`, with the OOD AUROC against ``ood`` when given.
    """
    config = classifier.config
    evaluation = classifier.evaluate(x, y, ood=ood)
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "prior": config.prior.name,
        "head": config.head.name,
        "seed": config.seed,
        "steps": int(classifier.state.step) if classifier.state is not None else 0,
        "num_labels": num_labels,
        **facts,
        "test_accuracy": evaluation.pop("accuracy"),
        "num_test": evaluation.pop("num_examples"),
        **evaluation,
    }
    if ood is not None:
        report["ood_dataset"] = ood.name
    return report


def markdown_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of ``report.json``."""
    lines = [
        f"# ssvae run — {report['dataset']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy (τ/softmax head, latent only) | {report['test_accuracy']:.4f} |",
        f"| expected calibration error (15 bins) | {report['ece']:.4f} |",
        f"| labels used | {report['num_labels']} |",
        f"| prior | {report['prior']} |",
        f"| training steps | {report['steps']} |",
        f"| wall time (s) | {report['wall_time_s']:.1f} |",
        f"| training images / s | {report['images_per_s']:.0f} |",
        f"| reconstruction MSE | {report['reconstruction_error']:.4f} |",
    ]
    if "ood_auroc" in report:
        lines.append(f"| OOD AUROC vs {report['ood_dataset']} | {report['ood_auroc']:.4f} |")
    channels = report.get("channels") or {}
    if channels:
        lines += ["", f"Active channels: {channels['active_channels']} of {len(channels['usage'])}."]
    return "\n".join(lines) + "\n"


def _checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    path = Path(run_dir)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def _train_logged(
    out: Path,
    train: Callable[[Sequence[MetricSink]], object],
    *,
    append: bool,
    sinks: Sequence[MetricSink],
    on_start: Callable[[], None] | None,
) -> float:
    """Run ``train(sinks)`` with ``metrics.jsonl`` as the first sink; returns the wall time."""
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
    save: bool = True,
) -> dict[str, Any]:
    """Checkpoint (unless ``save`` is off), report (JSON + Markdown) and plots of a run."""
    config = classifier.config
    if save:
        _checkpointer(out, split)(classifier)
        write_text(out / "config.toml", dumps_toml(config.to_dict()))
    report = build_report(
        classifier,
        dataset,
        dataset.x[split.test],
        dataset.y[split.test],
        num_labels=len(split.labeled),
        num_train=len(split.train),
        wall_time_s=wall_time,
        images_per_s=steps_trained * config.train.batch_size / max(wall_time, 1e-9),
    )
    write_text(out / "report.json", json.dumps(report, indent=2))
    write_text(out / "report.md", markdown_report(report))
    if plots:
        from ssvae_core.plots import write_run_plots

        write_run_plots(out, classifier, _history(out), report)
    return report


def _history(out: Path) -> list[dict[str, Any]]:
    path = out / METRICS_NAME
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


def _checkpointer(out: Path, split: Split) -> CheckpointCallback:
    """Saves the classifier's current state as the run's checkpoint (atomically)."""

    def save(classifier: SSVAEClassifier) -> None:
        config = classifier.config
        facts = {"dataset": config.data.dataset, "seed": config.seed, "num_labels": len(split.labeled)}
        classifier.save(out / CHECKPOINT_NAME, extra={"data": facts})

    return save


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
) -> dict[str, Any]:
    """Train with the benchmark split and write a complete run directory; returns the report.

    Everything that can be rejected (config, data, output folder) is checked before the
    directory is created; ``on_start()`` is called once training begins.
    """
    registry = registry or default_registry()
    out = Path(out_dir)
    check_fresh_dir(out)
    dataset = dataset if dataset is not None else load_dataset(config.data.dataset)
    config = _resolvable(config)
    split = split_dataset(dataset, config)
    # Build once up front so every config error surfaces before anything is written.
    _, config = build_model(
        config,
        input_shape=dataset.sample_shape,
        num_classes=dataset.num_classes,
        key=jax.random.PRNGKey(config.seed),
        registry=registry,
    )
    with claim_new_run_dir(out):
        write_text(out / "config.toml", dumps_toml(config.to_dict()))
        train = training_view(dataset, split)
        classifier = SSVAEClassifier(config, registry=registry)
        checkpoint = _checkpointer(out, split)
        wall_time = _train_logged(
            out,
            lambda all_sinks: classifier.fit(train, sinks=all_sinks, on_checkpoint=checkpoint),
            append=False,
            sinks=sinks,
            on_start=on_start,
        )
        return _write_results(
            out, classifier, dataset, split,
            wall_time=wall_time, steps_trained=config.train.steps, plots=plots,
        )


def _run_dir(run_dir: str | os.PathLike[str], command: str) -> Path:
    out = Path(run_dir)
    if not out.is_dir():
        raise CheckpointError(f"{command} expects a run directory, got {os.fspath(out)!r}")
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
    ``on_notice``). A run that has all its steps but no report gets its report. The
    directory is locked for the whole command; metrics are appended, and checkpoint,
    config and reports are replaced atomically. ``data`` points to the run's dataset
    where it has moved (the same data, split by the run's seed).
    """
    out = _run_dir(run_dir, "--resume")
    with RunLock(out):
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
            config = _resolvable(
                config.replace(data=dataclasses.replace(config.data, dataset=data))
            )
            if classifier is not None:
                classifier.config = config
        for note in recover(out, done):
            if on_notice is not None:
                on_notice(note)
        target = config.train.steps if steps is None else steps
        if target <= done:
            if classifier is not None and steps is None and not (out / "report.json").exists():
                return _report(out, classifier, plots=plots)
            if steps is None:
                raise ConfigError(
                    f"this run has taken all of its {done} steps; pass --steps N > {done} to train further"
                )
            raise ConfigError(f"--steps must exceed the {done} steps this run has taken, got {target}")
        dataset = load_dataset(config.data.dataset)
        split = split_dataset(dataset, config)
        train = training_view(dataset, split)
        save = _checkpointer(out, split)
        if classifier is None:
            config = config.replace(train=dataclasses.replace(config.train, steps=target))
            fresh = SSVAEClassifier(config, registry=registry)
            classifier = fresh

            def run_training(all_sinks: Sequence[MetricSink]) -> object:
                return fresh.fit(train, sinks=all_sinks, on_checkpoint=save)
        else:
            loaded = classifier

            def run_training(all_sinks: Sequence[MetricSink]) -> object:
                return loaded.resume(train, until_step=target, sinks=all_sinks, on_checkpoint=save)

        wall_time = _train_logged(out, run_training, append=True, sinks=sinks, on_start=on_start)
        return _write_results(
            out, classifier, dataset, split,
            wall_time=wall_time, steps_trained=target - done, plots=plots,
        )


def _report(out: Path, classifier: SSVAEClassifier, *, plots: bool) -> dict[str, Any]:
    config = classifier.config
    dataset = load_dataset(config.data.dataset)
    split = split_dataset(dataset, config)
    history = _history(out)
    wall_time = float(sum(record.get("seconds", 0.0) for record in history))
    steps = int(classifier.state.step) if classifier.state is not None else 0
    return _write_results(
        out, classifier, dataset, split,
        wall_time=wall_time, steps_trained=steps, plots=plots, save=False,
    )


def report_run(
    run_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    on_notice: Callable[[str], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Rewrite ``report.json``, ``report.md`` and the plots from the run's checkpoint.

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
        return _report(out, classifier, plots=plots)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    data: str | None = None,
    ood: str | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Reload a run's checkpoint and report the held-out metrics again.

    Without ``data`` the run's own dataset and split are rebuilt and its test set is used;
    with ``data`` every labeled example of that dataset is evaluated.
    """
    checkpoint = _checkpoint_path(run_dir)
    manifest = read_manifest(checkpoint)  # a clear error for a missing or foreign file
    classifier = SSVAEClassifier.load(checkpoint, registry=registry)
    config = classifier.config
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
    ood_dataset = load_dataset(ood) if ood is not None else None
    num_labels = manifest.get("data", {}).get("num_labels")
    return build_report(classifier, dataset, x, y, num_labels=num_labels, ood=ood_dataset)
