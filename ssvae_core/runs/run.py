"""A run directory as one object: its files, configuration, data, labels and model.

A run directory holds:

    config.toml      the resolved configuration
    metrics.jsonl    one JSON object per logged chunk of steps
    model.ckpt       the checkpoint (see ssvae_core.training.checkpoint), rewritten every
                     train.checkpoint_every steps and at the end
    report.json      held-out metrics and run facts; report.md the same for people
    labels.json      the label store: every label an example received (ssvae_core.labels.store)
    rounds.jsonl     one JSON object per training round (train, each retrain): labels
                     used, steps, classes added, held-out accuracy
    plots/           loss curves, τ heat-map, reliability diagram, channel usage, latent
                     map, channel members and their reconstructions
    .lock            held by the one command writing the directory (ssvae_core.runs.rundir)

Every command on an existing run reaches it through ``Run``: ``Run.open`` checks that the
folder is a run directory before anything (its lock) is written there; the run then gives
its files' paths, its configuration as the checkpoint saved it (reading its data from
``data``, and its given test set from ``test_data``, where they have moved), its dataset
and benchmark split, its label store checked against the data, its checkpoint, rounds,
report and writer lock. The split is rebuilt
from the data and the run's seed, never stored: the same data give the same split.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssvae_core.config import Config, config_from_dict, read_toml
from ssvae_core.data.loading import Dataset, Split, benchmark_split, from_arrays, load_dataset
from ssvae_core.errors import CheckpointError, ConfigError, DataError
from ssvae_core.labels.rounds import ROUNDS_NAME
from ssvae_core.labels.store import STORE_NAME, LabelStore
from ssvae_core.registry import Registry
from ssvae_core.runs.rundir import LOCK_NAME, METRICS_NAME, RunLock, recover
from ssvae_core.runs.runfiles import read_metrics, read_report, read_rounds
from ssvae_core.training.checkpoint import atomic_write_bytes, read_manifest

if TYPE_CHECKING:
    from ssvae_core.api import SSVAEClassifier

CHECKPOINT_NAME = "model.ckpt"
CONFIG_NAME = "config.toml"
REPORT_NAME = "report.json"
REPORT_MD_NAME = "report.md"
PLOTS_NAME = "plots"


def write_text(path: Path, text: str) -> None:
    """Write one of a run's text files atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def split_dataset(dataset: Dataset, config: Config) -> Split:
    """The benchmark split of ``dataset`` with the config's label budget and seed: its given
    test set when it came with one (``Dataset.test_rows``), else a held-out fifth."""
    return benchmark_split(
        dataset.y, config.data.label_budget, config.seed, dataset.num_classes,
        given_test=dataset.test_rows,
    )


def split_protocol(config: Config) -> dict[str, str]:
    """How a run's test set was chosen, for its report: ``protocol`` ("given test split" with
    ``test_dataset``, its path, or "held-out fifth")."""
    if config.data.test_dataset:
        return {"protocol": "given test split", "test_dataset": config.data.test_dataset}
    return {"protocol": "held-out fifth"}


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


def split_store(dataset: Dataset, split: Split) -> LabelStore:
    """The label store of a new run: the split's labeled examples, source ``split``."""
    names = [dataset.label_names[int(dataset.y[i])] for i in split.labeled]
    return LabelStore.empty().add(
        [int(i) for i in split.labeled], names, x=dataset.x, source="split"
    )


def resolvable(config: Config) -> Config:
    """The config with its data paths made absolute, so the run finds them from anywhere."""
    changes = {
        key: os.path.abspath(name)
        for key, name in (("dataset", config.data.dataset), ("test_dataset", config.data.test_dataset))
        if name and name != "digits" and Path(name).exists()
    }
    if not changes:
        return config
    return config.replace(data=dataclasses.replace(config.data, **changes))


