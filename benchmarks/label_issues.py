"""Label-issue detection against flipped labels (docs/benchmarks.md, "Label issues").

Per seed: a run trained with the preset's labels per class (the split's draw), then three
copies of it, each given ``--extra`` more labeled training examples (the same ones) and
retrained warm for ``--steps`` steps:

``clean``      the extra examples with their true labels;
``noisy``      ``--noise`` of them (chosen at random) with a wrong label instead;
``corrected``  the noisy labels after a review of ``ssvae labels --issues``' top ``--top``:
               a flagged label that is wrong gets its true label, a right one is confirmed.

It prints, per seed, how many of the flipped labels are in the top ``--top`` and the three
held-out accuracies, then the means::

    python benchmarks/label_issues.py --preset digits --seeds 0,1,2 --out runs/label-issues

``--validation`` scores the same runs on a fifth of the split's training examples held out
(the test split is not loaded), for choosing settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ssvae_core.config import load_config
from ssvae_core.data.loading import load_dataset
from ssvae_core.errors import SSVAEError
from ssvae_core.labels.label_issues import run_issues
from ssvae_core.labels.labeling import parse_seeds
from ssvae_core.labels.store import STORE_NAME, LabelStore
from ssvae_core.runs.lifecycle import retrain_run, train_run
from ssvae_core.runs.run import split_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from active import validation_data


def _copy(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))


def _give(run: Path, x: np.ndarray, indices: list[int], names: list[str], *, relabel: bool = False,
          confirm: bool = False) -> None:
    store = LabelStore.load(run / STORE_NAME)
    store.add(indices, names, x=x, source="file", relabel=relabel, confirm=confirm).save(run / STORE_NAME)


def one_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    data = validation_data(args, seed) if args.validation else args.dataset
    overrides = [f"data.dataset={json.dumps(data)}", f"seed={seed}", f"data.labels_per_class={args.initial}",
                 *args.set]
    config = load_config(args.config, overrides, preset=args.preset)
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    split = split_dataset(dataset, config)
    out = Path(args.out) / f"seed-{seed}"
    initial = out / "initial"
    if not (initial / "report.json").exists():
        if initial.exists():
            shutil.rmtree(initial)
        train_run(config, initial, dataset=dataset, plots=False)
    rng = np.random.default_rng(1000 + seed)
    labeled = {int(i) for i in split.labeled}
    pool = np.array([int(i) for i in split.train if int(i) not in labeled])
    extra = sorted(int(i) for i in rng.choice(pool, args.extra, replace=False))
    names = dataset.label_names
    truth = {i: names[int(dataset.y[i])] for i in extra}
    flipped = sorted(int(i) for i in rng.choice(extra, round(args.noise * args.extra), replace=False))
    noisy = dict(truth)
    for i in flipped:
        wrong = [n for n in names if n != truth[i]]
        noisy[i] = wrong[int(rng.integers(len(wrong)))]
    result: dict[str, Any] = {"seed": seed, "flipped": len(flipped)}
    for name in ("clean", "noisy"):
        run = out / name
        _copy(initial, run)
        given = truth if name == "clean" else noisy
        _give(run, dataset.x, extra, [given[i] for i in extra])
        result[name] = retrain_run(run, args.steps, plots=False)["test_accuracy"]
    issues = run_issues(out / "noisy", n=args.top)
    flagged = [issue.index for issue in issues]
    result["found"] = len(set(flagged) & set(flipped))
    result["flagged_right_labels"] = len(set(flagged) - set(flipped))
    run = out / "corrected"
    _copy(initial, run)
    _give(run, dataset.x, extra, [noisy[i] for i in extra])
    wrong = [i for i in flagged if i in set(flipped)]
    right = [i for i in flagged if i not in set(flipped)]
    if wrong:
        _give(run, dataset.x, wrong, [truth[i] for i in wrong], relabel=True, confirm=True)
    if right:
        store = LabelStore.load(run / STORE_NAME)
        current = store.current()
        _give(run, dataset.x, right, [current[i] for i in right], confirm=True)
    result["corrected"] = retrain_run(run, args.steps, plots=False)["test_accuracy"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--config", help="TOML config file (applied over --preset)")
    parser.add_argument("--initial", type=int, default=10, help="labels per class of the split (default 10)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--extra", type=int, default=100, help="extra labeled examples (default 100)")
    parser.add_argument("--noise", type=float, default=0.1, help="share of them flipped (default 0.1)")
    parser.add_argument("--top", type=int, default=20, help="issues reviewed (default 20)")
    parser.add_argument("--steps", type=int, default=1000, help="warm steps after the extra labels")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--validation", action="store_true", help="score on a validation fifth")
    parser.add_argument("--out", default="runs/label-issues")
    args = parser.parse_args(argv)
    try:
        results = []
        for seed in parse_seeds(args.seeds):
            result = one_seed(args, seed)
            results.append(result)
            print(json.dumps(result), flush=True)
    except SSVAEError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    found = sum(r["found"] for r in results) / max(1, sum(r["flipped"] for r in results))
    means = {k: float(np.mean([r[k] for r in results])) for k in ("clean", "noisy", "corrected")}
    print(json.dumps({"flipped_in_top": round(found, 3), **{k: round(v, 4) for k, v in means.items()},
                      "corrected_minus_clean": round(means["corrected"] - means["clean"], 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
