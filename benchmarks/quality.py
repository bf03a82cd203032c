"""Semi-supervised quality benchmark (docs/benchmarks.md).

For each seed: the benchmark split (held-out 20 %, ``labels_per_class`` labels per class),
training from scratch, then test accuracy of the latent-only classifier and ECE, and how
the channels cluster the classes (clustering accuracy matched one-to-one and many-to-one,
NMI, ARI). With ``--labels-per-class 0`` the model trains on unlabeled data alone and only
the clustering figures are reported. Prints one JSON line per seed and a summary line last
(mean, std and worst over seeds)::

    python benchmarks/quality.py --dataset digits --seeds 0,1,2 --preset digits
    python benchmarks/quality.py --dataset ../shared/data/mnist-t10k --preset mnist
    python benchmarks/quality.py --dataset digits --preset digits --labels-per-class 0 --validation
    python benchmarks/quality.py --dataset ../shared/data/mnist-train \
        --test-dataset ../shared/data/mnist-t10k --preset mnist

``--test-dataset`` uses the test set that came with the data instead of a held-out fifth:
every row of ``--dataset`` is training data and every labeled row of the test set is tested.

``--validation`` tunes without touching the test set: a fifth of the unlabeled training
examples is held out of training and the figures are measured on it; the test set is not
used at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from baselines import baseline_names, run_baselines

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import label_budget_argument, load_config
from ssvae_core.data.loading import Split, load_dataset
from ssvae_core.errors import SSVAEError
from ssvae_core.runs.run import split_dataset, split_protocol, training_view

VALIDATION_FRACTION = 0.2
CLUSTERING = ("clustering_accuracy", "many_to_one_accuracy", "nmi", "ari")


def validation_split(split: Split, seed: int) -> Split:
    """Carve a validation set out of the unlabeled training examples of ``split``.

    ``numpy.random.default_rng([seed, 1])`` permutes the unlabeled training indices; the
    first fifth becomes the evaluation set (returned as ``test``) and leaves training.
    """
    unlabeled = np.setdiff1d(split.train, split.labeled)
    order = np.random.default_rng([seed, 1]).permutation(unlabeled)
    held_out = order[: int(len(order) * VALIDATION_FRACTION)]
    return Split(
        train=np.setdiff1d(split.train, held_out), test=held_out, labeled=split.labeled
    )


def evaluate_seed(args: argparse.Namespace, seed: int) -> dict[str, object]:
    overrides = [f"seed={seed}", f"data.dataset={json.dumps(args.dataset)}", *args.set]
    if args.test_dataset is not None:
        overrides.insert(2, f"data.test_dataset={json.dumps(args.test_dataset)}")
    if args.labels_per_class is not None:
        overrides.append(f"data.labels_per_class={args.labels_per_class}")
    config = load_config(args.config, overrides, preset=args.preset)
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    split = split_dataset(dataset, config)
    if args.validation:
        split = validation_split(split, seed)
    baselines = run_baselines(args.baselines, dataset, split, seed) if args.baselines else {}
    if args.only_baselines:
        return {
            "dataset": dataset.name, "seed": seed,
            "evaluated_on": "validation" if args.validation else "test",
            **split_protocol(config), "num_labels": len(split.labeled), "baselines": baselines,
        }
    classifier = SSVAEClassifier(config)
    started = time.perf_counter()
    classifier.fit(training_view(dataset, split))
    wall = time.perf_counter() - started
    evaluation = classifier.evaluate(dataset.x[split.test], dataset.y[split.test])
    train = classifier.config.train
    label_free = len(split.labeled) == 0  # no labels: no classifier, only the channels
    clustering = evaluation.get("clustering") or {}
    return {
        "dataset": dataset.name,
        "seed": seed,
        "preset": args.preset,
        "evaluated_on": "validation" if args.validation else "test",
        **split_protocol(config),
        "accuracy": None if label_free else evaluation["accuracy"],
        "ece": None if label_free else evaluation["ece"],
        **{name: clustering.get(name) for name in CLUSTERING},
        "ece_uncalibrated": None if label_free else (evaluation.get("calibration") or {}).get("ece_uncalibrated"),
        "temperature": None if label_free else (evaluation.get("calibration") or {}).get("temperature"),
        # which graph the calibration read, where the labels chose it (choose_features)
        "graph_features": ((evaluation.get("calibration") or {}).get("graph_features") or {}).get("chosen"),
        "free_channels": (evaluation.get("channels") or {}).get("free_channels", []),
        "num_labels": len(split.labeled),
        "wall_time_s": wall,
        "images_per_s": train.steps * train.batch_size / wall,
        "steps": train.steps,
        "batch_size": train.batch_size,
        "encoder": classifier.config.encoder.name,
        "prior": classifier.config.prior.name,
        "overrides": args.set,
        **({"baselines": baselines} if baselines else {}),
    }


def run_seeds(
    evaluate: Callable[[argparse.Namespace, int], dict[str, Any]],
    args: argparse.Namespace,
    seeds: list[int],
    program: str,
) -> list[dict[str, Any]] | None:
    """``evaluate(args, seed)`` for each seed, printing each result as a JSON line; ``None``
    (after one error line on stderr) when the configuration or data are refused."""
    results = []
    try:
        for seed in seeds:
            result = evaluate(args, seed)
            results.append(result)
            print(json.dumps(result), flush=True)
    except SSVAEError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return None
    return results


def model_summary(results: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Mean, std and worst over seeds of the model's figures, its mean ECE and speed."""
    summary: dict[str, Any] = {}
    for name in ("accuracy", *CLUSTERING):
        values = [r[name] for r in results]
        if any(v is None for v in values):
            continue  # no labels: no accuracy; no channels: no clustering figures
        figures = np.array(values)
        summary.update({
            f"{name}_mean": float(figures.mean()),
            f"{name}_std": float(figures.std()),
            f"{name}_worst": float(figures.min()),
        })
        if name == "accuracy":
            summary["worst_seed"] = seeds[int(figures.argmin())]
    for name in ("ece", "ece_uncalibrated"):
        if all(r[name] is not None for r in results):
            summary[f"{name}_mean"] = float(np.mean([r[name] for r in results]))
    summary.update({
        "wall_time_s": float(np.mean([r["wall_time_s"] for r in results])),
        "images_per_s": float(np.mean([r["images_per_s"] for r in results])),
    })
    return summary


