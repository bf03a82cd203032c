"""Channels that split when labels disagree.

The τ head gives each channel to the labels whose examples it holds (``docs/maths.md``,
"Why channels merge classes"). When labeled examples of two classes sit in one channel —
look-alike classes merged early, or a new label landing in a channel another label owns —
a warm retrain would keep them merged: τ only reweighs the shared channel. At the start of
a retrain this module finds such *conflicts* and resolves each by splitting the channel,
as split-and-merge EM splits a component:

1. ``plan_splits`` (pure numpy) reads the labeled examples' responsibilities ``q(c|x)``,
   τ's soft counts, the channel usage and the free channels, and decides which class
   stays, which class moves and to which target channel.
2. ``apply_splits`` copies the shared channel into the target: the encoder's logit row
   (weights and bias, both copies' biases lowered by ``log 2`` so every other channel keeps
   its responsibility), the channel's decoder embedding ``e_c`` and, for a mixture prior
   with a learned π, its weight (halved between the two), each copy slightly perturbed;
   τ's counts are reseeded so the old channel belongs to the staying class and the target
   to the moving one. The optimiser's moment estimates follow the copied parameters.

The two copies then start out identical for every example; the labeled examples break the
symmetry through the supervised loss, and the unlabeled look-alikes of the moving class
follow them during the retrain.

Where a component cannot be copied the split degrades, and the record says so: an encoder
whose channel logits are not a ``PosteriorHeads`` linear layer
keeps its logits (only τ's counts are reseeded: the target channel is *reassigned* to the
moving class and its labeled examples are pulled there by the supervised loss); a channel
prior other than the mixture keeps its per-channel parameters; a head without channels
(the softmax head on a prior without channels) has nothing to split, and a retrain runs
as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

# A class takes part in a channel when its labeled examples put at least MIN_MASS of
# responsibility there (in examples) and at least MIN_SHARE of the class's labeled mass.
MIN_MASS = 0.5
MIN_SHARE = 0.2
# Relative size of the perturbation of a copied parameter row (times the row's spread).
PERTURBATION = 0.01
# The logit margin between the two copies that separate() opens between the moving and the
# staying class's labeled examples (±2 each: responsibilities near 0.88 / 0.12).
SEPARATION = 4.0


@dataclasses.dataclass(frozen=True)
class ChannelSplit:
    """One resolved conflict: class ``moving`` leaves ``source`` for ``target``.

    ``reason`` is ``"shared"`` (labeled examples of both classes sit in ``source``) or
    ``"newcomer"`` (labels of ``moving`` land in a channel τ gives to ``staying`` and never
    counted ``moving`` in); ``target_was`` is ``"free"`` or ``"redundant"`` (a further
    channel of ``freed_from``, a class that owns two or more).
    """

    source: int
    target: int
    moving: int
    staying: int
    reason: str
    target_was: str
    mass: tuple[float, float]  # labeled mass of (staying, moving) in source
    freed_from: int | None = None

    def describe(self, names: Sequence[str]) -> str:
        why = (
            f"labeled examples of {names[self.staying]!r} ({self.mass[0]:.2f}) and "
            f"{names[self.moving]!r} ({self.mass[1]:.2f}) share channel {self.source}"
            if self.reason == "shared"
            else f"labels of {names[self.moving]!r} ({self.mass[1]:.2f}) land in channel "
            f"{self.source}, owned by {names[self.staying]!r}"
        )
        target = (
            f"free channel {self.target}"
            if self.target_was == "free"
            else f"channel {self.target}, freed from {names[self.freed_from or 0]!r} (which owns another)"
        )
        return f"{why}: {names[self.moving]!r} moves to {target}"

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "source": self.source,
            "target": self.target,
            "moving": names[self.moving],
            "staying": names[self.staying],
            "reason": self.reason,
            "target_was": self.target_was,
            "mass": [round(m, 4) for m in self.mass],
        }
        if self.freed_from is not None:
            record["freed_from"] = names[self.freed_from]
        record["why"] = self.describe(names)
        return record


@dataclasses.dataclass(frozen=True)
class Unresolved:
    """A conflict left as it is: ``classes`` share ``channel`` and no target was found."""

    channel: int
    classes: tuple[int, ...]
    moving: int

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "classes": [names[c] for c in self.classes],
            "moving": names[self.moving],
            "why": f"no free channel, and no channel could be freed for {names[self.moving]!r} "
            "(it owns another channel, or no class owns two); train with more channels, "
            "e.g. --set prior.num_components=" + str(2 * len(names)),
        }


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    splits: tuple[ChannelSplit, ...]
    unresolved: tuple[Unresolved, ...]


def _owners(counts: np.ndarray, free: np.ndarray) -> np.ndarray:
    """τ's owner of each channel (``argmax_y s_{c,y}``), ``-1`` for free channels."""
    owners = np.argmax(counts, axis=1)
    return np.where(free | (counts.sum(axis=1) <= 0), -1, owners)


