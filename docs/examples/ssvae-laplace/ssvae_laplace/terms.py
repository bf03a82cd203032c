"""An example loss term: entropy minimisation on the responsibilities.

    H(r(x)) = −Σ_c r_c(x) log r_c(x)

per example, averaged over the unlabeled rows (or over every row): each input is pushed
towards one channel, so the decision boundaries between channels move into low-density
regions of the data (Grandvalet & Bengio, 2005, "Semi-supervised learning by entropy
minimization"). Off by default (weight 0): turn it on with ``--set
loss.responsibility_entropy.weight=0.5`` or a ``[loss.responsibility_entropy]`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
from jaxtyping import PRNGKeyArray

from ssvae_core.plugin import (
    AbstractLossTerm,
    Schedule,
    TermInputs,
    TermOptions,
    TermValue,
    entropy,
    option,
)


@dataclass(frozen=True)
class ResponsibilityEntropyOptions(TermOptions):
    # ``weight`` (default 0: off) and ``warmup_steps`` come from TermOptions.
    unlabeled_only: bool = option(True, help="average over the unlabeled rows only (else every row)")


class ResponsibilityEntropyTerm(AbstractLossTerm):
    """``H(r(x))`` per example; the mask selects the unlabeled rows when ``unlabeled_only``."""

    weight: Schedule
    unlabeled_only: bool = eqx.field(static=True)
    requires: ClassVar[frozenset[str]] = frozenset({"channels"})

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        values = entropy(inputs.responsibilities)
        mask = 1.0 - inputs.labeled if self.unlabeled_only else None
        return TermValue(values, mask)
