"""The top level of ``ssvae_core`` holds the entry modules and one folder per layer.

A module added beside them belongs in a layer's folder; a new layer folder belongs on the
architecture page (``docs/architecture.md``), which names every one.
"""

from __future__ import annotations

from pathlib import Path

import ssvae_core

PACKAGE = Path(ssvae_core.__file__).parent
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

ENTRY_MODULES = {
    "__init__.py",
    "api.py",
    "builtin.py",
    "compatibility.py",
    "config.py",
    "errors.py",
    "hookspecs.py",
    "options.py",
    "plugin.py",
    "py.typed",
    "reference.py",
    "registry.py",
    "version.py",
}
LAYER_FOLDERS = {"cli", "data", "labels", "modelling", "runs", "studio", "testing", "training"}
OTHER_FOLDERS = {"presets"}


def _top_level() -> tuple[set[str], set[str]]:
    """The files and the package folders at the top of ``ssvae_core``."""
    files = {p.name for p in PACKAGE.iterdir() if p.is_file() and not p.name.endswith(".pyc")}
    folders = {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    return files, folders


def test_top_level_holds_only_the_entry_modules() -> None:
    files, _ = _top_level()
    assert files - ENTRY_MODULES == set(), (
        f"modules at the top of ssvae_core that belong in a layer's folder: "
        f"{sorted(files - ENTRY_MODULES)}"
    )
    assert ENTRY_MODULES - files == set()


def test_top_level_holds_only_the_layer_folders() -> None:
    _, folders = _top_level()
    assert folders == LAYER_FOLDERS | OTHER_FOLDERS


def test_every_layer_folder_is_a_package() -> None:
    for layer in LAYER_FOLDERS:
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_architecture_page_names_every_layer_folder() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = sorted(layer for layer in LAYER_FOLDERS if f"`{layer}/`" not in text)
    assert missing == [], f"docs/architecture.md does not name the layer folders {missing}"
