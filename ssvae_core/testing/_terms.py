"""Conformance checks for loss terms: finite values of the declared shape, per-example
independence, jit = eager, per-row preparation, and weights that never recompile the step.

A term is checked inside a small model with every requirement available (a mixture prior
with channels, a decoder conditioned on component embeddings, an augmented view), on
batches drawn by Hypothesis: inputs from a seed, labels with unlabeled rows. A term that
ships with weight 0 (off) is checked with weight 1.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.config import ComponentConfig, ModelConfig, default_config
from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.modelling.objective import term_context
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms.base import (
    REQUIREMENTS,
    AbstractLossTerm,
    TermInputs,
    TermValue,
    prepared_fields,
)
from ssvae_core.modelling.types import Batch, reparameterise
from ssvae_core.registry import Registry
from ssvae_core.testing import strategies
from ssvae_core.testing._runner import check, expect, expect_close, expect_identical, for_all
from ssvae_core.testing._subjects import (
    COMPANION_HIDDEN,
    ConformanceSettings,
    Subject,
    build_checked,
    training_inputs,
)
from ssvae_core.training import labeled_pool

BATCH_SIZE = 6
TRAINING_ROWS = 24


def _with_weight(options: Any, weight: float) -> Any:
    return dataclasses.replace(options, weight=weight)


class LossTermSubject(Subject):
    """A loss term (weight 1 if it ships off) inside a small model offering every requirement."""

    kind = "loss_term"

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        if options.weight == 0.0:
            options = _with_weight(options, 1.0)
        super().__init__(label, factory, options, settings)
        self.model, config = self._model()
        self.context = term_context(
            config, self.model, tuple(settings.input_shape), settings.num_classes
        )
        self.term: AbstractLossTerm = build_checked(
            "loss_term", factory, options, self.context, label
        )

    def _model(self) -> tuple[SSVAE, Any]:
        settings = self.settings
        registry = Registry(entry_points=False)
        dense = registry.get("encoder", "dense").factory.options(hidden=COMPANION_HIDDEN)
        mixture = registry.get("prior", "mixture").factory.options(
            num_components=settings.num_components
        )
        config = default_config(registry).replace(
            model=ModelConfig(
                latent_dim=settings.latent_dim,
                embedding_dim=settings.embedding_dim,
                conditioning="film",
            ),
            prior=ComponentConfig("mixture", mixture),
            encoder=ComponentConfig("dense", dense),
            decoder=ComponentConfig("dense", dense),
        )
        return build_model(
            config,
            input_shape=tuple(settings.input_shape),
            num_classes=settings.num_classes,
            key=jax.random.PRNGKey(2),
            registry=registry,
        )

    @cached_property
    def training(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Training inputs, labels (a quarter labeled) and the term's prepared arrays."""
        x = training_inputs(self.settings, TRAINING_ROWS)
        positions = np.arange(TRAINING_ROWS)
        labels = np.where(positions % 4 == 0, positions % self.settings.num_classes, -1)
        prepared = prepared_fields(self.term, x, labels.astype(np.int32), self.settings.num_classes)
        return x, labels, prepared

    def batch(self, seed: int, labels: np.ndarray) -> Batch:
        """A batch of training rows chosen by ``seed``, with a shifted copy as the view."""
        x, _, prepared = self.training
        rows = np.random.default_rng(seed).integers(0, TRAINING_ROWS, BATCH_SIZE)
        return Batch(
            x=jnp.asarray(x[rows]),
            labels=jnp.asarray(labels, dtype=jnp.int32),
            rows=jnp.asarray(rows, dtype=jnp.int32),
            x_view=jnp.asarray(np.roll(x[rows], 1, axis=-1)),
            fields={name: jnp.asarray(values[rows]) for name, values in prepared.items()},
        )

    @cached_property
    def state(self) -> Any:
        """The head's state after one update with the labeled training rows."""
        _, labels, _ = self.training
        index, y, count = labeled_pool(labels)
        state = self.model.head.init_state()
        posterior = self.model.encode(jnp.asarray(self.training[0][index[:count]]))
        return self.model.head.update_state(state, posterior, jnp.asarray(y[:count]))

    def value(self, batch: Batch, key: PRNGKeyArray) -> TermValue:
        """The term's value on ``batch`` (compiled: properties evaluate it many times)."""
        return _evaluate_jit(
            self.term, self.model, self.state, batch, key, jnp.asarray(self.training[0])
        )


