"""Built-in network families and the pieces every family shares."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

LOG_VAR_BOUND = 6.0


def bounded_log_var(raw: Float[Array, " D"]) -> Float[Array, " D"]:
    """``log σ² = b · tanh(raw / b)`` with ``b = 6``: keeps ``exp(log σ²)`` finite early in training."""
    return LOG_VAR_BOUND * jnp.tanh(raw / LOG_VAR_BOUND)
