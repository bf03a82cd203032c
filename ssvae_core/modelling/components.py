"""What a plugin hands to the registry: a typed factory per component."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import PRNGKeyArray

from ssvae_core.modelling.conditioning import CONDITIONING_METHODS
from ssvae_core.modelling.likelihoods import AbstractLikelihood

KINDS = ("prior", "encoder", "decoder", "head", "loss_term", "acquisition")
"""The kinds of component, each with its config section (``loss_term``: ``[loss.<name>]``)
and its registration hook."""


@dataclass(frozen=True)
class BuildContext:
    """Everything a factory may need besides its own options.

    ``num_components`` is the built prior's ``K`` (0 while the prior itself is being built).
    ``data`` holds training inputs for data-dependent initialisation (k-means, random
    draws); it is ``None`` when a model skeleton is rebuilt to load a checkpoint.
    """

    input_shape: tuple[int, ...]
    latent_dim: int
    num_classes: int
    num_components: int
    conditioning: str
    embedding_dim: int
    likelihood: AbstractLikelihood
    data: np.ndarray | None = None


@dataclass(frozen=True)
class ComponentFactory:
    """A registered component.

    ``options`` is a frozen dataclass whose every field has a default (declare fields with
    ``ssvae_core.options.option``); ``build(options, context, key)`` returns an instance
    of ``component_type``, a final subclass of the protocol for the hook's kind.

    The remaining fields declare what the configuration needs to know before anything is
    built, so that ``head = "auto"`` and ``model.conditioning = "auto"`` are decided (and a
    combination that cannot work is refused) when the config is loaded:

    - a prior: ``channels``, whether it has channels (``K > 0``); ``conditions_decoder``,
      whether its channels condition the decoder. Each is a bool or a function of the
      prior's options returning one. By default a prior has channels exactly when
      ``component_type`` is an ``AbstractChannelPrior``, and channels condition the decoder.
    - a decoder: ``conditioning``, the methods of ``ssvae_core.modelling.conditioning`` it accepts
      (default: all of them; ``"none"`` always among them).
    - a head: ``needs_channels``, whether it needs a prior with channels (default ``False``).

    The built prior must agree with its declaration: ``build_model`` refuses one whose
    ``num_components`` or ``conditions_decoder`` says otherwise.
    """

    component_type: type
    options: type
    build: Callable[[Any, BuildContext, PRNGKeyArray], Any]
    description: str
    channels: bool | Callable[[Any], bool] | None = None
    conditions_decoder: bool | Callable[[Any], bool] | None = None
    conditioning: tuple[str, ...] = CONDITIONING_METHODS
    needs_channels: bool = False

    def default_options(self) -> Any:
        """The options with every default."""
        return self.options()

    def has_channels(self, options: Any) -> bool:
        """Whether the prior this factory builds from ``options`` has channels."""
        if self.channels is None:
            from ssvae_core.modelling.priors.channels import AbstractChannelPrior

            return isinstance(self.component_type, type) and issubclass(
                self.component_type, AbstractChannelPrior
            )
        return bool(self.channels(options) if callable(self.channels) else self.channels)

    def channels_condition_decoder(self, options: Any) -> bool:
        """Whether the channels of the prior built from ``options`` condition the decoder
        (never without channels)."""
        if not self.has_channels(options):
            return False
        declared = self.conditions_decoder
        if declared is None:
            return True
        return bool(declared(options) if callable(declared) else declared)

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.options):
            raise TypeError(f"options must be a dataclass, got {self.options!r}")
        methods = tuple(self.conditioning)
        unknown = [method for method in methods if method not in CONDITIONING_METHODS]
        if unknown or "none" not in methods:
            raise TypeError(
                "conditioning must list methods among "
                f"{', '.join(CONDITIONING_METHODS)}, 'none' included; got {methods!r}"
            )
