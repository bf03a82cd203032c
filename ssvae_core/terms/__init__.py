"""Loss terms: the extension point (:mod:`.base`) and the core's own terms (:mod:`.builtin`)."""

from ssvae_core.terms.base import (
    AbstractLossTerm,
    TermInputs,
    TermOptions,
    TermValue,
    masked_mean,
)

__all__ = ["AbstractLossTerm", "TermInputs", "TermOptions", "TermValue", "masked_mean"]
