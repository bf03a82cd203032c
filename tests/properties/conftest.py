"""The cross-plugin property suite: every registered component against the conformance kit.

``pytest_generate_tests`` parametrises ``conformance_case`` over the components that
``ssvae_core.registry.default_registry()`` discovers at test time and the checks of each
one's kind, so installing a plugin adds its components here. The terminal summary lists
what was checked (kind, name, package, version) and any plugin that failed to register.

``SSVAE_CONFORMANCE_PROFILE`` picks the kit's profile (``fast`` by default; ``.ci/run``
runs the suite a second time with ``thorough``) and ``SSVAE_CONFORMANCE_MAX_EXAMPLES``
overrides the profile's Hypothesis examples per property.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ssvae_core.registry import RegisteredComponent, default_registry
from ssvae_core.testing import Check, ConformanceError, Subject, conformance_checks, prepare

CHECKED = pytest.StashKey[list[RegisteredComponent]]()
PROFILE = os.environ.get("SSVAE_CONFORMANCE_PROFILE", "fast")
_EXAMPLES = os.environ.get("SSVAE_CONFORMANCE_MAX_EXAMPLES")
MAX_EXAMPLES = int(_EXAMPLES) if _EXAMPLES else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_case" not in metafunc.fixturenames:
        return
    components = list(default_registry())
    metafunc.config.stash[CHECKED] = components
    cases = [
        pytest.param((component, entry), id=f"{component.kind}:{component.name}-{entry.name}")
        for component in components
        for entry in conformance_checks(component.kind)
    ]
    metafunc.parametrize("conformance_case", cases)


class SubjectCache:
    """Each component is built once per session; a build failure fails each of its checks."""

    def __init__(self) -> None:
        self._subjects: dict[tuple[str, str], Subject | ConformanceError] = {}

    def get(self, component: RegisteredComponent) -> Subject:
        key = (component.kind, component.name)
        if key not in self._subjects:
            try:
                self._subjects[key] = prepare(
                    component, profile=PROFILE, max_examples=MAX_EXAMPLES
                )
            except ConformanceError as error:
                self._subjects[key] = error
        subject = self._subjects[key]
        if isinstance(subject, ConformanceError):
            raise subject
        return subject


@pytest.fixture(scope="session")
def conformance_subjects() -> SubjectCache:
    return SubjectCache()


@pytest.fixture
def conformance_case(request: pytest.FixtureRequest) -> tuple[RegisteredComponent, Check]:
    return request.param


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    components = config.stash.get(CHECKED, None)
    if components is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"ssvae conformance ({PROFILE} profile): components checked")
    for component in components:
        write(f"{component.kind:8} {component.name:16} {component.package} {component.version}")
    for problem in default_registry().problems:
        write(f"PROBLEM  plugin {problem.plugin!r}: {problem.reason}")
