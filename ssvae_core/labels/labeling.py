"""The label loop on run directories: query a run, and simulate query → label → retrain.

``query_run`` writes the examples a run should have labeled next as a *query sheet*
(``RUN/queries/<name>.csv``: ``index,label,score,predicted,certainty`` with the label column
empty, ready to fill in and hand to ``ssvae label``) and a PNG contact sheet of their images.

``run_loop`` simulates the whole loop for one or more strategies and seeds: it trains a
run with a few labels per class, then round after round queries it, labels the queried
examples with the data's own training labels (an ``Oracle`` that refuses held-out
rows) and retrains warm. Each (strategy, seed) is an ordinary run directory under
``LOOP/runs/<strategy>/seed-<s>/`` — the same commands by hand (``ssvae train``, ``ssvae
query``, ``ssvae label``, ``ssvae retrain``) give the same models — and the loop directory
holds the label-efficiency curve (``curve.jsonl``, ``curve.json``, ``curve.png``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssvae_core.config import Config, check_seed, check_steps, dumps_toml
from ssvae_core.data.loading import Dataset, Split, load_dataset
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.labels.active import label_free_strategies, query, query_key, registered_strategy
from ssvae_core.labels.label_issues import review_run, wrong_labels
from ssvae_core.labels.stopping import (
    DEFAULT_STABLE_BELOW,
    STOP_WHEN,
    pool_predictions,
    prediction_change,
)
from ssvae_core.labels.store import QUERY_SHEET_HEADER, utc_now
from ssvae_core.registry import Registry, default_registry
from ssvae_core.runs.explore import as_image, save_figure
from ssvae_core.runs.lifecycle import check_trainable, train_run
from ssvae_core.runs.retraining import retrain_run
from ssvae_core.runs.run import Run, split_dataset
from ssvae_core.runs.rundir import LOCK_NAME, check_fresh_dir, claim_new_run_dir
from ssvae_core.runs.runfiles import append_json_line
from ssvae_core.training.checkpoint import atomic_write_bytes

QUERIES_DIR = "queries"
CURVE_NAME = "curve.jsonl"
SHEET_COLUMNS = 10


@dataclasses.dataclass(frozen=True)
class Oracle:
    """The labels a simulated annotator gives: the data's own labels of training rows only.

    Asking for a held-out (test) row or a row outside the data is a ``DataError``, so
    a loop can never learn from the split it is scored on. With ``noise`` > 0 the oracle
    errs as people do: each example's label is replaced, with probability ``noise``, by
    another class drawn uniformly — the same wrong label whenever that example is asked for
    (the draw depends on ``seed`` and the example only). ``truth`` gives the data's own.
    """

    dataset: Dataset
    split: Split
    noise: float = 0.0
    seed: int = 0

    def labels(self, indices: Sequence[int]) -> list[str]:
        """The labels the oracle gives ``indices`` (with its noise, if any)."""
        names = self.truth(indices)
        if self.noise <= 0.0:
            return names
        classes = self.dataset.label_names
        noisy = []
        for index, name in zip(indices, names, strict=True):
            rng = np.random.default_rng([self.seed, int(index), 0x0BAD])
            if rng.random() < self.noise:
                others = [other for other in classes if other != name]
                name = others[int(rng.integers(len(others)))]
            noisy.append(name)
        return noisy

    def truth(self, indices: Sequence[int]) -> list[str]:
        """The data's own labels of ``indices``; a held-out or unlabeled row is a ``DataError``."""
        train = set(int(i) for i in self.split.train)
        names = []
        for index in indices:
            if int(index) not in train:
                raise DataError(
                    f"the oracle labels training examples only; example {int(index)} is not one "
                    "(it is held out for testing, or outside the data)"
                )
            label = int(self.dataset.y[int(index)])
            if label < 0:
                raise DataError(f"the data have no label for example {int(index)} to reveal")
            names.append(self.dataset.label_names[label])
        return names