def baseline_summary(results: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Each baseline's mean and worst accuracy and mean ECE over seeds."""
    summary: dict[str, Any] = {}
    for name in names:
        figures = [r["baselines"][name] for r in results if r["baselines"][name] is not None]
        if not figures:
            continue
        accuracies = np.array([f["accuracy"] for f in figures])
        summary[f"{name}_accuracy_mean"] = float(accuracies.mean())
        summary[f"{name}_accuracy_worst"] = float(accuracies.min())
        summary[f"{name}_ece_mean"] = float(np.mean([f["ece"] for f in figures]))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="'digits' or a data path")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument(
        "--labels-per-class", type=label_budget_argument, default=None,
        help="labels per class: an integer (0: none; the channels are then measured by clustering "
        "accuracy, NMI and ARI) or 'all'",
    )
    parser.add_argument(
        "--test-dataset", default=None, metavar="PATH",
        help="the test set that came with the data (same sample shape and classes): the whole "
        "of --dataset trains and this is the test set; --validation then carves the validation "
        "set out of --dataset only",
    )
    parser.add_argument("--preset", default=None, help="a shipped preset (auto, digits, mnist)")
    parser.add_argument("--config", default=None, help="a TOML config (over the preset)")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="measure on a validation set carved from the training split (for tuning)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument(
        "--baselines", type=baseline_names, default=[], metavar="NAMES",
        help="comma-separated baselines run on the same split and labels (logreg, convnet, "
        "label_spreading; benchmarks/baselines.py)",
    )
    parser.add_argument(
        "--only-baselines", action="store_true", help="run the --baselines and not the model"
    )
    args = parser.parse_args()
    if args.only_baselines and not args.baselines:
        parser.error("--only-baselines needs --baselines")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = run_seeds(evaluate_seed, args, seeds, "quality")
    if results is None:
        return 2
    summary: dict[str, Any] = {
        "summary": True,
        "dataset": results[0]["dataset"],
        "preset": args.preset,
        "evaluated_on": "validation" if args.validation else "test",
        "seeds": seeds,
    }
    if not args.only_baselines:
        summary.update(model_summary(results, seeds))
    summary.update(baseline_summary(results, args.baselines))
    summary["overrides"] = args.set
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
