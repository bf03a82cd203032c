"""The training data, and batches drawn from it.

Small data lives on the device (``TrainingArrays``) and each compiled step draws its own
batch there. Data above ``DEVICE_BYTES`` (or with ``train.data_on_device = "off"``) stays
on the host (``HostTrainingArrays``, possibly a memory-mapped array): ``HostBatches``
draws each batch's rows from the same seeded stream as the device path, gathers them there
and puts them on the device a few batches ahead, so both paths train on the same batches.

The labeled pool has a fixed capacity (one slot per training row) and a count, so adding
labels changes values, never shapes: a compiled step serves every labeling of the same
data. Loss terms' host-side preparations (propagated labels, neighbour indices) live here
as per-row arrays and are gathered into each batch by row.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.data.augment import AugmentConfig, augment_batch
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.objective import Objective
from ssvae_core.modelling.terms.base import prepared_fields
from ssvae_core.modelling.types import Batch


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


DEVICE_BYTES = 512 * 2**20
"""Training inputs up to this many bytes (as float32) go to the device whole under
``train.data_on_device = "auto"``."""


def data_fits_device(x: np.ndarray, setting: str = "auto") -> bool:
    """Whether training keeps ``x`` on the device: ``"on"``, ``"off"``, or ``"auto"``
    (at most ``DEVICE_BYTES`` as float32)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"data_on_device must be 'auto', 'on' or 'off', got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return math.prod(x.shape) * 4 <= DEVICE_BYTES


@dataclasses.dataclass(frozen=True)
class HostTrainingArrays:
    """The training data on the host: as ``TrainingArrays``, but numpy arrays.

    ``x`` is used as given (a memory-mapped array stays one); only the rows of each batch
    are read from it, by ``HostBatches``.
    """

    x: np.ndarray
    labeled_index: np.ndarray
    labeled_y: np.ndarray
    labeled_count: int
    fields: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def training_arrays(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    objective: Objective | None = None,
    num_classes: int | None = None,
    balance_labels: bool = False,
    on_device: bool = True,
) -> TrainingArrays | HostTrainingArrays:
    """Prepare every loss term of ``objective`` on the host, then move the data to the
    device (``TrainingArrays``), or with ``on_device`` off leave it on the host
    (``HostTrainingArrays``; see ``data_fits_device``).

    ``labels`` holds one label per row of ``x``, ``-1`` where unlabeled; ``balance_labels``
    balances the labeled pool over classes (``labeled_pool``).
    """
    labels = np.asarray(labels)
    classes = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
    fields: dict[str, np.ndarray] = {}
    for name, term in objective.named_terms() if objective is not None else ():
        try:
            prepared = prepared_fields(term, x, labels, classes)
        except ValueError as error:  # options the data cannot take (e.g. deskewing colour images)
            raise ConfigError(f"loss.{name}: {error}") from None
        for field, values in prepared.items():
            if field in fields:
                raise ValueError(f"loss term {name!r} prepares {field!r}, which another term prepared")
            if np.shape(values)[:1] != (x.shape[0],):
                raise ValueError(
                    f"loss term {name!r} prepared {field!r} with shape {np.shape(values)}; "
                    f"per-row arrays need a leading axis of {x.shape[0]}"
                )
            fields[field] = values
    index, y, count = labeled_pool(labels, balance=balance_labels)
    if not on_device:
        host_fields = {name: np.asarray(values) for name, values in fields.items()}
        return HostTrainingArrays(x=x, labeled_index=index, labeled_y=y, labeled_count=count, fields=host_fields)
    return TrainingArrays(
        x=jnp.asarray(x, dtype=jnp.float32),
        labeled_index=jnp.asarray(index),
        labeled_y=jnp.asarray(y),
        labeled_count=jnp.asarray(count, dtype=jnp.int32),
        fields={name: jnp.asarray(values) for name, values in fields.items()},
    )


class DrawnRows(eqx.Module):
    """One batch's rows of the training data, gathered: what ``finish_batch`` needs."""

    x: Float[Array, "B ..."]
    rows: Int[Array, " B"]
    labels: Int[Array, " B"]
    fields: dict[str, Array]


def draw_rows(
    key: PRNGKeyArray,
    num_rows: int,
    labeled_index: Int[Array, " N"],
    labeled_y: Int[Array, " N"],
    labeled_count: Int[Array, ""],
    batch_size: int,
    labeled_batch_size: int,
) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
    """``(rows, labels)``: ``batch_size − L`` rows of all ``num_rows`` (labels hidden),
    then ``L`` of the labeled pool, drawn from ``key`` (a batch key: see ``sample_batch``)."""
    unlabeled_key, labeled_key, _, _, spare_key = jax.random.split(key, 5)
    num_unlabeled = batch_size - labeled_batch_size
    rows = jax.random.randint(unlabeled_key, (num_unlabeled,), 0, num_rows)
    labels = jnp.full((num_unlabeled,), -1, dtype=jnp.int32)
    if labeled_batch_size:
        chosen = jax.random.randint(labeled_key, (labeled_batch_size,), 0, labeled_count)
        # With no label yet (a label-free run) the labeled slots draw unlabeled rows too.
        spare = jax.random.randint(spare_key, (labeled_batch_size,), 0, num_rows)
        have = labeled_count > 0
        rows = jnp.concatenate([rows, jnp.where(have, labeled_index[chosen], spare)])
        labels = jnp.concatenate([labels, jnp.where(have, labeled_y[chosen], -1)])
    return rows, labels