def plan_splits(
    responsibilities: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    usage: np.ndarray,
    free: np.ndarray,
    *,
    min_mass: float = MIN_MASS,
    min_share: float = MIN_SHARE,
) -> SplitPlan:
    """The splits that separate classes sharing a channel.

    ``responsibilities`` ``(n, K)``: ``q(c|x)`` of the labeled examples, ``labels`` ``(n,)``
    their classes; ``counts`` ``(K, Y)``: τ's soft counts; ``usage`` ``(K,)``: ``p̂_c`` over
    the training data; ``free`` ``(K,)``: the head's free channels.

    Class ``y`` takes part in channel ``c`` when its labeled mass ``M_{c,y} = Σ_{i: y_i = y}
    r_c(x_i)`` is at least ``min_mass`` and at least ``min_share`` of the class's labeled
    mass, or when τ's counts put at least ``min_share`` of the class's count mass there and
    τ gives ``c`` to ``y``. A channel where two or more classes take part is a conflict: the
    class with the largest labeled mass there stays (ties: τ's owner), every other one moves.
    Conflicts whose moving class owns no channel are resolved first (a label τ never
    predicts), then by the moving class's mass.

    A moving class goes to a free channel (the least used one first); when none is left
    and the moving class owns no channel at all, to a *redundant* channel — the least used
    channel of a class that owns two or more, which keeps its others. A moving class that
    owns a channel elsewhere is never given another class's channel; such a conflict, and
    one with no target at all, is returned as ``Unresolved``.
    """
    r, y, counts, usage, free = _plan_inputs(responsibilities, labels, counts, usage, free)
    mass, count_share, owners, present = _participation(r, y, counts, free, min_mass, min_share)
    conflicts = _conflicts(present, mass, owners)
    return _resolve(conflicts, mass, count_share, owners, present, usage, free, min_share)


