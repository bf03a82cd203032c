"""How training, graph labels, queries and the studio scale with the rows
(docs/benchmarks.md, "Scale").

For each N of ``--sizes`` the MNIST training rows (``--mnist``, an IDX folder) are taken,
with shifted and rotated copies to reach N beyond them, and written as ``x.npy``/``y.npy``
(uint8) to a folder. Then, for that folder:

- ``graph_s``: the graph-label term's preparation of the mnist preset (deskew, blur,
  propagation over the pixel kNN graph of every training row), as ``fit`` runs it;
- ``ssvae train --preset mnist`` for ``--steps`` steps of batch 128 (graph labels on, as
  the preset has them), a process of its own: ``fit_s`` its wall time,
  ``images_per_s`` the steady training speed (steps × batch over the chunks after the
  first, from the run's ``metrics.jsonl``), ``train_peak_rss_mb`` its peak resident memory;
- ``query_s``: ``ssvae query`` of the run (entropy over the unlabeled pool), a process of
  its own, with its ``query_peak_rss_mb``;
- ``studio_open_s`` and ``studio_map_s``: the studio's session opened on the run
  (``StudioSession``) and its first latent map (``latent_map``), the data the map tab
  draws, without a browser;
- ``peak_rss_mb``: this process's own peak so far (graph labels and studio, of this size
  and the smaller ones before it).

One JSON line per size (``--data-on-device off`` trains from host-side batches)::

    python benchmarks/scale.py --sizes 10000,60000 --mnist ../shared/data/mnist-train

``--recall N`` instead compares the approximate nearest neighbours with the exact ones on
the first N MNIST rows (k = 10, pixel space): recall and the time of each (the
approximate one after a first use on 2,000 rows, which compiles pynndescent's code and is
timed on its own)::

    python benchmarks/scale.py --recall 60000 --mnist ../shared/data/mnist-train
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 128


def mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST rows as uint8 images and their labels."""
    from ssvae_core.data.loading import load_idx_folder

    data = load_idx_folder(folder)
    return np.rint(data.x * 255).astype(np.uint8), data.y


