"""Baselines for the quality benchmark, run on the same split and labels as the model.

Three classifiers with fixed settings (never tuned on any split), each returning test
probabilities so accuracy and ECE are measured the same way as the model's:

- ``logreg``: scikit-learn's ``LogisticRegression`` (L2, ``C = 1``) on the labeled
  examples' pixels only;
- ``convnet``: a small supervised convolutional network (two 3×3 convolutions of 32 and 64
  channels with max-pooling, a 128-unit hidden layer), trained on the labeled images only
  with Adam for 600 steps on batches of up to 64, random shifts of up to 2 pixels;
- ``label_spreading``: scikit-learn's ``LabelSpreading`` over the 10-nearest-neighbour
  graph of every training example's pixels (labeled and unlabeled, ``alpha = 0.2``),
  predicting the test examples from their neighbours among the training examples (uniform
  where none of them was reached).

``python benchmarks/quality.py ... --baselines logreg,convnet,label_spreading`` adds them
to each seed's line; ``--only-baselines`` skips the model.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssvae_core.data.loading import Dataset, Split
from ssvae_core.runs.metrics import accuracy, expected_calibration_error

CONVNET_STEPS = 600
CONVNET_BATCH = 64
CONVNET_SHIFT = 2


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


def _spread(probabilities: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Columns of ``probabilities`` (one per class in ``classes``) placed among all classes."""
    full = np.zeros((len(probabilities), num_classes), dtype=np.float64)
    full[:, classes] = probabilities
    return full


def logistic_regression(
    dataset: Dataset, split: Split, seed: int
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    labels = dataset.y[split.labeled]
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit(_flat(dataset.x[split.labeled]), labels)
    return _spread(model.predict_proba(_flat(dataset.x[split.test])), model.classes_,
                   dataset.num_classes)


def label_spreading(dataset: Dataset, split: Split, seed: int) -> np.ndarray:
    from sklearn.semi_supervised import LabelSpreading

    del seed  # deterministic
    labels = np.full(len(split.train), -1, dtype=np.int64)
    is_labeled = np.isin(split.train, split.labeled)
    labels[is_labeled] = dataset.y[split.train[is_labeled]]
    model = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=100, n_jobs=-1)
    model.fit(_flat(dataset.x[split.train]), labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        probabilities = np.nan_to_num(model.predict_proba(_flat(dataset.x[split.test])))
    # A test example none of whose neighbours the spreading reached gets no prediction:
    # uniform over the classes.
    unreached = probabilities.sum(axis=1) == 0
    probabilities[unreached] = 1.0 / len(model.classes_)
    return _spread(probabilities, model.classes_, dataset.num_classes)


def _channels_first(x: np.ndarray) -> np.ndarray:
    """Images as ``(N, C, H, W)`` float32: ``(N, H, W)`` gains a channel axis and
    ``(N, H, W, C)`` moves it first."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        return x[:, None]
    return np.transpose(x, (0, 3, 1, 2))


class _ConvNet(eqx.Module):
    layers: tuple

    def __init__(self, channels: int, height: int, width: int, num_classes: int, key):
        keys = jax.random.split(key, 4)
        pooled = (height // 4) * (width // 4)
        self.layers = (
            eqx.nn.Conv2d(channels, 32, 3, padding=1, key=keys[0]),
            eqx.nn.Conv2d(32, 64, 3, padding=1, key=keys[1]),
            eqx.nn.Linear(64 * pooled, 128, key=keys[2]),
            eqx.nn.Linear(128, num_classes, key=keys[3]),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        first, second, hidden, out = self.layers
        pool = eqx.nn.MaxPool2d(2, 2)
        h = pool(jax.nn.relu(first(x)))
        h = pool(jax.nn.relu(second(h)))
        return out(jax.nn.relu(hidden(h.reshape(-1))))


def _shifted(images: jax.Array, key: jax.Array) -> jax.Array:
    """Each image rolled by up to ``CONVNET_SHIFT`` pixels on each axis (zero-padded)."""
    pad = CONVNET_SHIFT
    padded = jnp.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    offsets = jax.random.randint(key, (len(images), 2), 0, 2 * pad + 1)
    height, width = images.shape[2:]

    def crop(image, offset):
        return jax.lax.dynamic_slice(
            image, (0, offset[0], offset[1]), (image.shape[0], height, width)
        )

    return jax.vmap(crop)(padded, offsets)


def convnet(dataset: Dataset, split: Split, seed: int) -> np.ndarray | None:
    """``None`` for data that are not images (vectors have no convolution to run)."""
    if dataset.x.ndim not in (3, 4):
        return None
    images = jnp.asarray(_channels_first(dataset.x[split.labeled]))
    labels = jnp.asarray(dataset.y[split.labeled])
    channels, height, width = images.shape[1:]
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    model = _ConvNet(channels, height, width, dataset.num_classes, init_key)
    optimiser = optax.adamw(1e-3, weight_decay=1e-4)
    state = optimiser.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, key):
        batch_key, shift_key = jax.random.split(key)
        rows = jax.random.choice(batch_key, len(labels), (min(CONVNET_BATCH, len(labels)),))

        def loss(model):
            logits = jax.vmap(model)(_shifted(images[rows], shift_key))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[rows]).mean()

        grads = eqx.filter_grad(loss)(model)
        updates, state = optimiser.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state

    for step_key in jax.random.split(key, CONVNET_STEPS):
        model, state = step(model, state, step_key)
    predict = eqx.filter_jit(lambda m, x: jax.nn.softmax(jax.vmap(m)(x)))
    test = _channels_first(dataset.x[split.test])
    return np.concatenate([
        np.asarray(predict(model, jnp.asarray(test[i : i + 1000])))
        for i in range(0, len(test), 1000)
    ])


BASELINES: dict[str, Callable[[Dataset, Split, int], np.ndarray | None]] = {
    "logreg": logistic_regression,
    "convnet": convnet,
    "label_spreading": label_spreading,
}


def baseline_names(text: str) -> list[str]:
    """Comma-separated baseline names, checked against ``BASELINES``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}"
        )
    return names


def run_baselines(
    names: list[str], dataset: Dataset, split: Split, seed: int
) -> dict[str, dict[str, float] | None]:
    """Test accuracy, ECE and wall time of each named baseline on ``split``'s labels
    (``None`` for a baseline that does not apply to the data)."""
    results: dict[str, dict[str, float] | None] = {}
    labels = dataset.y[split.test]
    for name in names:
        started = time.perf_counter()
        probabilities = BASELINES[name](dataset, split, seed)
        if probabilities is None:
            results[name] = None
            continue
        results[name] = {
            "accuracy": accuracy(probabilities, labels),
            "ece": expected_calibration_error(probabilities, labels),
            "wall_time_s": time.perf_counter() - started,
        }
    return results
