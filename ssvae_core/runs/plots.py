"""Diagnostic plots written into a run directory (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

RECONSTRUCTED_MEMBERS = 6


def write_run_plots(
    run_dir: Path,
    classifier: Any,
    history: list[dict[str, float]],
    report: dict[str, Any],
    *,
    x_train: np.ndarray | None = None,
    labeled: np.ndarray | None = None,
) -> list[Path]:
    """Loss curves, channel usage, τ heat-map and reliability diagram; with the training
    inputs ``x_train`` (``labeled`` marks the labeled ones) also the latent map and each
    channel's members with their reconstructions through it. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    channels = report.get("channels") or {}
    drawn = [
        _loss_curves(plt, folder / "loss_curves.png", history),
        _channel_usage(plt, folder / "channel_usage.png", channels),
        _tau_heatmap(plt, folder / "tau_heatmap.png", classifier, channels, report),
        _reliability(plt, folder / "reliability.png", report),
    ]
    written = [path for path in drawn if path is not None]
    if x_train is not None and len(x_train):
        written += write_latent_plots(folder, classifier, x_train, labeled, by_channel=bool(report.get("label_free")))
    return written


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _loss_curves(plt: Any, path: Path, history: list[dict[str, float]]) -> Path | None:
    """One panel per loss curve, and the held-out accuracy when it was evaluated."""
    steps = [row["step"] for row in history]
    terms = curve_names(history[0]) if history else []
    if not terms:
        return None
    evaluated = [row for row in history if "held_out_accuracy" in row]
    panels = len(terms) + bool(evaluated)
    columns = min(panels, 4)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.flat[panels:]:
        axis.set_visible(False)
    axes = axes.flat[:panels]
    for axis, term in zip(axes, terms, strict=False):
        axis.plot(steps, [row.get(term, np.nan) for row in history])
        axis.set_title(term)
        axis.set_xlabel("step")
    if evaluated:  # train.eval_every: the held-out learning curve
        axis = axes[-1]
        axis.plot([row["step"] for row in evaluated], [row["held_out_accuracy"] for row in evaluated], marker=".")
        axis.set_title("held-out accuracy")
        axis.set_xlabel("step")
    return _save(plt, fig, path)


def _channel_usage(plt: Any, path: Path, channels: dict[str, Any]) -> Path | None:
    """Each channel's usage on the test set, the free ones grey."""
    if not channels:
        return None
    fig, axis = plt.subplots(figsize=(6, 2.8))
    usage = channels["usage"]
    free = set(channels.get("free_channels", []))
    colours = ["lightgrey" if c in free else "tab:blue" for c in range(len(usage))]
    axis.bar(range(len(usage)), usage, color=colours)
    axis.set_xlabel("channel c (grey: free, no label owns it)" if free else "channel c")
    axis.set_ylabel("usage p̂_c (test set)")
    return _save(plt, fig, path)


def _tau_heatmap(
    plt: Any, path: Path, classifier: Any, channels: dict[str, Any], report: dict[str, Any]
) -> Path | None:
    """τ as a heat map (channels by labels), free channels marked; none without labels."""
    tau = classifier.tau
    if tau is None or report.get("label_free"):  # no labels: τ holds only its prior
        return None
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
    return _save(plt, fig, path)


def _reliability(plt: Any, path: Path, report: dict[str, Any]) -> Path | None:
    """The reliability diagram: accuracy against confidence, with the ECE."""
    rows = report.get("reliability") or []
    if not rows or report.get("ece") is None:
        return None
    fig, axis = plt.subplots(figsize=(3.6, 3.6))
    centres = [(r["low"] + r["high"]) / 2 for r in rows if r["count"]]
    accuracies = [r["accuracy"] for r in rows if r["count"]]
    axis.bar(centres, accuracies, width=1.0 / len(rows), edgecolor="black", alpha=0.7)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"ECE {report['ece']:.3f}")
    return _save(plt, fig, path)


def curve_names(row: dict[str, float]) -> list[str]:
    """The loss curves a metrics row has: the total, the reconstruction, the prior's KL
    terms (``kl_*``) and every registered loss term the objective logged, in the order
    the objective sums them."""
    from ssvae_core.registry import default_registry

    terms = default_registry().ordered("loss_term")
    return [
        name
        for name in ["loss", "reconstruction", *(k for k in row if k.startswith("kl_")), *terms]
        if name in row
    ]


def write_latent_plots(
    folder: Path, classifier: Any, x: np.ndarray, labeled: np.ndarray | None = None, *, by_channel: bool = False
) -> list[Path]:
    """``latent_map.png`` (the ``channels`` projection of ``x`` over ``z`` and ``q(c|x)``,
    PCA of ``z`` for a model without channels; coloured by predicted class, or with
    ``by_channel`` — a model without labels — by most responsible channel) and, for a model
    with channels, ``channel_reconstructions.png``."""
    from ssvae_core.runs.explore import (
        channel_members,
        project,
        reconstruct_through,
        write_channel_reconstructions,
        write_latent_map,
    )

    inference = classifier.infer(x)
    tau = classifier.tau
    # the channels of one class side by side (by the label that owns most of each)
    order = None if tau is None or by_channel else np.argsort(np.argmax(tau, axis=1), kind="stable")
    points = project(inference.z_mean, "channels", responsibilities=inference.responsibilities, order=order)
    has_channels = inference.responsibilities.shape[-1] > 1
    by_channel = by_channel and inference.responsibilities.shape[-1] > 0
    if by_channel:
        colour = np.argmax(inference.responsibilities, axis=1)
        names = [f"c={c}" for c in range(inference.responsibilities.shape[-1])]
    else:
        colour, names = np.argmax(inference.probabilities, axis=1), list(classifier.label_names)
    written = [folder / "latent_map.png"]
    write_latent_map(
        written[0], points, colour, names, labeled=labeled,
        title=f"{len(x)} training examples, coloured by "
        + ("most responsible channel" if by_channel else "predicted class")
        + ("\nplaced by q(c|x) over channel anchors, PCA of z within" if has_channels else " (PCA of z)"),
    )
    members = channel_members(inference.responsibilities, RECONSTRUCTED_MEMBERS)
    if members:
        usage = inference.responsibilities.mean(axis=0)
        rows = []
        for c, rows_c in enumerate(members):
            recon = reconstruct_through(classifier.model, inference.z_mean[rows_c], c)
            rows.append((f"c={c}  p̂={usage[c]:.3f}", list(x[rows_c]), list(recon)))
        written.append(folder / "channel_reconstructions.png")
        write_channel_reconstructions(written[-1], rows)
    return written