def augmented(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` rows: the images, then copies shifted by up to 2 pixels and rotated by up
    to 10° (one shift and angle per copy of the whole set), as many as needed."""
    from scipy.ndimage import rotate

    parts, targets, copy = [images[:size]], [labels[:size]], 0
    rng = np.random.default_rng(0)
    while sum(len(p) for p in parts) < size:
        copy += 1
        need = min(size - sum(len(p) for p in parts), len(images))
        dy, dx = rng.integers(-2, 3, size=2)
        angle = float(rng.uniform(-10, 10))
        moved = np.roll(images[:need], (int(dy), int(dx)), axis=(1, 2))
        turned = rotate(moved.astype(np.float32), angle, axes=(1, 2), reshape=False, order=1)
        parts.append(np.clip(np.rint(turned), 0, 255).astype(np.uint8))
        targets.append(labels[:need])
    return np.concatenate(parts), np.concatenate(targets)


def _child(command: list[str]) -> tuple[float, float]:
    """Run ``command``; its wall seconds and peak resident memory (MB).

    The peak is the child's own ``VmHWM``, read while it runs: its ``ru_maxrss`` would
    count the memory of this process too, which it held from the fork until its exec."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status, peak_kb = Path(f"/proc/{process.pid}/status"), 0
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if process.returncode:
        error = process.stderr.read().decode() if process.stderr else ""
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {error[-2000:]}")
    return seconds, peak_kb / 1024


def graph_seconds(folder: Path) -> float:
    """The graph-label term's preparation on every row of ``folder``, as ``fit`` runs it."""
    import jax

    from ssvae_core.config import load_config
    from ssvae_core.data.loading import load_dataset
    from ssvae_core.data.neighbours import exact_neighbours_up_to
    from ssvae_core.modelling.model import build_model
    from ssvae_core.modelling.objective import build_objective
    from ssvae_core.modelling.terms.base import prepared_fields
    from ssvae_core.runs.run import split_dataset, training_view

    config = load_config(None, [], preset="mnist")
    dataset = load_dataset(str(folder))
    data = training_view(dataset, split_dataset(dataset, config))
    model, config = build_model(config, input_shape=data.sample_shape, num_classes=data.num_classes,
                                key=jax.random.PRNGKey(0))
    objective = build_objective(config, model, input_shape=data.sample_shape, num_classes=data.num_classes)
    term = dict(objective.named_terms())["graph_label"]
    started = time.perf_counter()
    with exact_neighbours_up_to(config.data.exact_neighbours):
        prepared_fields(term, data.x, data.y, data.num_classes)
    return time.perf_counter() - started


def studio_seconds(run: Path) -> tuple[float, float, int]:
    """Opening the studio's session on ``run`` and its first latent map."""
    from ssvae_core.studio import StudioSession

    started = time.perf_counter()
    session = StudioSession(run)
    opened = time.perf_counter() - started
    try:
        started = time.perf_counter()
        points = session.latent_map()
        return opened, time.perf_counter() - started, len(points.get("x", points.get("points", [])))
    finally:
        session.close()


def measure(
    images: np.ndarray, labels: np.ndarray, size: int, steps: int, work: Path, data_on_device: str
) -> dict[str, object]:
    folder = work / f"mnist-{size}"
    folder.mkdir()
    x, y = augmented(images, labels, size)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y.astype(np.int64))
    result: dict[str, object] = {"rows": size, "steps": steps, "batch": BATCH, "data_on_device": data_on_device}
    result["graph_s"] = round(graph_seconds(folder), 2)
    run = work / f"run-{size}"
    ssvae = [sys.executable, "-m", "ssvae_core.cli"]
    fit_s, fit_rss = _child([*ssvae, "train", "--preset", "mnist", "--data", str(folder), "--steps", str(steps),
                             "--out", str(run), "--no-plots", "--quiet", "--set", f"train.batch_size={BATCH}",
                             "--set", f"train.log_every={max(steps // 6, 1)}",
                             "--set", f"train.data_on_device={data_on_device}"])
    chunks = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    chunks = [c for c in chunks if "seconds" in c]
    steady = chunks[1:] or chunks
    steady_steps = sum(c["step"] - p["step"] for p, c in itertools.pairwise(chunks)) or steps
    result.update(
        fit_s=round(fit_s, 1),
        images_per_s=round(steady_steps * BATCH / sum(c["seconds"] for c in steady), 1),
        train_peak_rss_mb=round(fit_rss),
    )
    query_s, query_rss = _child([*ssvae, "query", str(run), "--n", "10", "--out", str(work / f"q-{size}.csv")])
    result.update(query_s=round(query_s, 2), query_peak_rss_mb=round(query_rss))
    opened, mapped, points = studio_seconds(run)
    result.update(studio_open_s=round(opened, 2), studio_map_s=round(mapped, 2), map_points=points)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["load_1min"] = round(os.getloadavg()[0], 2)
    return result


def recall(images: np.ndarray, rows: int, k: int = 10) -> dict[str, object]:
    """Recall of the approximate k nearest neighbours against the exact ones."""
    from ssvae_core.data.neighbours import nearest_neighbours

    flat = images[:rows].reshape(rows, -1).astype(np.float32) / 255.0
    started = time.perf_counter()
    nearest_neighbours(flat[:2000], k, exact_up_to=0)  # compiles pynndescent's numba code
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    approximate = nearest_neighbours(flat, k, exact_up_to=0)
    approximate_s = time.perf_counter() - started
    started = time.perf_counter()
    exact = nearest_neighbours(flat, k, exact_up_to=rows)
    exact_s = time.perf_counter() - started
    found = np.mean([np.intersect1d(a, e).size for a, e in zip(approximate, exact, strict=True)]) / k
    return {"rows": rows, "k": k, "recall": round(float(found), 4), "exact_s": round(exact_s, 1),
            "approximate_s": round(approximate_s, 1), "first_use_compile_s": round(compile_s, 1),
            "load_1min": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,60000,250000,1000000", help="row counts, comma-separated")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each fit")
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist-train"),
                        help="a folder with the MNIST training IDX files")
    parser.add_argument("--data-on-device", default="auto", choices=("auto", "on", "off"),
                        help="train.data_on_device of each fit")
    parser.add_argument("--recall", type=int, default=0, help="measure kNN recall on this many rows instead")
    parser.add_argument("--work", type=Path, default=None, help="folder under which a temporary folder holds the data and runs (created if missing; default: the system's)")
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas; got {args.sizes!r}")
    if any(size < 1000 for size in sizes) or args.steps < 1:
        parser.error("every size must be at least 1000 and --steps at least 1")
    images, labels = mnist(args.mnist)
    if args.recall:
        print(json.dumps(recall(images, min(args.recall, len(images)))), flush=True)
        return 0
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for size in sizes:
            print(json.dumps(measure(images, labels, size, args.steps, Path(work), args.data_on_device)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
