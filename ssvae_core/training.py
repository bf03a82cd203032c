"""Training state, optimiser, the pure train step, and the loop that drives it.

The step is one pure function ``(model, state, opt_state, batch, key) -> (model, state,
opt_state, metrics)``. The loop samples each batch on the device from the training arrays
and brings metrics to the host only once every ``log_every`` steps; each step is one
compiled call, or with ``train.fuse_steps`` a whole chunk is one ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.augment import AugmentConfig, augment_batch
from ssvae_core.config import Config, LossConfig, TrainConfig
from ssvae_core.model import SSVAE
from ssvae_core.neighbours import nearest_neighbours
from ssvae_core.objective import objective
from ssvae_core.types import Batch

USAGE_EMA_DECAY = 0.99


class TrainState(eqx.Module):
    """Everything besides parameters and optimiser state that a run carries between steps.

    ``head_state`` holds the τ soft counts; ``usage`` an EMA of the batch-mean
    responsibilities ``p̂``; ``key`` the RNG key the next step splits.
    """

    step: Int[Array, ""]
    key: PRNGKeyArray
    head_state: PyTree[Any]
    usage: Float[Array, " K"]


def init_state(model: SSVAE, key: PRNGKeyArray) -> TrainState:
    """Step 0, zero counts, uniform usage."""
    components = model.num_components
    usage = jnp.full((components,), 1.0 / components, dtype=jnp.float32) if components else jnp.zeros((0,), dtype=jnp.float32)
    return TrainState(
        step=jnp.asarray(0, dtype=jnp.int32),
        key=key,
        head_state=model.head.init_state(),
        usage=usage,
    )


class TrainingArrays(eqx.Module):
    """The training data on the device.

    ``x`` holds every training input; ``labeled_index`` / ``labeled_y`` the labeled pool (rows
    of ``x`` and their labels); ``neighbours`` the indices of each row's nearest neighbours
    when the neighbour term is on; ``graph_labels`` each row's propagated label (``-1`` =
    none) when the graph-label term is on.
    """

    x: Float[Array, "N ..."]
    labeled_index: Int[Array, " M"]
    labeled_y: Int[Array, " M"]
    neighbours: Int[Array, "N k"] | None = None
    graph_labels: Int[Array, " N"] | None = None


def _parameter_labels(model: SSVAE) -> PyTree[str]:
    params = eqx.filter(model, eqx.is_inexact_array)
    labels = jax.tree.map(lambda _: "default", params)
    for field, scale in model.prior.parameter_scales().items():
        labels = eqx.tree_at(
            partial(_prior_field, field=field),
            labels,
            replace_fn=partial(_relabel, label=f"scale={scale!r}"),
        )
    return labels


def _prior_field(tree: SSVAE, field: str) -> PyTree[Any]:
    return getattr(tree.prior, field)


def _relabel(subtree: PyTree[Any], label: str) -> PyTree[str]:
    return jax.tree.map(lambda _: label, subtree)


def make_optimizer(config: TrainConfig, model: SSVAE) -> optax.GradientTransformation:
    """Clip by global norm, then Adam/AdamW; prior fields get their declared LR scale.

    ``lr_schedule = "cosine"`` follows ``lr · ½(1 + cos(π t / T))`` over ``T = train.steps``.

    A scale of 0 uses ``optax.set_to_zero`` so a frozen field (a fixed π) gets exactly
    zero update; other scales multiply the Adam update (a learning-rate scale).
    """
    learning_rate: float | optax.Schedule = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    if config.optimizer == "adamw":
        base = optax.adamw(learning_rate, weight_decay=config.weight_decay)
    else:
        base = optax.adam(learning_rate)
    transforms: dict[str, optax.GradientTransformation] = {"default": base}
    for scale in model.prior.parameter_scales().values():
        label = f"scale={scale!r}"
        transforms[label] = optax.set_to_zero() if scale == 0.0 else optax.chain(base, optax.scale(scale))
    labels = _parameter_labels(model)
    chain = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
    return optax.chain(*chain, optax.multi_transform(transforms, labels))


def train_step(
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    batch: Batch,
    key: PRNGKeyArray,
    *,
    optimizer: optax.GradientTransformation,
    loss_config: LossConfig,
) -> tuple[SSVAE, TrainState, optax.OptState, dict[str, Float[Array, ""]]]:
    """One optimiser step; the τ counts update from this batch's stop-gradient posterior."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(params: SSVAE) -> tuple[Float[Array, ""], Any]:
        return objective(
            eqx.combine(params, static),
            state.head_state,
            batch.x,
            batch.labels,
            state.step,
            key,
            loss_config,
            x_view=batch.x_view,
            x_neighbour=batch.x_neighbour,
            graph_labels=batch.graph_labels,
        )

    (_, (metrics, posterior)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    head_state = model.head.update_state(state.head_state, posterior, batch.labels)
    usage = state.usage
    if posterior.logits is not None:
        batch_usage = jnp.mean(jax.lax.stop_gradient(posterior.responsibilities), axis=0)
        usage = USAGE_EMA_DECAY * usage + (1.0 - USAGE_EMA_DECAY) * batch_usage
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    state = dataclasses.replace(state, step=state.step + 1, head_state=head_state, usage=usage)
    return model, state, opt_state, metrics


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
    an independently augmented view of each row; ``data.neighbours`` adds a random one of
    each row's nearest neighbours; ``data.graph_labels`` the propagated labels of the rows
    drawn as unlabeled.
    """
    unlabeled_key, labeled_key, input_key, view_key, neighbour_key = jax.random.split(key, 5)
    num_unlabeled = batch_size - labeled_batch_size
    rows = jax.random.randint(unlabeled_key, (num_unlabeled,), 0, data.x.shape[0])
    labels = jnp.full((num_unlabeled,), -1, dtype=jnp.int32)
    if labeled_batch_size:
        chosen = jax.random.randint(labeled_key, (labeled_batch_size,), 0, data.labeled_y.shape[0])
        rows = jnp.concatenate([rows, data.labeled_index[chosen]])
        labels = jnp.concatenate([labels, data.labeled_y[chosen]])
    original = data.x[rows]
    x = original
    if augment is not None and augment.apply_to_inputs and augment.enabled:
        x = augment_batch(original, input_key, augment)
    x_view = None
    if with_view:
        x_view = augment_batch(original, view_key, augment) if augment is not None else original
    x_neighbour = None
    if data.neighbours is not None:
        pick = jax.random.randint(neighbour_key, (batch_size,), 0, data.neighbours.shape[1])
        x_neighbour = data.x[data.neighbours[rows, pick]]
    graph_labels = None
    if data.graph_labels is not None:
        graph_labels = jnp.where(labels >= 0, -1, data.graph_labels[rows])
    return Batch(x=x, labels=labels, x_view=x_view, x_neighbour=x_neighbour, graph_labels=graph_labels)


@dataclasses.dataclass(frozen=True)
class StepSchedule:
    """Static settings of the compiled steps (hashable, so they key the compile cache)."""

    optimizer: optax.GradientTransformation
    loss_config: LossConfig
    augment: AugmentConfig
    batch_size: int
    labeled_batch_size: int


def _sampled_step(
    data: TrainingArrays,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    schedule: StepSchedule,
) -> tuple[SSVAE, TrainState, optax.OptState, dict[str, Float[Array, ""]]]:
    """Draw a batch on the device from ``state.key``, then take one train step."""
    next_key, batch_key, step_key = jax.random.split(state.key, 3)
    state = dataclasses.replace(state, key=next_key)
    batch = sample_batch(
        data,
        batch_key,
        schedule.batch_size,
        schedule.labeled_batch_size,
        augment=schedule.augment,
        with_view=schedule.loss_config.uses_view,
    )
    return train_step(
        model,
        state,
        opt_state,
        batch,
        step_key,
        optimizer=schedule.optimizer,
        loss_config=schedule.loss_config,
    )


@eqx.filter_jit(donate="all-except-first")
def _one_step(
    data: TrainingArrays,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    schedule: StepSchedule,
) -> tuple[SSVAE, TrainState, optax.OptState, dict[str, Float[Array, ""]]]:
    return _sampled_step(data, model, state, opt_state, schedule)


@eqx.filter_jit(donate="all-except-first")
def _scanned_steps(
    data: TrainingArrays,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    schedule: StepSchedule,
    num_steps: int,
) -> tuple[SSVAE, TrainState, optax.OptState, dict[str, Float[Array, ""]]]:
    params, static = eqx.partition(model, eqx.is_array)

    def body(carry: Any, _: None) -> tuple[Any, dict[str, Float[Array, ""]]]:
        params, state, opt_state = carry
        model, state, opt_state, metrics = _sampled_step(
            data, eqx.combine(params, static), state, opt_state, schedule
        )
        return (eqx.filter(model, eqx.is_array), state, opt_state), metrics

    (params, state, opt_state), metrics = jax.lax.scan(
        body, (params, state, opt_state), None, length=num_steps
    )
    return eqx.combine(params, static), state, opt_state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def run_chunk(
    data: TrainingArrays,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    schedule: StepSchedule,
    num_steps: int,
    *,
    fused: bool,
) -> tuple[SSVAE, TrainState, optax.OptState, dict[str, Float[Array, ""]]]:
    """``num_steps`` steps; metrics are the chunk means, still on the device.

    ``fused`` compiles the whole chunk into one ``lax.scan``. Otherwise each step is its own
    compiled call and no value reaches the host until the chunk ends: on XLA's CPU backend
    convolutions inside a loop body run far slower than in a plain call, so this is the
    default there.
    """
    if fused:
        return _scanned_steps(data, model, state, opt_state, schedule, num_steps)
    history = []
    for _ in range(num_steps):
        model, state, opt_state, metrics = _one_step(data, model, state, opt_state, schedule)
        history.append(metrics)
    mean = jax.tree.map(lambda *values: jnp.mean(jnp.stack(values)), *history)
    return model, state, opt_state, mean


@dataclasses.dataclass
class Trainer:
    """Drives training for a config: owns the optimiser and the step schedule."""

    config: Config
    optimizer: optax.GradientTransformation

    @classmethod
    def for_model(cls, config: Config, model: SSVAE) -> Trainer:
        return cls(config=config, optimizer=make_optimizer(config.train, model))

    def init_opt_state(self, model: SSVAE) -> optax.OptState:
        return self.optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    def run(
        self,
        data: TrainingArrays,
        model: SSVAE,
        state: TrainState,
        opt_state: optax.OptState,
        *,
        until_step: int | None = None,
        on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    ) -> tuple[SSVAE, TrainState, optax.OptState]:
        """Train from ``state.step`` to ``until_step`` (default: ``train.steps``).

        ``on_metrics(step, metrics)`` receives host floats (chunk means) after each chunk.
        """
        until_step = self.config.train.steps if until_step is None else until_step
        chunk = self.config.train.log_every
        schedule = StepSchedule(
            optimizer=self.optimizer,
            loss_config=self.config.loss,
            augment=self.config.augment,
            batch_size=self.config.train.batch_size,
            labeled_batch_size=self.config.labeled_batch_size,
        )
        fused = self.config.train.fuse_steps
        step = int(state.step)
        while step < until_step:
            num_steps = min(chunk, until_step - step)
            started = time.perf_counter()
            model, state, opt_state, metrics = run_chunk(
                data, model, state, opt_state, schedule, num_steps, fused=fused
            )
            host = {k: float(v) for k, v in jax.device_get(metrics).items()}
            step += num_steps
            host["seconds"] = time.perf_counter() - started
            if not all(math.isfinite(v) for v in host.values()):
                raise FloatingPointError(f"training diverged at step {step}: {host}")
            if on_metrics is not None:
                on_metrics(step, host)
        return model, state, opt_state


def training_arrays(
    x: np.ndarray,
    labeled_index: np.ndarray,
    labeled_y: np.ndarray,
    *,
    num_neighbours: int = 0,
    graph_labels: np.ndarray | None = None,
) -> TrainingArrays:
    """Move training inputs, the labeled pool and (optionally) the kNN graph and the
    propagated labels to the device."""
    neighbours = None
    if num_neighbours > 0:
        neighbours = jnp.asarray(nearest_neighbours(x, num_neighbours), dtype=jnp.int32)
    return TrainingArrays(
        x=jnp.asarray(x, dtype=jnp.float32),
        labeled_index=jnp.asarray(labeled_index, dtype=jnp.int32),
        labeled_y=jnp.asarray(labeled_y, dtype=jnp.int32),
        neighbours=neighbours,
        graph_labels=None if graph_labels is None else jnp.asarray(graph_labels, dtype=jnp.int32),
    )
