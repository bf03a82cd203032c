"""Training a run directory: ``train_run``, ``resume_run`` and ``report_run``.

``train_run`` trains with the benchmark split and writes a complete run directory (its
layout: ``ssvae_core.runs.run``). Labels given after training (``ssvae label``, ``label_run``)
go to the label store; ``retrain_run`` (``ssvae_core.runs.retraining``) continues from the
checkpoint with the store's labels (never the split's), and a label name the model has not
seen claims free channels.

A killed ``ssvae train`` loses at most the steps since its last checkpoint:
``resume_run`` (``ssvae_core.runs.resuming``) continues from that checkpoint (or from the
start, if the kill came before the first one) and ``report_run`` rewrites a missing report.

With several processes (``ssvae_core.training.distributed``) every process runs
``train_run``, ``resume_run`` or ``retrain_run`` alike and trains its part of
each batch, but only process 0 writes the run directory (and calls the sinks); the others
read what they need (the data; for a resume or retrain, the run's checkpoint and label
store) and write nothing (``ssvae_core.runs.run_steps``).

The commands the command line calls on a run are importable from here: ``resume_run``
lives in ``ssvae_core.runs.resuming``, ``retrain_run`` in ``ssvae_core.runs.retraining``, the label
commands ``label_run`` and ``labels_summary`` in ``ssvae_core.labels.label_io``, ``evaluate_run``
in ``ssvae_core.runs.reports``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import Config, dumps_toml
from ssvae_core.data.loading import Dataset, load_dataset
from ssvae_core.labels.label_io import label_run, labels_summary
from ssvae_core.labels.rounds import round_info, unrecorded_round
from ssvae_core.modelling.model import build_model
from ssvae_core.registry import Registry, default_registry
from ssvae_core.runs.reports import evaluate_run, held_out_evaluator
from ssvae_core.runs.resuming import resume_run
from ssvae_core.runs.retraining import retrain_run
from ssvae_core.runs.run import (
    Run,
    chosen_labels,
    resolvable,
    split_dataset,
    split_store,
    training_view,
    write_text,
)
from ssvae_core.runs.run_steps import (
    Notice,
    checked_everywhere,
    checkpointer,
    complete_round,
    finish_round,
    follower_result,
    held,
    rewrite_report,
    tell,
    train_logged,
)
from ssvae_core.runs.rundir import check_fresh_dir, claim_new_run_dir
from ssvae_core.training import MetricSink, data_mesh
from ssvae_core.training.distributed import PeerStopped, is_main_process


def new_run_dir(root: str | os.PathLike[str] = "runs") -> Path:
    """A fresh timestamped folder name under ``root`` (not yet created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(root) / f"{stamp}-{suffix}"
    return candidate


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
    run = Run(Path(out_dir))
    writer = is_main_process()
    lock = None
    try:
        with checked_everywhere():
            if writer:
                check_fresh_dir(run.path)
            dataset = dataset if dataset is not None else load_dataset(config.data.dataset, config.data.test_dataset)
            config = resolvable(config)
            split = split_dataset(dataset, config)
            if labeled is not None:
                split = chosen_labels(dataset, split, labeled)
            train = training_view(dataset, split)
            classifier = SSVAEClassifier(config, registry=registry)
            config = classifier.config  # resolved, as the run directory records it
            model = classifier.initial_model(train)  # a config error surfaces before anything is written
            data_mesh(config.train.devices, config.train.batch_size)  # devices and batch agree
            if writer:
                lock = claim_new_run_dir(run.path)
    except PeerStopped:
        if lock is not None:  # leave no empty run directory behind
            lock.release()
            with contextlib.suppress(OSError):
                run.lock_path.unlink()
                run.path.rmdir()
        raise
    with held(lock):
        if not writer:
            classifier.fit(train, model=model)
            return follower_result(classifier)
        write_text(run.config_path, dumps_toml(config.to_dict()))
        split_store(dataset, split).save(run.store_path)
        info = round_info("train", 0, config.train.steps, train.label_names, train.y)
        checkpoint = checkpointer(run, len(split.labeled), info)
        wall_time = train_logged(
            run,
            lambda all_sinks: classifier.fit(
                train, model=model, sinks=all_sinks, on_checkpoint=checkpoint,
                evaluate=held_out_evaluator(run, dataset, split),
            ),
            append=False,
            sinks=sinks,
            on_start=on_start,
        )
        return finish_round(
            run, info, classifier, dataset, split,
            wall_time=wall_time, steps_trained=config.train.steps, plots=plots,
        )


def report_run(
    run_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    on_notice: Notice | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Rewrite ``report.json``, ``report.md`` and the plots from the run's checkpoint, and
    record the checkpoint's round in ``rounds.jsonl`` if a kill left it unrecorded.

    For a run killed after its last checkpoint landed, or whose report was lost. The wall
    time is the sum of the logged chunks' times.
    """
    run = Run.open(run_dir, "report")
    with run.lock():
        classifier = run.load_classifier(registry)
        done = int(classifier.state.step) if classifier.state is not None else 0
        tell(on_notice, run.recover(done))
        report = rewrite_report(run, classifier, plots=plots)
        unrecorded = unrecorded_round(run.path, run.manifest(), done)
        return complete_round(run, classifier, unrecorded, plots=plots, on_notice=on_notice, report=report)


__all__ = [
    "check_trainable",
    "evaluate_run",
    "label_run",
    "labels_summary",
    "new_run_dir",
    "report_run",
    "resume_run",
    "retrain_run",
    "train_run",
]
