"""Run directories: train on a dataset split and write config, metrics, checkpoint, report, plots.

A run directory holds::

    config.toml      the resolved configuration
    metrics.jsonl    one JSON object per logged chunk of steps
    model.ckpt       the checkpoint (see ssvae_core.checkpoint)
    report.json      held-out metrics and run facts; report.md the same for people
    plots/           loss curves, τ heat-map, reliability diagram, channel usage
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.checkpoint import atomic_write_bytes, read_manifest
from ssvae_core.config import Config, dumps_toml
from ssvae_core.data import Dataset, Split, benchmark_split, from_arrays, load_dataset
from ssvae_core.errors import CheckpointError, ConfigError, DataError
from ssvae_core.model import build_model
from ssvae_core.registry import Registry, default_registry
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


def check_fresh_dir(path: Path) -> None:
    """Refuse to write into a run directory that already holds files."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"output directory {os.fspath(path)!r} already exists and is not empty; "
            "choose a new --out (runs are never overwritten)"
        )


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
    with JsonLinesSink(out / "metrics.jsonl", append=append) as log:
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
) -> dict[str, Any]:
    """Checkpoint, report (JSON + Markdown) and plots of a finished run."""
    config = classifier.config
    data_facts = {"dataset": config.data.dataset, "seed": config.seed, "num_labels": len(split.labeled)}
    classifier.save(out / CHECKPOINT_NAME, extra={"data": data_facts})
    write_text(out / "config.toml", dumps_toml(config.to_dict()))
    report = build_report(
        classifier,
        dataset,
        dataset.x[split.test],
        dataset.y[split.test],
        num_labels=len(split.labeled),
        num_train=len(split.train),
        wall_time_s=wall_time,
        images_per_s=steps_trained * config.train.batch_size / wall_time,
    )
    write_text(out / "report.json", json.dumps(report, indent=2))
    write_text(out / "report.md", markdown_report(report))
    if plots:
        from ssvae_core.plots import write_run_plots

        with open(out / "metrics.jsonl", encoding="utf-8") as log:
            history = [json.loads(line) for line in log if line.strip()]
        write_run_plots(out, classifier, history, report)
    return report


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
    split = split_dataset(dataset, config)
    # Build once up front so every config error surfaces before anything is written.
    _, config = build_model(
        config,
        input_shape=dataset.sample_shape,
        num_classes=dataset.num_classes,
        key=jax.random.PRNGKey(config.seed),
        registry=registry,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.toml", dumps_toml(config.to_dict()))
    train = training_view(dataset, split)
    classifier = SSVAEClassifier(config, registry=registry)
    wall_time = _train_logged(
        out,
        lambda all_sinks: classifier.fit(train, sinks=all_sinks),
        append=False,
        sinks=sinks,
        on_start=on_start,
    )
    return _write_results(
        out, classifier, dataset, split,
        wall_time=wall_time, steps_trained=config.train.steps, plots=plots,
    )


def resume_run(
    run_dir: str | os.PathLike[str],
    steps: int,
    *,
    registry: Registry | None = None,
    sinks: Sequence[MetricSink] = (),
    on_start: Callable[[], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Continue a run from its checkpoint up to ``steps`` total, on its own data and split.

    The run directory is updated in place: metrics are appended, and the checkpoint,
    config and reports are replaced atomically once training has finished.
    """
    out = Path(run_dir)
    if not out.is_dir():
        raise CheckpointError(f"--resume expects a run directory, got {os.fspath(out)!r}")
    classifier = SSVAEClassifier.load(out / CHECKPOINT_NAME, registry=registry)
    done = int(classifier.state.step) if classifier.state is not None else 0
    if steps <= done:
        raise ConfigError(f"--steps must exceed the {done} steps this run has taken, got {steps}")
    dataset = load_dataset(classifier.config.data.dataset)
    split = split_dataset(dataset, classifier.config)
    train = training_view(dataset, split)
    wall_time = _train_logged(
        out,
        lambda all_sinks: classifier.resume(train, until_step=steps, sinks=all_sinks),
        append=True,
        sinks=sinks,
        on_start=on_start,
    )
    return _write_results(
        out, classifier, dataset, split,
        wall_time=wall_time, steps_trained=steps - done, plots=plots,
    )


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
