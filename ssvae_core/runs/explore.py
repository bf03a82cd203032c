"""What a trained model makes of its training data, drawn for people: a 2-D map of the
posterior means, each channel's most typical members with the decoder's reconstruction of
them through that channel, and examples as PNG images.

The run plots (``plots/latent_map.png``, ``plots/channel_reconstructions.png``, written by
``ssvae train`` and ``ssvae retrain``) and the studio (``ssvae studio``) draw from here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ssvae_core.errors import ConfigError

PROJECTIONS = ("classes", "pca", "channels", "tsne", "tsne-channels")
MEMBERS_PER_CHANNEL = 8
# t-SNE runs on at most this many points (a fixed random subset); the others are placed
# among their nearest embedded neighbours, so a map of 100,000 points costs what 2,000 do
TSNE_POINTS = 2000
NEIGHBOURS = 5
CLASS_SPREAD = 0.12


def project(
    z: np.ndarray,
    method: str = "pca",
    *,
    responsibilities: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    seed: int = 0,
    order: Sequence[int] | None = None,
) -> np.ndarray:
    """The ``(N, 2)`` projection of the posterior means ``z`` (``(N, D)``).

    ``classes``: the model's class probabilities ``probabilities`` (``(N, Y)``) as a point
    among the classes' anchors, evenly spaced on the unit circle (each point is the
    probability-weighted mean of the anchors, so a confident example sits at its class's
    anchor and one torn between two classes on the chord between them), spread around
    that point by the principal axes of ``z`` within its predicted class (at most
    ``CLASS_SPREAD``); linear in N, the studio's default. ``pca``: the two principal axes
    (signs fixed so the largest loading is positive, so the same means always give the
    same picture). ``tsne``: scikit-learn's t-SNE, started from the PCA picture; slower,
    keeps neighbourhoods; past ``TSNE_POINTS`` points it embeds a fixed random subset and
    places each other point at the distance-weighted mean of its ``NEIGHBOURS`` nearest
    embedded points (in the space it projects). ``tsne-channels``: t-SNE over the means and
    the channel responsibilities ``q(c|x)`` together (``responsibilities``, ``(N, K)``),
    each responsibility scaled by the overall spread of ``z``: where the decoder is told
    the channel, ``z`` holds only the variation within a mode, and the channels are what
    separates the classes. ``channels``: the
    channel responsibilities laid out at once (``channel_layout``; ``order`` lists the
    channels around the circle); PCA of ``z`` without channels.
    """
    if method not in PROJECTIONS:
        raise ConfigError(f"unknown projection {method!r}; allowed: {', '.join(PROJECTIONS)}")
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    if method == "classes":
        return _class_layout(z, probabilities)
    if method == "channels":
        r = None if responsibilities is None else np.asarray(responsibilities, dtype=np.float64)
        if r is not None and r.ndim == 2 and r.shape[1] > 1:
            return channel_layout(project(z, "pca"), r, order)
        method = "pca"
    if method == "tsne-channels":
        method = "tsne"
        r = None if responsibilities is None else np.asarray(responsibilities, dtype=np.float64)
        if r is not None and r.ndim == 2 and r.shape[1] > 0:
            spread = float(np.sqrt(np.sum(np.var(z, axis=0)))) if len(z) > 1 else 1.0
            z = np.concatenate([z, 2.0 * max(spread, 1e-6) * r], axis=1)
    if z.shape[0] < 2:
        return np.zeros((z.shape[0], 2))
    if z.shape[1] < 2:
        z = np.concatenate([z, np.zeros((z.shape[0], 2 - z.shape[1]))], axis=1)
    centred = z - z.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    signs = np.sign(axes[np.arange(2), np.argmax(np.abs(axes), axis=1)])
    pca = centred @ (axes * signs[:, None]).T
    if method == "pca":
        return pca
    return _tsne(z, pca, seed)


def _tsne(z: np.ndarray, pca: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = z.shape[0]
    chosen = np.arange(n)
    if n > TSNE_POINTS:
        chosen = np.sort(np.random.default_rng(seed).choice(n, TSNE_POINTS, replace=False))
    perplexity = float(min(30.0, max(2.0, (len(chosen) - 1) / 3.0)))
    start = pca[chosen] / max(float(np.std(pca[chosen, 0])), 1e-12) * 1e-4
    embedded = TSNE(2, perplexity=perplexity, init=start, random_state=seed).fit_transform(z[chosen])
    if len(chosen) == n:
        return embedded
    from sklearn.neighbors import NearestNeighbors

    points = np.empty((n, 2))
    points[chosen] = embedded
    rest = np.setdiff1d(np.arange(n), chosen)
    distance, nearest = NearestNeighbors(n_neighbors=NEIGHBOURS).fit(z[chosen]).kneighbors(z[rest])
    weights = 1.0 / np.maximum(distance, 1e-12)
    weights /= weights.sum(axis=1, keepdims=True)
    points[rest] = np.einsum("nk,nkd->nd", weights, embedded[nearest])
    return points


def _class_layout(z: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
    if probabilities is None:
        raise ConfigError("the 'classes' projection needs the class probabilities of the points")
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != z.shape[0] or p.shape[1] == 0:
        raise ConfigError(
            f"the class probabilities must have shape ({z.shape[0]}, classes); got {p.shape}"
        )
    angles = 2.0 * np.pi * np.arange(p.shape[1]) / p.shape[1]
    anchors = np.stack([np.sin(angles), np.cos(angles)], axis=1)  # clockwise from the top
    centre = (p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)) @ anchors
    spread = np.zeros_like(centre)
    predicted = np.argmax(p, axis=1)
    for y in np.unique(predicted):
        rows = np.flatnonzero(predicted == y)
        local = project(z[rows], "pca")
        scale = float(np.max(np.abs(local))) if len(rows) > 1 else 0.0
        if scale > 0.0:
            spread[rows] = CLASS_SPREAD * local / scale
    return centre + spread


def channel_layout(
    within: np.ndarray, responsibilities: np.ndarray, order: Sequence[int] | None = None
) -> np.ndarray:
    """Points for ``N`` examples over ``K`` channels: channel ``c`` gets an anchor ``a_c``
    on the unit circle (in ``order``, by default by index), and an example sits at
    ``Σ_c q(c|x) a_c`` — at its channel's anchor when it is sure, between anchors when
    undecided — plus its 2-D coordinates ``within`` (the PCA of ``z``), standardised and
    scaled to a third of the gap between neighbouring anchors. Linear in ``N``: a run's
    whole training set is drawn in milliseconds."""
    r = np.asarray(responsibilities, dtype=np.float64)
    k = r.shape[1]
    slots = np.empty(k, dtype=np.int64)
    slots[np.asarray(list(order) if order is not None else range(k), dtype=np.int64)] = np.arange(k)
    angles = 2.0 * np.pi * slots / k
    anchors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    offsets = np.asarray(within, dtype=np.float64)
    offsets = (offsets - offsets.mean(axis=0)) / max(float(offsets.std()), 1e-12) if len(offsets) > 1 else 0 * offsets
    return r @ anchors + offsets * (np.sin(np.pi / k) / 3.0)


def channel_members(responsibilities: np.ndarray, count: int = MEMBERS_PER_CHANNEL) -> list[np.ndarray]:
    """For each channel ``c``, the rows most typical of it: those assigned to it
    (``argmax r = c``) by decreasing ``r_c``, then, if fewer than ``count``, the others
    by decreasing ``r_c``. Empty lists for a model without channels."""
    r = np.asarray(responsibilities)
    if r.ndim != 2 or r.shape[1] == 0:
        return []
    assigned = np.argmax(r, axis=1)
    members = []
    for c in range(r.shape[1]):
        # assigned rows first (key 0), each group by decreasing r_c, ties to the lower row
        order = np.lexsort((np.arange(len(r)), -r[:, c], (assigned != c).astype(int)))
        members.append(order[:count])
    return members


@eqx.filter_jit
def _reconstruct(model: Any, z: jnp.ndarray, channels: jnp.ndarray) -> jnp.ndarray:
    return model.reconstruct(z, channels)


def reconstruct_through(model: Any, z: np.ndarray, channel: int) -> np.ndarray:
    """The decoder's mean reconstruction of the latent codes ``z`` through ``channel``."""
    z = jnp.asarray(z, dtype=jnp.float32)
    channels = jnp.full((z.shape[0],), int(channel), dtype=jnp.int32)
    return np.asarray(_reconstruct(model, z, channels))


