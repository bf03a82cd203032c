"""Training speed benchmark (docs/benchmarks.md, "Speed").

For each case — a dataset, its preset and an encoder/decoder pair — one fit of ``--steps``
steps in chunks of ``--chunk`` steps (the first chunk compiles) measures:

- ``ms_per_step`` and ``images_per_s``: steady-state training speed, the median over the
  chunks after the first (robust to other jobs sharing the machine for a while);
- ``compile_s``: the first chunk's time beyond a steady chunk; ``setup_s``: everything
  a fit does once (compiling, label propagation, moving the data to the device);
- ``preset_fit_images_per_s``: ``train.steps × batch / wall`` of a fit as long as the
  preset's, from the two figures above (a whole fit's speed, compilation included);
- ``step_gflop``: the floating-point operations of one compiled train step, from XLA's
  cost analysis, and ``achieved_gflop_s`` = FLOPs per step over the measured step time;
- ``roofline_fraction``: ``achieved_gflop_s`` over this machine's peak, measured in the
  same run as the best time of a large float32 matrix product (``--peak-size``).

One JSON line per case after a header line. Everything but the FLOP count goes through
the public API (``SSVAEClassifier.fit`` and its per-chunk ``seconds``), so the same script
times an older checkout of the package (put it first on ``PYTHONPATH``); the FLOP count
needs the current training loop and is ``null`` where it is not available::

    python benchmarks/speed.py --cases digits --steps 1000 --chunk 100
    python benchmarks/speed.py --cases mnist,mnist-conv-conv --steps 300 --chunk 50 \\
        --dataset-mnist ../shared/data/mnist-t10k
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import load_config
from ssvae_core.data.loading import load_dataset
from ssvae_core.runs.run import split_dataset, training_view


@dataclass(frozen=True)
class Case:
    """A dataset, its preset and the encoder/decoder pair (``None``: the preset's own)."""

    name: str
    dataset: str  # "digits" or "mnist"
    encoder: str | None = None
    decoder: str | None = None
    overrides: tuple[str, ...] = ()


CASES = {
    case.name: case
    for case in (
        Case("digits", "digits"),
        Case("digits-conv-dense", "digits", "conv", "dense"),
        Case("digits-conv-conv", "digits", "conv", "conv"),
        Case("mnist", "mnist"),
        Case("mnist-dense-dense", "mnist", "dense", "dense"),
        Case("mnist-conv-conv", "mnist", "conv", "conv"),
    )
}


def measured_peak(size: int, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate in GFLOP/s: the best of ``repeats``."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), dtype=jnp.float32)
    b = jax.random.normal(key_b, (size, size), dtype=jnp.float32)
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product(a, b).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9


def _config(case: Case, args: argparse.Namespace) -> Any:
    dataset = "digits" if case.dataset == "digits" else args.dataset_mnist
    overrides = [
        f"data.dataset={json.dumps(dataset)}",
        f"train.steps={args.steps}",
        f"train.log_every={args.chunk}",
    ]
    if case.encoder:
        overrides.append(f"encoder.name={json.dumps(case.encoder)}")
    if case.decoder:
        overrides.append(f"decoder.name={json.dumps(case.decoder)}")
    overrides += [*case.overrides, *args.set]
    return load_config(None, overrides, preset=case.dataset)


def step_flops(classifier: SSVAEClassifier, data: Any) -> float | None:
    """FLOPs of one compiled train step (XLA's cost analysis), or ``None`` where the
    package's training loop does not offer it."""
    try:
        from ssvae_core.training.batches import training_arrays
        from ssvae_core.training.loop import _one_step
    except ImportError:
        return None
    trainer = classifier._trainer()
    arrays = training_arrays(
        data.x, data.y, objective=trainer.spec.objective, num_classes=data.num_classes
    )
    lowered = _one_step.lower(
        (arrays, trainer.spec), classifier.model, classifier.state, classifier.opt_state
    )
    analysis = lowered.compile().compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops else None


def run_case(case: Case, args: argparse.Namespace, peak: float) -> dict[str, Any]:
    config = _config(case, args)
    preset_steps = load_config(None, [], preset=case.dataset).train.steps
    dataset = load_dataset(config.data.dataset, config.data.test_dataset)
    data = training_view(dataset, split_dataset(dataset, config))
    classifier = SSVAEClassifier(config)
    started = time.perf_counter()
    classifier.fit(data)
    jax.block_until_ready(jax.tree.leaves(classifier.model))
    wall = time.perf_counter() - started
    chunks = [float(row["seconds"]) for row in classifier.history]
    step_s = float(np.median(chunks[1:])) / args.chunk
    setup_s = wall - args.steps * step_s
    batch = classifier.config.train.batch_size
    flops = None if args.no_flops else step_flops(classifier, data)
    achieved = None if flops is None else flops / step_s / 1e9
    return {
        "case": case.name,
        "dataset": dataset.name,
        "encoder": classifier.config.encoder.name,
        "decoder": classifier.config.decoder.name,
        "batch_size": batch,
        "steps": args.steps,
        "chunk": args.chunk,
        "images_per_s": batch / step_s,
        "ms_per_step": 1e3 * step_s,
        "ms_per_step_range": [1e3 * min(chunks[1:]) / args.chunk, 1e3 * max(chunks[1:]) / args.chunk],
        "compile_s": chunks[0] - args.chunk * step_s,
        "setup_s": setup_s,
        "preset_steps": preset_steps,
        "preset_fit_images_per_s": preset_steps * batch / (setup_s + preset_steps * step_s),
        "step_gflop": None if flops is None else flops / 1e9,
        "achieved_gflop_s": achieved,
        "peak_gflop_s": peak,
        "roofline_fraction": None if achieved is None else achieved / peak,
        "overrides": list(case.overrides) + list(args.set),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="digits,mnist", help=f"comma list of {', '.join(CASES)}, or all")
    parser.add_argument("--dataset-mnist", default="../shared/data/mnist-t10k", help="folder of MNIST IDX files")
    parser.add_argument("--steps", type=int, default=600, help="steps of the timed fit")
    parser.add_argument("--chunk", type=int, default=100, help="steps per timed chunk (train.log_every)")
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the peak-rate matrix product")
    parser.add_argument("--no-flops", action="store_true", help="skip XLA's cost analysis")
    parser.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args()
    if args.chunk < 1 or args.steps < 3 * args.chunk:
        parser.error(f"--steps must be at least three chunks (3 × {args.chunk}), got {args.steps}")
    names = list(CASES) if args.cases == "all" else [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)} or all")
    peak = measured_peak(args.peak_size)
    import ssvae_core

    header = {
        "peak_gflop_s": peak,
        "device": str(jax.devices()[0]),
        "devices": jax.device_count(),
        "cpu": platform.processor() or platform.machine(),
        "package": ssvae_core.__file__,
        "jax": jax.__version__,
    }
    lines = [header]
    print(json.dumps(header), flush=True)
    for name in names:
        result = run_case(CASES[name], args, peak)
        lines.append(result)
        print(json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as file:
            for line in lines:
                file.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
