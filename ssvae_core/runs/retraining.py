"""Retraining a run with the labels of its store: ``retrain_run``.

A retrain continues a finished run warm, from its checkpoint, with every label of its label
store (``labels.json``; never the split's): labels of known classes change values only, and
a label name the model has not seen claims free channels. Each retrain is a round of the run
(``rounds.jsonl``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ssvae_core.config import check_steps
from ssvae_core.errors import ConfigError
from ssvae_core.labels.rounds import round_info, unrecorded_round
from ssvae_core.labels.store import STORE_NAME, LabelStore
from ssvae_core.registry import Registry
from ssvae_core.runs.reports import held_out_evaluator
from ssvae_core.runs.run import Run, load_run_data, split_dataset, with_data
from ssvae_core.runs.run_steps import (
    checked_everywhere,
    checkpointer,
    complete_round,
    finish_round,
    follower_result,
    held,
    labeled_by_store,
    tell,
    train_logged,
)
from ssvae_core.runs.rundir import RunLock
from ssvae_core.training import MetricSink
from ssvae_core.training.distributed import is_main_process

DEFAULT_RETRAIN_STEPS = 1000


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
    test_data: str | None = None,
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
    overrides the run's ``train.split_channels`` for this retrain. ``data`` and ``test_data``
    say where the run's data and its given test set are where they have moved (recorded in
    the new checkpoint and ``config.toml``). With several
    processes only process 0 locks, repairs and writes the directory (see ``train_run``).
    """
    writer = is_main_process()
    with checked_everywhere():
        check_steps(steps, "--steps")
        run = Run.open(run_dir, "retrain", data=data, test_data=test_data)
        if held_lock is not None and held_lock.run_dir.resolve() != run.path.resolve():
            raise ConfigError(
                f"the lock given is on {os.fspath(held_lock.run_dir)!r}, not on {os.fspath(run.path)!r}"
            )
        lock = run.lock().acquire() if held_lock is None and writer else None
    with held(lock):
        with checked_everywhere():
            run.require_checkpoint("first")
            classifier = run.load_classifier(registry)
            classifier.config = config = with_data(classifier.config, data, test_data)
            done = int(classifier.state.step) if classifier.state is not None else 0
            check_steps(done + steps, f"the {done} steps taken and --steps {steps} together")
            # a caller holding the lock (the studio) may be writing the label store meanwhile
            spare = (STORE_NAME,) if held_lock is not None else ()
            tell(on_notice, run.recover(done, spare=spare) if writer else ())
            dataset = load_run_data(config)
            split = split_dataset(dataset, config)
            unrecorded = unrecorded_round(run.path, run.manifest(), done) if writer else None
            if unrecorded is not None:  # a round an interrupted command left unrecorded
                complete_round(run, classifier, unrecorded, plots=False, on_notice=on_notice)
            train = labeled_by_store(run, classifier, dataset, split, store)
            num_labels = int(np.sum(train.y >= 0))
            info = round_info("retrain", done, done + steps, classifier.label_names, train.y)
            save = checkpointer(run, num_labels, info) if writer and intermediate_checkpoints else None
            evaluate = held_out_evaluator(run, dataset, split) if writer else None
        wall_time = train_logged(
            run,
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
            return follower_result(classifier)
        return finish_round(
            run, info, classifier, dataset, split, wall_time=wall_time, steps_trained=steps, plots=plots
        )


__all__ = ["DEFAULT_RETRAIN_STEPS", "retrain_run"]
