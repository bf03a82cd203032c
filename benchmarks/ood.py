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

Reported per OOD set and score (``certainty``, ``likelihood``, ``blend``; docs/maths.md):
AUROC and FPR at 95 % TPR (the OOD images are the positives), plus the variants the
scores were chosen from (``variants``). One JSON line per seed (also appended to
``--out``), then a summary line::

    python benchmarks/ood.py --dataset ../shared/data/mnist-t10k --preset mnist --run RUN_DIR
    python benchmarks/ood.py --dataset digits --preset digits --seeds 0,1,2 --open-set

``--validation`` trains without a fifth of the unlabeled training images and measures on
those (for choosing score definitions), as in ``benchmarks/quality.py``.
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
from ssvae_core.data import Dataset, load_dataset
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.inference import OOD_SCORES, Inference, OODReference, infer, ood_scores
from ssvae_core.metrics import accuracy, ood_table
from ssvae_core.runs import split_dataset, training_view

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


# --- score variants (what the library's scores were chosen from) ------------------------------


def _ecdf_tail(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The tail probability without the exponential extension (the first rule tried)."""
    at_least = reference.size - np.searchsorted(reference, scores, side="left")
    return (1.0 + at_least) / (reference.size + 1.0)


def variant_scores(result: Inference, reference: OODReference, train: Inference) -> dict[str, np.ndarray]:
    """The candidate scores: both likelihood definitions and several blend rules."""
    elbo_reference = np.sort(train.negative_elbo)
    p_elbo = OODReference.tail(elbo_reference, result.negative_elbo)
    p_cert = OODReference.tail(reference.certainty, result.ood_score)
    nll_reference = np.sort(train.reconstruction_nll)
    p_nll = OODReference.tail(nll_reference, result.reconstruction_nll)
    f_elbo = 1.0 - p_elbo  # the likelihood score's ECDF over the training data
    uncertainty = result.ood_score
    q = p_elbo * p_cert
    flat_q = _ecdf_tail(elbo_reference, result.negative_elbo) * _ecdf_tail(
        reference.certainty, uncertainty
    )
    return {
        "negative_elbo": result.negative_elbo,
        "reconstruction_nll": result.reconstruction_nll,
        "blend_fisher": 1.0 - q * (1.0 - np.log(q)),
        "blend_fisher_flat_tail": 1.0 - flat_q * (1.0 - np.log(flat_q)),
        "blend_mean": 0.5 * (uncertainty + f_elbo),
        "blend_max": np.maximum(uncertainty, f_elbo),
        "blend_or": 1.0 - (1.0 - uncertainty) * (1.0 - f_elbo),
        "blend_fisher_nll": 1.0 - (p_nll * p_cert) * (1.0 - np.log(p_nll * p_cert)),
    }


def score_all(
    classifier: SSVAEClassifier, x_in: np.ndarray, sets: dict[str, np.ndarray], train_x: np.ndarray
) -> dict[str, Any]:
    """AUROC and FPR95 of every score and variant, per OOD set."""
    model, state = classifier.model, classifier.state
    assert model is not None and state is not None
    reference = classifier.ood_reference()
    from ssvae_core.inference import reference_rows

    train = infer(model, state.head_state, train_x[reference_rows(len(train_x))], likelihood=True)
    inside = infer(model, state.head_state, x_in, likelihood=True)
    in_scores = ood_scores(inside, reference)
    in_variants = variant_scores(inside, reference, train)
    table: dict[str, Any] = {}
    variants: dict[str, Any] = {}
    for name, x_out in sets.items():
        outside = infer(model, state.head_state, x_out, likelihood=True)
        table[name] = ood_table(in_scores, ood_scores(outside, reference))
        variants[name] = ood_table(in_variants, variant_scores(outside, reference, train))
    return {"ood": table, "variants": variants}


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
    dataset = load_dataset(config.data.dataset)
    split = split_dataset(dataset, config)
    if args.validation:
        split = validation_split(split, seed)
    train = training_view(dataset, split)
    fit_time = 0.0
    if loaded is None:
        classifier = SSVAEClassifier(config)
        started = time.perf_counter()
        classifier.fit(train)
        fit_time = time.perf_counter() - started
    else:
        classifier = loaded
        classifier.training_data = train  # the blend's reference, if the checkpoint lacks it
    x_in, y_in = dataset.x[split.test], dataset.y[split.test]
    started = time.perf_counter()
    sets = ood_sets(x_in, seed)
    if args.write_sets is not None:
        folder = Path(args.write_sets)
        folder.mkdir(parents=True, exist_ok=True)
        for name, images in sets.items():  # inputs for `ssvae evaluate RUN --ood PATH`
            np.savez(folder / f"{name}-seed{seed}.npz", x=images, y=np.full(len(images), -1))
    result = score_all(classifier, x_in, sets, train.x)
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
    x_in, y_in = dataset.x[split.test], dataset.y[split.test]
    is_hidden = np.isin(y_in, hidden)
    model, state = classifier.model, classifier.state
    assert model is not None and state is not None
    reference = classifier.ood_reference()
    result = infer(model, state.head_state, x_in, likelihood=True)
    scores = ood_scores(result, reference)
    table = ood_table(
        {k: v[~is_hidden] for k, v in scores.items()}, {k: v[is_hidden] for k, v in scores.items()}
    )
    return {"hidden": table, "hidden_fit_wall_time_s": fit_time}


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
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = run_seeds(evaluate_seed, args, seeds, "ood")
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
            for score in OOD_SCORES:
                for metric in ("auroc", "fpr95"):
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
