"""The loss-term extension point: one module per term of the objective.

The objective is the ELBO (reconstruction and the prior's KL terms) plus a weighted sum of
loss terms. A term is an Equinox module with

- ``weight``: a ``Schedule`` (traced, so new weights never
  recompile the step), built from its options' ``weight`` and ``warmup_steps``;
- ``requires``: what the model and batch must offer — ``"channels"`` (the prior has
  channels; the term is skipped otherwise), ``"embeddings"`` (the decoder is conditioned on
  component embeddings; skipped otherwise), ``"x_view"`` (the sampler adds an augmented
  view of every row to the batch);
- ``per_example``: ``True`` when its value is one number per example that depends on that
  example alone; ``False`` declares a batch-level or parameter-level value (a scalar);
- a term that needs data beyond the batch (a kNN graph, propagated labels) subclasses
  ``AbstractPreparedTerm`` and writes ``prepare``: a host-side preparation over the
  training data returning per-row arrays, which the sampler gathers into
  ``batch.fields`` for the rows it draws;
- ``__call__(inputs, key)``: the value, as a ``TermValue``.

The objective adds ``w(t) · mean_mask(values)`` to the loss and records the mean under the
term's name in the metrics.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.modelling.protocols import FieldOrderChecked
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.types import Batch, EncoderOutput
from ssvae_core.options import option

REQUIREMENTS = ("channels", "embeddings", "x_view")


@dataclass(frozen=True)
class TermOptions:
    """The options every loss term has; a term's own options dataclass subclasses this.

    A subclass may redeclare ``weight`` with its own default. A term shipped by a plugin
    package should default to ``weight = 0`` (off), so that installing the package changes
    nobody's training.

    ``former_keys`` maps keys a configuration may still hold from an earlier layout (keys
    of the former flat ``[loss]`` table) to the option that replaced them, so that such a
    configuration is refused with one line naming the new key.
    """

    former_keys: ClassVar[Mapping[str, str]] = {}

    weight: float = option(0.0, help="weight of the term (0 turns it off)")
    warmup_steps: int = option(
        0, help="steps over which the weight rises linearly from 0 (0: full weight at once)", minimum=0
    )

    def schedule(self) -> Schedule:
        """The weight as a schedule: ``weight · min(1, t / warmup_steps)``."""
        return Schedule(self.weight, warmup_steps=self.warmup_steps)


class TermValue(NamedTuple):
    """What a term returns.

    ``values``: shape ``(B,)`` for a per-example term, ``()`` for a batch-level one.
    ``mask``: ``(B,)`` weights of the rows the mean runs over (``None``: every row); the
    contribution is ``Σ values · mask / max(Σ mask, 1)``. ``metrics``: extra scalars to log.
    """

    values: Float[Array, "*B"]
    mask: Float[Array, " B"] | None = None
    metrics: Mapping[str, Float[Array, ""]] | None = None


@dataclass
class TermInputs:
    """Everything a term may read, computed once per step and shared by every term.

    ``posterior`` is ``q(z, c | x)`` for ``batch.x`` and ``z`` its one reparameterised
    sample (the same the reconstruction used); ``train_x`` holds every training input, for
    terms that look up other rows (a nearest neighbour). ``encode_view`` encodes the
    augmented view once, however many terms ask for it.
    """

    model: Any
    head_state: PyTree[Any]
    batch: Batch
    posterior: EncoderOutput
    z: Float[Array, "B D"]
    step: Int[Array, ""]
    train_x: Float[Array, "N ..."] | None = None
    _view: EncoderOutput | None = field(default=None, repr=False)

    @property
    def labels(self) -> Int[Array, " B"]:
        """The batch labels; ``-1`` marks unlabeled rows."""
        return self.batch.labels

    @property
    def labeled(self) -> Float[Array, " B"]:
        """``1.0`` on labeled rows, ``0.0`` elsewhere."""
        return (self.batch.labels >= 0).astype(jnp.float32)

    @property
    def responsibilities(self) -> Float[Array, "B K"]:
        """``r_c(x)``; only for terms that require ``"channels"``."""
        responsibilities = self.posterior.responsibilities
        assert responsibilities is not None, "this term requires a prior with channels"
        return responsibilities

    def field(self, name: str) -> Array:
        """The prepared per-row array ``name`` gathered for this batch's rows."""
        if name not in self.batch.fields:
            have = ", ".join(sorted(self.batch.fields)) or "none"
            raise KeyError(
                f"batch field {name!r} is missing (fields: {have}); it comes from the term's "
                "prepare() through training_arrays(..., objective=...)"
            )
        return self.batch.fields[name]

    def encode_view(self) -> EncoderOutput:
        """``q(z, c | x')`` for the augmented view ``batch.x_view`` (encoded once)."""
        if self._view is None:
            assert self.batch.x_view is not None, "this term requires 'x_view'"
            self._view = self.model.encode(self.batch.x_view)
        return self._view


class AbstractLossTerm(FieldOrderChecked):
    """A term of the objective; see the module docstring for the contract."""

    weight: eqx.AbstractVar[Schedule]
    requires: ClassVar[frozenset[str]] = frozenset()
    per_example: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = vars(cls).get("prepare")
        inherited = any("prepare" in vars(base) for base in cls.__mro__[1:])
        if declared is not None and not inherited and not getattr(declared, "__isabstractmethod__", False):
            raise TypeError(
                f"{cls.__qualname__} defines prepare() but subclasses AbstractLossTerm, which "
                "never calls it; subclass AbstractPreparedTerm instead"
            )

    @abc.abstractmethod
    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        """The term's value for this batch (unweighted)."""


class AbstractPreparedTerm(AbstractLossTerm):
    """A loss term that prepares per-row data over the whole training set before training."""

    @abc.abstractmethod
    def prepare(
        self, x: np.ndarray, labels: np.ndarray, num_classes: int
    ) -> dict[str, np.ndarray]:
        """Host-side preparation over the training data: per-row arrays (leading axis N).

        ``labels`` holds each training row's label, ``-1`` where unlabeled. The arrays are
        moved to the device once and gathered into ``batch.fields`` by row.
        """


def prepared_fields(
    term: AbstractLossTerm, x: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """What ``term`` prepares over the training data (nothing unless it is an
    ``AbstractPreparedTerm``)."""
    if isinstance(term, AbstractPreparedTerm):
        return term.prepare(x, labels, num_classes)
    return {}


def masked_mean(values: Float[Array, "*B"], mask: Float[Array, " B"] | None) -> Float[Array, ""]:
    """``Σ values · mask / max(Σ mask, 1)``; the plain mean without a mask; a scalar as is."""
    if values.ndim == 0:
        return values
    if mask is None:
        return jnp.mean(values)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
