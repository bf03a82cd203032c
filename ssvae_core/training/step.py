"""The pure train step: training state, optimiser, and one optimiser step.

``train_step(model, state, opt_state, batch, key, *, spec)`` is a pure function. Every
number that may change between runs of one model — loss weights and their schedules, the
learning rate — is a traced leaf of ``StepSpec``; its static part (the optimiser's
structure, augmentation, batch sizes) changes only with the model's structure, so the step
is compiled once per model structure.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import equinox as eqx
import jax
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.config import TrainConfig
from ssvae_core.data.augment import AugmentConfig
from ssvae_core.modelling.model import SSVAE
from ssvae_core.modelling.objective import Objective
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.types import Batch


class TrainState(eqx.Module):
    """Everything besides parameters and optimiser state that training carries between steps.

    ``head_state`` holds the head's statistics (τ's soft counts); ``key`` the RNG key the
    next step splits.
    """

    step: Int[Array, ""]
    key: PRNGKeyArray
    head_state: PyTree[Any]


def init_state(model: SSVAE, key: PRNGKeyArray) -> TrainState:
    """Step 0 and the head's initial state."""
    return TrainState(step=jax.numpy.asarray(0, dtype=jax.numpy.int32), key=key, head_state=model.head.init_state())


def _labels(params: SSVAE, scales: tuple[tuple[str, float], ...]) -> PyTree[str]:
    """``"default"`` for every parameter, ``"scale=s"`` for each prior field with a scale."""
    labels = jax.tree.map(lambda _: "default", params)
    for field, scale in scales:
        labels = eqx.tree_at(
            functools.partial(_prior_field, field=field),
            labels,
            replace_fn=functools.partial(_relabel, label=f"scale={scale!r}"),
        )
    return labels


def _prior_field(tree: SSVAE, field: str) -> PyTree[Any]:
    return getattr(tree.prior, field)


def _relabel(subtree: PyTree[Any], label: str) -> PyTree[str]:
    return jax.tree.map(lambda _: label, subtree)


@functools.cache
def _optimizer(
    name: str, grad_clip: float, weight_decay: float, scales: tuple[tuple[str, float], ...]
) -> optax.GradientTransformation:
    direction = optax.scale_by_adam()
    if name == "adamw":
        direction = optax.chain(direction, optax.add_decayed_weights(weight_decay))
    transforms: dict[str, optax.GradientTransformation] = {"default": direction}
    for _, scale in scales:
        label = f"scale={scale!r}"
        transforms[label] = optax.set_to_zero() if scale == 0.0 else optax.chain(direction, optax.scale(scale))
    labels = functools.partial(_labels, scales=scales)
    chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    return optax.chain(*chain, optax.multi_transform(transforms, labels))


def make_optimizer(config: TrainConfig, model: SSVAE) -> optax.GradientTransformation:
    """Clip by global norm, then the Adam/AdamW direction; prior fields get their declared
    scale (``optax.set_to_zero`` for a scale of 0, so a frozen field gets exactly zero update).

    The learning rate is not part of it: ``train_step`` multiplies the direction by
    ``−lr(t)`` from a traced ``Schedule``. The transformation is
    built once per (optimiser, clip, decay, prior scales) and reused, so the compiled step
    that it keys is reused too.
    """
    scales = tuple(sorted(model.prior.parameter_scales().items()))
    return _optimizer(config.optimizer, config.grad_clip, config.weight_decay, scales)


def learning_rate(config: TrainConfig) -> Schedule:
    """``lr`` constant, or ``lr · ½(1 + cos(π t / T))`` over ``T = train.steps``."""
    decay = config.steps if config.lr_schedule == "cosine" else 0
    return Schedule(config.learning_rate, decay_steps=decay)


class StepSpec(eqx.Module):
    """What a step needs besides model, state and data: traced numbers, static structure."""

    objective: Objective
    learning_rate: Schedule
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    augment: AugmentConfig = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    labeled_batch_size: int = eqx.field(static=True)
    # data-parallel training: how each batch is split across the devices (None: one device)
    batch_sharding: Any = eqx.field(static=True, default=None)


def step_gradients(
    model: SSVAE,
    state: TrainState,
    batch: Batch,
    key: PRNGKeyArray,
    *,
    spec: StepSpec,
    train_x: Float[Array, "N ..."] | None = None,
) -> tuple[SSVAE, dict[str, Float[Array, ""]], Any]:
    """The objective's gradient for one batch: ``(gradients, metrics, posterior)``."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(params: SSVAE) -> tuple[Float[Array, ""], Any]:
        return spec.objective(
            eqx.combine(params, static), state.head_state, batch, state.step, key, train_x=train_x
        )

    (_, (metrics, posterior)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, metrics, posterior


def apply_gradients(
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    grads: SSVAE,
    posterior: Any,
    batch: Batch,
    *,
    spec: StepSpec,
) -> tuple[SSVAE, TrainState, optax.OptState]:
    """The optimiser's update scaled by ``−lr(t)``, then the head state from ``posterior``."""
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = spec.optimizer.update(grads, opt_state, params)
    rate = spec.learning_rate(state.step)
    updates = jax.tree.map(lambda update: -rate * update, updates)
    model = eqx.apply_updates(model, updates)
    head_state = model.head.update_state(state.head_state, posterior, batch.labels)
    state = dataclasses.replace(state, step=state.step + 1, head_state=head_state)
    return model, state, opt_state


def train_step(
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    batch: Batch,
    key: PRNGKeyArray,
    *,
    spec: StepSpec,
    train_x: Float[Array, "N ..."] | None = None,
) -> tuple[SSVAE, TrainState, optax.OptState, dict[str, Float[Array, ""]]]:
    """One optimiser step; the head state updates from this batch's stop-gradient posterior."""
    grads, metrics, posterior = step_gradients(
        model, state, batch, key, spec=spec, train_x=train_x
    )
    model, state, opt_state = apply_gradients(
        model, state, opt_state, grads, posterior, batch, spec=spec
    )
    return model, state, opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}
