"""The built-in acquisition functions: which unlabeled examples to label next.

Every score reads ``AcquisitionInputs`` (``p(y|x)``, the head's
certainty, the responsibilities ``r = q(c|x)``, τ, the posterior means and samples) and
returns one number per example, higher meaning "label sooner":

- ``random``: uniform draws (the baseline every other strategy is measured against);
- ``least_confidence``: ``1 − max_y p(y|x)``;
- ``margin``: ``1 − (p₍₁₎ − p₍₂₎)``, one minus the gap between the two most probable classes;
- ``entropy``: ``H(p(y|x))``;
- ``ood``: an OOD score (option ``score``): by default the head's ``1 − certainty`` (τ head:
  ``1 − max_c r_c max_y τ_{c,y}``), or any score of ``ssvae_core.runs.ood``, which the caller
  computes into ``AcquisitionInputs.ood`` (``ssvae_core.labels.active.query``'s ``ood``);
- ``channel_entropy``: ``H(r)``, how undecided the encoder is between channels;
- ``disagreement``: ``H(Σ_c r_c τ_c) − Σ_c r_c H(τ_c)``, the mutual information between
  ``y`` and ``c`` under ``q(c|x)``: the channels an example straddles disagree on its label;
- ``bald``: ``H(E_s p(y|x,z_s)) − E_s H(p(y|x,z_s))`` over posterior samples
  ``z_s ~ q(z|x)``, the mutual information between ``y`` and ``z`` (BALD);
- ``kcenter``: batch-aware; greedily picks the unlabeled example farthest (in posterior
  means) from every labeled or already chosen one (k-center greedy);
- ``diverse``: batch-aware; greedily picks the example maximising ``u(x) · d(x)²``, an
  uncertainty ``u`` times the squared distance to the nearest labeled or chosen example,
  so a batch covers uncertain regions without near-duplicates;
- ``typical``: batch-aware, label-free (TypiClust-style); clusters a representation
  (posterior means, responsibilities, or both) into as many clusters as labeled plus
  wanted examples, and takes the most typical example (densest: smallest mean distance
  to its nearest neighbours) of each of the largest clusters holding no labeled example;
- ``cover``: batch-aware, label-free; greedily picks the example maximising
  ``t(x)^γ · d(x)²``, its typicality (as in ``typical``) to the power γ times the squared
  distance to the nearest labeled or chosen example in the same representation: dense
  regions first, each one once;
- ``badge``: batch-aware, label-free (BADGE-style); k-means++ seeding over gradient
  embeddings ``(r − e_ĉ) ⊗ μ``, the gradient of ``−log q(ĉ|x)`` at the most responsible
  channel ``ĉ`` with respect to a linear read-out of the posterior mean ``μ`` (with labels,
  ``(p(y|x) − e_ŷ) ⊗ μ`` over the classes instead), so a batch holds examples that are
  both uncertain and unlike one another and unlike what is labeled.

``random``, ``kcenter``, ``channel_entropy``, ``typical``, ``cover`` and ``badge`` need no label
(``label_free``): they can choose the first examples to label from a model trained
without any. The others read ``p(y|x)`` or τ and are refused there.

They register through the ``ssvae_register_acquisitions`` hook like any plugin's
(``ssvae_core.builtin``).
"""

# No ``from __future__ import annotations``: ``eqx.AbstractVar[...]`` must be an evaluated
# annotation (see ssvae_core.modelling.protocols).

from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ssvae_core.modelling.components import BuildContext, ComponentFactory
from ssvae_core.modelling.losses import entropy
from ssvae_core.modelling.protocols import (
    AbstractAcquisition,
    AbstractTopScoreAcquisition,
    top_unlabeled,
)
from ssvae_core.modelling.types import AcquisitionInputs
from ssvae_core.options import option
from ssvae_core.runs.ood import OOD_SCORES


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
    picks = np.empty(count, dtype=np.int32)
    for i in range(count):
        # nothing labeled or chosen yet: the weights alone decide the first pick
        spread = np.ones_like(distance) if np.isinf(distance).all() else distance
        value = np.where(taken, -np.inf, weight * spread)
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


