"""The test matrix: core alone, each plugin alone with the core, everything, lint, types."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "plugins", "all", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

# Every plugin package: the shipped ones and the plugin-author guide's example.
PLUGINS = sorted(
    str(p)
    for folder in ("plugins", "docs/examples")
    for p in Path(folder).iterdir()
    if (p / "pyproject.toml").exists()
)


@nox.session
def tests(session: nox.Session) -> None:
    """Core unit and property tests with only the core installed."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests", *session.posargs)


@nox.session
@nox.parametrize("plugin", PLUGINS)
def plugins(session: nox.Session, plugin: str) -> None:
    """Core + one plugin in a fresh environment: the plugin's tests and the property suite."""
    session.install("-e", ".[test]", f"./{plugin}")
    session.run("ssvae", "plugins")
    session.run("pytest", plugin, "tests/properties", *session.posargs)


@nox.session(name="all")
def all_(session: nox.Session) -> None:
    """Core and every plugin together: the full suite."""
    session.install("-r", "requirements-dev.txt")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "ssvae_core")


@nox.session(name="bench-quality")
def bench_quality(session: nox.Session) -> None:
    """The quality benchmark; pass its arguments after --, e.g. -- --preset mnist --dataset PATH."""
    session.install("-r", "requirements-dev.txt")
    arguments = session.posargs or ["--dataset", "digits", "--preset", "digits"]
    session.run("python", "benchmarks/quality.py", *arguments)
