"""The steps that the commands training a run directory share.

``train_run``, ``resume_run`` (``ssvae_core.runs.lifecycle``) and ``retrain_run``
(``ssvae_core.runs.retraining``) each check their input on every process, hold the run's lock,
train with ``metrics.jsonl`` as the first metric sink, checkpoint with the round the
checkpoint belongs to (``ssvae_core.labels.rounds``), and at the end write the checkpoint,
report and plots and record the round in ``rounds.jsonl``. A round that an interrupted
command left unrecorded is recorded by the next command (``complete_round``).

With several processes (``ssvae_core.training.distributed``) every process trains its part of each
batch, but only process 0 writes the run directory and calls the sinks; every process
checks its input first and learns whether every other one did (``checked_everywhere``),
so that one refusal stops them all before training.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from ssvae_core.api import CheckpointCallback, SSVAEClassifier
from ssvae_core.config import dumps_toml
from ssvae_core.data.loading import Dataset, Split, from_arrays
from ssvae_core.errors import DataError
from ssvae_core.labels.rounds import ROUNDS_NAME, record_round, seconds_between, trained_classes
from ssvae_core.labels.store import LabelStore
from ssvae_core.runs.reports import write_report
from ssvae_core.runs.run import Run, load_run_data, split_dataset, write_text
from ssvae_core.runs.rundir import RunLock
from ssvae_core.training import JsonLinesSink, MetricSink
from ssvae_core.training.distributed import PeerStopped, all_agree, process_count

Notice = Callable[[str], None]


@contextlib.contextmanager
def checked_everywhere() -> Iterator[None]:
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


def held(lock: RunLock | None) -> contextlib.AbstractContextManager[Any]:
    """The run's lock as a context (nothing where this process holds none)."""
    return lock if lock is not None else contextlib.nullcontext()


def tell(on_notice: Notice | None, notes: Sequence[str]) -> None:
    """Pass each of ``notes`` (repairs, recorded rounds) to ``on_notice``, if given."""
    for note in notes:
        if on_notice is not None:
            on_notice(note)


def follower_result(classifier: SSVAEClassifier) -> dict[str, Any]:
    """What a training command returns on a process other than 0."""
    return {
        "process_index": int(jax.process_index()),
        "process_count": process_count(),
        "steps": int(classifier.state.step) if classifier.state is not None else 0,
    }


def train_logged(
    run: Run,
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
    with JsonLinesSink(run.metrics_path, append=append) as log:
        train([log, *sinks])
    return time.perf_counter() - started


def checkpointer(run: Run, num_labels: int, round_: dict[str, Any]) -> CheckpointCallback:
    """Saves the classifier's current state as the run's checkpoint (atomically), with
    the round it belongs to (``ssvae_core.labels.rounds``)."""

    def save(classifier: SSVAEClassifier) -> None:
        config = classifier.config
        facts = {"dataset": config.data.dataset, "seed": config.seed, "num_labels": num_labels}
        classifier.save(run.checkpoint_path, extra={"data": facts, "round": round_})

    return save


def finish_round(
    run: Run,
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
    """Checkpoint, configuration, report and plots of a finished round (``info``:
    ``ssvae_core.labels.rounds.round_info``), and its line in ``rounds.jsonl``."""
    num_labels = sum(info["labels_by_class"].values())
    checkpointer(run, num_labels, info)(classifier)
    write_text(run.config_path, dumps_toml(classifier.config.to_dict()))
    report = write_report(
        run, classifier, dataset, split, wall_time=wall_time, steps_trained=steps_trained,
        plots=plots, num_labels=num_labels,
    )
    record_round(run.path, info, classifier, report, wall_time, **more)
    return report


def classifier_data(classifier: SSVAEClassifier) -> tuple[Dataset, Split]:
    """The dataset and split of the classifier's own configuration."""
    dataset = load_run_data(classifier.config)
    return dataset, split_dataset(dataset, classifier.config)


def rewrite_report(run: Run, classifier: SSVAEClassifier, *, plots: bool) -> dict[str, Any]:
    """The report of the run's checkpoint written anew; the wall time is the sum of the
    logged chunks' times."""
    dataset, split = classifier_data(classifier)
    wall_time = float(sum(record.get("seconds", 0.0) for record in run.metrics()))
    steps = int(classifier.state.step) if classifier.state is not None else 0
    return write_report(
        run, classifier, dataset, split, wall_time=wall_time, steps_trained=steps, plots=plots,
        num_labels=len(run.label_store(dataset, split).current()),  # the labels it trained on
    )


def complete_round(
    run: Run,
    classifier: SSVAEClassifier,
    unrecorded: dict[str, Any] | None,
    *,
    plots: bool,
    on_notice: Notice | None,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of the run's checkpoint (``report``, or the run's own when it is of this
    step, or written anew), and the record of the checkpoint's round when ``rounds.jsonl``
    lacks it (``unrecorded``, ``ssvae_core.labels.rounds.unrecorded_round``)."""
    step = int(classifier.state.step) if classifier.state is not None else 0
    if report is None:
        report = run.report()
        if report is None or report.get("steps") != step:
            report = rewrite_report(run, classifier, plots=plots)
    if unrecorded is None:
        return report
    info = unrecorded
    if info["labels_by_class"] is None:  # a checkpoint written before checkpoints knew their round
        names = classifier.label_names
        current = run.label_store(*classifier_data(classifier)).current().values()
        info = {**info, "labels_by_class": {name: sum(1 for n in current if n == name) for name in names}}
    record = record_round(
        run.path, info, classifier, report, seconds_between(run.path, info["from_step"], step)
    )
    stopped = f"; it stopped before step {info['to_step']}" if record.get("partial") else ""
    tell(on_notice, [
        f"recorded round {record['round']} in {ROUNDS_NAME} ({record['command']}, steps "
        f"{record['from_step']} to {step}{stopped}), which an interrupted command had not"
    ])
    return report


def labeled_by_store(
    run: Run, classifier: SSVAEClassifier, dataset: Dataset, split: Split,
    store: LabelStore | None = None,
) -> Dataset:
    """The run's training examples labeled by its label store (``store``, or the run's),
    ready to train on.

    Labels of classes the classifier knows fill ``y``; labels naming classes it has not
    seen (or known classes without labels so far) go through
    ``SSVAEClassifier.add_labels``, which claims free channels for them.
    """
    store = run.label_store(dataset, split) if store is None else store
    position = {int(row): i for i, row in enumerate(split.train)}
    names = classifier.label_names
    y = np.full(len(split.train), -1, dtype=np.int32)
    later_rows, later_names = [], []
    labeled_classes = classes_trained(run, dataset, split)
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


def classes_trained(run: Run, dataset: Dataset, split: Split) -> set[str]:
    """The classes that had labels when the run last trained (from ``rounds.jsonl``, or
    the split's classes for a run without rounds)."""
    trained = trained_classes(run.path)
    if trained is not None:
        return trained
    return {dataset.label_names[int(dataset.y[i])] for i in split.labeled}
