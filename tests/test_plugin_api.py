"""Plugins import ``ssvae_core`` only through its declared plugin API.

Every ``.py`` file of the packages under ``plugins/`` and ``docs/examples/`` (source and
tests) may import from ``ssvae_core.plugin`` (the plugin API), ``ssvae_core.testing`` (the
conformance kit) and ``ssvae_core`` itself (the user API), and only names those modules
list in ``__all__``. Anything else is internal to the core and may change under a plugin.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import ssvae_core
import ssvae_core.plugin
import ssvae_core.testing

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("plugins", "docs/examples")
SKIPPED_PARTS = {"__pycache__", "build", "dist", ".nox", ".venv"}
ALLOWED = {
    "ssvae_core": set(ssvae_core.__all__),
    "ssvae_core.plugin": set(ssvae_core.plugin.__all__),
    "ssvae_core.testing": set(ssvae_core.testing.__all__),
}


def _plugin_files() -> list[Path]:
    files = []
    for root in PACKAGE_ROOTS:
        for package in sorted((REPOSITORY / root).glob("*/")):
            for path in sorted(package.rglob("*.py")):
                parts = path.relative_to(REPOSITORY).parts
                if SKIPPED_PARTS.isdisjoint(parts) and not any(
                    part.endswith(".egg-info") for part in parts
                ):
                    files.append(path)
    return files


def _is_core(module: str) -> bool:
    return module == "ssvae_core" or module.startswith("ssvae_core.")


def _module_problem(module: str) -> str | None:
    if module in ALLOWED:
        return None
    return f"imports {module}, which is not part of the plugin API"


def _name_problem(module: str, name: str) -> str | None:
    if name == "*" or name in ALLOWED[module]:
        return None
    if module == "ssvae_core" and f"ssvae_core.{name}" in ALLOWED:
        return None  # ``from ssvae_core import plugin, testing``
    return f"imports {name!r} from {module}, which does not list it in __all__"


def _attribute_chain(node: ast.expr) -> list[str] | None:
    """``["a", "b", "c"]`` for the expression ``a.b.c``; ``None`` for anything else."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    names.append(node.id)
    return names[::-1]


def _attribute_problem(chain: list[str]) -> str | None:
    """An access ``ssvae_core.x.y`` must stay inside the allowed modules' ``__all__``."""
    if len(chain) < 2:
        return None
    top = f"ssvae_core.{chain[1]}"
    if top in ALLOWED:
        return None if len(chain) < 3 else _name_problem(top, chain[2])
    return _name_problem("ssvae_core", chain[1])


def _call_problem(node: ast.Call) -> str | None:
    """``importlib.import_module("ssvae_core.x")`` and ``__import__`` count as imports."""
    function = _attribute_chain(node.func)
    if not function or function[-1] not in ("import_module", "__import__") or not node.args:
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        if _is_core(argument.value):
            return _module_problem(argument.value)
    return None


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                problem = _module_problem(alias.name) if _is_core(alias.name) else None
                if problem:
                    yield node.lineno, problem
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not _is_core(node.module):
                continue
            problem = _module_problem(node.module)
            if problem:
                yield node.lineno, problem
                continue
            for alias in node.names:
                problem = _name_problem(node.module, alias.name)
                if problem:
                    yield node.lineno, problem
        elif isinstance(node, ast.Call):
            problem = _call_problem(node)
            if problem:
                yield node.lineno, problem


def _attribute_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``ssvae_core.x.y`` after ``import ssvae_core`` (or ``import ssvae_core.m as name``)."""
    aliases: dict[str, str] = {}  # local name -> the ssvae_core module bound to it
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and _is_core(alias.name):
                    aliases[alias.asname] = alias.name
                elif _is_core(alias.name):  # ``import ssvae_core.x`` binds ``ssvae_core``
                    aliases["ssvae_core"] = "ssvae_core"
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        chain = _attribute_chain(node)
        if chain is None or chain[0] not in aliases:
            continue
        problem = _attribute_problem(aliases[chain[0]].split(".") + chain[1:])
        if problem:
            yield node.lineno, problem.replace("imports", "uses", 1)


def violations(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """``(line, problem)``, by line, for every use of ``ssvae_core`` outside the plugin API."""
    tree = ast.parse(source, filename=filename)
    return sorted([*_imports(tree), *_attribute_uses(tree)])


def test_the_scan_finds_every_plugin_package() -> None:
    scanned = _plugin_files()
    expected = {
        package
        for root in PACKAGE_ROOTS
        for package in (REPOSITORY / root).iterdir()
        if (package / "pyproject.toml").exists()
    }
    packages = {package for package in expected if any(package in p.parents for p in scanned)}
    assert expected and packages == expected


@pytest.mark.parametrize(
    "path", _plugin_files(), ids=lambda path: str(path.relative_to(REPOSITORY))
)
def test_plugin_imports_ssvae_core_only_through_the_plugin_api(path: Path) -> None:
    problems = [
        f"{path.relative_to(REPOSITORY)}:{line}: {problem}"
        for line, problem in violations(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not problems, (
        "plugins may import ssvae_core only through ssvae_core.plugin, ssvae_core.testing "
        "and the top-level user API (see docs/plugins.md):\n" + "\n".join(problems)
    )


def test_the_checker_catches_every_import_form() -> None:
    source = "\n".join(
        [
            "from ssvae_core.modelling.losses import gaussian_kl",  # 1: internal module
            "import ssvae_core.training",  # 2: internal module
            "from ssvae_core import api",  # 3: not in ssvae_core.__all__
            "from ssvae_core.plugin import _secret",  # 4: not in __all__
            "import ssvae_core as core",
            "core.losses.entropy",  # 6: internal module through an alias
            "import importlib",
            "importlib.import_module('ssvae_core.modelling.heads')",  # 8: internal module by name
            "from ssvae_core.plugin import gaussian_kl",  # fine
            "from ssvae_core.testing import check_prior",  # fine
            "from ssvae_core import SSVAEClassifier, plugin",  # fine
            "import ssvae_core.plugin",  # fine
            "ssvae_core.plugin.EncoderOutput",  # fine
            "core.SSVAEClassifier",  # fine
            "from . import sibling",  # fine: the plugin's own package
        ]
    )
    assert [line for line, _ in violations(source)] == [1, 2, 3, 4, 6, 8]


def test_every_name_in_the_plugin_api_exists() -> None:
    names = ssvae_core.plugin.__all__
    assert len(names) == len(set(names)), "ssvae_core.plugin.__all__ lists a name twice"
    missing = [name for name in names if not hasattr(ssvae_core.plugin, name)]
    assert not missing, f"ssvae_core.plugin.__all__ lists missing names {missing}"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_every_allowed_module_declares_its_names(module: str) -> None:
    imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in imported.__all__)
