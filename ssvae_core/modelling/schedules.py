"""Schedules: a value as a function of the training step, held as traced arrays.

A ``Schedule`` is an optax-style schedule (``step -> value``) whose numbers are
leaves of the pytree, not constants of the compiled step: changing a loss weight, a
warm-up length or the learning rate changes values that the step reads, so the train step
is compiled once per model structure and never again for new numbers.

    w(t) = value · warm(t) · decay(t)
    warm(t)  = min(1, t / T_warm)                 (1 when T_warm = 0)
    decay(t) = ½ (1 + cos(π · min(t, T_decay) / T_decay))   (1 when T_decay = 0)

``warm`` is the linear KL warm-up (``β_z``) and the warm-up of any loss term; ``decay`` is
the cosine learning-rate schedule (it reaches 0 at ``T_decay``).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class Schedule(eqx.Module):
    """``w(t) = value · warm(t) · decay(t)``; every field is a float32 scalar array."""

    value: Float[Array, ""]
    warmup_steps: Float[Array, ""]
    decay_steps: Float[Array, ""]

    def __init__(self, value: float, *, warmup_steps: float = 0, decay_steps: float = 0):
        self.value = jnp.asarray(value, dtype=jnp.float32)
        self.warmup_steps = jnp.asarray(warmup_steps, dtype=jnp.float32)
        self.decay_steps = jnp.asarray(decay_steps, dtype=jnp.float32)

    def __call__(self, step: Int[Array, ""] | int) -> Float[Array, ""]:
        """The value at ``step`` (traced: a new step never recompiles)."""
        t = jnp.asarray(step).astype(jnp.float32)
        warm = jnp.where(
            self.warmup_steps > 0,
            jnp.minimum(1.0, t / jnp.maximum(self.warmup_steps, 1.0)),
            1.0,
        )
        horizon = jnp.maximum(self.decay_steps, 1.0)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, horizon) / horizon))
        decay = jnp.where(self.decay_steps > 0, cosine, 1.0)
        return self.value * warm * decay


def constant(value: float) -> Schedule:
    """``w(t) = value``."""
    return Schedule(value)
