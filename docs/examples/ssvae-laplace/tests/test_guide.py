"""docs/plugins.md quotes this example verbatim and lists every conformance check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssvae_core.plugin import KINDS
from ssvae_core.testing import conformance_checks

REPOSITORY = Path(__file__).resolve().parents[4]
GUIDE = REPOSITORY / "docs" / "plugins.md"
EXCERPT = re.compile(r"<!-- excerpt: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)


def _excerpts() -> list[tuple[str, str]]:
    return [(m["path"], m["code"]) for m in EXCERPT.finditer(GUIDE.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(("path", "code"), _excerpts())
def test_guide_excerpt_is_quoted_verbatim(path: str, code: str) -> None:
    assert code in (REPOSITORY / path).read_text(encoding="utf-8"), (
        f"docs/plugins.md quotes {path} out of date"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_guide_lists_every_check(kind: str) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    missing = [e.name for e in conformance_checks(kind) if f"| {kind} | `{e.name}` |" not in text]
    assert not missing, f"docs/plugins.md does not list the {kind} checks {missing}"
