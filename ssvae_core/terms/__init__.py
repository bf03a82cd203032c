"""Loss terms: the extension point (:mod:`.base`) and the core's own terms (:mod:`.builtin`)."""

from ssvae_core.terms.base import (
    AbstractLossTerm,
    AbstractPreparedTerm,
    TermInputs,
    TermOptions,
    TermValue,
    masked_mean,
    prepared_fields,
)

__all__ = [
    "AbstractLossTerm",
    "AbstractPreparedTerm",
    "TermInputs",
    "TermOptions",
    "TermValue",
    "masked_mean",
    "prepared_fields",
]