def _plan_inputs(
    responsibilities: np.ndarray, labels: np.ndarray, counts: np.ndarray, usage: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``plan_splits``'s inputs as arrays of the right types, their shapes checked."""
    r = np.asarray(responsibilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    usage = np.asarray(usage, dtype=np.float64)
    free = np.asarray(free, dtype=bool)
    num_channels, num_classes = counts.shape
    if r.ndim != 2 or r.shape[1] != num_channels or y.shape != (r.shape[0],):
        raise ValueError(
            f"responsibilities must be (n, {num_channels}) and labels (n,); got {r.shape} and {y.shape}"
        )
    if usage.shape != (num_channels,) or free.shape != (num_channels,):
        raise ValueError(f"usage and free must have shape ({num_channels},)")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got {y.min()}…{y.max()}")
    return r, y, counts, usage, free


def _participation(
    r: np.ndarray, y: np.ndarray, counts: np.ndarray, free: np.ndarray, min_mass: float, min_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mass, count_share, owners, present)``: each class's labeled mass and share of
    counts per channel ``(K, Y)``, τ's owner of each channel, and which classes take part
    in which channel (see ``plan_splits``)."""
    num_channels, num_classes = counts.shape
    mass = r.T @ np.eye(num_classes)[y] if y.size else np.zeros((num_channels, num_classes))
    class_mass = mass.sum(axis=0)
    count_share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1e-12)
    owners = _owners(counts, free)
    by_labels = (mass >= min_mass) & (mass >= min_share * class_mass[None, :])
    by_counts = (count_share >= min_share) & (owners[:, None] == np.arange(num_classes)[None, :])
    return mass, count_share, owners, by_labels | by_counts


def _conflicts(present: np.ndarray, mass: np.ndarray, owners: np.ndarray) -> list[tuple[int, int, int]]:
    """``(channel, staying, moving)`` for each class that must leave a shared channel, in
    the order they are resolved: a moving class owning no channel first, then by mass."""
    conflicts = []  # (priority, channel, staying, moving)
    for channel in range(present.shape[0]):
        classes = np.flatnonzero(present[channel])
        if classes.size < 2:
            continue
        order = sorted(classes, key=lambda c: (-mass[channel, c], owners[channel] != c, c))
        staying = int(order[0])
        for moving in order[1:]:
            owns_none = not np.any(owners == moving)
            conflicts.append(((not owns_none, -mass[channel, moving], channel), channel, staying, int(moving)))
    conflicts.sort(key=lambda item: item[0])
    return [(channel, staying, moving) for _, channel, staying, moving in conflicts]


def _redundant_channels(owned: dict[int, int], taken: set[int]) -> list[int]:
    """The channels not yet taken of every class that owns two or more (it keeps the rest)."""
    owner_channels: dict[int, list[int]] = {}
    for c, owner in owned.items():
        owner_channels.setdefault(owner, []).append(c)
    return [
        c for owner, chans in owner_channels.items() if len(chans) >= 2
        for c in chans if c not in taken
    ]


def _resolve(
    conflicts: Sequence[tuple[int, int, int]],
    mass: np.ndarray,
    count_share: np.ndarray,
    owners: np.ndarray,
    present: np.ndarray,
    usage: np.ndarray,
    free: np.ndarray,
    min_share: float,
) -> SplitPlan:
    """A target channel for each conflict in turn (a free one, else a redundant one for a
    class owning none), or the conflict left ``Unresolved``."""
    taken: set[int] = {channel for channel, _, _ in conflicts}
    owned = {int(c): int(o) for c, o in enumerate(owners) if o >= 0}
    splits: list[ChannelSplit] = []
    unresolved: list[Unresolved] = []
    for channel, staying, moving in conflicts:
        mass_pair = (float(mass[channel, staying]), float(mass[channel, moving]))
        reason = (
            "newcomer"
            if owners[channel] == staying and count_share[channel, moving] < min_share
            else "shared"
        )
        candidates = [c for c in np.flatnonzero(free) if c not in taken]
        target_was, freed_from = "free", None
        if not candidates and moving not in owned.values():
            candidates = _redundant_channels(owned, taken)
            target_was = "redundant"
        if not candidates:
            unresolved.append(Unresolved(channel, tuple(int(c) for c in np.flatnonzero(present[channel])), moving))
            continue
        target = int(min(candidates, key=lambda c: (usage[c], c)))
        if target_was == "redundant":
            freed_from = owned.pop(target)
        taken.add(target)
        owned[target] = moving
        splits.append(
            ChannelSplit(channel, target, moving, staying, reason, target_was, mass_pair, freed_from)
        )
    return SplitPlan(tuple(splits), tuple(unresolved))


# --- applying a plan to a model -------------------------------------------------------


def _copy_row(array: jax.Array, source: int, target: int, key: jax.Array | None, shift: float = 0.0) -> jax.Array:
    """``array`` with row ``target`` := row ``source`` (+ noise when ``key``), both + ``shift``."""
    row = array[source]
    copy = row
    if key is not None:
        spread = jnp.maximum(jnp.std(row), 1e-3) if row.ndim and row.size > 1 else jnp.maximum(jnp.abs(row), 1e-3)
        copy = row + PERTURBATION * spread * jax.random.normal(key, row.shape, row.dtype)
    return array.at[target].set(copy + shift).at[source].set(row + shift)


def _logit_layer(encoder: Any) -> Any | None:
    """The encoder's channel-logit layer, when it is a ``PosteriorHeads`` linear layer."""
    from ssvae_core.modelling.networks import PosteriorHeads

    heads = getattr(encoder, "heads", None)
    if isinstance(heads, PosteriorHeads) and heads.logits is not None:
        return heads.logits
    return None


def _split_params(model: Any, split: ChannelSplit, key: jax.Array | None, learn_pi: bool) -> Any:
    """Copy ``split.source`` into ``split.target`` in every channel-indexed parameter of
    ``model`` (an ``SSVAE``, or an optimiser moment tree of its
    shape, whose leaves may be ``None``); ``key`` perturbs the copy, ``None`` copies exactly
    (moments are copied without the ``log 2`` shift)."""
    from ssvae_core.modelling.priors.mixture import MixturePrior

    keys = jax.random.split(key, 4) if key is not None else [None] * 4
    shift = -float(np.log(2.0)) if key is not None else 0.0
    s, t = split.source, split.target
    layer = _logit_layer(model.encoder)
    if layer is not None and layer.weight is not None:
        model = eqx.tree_at(lambda m: m.encoder.heads.logits.weight, model, _copy_row(layer.weight, s, t, keys[0]))
        if layer.bias is not None:
            model = eqx.tree_at(
                lambda m: m.encoder.heads.logits.bias, model, _copy_row(layer.bias, s, t, None, shift)
            )
    if model.embeddings is not None:
        model = eqx.tree_at(lambda m: m.embeddings, model, _copy_row(model.embeddings, s, t, keys[2]))
    if learn_pi and isinstance(model.prior, MixturePrior) and model.prior.pi_logits is not None:
        model = eqx.tree_at(
            lambda m: m.prior.pi_logits, model, _copy_row(model.prior.pi_logits, s, t, None, shift)
        )
    return model


def split_support(model: Any) -> dict[str, bool]:
    """Which parts of ``model`` a split copies: ``encoder`` (the logit row), ``decoder``
    (the channel embedding), ``prior`` (mixture π or p(z|c) the same for every channel)."""
    from ssvae_core.modelling.priors.mixture import MixturePrior

    return {
        "encoder": _logit_layer(model.encoder) is not None,
        "decoder": model.embeddings is not None,
        "prior": isinstance(model.prior, MixturePrior),
    }


def _reseed(counts: jax.Array, split: ChannelSplit, seed: float) -> jax.Array:
    """τ's counts with ``source`` given to the staying class and ``target`` to the moving one."""
    total = jnp.maximum(jnp.sum(counts[split.source]), seed)
    num_classes = counts.shape[1]
    stay = jax.nn.one_hot(split.staying, num_classes, dtype=counts.dtype) * total
    move = jax.nn.one_hot(split.moving, num_classes, dtype=counts.dtype) * total
    return counts.at[split.source].set(stay).at[split.target].set(move)


def separate(model: Any, split: ChannelSplit, x_moving: np.ndarray, x_staying: np.ndarray) -> Any:
    """Turn the two copies of a split apart along the direction that separates the two
    classes' labeled examples.

    ``D = mean_moving(l_t − l_s) − mean_staying(l_t − l_s)`` over the logits ``l`` is linear
    in the logit layer's weights; one step along its gradient (rows ``s`` and ``t`` only,
    in opposite directions) brings ``D`` to ``SEPARATION``; the two biases then move
    apart by the mean gap so the classes sit on either side of the tie. The labeled
    examples of the moving class start out mostly in the target, the staying class's in
    the source, and examples whose features resemble either follow. ``model`` is unchanged when its logits
    are not a ``PosteriorHeads`` layer or either class has no labeled example.
    """
    layer = _logit_layer(model.encoder)
    if layer is None or len(x_moving) == 0 or len(x_staying) == 0:
        return model
    s, t = split.source, split.target
    moving, staying = jnp.asarray(x_moving, jnp.float32), jnp.asarray(x_staying, jnp.float32)

    def margin(weight: jax.Array) -> jax.Array:
        shifted = eqx.tree_at(lambda m: m.encoder.heads.logits.weight, model, weight)
        gap_moving = shifted.encode(moving).logits
        gap_staying = shifted.encode(staying).logits
        return jnp.mean(gap_moving[:, t] - gap_moving[:, s]) - jnp.mean(gap_staying[:, t] - gap_staying[:, s])

    value, gradient = jax.value_and_grad(margin)(layer.weight)
    norm = jnp.sum(gradient**2)
    step = jnp.where(norm > 0, jnp.maximum(SEPARATION - value, 0.0) / jnp.maximum(norm, 1e-12), 0.0)
    model = eqx.tree_at(lambda m: m.encoder.heads.logits.weight, model, layer.weight + step * gradient)
    if layer.bias is None:
        return model
    # centre the two classes around the tie: the biases move apart by the mean gap
    gap_moving, gap_staying = model.encode(moving).logits, model.encode(staying).logits
    centre = 0.5 * (jnp.mean(gap_moving[:, t] - gap_moving[:, s]) + jnp.mean(gap_staying[:, t] - gap_staying[:, s]))
    bias = model.encoder.heads.logits.bias
    return eqx.tree_at(
        lambda m: m.encoder.heads.logits.bias, model,
        bias.at[t].add(-0.5 * centre).at[s].add(0.5 * centre),
    )


def apply_splits(
    model: Any,
    head_state: jax.Array,
    opt_state: Any,
    splits: Sequence[ChannelSplit],
    key: jax.Array,
    *,
    inputs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> tuple[Any, jax.Array, Any]:
    """``(model, head_state, opt_state)`` with every split of ``splits`` applied (see the
    module docstring); the optimiser's moments of a copied row are copied too. With the
    labeled ``inputs`` and their ``labels``, each pair of copies is turned apart
    (``separate``)."""
    from ssvae_core.modelling.model import SSVAE

    learn_pi = bool(getattr(model.prior, "learn_pi", False))
    seed = max(float(getattr(model.head, "initial_counts", 0.0)), 1.0)
    for split, split_key in zip(splits, jax.random.split(key, max(len(splits), 1)), strict=False):
        model = _split_params(model, split, split_key, learn_pi)
        if inputs is not None and labels is not None:
            model = separate(model, split, inputs[labels == split.moving], inputs[labels == split.staying])
        head_state = _reseed(head_state, split, seed)
        opt_state = jax.tree_util.tree_map(
            lambda node, split=split: _split_params(node, split, None, learn_pi)
            if isinstance(node, SSVAE) else node,
            opt_state,
            is_leaf=lambda node: isinstance(node, SSVAE),
        )
    return model, head_state, opt_state


__all__ = [
    "ChannelSplit", "SplitPlan", "Unresolved", "apply_splits", "plan_splits", "separate", "split_support",
]
