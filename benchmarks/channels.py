"""How the channels organise themselves during training (one split, one preset).

Every ``--every`` steps the classifier is scored on the evaluation rows (the held-out test
split, or with ``--validation`` a fifth of the unlabeled training rows, never the test
split) and one JSON line records:

- ``accuracy`` of the τ-classifier;
- ``owner``: τ's label of each channel (``argmax_y τ_{c,y}``) and ``unowned``: labels no
  channel maps to (such a label can never be predicted);
- ``channel_classes``: for each channel, the true classes of the evaluation rows whose
  most responsible channel it is (counts), so a channel that merges two classes shows;
- ``usage``: the mean responsibilities.

The last line summarises the final state: merged channels (a second class holding at
least ``--merge-share`` of a channel's rows) and unowned labels::

    python benchmarks/channels.py --dataset digits --preset digits --seed 0 --labels-per-class 1
    python benchmarks/channels.py --dataset ../shared/data/mnist-t10k --preset mnist --seed 3 --validation
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import label_budget_argument, load_config
from ssvae_core.data.loading import load_dataset
from ssvae_core.errors import SSVAEError
from ssvae_core.runs.run import split_dataset, training_view

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from quality import validation_split


def snapshot(classifier: SSVAEClassifier, x: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, Any]:
    """The channel picture on ``(x, y)`` for the classifier's current state."""
    result = classifier.infer(x)
    tau = classifier.tau
    assert tau is not None, "channel diagnostics need the τ head"
    channels = np.argmax(result.responsibilities, axis=-1)
    owner = np.argmax(tau, axis=-1)
    counts = np.zeros((tau.shape[0], num_classes), dtype=int)
    np.add.at(counts, (channels, y), 1)
    return {
        "step": int(classifier.state.step) if classifier.state is not None else 0,
        "accuracy": float(np.mean(result.predictions == y)),
        "owner": owner.tolist(),
        "unowned": sorted(set(range(num_classes)) - set(owner.tolist())),
        "channel_classes": counts.tolist(),
        "usage": np.round(result.responsibilities.mean(axis=0), 4).tolist(),
    }


def merges(counts: np.ndarray, share: float) -> list[dict[str, Any]]:
    """Channels whose rows hold a second class at ``share`` or more of the channel."""
    found = []
    for channel, row in enumerate(counts):
        total = row.sum()
        if total == 0:
            continue
        order = np.argsort(-row)
        if row[order[1]] >= share * total:
            found.append(
                {"channel": channel, "classes": {int(c): int(row[c]) for c in order[:3] if row[c]}}
            )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels-per-class", type=label_budget_argument, default=None, help="an integer (0: no labels) or all")
    parser.add_argument("--every", type=int, default=500, help="steps between snapshots")
    parser.add_argument("--merge-share", type=float, default=0.2)
    parser.add_argument("--validation", action="store_true", help="score on a validation split")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    overrides = [
        f"seed={args.seed}",
        f"data.dataset={json.dumps(args.dataset)}",
        f"train.checkpoint_every={args.every}",
        *args.set,
    ]
    if args.labels_per_class is not None:
        overrides.append(f"data.labels_per_class={args.labels_per_class}")
    try:
        config = load_config(None, overrides, preset=args.preset)
        dataset = load_dataset(config.data.dataset, config.data.test_dataset)
        split = split_dataset(dataset, config)
        if args.validation:
            split = validation_split(split, args.seed)
        x, y = dataset.x[split.test], dataset.y[split.test]
        classes = dataset.num_classes
        history: list[dict[str, Any]] = []

        def record(classifier: SSVAEClassifier) -> None:
            history.append(snapshot(classifier, x, y, classes))
            print(json.dumps(history[-1]), flush=True)

        classifier = SSVAEClassifier(config).fit(training_view(dataset, split), on_checkpoint=record)
    except SSVAEError as error:
        print(f"channels: error: {error}", file=sys.stderr)
        return 2
    final = snapshot(classifier, x, y, classes)
    counts = np.asarray(final["channel_classes"])
    first_unowned = next((h["step"] for h in history if h["unowned"]), None)
    print(
        json.dumps(
            {
                "summary": True,
                "seed": args.seed,
                "evaluated_on": "validation" if args.validation else "test",
                "accuracy": final["accuracy"],
                "unowned": final["unowned"],
                "first_step_with_an_unowned_label": first_unowned,
                "merged_channels": merges(counts, args.merge_share),
                "owners": final["owner"],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