class AbstractRankedAcquisition(AbstractAcquisition):
    """A score-based acquisition whose batch is either the best scores (``balance`` off)
    or the best scores taken round-robin over the predicted classes (``balance`` on), so
    that one confusing class cannot take the whole batch; its subclasses implement
    ``score`` only."""

    balance: eqx.AbstractVar[bool]

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        """The best ``count`` unlabeled examples, round-robin over classes with ``balance``."""
        scores = self.score(inputs, key)
        if not self.balance:
            return top_unlabeled(scores, inputs.labeled, count)
        return class_balanced(scores, inputs.labeled, jnp.argmax(inputs.probabilities, axis=-1), count)


class RandomAcquisition(AbstractTopScoreAcquisition):
    """Uniform random scores: the baseline."""

    num_samples: int = eqx.field(static=True, default=0)
    label_free: ClassVar[bool] = True

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return jax.random.uniform(key, (inputs.num_examples,))


class UncertaintyAcquisition(AbstractRankedAcquisition):
    """An uncertainty of ``p(y|x)`` or the head's OOD score (``measure``)."""

    measure: str = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return UNCERTAINTIES[self.measure](inputs)


class OODAcquisition(AbstractRankedAcquisition):
    """An OOD score: ``1 − certainty`` for ``ood_score="certainty"``, else the scores the
    caller put in ``inputs.ood`` (``ssvae_core.labels.active.query`` computes them)."""

    ood_score: str = eqx.field(static=True, default="certainty")
    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        if self.ood_score == "certainty" or inputs.ood is None:
            return UNCERTAINTIES["ood"](inputs)
        return inputs.ood


class ChannelEntropyAcquisition(AbstractRankedAcquisition):
    """``H(q(c|x))``: how undecided the encoder is between channels."""

    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)
    label_free: ClassVar[bool] = True

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return entropy(inputs.responsibilities)


class DisagreementAcquisition(AbstractRankedAcquisition):
    """The mutual information between label and channel under ``q(c|x)`` (through τ)."""

    num_samples: int = eqx.field(static=True, default=0)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        if inputs.tau is None:
            raise ValueError("the disagreement acquisition needs a head with a τ map")
        return channel_disagreement(inputs.responsibilities, inputs.tau)


class BaldAcquisition(AbstractRankedAcquisition):
    """The mutual information between ``y`` and ``z`` over ``num_samples`` posterior samples."""

    num_samples: int = eqx.field(static=True)
    balance: bool = eqx.field(static=True, default=False)

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return mutual_information(inputs.sample_probabilities)


class KCenterAcquisition(AbstractAcquisition):
    """k-center greedy on the posterior means: the score is the distance to the nearest
    labeled example; a batch is chosen greedily so it covers the latent space."""

    num_samples: int = eqx.field(static=True, default=0)
    label_free: ClassVar[bool] = True

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


REPRESENTATIONS = ("auto", "mean", "responsibilities", "both")

#: ``auto`` reads the channels once they have formed: the examples are this confident in
#: their channel on average (``mean_c max q(c|x)``) ...
FORMED_CONFIDENCE = 0.9
#: ... and the channels' usage spreads over at least this share of them (the effective
#: number of channels, ``exp`` of the entropy of the mean responsibilities, over K).
FORMED_SPREAD = 0.5