def no_test_set_to_move(run: str) -> ConfigError:
    """The refusal of ``--test-data`` for ``run`` (a phrase naming it), which was given no
    test set: its test examples are a fifth of its own data, so no test part can have moved."""
    return ConfigError(
        f"--test-data gives where a run's given test set has moved, but {run} was given none "
        "(its data.test_dataset is empty): it holds out a fifth of its data for testing; "
        "drop --test-data (--data alone says where its data are)"
    )


def with_data(config: Config, data: str | None, test_data: str | None = None) -> Config:
    """``config`` reading its data from ``data`` and its given test set from ``test_data``
    (where the run's data have moved), each if given; a ``ConfigError`` for ``test_data``
    when the run was given no test set (``no_test_set_to_move``)."""
    if test_data is not None and not config.data.test_dataset:
        raise no_test_set_to_move("this run")
    if data is None and test_data is None:
        return config
    moved = dataclasses.replace(
        config.data,
        dataset=config.data.dataset if data is None else data,
        test_dataset=config.data.test_dataset if test_data is None else test_data,
    )
    return resolvable(config.replace(data=moved))


def load_run_data(config: Config) -> Dataset:
    """The dataset of an existing run's ``config``, with its given test set; where one of
    them is missing, a ``DataError`` naming it and the flag that says where it is now."""
    for flag, part, path in (
        ("--data", "data", config.data.dataset), ("--test-data", "test data", config.data.test_dataset)
    ):
        if path and path != "digits" and not Path(path).exists():
            raise DataError(
                f"the run's {part} {path!r} does not exist; if it moved, give where it is now "
                f"with {flag} PATH (ssvae label, labels, query, retrain, studio and train "
                "--resume take it)"
            )
    return load_dataset(config.data.dataset, config.data.test_dataset)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory: ``path``, with its data read from ``data`` and its given test set
    from ``test_data`` where they have moved.

    The configuration, dataset and split are read once, when first asked for; the label
    store, checkpoint, rounds and report are read anew at every call, since commands
    rewrite them.
    """

    path: Path
    data: str | None = None
    test_data: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str or PathLike works too

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike[str],
        command: str,
        *,
        data: str | None = None,
        test_data: str | None = None,
    ) -> Run:
        """``run_dir`` checked to be a run directory (a folder with a checkpoint or a
        ``config.toml``) before anything is written there; ``command`` names the command
        in the error. ``test_data`` (where the run's given test set has moved) is refused
        here too, for a run that was given none (``no_test_set_to_move``)."""
        path = Path(run_dir)
        if not path.is_dir():
            raise CheckpointError(f"{command} expects a run directory, got {os.fspath(path)!r}")
        if not (path / CHECKPOINT_NAME).exists() and not (path / CONFIG_NAME).exists():
            raise CheckpointError(
                f"{os.fspath(path)!r} is not a run directory (it has neither {CHECKPOINT_NAME} "
                f"nor {CONFIG_NAME})"
            )
        run = cls(path, data, test_data)
        if test_data is not None and not run.recorded_test_set():
            raise no_test_set_to_move(f"run {os.fspath(path)!r}")
        return run

    # ---- the layout ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """``config.toml``: the resolved configuration."""
        return self.path / CONFIG_NAME

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: one record per logged chunk of steps."""
        return self.path / METRICS_NAME

    @property
    def checkpoint_path(self) -> Path:
        """``model.ckpt``: the checkpoint."""
        return self.path / CHECKPOINT_NAME

    @property
    def report_path(self) -> Path:
        """``report.json``: held-out metrics and run facts."""
        return self.path / REPORT_NAME

    @property
    def report_md_path(self) -> Path:
        """``report.md``: the report for people."""
        return self.path / REPORT_MD_NAME

    @property
    def store_path(self) -> Path:
        """``labels.json``: the label store."""
        return self.path / STORE_NAME

    @property
    def rounds_path(self) -> Path:
        """``rounds.jsonl``: one record per training round."""
        return self.path / ROUNDS_NAME

    @property
    def plots_path(self) -> Path:
        """``plots/``: the run's figures."""
        return self.path / PLOTS_NAME

    @property
    def lock_path(self) -> Path:
        """``.lock``: held by the one command writing the directory."""
        return self.path / LOCK_NAME

    # ---- the writer lock and repairs ------------------------------------------------------

    def lock(self) -> RunLock:
        """The run's writer lock (not yet taken: use it as a context, or ``acquire`` it)."""
        return RunLock(self.path)

    def recover(self, step: int, *, spare: Sequence[str] = ()) -> list[str]:
        """Repair what an interrupted command left, back to the checkpoint's ``step``
        (``ssvae_core.runs.rundir.recover``); returns a note per repair."""
        return recover(self.path, step, spare=spare)

    # ---- the checkpoint and configuration -------------------------------------------------

    def require_checkpoint(self, before: str) -> Path:
        """The checkpoint's path; a ``CheckpointError`` if the run has none yet (``before``
        says what the user wanted to do, as in "before labeling")."""
        if not self.checkpoint_path.exists():
            raise CheckpointError(
                f"{os.fspath(self.path)!r} has no checkpoint yet; finish the run with "
                f"`ssvae train --resume` {before}"
            )
        return self.checkpoint_path

    def manifest(self) -> dict[str, Any]:
        """The checkpoint's manifest (a clear error for a missing or foreign file)."""
        return read_manifest(self.checkpoint_path)

    def load_classifier(self, registry: Registry | None = None) -> SSVAEClassifier:
        """The classifier of the run's checkpoint."""
        from ssvae_core.api import SSVAEClassifier

        return SSVAEClassifier.load(self.checkpoint_path, registry=registry)

    def recorded_test_set(self) -> str:
        """The run's given test set as its checkpoint (before the first one, its
        ``config.toml``) records it: ``data.test_dataset``, empty for a held-out fifth."""
        config = self.manifest()["config"] if self.checkpoint_path.exists() else read_toml(self.config_path)
        data = config.get("data")
        return str(data.get("test_dataset") or "") if isinstance(data, dict) else ""

    @functools.cached_property
    def config(self) -> Config:
        """The configuration the checkpoint was trained with, reading its data from
        ``data`` and its given test set from ``test_data`` where given."""
        return with_data(config_from_dict(self.manifest()["config"]), self.data, self.test_data)

    # ---- data, split and labels -----------------------------------------------------------

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The run's dataset (``config.data.dataset``, with its given test set)."""
        return load_run_data(self.config)

    @functools.cached_property
    def split(self) -> Split:
        """The run's benchmark split of its dataset (rebuilt from the run's seed)."""
        return split_dataset(self.dataset, self.config)

    def label_store(self, dataset: Dataset | None = None, split: Split | None = None) -> LabelStore:
        """The run's label store, checked against the data (a run written before the store
        existed gets the split's labels). ``dataset`` and ``split`` are the run's data when
        the caller holds them already (default: ``Run.dataset``, ``Run.split``)."""
        dataset = self.dataset if dataset is None else dataset
        split = self.split if split is None else split
        path = self.store_path
        store = LabelStore.load(path) if path.exists() else split_store(dataset, split)
        store.verify(dataset.x)
        return store

    # ---- what training wrote ------------------------------------------------------------------

    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (none when it does not exist)."""
        return read_metrics(self.metrics_path)

    def rounds(self) -> list[dict[str, Any]]:
        """The round records of ``rounds.jsonl``, oldest first."""
        return read_rounds(self.rounds_path)

    def report(self) -> dict[str, Any] | None:
        """``report.json``; None when it does not exist."""
        return read_report(self.report_path)


__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "PLOTS_NAME",
    "REPORT_MD_NAME",
    "REPORT_NAME",
    "Run",
    "chosen_labels",
    "load_run_data",
    "no_test_set_to_move",
    "resolvable",
    "split_dataset",
    "split_protocol",
    "split_store",
    "training_view",
    "with_data",
    "write_text",
]
