"""The built-in acquisition functions: which unlabeled examples to label next.

Every score reads :class:`~ssvae_core.types.AcquisitionInputs` (``p(y|x)``, the head's
certainty, the responsibilities ``r = q(c|x)``, τ, the posterior means and samples) and
returns one number per example, higher meaning "label sooner":

- ``random``: uniform draws (the baseline every other strategy is measured against);
- ``least_confidence``: ``1 − max_y p(y|x)``;
- ``margin``: ``1 − (p₍₁₎ − p₍₂₎)``, one minus the gap between the two most probable classes;
- ``entropy``: ``H(p(y|x))``;
- ``ood``: the OOD score ``1 − certainty`` (τ head: ``1 − max_c r_c max_y τ_{c,y}``);
- ``channel_entropy``: ``H(r)``, how undecided the encoder is between channels;
- ``disagreement``: ``H(Σ_c r_c τ_c) − Σ_c r_c H(τ_c)``, the mutual information between
  ``y`` and ``c`` under ``q(c|x)``: the channels an example straddles disagree on its label;
- ``bald``: ``H(E_s p(y|x,z_s)) − E_s H(p(y|x,z_s))`` over posterior samples
  ``z_s ~ q(z|x)``, the mutual information between ``y`` and ``z`` (BALD);
- ``kcenter``: batch-aware; greedily picks the unlabeled example farthest (in posterior
  means) from every labeled or already chosen one (k-center greedy);
- ``diverse``: batch-aware; greedily picks the example maximising ``u(x) · d(x)²``, an
  uncertainty ``u`` times the squared distance to the nearest labeled or chosen example,
  so a batch covers uncertain regions without near-duplicates.

They register through the ``ssvae_register_acquisitions`` hook like any plugin's
(:mod:`ssvae_core.builtin`).
"""

# No ``from __future__ import annotations``: ``eqx.AbstractVar[...]`` must be an evaluated
# annotation (see ssvae_core.protocols).

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ssvae_core.components import BuildContext, ComponentFactory
from ssvae_core.losses import entropy
from ssvae_core.options import option
from ssvae_core.protocols import AbstractAcquisition, top_unlabeled
from ssvae_core.types import AcquisitionInputs


def least_confidence(probabilities: Float[Array, "N Y"]) -> Float[Array, " N"]:
    """``1 − max_y p(y|x)``."""
    return 1.0 - jnp.max(probabilities, axis=-1)


def margin(probabilities: Float[Array, "N Y"]) -> Float[Array, " N"]:
    """``1 − (p₍₁₎ − p₍₂₎)``: one minus the gap between the two most probable classes."""
    top = jax.lax.top_k(probabilities, 2)[0]
    return 1.0 - (top[:, 0] - top[:, 1])


def channel_disagreement(
    responsibilities: Float[Array, "N K"], tau: Float[Array, "K Y"]
) -> Float[Array, " N"]:
    """``H(Σ_c r_c τ_c) − Σ_c r_c H(τ_c)`` ≥ 0: the mutual information between the label and
    the channel under ``q(c|x)``."""
    mixed = responsibilities @ tau
    return jnp.maximum(entropy(mixed) - responsibilities @ entropy(tau), 0.0)


def mutual_information(sample_probabilities: Float[Array, "S N Y"]) -> Float[Array, " N"]:
    """``H(E_s p_s) − E_s H(p_s)`` ≥ 0 over the sample axis (BALD)."""
    mean = jnp.mean(sample_probabilities, axis=0)
    return jnp.maximum(entropy(mean) - jnp.mean(entropy(sample_probabilities), axis=0), 0.0)


UNCERTAINTIES = {
    "entropy": lambda inputs: entropy(inputs.probabilities),
    "least_confidence": lambda inputs: least_confidence(inputs.probabilities),
    "margin": lambda inputs: margin(inputs.probabilities),
    "ood": lambda inputs: jnp.clip(1.0 - inputs.certainty, 0.0, 1.0),
}


def nearest_labeled(z: Float[Array, "N D"], labeled: Bool[Array, " N"]) -> Float[Array, " N"]:
    """Squared distance from each example to its nearest labeled one (``inf`` with none).

    In NumPy: the labeled set changes size from call to call, and a JAX operation would
    compile anew for each size.
    """
    points = np.asarray(z, dtype=np.float64)
    centres = points[np.asarray(labeled, dtype=bool)]  # L labeled examples: an N × L matrix
    if centres.shape[0] == 0:
        return jnp.full((points.shape[0],), jnp.inf)
    pairwise = (
        np.sum(points**2, axis=-1)[:, None] + np.sum(centres**2, axis=-1)[None, :] - 2.0 * points @ centres.T
    )
    return jnp.asarray(np.min(np.maximum(pairwise, 0.0), axis=-1), dtype=jnp.float32)


