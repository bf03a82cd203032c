"""The training loop: chunks of compiled steps, metrics to the host once per chunk, sinks.

Each step is one compiled call that draws its batch on the device and takes one optimiser
step (or, with ``train.fuse_steps``, a whole chunk is one ``lax.scan``). With the data on
the host (``HostTrainingArrays``) the step takes a batch that ``HostBatches`` drew from the
same key stream and gathered there, so the batches, and the steps, are the same. After every
``train.log_every`` steps the chunk's mean metrics reach the host and go to each metric
sink — a callable ``sink(step, metrics)``: the run directory's JSON-lines log, the
progress bar, a tracker.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.config import Config
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.model import SSVAE
from ssvae_core.modelling.objective import Objective
from ssvae_core.training.batches import (
    DrawnRows,
    HostBatches,
    HostTrainingArrays,
    TrainingArrays,
    draw_rows,
    finish_batch,
)
from ssvae_core.training.step import StepSpec, TrainState, learning_rate, make_optimizer, train_step

Metrics = dict[str, Float[Array, ""]]


class MetricSink(Protocol):
    """Receives each chunk's mean metrics as host floats, with the step reached."""

    def __call__(self, step: int, metrics: dict[str, float]) -> None: ...


class JsonLinesSink:
    """Appends one JSON object per chunk (``{"step": ..., **metrics}``) to a file."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False):
        self._file = open(path, "a" if append else "w", encoding="utf-8")

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _step_on(
    spec: StepSpec,
    drawn: Callable[[PRNGKeyArray], DrawnRows],
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    train_x: Float[Array, "N ..."] | None,
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    """Split ``state.key``, take the batch ``drawn(batch_key)``, then one train step."""
    next_key, batch_key, step_key = jax.random.split(state.key, 3)
    state = dataclasses.replace(state, key=next_key)
    batch = finish_batch(drawn(batch_key), batch_key, augment=spec.augment, with_view=spec.objective.uses_view)
    if spec.batch_sharding is not None:  # each device takes its share of the rows
        batch = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, spec.batch_sharding), batch)
    return train_step(model, state, opt_state, batch, step_key, spec=spec, train_x=train_x)


def _sampled_step(
    data: TrainingArrays, spec: StepSpec, model: SSVAE, state: TrainState, opt_state: optax.OptState
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    """Draw a batch on the device from ``state.key``, then take one train step."""

    def drawn(batch_key: PRNGKeyArray) -> DrawnRows:
        rows, labels = draw_rows(
            batch_key, data.x.shape[0], data.labeled_index, data.labeled_y, data.labeled_count,
            spec.batch_size, spec.labeled_batch_size,
        )
        fields = {name: values[rows] for name, values in data.fields.items()}
        return DrawnRows(x=data.x[rows], rows=rows, labels=labels, fields=fields)

    return _step_on(spec, drawn, model, state, opt_state, data.x)


def _given_step(
    drawn: DrawnRows, spec: StepSpec, model: SSVAE, state: TrainState, opt_state: optax.OptState
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    """One train step on a batch drawn on the host (``HostBatches``) from ``state.key``."""
    return _step_on(spec, lambda _: drawn, model, state, opt_state, None)


@eqx.filter_jit(donate="all-except-first")
def _one_step(
    inputs: tuple[TrainingArrays, StepSpec],
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    return _sampled_step(*inputs, model, state, opt_state)


@eqx.filter_jit(donate="all-except-first")
def _one_given_step(
    spec: StepSpec,
    drawn: DrawnRows,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    return _given_step(drawn, spec, model, state, opt_state)


@eqx.filter_jit(donate="all-except-first")
def _scanned_steps(
    inputs: tuple[TrainingArrays | None, StepSpec],
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    num_steps: int,
    given: DrawnRows | None = None,
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    """``num_steps`` steps in one ``lax.scan``: each draws its batch from ``inputs``'
    device data, or takes the next of ``given`` (batches stacked on a leading axis)."""
    data, spec = inputs
    params, static = eqx.partition(model, eqx.is_array)

    def body(carry: Any, drawn: DrawnRows | None) -> tuple[Any, Metrics]:
        params, state, opt_state = carry
        model = eqx.combine(params, static)
        if drawn is None:
            model, state, opt_state, metrics = _sampled_step(data, spec, model, state, opt_state)
        else:
            model, state, opt_state, metrics = _given_step(drawn, spec, model, state, opt_state)
        return (eqx.filter(model, eqx.is_array), state, opt_state), metrics

    (params, state, opt_state), metrics = jax.lax.scan(
        body, (params, state, opt_state), given, length=num_steps
    )
    return eqx.combine(params, static), state, opt_state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def take_steps(
    data: TrainingArrays | Iterator[DrawnRows],
    spec: StepSpec,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    num_steps: int,
    *,
    fused: bool,
) -> tuple[SSVAE, TrainState, optax.OptState, Metrics]:
    """``num_steps`` steps; metrics are their means, still on the device.

    ``data`` is the training data on the device, or the batches of host data
    (``HostBatches``), one per step. ``fused`` compiles the whole chunk into one
    ``lax.scan`` (over the chunk's batches, stacked). Otherwise each step is its own
    compiled call and no value reaches the host until the chunk ends: on XLA's CPU backend
    convolutions inside a loop body run far slower than in a plain call, so this is the
    default there.
    """
    on_device = isinstance(data, TrainingArrays)
    if fused:
        if on_device:
            return _scanned_steps((data, spec), model, state, opt_state, num_steps)
        batches = [next(data) for _ in range(num_steps)]
        given = jax.tree.map(lambda *parts: jnp.stack(parts), *batches)
        return _scanned_steps((None, spec), model, state, opt_state, num_steps, given)
    history = []
    for _ in range(num_steps):
        if on_device:
            model, state, opt_state, metrics = _one_step((data, spec), model, state, opt_state)
        else:
            model, state, opt_state, metrics = _one_given_step(spec, next(data), model, state, opt_state)
        history.append(metrics)
    mean = jax.tree.map(lambda *values: jnp.mean(jnp.stack(values)), *history)
    return model, state, opt_state, mean


DATA_AXIS = "data"


def data_mesh(devices: int, batch_size: int) -> Mesh | None:
    """The 1-D mesh of data-parallel training over ``devices`` local devices (0: all of
    them); ``None`` for one device in one process. With several processes
    (``ssvae_core.training.distributed``) the mesh takes that many devices of every process, in
    process order. A batch that does not split evenly is a ConfigError."""
    available = jax.local_devices()
    count = len(available) if devices == 0 else devices
    if count > len(available):
        raise ConfigError(
            f"train.devices = {devices}, but this process sees {len(available)} device(s) "
            f"({available[0].platform}); use at most {len(available)}, or 0 for all"
        )
    processes = jax.process_count()
    if processes == 1:
        if count <= 1:
            return None
        chosen = list(available[:count])
    else:
        chosen = _devices_of_every_process(count, processes)
    if batch_size % len(chosen):
        spread = f" ({processes} processes × {count})" if processes > 1 else ""
        raise ConfigError(
            f"train.batch_size = {batch_size} does not split evenly over {len(chosen)} "
            f"devices{spread}; use a multiple of {len(chosen)} or set train.devices"
        )
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def _devices_of_every_process(count: int, processes: int) -> list[jax.Device]:
    """``count`` devices of each process, the same list in every process."""
    by_process: dict[int, list[jax.Device]] = {}
    for device in jax.devices():
        by_process.setdefault(int(device.process_index), []).append(device)
    short = {p: len(d) for p, d in by_process.items() if len(d) < count}
    if len(by_process) != processes or short:
        raise ConfigError(
            f"train.devices = {count} per process, but the processes see "
            f"{', '.join(f'{p}: {len(d)}' for p, d in sorted(by_process.items()))} device(s); "
            "give each process the same devices, or set train.devices"
        )
    return [
        device
        for process in sorted(by_process)
        for device in sorted(by_process[process], key=lambda d: d.id)[:count]
    ]


def _check_host_objective(objective: Objective) -> None:
    """A ConfigError for a loss term that reads all training inputs in each step (the
    neighbour term), which training from host data does not give it."""
    from ssvae_core.modelling.terms.builtin import NeighbourTerm

    for name, term in objective.named_terms():
        if isinstance(term, NeighbourTerm):
            raise ConfigError(
                f"loss term {name!r} reads every training input in each step, so it needs the "
                "training data on the device; set train.data_on_device = \"on\" or turn the term off"
            )


@dataclasses.dataclass
class Trainer:
    """Drives training for a config: the step spec (objective, learning rate, optimiser)."""

    config: Config
    spec: StepSpec

    mesh: Mesh | None = None

    @classmethod
    def for_model(cls, config: Config, model: SSVAE, objective: Objective) -> Trainer:
        mesh = data_mesh(config.train.devices, config.train.batch_size)
        spec = StepSpec(
            objective=objective,
            learning_rate=learning_rate(config.train),
            optimizer=make_optimizer(config.train, model),
            augment=config.augment,
            batch_size=config.train.batch_size,
            labeled_batch_size=config.labeled_batch_size,
            batch_sharding=None if mesh is None else NamedSharding(mesh, PartitionSpec(DATA_AXIS)),
        )
        return cls(config=config, spec=spec, mesh=mesh)

    def replicate(self, tree: Any) -> Any:
        """``tree``'s arrays on every device of the mesh (unchanged on one device).

        With several processes each process contributes its own copy, which must be the
        same everywhere (the same seed, data and checkpoint give it)."""
        if self.mesh is None:
            return tree
        replicated = NamedSharding(self.mesh, PartitionSpec())
        if replicated.is_fully_addressable:
            return jax.tree.map(
                lambda leaf: jax.device_put(leaf, replicated) if eqx.is_array(leaf) else leaf, tree
            )

        def spread(leaf: Any) -> Any:
            if not eqx.is_array(leaf) or leaf.sharding == replicated:
                return leaf
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, replicated, lambda index: host[index])

        return jax.tree.map(spread, tree)

    def localize(self, tree: Any) -> Any:
        """``tree``'s arrays as this process's own copy, on its first device of the mesh
        (unchanged in one process): what is computed from them then is this process's
        alone — an evaluation, a checkpoint — and asks nothing of the others."""
        if self.mesh is None or jax.process_count() == 1:
            return tree

        def local(leaf: Any) -> Any:
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                return leaf.addressable_data(0)
            return leaf

        return jax.tree.map(local, tree)

    def init_opt_state(self, model: SSVAE) -> optax.OptState:
        return self.spec.optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    def train(
        self,
        data: TrainingArrays | HostTrainingArrays,
        model: SSVAE,
        state: TrainState,
        opt_state: optax.OptState,
        *,
        until_step: int | None = None,
        sinks: Sequence[MetricSink] = (),
        on_chunk: Callable[[SSVAE, TrainState, optax.OptState], None] | None = None,
        extra_metrics: Callable[[SSVAE, TrainState, int, dict[str, float]], dict[str, float]] | None = None,
    ) -> tuple[SSVAE, TrainState, optax.OptState]:
        """Train from ``state.step`` to ``until_step`` (default: ``train.steps``).

        Each sink receives the chunk means as host floats (plus ``seconds``, the chunk's
        wall time) after each chunk of ``train.log_every`` steps, with whatever
        ``extra_metrics(model, state, step, metrics)`` adds (a held-out evaluation, say); then
        ``on_chunk(model, state, opt_state)`` sees the training state reached (to
        checkpoint it).
        """
        until_step = self.config.train.steps if until_step is None else until_step
        step = int(state.step)
        batches: HostBatches | None = None
        if isinstance(data, HostTrainingArrays):
            _check_host_objective(self.spec.objective)
            batches = HostBatches(
                data, state.key, max(until_step - step, 0), self.spec.batch_size,
                self.spec.labeled_batch_size, sharding=self.spec.batch_sharding,
            )
            model, state, opt_state = self.replicate((model, state, opt_state))
        else:
            data, model, state, opt_state = self.replicate((data, model, state, opt_state))
        source = data if batches is None else iter(batches)
        chunk = self.config.train.log_every
        fused = self.config.train.fuse_steps
        try:
            while step < until_step:
                num_steps = min(chunk, until_step - step)
                started = time.perf_counter()
                model, state, opt_state, metrics = take_steps(
                    source, self.spec, model, state, opt_state, num_steps, fused=fused
                )
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                step += num_steps
                host["seconds"] = time.perf_counter() - started
                if not all(math.isfinite(v) for v in host.values()):
                    raise FloatingPointError(f"training diverged at step {step}: {host}")
                self._after_chunk(model, state, opt_state, step, host, sinks, on_chunk, extra_metrics)
        finally:
            if batches is not None:
                batches.close()
        return self.localize((model, state, opt_state))

    def _after_chunk(
        self,
        model: SSVAE,
        state: TrainState,
        opt_state: optax.OptState,
        step: int,
        host: dict[str, float],
        sinks: Sequence[MetricSink],
        on_chunk: Callable[[SSVAE, TrainState, optax.OptState], None] | None,
        extra_metrics: Callable[[SSVAE, TrainState, int, dict[str, float]], dict[str, float]] | None,
    ) -> None:
        """The chunk's metrics to the sinks, then ``on_chunk``. With several processes
        they see this process's copy of the state, and every process learns whether the
        others got through (a process whose sink failed stops all of them here, rather
        than leave them waiting for it in the next step)."""
        several = self.mesh is not None and jax.process_count() > 1
        local_model, local_state, local_opt = self.localize((model, state, opt_state))
        failure: BaseException | None = None
        try:
            if extra_metrics is not None:
                host.update(extra_metrics(local_model, local_state, step, dict(host)))
            for sink in sinks:
                sink(step, host)
            if on_chunk is not None:
                on_chunk(local_model, local_state, local_opt)
        except Exception as error:
            if not several:
                raise
            failure = error
        if several:
            from ssvae_core.training.distributed import PeerStopped, all_agree

            if not all_agree(failure is None):
                if failure is not None:
                    raise failure
                raise PeerStopped(f"another process stopped at step {step}; see its error")
