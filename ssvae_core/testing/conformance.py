"""Conformance functions: does a component honour its protocol's contract?

In the spirit of scikit-learn's ``check_estimator``:

    from ssvae_core.testing import check_prior
    check_prior("laplace")                      # a registered name
    check_prior(my_factory, MyOptions(num_components=4))

Each function builds the component the way ``build_model`` does, runs every check of its
kind (see ``conformance_checks``) and returns a report ``{check: outcome}``; the first
failing check raises ``ConformanceError`` naming the component, the invariant and the
minimal counterexample Hypothesis found.
"""

from __future__ import annotations

import warnings
from typing import Any

from ssvae_core.modelling.components import KINDS, ComponentFactory
from ssvae_core.modelling.hygiene import process_changes
from ssvae_core.registry import RegisteredComponent, default_registry
from ssvae_core.testing._acquisitions import AcquisitionSubject
from ssvae_core.testing._heads import HeadSubject
from ssvae_core.testing._hygiene import register_hygiene_checks
from ssvae_core.testing._networks import DecoderSubject, EncoderSubject
from ssvae_core.testing._prior_dynamics import register_prior_dynamics
from ssvae_core.testing._priors import PriorSubject
from ssvae_core.testing._runner import CHECKS, Check, NotApplicable
from ssvae_core.testing._runner import run_check as _run_check
from ssvae_core.testing._subjects import ConformanceSettings, Subject
from ssvae_core.testing._terms import LossTermSubject

SUBJECTS: dict[str, type[Subject]] = {
    "prior": PriorSubject,
    "encoder": EncoderSubject,
    "decoder": DecoderSubject,
    "head": HeadSubject,
    "loss_term": LossTermSubject,
    "acquisition": AcquisitionSubject,
}

Component = str | RegisteredComponent | ComponentFactory

# After the prior's value checks, those of its gradients, draws and options; after every
# kind's own checks, the process-hygiene check.
register_prior_dynamics()
register_hygiene_checks()


def conformance_checks(kind: str) -> tuple[Check, ...]:
    """Every check for components of ``kind``, in the order they run."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return tuple(CHECKS[kind])


def describe(component: RegisteredComponent) -> str:
    """``kind 'name' (package version)``: how messages and reports name a component."""
    return f"{component.kind} {component.name!r} ({component.package} {component.version})"


def _resolve(component: Component, kind: str | None) -> tuple[str, ComponentFactory, str]:
    if isinstance(component, RegisteredComponent):
        return component.kind, component.factory, describe(component)
    if kind is None:
        raise TypeError("pass kind= with a name or a bare ComponentFactory")
    if isinstance(component, str):
        registered = default_registry().get(kind, component)
        return kind, registered.factory, describe(registered)
    if isinstance(component, ComponentFactory):
        return kind, component, f"{kind} {component.component_type.__name__}"
    raise TypeError(f"expected a name, RegisteredComponent or ComponentFactory, got {component!r}")


def prepare(
    component: Component, options: Any = None, *, kind: str | None = None, **settings: Any
) -> Subject:
    """Build ``component`` for checking; ``settings`` are ``ConformanceSettings`` fields.

    Raises ``ConformanceError`` (check ``builds``) when the factory cannot build it.
    """
    kind, factory, label = _resolve(component, kind)
    config = ConformanceSettings(**settings)
    unknown = set(config.skip) - {entry.name for entry in conformance_checks(kind)}
    if unknown:
        raise ValueError(f"skip names unknown {kind} checks: {', '.join(sorted(unknown))}")
    options = factory.default_options() if options is None else options
    with warnings.catch_warnings(), process_changes() as changes:
        # Building is not under test here; plugins may warn about their own design.
        warnings.simplefilter("ignore", UserWarning)
        subject = SUBJECTS[kind](label, factory, options, config)
    # What the build changed in the process (now undone), for the process_hygiene check.
    subject.build_changes = changes
    return subject


def run_check(subject: Subject, entry: Check) -> str | None:
    """Run one check on a prepared subject; return its note (or ``None``) when it passes.

    Raises ``ConformanceError`` when the component violates the invariant and
    ``NotApplicable`` when the check does not apply to it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _run_check(subject, entry)


def check_component(
    component: Component, options: Any = None, *, kind: str | None = None, **settings: Any
) -> dict[str, str]:
    """Run every check of the component's kind; return ``{check name: outcome}``.

    An outcome is ``"passed"`` (with the check's note in parentheses), ``"not applicable:
    <why>"`` or ``"skipped"`` (named in ``skip``).

    ``component`` is a registered name (with ``kind``), a
    ``RegisteredComponent`` or a bare
    ``ComponentFactory`` (with ``kind``). ``options`` defaults to
    the factory's defaults; ``settings`` are ``ConformanceSettings`` fields (shapes,
    ``max_examples``, ``skip``, ...). The first violated invariant raises
    ``ConformanceError``.
    """
    subject = prepare(component, options, kind=kind, **settings)
    report = {}
    for entry in conformance_checks(subject.kind):
        if entry.name in subject.settings.skip:
            report[entry.name] = "skipped"
            continue
        try:
            note = run_check(subject, entry)
        except NotApplicable as reason:
            report[entry.name] = f"not applicable: {reason}"
            continue
        report[entry.name] = f"passed ({note})" if note else "passed"
    return report


def check_prior(component: Component, options: Any = None, **settings: Any) -> dict[str, str]:
    """``check_component`` for a prior, as built and trained-like (parameters moved): KL
    terms (exact ≥ 0 and 0 at q = p; Monte-Carlo ones converging, drawing from their key and
    matching a reparameterised reference), their gradients against finite differences,
    samples against the density the KL terms imply (several keys), π, regularisers,
    parameter scales, a frozen π in training, an effect for every option, and process
    hygiene."""
    return check_component(component, options, kind="prior", **settings)


def check_encoder(component: Component, options: Any = None, **settings: Any) -> dict[str, str]:
    """``check_component`` for an encoder: output structure with and without channels,
    responsibilities, per-example independence, jit, signatures, a train step."""
    return check_component(component, options, kind="encoder", **settings)


def check_decoder(component: Component, options: Any = None, **settings: Any) -> dict[str, str]:
    """``check_component`` for a decoder: the sample's shape for every conditioning method
    and likelihood, finite outputs, σ bounds, use of the embedding, independence, jit."""
    return check_component(component, options, kind="decoder", **settings)


def check_head(component: Component, options: Any = None, **settings: Any) -> dict[str, str]:
    """``check_component`` for a head: p(y|x) rows sum to 1, OOD score in [0, 1], no
    gradient into the state, unlabeled rows ignored, channel permutation, independence."""
    return check_component(component, options, kind="head", **settings)


def check_loss_term(component: Component, options: Any = None, **settings: Any) -> dict[str, str]:
    """``check_component`` for a loss term: its declared contract, per-row preparation,
    finite values of the declared shape, per-example independence, jit, traced weights."""
    return check_component(component, options, kind="loss_term", **settings)


def check_acquisition(component: Component, options: Any = None, **settings: Any) -> dict[str, str]:
    """``check_component`` for an acquisition: finite scores, one per example, the same
    for a key; batches of distinct unlabeled examples, with and without channels."""
    return check_component(component, options, kind="acquisition", **settings)
