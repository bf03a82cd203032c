"""Resuming a run after a kill: ``resume_run``.

A killed ``ssvae train`` loses at most the steps since its last checkpoint: ``resume_run``
continues from that checkpoint (or from the start, if the kill came before the first one),
finishing the round the kill interrupted, and gives a run that has all its steps the report
and round record it lacks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import Config, check_steps, config_from_dict, read_toml
from ssvae_core.data.loading import Dataset, Split
from ssvae_core.errors import ConfigError
from ssvae_core.labels.rounds import last_step, round_info, unrecorded_round
from ssvae_core.registry import Registry
from ssvae_core.runs.reports import held_out_evaluator
from ssvae_core.runs.run import Run, load_run_data, split_dataset, training_view, with_data
from ssvae_core.runs.run_steps import (
    Notice,
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
from ssvae_core.training import MetricSink
from ssvae_core.training.distributed import is_main_process


@dataclasses.dataclass
class _Resumed:
    """What a resume trains: the classifier, from which round and step, on what data."""

    classifier: SSVAEClassifier
    train: Callable[[Sequence[MetricSink]], object]
    info: dict[str, Any]
    start: int
    dataset: Dataset
    split: Split


def _saved_state(run: Run, registry: Registry | None) -> tuple[SSVAEClassifier | None, Config, int]:
    """The run's classifier (None before its first checkpoint), its configuration (the
    checkpoint's, or ``config.toml``'s) with the data moved to ``run.data`` and its given
    test set to ``run.test_data``, and the steps taken."""
    classifier = None
    if run.checkpoint_path.exists():
        classifier = run.load_classifier(registry)
        config = classifier.config
        done = int(classifier.state.step) if classifier.state is not None else 0
    else:
        config = config_from_dict(read_toml(run.config_path), registry)
        done = 0
    if run.data is not None or run.test_data is not None:
        config = with_data(config, run.data, run.test_data)
        if classifier is not None:
            classifier.config = config
    return classifier, config, done


def _all_steps_taken(done: int, target: int, steps: int | None) -> ConfigError:
    """The refusal of a resume with nothing left to train."""
    if steps is None:
        return ConfigError(f"this run has taken all of its {done} steps; pass --steps N > {done} to train further")
    return ConfigError(f"--steps must exceed the {done} steps this run has taken, got {target}")


def _resumed(
    run: Run,
    classifier: SSVAEClassifier | None,
    config: Config,
    *,
    done: int,
    target: int,
    unrecorded: dict[str, Any] | None,
    registry: Registry | None,
    writer: bool,
) -> _Resumed:
    """The training of a resume: from the checkpoint (or from the start, before the first
    one), continuing the round a kill interrupted, or as a round of its own."""
    dataset = load_run_data(config)
    split = split_dataset(dataset, config)
    train = training_view(dataset, split)
    if classifier is not None:
        train = labeled_by_store(run, classifier, dataset, split)
    num_labels = int(np.sum(train.y >= 0))
    command, start = ("train", 0) if classifier is None else ("resume", done)
    if unrecorded is not None:
        command, start = unrecorded["command"], unrecorded["from_step"]
    names = train.label_names if classifier is None else classifier.label_names
    info = round_info(command, start, target, names, train.y)
    save = checkpointer(run, num_labels, info) if writer else None
    evaluate = held_out_evaluator(run, dataset, split) if writer else None
    if classifier is None:
        config = config.replace(train=dataclasses.replace(config.train, steps=target))
        fresh = SSVAEClassifier(config, registry=registry)

        def fit(all_sinks: Sequence[MetricSink]) -> object:
            return fresh.fit(train, sinks=all_sinks, on_checkpoint=save, evaluate=evaluate)

        return _Resumed(fresh, fit, info, start, dataset, split)
    loaded = classifier

    def resume(all_sinks: Sequence[MetricSink]) -> object:
        return loaded.resume(train, until_step=target, sinks=all_sinks, on_checkpoint=save, evaluate=evaluate)

    return _Resumed(loaded, resume, info, start, dataset, split)


def resume_run(
    run_dir: str | os.PathLike[str],
    steps: int | None = None,
    *,
    registry: Registry | None = None,
    sinks: Sequence[MetricSink] = (),
    on_start: Callable[[], None] | None = None,
    on_notice: Notice | None = None,
    plots: bool = True,
    data: str | None = None,
    test_data: str | None = None,
) -> dict[str, Any]:
    """Continue a run from its last checkpoint up to ``steps`` total (default: the run's
    own ``train.steps``), on its own data and split.

    After a kill this finishes the run: a run killed before its first checkpoint starts
    again from its ``config.toml``; leftovers of interrupted writes are removed and
    ``metrics.jsonl`` is cut back to the checkpoint's step (each repair is passed to
    ``on_notice``). A run that has all its steps but no report, or no line in
    ``rounds.jsonl`` for its last round, gets them; a round a kill interrupted is continued
    and recorded as one round (``ssvae_core.labels.rounds``). The
    directory is locked for the whole command; metrics are appended, and checkpoint,
    config and reports are replaced atomically. ``data`` points to the run's dataset,
    and ``test_data`` to its given test set, where they have moved (the same data, split by
    the run's seed). With several processes only process 0 locks, repairs and writes the
    directory (see ``ssvae_core.runs.lifecycle.train_run``).
    """
    writer = is_main_process()
    with checked_everywhere():
        run = Run.open(run_dir, "--resume", data=data, test_data=test_data)
        lock = run.lock().acquire() if writer else None
    with held(lock):
        with checked_everywhere():
            classifier, config, done = _saved_state(run, registry)
            tell(on_notice, run.recover(done) if writer else ())
            target = config.train.steps if steps is None else steps
            check_steps(target, "--steps")
            # the round a kill left unrecorded; a damaged rounds.jsonl is refused here, before training
            unrecorded = None
            if classifier is None:
                last_step(run.path)
            else:
                unrecorded = unrecorded_round(run.path, run.manifest(), done)
            if target <= done:
                if classifier is not None and steps is None and not writer:
                    return follower_result(classifier)
                if classifier is not None and steps is None and (
                    unrecorded is not None or not run.report_path.exists()
                ):
                    return complete_round(run, classifier, unrecorded, plots=plots, on_notice=on_notice)
                raise _all_steps_taken(done, target, steps)
            resumed = _resumed(
                run, classifier, config, done=done, target=target, unrecorded=unrecorded,
                registry=registry, writer=writer,
            )
        wall_time = train_logged(
            run, resumed.train, append=True, sinks=sinks, on_start=on_start, writer=writer
        )
        if not writer:
            return follower_result(resumed.classifier)
        return finish_round(
            run, resumed.info, resumed.classifier, resumed.dataset, resumed.split,
            wall_time=wall_time, steps_trained=target - done, plots=plots,
            **({"resumed_at": done} if done > resumed.start else {}),
        )


__all__ = ["resume_run"]
