"""Tuned configurations shipped with the package (``ssvae train --preset NAME``).

``digits`` and ``mnist`` are TOML files in this folder. ``auto`` is a rule (``auto_table``)
that picks one of them for the data at hand and adjusts it to the data's shape and size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ssvae_core.errors import ConfigError
from ssvae_core.options import suggest

AUTO = "auto"
# The smallest image side the auto preset gives a convolutional encoder.
AUTO_CONV_SIDE = 16
# Labeled rows per class below which the auto preset uses every label instead of 10 per class.
AUTO_ALL_LABELS_BELOW = 20
# The shipped presets' step count and batch size, tuned on 1.4k (digits) and 8k (mnist10k)
# training rows; beyond that the auto preset makes 17 passes over the training rows (full
# MNIST's 60k, validation split: 0.9827 at 8,000 steps against 0.9787 at 4,000).
AUTO_STEPS, AUTO_BATCH, AUTO_EPOCHS, AUTO_MAX_STEPS = 4000, 128, 17, 20000


def preset_names() -> list[str]:
    """Names of the shipped presets (``auto`` included)."""
    folder = resources.files(__name__)
    shipped = [p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml")]
    return sorted([*shipped, AUTO])


def preset_path(name: str) -> Path:
    """The TOML file of preset ``name``; an unknown name (or ``auto``, which has no file) is
    a ``ConfigError``."""
    names = [n for n in preset_names() if n != AUTO]
    if name not in names:
        raise ConfigError(
            f"unknown preset {name!r}{suggest(name, preset_names())}; allowed: {', '.join(preset_names())}"
        )
    return Path(str(resources.files(__name__).joinpath(f"{name}.toml")))


def preset_table(name: str, above: Mapping[str, Any], registry: Any = None) -> dict[str, Any]:
    """The raw table of preset ``name``; for ``auto``, the table ``auto_table`` picks for the
    data that ``above`` (the config file and overrides laid over the preset) names."""
    from ssvae_core.config import read_toml

    if name != AUTO:
        return read_toml(preset_path(name))
    from ssvae_core.data.loading import load_dataset
    from ssvae_core.registry import default_registry

    data = above.get("data", {}) if isinstance(above.get("data", {}), Mapping) else {}
    dataset = load_dataset(str(data.get("dataset", "digits")), str(data.get("test_dataset", "")) or None)
    registry = registry or default_registry()
    labels = dataset.y[: len(dataset) - dataset.test_rows]
    counts = [int((labels == c).sum()) for c in range(dataset.num_classes)]
    return auto_table(
        dataset.sample_shape,
        len(dataset) - dataset.test_rows,
        counts,
        has_unlabeled=bool((labels < 0).any()),
        conv="conv" in registry.names("encoder"),
    )


def _image_sides(sample_shape: tuple[int, ...]) -> tuple[int, int] | None:
    from ssvae_core.data.augment import channels_last

    if len(sample_shape) == 2:
        return sample_shape[0], sample_shape[1]
    if channels_last(sample_shape):
        return sample_shape[0], sample_shape[1]
    if len(sample_shape) == 3 and sample_shape[0] in (1, 3, 4):
        return sample_shape[1], sample_shape[2]
    return None


def _one_channel(sample_shape: tuple[int, ...]) -> bool:
    from ssvae_core.data.augment import channels_last

    return len(sample_shape) == 2 or (channels_last(sample_shape) and sample_shape[-1] == 1)


def auto_table(
    sample_shape: tuple[int, ...],
    rows: int,
    labeled_per_class: list[int],
    *,
    has_unlabeled: bool,
    conv: bool = True,
) -> dict[str, Any]:
    """The ``auto`` preset for data of ``sample_shape`` with ``rows`` training rows and
    ``labeled_per_class`` labeled rows per class (see docs/user-guide.md, "The auto preset"):

    - images of at least 16×16 pixels (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``) take the
      ``mnist`` preset (a convolutional encoder, when ssvae-conv is installed), its
      deskewed graph only for one-channel images; everything else (smaller images, feature
      vectors) takes the ``digits`` preset (dense networks);
    - ``prior.num_components`` is at least the number of classes;
    - ``train.steps`` is 4000, or 17 passes over the training rows when that is more (at
      most 20000); ``train.batch_size`` is 128, or the largest power of two up to half the
      training rows when they are fewer than 256 (at least 8);
    - ``data.labels_per_class`` is ``"all"`` when the data have unlabeled rows (their labels
      are the ones the user gave) or a class has fewer than 20 labeled rows; else 10.
    """
    from ssvae_core.config import read_toml

    sides = _image_sides(tuple(sample_shape))
    image = sides is not None and min(sides) >= AUTO_CONV_SIDE and conv
    table = read_toml(preset_path("mnist" if image else "digits"))
    table.get("data", {}).pop("dataset", None)
    if image and not _one_channel(tuple(sample_shape)):
        # deskewing reads one-channel images (N, H, W) or (N, H, W, 1) only
        for section in (table["loss"]["graph_label"], table["loss"]["graph_cluster"], table["calibration"]):
            section.pop("deskew", None)
    classes = len(labeled_per_class)
    table["prior"]["num_components"] = max(int(table["prior"]["num_components"]), classes)
    batch = AUTO_BATCH if rows >= 2 * AUTO_BATCH else max(8, 2 ** int(math.log2(max(rows // 2, 1))))
    epochs = math.ceil(AUTO_EPOCHS * rows / batch / 500) * 500
    table["train"].update(steps=min(max(AUTO_STEPS, epochs), AUTO_MAX_STEPS), batch_size=batch)
    few = bool(labeled_per_class) and min(labeled_per_class) < AUTO_ALL_LABELS_BELOW
    table.setdefault("data", {})["labels_per_class"] = "all" if has_unlabeled or few else 10
    return table
