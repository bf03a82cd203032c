"""Out-of-distribution benchmark (docs/benchmarks.md, "Out-of-distribution inputs").

For each split seed: a model trained on the benchmark split (or loaded from a run directory
with ``--run``), then the in-distribution held-out images against OOD sets built from them,
offline and reproducibly (``numpy.random.default_rng([seed, 3])``):

- ``noise``: uniform noise in [0, 1], one image per held-out image;
- ``inverted``: ``1 − x`` of every held-out image;
- ``rotated``: every held-out image rotated by 90°;
- ``letters``: the letters A–J rendered from DejaVu Sans (the TrueType font matplotlib
  ships) with a little seeded variation of stroke, size, slant and position, normalised
  like the dataset: for 28×28, a white glyph on black scaled into a 20×20 box and centred
  by its centre of mass; for 8×8 (digits), a 32×32 bitmap cut into 4×4 blocks whose
  counts become pixels, as the UCI digits were made;
- ``hidden`` (``--open-set``): the open-set protocol of ``benchmarks/open_set.py`` — a
  second model trained with class 9 unlabeled (K = 20), its held-out 9s against its other
  held-out images.

Reported per OOD set and score (every score of ``ssvae_core.runs.ood``; the ratio scores
with ``--background`` or a run holding a background model): AUROC, FPR at 95 % TPR and
AUPR (the OOD images are the positives), plus candidate combinations (``variants``). One
JSON line per seed (also appended to ``--out``), then a summary line::

    python benchmarks/ood.py --dataset ../shared/data/mnist-t10k --preset mnist --run RUN_DIR
    python benchmarks/ood.py --dataset digits --preset digits --seeds 0,1,2 --open-set

Real pairs (``--test-data``, ``--ood-data``): a model trained on every image of
``--dataset`` (labels: the benchmark split's), its ``--test-data`` images against each
``--ood-data`` set; the models are kept in ``--run-dir`` and reused. Without
``--test-data``, ``--ood-data`` adds sets beside the built ones.

``--validation`` trains without a fifth of the unlabeled training images and measures on
those against synthetic outliers made from them (``validation_sets``, never the sets
above: for choosing scores), as in ``benchmarks/quality.py``. With ``--run`` and on real
pairs, ``training_synthetic`` holds the same outliers made from training images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import label_budget_argument, load_config
from ssvae_core.data.loading import Dataset, load_dataset
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.runs.metrics import accuracy, ood_table
from ssvae_core.runs.ood import (
    BACKGROUND_NOISE,
    NEEDS_BACKGROUND,
    OOD_SCORES,
    OODInputs,
    OODReference,
    fisher_log_p,
    ood_scores,
    reference_rows,
    score_inputs,
    tail,
)
from ssvae_core.runs.run import split_dataset, training_view

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from open_set import known_view
from quality import run_seeds, validation_split

LETTERS = "ABCDEFGHIJ"
OOD_SETS = ("noise", "inverted", "rotated", "letters")


# --- OOD sets ---------------------------------------------------------------------------------


def _glyph(letter: str, rng: np.random.Generator, font_path: str) -> np.ndarray:
    """A white-on-black grayscale glyph in [0, 1], cropped to its ink, with seeded variation
    of stroke width and slant."""
    from PIL import Image, ImageDraw, ImageFont

    size = 96
    font = ImageFont.truetype(font_path, size)
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    stroke = int(rng.integers(0, 6))  # at 96 px: regular to bold strokes
    ImageDraw.Draw(canvas).text(
        (size // 2, size // 4), letter, fill=255, font=font, stroke_width=stroke, stroke_fill=255
    )
    shear = float(rng.uniform(-0.15, 0.15))
    angle = float(rng.uniform(-10.0, 10.0))
    canvas = canvas.transform(
        canvas.size, Image.Transform.AFFINE, (1.0, shear, -shear * size, 0.0, 1.0, 0.0),
        resample=Image.Resampling.BILINEAR,
    ).rotate(angle, resample=Image.Resampling.BILINEAR)
    ink = np.asarray(canvas, dtype=np.float64) / 255.0
    rows, cols = np.nonzero(ink > 0.05)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255))
    resized = pil.resize((max(width, 1), max(height, 1)), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float64) / 255.0


def _shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    from scipy.ndimage import shift

    return np.clip(shift(image, (dy, dx), order=1, mode="constant", cval=0.0), 0.0, 1.0)


def _mnist_style(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST's normalisation: fit into a 20×20 box (aspect kept; a little seeded size
    variation), place in 28×28, centre by the centre of mass (± up to 1 pixel)."""
    box = int(rng.integers(17, 21))
    scale = box / max(glyph.shape)
    height = max(1, round(glyph.shape[0] * scale))
    width = max(1, round(glyph.shape[1] * scale))
    small = _resize(glyph, height, width)
    image = np.zeros((28, 28))
    top, left = (28 - height) // 2, (28 - width) // 2
    image[top : top + height, left : left + width] = small
    total = image.sum()
    ys, xs = np.indices(image.shape)
    cy, cx = (ys * image).sum() / total, (xs * image).sum() / total
    jitter = rng.uniform(-1.0, 1.0, size=2)
    return _shift(image, 13.5 - cy + jitter[0], 13.5 - cx + jitter[1])


