"""The training data on the device, and batches drawn from it.

The labeled pool has a fixed capacity (one slot per training row) and a count, so adding
labels changes values, never shapes: a compiled step serves every labeling of the same
data. Loss terms' host-side preparations (propagated labels, neighbour indices) live here
as per-row arrays and are gathered into each batch by row.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.augment import AugmentConfig, augment_batch
from ssvae_core.objective import Objective
from ssvae_core.terms.base import prepared_fields
from ssvae_core.types import Batch


class TrainingArrays(eqx.Module):
    """The training data on the device.

    ``x`` holds every training input. The labeled pool is ``labeled_index[:labeled_count]``
    (rows of ``x``) with labels ``labeled_y[:labeled_count]``; both arrays have one slot
    per row of ``x``. ``fields`` holds per-row arrays prepared by loss terms.
    """

    x: Float[Array, "N ..."]
    labeled_index: Int[Array, " N"]
    labeled_y: Int[Array, " N"]
    labeled_count: Int[Array, ""]
    fields: dict[str, Array] = eqx.field(default_factory=dict)


def labeled_pool(labels: np.ndarray, *, balance: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """``(index, y, count)``: the labeled rows first, padded to one slot per row.

    With ``balance`` each class's rows are repeated ``round(n_max / n_c)`` times, so that a
    batch draws every class about equally often; a pool that would not fit into its slots
    is left unbalanced, and with equal label counts nothing changes.
    """
    labels = np.asarray(labels)
    rows = np.flatnonzero(labels >= 0)
    if balance and rows.size:
        classes, counts = np.unique(labels[rows], return_counts=True)
        factor = np.zeros(int(classes.max()) + 1, dtype=np.int64)
        factor[classes] = np.maximum(np.rint(counts.max() / counts), 1).astype(np.int64)
        repeats = factor[labels[rows]]
        if np.any(repeats > 1) and int(repeats.sum()) <= labels.shape[0]:
            rows = np.repeat(rows, repeats)
    index = np.zeros(labels.shape[0], dtype=np.int32)
    y = np.full(labels.shape[0], -1, dtype=np.int32)
    index[: rows.size] = rows
    y[: rows.size] = labels[rows]
    return index, y, int(rows.size)


def training_arrays(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    objective: Objective | None = None,
    num_classes: int | None = None,
    balance_labels: bool = False,
) -> TrainingArrays:
    """Prepare every loss term of ``objective`` on the host and move the data to the device.

    ``labels`` holds one label per row of ``x``, ``-1`` where unlabeled; ``balance_labels``
    balances the labeled pool over classes (``labeled_pool``).
    """
    labels = np.asarray(labels)
    classes = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
    fields: dict[str, np.ndarray] = {}
    for name, term in objective.named_terms() if objective is not None else ():
        for field, values in prepared_fields(term, x, labels, classes).items():
            if field in fields:
                raise ValueError(f"loss term {name!r} prepares {field!r}, which another term prepared")
            if np.shape(values)[:1] != (x.shape[0],):
                raise ValueError(
                    f"loss term {name!r} prepared {field!r} with shape {np.shape(values)}; "
                    f"per-row arrays need a leading axis of {x.shape[0]}"
                )
            fields[field] = values
    index, y, count = labeled_pool(labels, balance=balance_labels)
    return TrainingArrays(
        x=jnp.asarray(x, dtype=jnp.float32),
        labeled_index=jnp.asarray(index),
        labeled_y=jnp.asarray(y),
        labeled_count=jnp.asarray(count, dtype=jnp.int32),
        fields={name: jnp.asarray(values) for name, values in fields.items()},
    )


def sample_batch(
    data: TrainingArrays,
    key: PRNGKeyArray,
    batch_size: int,
    labeled_batch_size: int,
    *,
    augment: AugmentConfig | None = None,
    with_view: bool = False,
) -> Batch:
    """Draw ``batch_size − L`` rows from all training data (labels hidden) and ``L`` labeled.

    With ``augment.apply_to_inputs`` the inputs themselves are augmented; ``with_view`` adds
    an independently augmented view of each row; every prepared field is gathered by row.
    """
    unlabeled_key, labeled_key, input_key, view_key, spare_key = jax.random.split(key, 5)
    num_unlabeled = batch_size - labeled_batch_size
    rows = jax.random.randint(unlabeled_key, (num_unlabeled,), 0, data.x.shape[0])
    labels = jnp.full((num_unlabeled,), -1, dtype=jnp.int32)
    if labeled_batch_size:
        chosen = jax.random.randint(labeled_key, (labeled_batch_size,), 0, data.labeled_count)
        # With no label yet (a label-free run) the labeled slots draw unlabeled rows too.
        spare = jax.random.randint(spare_key, (labeled_batch_size,), 0, data.x.shape[0])
        have = data.labeled_count > 0
        rows = jnp.concatenate([rows, jnp.where(have, data.labeled_index[chosen], spare)])
        labels = jnp.concatenate([labels, jnp.where(have, data.labeled_y[chosen], -1)])
    original = data.x[rows]
    x = original
    if augment is not None and augment.apply_to_inputs and augment.enabled:
        x = augment_batch(original, input_key, augment)
    x_view = None
    if with_view:
        x_view = augment_batch(original, view_key, augment) if augment is not None else original
    fields = {name: values[rows] for name, values in data.fields.items()}
    return Batch(x=x, labels=labels, rows=rows, x_view=x_view, fields=fields)
