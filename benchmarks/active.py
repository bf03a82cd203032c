"""Label efficiency of the acquisition strategies (docs/benchmarks.md).

For each seed: the benchmark split with ``--initial`` labels per class, trained with the
preset; then ``--rounds`` rounds, each querying ``--per-round`` examples with every
strategy, labeling them with the data's own training labels and retraining warm for
``--steps-per-round`` steps (``ssvae_core.labels.labeling.run_loop``: every strategy starts from
the same initial model and gets the same budget). Each seed is its own loop directory
``OUT/seed-<s>`` (a finished one is reused, so an interrupted benchmark resumes). Then a
summary over every seed: held-out accuracy against labels used per strategy, one JSON line
per strategy, the gain over random at ``--at`` labels, the labels each strategy needs to
reach random's final accuracy, and ``OUT/curve.png``::

    python benchmarks/active.py --dataset digits --preset digits --seeds 0,1,2 --out runs/active-digits
    python benchmarks/active.py --dataset ../shared/data/mnist-t10k --preset mnist \\
        --seeds 0,1,2 --strategies random,entropy,margin --out runs/active-mnist
    python benchmarks/active.py --summarise runs/active-digits

``--validation`` runs the same loops on the split's training examples alone, a fifth of
them held out as the validation set (for choosing settings without the test split).

``--starts draw,typical,badge`` compares how the first labels are had: ``draw`` is the
split's random draw of ``--initial`` labels per class; a strategy name chooses ``--initial``
× classes first labels from a model trained without labels (``ssvae loop
--initial-strategy``, trained on them ``--initial-training`` cold or warm). Each start is
its own loop directory (``OUT/seed-<s>`` for ``draw``, ``OUT/seed-<s>-from-<name>``
otherwise) and its curves are named ``<strategy> from <name>`` in the summary::

    python benchmarks/active.py --preset digits --seeds 0,1,2 --strategies random \
        --starts draw,random,typical,badge --rounds 2 --validation --out runs/active-starts
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssvae_core.config import load_config
from ssvae_core.data.loading import load_dataset
from ssvae_core.errors import SSVAEError
from ssvae_core.labels.labeling import (
    CURVE_NAME,
    LoopPlan,
    parse_seeds,
    run_loop,
    series,
    summarise_curve,
    write_curve_plot,
)
from ssvae_core.registry import default_registry
from ssvae_core.runs.run import split_dataset

DRAW = "draw"  # the split's random draw of the first labels, per class


def validation_data(args: argparse.Namespace, seed: int) -> str:
    """An .npz of the split's training examples only: the loop's own split of it holds a
    fifth out as the validation set, and the test split is never loaded again."""
    config = load_config(
        args.config,
        [f"seed={seed}", f"data.dataset={json.dumps(args.dataset)}", f"data.labels_per_class={args.initial}", *args.set],
        preset=args.preset,
    )
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    split = split_dataset(dataset, config)
    path = Path(args.out) / f"validation-data-seed-{seed}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=dataset.x[split.train], y=dataset.y[split.train])
    return str(path.resolve())


def run_seed(args: argparse.Namespace, seed: int, strategies: tuple[str, ...], start: str = DRAW) -> Path:
    out = Path(args.out) / (f"seed-{seed}" if start == DRAW else f"seed-{seed}-from-{start}")
    if (out / "curve.json").exists():
        print(f"seed {seed}: reusing {out}", file=sys.stderr)
        return out
    data = validation_data(args, seed) if args.validation else args.dataset
    overrides = [
        f"seed={seed}", f"data.dataset={json.dumps(data)}",
        f"data.labels_per_class={args.initial}", *args.set,
    ]
    config = load_config(args.config, overrides, preset=args.preset)
    plan = LoopPlan(
        config, strategies, (seed,), rounds=args.rounds, per_round=args.per_round,
        steps_per_round=args.steps_per_round,
        initial_strategy=None if start == DRAW else start, initial_training=args.initial_training,
    )

    def progress(record: dict[str, Any]) -> None:
        print(
            f"{series(record):>16} seed {seed} round {record['round']}: {record['labels']} labels, "
            f"accuracy {record['test_accuracy']:.4f} ({record['wall_time_s']:.0f}s)",
            file=sys.stderr, flush=True,
        )

    run_loop(plan, out, on_round=progress, plots=False)
    return out


def read_records(folders: Sequence[Path]) -> list[dict[str, Any]]:
    records = []
    for folder in folders:
        for path in sorted(folder.rglob(CURVE_NAME)):
            records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records


def complete_seeds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the seeds on which every strategy reached the last round (so every
    strategy is averaged over the same seeds)."""
    last = max(r["round"] for r in records)
    strategies = {series(r) for r in records}
    done = {
        seed for seed in {r["seed"] for r in records}
        if {series(r) for r in records if r["seed"] == seed and r["round"] == last} == strategies
    }
    return [r for r in records if r["seed"] in done]


