"""The documentation states the real defaults and the real commands."""

from __future__ import annotations

from pathlib import Path

import ssvae_core.plugin
from ssvae_core.reference import BEGIN_MARKER, END_MARKER, reference_markdown
from ssvae_core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def _embedded_reference() -> str:
    text = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    return text.split(BEGIN_MARKER, 1)[1].split(END_MARKER, 1)[0].strip()


def test_user_guide_options_reference_matches_the_option_dataclasses() -> None:
    expected = reference_markdown(Registry(entry_points=False)).strip()
    assert _embedded_reference() == expected, (
        "docs/user-guide.md is stale; run `python docs/regenerate_reference.py`"
    )


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".venv/bin/pip install -r requirements-dev.txt && .venv/bin/pytest" in readme
    assert ".venv/bin/pip install --quiet -r requirements-dev.txt" in ci
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert ".venv/bin/pytest" in commands, "CI must run the README's test command as it is"


def _plugin_guide_section(number: int) -> str:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_plugin_guide_reference_lists_every_name_of_the_plugin_api() -> None:
    reference = _plugin_guide_section(3)
    missing = [name for name in ssvae_core.plugin.__all__ if f"\n| `{name}` | " not in reference]
    assert not missing, (
        f"docs/plugins.md section 3 (The plugin API) has no reference row for {', '.join(missing)}"
    )
