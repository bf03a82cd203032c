"""The plugin conformance kit: Hypothesis strategies and ``check_*`` functions.

Plugin authors run it in their own test suites (it needs the ``test`` extra:
``pip install ssvae-core[test]``):

    from ssvae_core.testing import check_prior

    def test_laplace_prior_conforms():
        check_prior("laplace")

``profile="fast"`` (the default, meant for every save) or ``profile="thorough"`` (CI)
picks how hard the checks search. A failure raises ``ConformanceError`` naming the
component, the check, its invariant, the minimal counterexample and the usual cause.

The framework's own property suite (``tests/properties``) runs the same checks over every
component the registry discovers. ``ssvae_core.testing.strategies`` holds the
strategies, ``ssvae_core.testing.defects`` the seeded-defect corpus the kit is held to;
``docs/plugins.md`` walks through writing and checking a plugin.
"""

from __future__ import annotations

from ssvae_core.testing import strategies
from ssvae_core.testing._runner import Check, ConformanceError, NotApplicable
from ssvae_core.testing._subjects import ConformanceSettings, Subject, permute_channels
from ssvae_core.testing.conformance import (
    check_acquisition,
    check_component,
    check_decoder,
    check_encoder,
    check_head,
    check_loss_term,
    check_prior,
    conformance_checks,
    describe,
    prepare,
    run_check,
)

__all__ = [
    "Check",
    "ConformanceError",
    "ConformanceSettings",
    "NotApplicable",
    "Subject",
    "check_acquisition",
    "check_component",
    "check_decoder",
    "check_encoder",
    "check_head",
    "check_loss_term",
    "check_prior",
    "conformance_checks",
    "describe",
    "permute_channels",
    "prepare",
    "run_check",
    "strategies",
]
