"""A user's own data as they keep it: image folders, ``.npy`` pairs and CSV tables.

- **Image folder**: a directory with one subfolder of PNG/JPEG images per class (the
  class names are the subfolder names, sorted) and optionally ``unlabeled/`` for images
  without a label. All images must share one size. Grey images give samples ``(H, W)``,
  as MNIST's are stored; if any image has colour every image is read as RGB, ``(H, W, 3)``.
- **NumPy pair**: a directory holding ``x.npy`` (examples, ``(N, ...)``, float in
  [0, 1] or uint8) and optionally ``y.npy`` (integer labels ``(N,)``, -1 = unlabeled)
  and ``label_names.txt`` (one class name per line). The arrays are read memory-mapped.
- **CSV**: a header row, one row per example; the ``label`` column holds the class name
  (empty = unlabeled), every other column is a feature in [0, 1]. Class names that are
  all integers are ordered numerically, other names alphabetically.

A directory is told apart from an IDX folder by what it holds: ``x.npy`` makes it a NumPy
pair, an IDX file among its files an IDX folder, and subfolders of images an image folder.
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from ssvae_core.data.loading import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    Dataset,
    from_arrays,
    load_idx_folder,
)
from ssvae_core.errors import DataError

__all__ = ["load_csv", "load_folder", "load_image_folder", "load_npy_pair"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
UNLABELED_FOLDER = "unlabeled"
LABEL_COLUMN = "label"
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_idx(path: Path) -> bool:
    """Whether ``path`` starts with an IDX images or labels magic number (gzipped or not)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as stream:
                head = stream.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(head) == 4 and struct.unpack(">I", head)[0] in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC)


