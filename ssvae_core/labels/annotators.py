"""Who labeled what: per-annotator counts and their agreement with the consensus.

The label store keeps each annotator's label of an example (``annotator``, see
``ssvae_core.labels.store``); an example's current label is the consensus of its annotators'
labels. ``agreement`` reports, for ``ssvae labels`` and the studio, how many examples
each annotator labeled, and on the examples labeled by several, how often each agrees with
the consensus and the mean share of annotators that do.
"""

from __future__ import annotations

from typing import Any

from ssvae_core.labels.store import LabelStore

ANONYMOUS = "(no annotator)"

__all__ = ["ANONYMOUS", "agreement"]


def agreement(store: LabelStore) -> dict[str, Any]:
    """``{"annotators": {name: {"labels", "shared", "agreed"}}, "shared": n, "agreement": a}``:
    per annotator (labels without one under ``ANONYMOUS``) the examples it labeled,
    those among them that others labeled too and how many of those it labeled as the
    consensus; ``agreement`` is the mean share of annotators agreeing with the consensus over
    the ``shared`` examples labeled by several (``None`` when there is none)."""
    current = store.current()
    per: dict[str, dict[str, int]] = {}
    shares: list[float] = []
    for index, ballot in store.ballots().items():
        several = len(ballot) > 1
        if several:
            shares.append(sum(label == current[index] for label in ballot.values()) / len(ballot))
        for voter, label in ballot.items():
            row = per.setdefault(voter or ANONYMOUS, {"labels": 0, "shared": 0, "agreed": 0})
            row["labels"] += 1
            if several:
                row["shared"] += 1
                row["agreed"] += int(label == current[index])
    return {
        "annotators": dict(sorted(per.items())),
        "shared": len(shares),
        "agreement": round(sum(shares) / len(shares), 4) if shares else None,
    }