def _free_path(path: Path) -> Path:
    """``path``, or ``path`` with ``-2``, ``-3``, ... before its suffix if it exists."""
    candidate, number = path, 1
    while candidate.exists() or candidate.with_suffix(".png").exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def sheet_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The query sheet's CSV text (label column empty)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(QUERY_SHEET_HEADER)
    for row in rows:
        writer.writerow(
            [row["index"], "", f"{row['score']:.6g}", row["predicted"], f"{row['certainty']:.4f}"]
        )
    return buffer.getvalue()


def write_sheet_image(path: Path, x: np.ndarray, rows: Sequence[Mapping[str, Any]], title: str) -> None:
    """A contact sheet of the queried images, each captioned with its index, predicted
    class and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(rows)
    columns = min(SHEET_COLUMNS, max(count, 1))
    lines = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(1.3 * columns, 1.5 * lines + 0.4), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, row, sample in zip(axes.ravel(), rows, x, strict=False):
        axis.imshow(as_image(np.asarray(sample)), cmap="gray")
        axis.set_title(f"#{row['index']} → {row['predicted']}\n{row['score']:.3g}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=100)


def query_run(
    run_dir: str | os.PathLike[str],
    n: int,
    *,
    strategy: str = "entropy",
    options: Mapping[str, Any] | None = None,
    seed: int | None = None,
    out: str | os.PathLike[str] | None = None,
    data: str | None = None,
    test_data: str | None = None,
    registry: Registry | None = None,
    image: bool = True,
) -> dict[str, Any]:
    """Write the ``n`` unlabeled training examples the run should have labeled next.

    The sheet goes to ``out`` (which must not exist yet) or to
    ``RUN/queries/step-<step>-<strategy>.csv`` (``-2``, ``-3``, ... when taken), with a
    PNG contact sheet beside it. Returns ``{"path", "image", "rows", "strategy"}`` where each
    row has ``index`` (a row of the run's dataset, as ``ssvae label`` expects), ``score``,
    ``predicted`` and ``certainty``. ``data`` and ``test_data`` say where the run's data and
    its given test set are, where they have moved.
    """
    run = Run.open(run_dir, "query", data=data, test_data=test_data)
    if seed is not None:
        check_seed(seed, "--seed")
    target = None if out is None else _sheet_path(Path(out))
    with run.lock():
        run.require_checkpoint("before querying it")
        registry = registry or default_registry()
        config, dataset, split = run.config, run.dataset, run.split
        labeled_rows = set(run.label_store().current())
        classifier = run.load_classifier(registry)
        train_x = dataset.x[split.train]
        labeled = np.isin(split.train, np.fromiter(labeled_rows, dtype=np.int64, count=len(labeled_rows)))
        assert classifier.model is not None and classifier.state is not None
        step = int(classifier.state.step)
        result = query(
            classifier.model, classifier.state.head_state, train_x, labeled, n,
            strategy=strategy, options=options, input_shape=classifier.input_shape,
            key=query_key(config.seed if seed is None else seed, step), registry=registry,
            calibration=classifier.calibration, ood=classifier.ood_score,
        )
        names = classifier.label_names
        rows = [
            {
                "index": int(split.train[i]),
                "score": float(score),
                "predicted": names[int(p)] if labeled.any() else "",  # no labels: no prediction
                "certainty": float(c),
            }
            for i, score, p, c in zip(
                result.indices, result.scores, result.predictions, result.certainty, strict=True
            )
        ]
        if target is None:
            folder = run.path / QUERIES_DIR
            folder.mkdir(exist_ok=True)
            target = _free_path(folder / f"step-{step}-{strategy}.csv")
        atomic_write_bytes(target, sheet_csv(rows).encode("utf-8"))
        picture = target.with_suffix(".png")
        if image:
            write_sheet_image(
                picture, dataset.x[[r["index"] for r in rows]], rows,
                f"{strategy}: {len(rows)} examples to label ({run.path.name}, step {step})",
            )
        return {
            "path": target,
            "image": picture if image else None,
            "rows": rows,
            "strategy": strategy,
            "step": step,
        }


def _sheet_path(target: Path) -> Path:
    """``--out`` of a query sheet, checked before any work: a new ``.csv`` file (its
    picture, the same name with ``.png``, new too) in a folder that exists."""
    where = os.fspath(target)
    if target.suffix.lower() != ".csv":
        raise ConfigError(
            f"--out {where!r} must name a .csv file: the sheet is CSV, and its picture is "
            "written beside it with the suffix .png"
        )
    if target.exists() or target.with_suffix(".png").exists():
        raise ConfigError(
            f"--out {where!r} already exists; query sheets are never overwritten "
            "(choose another path)"
        )
    if not target.parent.is_dir():
        raise ConfigError(f"--out {where!r}: its folder does not exist")
    return target


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; one clear error for anything else."""
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers such as 0,1,2; got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct integers >= 0 such as 0,1,2; got {text!r}")
    for seed in seeds:
        check_seed(seed, "each of --seeds")
    return seeds


INITIAL_TRAINING = ("cold", "warm")


@dataclasses.dataclass(frozen=True)
class LoopPlan:
    """What ``run_loop`` runs: strategies × seeds, each ``rounds`` rounds of
    ``per_round`` queries and ``steps_per_round`` warm steps, from a run trained with
    ``config`` (its ``data.labels_per_class`` is the initial budget).

    With ``initial_strategy`` the first labels are chosen, not drawn: a model is trained
    on the unlabeled data alone (the same config, no labels), the strategy picks
    ``labels_per_class × classes`` examples from it, and the initial run trains on their
    labels — continuing the label-free model for ``steps_per_round`` steps
    (``initial_training`` ``warm``, the default) or from scratch (``cold``)."""

    config: Config
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    rounds: int
    per_round: int
    steps_per_round: int
    options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    initial_strategy: str | None = None
    initial_training: str = "warm"
    oracle_noise: float = 0.0
    review_issues: int = 0
    stop_when: str | None = None
    stable_below: float = DEFAULT_STABLE_BELOW

    def check(self, registry: Registry) -> None:
        """Refuse a plan that cannot run (counts, fractions, seeds, strategies), before anything is trained."""
        for name, value in (("--rounds", self.rounds), ("--per-round", self.per_round), ("--steps-per-round", self.steps_per_round)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        check_steps(
            self.config.train.steps + self.rounds * self.steps_per_round,
            "the steps of the first training and of every round together",
        )
        if isinstance(self.oracle_noise, bool) or not isinstance(self.oracle_noise, (int, float)) or not (
            0.0 <= self.oracle_noise < 1.0
        ):
            raise ConfigError(f"--oracle-noise must be a fraction from 0 to below 1; got {self.oracle_noise!r}")
        if isinstance(self.review_issues, bool) or not isinstance(self.review_issues, int) or self.review_issues < 0:
            raise ConfigError(f"--review-issues must be an integer >= 0; got {self.review_issues!r}")
        if self.stop_when is not None and self.stop_when not in STOP_WHEN:
            raise ConfigError(f"--stop-when must be one of {', '.join(STOP_WHEN)}; got {self.stop_when!r}")
        if isinstance(self.stable_below, bool) or not isinstance(self.stable_below, (int, float)) or not (
            0.0 < self.stable_below < 1.0
        ):
            raise ConfigError(f"--stable-below must be a fraction between 0 and 1; got {self.stable_below!r}")
        if not self.seeds:
            raise ConfigError("give at least one seed")
        for seed in self.seeds:
            check_seed(seed, "each of --seeds")
        if not self.strategies:
            raise ConfigError("give at least one --strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"--strategy names a strategy twice: {', '.join(self.strategies)}")
        for name in self.strategies:
            registered_strategy(name, registry)
        if self.initial_training not in INITIAL_TRAINING:
            raise ConfigError(
                f"--initial-training must be one of {', '.join(INITIAL_TRAINING)}; got {self.initial_training!r}"
            )
        if self.initial_strategy is not None:
            budget = self.config.data.label_budget
            if budget is None or budget < 1:
                raise ConfigError(
                    "--initial-strategy chooses --initial-labels-per-class × classes first labels; "
                    f"give an integer >= 1, got {self.config.data.labels_per_class!r}"
                )
            component = registered_strategy(self.initial_strategy, registry).factory.component_type
            if not getattr(component, "label_free", False):
                raise ConfigError(
                    f"--initial-strategy {self.initial_strategy!r} reads the model's predictions, which "
                    "a model trained without labels does not have; use one of: "
                    f"{', '.join(label_free_strategies(registry))}"
                )

    @property
    def series_suffix(self) -> str:
        """What the curve's series names carry after the strategy: the chosen start."""
        return "" if self.initial_strategy is None else f" from {self.initial_strategy}"


def _round_record(strategy: str, seed: int, round_: int, report: dict[str, Any], queried: int) -> dict[str, Any]:
    return {
        "dataset": report["dataset"],
        "strategy": strategy,
        "seed": seed,
        "round": round_,
        "labels": report["num_labels"],
        "queried": queried,
        "test_accuracy": report["test_accuracy"],
        "ece": report["ece"],
        "steps": report["steps"],
        "time": utc_now(),
    }


def _copy_run(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(LOCK_NAME))


def series(record: Mapping[str, Any]) -> str:
    """The curve a loop record belongs to: its strategy, with the chosen start if any
    (``"entropy from typical"``)."""
    return str(record.get("series", record["strategy"]))


def summarise_curve(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per strategy (and start) and round: mean and spread over seeds of labels, accuracy
    and ECE."""
    summary: dict[str, Any] = {}
    for strategy in dict.fromkeys(series(r) for r in records):
        rows = []
        mine = [r for r in records if series(r) == strategy]
        for round_ in sorted({r["round"] for r in mine}):
            at = [r for r in mine if r["round"] == round_]
            accuracy = [r["test_accuracy"] for r in at]
            rows.append(
                {
                    "round": round_,
                    "labels": float(np.mean([r["labels"] for r in at])),
                    "test_accuracy": float(np.mean(accuracy)),
                    "test_accuracy_std": float(np.std(accuracy)),
                    "ece": float(np.mean([r["ece"] for r in at])),
                    "seeds": sorted(r["seed"] for r in at),
                }
            )
        summary[strategy] = rows
    return summary


def write_curve_plot(path: Path, summary: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> None:
    """Held-out accuracy and ECE against labels used, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for strategy, rows in summary.items():
        labels = [r["labels"] for r in rows]
        style = {"color": "black", "linestyle": "--"} if strategy == "random" else {}
        left.errorbar(
            labels, [r["test_accuracy"] for r in rows], yerr=[r["test_accuracy_std"] for r in rows],
            marker="o", markersize=3, capsize=2, label=strategy, **style,
        )
        right.plot(labels, [r["ece"] for r in rows], marker="o", markersize=3, label=strategy, **style)
    left.set_xlabel("labels used")
    left.set_ylabel("held-out accuracy (mean over seeds)")
    right.set_xlabel("labels used")
    right.set_ylabel("held-out ECE")
    left.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110)


def run_loop(
    plan: LoopPlan,
    out_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Simulate the label loop; returns the curve summary (also in ``LOOP/curve.json``).

    Per seed, one run is trained with the initial labels (``LOOP/runs/initial/seed-<s>``;
    drawn by the split, or chosen by ``plan.initial_strategy`` from a label-free run, see
    ``LoopPlan``) and copied for each strategy; each round queries ``per_round`` examples
    (``queries/round-<r>.csv`` in the strategy's run), gives them the ``Oracle``'s
    labels (source ``oracle``) and retrains ``steps_per_round`` steps warm.
    ``on_round(record)`` is called after every round, round 0 being the initial training.
    """
    registry = registry or default_registry()
    plan.check(registry)
    out = Path(out_dir)
    check_fresh_dir(out)
    dataset = load_dataset(plan.config.data.dataset, plan.config.data.test_dataset)
    check_trainable(plan.config, dataset, registry)
    _check_pools(plan, dataset)
    with claim_new_run_dir(out):
        atomic_write_bytes(out / "loop.json", json.dumps(_loop_settings(plan), indent=2).encode("utf-8"))
        atomic_write_bytes(out / "config.toml", dumps_toml(plan.config.to_dict()).encode("utf-8"))
        loop = _Loop(plan, dataset, out, registry, on_round)
        for seed in plan.seeds:
            loop.run_seed(seed)
        summary = summarise_curve(loop.records)
        atomic_write_bytes(out / "curve.json", json.dumps(summary, indent=2).encode("utf-8"))
        if plots:
            write_curve_plot(
                out / "curve.png", summary,
                f"{dataset.name}: {plan.per_round} queries per round from "
                f"{plan.config.data.labels_per_class} label(s) per class"
                + (f" chosen by {plan.initial_strategy}" if plan.initial_strategy else "")
                + f", seeds {', '.join(map(str, plan.seeds))}",
            )
        return summary


def _check_pools(plan: LoopPlan, dataset: Dataset) -> None:
    """Refuse a loop whose queries would run out of unlabeled examples for some seed."""
    for seed in plan.seeds:
        split = split_dataset(dataset, plan.config.replace(seed=seed))
        pool = len(split.train) - len(split.labeled)
        if plan.rounds * plan.per_round > pool:
            raise ConfigError(
                f"--rounds {plan.rounds} × --per-round {plan.per_round} queries "
                f"{plan.rounds * plan.per_round} examples, but the training split of seed {seed} "
                f"has only {pool} unlabeled examples; query fewer"
            )


def _loop_settings(plan: LoopPlan) -> dict[str, Any]:
    """What ``LOOP/loop.json`` records of the plan."""
    return {
        "data": plan.config.data.dataset,
        "strategies": list(plan.strategies),
        "seeds": list(plan.seeds),
        "initial_labels_per_class": plan.config.data.labels_per_class,
        "initial_strategy": plan.initial_strategy,
        "initial_training": plan.initial_training if plan.initial_strategy is not None else None,
        "rounds": plan.rounds,
        "per_round": plan.per_round,
        "steps_per_round": plan.steps_per_round,
        "initial_steps": plan.config.train.steps,
        "oracle_noise": plan.oracle_noise,
        "review_issues": plan.review_issues,
        "stop_when": plan.stop_when,
        "stable_below": plan.stable_below,
        "options": {k: dict(v) for k, v in plan.options.items()},
        "started": utc_now(),
    }


@dataclasses.dataclass
class _Loop:
    """A running loop: its plan, data and folder, and the curve's records so far."""

    plan: LoopPlan
    dataset: Dataset
    out: Path
    registry: Registry
    on_round: Callable[[dict[str, Any]], None] | None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def log(self, record: dict[str, Any]) -> None:
        """Add a round's record to the curve (``curve.jsonl``) and pass it on."""
        self.records.append(record)
        append_json_line(self.out / CURVE_NAME, record)
        if self.on_round is not None:
            self.on_round(record)

    def run_seed(self, seed: int) -> None:
        """The initial run of ``seed``, then every strategy's rounds from a copy of it."""
        plan, dataset = self.plan, self.dataset
        config = plan.config.replace(seed=seed)
        initial = self.out / "runs" / "initial" / f"seed-{seed}"
        started = time.perf_counter()
        split = split_dataset(dataset, config)
        oracle = Oracle(dataset, split, noise=float(plan.oracle_noise), seed=seed)
        start: dict[str, Any] = {}
        if plan.initial_strategy is None:
            report = train_run(config, initial, dataset=dataset, registry=self.registry, plots=False)
        else:
            report, start = _chosen_start(plan, config, dataset, split, oracle, self.out, self.registry)
        initial_time = round(time.perf_counter() - started, 3)
        for strategy in plan.strategies:
            run = self.out / "runs" / strategy / f"seed-{seed}"
            _copy_run(initial, run)
            record = {**_round_record(strategy, seed, 0, report, 0), **start}
            record["series"] = strategy + plan.series_suffix
            record["wall_time_s"] = initial_time
            self.log(record)
            self.run_rounds(run, strategy, seed, oracle)

    def run_rounds(self, run: Path, strategy: str, seed: int, oracle: Oracle) -> None:
        """The rounds of one strategy: query, label by the oracle, retrain; until the last
        round or, with ``stop_when`` ``stable``, the first round that changed few
        predictions."""
        plan, dataset = self.plan, self.dataset
        train_rows = np.asarray(oracle.split.train)
        previous = pool_predictions(run, dataset.x, train_rows)
        for round_ in range(1, plan.rounds + 1):
            started = time.perf_counter()
            (run / QUERIES_DIR).mkdir(exist_ok=True)
            queried = query_run(
                run, plan.per_round, strategy=strategy, options=plan.options.get(strategy),
                out=run / QUERIES_DIR / f"round-{round_}.csv", registry=self.registry, image=False,
            )
            indices = [row["index"] for row in queried["rows"]]
            _label_store(run, dataset, oracle.split, indices, oracle.labels(indices))
            reviewed = review_run(run, oracle, plan.review_issues) if plan.review_issues else {}
            round_report = retrain_run(run, plan.steps_per_round, registry=self.registry, plots=False)
            record = {**_round_record(strategy, seed, round_, round_report, len(indices)), **reviewed}
            if plan.oracle_noise:
                record["wrong_labels"] = wrong_labels(run, oracle)
            now = pool_predictions(run, dataset.x, train_rows)
            record["prediction_change"] = round(prediction_change(previous, now), 5)
            previous = now
            stop = plan.stop_when == "stable" and record["prediction_change"] < plan.stable_below
            if stop:
                record["stopped"] = "stable"
            record["series"] = strategy + plan.series_suffix
            record["wall_time_s"] = round(time.perf_counter() - started, 3)
            self.log(record)
            if stop:
                break


def _chosen_start(
    plan: LoopPlan, config: Config, dataset: Dataset, split: Split, oracle: Oracle, out: Path, registry: Registry
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The initial run of a loop whose first labels are chosen: a label-free run
    (``LOOP/runs/label-free/seed-<s>``) is queried for ``labels_per_class × classes``
    examples, which the initial run (``LOOP/runs/initial/seed-<s>``) trains on, cold or
    warm. Returns its report and what the round-0 record adds (the label-free clustering)."""
    assert plan.initial_strategy is not None
    seed = config.seed
    free_config = config.replace(data=dataclasses.replace(config.data, labels_per_class=0))
    free = out / "runs" / "label-free" / f"seed-{seed}"
    free_report = train_run(free_config, free, dataset=dataset, registry=registry, plots=False)
    classes = np.unique(dataset.y[split.train][dataset.y[split.train] >= 0]).size
    count = int(config.data.labels_per_class) * int(classes)
    (free / QUERIES_DIR).mkdir(exist_ok=True)
    queried = query_run(
        free, count, strategy=plan.initial_strategy, options=plan.options.get(plan.initial_strategy),
        out=free / QUERIES_DIR / "initial.csv", registry=registry, image=False,
    )
    indices = [row["index"] for row in queried["rows"]]
    initial = out / "runs" / "initial" / f"seed-{seed}"
    if plan.initial_training == "cold":
        report = train_run(free_config, initial, dataset=dataset, registry=registry, plots=False, labeled=indices)
    else:
        _copy_run(free, initial)
        _label_store(initial, dataset, split, indices, oracle.labels(indices))
        report = retrain_run(initial, plan.steps_per_round, registry=registry, plots=False)
    names = oracle.labels(indices)
    return report, {
        "start": plan.initial_strategy,
        "initial_training": plan.initial_training,
        "initial_classes": len(set(names)),
        "label_free_clustering": free_report.get("clustering"),
    }


def _label_store(run: Path, dataset: Dataset, split: Split, indices: list[int], names: list[str]) -> None:
    """Add the oracle's labels to the run's store (what ``ssvae label`` does with a file)."""
    own = Run(run)
    with own.lock():
        store = own.label_store(dataset, split)
        store.add(indices, names, x=dataset.x, source="oracle", allowed=split.train).save(own.store_path)


__all__ = [
    "CURVE_NAME",
    "LoopPlan",
    "Oracle",
    "parse_seeds",
    "query_run",
    "run_loop",
    "series",
    "summarise_curve",
]