def load_folder(path: str | os.PathLike[str]) -> Dataset:
    """A directory by what it holds: ``x.npy`` (a NumPy pair), an IDX file (an IDX folder)
    or subfolders (an image folder); a ``DataError`` naming the forms otherwise."""
    folder = Path(path)
    entries = _visible(folder)
    if (folder / "x.npy").is_file():
        return load_npy_pair(folder)
    if any(p.is_file() and _is_idx(p) for p in entries):
        return load_idx_folder(folder)
    if any(p.is_dir() for p in entries):
        return load_image_folder(folder)
    raise DataError(
        f"{folder} holds no dataset: expected one IDX images/labels pair, x.npy (and y.npy), "
        "or one subfolder of PNG/JPEG images per class (and optionally unlabeled/); "
        f"found {[p.name for p in entries][:10]}"
    )


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            grey = image.mode in _GREY_MODES
            return np.asarray(image.convert("L" if grey else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def _images_in(folder: Path) -> list[Path]:
    images = []
    for p in _visible(folder):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        elif p.is_dir():
            raise DataError(
                f"{p} is a folder inside the class folder {folder.name!r}; a class folder "
                "holds only its images (PNG/JPEG)"
            )
    return images


def _size_text(image: np.ndarray) -> str:
    return f"{image.shape[1]}×{image.shape[0]}"


def load_image_folder(path: str | os.PathLike[str]) -> Dataset:
    """Images in one subfolder per class (names sorted) and optionally ``unlabeled/``.

    Returns
    -------
    Dataset
        uint8 pixels scaled by 1/255; samples ``(H, W)`` when every image is grey, else
        ``(H, W, 3)``; named after the folder.

    Raises
    ------
    DataError
        On an empty class folder, an unreadable image, images directly in the folder, or
        images of more than one size (naming a file of a minority size and the sizes found).
    """
    folder = Path(path)
    entries = _visible(folder)
    loose = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise DataError(
            f"{folder} holds images directly ({loose[:3]}); put each image in the subfolder of "
            f"its class, or in {UNLABELED_FOLDER}/ if it has no label"
        )
    classes = sorted(p.name for p in entries if p.is_dir() and p.name != UNLABELED_FOLDER)
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = _images_in(folder / name)
        if not found:
            raise DataError(
                f"class folder {folder / name} holds no images; expected files ending in "
                f"{', '.join(IMAGE_SUFFIXES)}"
            )
        files += [(p, label) for p in found]
    if (folder / UNLABELED_FOLDER).is_dir():
        files += [(p, -1) for p in _images_in(folder / UNLABELED_FOLDER)]
    if not files:
        raise DataError(f"{folder} holds no PNG/JPEG images in class subfolders")
    images = [_read_image(p) for p, _ in files]
    sizes = Counter(_size_text(image) for image in images)
    if len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        odd, odd_size = next(
            (p, _size_text(image))
            for (p, _), image in zip(files, images, strict=True)
            if _size_text(image) != common
        )
        found = ", ".join(f"{size} ({count} images)" for size, count in sizes.most_common())
        raise DataError(
            f"images must all have one size: {odd} is {odd_size}, most are "
            f"{common} (width×height found: {found}); resize them to one size first"
        )
    if any(image.ndim == 3 for image in images):
        images = [np.stack([image] * 3, axis=-1) if image.ndim == 2 else image for image in images]
    return from_arrays(
        np.stack(images),
        np.array([label for _, label in files], dtype=np.int32),
        name=folder.resolve().name,
        num_classes=len(classes),
        label_names=classes,
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"cannot read {path} as a .npy array of numbers ({exc}); save it with numpy.save"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def load_npy_pair(path: str | os.PathLike[str]) -> Dataset:
    """``x.npy``, optionally ``y.npy`` and ``label_names.txt``, of a directory; the arrays
    memory-mapped (``numpy.load(..., mmap_mode="r")``)."""
    folder = Path(path)
    x = _load_npy(folder / "x.npy")
    y = _load_npy(folder / "y.npy") if (folder / "y.npy").exists() else None
    if y is not None and y.ndim == 1 and len(y) != len(x):
        raise DataError(
            f"{folder / 'y.npy'} holds {len(y)} labels but {folder / 'x.npy'} holds {len(x)} "
            "examples; counts must match"
        )
    names = None
    names_file = folder / "label_names.txt"
    if names_file.exists():
        try:
            names = [line.strip() for line in names_file.read_text("utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {names_file} as UTF-8 text: {exc}") from None
    return from_arrays(x, y, name=folder.resolve().name, label_names=names)


def _class_order(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def load_csv(path: str | os.PathLike[str], label_column: str = LABEL_COLUMN) -> Dataset:
    """A CSV table: a header row, then one example per row; ``label_column`` holds the class
    name (empty: unlabeled) and every other column a number in [0, 1].

    Raises
    ------
    DataError
        On a missing label column, a row of the wrong length, or a cell that is not a
        number (naming its line and column).
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {p} as UTF-8 CSV text: {exc}") from None
    except csv.Error as exc:
        raise DataError(f"{p} is not valid CSV: {exc}") from None
    if not rows:
        raise DataError(f"{p} is empty; expected a header row naming the columns")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(
            f"{p} has no {label_column!r} column (columns: {header[:10]}); name the label column "
            f"{label_column!r} (an empty cell marks an unlabeled row)"
        )
    target = header.index(label_column)
    features = [i for i in range(len(header)) if i != target]
    x = np.empty((len(rows) - 1, len(features)), dtype=np.float64)
    names: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{p} line {line} has {len(row)} cells; the header has {len(header)}")
        for j, i in enumerate(features):
            try:
                x[line - 2, j] = float(row[i])
            except ValueError:
                raise DataError(
                    f"{p} line {line}, column {header[i]!r}: {row[i]!r} is not a number; every "
                    f"column but {label_column!r} must hold numbers"
                ) from None
        names.append(row[target].strip())
    classes = _class_order({n for n in names if n})
    index = {name: c for c, name in enumerate(classes)}
    y = np.array([index[n] if n else -1 for n in names], dtype=np.int32)
    try:
        return from_arrays(x, y, name=p.stem, num_classes=len(classes), label_names=classes)
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None
