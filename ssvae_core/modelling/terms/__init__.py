"""Loss terms: the extension point (``base``) and the core's own terms (``builtin``)."""

from ssvae_core.modelling.terms.base import (
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