def as_image(sample: np.ndarray) -> np.ndarray:
    """A sample as an image: 2-D grey, or 3-D with 3/4 colour channels last (a square
    number of values becomes a square; anything else one row)."""
    sample = np.asarray(sample)
    if sample.ndim == 2 or (sample.ndim == 3 and sample.shape[-1] in (3, 4)):
        return sample
    if sample.ndim == 3 and sample.shape[-1] == 1:
        return sample[..., 0]
    if sample.ndim == 3 and sample.shape[0] in (1, 3, 4):
        return as_image(np.moveaxis(sample, 0, -1))
    flat = sample.reshape(-1)
    side = math.isqrt(flat.size)
    if side * side == flat.size:
        return flat.reshape(side, side)
    return flat[None, :]


def _as_bytes(image: np.ndarray) -> np.ndarray:
    low, high = float(np.min(image)), float(np.max(image))
    if low < 0.0 or high > 1.0:  # standardised data: stretch to the full grey range
        image = (image - low) / max(high - low, 1e-12)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def tile(rows: Sequence[Sequence[np.ndarray]], *, scale: int = 4, gap: int = 2) -> np.ndarray:
    """Images laid out in rows (each scaled up ``scale`` times, ``gap`` pixels apart) as one
    8-bit image; short rows are padded with background."""
    images = [[_as_bytes(as_image(np.asarray(s, dtype=np.float32))) for s in row] for row in rows]
    first = next((img for row in images for img in row), None)
    if first is None:
        return np.zeros((1, 1), dtype=np.uint8)
    height, width = first.shape[0] * scale, first.shape[1] * scale
    colour = first.shape[2:]  # () grey, (3,) or (4,) colour
    columns = max(len(row) for row in images)
    canvas = np.full(
        (len(images) * (height + gap) - gap, columns * (width + gap) - gap, *colour), 255, np.uint8
    )
    for i, row in enumerate(images):
        for j, image in enumerate(row):
            big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
            top, left = i * (height + gap), j * (width + gap)
            canvas[top : top + height, left : left + width] = big
    return canvas


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit image (from ``tile``) as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_latent_map(
    path: Path,
    points: np.ndarray,
    predicted: np.ndarray,
    label_names: Sequence[str],
    *,
    labeled: np.ndarray | None = None,
    title: str = "",
) -> None:
    """A scatter of the projected posterior means coloured by predicted class (labeled
    examples ringed in black), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.4, 5.2))
    colours = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
    for y, name in enumerate(label_names):
        chosen = predicted == y
        if np.any(chosen):
            axis.scatter(*points[chosen].T, s=6, color=colours(y % colours.N), label=name, alpha=0.7)
    if labeled is not None and np.any(labeled):
        axis.scatter(*points[labeled].T, s=22, facecolors="none", edgecolors="black", linewidths=0.6, label="labeled")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, markerscale=2, loc="best", ncol=2 if len(label_names) > 6 else 1)
    save_figure(fig, path)


def write_channel_reconstructions(
    path: Path, rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[np.ndarray]]]
) -> None:
    """One block per channel: its members (left) and their reconstructions through the
    channel (right), captioned; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(8.0, 0.75 * len(rows) + 0.4), squeeze=False)
    for axis, (caption, members, reconstructions) in zip(axes[:, 0], rows, strict=True):
        axis.imshow(tile([[*members, *reconstructions]], scale=1, gap=1), cmap="gray", vmin=0, vmax=255)
        axis.set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=7)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, 0].set_title("members of each channel | their reconstructions through it", fontsize=8)
    save_figure(fig, path)


def save_figure(fig: Any, path: Path, *, dpi: int = 100) -> None:
    """Write a Matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from ssvae_core.training.checkpoint import atomic_write_bytes

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