def _digits_style(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The UCI digits' normalisation: a binary 32×32 bitmap of the glyph scaled to fit
    (aspect kept), cut into 4×4 blocks; each block's count of ink pixels / 16 is a pixel."""
    box = int(rng.integers(26, 33))
    scale = box / max(glyph.shape)
    height = max(1, min(32, round(glyph.shape[0] * scale)))
    width = max(1, min(32, round(glyph.shape[1] * scale)))
    bitmap = np.zeros((32, 32))
    top = (32 - height) // 2 + int(rng.integers(-1, 2))
    left = (32 - width) // 2 + int(rng.integers(-1, 2))
    top, left = min(max(top, 0), 32 - height), min(max(left, 0), 32 - width)
    bitmap[top : top + height, left : left + width] = _resize(glyph, height, width) > 0.5
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)) / 16.0


def render_letters(count: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``count`` images of the letters A–J in turn, in the style of ``shape`` (28×28 or 8×8)."""
    from matplotlib import font_manager

    font_path = font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    if shape == (28, 28):
        style = _mnist_style
    elif shape == (8, 8):
        style = _digits_style
    else:
        raise DataError(f"letters are rendered at 28×28 or 8×8; the data have shape {shape}")
    images = [style(_glyph(LETTERS[i % len(LETTERS)], rng, font_path), rng) for i in range(count)]
    return np.stack(images).astype(np.float32)


def ood_sets(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The OOD sets built from the in-distribution images ``x`` (N, H, W) in [0, 1]."""
    rng = np.random.default_rng([seed, 3])
    return {
        "noise": rng.uniform(0.0, 1.0, size=x.shape).astype(np.float32),
        "inverted": (1.0 - x).astype(np.float32),
        "rotated": np.rot90(x, k=1, axes=(1, 2)).copy(),
        "letters": render_letters(len(x), tuple(x.shape[1:]), rng),
    }


def validation_sets(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Synthetic outliers for choosing scores, built from validation images ``x`` (N, H, W)
    with transformations the benchmark's sets do not use: noise at the images' own pixel
    statistics (each pixel drawn from the data's pixel histogram), images turned upside
    down, two images averaged, the centre half of an image blown up to full size, the image
    shrunk to half its size in the middle of an empty frame (a *simpler* input than the
    data: the case where raw likelihoods fail), and inverted images (the one kind the
    benchmark shares: any model must keep separating them)."""
    rng = np.random.default_rng([seed, 5])
    n, height, width = x.shape[0], x.shape[1], x.shape[2]
    partner = x[rng.permutation(n)]
    top, left = height // 4, width // 4
    centre = x[:, top : top + height // 2, left : left + width // 2]
    zoomed = np.repeat(np.repeat(centre, 2, axis=1), 2, axis=2)[:, :height, :width]
    half = x[:, : height // 2 * 2, : width // 2 * 2].reshape(n, height // 2, 2, width // 2, 2).mean(axis=(2, 4))
    shrunk = np.zeros_like(x)
    shrunk[:, top : top + height // 2, left : left + width // 2] = half
    return {
        "pixel_noise": rng.choice(x.ravel(), size=x.shape).astype(np.float32),
        "inverted": (1.0 - x).astype(np.float32),
        "upside_down": x[:, ::-1, :].copy(),
        "mixed": (0.5 * (x + partner)).astype(np.float32),
        "zoomed": zoomed.astype(np.float32),
        "shrunk": shrunk.astype(np.float32),
    }


# --- score variants (candidates measured beside the library's scores) -------------------------


def variant_scores(inputs: OODInputs, reference: OODReference) -> dict[str, np.ndarray]:
    """Candidate scores beside the library's: other ways of combining the certainty and
    corrected likelihoods' tail probabilities (``−ln p``; Fisher's rule or the minimum)."""
    parts = [n for n in ("certainty", "excess", "complexity", "ratio") if n in reference.scores]
    log_p = {
        name: np.log(tail(reference.scores[name], values))
        for name, values in ood_scores(inputs, None, parts).items()
    }
    out = {"minp_excess": -np.minimum(log_p["certainty"], log_p["excess"])}
    out["fisher_certainty_excess_complexity"] = -fisher_log_p(
        [log_p["certainty"], log_p["excess"], log_p["complexity"]]
    )
    if "ratio" in log_p:
        out["fisher_certainty_excess_ratio"] = -fisher_log_p([log_p["certainty"], log_p["excess"], log_p["ratio"]])
        out["fisher_excess_ratio"] = -fisher_log_p([log_p["excess"], log_p["ratio"]])
        out["minp_ratio"] = -np.minimum(log_p["certainty"], log_p["ratio"])
    return out


def available_scores(classifier: SSVAEClassifier) -> tuple[str, ...]:
    return tuple(s for s in OOD_SCORES if classifier.background is not None or s not in NEEDS_BACKGROUND)


def score_all(
    classifier: SSVAEClassifier, x_in: np.ndarray, sets: dict[str, np.ndarray]
) -> dict[str, Any]:
    """AUROC, FPR95 and AUPR of every score and variant, per OOD set."""
    model, state = classifier.model, classifier.state
    assert model is not None and state is not None
    names = available_scores(classifier)
    reference = classifier.ood_reference(names)
    background = classifier._background()

    def scores(x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        inputs = score_inputs(model, state.head_state, x, names, background=background)
        return ood_scores(inputs, reference, names), variant_scores(inputs, reference)

    in_scores, in_variants = scores(x_in)
    table: dict[str, Any] = {}
    variants: dict[str, Any] = {}
    for name, x_out in sets.items():
        out_scores, out_variants = scores(x_out)
        table[name] = ood_table(in_scores, out_scores)
        variants[name] = ood_table(in_variants, out_variants)
    return {"ood": table, "variants": variants}


def training_synthetic(classifier: SSVAEClassifier, x: np.ndarray, seed: int) -> dict[str, Any]:
    """For choosing scores without held-out images: 2,000 training images outside the
    reference (``reference_rows``) against the synthetic outliers of
    ``validation_sets`` made from 2,000 others (``training_synthetic``, and the
    candidates in ``training_synthetic_variants``); nothing where the reference holds every
    training image."""
    rows = np.setdiff1d(np.arange(len(x)), reference_rows(len(x)))
    size = min(2000, len(rows) // 2)
    if size == 0:
        return {}
    pick = np.random.default_rng([seed, 9]).choice(rows, 2 * size, replace=False)
    synthetic = score_all(classifier, x[pick[:size]], validation_sets(x[pick[size:]], seed))
    return {"training_synthetic": synthetic["ood"], "training_synthetic_variants": synthetic["variants"]}


def fit_background(args: argparse.Namespace, classifier: SSVAEClassifier) -> float:
    """Train the background model if ``--background`` asks for it; its training time."""
    if not args.background:
        return 0.0
    classifier.fit_background(noise=args.background_noise, steps=args.background_steps)
    assert classifier.background is not None and classifier.background.background_info is not None
    return classifier.background.background_info["train_time_s"]


# --- one seed ----------------------------------------------------------------------------------


def _config(args: argparse.Namespace, seed: int, *extra: str) -> Any:
    overrides = [f"seed={seed}", f"data.dataset={json.dumps(args.dataset)}", *args.set, *extra]
    if args.labels_per_class is not None:
        overrides.append(f"data.labels_per_class={args.labels_per_class}")
    return load_config(args.config, overrides, preset=args.preset)


def _load_run(run: str, seed: int) -> SSVAEClassifier:
    """The model of a run directory (or checkpoint file) trained on split seed ``seed``."""
    path = Path(run)
    classifier = SSVAEClassifier.load(path / "model.ckpt" if path.is_dir() else path)
    if classifier.config.seed != seed:
        raise ConfigError(
            f"--run {run!r} was trained with seed {classifier.config.seed}; pass --seeds "
            f"{classifier.config.seed}"
        )
    return classifier


def evaluate_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    if args.run is not None and args.validation:
        raise ConfigError("--validation trains its own model; drop --run")
    loaded = _load_run(args.run, seed) if args.run is not None else None
    config = loaded.config if loaded is not None else _config(args, seed)
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    split = split_dataset(dataset, config)
    if args.validation:
        split = validation_split(split, seed)
    train = training_view(dataset, split)
    fit_time = background_time = 0.0
    if loaded is None:
        classifier = SSVAEClassifier(config)
        started = time.perf_counter()
        classifier.fit(train)
        fit_time = time.perf_counter() - started
        background_time = fit_background(args, classifier)
    else:
        classifier = loaded
        classifier.training_data = train  # the reference, if the checkpoint lacks it
    x_in, y_in = dataset.x[split.test], dataset.y[split.test]
    started = time.perf_counter()
    sets = validation_sets(x_in, seed) if args.validation else ood_sets(x_in, seed)
    if not args.validation:
        sets.update({data.name: data.x for data in map(load_dataset, args.ood_data)})
    if args.write_sets is not None:
        folder = Path(args.write_sets)
        folder.mkdir(parents=True, exist_ok=True)
        for name, images in sets.items():  # inputs for `ssvae evaluate RUN --ood PATH`
            np.savez(folder / f"{name}-seed{seed}.npz", x=images, y=np.full(len(images), -1))
    result = score_all(classifier, x_in, sets)
    if args.run is not None:
        result.update(training_synthetic(classifier, train.x, seed))
    result["accuracy"] = accuracy(classifier.predict_proba(x_in), y_in)
    if args.open_set:
        result.update(open_set_scores(args, seed, dataset, split))
    return {
        "dataset": dataset.name,
        "seed": seed,
        "preset": args.preset,
        "run": args.run,
        "evaluated_on": "validation" if args.validation else "test",
        "num_in": len(x_in),
        **result,
        "fit_wall_time_s": fit_time,
        "background_fit_wall_time_s": background_time,
        "score_wall_time_s": time.perf_counter() - started,
        "overrides": args.set,
    }


def open_set_scores(args: argparse.Namespace, seed: int, dataset: Dataset, split: Any) -> dict[str, Any]:
    """The hidden-class protocol of benchmarks/open_set.py (class 9 unlabeled, K = 20):
    every score's AUROC / FPR95 for the held-out 9s against the other held-out images."""
    config = _config(args, seed, "prior.num_components=20")
    hidden = [9]
    train = known_view(dataset, split.train, split.labeled, hidden)
    classifier = SSVAEClassifier(config)
    started = time.perf_counter()
    classifier.fit(train)
    fit_time = time.perf_counter() - started
    fit_background(args, classifier)
    x_in, y_in = dataset.x[split.test], dataset.y[split.test]
    is_hidden = np.isin(y_in, hidden)
    model, state = classifier.model, classifier.state
    assert model is not None and state is not None
    names = available_scores(classifier)
    reference = classifier.ood_reference(names)
    inputs = score_inputs(model, state.head_state, x_in, names, background=classifier._background())
    scores = {**ood_scores(inputs, reference, names), **variant_scores(inputs, reference)}
    table = ood_table(
        {k: v[~is_hidden] for k, v in scores.items()}, {k: v[is_hidden] for k, v in scores.items()}
    )
    return {"hidden": table, "hidden_fit_wall_time_s": fit_time}


# --- real pairs: a model trained on one dataset, another dataset's test images as OOD --------


def pair_training_view(dataset: Dataset, config: Any) -> Dataset:
    """Every training image, labeled only for the benchmark split's ``labels_per_class``
    per class (the split's held-out fifth stays in as unlabeled data)."""
    split = split_dataset(dataset, config)
    labels = np.full(len(dataset.y), -1, dtype=np.int32)
    labels[split.labeled] = dataset.y[split.labeled]
    from ssvae_core.data.loading import from_arrays

    return from_arrays(
        dataset.x, labels, name=dataset.name, num_classes=dataset.num_classes,
        label_names=dataset.label_names, unlabeled_classes=True,
    )


def trained_or_saved(
    args: argparse.Namespace, path: Path, config: Any, train: Dataset
) -> tuple[SSVAEClassifier, float, float]:
    """The classifier saved at ``path`` (its seed and data must match), else one trained and saved;
    with ``--background`` and none saved, its background model trained and saved too. Also
    the training times of both (0 for what was loaded)."""
    fit_time = 0.0
    if path.exists():
        classifier = SSVAEClassifier.load(path)
        saved = classifier.config
        if (saved.seed, saved.data.dataset) != (config.seed, config.data.dataset):
            raise ConfigError(f"{path} was trained with another seed or data; remove it or change --run-dir")
        classifier.training_data = train
    else:
        classifier = SSVAEClassifier(config)
        started = time.perf_counter()
        classifier.fit(train)
        fit_time = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        classifier.save(path)
    background_time = 0.0
    if args.background and classifier.background is None:
        background_time = fit_background(args, classifier)
        classifier.save(path)
    return classifier, fit_time, background_time


def evaluate_pair(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """A model trained on every image of ``--dataset`` (labels per the benchmark split)
    scored on ``--test-data`` (in distribution) against each ``--ood-data`` set."""
    config = _config(args, seed)
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    train = pair_training_view(dataset, config)
    run_dir = Path(args.run_dir) if args.run_dir is not None else Path("runs") / f"ood_pair_{dataset.name}_seed{seed}"
    classifier, fit_time, background_time = trained_or_saved(args, run_dir / "model.ckpt", config, train)
    test = load_dataset(args.test_data)
    started = time.perf_counter()
    sets = {data.name: data.x for data in map(load_dataset, args.ood_data)}
    result = {**score_all(classifier, test.x, sets), **training_synthetic(classifier, train.x, seed)}
    result["accuracy"] = accuracy(classifier.predict_proba(test.x), test.y)
    return {
        "dataset": dataset.name,
        "test_data": test.name,
        "seed": seed,
        "preset": args.preset,
        "evaluated_on": "test",
        "num_in": len(test.x),
        **result,
        "fit_wall_time_s": fit_time,
        "background_fit_wall_time_s": background_time,
        "score_wall_time_s": time.perf_counter() - started,
        "overrides": args.set,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="'digits' or a data path")
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds")
    parser.add_argument("--labels-per-class", type=label_budget_argument, default=None, help="an integer (0: no labels) or all")
    parser.add_argument("--preset", default=None, help="a shipped preset (digits, mnist)")
    parser.add_argument("--config", default=None, help="a TOML config (over the preset)")
    parser.add_argument("--run", default=None, help="score this run directory's model (one seed) instead of training")
    parser.add_argument("--open-set", action="store_true", help="also train the hidden-class model (class 9 unlabeled, K = 20)")
    parser.add_argument("--validation", action="store_true", help="measure on a validation set")
    parser.add_argument("--out", default=None, help="append the JSON lines to this file too")
    parser.add_argument("--write-sets", default=None, metavar="DIR", help="also save each OOD set as DIR/NAME-seedS.npz")
    parser.add_argument("--test-data", default=None, metavar="PATH", help="real pairs: score a model trained on all of --dataset on these images (in distribution) ...")
    parser.add_argument("--ood-data", action="append", default=[], metavar="PATH", help="... against these (repeatable; without --test-data: more OOD sets beside the built ones)")
    parser.add_argument("--run-dir", default=None, metavar="DIR", help="real pairs: keep (and reuse) the trained models here")
    parser.add_argument("--background", action="store_true", help="also train the background model (the ratio scores)")
    parser.add_argument("--background-noise", type=float, default=BACKGROUND_NOISE, help="its share of pixels replaced by noise")
    parser.add_argument("--background-steps", type=int, default=None, help="its training steps (default: the model's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.test_data is not None and not args.ood_data:
        parser.error("--test-data needs --ood-data")
    results = run_seeds(evaluate_pair if args.test_data else evaluate_seed, args, seeds, "ood")
    if results is None:
        return 2
    summary: dict[str, Any] = {
        "summary": True,
        "dataset": results[0]["dataset"],
        "preset": args.preset,
        "evaluated_on": results[0]["evaluated_on"],
        "seeds": seeds,
        "accuracy_mean": float(np.mean([r["accuracy"] for r in results])),
    }
    for key in ("ood", "hidden"):
        if key not in results[0]:
            continue
        groups = results[0][key] if key == "ood" else {"hidden": results[0][key]}
        for name in groups:
            for score in (results[0][key][name] if key == "ood" else results[0][key]):
                for metric in ("auroc", "fpr95", "aupr"):
                    values = [
                        (r[key][name] if key == "ood" else r[key])[score][metric] for r in results
                    ]
                    summary.setdefault(name, {}).setdefault(score, {})[metric] = float(np.mean(values))
    print(json.dumps(summary), flush=True)
    if args.out is not None:
        with open(args.out, "a", encoding="utf-8") as out:
            for line in [*results, summary]:
                out.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
