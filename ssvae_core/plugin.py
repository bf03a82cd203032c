"""The plugin API: everything a plugin may import from ``ssvae_core``.

A plugin package imports from ``ssvae_core`` through three modules only:

- ``ssvae_core.plugin`` (this module) — the protocols its components implement, the typed
  containers they exchange, the registration machinery (factories, options, the hook
  marker) and the building blocks and maths helpers the built-in components use;
- ``ssvae_core.testing`` — the conformance kit, for its tests;
- ``ssvae_core`` — the user API (``SSVAEClassifier``, ``config_from_dict``,
  ``build_model``, ``Registry``, the errors, ...), for end-to-end tests.

Every other module of ``ssvae_core`` is internal and may change without notice.
``tests/test_plugin_api.py`` enforces the rule for the packages under ``plugins/`` and
``docs/examples/``; ``docs/plugins.md`` walks through writing a plugin with these names.
"""

from __future__ import annotations

from ssvae_core.data.augment import channels_last
from ssvae_core.hookspecs import hookimpl
from ssvae_core.modelling.components import KINDS, BuildContext, ComponentFactory
from ssvae_core.modelling.conditioning import CONDITIONING_METHODS, ComponentConditioning
from ssvae_core.modelling.likelihoods import AbstractLikelihood, make_likelihood
from ssvae_core.modelling.losses import (
    categorical_kl,
    diagonal_gaussian_log_density,
    dirichlet_penalty,
    entropy,
    gaussian_kl,
)
from ssvae_core.modelling.model import reparameterise
from ssvae_core.modelling.networks import PosteriorHeads, bounded_log_var
from ssvae_core.modelling.networks.dense import ACTIVATIONS
from ssvae_core.modelling.priors.channels import (
    AbstractChannelPrior,
    pi_log_weights,
    pi_logits_field,
    pi_regularisers,
    uniform_log_weights,
)
from ssvae_core.modelling.protocols import (
    AbstractAcquisition,
    AbstractChannelFreeHead,
    AbstractDecoder,
    AbstractEncoder,
    AbstractHead,
    AbstractPrior,
    AbstractTopScoreAcquisition,
    top_unlabeled,
)
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms import (
    AbstractLossTerm,
    AbstractPreparedTerm,
    TermInputs,
    TermOptions,
    TermValue,
    masked_mean,
)
from ssvae_core.modelling.types import AcquisitionInputs, DecoderOutput, EncoderOutput
from ssvae_core.options import option
from ssvae_core.runs.tracking import TrackerContext, TrackerFactory, TrackerSink

# One sorted list per topic; a new topic is one more ``__all__ += [...]`` block.

# Protocols: the abstract modules a component implements (a final subclass that fills in
# abstract methods and overrides no concrete one), and the abstract intermediate classes that
# hold behaviour shared by several components.
__all__ = [
    "AbstractAcquisition",
    "AbstractChannelFreeHead",
    "AbstractChannelPrior",
    "AbstractDecoder",
    "AbstractEncoder",
    "AbstractHead",
    "AbstractLikelihood",
    "AbstractPrior",
    "AbstractTopScoreAcquisition",
]

# Loss terms: the base class, its options, what it reads and returns, its weight schedule.
__all__ += [
    "AbstractLossTerm",
    "AbstractPreparedTerm",
    "Schedule",
    "TermInputs",
    "TermOptions",
    "TermValue",
    "masked_mean",
]

# Typed containers that components exchange.
__all__ += [
    "AcquisitionInputs",
    "DecoderOutput",
    "EncoderOutput",
]

# Registration: factories, their build context and options, the hook marker.
__all__ += [
    "KINDS",
    "BuildContext",
    "ComponentFactory",
    "hookimpl",
    "option",
]

# Trackers (``--track NAME``): the factory a plugin registers, what it is opened with, the sink.
__all__ += [
    "TrackerContext",
    "TrackerFactory",
    "TrackerSink",
]

# Building blocks shared with the built-in components.
__all__ += [
    "ACTIVATIONS",
    "CONDITIONING_METHODS",
    "ComponentConditioning",
    "PosteriorHeads",
    "bounded_log_var",
    "channels_last",
    "make_likelihood",
    "pi_log_weights",
    "pi_logits_field",
    "pi_regularisers",
    "reparameterise",
    "top_unlabeled",
    "uniform_log_weights",
]

# Maths helpers (each docstring carries its formula).
__all__ += [
    "categorical_kl",
    "diagonal_gaussian_log_density",
    "dirichlet_penalty",
    "entropy",
    "gaussian_kl",
]
