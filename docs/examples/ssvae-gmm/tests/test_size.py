"""The example stays small, and the guide and the README state its size."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
REPOSITORY = PACKAGE.parents[2]
LIMIT = 50


def _lines() -> int:
    files = sorted((PACKAGE / "ssvae_gmm").rglob("*.py"))
    return sum(
        1
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    )


def test_the_plugin_fits_in_fifty_lines() -> None:
    assert _lines() <= LIMIT


def test_the_guide_and_the_readme_state_the_line_count() -> None:
    stated = f"{_lines()} non-blank lines"
    for document in (REPOSITORY / "docs" / "plugins.md", PACKAGE / "README.md"):
        assert stated in document.read_text(encoding="utf-8"), (
            f"{document.name} does not say {stated!r}"
        )