def _evaluate(
    term: AbstractLossTerm,
    model: SSVAE,
    head_state: Any,
    batch: Batch,
    key: PRNGKeyArray,
    train_x: Float[Array, "N ..."],
) -> TermValue:
    z_key, term_key = jax.random.split(key)
    posterior = model.encode(batch.x)
    z = reparameterise(posterior, z_key)
    inputs = TermInputs(model, head_state, batch, posterior, z, jnp.asarray(0), train_x)
    result = term(inputs, term_key)
    return TermValue(result.values, result.mask, dict(result.metrics or {}))


_evaluate_jit = eqx.filter_jit(_evaluate)


def _batches(subject: LossTermSubject) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "seed": strategies.seeds(),
            "labels": strategies.labels(BATCH_SIZE, subject.settings.num_classes),
            "key": strategies.seeds(),
        }
    )


@check(
    "loss_term",
    "declares_its_contract",
    "the term is an AbstractLossTerm whose weight is a Schedule and whose requirements are "
    f"among {', '.join(REQUIREMENTS)}",
    hint="a requirement name outside channels, embeddings, x_view, or a weight that is not a Schedule",
)
def _contract(subject: LossTermSubject) -> None:
    term = subject.term
    expect(
        isinstance(term.weight, Schedule), f"weight is {type(term.weight).__name__}, not a Schedule"
    )
    unknown = set(term.requires) - set(REQUIREMENTS)
    expect(not unknown, f"requires unknown inputs: {', '.join(sorted(unknown))}")


@check(
    "loss_term",
    "prepares_per_row_arrays",
    "prepare() returns arrays whose leading axis is the number of training rows",
    hint="prepare() returning per-class or per-labeled-row arrays instead of one row per training example",
)
def _prepares(subject: LossTermSubject) -> str | None:
    _, _, prepared = subject.training
    for name, values in prepared.items():
        expect(
            np.shape(values)[:1] == (TRAINING_ROWS,),
            f"prepared {name!r} has shape {np.shape(values)}, not ({TRAINING_ROWS}, ...)",
        )
    return f"prepares {', '.join(sorted(prepared))}" if prepared else None