def finish_batch(
    drawn: DrawnRows,
    key: PRNGKeyArray,
    *,
    augment: AugmentConfig | None = None,
    with_view: bool = False,
) -> Batch:
    """The batch of ``drawn`` rows, augmented from ``key`` (the batch key they were drawn
    from). With ``augment.apply_to_inputs`` the inputs themselves are augmented;
    ``with_view`` adds an independently augmented view of each row."""
    _, _, input_key, view_key, _ = jax.random.split(key, 5)
    original = drawn.x
    x = original
    if augment is not None and augment.apply_to_inputs and augment.enabled:
        x = augment_batch(original, input_key, augment)
    x_view = None
    if with_view:
        x_view = augment_batch(original, view_key, augment) if augment is not None else original
    return Batch(x=x, labels=drawn.labels, rows=drawn.rows, x_view=x_view, fields=drawn.fields)


def sample_batch(
    data: TrainingArrays,
    key: PRNGKeyArray,
    batch_size: int,
    labeled_batch_size: int,
    *,
    augment: AugmentConfig | None = None,
    with_view: bool = False,
) -> Batch:
    """Draw ``batch_size − L`` rows from all training data (labels hidden) and ``L`` labeled
    (``draw_rows``), gather them and every prepared field by row (``finish_batch``)."""
    rows, labels = draw_rows(
        key, data.x.shape[0], data.labeled_index, data.labeled_y, data.labeled_count,
        batch_size, labeled_batch_size,
    )
    fields = {name: values[rows] for name, values in data.fields.items()}
    drawn = DrawnRows(x=data.x[rows], rows=rows, labels=labels, fields=fields)
    return finish_batch(drawn, key, augment=augment, with_view=with_view)


@functools.partial(jax.jit, static_argnums=(1, 5, 6))
def _next_rows(
    key: PRNGKeyArray,
    num_rows: int,
    labeled_index: Int[Array, " N"],
    labeled_y: Int[Array, " N"],
    labeled_count: Int[Array, ""],
    batch_size: int,
    labeled_batch_size: int,
) -> tuple[PRNGKeyArray, Int[Array, " B"], Int[Array, " B"]]:
    """The step's key split as a training step splits it, and the batch it draws."""
    next_key, batch_key, _ = jax.random.split(key, 3)
    rows, labels = draw_rows(
        batch_key, num_rows, labeled_index, labeled_y, labeled_count, batch_size, labeled_batch_size
    )
    return next_key, rows, labels


class HostBatches:
    """The batches of ``num_steps`` steps from host data, gathered ahead by a thread.

    Each step's rows are drawn on the CPU from the key stream a training step follows
    (``key``, then the first of ``split(key, 3)``), so the batches are the device path's.
    The thread gathers them from ``data`` (a memory-mapped array reads only those rows)
    and puts them on the device, ``PREFETCH`` batches ahead. With ``sharding`` each batch
    is split over its devices; with several processes each process gathers only the rows
    of its own devices' part.
    """

    PREFETCH = 2

    def __init__(
        self,
        data: HostTrainingArrays,
        key: PRNGKeyArray,
        num_steps: int,
        batch_size: int,
        labeled_batch_size: int,
        *,
        sharding: Any = None,
    ):
        self._data = data
        self._num_steps = num_steps
        self._sizes = (batch_size, labeled_batch_size)
        self._sharding = sharding
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self.PREFETCH)
        self._stop = threading.Event()
        cpu = jax.local_devices(backend="cpu")[0]
        self._pool = jax.device_put(
            (
                np.asarray(jax.device_get(key)),
                np.asarray(data.labeled_index, dtype=np.int32),
                np.asarray(data.labeled_y, dtype=np.int32),
                np.asarray(data.labeled_count, dtype=np.int32),
            ),
            cpu,
        )
        self._thread = threading.Thread(target=self._fill, name="host-batches", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        key, index, y, count = self._pool
        try:
            for _ in range(self._num_steps):
                key, rows, labels = _next_rows(key, self._data.x.shape[0], index, y, count, *self._sizes)
                drawn = self._gather(np.asarray(rows), np.asarray(labels))
                while not self._stop.is_set():
                    try:
                        self._queue.put(("batch", drawn), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:
            if not self._stop.is_set():  # else nobody reads the queue any more
                self._queue.put(("error", error))

    def _gather(self, rows: np.ndarray, labels: np.ndarray) -> DrawnRows:
        host, sharding = self._data, self._sharding
        local = sharding is None or sharding.is_fully_addressable

        def take(gather: Callable[[slice], np.ndarray]) -> Any:
            if local:
                return gather(slice(None))
            # Called only for this process's shards: it reads only their rows.
            shape = (rows.shape[0], *gather(slice(0, 0)).shape[1:])
            return jax.make_array_from_callback(shape, sharding, lambda index: gather(index[0]))

        drawn = DrawnRows(
            x=take(lambda part: np.asarray(host.x[rows[part]], dtype=np.float32)),
            rows=take(lambda part: rows[part]),
            labels=take(lambda part: labels[part]),
            fields={
                name: take(functools.partial(_gather_field, values, rows))
                for name, values in host.fields.items()
            },
        )
        return jax.device_put(drawn, sharding) if local else drawn

    def __iter__(self) -> Iterator[DrawnRows]:
        for _ in range(self._num_steps):
            kind, value = self._queue.get()
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        """Stop the thread (after at most one more batch) and wait for it."""
        self._stop.set()
        self._thread.join()


def _gather_field(values: np.ndarray, rows: np.ndarray, part: slice) -> np.ndarray:
    return values[rows[part]]
