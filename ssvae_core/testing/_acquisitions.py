"""Conformance checks for acquisition functions: finite scores, one per example, the same
for the same key; batches of distinct unlabeled examples, of the size asked for.

Inputs are drawn by Hypothesis: ``p(y|x)``, responsibilities and τ rows as softmaxes of
drawn logits (with one-hot rows among them, where a careless ``log`` gives ``nan``), a
certainty consistent with them, posterior means and log-variances, the acquisition's own
number of posterior samples, and a labeled mask that leaves at least one example unlabeled.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.modelling.protocols import AbstractAcquisition
from ssvae_core.modelling.types import AcquisitionInputs
from ssvae_core.testing._runner import NotApplicable, check, expect, expect_identical, for_all
from ssvae_core.testing._subjects import ConformanceSettings, Subject, build_checked, make_context

NUM_EXAMPLES = (1, 4, 12)


class AcquisitionSubject(Subject):
    """An acquisition built for a model with ``settings.num_components`` channels (and, if it
    accepts one, for a model without channels)."""

    kind = "acquisition"

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        super().__init__(label, factory, options, settings)
        context = make_context(settings, num_components=settings.num_components, conditioning="film")
        self.acquisition: AbstractAcquisition = build_checked(
            "acquisition", factory, options, context, label
        )

    @cached_property
    def without_channels(self) -> AbstractAcquisition | None:
        """The acquisition for a model without channels, or ``None`` if it needs them."""
        context = make_context(self.settings, num_components=0)
        try:
            return self.factory.build(self.options, context, jax.random.PRNGKey(0))
        except ValueError:
            return None


def _softmax_rows(rng: np.random.Generator, count: int, width: int, one_hot: bool) -> np.ndarray:
    if width == 0:
        return np.zeros((count, 0), np.float32)
    logits = rng.uniform(-6.0, 6.0, (count, width))
    rows = np.exp(logits - logits.max(axis=-1, keepdims=True))
    rows /= rows.sum(axis=-1, keepdims=True)
    if one_hot:  # some rows exactly one-hot: log 0 must not leak into a score
        hard = rng.random(count) < 0.5
        rows[hard] = np.eye(width)[rng.integers(0, width, int(hard.sum()))]
    return rows.astype(np.float32)


def draw_inputs(
    seed: int, count: int, num_classes: int, num_components: int, latent_dim: int,
    num_samples: int, labeled_share: float, one_hot: bool,
) -> AcquisitionInputs:
    """Inputs for ``count`` examples, drawn from ``seed``; at least one stays unlabeled."""
    rng = np.random.default_rng(seed)
    probabilities = _softmax_rows(rng, count, num_classes, one_hot)
    responsibilities = _softmax_rows(rng, count, num_components, one_hot)
    # one-hot τ rows too: with a one-hot r, p(y|x) then holds exact zeros
    tau = _softmax_rows(rng, num_components, num_classes, one_hot) if num_components else None
    if tau is not None:
        probabilities = (responsibilities @ tau).astype(np.float32)
        certainty = np.max(responsibilities * tau.max(axis=-1), axis=-1)
    else:
        certainty = probabilities.max(axis=-1)
    samples = np.stack([_softmax_rows(rng, count, num_classes, one_hot) for _ in range(num_samples)]) if num_samples else np.zeros((0, count, num_classes), np.float32)
    labeled = rng.random(count) < labeled_share
    labeled[rng.integers(0, count)] = False
    return AcquisitionInputs(
        probabilities=jnp.asarray(probabilities),
        certainty=jnp.asarray(certainty, dtype=jnp.float32),
        responsibilities=jnp.asarray(responsibilities),
        tau=None if tau is None else jnp.asarray(tau),
        z_mean=jnp.asarray(rng.uniform(-4.0, 4.0, (count, latent_dim)), dtype=jnp.float32),
        z_log_var=jnp.asarray(rng.uniform(-4.0, 2.0, (count, latent_dim)), dtype=jnp.float32),
        sample_probabilities=jnp.asarray(samples, dtype=jnp.float32),
        labeled=jnp.asarray(labeled),
    )


def _examples(subject: AcquisitionSubject, *, channels: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**16),
            "count": st.sampled_from(NUM_EXAMPLES),
            "labeled_share": st.sampled_from((0.0, 0.3, 0.9)),
            "one_hot": st.booleans(),
            "key": st.integers(0, 2**16),
            "fraction": st.floats(0.0, 1.0),
        }
    )


def _inputs(subject: AcquisitionSubject, example: dict[str, Any], acquisition: AbstractAcquisition, num_components: int) -> AcquisitionInputs:
    settings = subject.settings
    return draw_inputs(
        example["seed"], example["count"], settings.num_classes, num_components,
        settings.latent_dim, int(acquisition.num_samples), example["labeled_share"], example["one_hot"],
    )


def _batch_size(inputs: AcquisitionInputs, fraction: float) -> int:
    unlabeled = int(np.sum(~np.asarray(inputs.labeled)))
    return max(1, round(fraction * unlabeled))


@check(
    "acquisition", "scores_finite_one_per_example",
    "score(inputs, key) is one finite number per example, labeled ones included",
    hint="a log of a zero probability or responsibility (clip before log), or a reduction over the wrong axis",
)
def _scores_finite(subject: AcquisitionSubject) -> str:
    acquisition = subject.acquisition

    def body(example: dict[str, Any]) -> None:
        inputs = _inputs(subject, example, acquisition, subject.settings.num_components)
        scores = np.asarray(acquisition.score(inputs, jax.random.PRNGKey(example["key"])))
        expect(scores.shape == (inputs.num_examples,), f"scores have shape {scores.shape}, expected ({inputs.num_examples},)")
        expect(np.all(np.isfinite(scores)), f"scores are not all finite: {scores}")

    for_all(subject, _examples(subject), body)
    return f"{int(acquisition.num_samples)} posterior samples"


@check(
    "acquisition", "deterministic_for_a_key",
    "the same inputs and key give the same scores and the same batch",
    hint="randomness drawn from NumPy's or Python's global generator instead of the key",
)
def _deterministic(subject: AcquisitionSubject) -> None:
    acquisition = subject.acquisition

    def body(example: dict[str, Any]) -> None:
        inputs = _inputs(subject, example, acquisition, subject.settings.num_components)
        key = jax.random.PRNGKey(example["key"])
        count = _batch_size(inputs, example["fraction"])
        expect_identical(acquisition.score(inputs, key), acquisition.score(inputs, key), "score")
        expect_identical(
            acquisition.select(inputs, count, key), acquisition.select(inputs, count, key), "select"
        )

    for_all(subject, _examples(subject), body)


def _check_batch(inputs: AcquisitionInputs, batch: Any, count: int) -> np.ndarray:
    chosen = np.asarray(batch)
    expect(chosen.shape == (count,), f"select(count={count}) returned shape {chosen.shape}")
    expect(np.issubdtype(chosen.dtype, np.integer), f"select returned {chosen.dtype}, not integer indices")
    expect(
        np.all((chosen >= 0) & (chosen < inputs.num_examples)),
        f"select returned indices outside 0..{inputs.num_examples - 1}: {chosen.tolist()}",
    )
    return chosen


@check(
    "acquisition", "never_chooses_labeled",
    "select never returns an example that already carries a label",
    hint="scores of labeled examples not masked before ranking (inputs.labeled)",
)
def _never_labeled(subject: AcquisitionSubject) -> None:
    acquisition = subject.acquisition

    def body(example: dict[str, Any]) -> None:
        inputs = _inputs(subject, example, acquisition, subject.settings.num_components)
        count = _batch_size(inputs, example["fraction"])
        chosen = _check_batch(inputs, acquisition.select(inputs, count, jax.random.PRNGKey(example["key"])), count)
        labeled = np.asarray(inputs.labeled)
        expect(not np.any(labeled[chosen]), f"select chose labeled examples {chosen[labeled[chosen]].tolist()}")

    for_all(subject, _examples(subject), body)


@check(
    "acquisition", "batch_has_no_duplicates",
    "a batch holds count distinct examples, up to every unlabeled one",
    hint="a greedy batch that does not mark its picks as taken, or sampling with replacement",
)
def _no_duplicates(subject: AcquisitionSubject) -> None:
    acquisition = subject.acquisition

    def body(example: dict[str, Any]) -> None:
        inputs = _inputs(subject, example, acquisition, subject.settings.num_components)
        key = jax.random.PRNGKey(example["key"])
        unlabeled = int(np.sum(~np.asarray(inputs.labeled)))
        for count in sorted({_batch_size(inputs, example["fraction"]), unlabeled}):
            chosen = _check_batch(inputs, acquisition.select(inputs, count, key), count)
            expect(
                np.unique(chosen).size == count,
                f"select(count={count}) repeats examples: {chosen.tolist()}",
            )

    for_all(subject, _examples(subject), body)


@check(
    "acquisition", "works_without_channels",
    "built for a model without channels (responsibilities of width 0, no τ), scores stay "
    "finite and batches valid — or the factory refuses such a model with ValueError",
    hint="reading inputs.tau or the responsibilities without checking that the model has channels",
)
def _without_channels(subject: AcquisitionSubject) -> None:
    acquisition = subject.without_channels
    if acquisition is None:
        raise NotApplicable("the factory refuses models without channels (ValueError)")

    def body(example: dict[str, Any]) -> None:
        inputs = _inputs(subject, example, acquisition, 0)
        key = jax.random.PRNGKey(example["key"])
        scores = np.asarray(acquisition.score(inputs, key))
        expect(scores.shape == (inputs.num_examples,) and np.all(np.isfinite(scores)), f"scores {scores}")
        count = _batch_size(inputs, example["fraction"])
        chosen = _check_batch(inputs, acquisition.select(inputs, count, key), count)
        expect(np.unique(chosen).size == count, f"repeated examples {chosen.tolist()}")
        expect(not np.any(np.asarray(inputs.labeled)[chosen]), "chose labeled examples")

    for_all(subject, _examples(subject, channels=False), body)
