"""What compiling the train step once per model structure saves (docs/benchmarks.md).

On one dataset and preset, times four calls of ``N`` steps each on the benchmark split:

1. ``fit`` — builds the model and compiles the train step;
2. ``resume`` of the same classifier by ``N`` more steps;
3. ``resume`` by ``N`` more steps with twice as many labels;
4. ``fit`` of a new classifier whose loss weights and learning rate differ.

Calls 2–4 reuse the compiled step; ``compile_s`` is call 1's time less the mean of calls
2–4 (the time each of them saves). One JSON line::

    python benchmarks/recompile.py --dataset digits --preset digits --steps 200
    python benchmarks/recompile.py --dataset ../shared/data/mnist-t10k --preset mnist --steps 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import load_config
from ssvae_core.data.loading import load_dataset
from ssvae_core.errors import SSVAEError
from ssvae_core.runs.run import split_dataset, training_view


def _timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="'digits' or a data path")
    parser.add_argument("--preset", default="digits", help="a shipped preset (digits, mnist)")
    parser.add_argument("--steps", type=int, default=200, help="steps per call")
    args = parser.parse_args()
    try:
        base = [f"data.dataset={json.dumps(args.dataset)}", f"train.steps={args.steps}"]
        config = load_config(None, base, preset=args.preset)
        dataset = load_dataset(config.data.dataset, config.data.test_dataset)
        split = split_dataset(dataset, config)
        train = training_view(dataset, split)
        more = train.y.copy()
        hidden = np.flatnonzero(more < 0)
        extra = np.random.default_rng(0).choice(hidden, size=int((more >= 0).sum()), replace=False)
        more[extra] = dataset.y[split.train[extra]]
        x, labels = train.x, train.y

        classifier = SSVAEClassifier(config)
        first = _timed(lambda: classifier.fit(x, labels, num_classes=dataset.num_classes))
        resume = _timed(lambda: classifier.resume(x, labels, until_step=2 * args.steps))
        more_labels = _timed(lambda: classifier.resume(x, more, until_step=3 * args.steps))
        changed = load_config(
            None,
            [*base, "loss.supervised.weight=7.0", "loss.beta_c=0.8", "train.learning_rate=0.0005"],
            preset=args.preset,
        )
        new_weights = _timed(
            lambda: SSVAEClassifier(changed).fit(x, labels, num_classes=dataset.num_classes)
        )
    except SSVAEError as error:
        print(f"recompile: error: {error}", file=sys.stderr)
        return 2
    reused = float(np.mean([resume, more_labels, new_weights]))
    print(
        json.dumps(
            {
                "dataset": dataset.name,
                "preset": args.preset,
                "steps_per_call": args.steps,
                "first_fit_s": first,
                "resume_s": resume,
                "resume_more_labels_s": more_labels,
                "fit_new_weights_s": new_weights,
                "compile_s": first - reused,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
