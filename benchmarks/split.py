"""Warm retrains with and without channel splitting (docs/benchmarks.md).

For each seed: the benchmark split with ``--initial`` labels per class, a fifth of the
unlabeled training examples held out as the validation set (``quality.validation_split``;
the test split is never read), trained with the preset. Then ``--rounds`` rounds, each
labeling ``--add`` more random training examples per class with the data's own labels
and retraining warm for ``--steps`` steps — once with ``train.split_channels`` on, once
off, from the same model. One JSON line per seed and round: validation accuracy of both,
the splits made and the conflicts left merged; then the mean per round::

    python benchmarks/split.py --preset digits --seeds 0,1,2,3,4 --out runs/split-digits.jsonl
    python benchmarks/split.py --preset digits --set prior.num_components=20 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from quality import validation_split

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import load_config
from ssvae_core.data.loading import load_dataset
from ssvae_core.runs.run import split_dataset, training_view


def _with_splitting(classifier: SSVAEClassifier, on: bool) -> SSVAEClassifier:
    twin = copy.copy(classifier)
    # training donates its buffers: each twin gets arrays of its own
    fresh = lambda tree: jax.tree.map(lambda a: jnp.array(a, copy=True) if isinstance(a, jax.Array) else a, tree)  # noqa: E731
    twin.model, twin.state, twin.opt_state = fresh(classifier.model), fresh(classifier.state), fresh(classifier.opt_state)
    twin.history, twin.claims = list(classifier.history), dict(classifier.claims)
    twin.config = twin.config.replace(train=dataclasses.replace(twin.config.train, split_channels=on))
    return twin


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, object]]:
    overrides = [f"seed={seed}", f"data.dataset={json.dumps(args.dataset)}",
                 f"data.labels_per_class={args.initial}", *args.set]
    config = load_config(args.config, overrides, preset=args.preset)
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    split = validation_split(split_dataset(dataset, config), seed)
    train = training_view(dataset, split)
    hidden = dataset.y[split.train]  # the training examples' own labels, given as they are asked for
    x_val, y_val = dataset.x[split.test], dataset.y[split.test]
    started = time.perf_counter()
    initial = SSVAEClassifier(config).fit(train)
    base = initial.evaluate(x_val, y_val)
    print(f"seed {seed}: initial {base['accuracy']:.4f} ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)
    models = {True: _with_splitting(initial, True), False: _with_splitting(initial, False)}
    rng = np.random.default_rng([seed, 2])
    records = []
    for round_ in range(1, args.rounds + 1):
        labeled = models[True].training_data.y >= 0
        rows = np.concatenate([
            rng.choice(np.flatnonzero((hidden == c) & ~labeled), size=args.add, replace=False)
            for c in range(dataset.num_classes)
        ])
        record: dict[str, object] = {
            "seed": seed, "round": round_, "labels": int(labeled.sum() + rows.size),
            "initial_accuracy": round(base["accuracy"], 4),
        }
        for on, model in models.items():
            model.add_labels(rows, [int(label) for label in hidden[rows]])
            model.retrain(args.steps)
            evaluation = model.evaluate(x_val, y_val)
            name = "split" if on else "no_split"
            record[f"{name}_accuracy"] = round(evaluation["accuracy"], 4)
            record[f"{name}_ece"] = round(evaluation["ece"], 4)
            if on:
                record["splits"] = model.channel_splits.get("splits", [])
                record["unresolved"] = model.channel_splits.get("unresolved", [])
        print(
            f"seed {seed} round {round_}: {record['labels']} labels, split {record['split_accuracy']:.4f}, "
            f"no split {record['no_split_accuracy']:.4f}, {len(record['splits'])} splits, "
            f"{len(record['unresolved'])} left merged",
            file=sys.stderr, flush=True,
        )
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="'digits' or a data path")
    parser.add_argument("--preset", default="digits", help="a shipped preset (digits, mnist)")
    parser.add_argument("--config", default=None, help="a TOML config file")
    parser.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    parser.add_argument("--initial", type=int, default=1, help="initial labels per class")
    parser.add_argument("--add", type=int, default=2, help="labels per class added each round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of adding labels")
    parser.add_argument("--steps", type=int, default=500, help="warm steps per round")
    parser.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = parser.parse_args(argv)
    records = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for record in run_seed(args, seed):
            records.append(record)
            line = json.dumps({**record, "preset": args.preset, "overrides": args.set})
            print(line, flush=True)
            if args.out:
                with open(Path(args.out), "a", encoding="utf-8") as out:
                    out.write(line + "\n")
    for round_ in sorted({r["round"] for r in records}):
        rows = [r for r in records if r["round"] == round_]
        print(
            f"round {round_} ({rows[0]['labels']} labels), mean over {len(rows)} seeds: "
            f"split {np.mean([r['split_accuracy'] for r in rows]):.4f}, "
            f"no split {np.mean([r['no_split_accuracy'] for r in rows]):.4f}, "
            f"initial {np.mean([r['initial_accuracy'] for r in rows]):.4f}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
