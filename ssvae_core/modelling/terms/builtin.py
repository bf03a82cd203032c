"""The core's loss terms, registered through ``ssvae_register_loss_terms`` like any plugin's.

Each term is one module class, an options dataclass (config table ``[loss.<name>]``) and a
factory. In the objective they are summed in the order registered here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.data.graph import (
    blur_option,
    choose_features_option,
    clusters_to_channels,
    deskew_option,
    graph_labels,
    metric_option,
    propagate_labels,
    smoothed_rows,
    spectral_clusters,
)
from ssvae_core.data.neighbours import nearest_neighbours
from ssvae_core.data.propagation import choose_features
from ssvae_core.modelling.components import BuildContext, ComponentFactory
from ssvae_core.modelling.losses import (
    agreement_loss,
    confident_pseudo_labels,
    embedding_repulsion,
    entropy,
    view_mutual_information,
)
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms.base import (
    AbstractLossTerm,
    AbstractPreparedTerm,
    TermInputs,
    TermOptions,
    TermValue,
)
from ssvae_core.modelling.types import reparameterise
from ssvae_core.options import option

# --- supervised ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SupervisedOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"supervised_weight": "weight"}
    weight: float = option(10.0, help="λ_sup of the head's supervised loss on the labeled rows")


class SupervisedTerm(AbstractLossTerm):
    """``−log p(y|x)`` from the head, on the labeled rows (``λ_sup``)."""

    weight: Schedule

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        values = inputs.model.head.supervised_loss(
            inputs.posterior, inputs.z, inputs.labels, inputs.head_state
        )
        return TermValue(values, inputs.labeled)


# --- usage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"usage_weight": "weight"}
    weight: float = option(
        -5.0, help="w_u of the usage entropy H(p̂): > 0 concentrates, < 0 diversifies"
    )
    spread: str = option(
        "classes",
        help="'classes': H(p̂) counts up to Y equally used channels (min(H, log Y)), so channels beyond the classes are not pushed into use and stay free; 'channels': all K",
        choices=("classes", "channels"),
    )


class UsageTerm(AbstractLossTerm):
    """``H(p̂)`` with ``p̂ = mean_batch r(x)``: a batch statistic of channel usage.

    With ``cap`` set (``spread = "classes"``: ``log Y``) the value is ``min(H(p̂), cap)``:
    a negative weight spreads the data over as many channels as there are classes and no
    further, so with more channels than classes the rest are not pushed into use. With
    ``K = Y`` the cap is never reached (``H ≤ log K``) and the term is plain ``H(p̂)``.
    """

    weight: Schedule
    cap: float | None = eqx.field(static=True, default=None)
    requires: ClassVar[frozenset[str]] = frozenset({"channels"})
    per_example: ClassVar[bool] = False

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        value = entropy(jnp.mean(inputs.responsibilities, axis=0))
        if self.cap is not None:
            value = jnp.minimum(value, self.cap)
        return TermValue(value)


# --- consistency ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"consistency_weight": "weight"}
    weight: float = option(
        5.0, help="weight of −log Σ_c r_c(x) r_c(x') between an image and an augmented view", minimum=0.0
    )
    detach_view: bool = option(
        False,
        help="use the view's responsibilities as a fixed target (no gradient through the view's encoding): one encoder backward pass fewer per step",
    )


class ConsistencyTerm(AbstractLossTerm):
    """``−log Σ_c r_c(x) r_c(x')`` between each image and an augmented view ``x'``.

    With ``detach_view`` the view's responsibilities are a target, ``−log Σ_c r_c(x)
    sg(r_c(x'))``: only the image's encoding is pulled towards the view's.
    """

    weight: Schedule
    detach_view: bool = eqx.field(static=True, default=False)
    requires: ClassVar[frozenset[str]] = frozenset({"channels", "x_view"})

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        view = inputs.encode_view().responsibilities
        assert view is not None
        if self.detach_view:
            view = jax.lax.stop_gradient(view)
        return TermValue(agreement_loss(inputs.responsibilities, view))


# --- mutual information of two views --------------------------------------------------------


@dataclass(frozen=True)
class MutualInformationOptions(TermOptions):
    weight: float = option(
        0.0,
        help="weight of −I(c; c'), the mutual information of the channels of an image and its augmented view (invariant information clustering)",
        minimum=0.0,
    )
    marginal_weight: float = option(
        1.0,
        help="λ of Σ P_cc' (log P_cc' − λ log P_c − λ log P_c'): 1 is the mutual information, > 1 favours balanced channel usage more",
        minimum=0.0,
    )


class MutualInformationTerm(AbstractLossTerm):
    """``−I_λ(c; c')`` between the channels of a batch and of its augmented views: a
    clustering objective on the responsibilities alone (no labels, no reconstruction)."""

    weight: Schedule
    marginal_weight: Float[Array, ""]
    requires: ClassVar[frozenset[str]] = frozenset({"channels", "x_view"})
    per_example: ClassVar[bool] = False

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        view = inputs.encode_view().responsibilities
        assert view is not None
        information = view_mutual_information(inputs.responsibilities, view, self.marginal_weight)
        return TermValue(-information)


# --- neighbour ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeighbourOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"neighbour_weight": "weight", "num_neighbours": "neighbours"}
    weight: float = option(
        0.0, help="weight of −log Σ_c r_c(x) r_c(n) between an image and one of its nearest neighbours", minimum=0.0
    )
    neighbours: int = option(5, help="k of the k-nearest-neighbour pairs (pixel space)", minimum=1)


class NeighbourTerm(AbstractPreparedTerm):
    """``−log Σ_c r_c(x) r_c(n)`` with ``n`` a random one of ``x``'s k nearest neighbours."""

    weight: Schedule
    neighbours: int = eqx.field(static=True)
    requires: ClassVar[frozenset[str]] = frozenset({"channels"})

    def prepare(self, x: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
        return {"neighbours": nearest_neighbours(x, self.neighbours).astype(np.int32)}

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        assert inputs.train_x is not None, "the neighbour term needs the training inputs"
        candidates = inputs.field("neighbours")
        pick = jax.random.randint(key, (candidates.shape[0],), 0, candidates.shape[1])
        rows = candidates[jnp.arange(candidates.shape[0]), pick]
        partner = inputs.model.encode(inputs.train_x[rows]).responsibilities
        return TermValue(agreement_loss(inputs.responsibilities, partner))


# --- pseudo-labels --------------------------------------------------------------------------


@dataclass(frozen=True)
class PseudoLabelOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"pseudo_label_weight": "weight", "pseudo_label_threshold": "threshold"}
    weight: float = option(
        0.0,
        help="weight of the supervised loss on an augmented view of unlabeled rows whose own p(y|x) is confident",
        minimum=0.0,
    )
    threshold: float = option(
        0.95, help="least max_y p(y|x) of the clean image for its argmax to become a pseudo-label", minimum=0.0, maximum=1.0
    )


class PseudoLabelTerm(AbstractLossTerm):
    """The head's supervised loss on the view of each unlabeled row whose clean image the
    head classifies with ``max_y p(y|x) ≥ θ``, towards that prediction."""

    weight: Schedule
    threshold: Float[Array, ""]
    requires: ClassVar[frozenset[str]] = frozenset({"channels", "x_view"})

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        head, state = inputs.model.head, inputs.head_state
        targets, confident = confident_pseudo_labels(
            head.predict_proba(inputs.posterior, inputs.z, state), inputs.labels, self.threshold
        )
        view = inputs.encode_view()
        values = head.supervised_loss(view, reparameterise(view, key), targets, state)
        unlabeled = 1.0 - inputs.labeled
        share = jnp.sum(confident) / jnp.maximum(jnp.sum(unlabeled), 1.0)
        return TermValue(values, confident, {"pseudo_label_share": share})


# --- embedding repulsion --------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingRepulsionOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"embedding_repulsion": "weight"}
    weight: float = option(
        0.0, help="weight of the RBF repulsion between component embeddings e_c", minimum=0.0
    )


class EmbeddingRepulsionTerm(AbstractLossTerm):
    """``mean_{c≠c'} exp(−‖e_c − e_{c'}‖² / 2E)`` on the component embeddings."""

    weight: Schedule
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})
    per_example: ClassVar[bool] = False

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        return TermValue(embedding_repulsion(inputs.model.embeddings))


# --- graph labels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphLabelOptions(TermOptions):
    former_keys: ClassVar[Mapping[str, str]] = {"graph_label_weight": "weight", "graph_label_share": "share", "graph_neighbours": "neighbours", "graph_alpha": "alpha"}
    weight: float = option(
        5.0,
        help="weight of the supervised loss on unlabeled rows given a label by propagation over the input kNN graph",
        minimum=0.0,
    )
    share: float = option(
        0.8, help="share of the unlabeled training rows, most confident first, that get a propagated label", minimum=0.0, maximum=1.0
    )
    neighbours: int = option(10, help="k of the kNN graph the labels propagate over", minimum=1)
    alpha: float = option(
        0.9, help="α of the propagation F ← αSF + (1 − α)Y, 0 < α < 1 (larger reaches further)", minimum=0.0, exclusive_minimum=True
    )
    per_class: bool = option(
        True,
        help="take the share most confident rows within each propagated class rather than over all rows, so every class keeps its share of graph labels",
    )
    blur: float = blur_option()
    deskew: bool = deskew_option()
    metric: str = metric_option()
    choose_features: bool = choose_features_option()

    def validate(self) -> None:
        if self.alpha >= 1.0:
            raise ValueError(f"alpha must be < 1, got {self.alpha:g}")


class GraphLabelTerm(AbstractPreparedTerm):
    """The head's supervised loss on unlabeled rows labeled by propagation over the input
    kNN graph (``ssvae_core.data.graph``); those labels never reach the τ counts.

    ``share``, ``neighbours``, ``alpha``, ``per_class``, ``blur``, ``deskew``, ``metric``
    and ``choose_features`` are read on the host by ``prepare`` only, in full precision; as
    static fields, changing one of them compiles the step anew. With ``choose_features``
    the graph is built from ``blur`` and ``deskew`` or from the plain pixels, whichever
    propagates the held-out labels better (``ssvae_core.data.propagation.choose_features``).
    """

    weight: Schedule
    share: float = eqx.field(static=True)
    neighbours: int = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    per_class: bool = eqx.field(static=True)
    blur: float = eqx.field(static=True, default=0.0)
    deskew: bool = eqx.field(static=True, default=False)
    choose_features: bool = eqx.field(static=True, default=False)
    metric: str = eqx.field(static=True, default="euclidean")

    def prepare(self, x: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
        blur, deskew = self.blur, self.deskew
        if self.choose_features:
            choice = choose_features(
                x, labels, num_classes, blur=blur, deskew=deskew, metric=self.metric,
                neighbours=self.neighbours, alpha=self.alpha,
            )
            blur, deskew = choice.blur, choice.deskew
        propagated = graph_labels(
            smoothed_rows(x, blur, deskew=deskew, metric=self.metric),
            labels,
            num_classes,
            share=self.share,
            num_neighbours=self.neighbours,
            alpha=self.alpha,
            per_class=self.per_class,
        )
        return {"graph_labels": propagated}

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        targets = jnp.where(inputs.labels >= 0, -1, inputs.field("graph_labels"))
        values = inputs.model.head.supervised_loss(
            inputs.posterior, inputs.z, targets, inputs.head_state
        )
        return TermValue(values, (targets >= 0).astype(jnp.float32))


# --- graph clusters -------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphClusterOptions(TermOptions):
    weight: float = option(
        0.0,
        help="weight of −log r_c(x) towards the channel matched to x's spectral cluster of the input kNN graph (channels that form before any label)",
        minimum=0.0,
    )
    neighbours: int = option(10, help="k of the kNN graph the clusters are cut from", minimum=1)
    blur: float = blur_option()
    deskew: bool = deskew_option()
    metric: str = metric_option()
    only_without_labels: bool = option(
        True,
        help="act only in a run with no label at all (the channels form before labels count; once labels exist, as in the label loop's later rounds, the term does nothing); false: in every run",
    )


class GraphClusterTerm(AbstractPreparedTerm):
    """``−log r_{m(j(x))}(x)`` on the unlabeled rows: ``j(x)`` the spectral cluster of ``x``
    in the input kNN graph (one cluster per channel), ``m`` the matching of clusters to
    channels (``ssvae_core.data.graph.clusters_to_channels``: by the labels propagated over
    the same graph, so the cluster holding label ``y`` goes to the channel the τ head seeds
    for ``y``; without labels, cluster ``j`` to channel ``j``).

    The channels start from the graph's cluster structure instead of from wherever the
    encoder's first steps put them; the other terms refine them. With
    ``only_without_labels`` a run that has any label gets no targets (the term is 0).
    ``neighbours``, ``blur``, ``deskew``, ``metric`` and ``only_without_labels`` are read on the host
    by ``prepare`` only.
    """

    weight: Schedule
    clusters: int = eqx.field(static=True)
    neighbours: int = eqx.field(static=True)
    blur: float = eqx.field(static=True)
    only_without_labels: bool = eqx.field(static=True, default=True)
    deskew: bool = eqx.field(static=True, default=False)
    metric: str = eqx.field(static=True, default="euclidean")
    requires: ClassVar[frozenset[str]] = frozenset({"channels"})

    def prepare(self, x: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
        labels = np.asarray(labels)
        if self.only_without_labels and np.any(labels >= 0):
            return {"cluster_targets": np.full(labels.shape[0], -1, dtype=np.int32)}
        rows = smoothed_rows(x, self.blur, deskew=self.deskew, metric=self.metric)
        clusters = spectral_clusters(rows, self.clusters, num_neighbours=self.neighbours)
        mass = None
        if np.any(labels >= 0):
            mass = propagate_labels(rows, labels, num_classes, num_neighbours=self.neighbours, alpha=0.9)
        targets = clusters_to_channels(clusters, mass, self.clusters)[clusters]
        return {"cluster_targets": np.where(labels >= 0, -1, targets).astype(np.int32)}

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        targets = inputs.field("cluster_targets")
        chosen = jnp.take_along_axis(inputs.responsibilities, jnp.clip(targets, 0)[:, None], axis=-1)[:, 0]
        values = -jnp.log(jnp.clip(chosen, 1e-8))
        return TermValue(values, (targets >= 0).astype(jnp.float32))


# --- factories ------------------------------------------------------------------------------


def _supervised(options: SupervisedOptions, context: BuildContext, key: PRNGKeyArray) -> SupervisedTerm:
    return SupervisedTerm(options.schedule())


def _usage(options: UsageOptions, context: BuildContext, key: PRNGKeyArray) -> UsageTerm:
    spread_over_classes = options.spread == "classes" and 1 < context.num_classes < context.num_components
    cap = float(np.log(context.num_classes)) if spread_over_classes else None
    return UsageTerm(options.schedule(), cap)


def _consistency(options: ConsistencyOptions, context: BuildContext, key: PRNGKeyArray) -> ConsistencyTerm:
    return ConsistencyTerm(options.schedule(), detach_view=options.detach_view)


def _mutual_information(
    options: MutualInformationOptions, context: BuildContext, key: PRNGKeyArray
) -> MutualInformationTerm:
    return MutualInformationTerm(
        options.schedule(), jnp.asarray(options.marginal_weight, dtype=jnp.float32)
    )


def _neighbour(options: NeighbourOptions, context: BuildContext, key: PRNGKeyArray) -> NeighbourTerm:
    return NeighbourTerm(options.schedule(), options.neighbours)


def _pseudo_label(options: PseudoLabelOptions, context: BuildContext, key: PRNGKeyArray) -> PseudoLabelTerm:
    return PseudoLabelTerm(options.schedule(), jnp.asarray(options.threshold, dtype=jnp.float32))


def _embedding_repulsion(
    options: EmbeddingRepulsionOptions, context: BuildContext, key: PRNGKeyArray
) -> EmbeddingRepulsionTerm:
    return EmbeddingRepulsionTerm(options.schedule())


def _graph_label(options: GraphLabelOptions, context: BuildContext, key: PRNGKeyArray) -> GraphLabelTerm:
    return GraphLabelTerm(
        options.schedule(),
        share=options.share,
        neighbours=options.neighbours,
        alpha=options.alpha,
        per_class=options.per_class,
        blur=options.blur,
        deskew=options.deskew,
        choose_features=options.choose_features,
        metric=options.metric,
    )


def _graph_cluster(options: GraphClusterOptions, context: BuildContext, key: PRNGKeyArray) -> GraphClusterTerm:
    return GraphClusterTerm(
        options.schedule(),
        clusters=context.num_components,
        neighbours=options.neighbours,
        blur=options.blur,
        only_without_labels=options.only_without_labels,
        deskew=options.deskew,
        metric=options.metric,
    )


LOSS_TERMS: dict[str, ComponentFactory] = {
    "usage": ComponentFactory(
        UsageTerm, UsageOptions, _usage, "Entropy of the batch-mean responsibilities (channel usage)"
    ),
    "consistency": ComponentFactory(
        ConsistencyTerm, ConsistencyOptions, _consistency,
        "Agreement of the responsibilities of an image and its augmented view",
    ),
    "mutual_information": ComponentFactory(
        MutualInformationTerm, MutualInformationOptions, _mutual_information,
        "Mutual information of the channels of an image and its augmented view (IIC)",
    ),
    "neighbour": ComponentFactory(
        NeighbourTerm, NeighbourOptions, _neighbour,
        "Agreement of the responsibilities of an image and a pixel-space nearest neighbour",
    ),
    "pseudo_label": ComponentFactory(
        PseudoLabelTerm, PseudoLabelOptions, _pseudo_label,
        "Supervised loss on augmented views of confidently classified unlabeled rows",
    ),
    "embedding_repulsion": ComponentFactory(
        EmbeddingRepulsionTerm, EmbeddingRepulsionOptions, _embedding_repulsion,
        "RBF repulsion between the component embeddings",
    ),
    "supervised": ComponentFactory(
        SupervisedTerm, SupervisedOptions, _supervised, "The head's supervised loss on labeled rows"
    ),
    "graph_label": ComponentFactory(
        GraphLabelTerm, GraphLabelOptions, _graph_label,
        "Supervised loss on rows labeled by propagation over the input kNN graph",
    ),
    "graph_cluster": ComponentFactory(
        GraphClusterTerm, GraphClusterOptions, _graph_cluster,
        "Responsibilities pulled towards the channels matched to the input kNN graph's spectral clusters",
    ),
}