def channels_formed(responsibilities: np.ndarray) -> bool:
    """Whether the channels cluster the examples: each example confident in one channel
    (mean ``max_c q(c|x)`` ≥ ``FORMED_CONFIDENCE``) and the examples spread over the
    channels (effective number of channels ≥ ``FORMED_SPREAD`` × K). A model whose
    channels hold nearly everything in one or two (a label-free model without the graph
    clusters) fails the second; one with uniform responsibilities the first."""
    r = np.asarray(responsibilities, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] < 2:
        return False
    usage = r.mean(axis=0)
    usage = usage[usage > 0] / usage.sum()
    spread = float(np.exp(-np.sum(usage * np.log(usage)))) / r.shape[1]
    return float(r.max(axis=-1).mean()) >= FORMED_CONFIDENCE and spread >= FORMED_SPREAD


def resolved_space(inputs: AcquisitionInputs, space: str) -> str:
    """``auto`` → ``responsibilities`` where the channels have formed
    (``channels_formed``), else ``mean``; any other space as it is."""
    if space != "auto":
        return space
    return "responsibilities" if channels_formed(np.asarray(inputs.responsibilities)) else "mean"


def representation(inputs: AcquisitionInputs, space: str) -> np.ndarray:
    """The examples as points: posterior means ``μ(x)`` standardised per dimension
    (``mean``), responsibilities ``q(c|x)`` (``responsibilities``), or both side by side,
    the responsibilities scaled by ``√D`` so that each part weighs alike (``both``);
    ``auto`` as ``resolved_space`` decides."""
    space = resolved_space(inputs, space)
    z = np.asarray(inputs.z_mean, dtype=np.float64)
    z = (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-8)
    r = np.asarray(inputs.responsibilities, dtype=np.float64)
    if space == "mean" or r.shape[-1] == 0:
        return z
    if space == "responsibilities":
        return r
    return np.concatenate([z, r * np.sqrt(z.shape[-1])], axis=-1)


def density_representation(inputs: AcquisitionInputs, space: str) -> np.ndarray:
    """Where typicality is measured: the posterior means when the examples are placed by
    their responsibilities alone (confident examples share nearly one point in ``q(c|x)``,
    so density there says nothing about how typical an image is), else the same points."""
    if resolved_space(inputs, space) == "responsibilities":
        return representation(inputs, "mean")
    return representation(inputs, space)


def typicality(points: np.ndarray, neighbours: int) -> np.ndarray:
    """``1 / mean distance to the k nearest other points``: high where the data are dense."""
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours, points.shape[0] - 1)
    if k < 1:
        return np.ones(points.shape[0])
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return 1.0 / np.maximum(distances[:, 1:].mean(axis=-1), 1e-12)


def typical_picks(
    points: np.ndarray, labeled: np.ndarray, count: int, *, neighbours: int, seed: int,
    density_points: np.ndarray | None = None,
) -> np.ndarray:
    """TypiClust: k-means with ``|labeled| + count`` clusters; then, ``count`` times, the
    largest cluster with the fewest labeled or chosen members gives its most typical
    unlabeled example (typicality within the cluster, measured on ``density_points``,
    by default the clustered points themselves)."""
    from sklearn.cluster import KMeans

    labeled = np.asarray(labeled, dtype=bool)
    available = int(np.sum(~labeled))
    if not 0 <= count <= available:
        raise ValueError(f"count must be between 0 and the {available} unlabeled examples, got {count}")
    clusters = min(int(labeled.sum()) + count, points.shape[0])
    assignment = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit_predict(points)
    sizes = np.bincount(assignment, minlength=clusters)
    covered = np.bincount(assignment[labeled], minlength=clusters)
    density = np.zeros(points.shape[0])
    measured = points if density_points is None else density_points
    for c in range(clusters):
        members = np.flatnonzero(assignment == c)
        density[members] = typicality(measured[members], neighbours)
    taken = labeled.copy()
    remaining = np.bincount(assignment[~taken], minlength=clusters)
    picks = np.empty(count, dtype=np.int32)
    for i in range(count):
        # fewest members taken first, then the largest cluster (ties: lower cluster index)
        order = np.lexsort((-sizes, covered))
        cluster = int(order[np.argmax(remaining[order] > 0)])
        members = np.flatnonzero((assignment == cluster) & ~taken)
        pick = int(members[np.argmax(density[members])])
        picks[i] = pick
        taken[pick] = True
        covered[cluster] += 1
        remaining[cluster] -= 1
    return picks


