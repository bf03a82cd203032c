"""Diagnostic plots written into a run directory (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LOSS_TERMS = ("loss", "reconstruction", "kl_z", "kl_c", "supervised", "usage")


def write_run_plots(
    run_dir: Path, classifier: Any, history: list[dict[str, float]], report: dict[str, Any]
) -> list[Path]:
    """Loss curves, channel usage, τ heat-map and reliability diagram; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    written = []

    steps = [row["step"] for row in history]
    terms = [t for t in LOSS_TERMS if history and t in history[0]]
    if terms:
        fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8))
        for axis, term in zip(np.atleast_1d(axes), terms, strict=True):
            axis.plot(steps, [row[term] for row in history])
            axis.set_title(term)
            axis.set_xlabel("step")
        fig.tight_layout()
        written.append(folder / "loss_curves.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    channels = report.get("channels") or {}
    if channels:
        fig, axis = plt.subplots(figsize=(6, 2.8))
        usage = channels["usage"]
        free = set(channels.get("free_channels", []))
        colours = ["lightgrey" if c in free else "tab:blue" for c in range(len(usage))]
        axis.bar(range(len(usage)), usage, color=colours)
        axis.set_xlabel("channel c (grey: free, no label owns it)" if free else "channel c")
        axis.set_ylabel("usage p̂_c (test set)")
        fig.tight_layout()
        written.append(folder / "channel_usage.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    tau = classifier.tau
    if tau is not None:
        fig, axis = plt.subplots(figsize=(5, 0.25 * tau.shape[0] + 1.5))
        image = axis.imshow(tau, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
        axis.set_xlabel("label y")
        axis.set_ylabel("channel c")
        axis.set_xticks(range(tau.shape[1]), classifier.label_names)
        free = set(channels.get("free_channels", []))
        if free:
            axis.set_yticks(
                range(tau.shape[0]),
                [f"{c} (free)" if c in free else str(c) for c in range(tau.shape[0])],
            )
        fig.colorbar(image, ax=axis, label="τ_{c,y}")
        fig.tight_layout()
        written.append(folder / "tau_heatmap.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    rows = report.get("reliability") or []
    if rows:
        fig, axis = plt.subplots(figsize=(3.6, 3.6))
        centres = [(r["low"] + r["high"]) / 2 for r in rows if r["count"]]
        accuracies = [r["accuracy"] for r in rows if r["count"]]
        axis.bar(centres, accuracies, width=1.0 / len(rows), edgecolor="black", alpha=0.7)
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(f"ECE {report['ece']:.3f}")
        fig.tight_layout()
        written.append(folder / "reliability.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
