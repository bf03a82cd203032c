"""The open label space: free channels, and new classes claiming them after training.

The τ head gives each channel to the labels whose examples it holds. Channels that no
label owns yet — unused (``p̂_c`` below a threshold) or holding almost none of the label
mass — are *free*. A label name the model has not seen claims 1–3 free channels, chosen by
where its first labeled examples already sit (their responsibilities restricted to the free
channels); τ's label axis grows by one column per new class, old rows untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssvae_core.errors import DataError

MAX_CLAIMED_CHANNELS = 3
# A further free channel is claimed while it holds at least this share of the responsibility
# mass of the best one.
CLAIM_SHARE = 0.25


def claim_channels(
    responsibilities: np.ndarray,
    free: np.ndarray,
    *,
    label: str,
    max_channels: int = MAX_CLAIMED_CHANNELS,
) -> tuple[int, ...]:
    """The free channels a new class ``label`` claims from its labeled examples.

    ``responsibilities`` is ``(n, K)``: ``q(c|x)`` of the class's labeled examples; ``free``
    is a boolean ``(K,)`` mask. Free channels are ranked by the responsibility mass the
    examples put on them; the best is claimed, and the next ones while they hold at least
    ``CLAIM_SHARE`` of the best one's mass, up to ``max_channels``.
    """
    responsibilities = np.asarray(responsibilities, dtype=np.float64)
    free = np.asarray(free, dtype=bool)
    candidates = np.flatnonzero(free)
    if candidates.size == 0:
        raise DataError(
            f"no free channel is left for the new class {label!r}: every one of the "
            f"{free.size} channels is owned by a label; train with more channels "
            "(e.g. --set prior.num_components=" + str(2 * free.size) + ")"
        )
    mass = responsibilities[:, candidates].sum(axis=0)
    order = candidates[np.argsort(-mass, kind="stable")]
    ranked = np.sort(mass)[::-1]
    chosen = [int(order[0])]
    for channel, value in zip(order[1:], ranked[1:], strict=True):
        if len(chosen) >= max_channels or value < CLAIM_SHARE * ranked[0] or value <= 0:
            break
        chosen.append(int(channel))
    return tuple(chosen)


def claim_for_classes(
    responsibilities: np.ndarray,
    labels: Sequence[str],
    new_names: Sequence[str],
    free: np.ndarray,
    optional: Sequence[str] = (),
) -> tuple[tuple[int, ...], ...]:
    """Claims for several new classes at once, in the order of ``new_names``; a channel
    claimed by one is no longer free for the next, and each leaves one free channel for
    every class after it (the first labels of a model trained without any name every
    class at once). ``labels[i]`` names the class of row ``i`` of ``responsibilities``.
    A class in ``optional`` (one τ already has a column for) claims nothing, ``()``, when
    no channel is free; any other class without one is a ``DataError``."""
    free = np.array(free, dtype=bool)
    names = np.asarray(list(labels), dtype=object)
    claims = []
    for position, name in enumerate(new_names):
        rows = responsibilities[names == name]
        later = len(new_names) - position - 1
        spare = int(free.sum()) - later
        if not free.any() and name in optional:
            claims.append(())
            continue
        chosen = claim_channels(rows, free, label=name, max_channels=max(1, min(MAX_CLAIMED_CHANNELS, spare)))
        free[list(chosen)] = False
        claims.append(chosen)
    return tuple(claims)


def channel_table(
    usage: np.ndarray,
    tau: np.ndarray | None,
    mass: np.ndarray | None,
    free: np.ndarray | None,
    label_names: Sequence[str],
) -> list[dict[str, object]]:
    """One row per channel: usage, owner label, τ row maximum, label-mass share, free."""
    rows: list[dict[str, object]] = []
    total = float(np.sum(mass)) if mass is not None else 0.0
    for channel, used in enumerate(np.asarray(usage, dtype=float)):
        row: dict[str, object] = {"channel": channel, "usage": round(float(used), 5)}
        is_free = bool(free[channel]) if free is not None else False
        if tau is not None:
            owner = int(np.argmax(tau[channel]))
            row["owner"] = None if is_free else label_names[owner]
            row["tau_max"] = round(float(np.max(tau[channel])), 4)
        if mass is not None:
            row["label_mass_share"] = round(float(mass[channel]) / total, 5) if total > 0 else 0.0
        row["free"] = is_free
        rows.append(row)
    return rows
