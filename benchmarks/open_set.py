"""Open-set benchmark (docs/benchmarks.md): a class nobody labeled, found and then named.

The benchmark split of docs/benchmarks.md, except that the hidden classes (default 9) get
no label: the model trains on the other classes' labels only, with more channels than
classes (default ``prior.num_components=20``). Per split seed it reports

(a) before the class is named: the AUROC of the OOD score ``1 − max_c r_c max_y τ_{c,y}``
    for the hidden classes' held-out images against the other classes' held-out images,
    and the known classes' held-out accuracy;
(b) after 5 labels of each hidden class (random training examples of it) are added under
    a name the model has not seen and the model is retrained warm for ``--retrain-steps``
    steps: each hidden class's held-out recall, the known classes' accuracy change, the
    channels the new class claimed, and the retrain's wall time.

One JSON line per seed, then a summary line (means over seeds)::

    python benchmarks/open_set.py --dataset digits --preset digits --seeds 0,1,2
    python benchmarks/open_set.py --dataset ../shared/data/mnist-t10k --preset mnist

``--validation`` measures on a fifth of the unlabeled training examples instead of the
test split (for tuning), as in ``benchmarks/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import label_budget_argument, load_config
from ssvae_core.data.loading import Dataset, from_arrays, load_dataset
from ssvae_core.runs.metrics import auroc
from ssvae_core.runs.run import split_dataset

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from quality import run_seeds, validation_split


def known_view(dataset: Dataset, train: np.ndarray, labeled: np.ndarray, hidden: list[int]) -> Dataset:
    """The training rows with labels only for the labeled examples of known classes,
    renumbered over the known classes (whose names keep the dataset's names)."""
    known = [c for c in range(dataset.num_classes) if c not in hidden]
    remap = np.full(dataset.num_classes, -1, dtype=np.int32)
    remap[known] = np.arange(len(known))
    labels = np.full(len(train), -1, dtype=np.int32)
    is_labeled = np.isin(train, labeled)
    labels[is_labeled] = remap[dataset.y[train[is_labeled]]]
    return from_arrays(
        dataset.x[train],
        labels,
        name=dataset.name,
        num_classes=len(known),
        label_names=[dataset.label_names[c] for c in known],
    )


def accuracy_by_name(classifier: SSVAEClassifier, x: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Whether the predicted label name of each row equals its true name."""
    predicted = np.asarray(classifier.label_names, dtype=object)[classifier.predict(x)]
    return predicted == names


def evaluate_seed(args: argparse.Namespace, seed: int) -> dict[str, object]:
    overrides = [f"seed={seed}", f"data.dataset={json.dumps(args.dataset)}", *args.set]
    if args.labels_per_class is not None:
        overrides.append(f"data.labels_per_class={args.labels_per_class}")
    config = load_config(args.config, overrides, preset=args.preset)
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    hidden = args.hidden
    split = split_dataset(dataset, config)
    if args.validation:
        split = validation_split(split, seed)
    train = known_view(dataset, split.train, split.labeled, hidden)
    classifier = SSVAEClassifier(config)
    started = time.perf_counter()
    classifier.fit(train)
    fit_time = time.perf_counter() - started

    x_test, y_test = dataset.x[split.test], dataset.y[split.test]
    names_test = np.asarray(dataset.label_names, dtype=object)[y_test]
    is_hidden = np.isin(y_test, hidden)
    ood = classifier.ood_score(x_test)
    known_before = accuracy_by_name(classifier, x_test[~is_hidden], names_test[~is_hidden])
    channels_before = classifier.channels()
    free_before = [row["channel"] for row in channels_before if row["free"]]

    rng = np.random.default_rng([seed, 2])
    rows, names = [], []
    for c in hidden:
        members = np.flatnonzero(dataset.y[split.train] == c)
        chosen = rng.choice(members, args.new_labels, replace=False)
        rows.extend(chosen.tolist())
        names.extend([dataset.label_names[c]] * args.new_labels)
    started = time.perf_counter()
    classifier.add_labels(rows, names)
    classifier.retrain(args.retrain_steps)
    retrain_time = time.perf_counter() - started

    known_after = accuracy_by_name(classifier, x_test[~is_hidden], names_test[~is_hidden])
    correct_hidden = accuracy_by_name(classifier, x_test[is_hidden], names_test[is_hidden])
    recall = {
        dataset.label_names[c]: float(np.mean(correct_hidden[y_test[is_hidden] == c])) for c in hidden
    }
    return {
        "dataset": dataset.name,
        "seed": seed,
        "preset": args.preset,
        "evaluated_on": "validation" if args.validation else "test",
        "hidden": [dataset.label_names[c] for c in hidden],
        "num_components": getattr(classifier.config.prior.options, "num_components", None),
        "ood_auroc": auroc(ood[~is_hidden], ood[is_hidden]),
        "free_channels_before": free_before,
        "known_accuracy_before": float(np.mean(known_before)),
        "known_accuracy_after": float(np.mean(known_after)),
        "known_accuracy_change": float(np.mean(known_after) - np.mean(known_before)),
        "hidden_recall": recall,
        "hidden_recall_mean": float(np.mean(list(recall.values()))),
        "claimed_channels": {name: list(c) for name, c in classifier.claims.items()},
        "channel_splits": classifier.channel_splits,
        "accuracy_after": float(
            np.mean(accuracy_by_name(classifier, x_test, names_test))
        ),
        "new_labels_per_class": args.new_labels,
        "retrain_steps": args.retrain_steps,
        "retrain_wall_time_s": retrain_time,
        "fit_wall_time_s": fit_time,
        "overrides": args.set,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="'digits' or a data path")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    parser.add_argument("--hidden", default="9", help="comma-separated classes given no label")
    parser.add_argument("--labels-per-class", type=label_budget_argument, default=None, help="an integer (0: no labels) or all")
    parser.add_argument("--new-labels", type=int, default=5, help="labels given to each hidden class")
    parser.add_argument("--retrain-steps", type=int, default=1000)
    parser.add_argument("--preset", default=None, help="a shipped preset (digits, mnist)")
    parser.add_argument("--config", default=None, help="a TOML config (over the preset)")
    parser.add_argument("--validation", action="store_true", help="measure on a validation set")
    parser.add_argument(
        "--set", action="append", default=None, metavar="SECTION.KEY=VALUE",
        help="config override (default: prior.num_components=20)",
    )
    args = parser.parse_args()
    args.set = ["prior.num_components=20"] if args.set is None else args.set
    args.hidden = [int(c) for c in args.hidden.split(",") if c.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = run_seeds(evaluate_seed, args, seeds, "open_set")
    if results is None:
        return 2

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in results]))

    summary = {
        "summary": True,
        "dataset": results[0]["dataset"],
        "preset": args.preset,
        "evaluated_on": results[0]["evaluated_on"],
        "hidden": results[0]["hidden"],
        "seeds": seeds,
        "ood_auroc_mean": mean("ood_auroc"),
        "hidden_recall_mean": mean("hidden_recall_mean"),
        "known_accuracy_before_mean": mean("known_accuracy_before"),
        "known_accuracy_change_mean": mean("known_accuracy_change"),
        "accuracy_after_mean": mean("accuracy_after"),
        "retrain_wall_time_s": mean("retrain_wall_time_s"),
        "overrides": args.set,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
