"""No function in ``ssvae_core`` is over 80 lines: a longer one does several things, and
each should be a function of its own, named after what it does."""

from __future__ import annotations

import ast
from pathlib import Path

import ssvae_core

MAX_LINES = 80
PACKAGE = Path(ssvae_core.__file__).parent


def _lengths(node: ast.AST, prefix: str) -> dict[str, int]:
    """Lines of every function under ``node`` (methods and nested functions included), by
    qualified name."""
    found: dict[str, int] = {}
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{child.name}"
            found[name] = (child.end_lineno or child.lineno) - child.lineno + 1
            found.update(_lengths(child, name))
        elif isinstance(child, ast.ClassDef):
            found.update(_lengths(child, f"{prefix}.{child.name}"))
        else:
            found.update(_lengths(child, prefix))
    return found


def function_lengths() -> dict[str, int]:
    """Lines of every function in ``ssvae_core``, by qualified name."""
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.update(_lengths(ast.parse(path.read_text(encoding="utf-8")), module))
    return found


def test_no_function_in_ssvae_core_is_over_80_lines() -> None:
    long = {name: lines for name, lines in function_lengths().items() if lines > MAX_LINES}
    assert long == {}, f"split these functions into ones of at most {MAX_LINES} lines"