def gradient_embedding(inputs: AcquisitionInputs, over: str) -> np.ndarray:
    """BADGE's embedding ``(p − e_{argmax p}) ⊗ μ``: the gradient of ``−log p_ĵ`` at the
    most probable ``ĵ`` with respect to a linear read-out of the posterior mean ``μ``.
    ``p`` is ``q(c|x)`` over channels (``channels``) or ``p(y|x)`` over classes
    (``classes``); ``auto`` takes classes once anything is labeled, else channels."""
    use_classes = over == "classes" or (over == "auto" and bool(np.any(np.asarray(inputs.labeled))))
    if inputs.responsibilities.shape[-1] == 0:
        use_classes = True
    p = np.asarray(inputs.probabilities if use_classes else inputs.responsibilities, dtype=np.float64)
    residual = p.copy()
    residual[np.arange(p.shape[0]), np.argmax(p, axis=-1)] -= 1.0
    z = np.asarray(inputs.z_mean, dtype=np.float64)
    z = np.concatenate([(z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-8), np.ones((z.shape[0], 1))], axis=-1)
    return (residual[:, :, None] * z[:, None, :]).reshape(p.shape[0], -1)


def kmeans_plus_plus(points: np.ndarray, labeled: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: with nothing labeled the first pick is the largest norm; each
    next pick is drawn with probability ∝ its squared distance to the nearest labeled or
    chosen point."""
    labeled = np.asarray(labeled, dtype=bool)
    available = int(np.sum(~labeled))
    if not 0 <= count <= available:
        raise ValueError(f"count must be between 0 and the {available} unlabeled examples, got {count}")
    taken = labeled.copy()
    distance = np.asarray(nearest_labeled(points, labeled), dtype=np.float64)
    picks = np.empty(count, dtype=np.int32)
    for i in range(count):
        weight = np.where(taken, 0.0, distance)
        if np.isinf(weight).any():  # nothing labeled or chosen yet
            pick = int(np.argmax(np.where(taken, -np.inf, np.sum(points**2, axis=-1))))
        elif weight.sum() <= 0.0:  # every remaining point sits on a chosen one
            pick = int(rng.choice(np.flatnonzero(~taken)))
        else:
            pick = int(rng.choice(weight.size, p=weight / weight.sum()))
        picks[i] = pick
        taken[pick] = True
        distance = np.minimum(distance, np.sum((points - points[pick]) ** 2, axis=-1))
    return picks


def _seed(key: PRNGKeyArray) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


class TypicalAcquisition(AbstractAcquisition):
    """TypiClust: the most typical example of each of the largest uncovered clusters of
    the chosen representation; the score is the typicality over all examples."""

    space: str = eqx.field(static=True)
    neighbours: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=0)
    label_free: ClassVar[bool] = True

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        points = density_representation(inputs, self.space)
        return jnp.asarray(typicality(points, self.neighbours), dtype=jnp.float32)

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        picks = typical_picks(
            representation(inputs, self.space), np.asarray(inputs.labeled), count,
            neighbours=self.neighbours, seed=_seed(key),
            density_points=density_representation(inputs, self.space),
        )
        return jnp.asarray(picks)


class CoverAcquisition(AbstractAcquisition):
    """Typicality to the power ``power`` times the squared distance to the nearest labeled
    or chosen example, maximised greedily (``greedy_cover``) in the chosen representation
    (typicality on ``density_representation``)."""

    space: str = eqx.field(static=True)
    neighbours: int = eqx.field(static=True)
    power: float = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=0)
    label_free: ClassVar[bool] = True

    def _weights(self, inputs: AcquisitionInputs) -> np.ndarray:
        density = typicality(density_representation(inputs, self.space), self.neighbours)
        return (density / density.max()) ** self.power

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        points = representation(inputs, self.space)
        distance = np.asarray(nearest_labeled(points, inputs.labeled), dtype=np.float64)
        distance[np.isinf(distance)] = 1.0
        return jnp.asarray(self._weights(inputs) * distance, dtype=jnp.float32)

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        return greedy_cover(representation(inputs, self.space), self._weights(inputs), inputs.labeled, count)


class BadgeAcquisition(AbstractAcquisition):
    """BADGE: k-means++ seeding over gradient embeddings; the score is the embedding's norm."""

    over: str = eqx.field(static=True)
    num_samples: int = eqx.field(static=True, default=0)
    label_free: ClassVar[bool] = True

    def score(self, inputs: AcquisitionInputs, key: PRNGKeyArray) -> Float[Array, " N"]:
        return jnp.asarray(np.linalg.norm(gradient_embedding(inputs, self.over), axis=-1), dtype=jnp.float32)

    def select(self, inputs: AcquisitionInputs, count: int, key: PRNGKeyArray) -> Int[Array, " count"]:
        points = gradient_embedding(inputs, self.over)
        picks = kmeans_plus_plus(points, np.asarray(inputs.labeled), count, np.random.default_rng(_seed(key)))
        return jnp.asarray(picks)


@dataclass(frozen=True)
class TypicalOptions:
    space: str = option(
        "auto",
        help="the representation: posterior means μ(x) standardised ('mean'), responsibilities q(c|x) (typicality then on μ(x)), "
        "both side by side, or 'auto': responsibilities once the channels have formed (confident and spread over the channels), else mean",
        choices=REPRESENTATIONS,
    )
    neighbours: int = option(20, help="nearest neighbours whose mean distance measures typicality", minimum=1)


@dataclass(frozen=True)
class CoverOptions(TypicalOptions):
    power: float = option(2.0, help="γ: how much typicality weighs against spread (0: k-center greedy)", minimum=0.0)


@dataclass(frozen=True)
class BadgeOptions:
    over: str = option(
        "auto",
        help="the softmax whose gradient embeds an example: q(c|x) over channels, p(y|x) over classes, or 'auto' (classes once anything is labeled)",
        choices=("auto", "channels", "classes"),
    )


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
class OODOptions:
    score: str = option(
        "certainty",
        help="the OOD score to rank by (docs/user-guide.md, \"Out-of-distribution scores\"); "
        "the blends and ratios need the run's training-data scores and background model",
        choices=OOD_SCORES,
    )
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
    "ood": ComponentFactory(
        OODAcquisition, OODOptions,
        lambda options, context, key: OODAcquisition(ood_score=options.score, balance=options.balance),
        "an OOD score: 1 − max_c r_c max_y τ_{c,y} (the head's certainty), or the one named by score",
    ),
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
    "typical": ComponentFactory(
        TypicalAcquisition, TypicalOptions,
        lambda options, context, key: TypicalAcquisition(space=options.space, neighbours=options.neighbours),
        "batch-aware, needs no label (TypiClust): the most typical example of each largest uncovered cluster",
    ),
    "cover": ComponentFactory(
        CoverAcquisition, CoverOptions,
        lambda options, context, key: CoverAcquisition(space=options.space, neighbours=options.neighbours, power=options.power),
        "batch-aware, needs no label: typicality^γ × squared distance to the nearest labeled or chosen example, greedily",
    ),
    "badge": ComponentFactory(
        BadgeAcquisition, BadgeOptions,
        lambda options, context, key: BadgeAcquisition(over=options.over),
        "batch-aware, needs no label (BADGE): k-means++ seeding over gradient embeddings (q(c|x) or p(y|x) − one-hot) ⊗ μ(x)",
    ),
}