@check(
    "loss_term",
    "finite_of_declared_shape",
    "values are finite, one per example (B,) unless per_example = False declares a scalar; "
    "the mask (if any) has shape (B,) and values in [0, 1]",
    hint="a mean over the batch returned by a per-example term, or the log of a zero probability",
)
def _finite(subject: LossTermSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        batch = subject.batch(example["seed"], example["labels"])
        result = subject.value(batch, jax.random.PRNGKey(example["key"]))
        values = np.asarray(result.values)
        shape = (BATCH_SIZE,) if subject.term.per_example else ()
        expect(values.shape == shape, f"values have shape {values.shape}, expected {shape}")
        expect(np.all(np.isfinite(values)), f"values are not finite: {values}")
        if result.mask is not None:
            mask = np.asarray(result.mask)
            expect(mask.shape == (BATCH_SIZE,), f"mask has shape {mask.shape}")
            expect(np.all((mask >= 0) & (mask <= 1)), f"mask leaves [0, 1]: {mask}")
        for name, value in (result.metrics or {}).items():
            expect(np.all(np.isfinite(np.asarray(value))), f"metric {name!r} is not finite")

    for_all(subject, _batches(subject), body)


@check(
    "loss_term",
    "per_example_independence",
    "a per-example term's value (and mask) for row i does not change when another row changes",
    hint="a batch statistic inside a per-example term (declare per_example = False if it is meant)",
)
def _independent(subject: LossTermSubject) -> None:
    if not subject.term.per_example:
        from ssvae_core.testing._runner import NotApplicable

        raise NotApplicable("declares per_example = False (a batch- or parameter-level value)")

    def body(example: dict[str, Any]) -> None:
        key = jax.random.PRNGKey(example["key"])
        batch = subject.batch(example["seed"], example["labels"])
        other = subject.batch(example["seed"] + 1, example["labels"])
        changed = jax.tree.map(
            lambda a, b: a.at[1:].set(b[1:]) if a.ndim >= 1 and a.shape[0] == BATCH_SIZE else a,
            batch,
            other,
        )
        changed = eqx.tree_at(lambda b: b.labels, changed, batch.labels)
        first, second = subject.value(batch, key), subject.value(changed, key)
        expect_close(
            np.asarray(second.values)[0],
            np.asarray(first.values)[0],
            "value of row 0",
            rtol=1e-4,
            atol=1e-5,
        )
        if first.mask is not None and second.mask is not None:
            expect_close(np.asarray(second.mask)[0], np.asarray(first.mask)[0], "mask of row 0")

    for_all(subject, _batches(subject), body)


@check(
    "loss_term",
    "jit_matches_eager",
    "the jit-compiled value equals the eager one",
    hint="Python control flow or NumPy on array values, computed once at trace time under jit",
)
def _jit(subject: LossTermSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        batch = subject.batch(example["seed"], example["labels"])
        key, state, train_x = (
            jax.random.PRNGKey(example["key"]),
            subject.state,
            jnp.asarray(subject.training[0]),
        )
        eager = _evaluate(subject.term, subject.model, state, batch, key, train_x)
        compiled = _evaluate_jit(subject.term, subject.model, state, batch, key, train_x)
        expect_close(compiled.values, eager.values, "jit vs eager values", rtol=1e-4, atol=1e-5)

    for_all(subject, _batches(subject), body)


@check(
    "loss_term",
    "repeat_calls_identical",
    "two eager evaluations with the same batch and key give bit-identical values",
    hint="NumPy or Python randomness (or a global counter) inside a call; draw from the key argument, if any",
)
def _repeat(subject: LossTermSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        batch = subject.batch(example["seed"], example["labels"])
        key, train_x = jax.random.PRNGKey(example["key"]), jnp.asarray(subject.training[0])
        first = _evaluate(subject.term, subject.model, subject.state, batch, key, train_x)
        second = _evaluate(subject.term, subject.model, subject.state, batch, key, train_x)
        expect_identical(first.values, second.values, "the term's values")
        expect_identical(first.mask, second.mask, "the term's mask")

    for_all(subject, _batches(subject), body)


@check(
    "loss_term",
    "weights_are_traced",
    "terms built with other weights and warm-ups differ only in array leaves, so a new weight "
    "reuses the compiled train step",
    hint="a weight held as a static float (eqx.field(static=True)) instead of a Schedule",
)
def _traced(subject: LossTermSubject) -> None:
    other = dataclasses.replace(
        subject.options,
        weight=subject.options.weight * 2.0 + 0.5,
        warmup_steps=subject.options.warmup_steps + 7,
    )
    rebuilt = build_checked("loss_term", subject.factory, other, subject.context, subject.label)
    static_a = eqx.filter(subject.term, eqx.is_array, inverse=True)
    static_b = eqx.filter(rebuilt, eqx.is_array, inverse=True)
    same_structure = str(jax.tree.structure(subject.term)) == str(jax.tree.structure(rebuilt))
    expect(
        same_structure and jax.tree.leaves(static_a) == jax.tree.leaves(static_b),
        "the static part of the term changed with its weight (keep numbers as arrays, e.g. "
        "the Schedule from TermOptions.schedule())",
    )