def greedy_cover(
    z: Float[Array, "N D"],
    weights: Float[Array, " N"],
    labeled: Bool[Array, " N"],
    count: int,
) -> Int[Array, " count"]:
    """Pick ``count`` unlabeled examples one by one, each maximising ``weight · d²`` where
    ``d`` is its distance to the nearest labeled or already chosen example (ties: lower
    index; with nothing labeled yet the first pick is the largest weight).

    Sequential and data-dependent, so it runs in NumPy: ``count`` passes over ``N × D``.
    """
    taken = np.array(labeled, dtype=bool)
    available = int(np.sum(~taken))
    if not 0 <= count <= available:
        raise ValueError(f"count must be between 0 and the {available} unlabeled examples, got {count}")
    points = np.asarray(z, dtype=np.float64)
    weight = np.maximum(np.nan_to_num(np.asarray(weights, dtype=np.float64)), 0.0)
    distance = np.asarray(nearest_labeled(z, labeled), dtype=np.float64)
    distance[np.isinf(distance)] = 1.0  # nothing labeled: the weights decide
    picks = np.empty(count, dtype=np.int32)
    for i in range(count):
        value = np.where(taken, -np.inf, weight * distance)
        pick = int(np.argmax(value))
        picks[i] = pick
        taken[pick] = True
        distance = np.minimum(distance, np.sum((points - points[pick]) ** 2, axis=-1))
    return jnp.asarray(picks)


def class_balanced(
    scores: Float[Array, " N"], labeled: Bool[Array, " N"], predictions: Int[Array, " N"], count: int
) -> Int[Array, " count"]:
    """The ``count`` best unlabeled examples taken round-robin over predicted classes: every
    class's best, then every class's second best, ... (within a round, by score)."""
    available = int(np.sum(~np.asarray(labeled)))
    order = np.asarray(top_unlabeled(scores, labeled, available))
    classes = np.asarray(predictions)[order]
    rank = np.zeros(order.size, dtype=np.int64)
    seen: dict[int, int] = {}
    for position, label in enumerate(classes.tolist()):
        rank[position] = seen.get(label, 0)
        seen[label] = rank[position] + 1
    return jnp.asarray(order[np.argsort(rank, kind="stable")][:count], dtype=jnp.int32)


class RankedAcquisition(AbstractAcquisition):
    """A score-based acquisition whose batch is either the best scores (``balance`` off)
    or the best scores taken round-robin over the predicted classes (``balance`` on), so
    that one confusing class cannot take the whole batch."""

    balance: eqx.AbstractVar[bool]

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        scores = self.score(inputs, key)
        if not self.balance:
            return top_unlabeled(scores, inputs.labeled, count)
        return class_balanced(scores, inputs.labeled, jnp.argmax(inputs.probabilities, axis=-1), count)


class RandomAcquisition(AbstractAcquisition):
    """Uniform random scores: the baseline."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return jax.random.uniform(key, (inputs.num_examples,))


class UncertaintyAcquisition(RankedAcquisition):
    """An uncertainty of ``p(y|x)`` or the head's OOD score (``measure``)."""

    measure: str = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return UNCERTAINTIES[self.measure](inputs)


class ChannelEntropyAcquisition(RankedAcquisition):
    """``H(q(c|x))``: how undecided the encoder is between channels."""

    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return entropy(inputs.responsibilities)


class DisagreementAcquisition(RankedAcquisition):
    """The mutual information between label and channel under ``q(c|x)`` (through τ)."""

    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        if inputs.tau is None:
            raise ValueError("the disagreement acquisition needs a head with a τ map")
        return channel_disagreement(inputs.responsibilities, inputs.tau)


class BaldAcquisition(RankedAcquisition):
    """The mutual information between ``y`` and ``z`` over ``num_samples`` posterior samples."""

    num_samples: int = eqx.field(static=True)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return mutual_information(inputs.sample_probabilities)


class KCenterAcquisition(AbstractAcquisition):
    """k-center greedy on the posterior means: the score is the distance to the nearest
    labeled example; a batch is chosen greedily so it covers the latent space."""

    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        distance = nearest_labeled(inputs.z_mean, inputs.labeled)
        return jnp.sqrt(jnp.where(jnp.isinf(distance), 0.0, distance))

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        weights = jnp.ones((inputs.num_examples,))
        return greedy_cover(inputs.z_mean, weights, inputs.labeled, count)


