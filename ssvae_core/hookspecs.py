"""Hook specifications: the contract between ssvae and every plugin, built-in or external.

A plugin is a module (or object) with functions decorated by ``hookimpl`` and named
after the specifications below; it is registered through the entry-point group ``ssvae``:

    [project.entry-points.ssvae]
    my_prior = "my_package.plugin"

Each hook returns ``{name: ComponentFactory}``. The core's own components (priors
``standard`` and ``mixture``, the ``dense`` networks, heads ``tau`` and ``softmax``, and the
loss terms, the acquisition functions) are registered through these same hooks by ``ssvae_core.builtin``.
"""

from __future__ import annotations

import pluggy

from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.runs.tracking import TrackerFactory

PROJECT_NAME = "ssvae"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""The decorator of a plugin's hook functions (``@hookimpl def ssvae_register_priors(): ...``)."""


@hookspec
def ssvae_register_priors() -> dict[str, ComponentFactory]:
    """Return priors by name.

    Each factory's ``build(options, context, key)`` returns a final subclass of
    ``ssvae_core.modelling.protocols.AbstractPrior``. A prior with ``num_components > 0`` gets
    the τ head automatically; its KL terms must be finite, per example, and (where they are
    true KLs) non-negative and zero when ``q`` equals ``p``.
    """


@hookspec
def ssvae_register_encoders() -> dict[str, ComponentFactory]:
    """Return encoders by name.

    ``build(options, context, key)`` returns an ``AbstractEncoder``
    for ``context.input_shape`` with ``context.latent_dim`` latents and
    ``context.num_components`` channel logits (none when it is 0).
    """


@hookspec
def ssvae_register_decoders() -> dict[str, ComponentFactory]:
    """Return decoders by name.

    ``build(options, context, key)`` returns an ``AbstractDecoder``
    producing ``context.input_shape`` outputs, conditioned by ``context.conditioning`` on
    embeddings of size ``context.embedding_dim``, with as many scale outputs as
    ``context.likelihood.scale_size(prod(input_shape))`` asks for.
    """


@hookspec
def ssvae_register_heads() -> dict[str, ComponentFactory]:
    """Return classification heads by name.

    ``build(options, context, key)`` returns an ``AbstractHead``
    over ``context.num_classes`` classes. Heads that need channels must raise ``ValueError``
    when ``context.num_components == 0``.
    """


@hookspec
def ssvae_register_loss_terms() -> dict[str, ComponentFactory]:
    """Return loss terms by name; the name is also the term's config table ``[loss.<name>]``.

    ``build(options, context, key)`` returns an
    ``AbstractLossTerm``. ``options`` subclasses
    ``TermOptions`` (``weight``, ``warmup_steps``); a term whose
    weight is 0 is not built. A plugin's term should default to weight 0, so installing
    the package changes nobody's training. The term's value must be finite and, unless it
    declares ``per_example = False``, one number per example that depends on that example
    alone.
    """


@hookspec
def ssvae_register_acquisitions() -> dict[str, ComponentFactory]:
    """Return acquisition functions by name (``ssvae query --strategy NAME``).

    ``build(options, context, key)`` returns an
    ``AbstractAcquisition`` for a model described by
    ``context`` (``num_classes``, ``num_components``, ``latent_dim``; ``data`` is
    ``None``). Raise ``ValueError`` when the model lacks what the acquisition reads (e.g.
    channels). Scores must be finite, one per example, the same for the same key; a batch
    never holds a labeled example nor one example twice.
    """


@hookspec
def ssvae_register_trackers() -> dict[str, TrackerFactory]:
    """Return experiment trackers by name (``ssvae train --track NAME``).

    Each ``TrackerFactory``'s ``open(context)`` returns a sink
    for the run directory ``context.run_dir``: called with ``(step, metrics)`` for every
    logged chunk, then ``report(report, plots)`` once and ``close()``. It writes nothing
    before its first call, and names the module it needs in ``requires``.
    """
