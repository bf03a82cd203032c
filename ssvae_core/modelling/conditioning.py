"""Component conditioning: how a decoder learns which channel ``c`` it is decoding.

Methods: ``concat`` appends a projection of ``e_c`` to ``z``; ``film`` modulates a
hidden activation ``h' = γ_c · h + β_c``; ``cin`` first normalises ``h`` (conditional
instance norm) and then applies ``γ_c, β_c``; ``none`` ignores ``e_c``. Shared by every
decoder family so that each method means the same thing everywhere.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

CONDITIONING_METHODS = ("concat", "film", "cin", "none")
"""How a decoder may be conditioned on the channel embedding ``e_c``: concatenated to ``z``,
FiLM, conditional instance normalisation, or not at all."""


class ComponentConditioning(eqx.Module):
    """Applies one conditioning method; features are on axis 0 of a hidden activation."""

    method: str = eqx.field(static=True)
    projection: eqx.nn.Linear | None

    def __init__(
        self,
        method: str,
        embedding_dim: int,
        hidden_features: int,
        *,
        key: PRNGKeyArray,
        concat_features: int = 16,
    ):
        if method not in CONDITIONING_METHODS:
            raise ValueError(
                f"conditioning must be one of {', '.join(CONDITIONING_METHODS)}, got {method!r}"
            )
        self.method = method
        if method == "concat":
            self.projection = eqx.nn.Linear(embedding_dim, concat_features, key=key)
        elif method in ("film", "cin"):
            self.projection = eqx.nn.Linear(embedding_dim, 2 * hidden_features, key=key)
        else:
            self.projection = None

    def extra_input_features(self) -> int:
        """Features that ``condition_input`` appends to ``z``."""
        if self.method == "concat":
            assert self.projection is not None
            return int(self.projection.out_features)
        return 0

    def condition_input(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> Float[Array, " F"]:
        """``[z; proj(e_c)]`` for ``concat``, ``z`` otherwise."""
        if self.method != "concat":
            return z
        assert self.projection is not None and embedding is not None
        return jnp.concatenate([z, self.projection(embedding)])

    def condition_hidden(
        self, hidden: Float[Array, "C ..."], embedding: Float[Array, " E"] | None
    ) -> Float[Array, "C ..."]:
        """``γ_c · h + β_c`` (``film``), the same after normalising ``h`` (``cin``)."""
        if self.method not in ("film", "cin"):
            return hidden
        assert self.projection is not None and embedding is not None
        scale, shift = jnp.split(self.projection(embedding), 2)
        broadcast = (slice(None),) + (None,) * (hidden.ndim - 1)
        if self.method == "cin":
            axes = tuple(range(1, hidden.ndim)) if hidden.ndim > 1 else (0,)
            mean = jnp.mean(hidden, axis=axes, keepdims=True)
            var = jnp.var(hidden, axis=axes, keepdims=True)
            hidden = (hidden - mean) * jax.lax.rsqrt(var + 1e-5)
        # γ = 1 + Δγ so that a fresh layer starts close to the identity.
        return (1.0 + scale[broadcast]) * hidden + shift[broadcast]