def summarise(records: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    """One row per strategy: accuracy by labels (mean over the seeds every strategy
    finished), gain over random at ``at`` labels, labels needed to reach random's accuracy
    at its largest budget."""
    records = complete_seeds(records)
    if not records:
        return []
    summary = summarise_curve(records)
    random_rows = summary.get("random")
    target = random_rows[-1]["test_accuracy"] if random_rows else None
    rows = []
    for strategy, curve in summary.items():
        by_labels = {round(r["labels"]): r for r in curve}
        start = next((r.get("start") for r in records if series(r) == strategy and r["round"] == 0), None)
        row: dict[str, Any] = {
            "strategy": strategy,
            "start": start or DRAW,
            "seeds": curve[0]["seeds"],
            "accuracy": {str(k): round(v["test_accuracy"], 4) for k, v in by_labels.items()},
            "ece": {str(k): round(v["ece"], 4) for k, v in by_labels.items()},
        }
        if random_rows and at in by_labels:
            random_at = {round(r["labels"]): r for r in random_rows}.get(at)
            if random_at is not None:
                row[f"gain_at_{at}"] = round(by_labels[at]["test_accuracy"] - random_at["test_accuracy"], 4)
        if target is not None:
            reached = [k for k, v in sorted(by_labels.items()) if v["test_accuracy"] >= target]
            row["labels_to_random_final"] = reached[0] if reached else None
            row["random_final_accuracy"] = round(target, 4)
            row["random_final_labels"] = round(random_rows[-1]["labels"])
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="'digits' or a data path")
    parser.add_argument("--preset", default=None, help="a shipped preset (digits, mnist)")
    parser.add_argument("--config", default=None, help="a TOML config file")
    parser.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    parser.add_argument("--strategies", default="all", help="comma-separated strategies, or 'all' (random included)")
    parser.add_argument("--initial", type=int, default=1, help="initial labels per class")
    parser.add_argument("--rounds", type=int, default=9, help="query rounds")
    parser.add_argument("--per-round", type=int, default=10, help="queries per round")
    parser.add_argument("--steps-per-round", type=int, default=500, help="warm steps per round")
    parser.add_argument("--at", type=int, default=50, help="labels at which to compare with random")
    parser.add_argument(
        "--starts", default=DRAW,
        help=f"comma-separated: how the first labels are had, '{DRAW}' (the split's random draw per "
        "class) or a strategy that needs no label choosing them from a label-free model (default draw)",
    )
    parser.add_argument(
        "--initial-training", choices=("warm", "cold"), default="warm",
        help="chosen starts: continue the label-free model on the chosen labels (warm, default) or train on them from scratch (cold)",
    )
    parser.add_argument("--out", default=None, help="benchmark folder (one loop per seed)")
    parser.add_argument("--summarise", nargs="+", metavar="DIR", help="only summarise finished folders")
    parser.add_argument(
        "--validation", action="store_true",
        help="run on the split's training examples only, a fifth of them held out for "
        "validation (for choosing settings; the test split is not used)",
    )
    args = parser.parse_args()
    try:
        if args.summarise:
            folders = [Path(f) for f in args.summarise]
        else:
            if args.out is None:
                parser.error("--out is required unless --summarise is given")
            names = default_registry().names("acquisition")
            strategies = tuple(names if args.strategies == "all" else args.strategies.split(","))
            if "random" not in strategies:
                strategies = ("random", *strategies)
            strategies = ("random", *[s for s in strategies if s != "random"])
            starts = [name.strip() for name in args.starts.split(",") if name.strip()]
            folders = [
                run_seed(args, seed, strategies, start) for seed in parse_seeds(args.seeds) for start in starts
            ]
        records = read_records(folders)
        if not records or not complete_seeds(records):
            print("no finished loop under the given folders", file=sys.stderr)
            return 2
        rows = summarise(records, args.at)
        for row in rows:
            print(json.dumps(row))
        target = Path(args.out) if args.out else folders[0]
        records = complete_seeds(records)
        write_curve_plot(
            target / "curve.png", summarise_curve(records),
            f"{records[0].get('dataset', '')} label efficiency, seeds "
            + ",".join(str(s) for s in sorted({r['seed'] for r in records})),
        )
        gains = [r for r in rows if f"gain_at_{args.at}" in r and r["strategy"] != "random"]
        if gains:
            best = max(gains, key=lambda r: r[f"gain_at_{args.at}"])
            print(
                f"best at {args.at} labels: {best['strategy']} {best[f'gain_at_{args.at}']:+.4f} over random; "
                + "labels to reach random's final accuracy: "
                + ", ".join(f"{r['strategy']} {r.get('labels_to_random_final')}" for r in rows),
                file=sys.stderr,
            )
        return 0
    except SSVAEError as error:
        print(f"active: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
