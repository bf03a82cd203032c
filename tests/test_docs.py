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


PUBLIC_MODULES = ("ssvae_core", "ssvae_core.plugin", "ssvae_core.testing")


def _undocumented_public_names() -> list[str]:
    """Every name of the public modules' ``__all__``, and every public method of a public
    class, that has no docstring of its own, read from the source as the reference site
    reads it (griffe, the loader behind mkdocstrings)."""
    import importlib

    import griffe

    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    package = loader.load("ssvae_core")
    loader.resolve_aliases(external=False, implicit=False)

    def documented(obj: griffe.Object | griffe.Alias) -> bool:
        return obj.docstring is not None and bool(obj.docstring.value.strip())

    missing = []
    for module_name in PUBLIC_MODULES:
        module = package if module_name == "ssvae_core" else package[module_name.split(".", 1)[1]]
        for name in importlib.import_module(module_name).__all__:
            target = module[name].final_target if module[name].is_alias else module[name]
            if not documented(target):
                missing.append(f"{module_name}.{name}")
            if not target.is_class:
                continue
            for member_name, member in target.members.items():
                member = member.final_target if member.is_alias else member
                public = not member_name.startswith("_") or member_name == "__call__"
                if public and member.is_function and not documented(member):
                    missing.append(f"{module_name}.{name}.{member_name}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = _undocumented_public_names()
    assert not missing, f"public names without a docstring: {', '.join(missing)}"


def test_the_reference_site_has_a_page_per_public_module() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "strict: true" in config
    for module_name in PUBLIC_MODULES:
        pages = [p for p in (ROOT / "docs" / "reference").glob("*.md") if f"::: {module_name}\n" in p.read_text(encoding="utf-8")]
        assert len(pages) == 1, f"docs/reference/ has {len(pages)} pages rendering {module_name}"
        assert f"reference/{pages[0].name}" in config, f"mkdocs.yml's nav lacks {pages[0].name}"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "mkdocs build --strict" in ci
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/index.md" in readme, "the README links the site's entry page"


def test_docstrings_use_no_sphinx_roles() -> None:
    """The reference site renders docstrings as Markdown, which has no ``:func:`` roles."""
    import re

    role = re.compile(r":(?:func|class|meth|attr|data|mod|obj|exc):`")
    found = [
        str(path.relative_to(ROOT))
        for folder in ("ssvae_core", "plugins", "docs/examples")
        for path in (ROOT / folder).rglob("*.py")
        if role.search(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"Sphinx roles in {', '.join(found)}; write ``name`` instead"