class DiverseAcquisition(AbstractAcquisition):
    """Uncertainty times squared latent distance to the nearest labeled or chosen example,
    maximised greedily: uncertain examples first, but no two from the same spot."""

    measure: str = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=0)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        distance = nearest_labeled(inputs.z_mean, inputs.labeled)
        distance = jnp.where(jnp.isinf(distance), 1.0, distance)
        return UNCERTAINTIES[self.measure](inputs) * distance

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        weights = UNCERTAINTIES[self.measure](inputs)
        return greedy_cover(inputs.z_mean, weights, inputs.labeled, count)


@dataclass(frozen=True)
class NoOptions:
    """This acquisition has no options."""


BALANCE_HELP = (
    "take the batch round-robin over predicted classes (each class's best, then each "
    "class's second best, ...) instead of the best scores overall"
)


@dataclass(frozen=True)
class RankedOptions:
    balance: bool = option(False, help=BALANCE_HELP)


@dataclass(frozen=True)
class BaldOptions:
    num_samples: int = option(8, help="posterior samples z_s ~ q(z|x) per example", minimum=2)
    balance: bool = option(False, help=BALANCE_HELP)


@dataclass(frozen=True)
class DiverseOptions:
    uncertainty: str = option(
        "entropy", help="the uncertainty u(x) that weights the squared latent distance",
        choices=tuple(UNCERTAINTIES),
    )


def _needs_channels(name: str, context: BuildContext) -> None:
    if context.num_components == 0:
        raise ValueError(
            f"the {name} acquisition reads the channels q(c|x); the model has none "
            "(use entropy, margin, least_confidence or bald)"
        )


def _uncertainty(measure: str) -> ComponentFactory:
    descriptions = {
        "least_confidence": "1 − max_y p(y|x)",
        "margin": "1 − (p₍₁₎ − p₍₂₎), the gap between the two most probable classes",
        "entropy": "H(p(y|x))",
        "ood": "the OOD score 1 − max_c r_c max_y τ_{c,y} (the head's certainty)",
    }
    return ComponentFactory(
        UncertaintyAcquisition, RankedOptions,
        lambda options, context, key: UncertaintyAcquisition(measure=measure, balance=options.balance),
        descriptions[measure],
    )


def _build_channel_entropy(options: RankedOptions, context: BuildContext, key: PRNGKeyArray) -> ChannelEntropyAcquisition:
    _needs_channels("channel_entropy", context)
    return ChannelEntropyAcquisition(balance=options.balance)


def _build_disagreement(options: RankedOptions, context: BuildContext, key: PRNGKeyArray) -> DisagreementAcquisition:
    _needs_channels("disagreement", context)
    return DisagreementAcquisition(balance=options.balance)


ACQUISITIONS: dict[str, ComponentFactory] = {
    "random": ComponentFactory(
        RandomAcquisition, NoOptions, lambda options, context, key: RandomAcquisition(),
        "uniform random scores (the baseline)",
    ),
    "least_confidence": _uncertainty("least_confidence"),
    "margin": _uncertainty("margin"),
    "entropy": _uncertainty("entropy"),
    "ood": _uncertainty("ood"),
    "channel_entropy": ComponentFactory(
        ChannelEntropyAcquisition, RankedOptions, _build_channel_entropy,
        "H(q(c|x)), the responsibilities' entropy",
    ),
    "disagreement": ComponentFactory(
        DisagreementAcquisition, RankedOptions, _build_disagreement,
        "H(Σ_c r_c τ_c) − Σ_c r_c H(τ_c): channels an example straddles disagree on its label",
    ),
    "bald": ComponentFactory(
        BaldAcquisition, BaldOptions,
        lambda options, context, key: BaldAcquisition(num_samples=options.num_samples, balance=options.balance),
        "mutual information between y and z over posterior samples (BALD)",
    ),
    "kcenter": ComponentFactory(
        KCenterAcquisition, NoOptions, lambda options, context, key: KCenterAcquisition(),
        "batch-aware: k-center greedy on the posterior means",
    ),
    "diverse": ComponentFactory(
        DiverseAcquisition, DiverseOptions,
        lambda options, context, key: DiverseAcquisition(measure=options.uncertainty),
        "batch-aware: uncertainty × squared latent distance to the nearest labeled or chosen example, greedily",
    ),
}

