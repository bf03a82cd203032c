"""Every registered prior, encoder, decoder and head passes every conformance check.

The cases come from ``conftest.pytest_generate_tests`` (registry × checks of each kind);
a check that does not apply to a component is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from ssvae_core.registry import RegisteredComponent
from ssvae_core.testing import Check, NotApplicable, run_check


def test_component_satisfies_invariant(
    conformance_case: tuple[RegisteredComponent, Check], conformance_subjects: Any
) -> None:
    component, entry = conformance_case
    subject = conformance_subjects.get(component)
    try:
        run_check(subject, entry)
    except NotApplicable as reason:
        pytest.skip(f"{component.kind} {component.name!r}: {entry.name} not applicable: {reason}")
