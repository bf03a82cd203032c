"""What a plugin hands to the registry: a typed factory per component."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import PRNGKeyArray

from ssvae_core.likelihoods import AbstractLikelihood

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
    """

    component_type: type
    options: type
    build: Callable[[Any, BuildContext, PRNGKeyArray], Any]
    description: str

    def default_options(self) -> Any:
        """The options with every default."""
        return self.options()

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.options):
            raise TypeError(f"options must be a dataclass, got {self.options!r}")
