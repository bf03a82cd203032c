"""``ssvae_core.runs.run.Run``: a run directory as one object, and the package's module boundaries."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from ssvae_core.config import config_from_dict
from ssvae_core.data.loading import load_dataset
from ssvae_core.errors import CheckpointError
from ssvae_core.labels.store import LabelStore
from ssvae_core.runs.run import Run, split_dataset
from ssvae_core.training.checkpoint import read_manifest

from .test_recovery import TINY, _quiet

PACKAGE = Path(__file__).resolve().parent.parent / "ssvae_core"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shapes_npz: Path) -> Path:
    out = tmp_path_factory.mktemp("run-object") / "run"
    _quiet(["train", "--data", str(shapes_npz), "--out", str(out), *TINY])
    return out


def test_open_refuses_a_file_and_a_folder_that_is_no_run_and_writes_nothing(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(CheckpointError, match="label expects a run directory, got"):
        Run.open(file, "label")
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"is not a run directory \(it has neither model.ckpt nor config.toml\)"):
        Run.open(folder, "retrain")
    assert list(folder.iterdir()) == []


def test_a_run_without_checkpoint_is_refused_where_one_is_needed(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    run = Run.open(tmp_path, "label")
    with pytest.raises(CheckpointError, match="has no checkpoint yet; finish the run with `ssvae train --resume` before labeling"):
        run.require_checkpoint("before labeling")


def test_the_layout_names_every_file_a_trained_run_holds(trained: Path) -> None:
    run = Run.open(trained, "test")
    files = [run.config_path, run.metrics_path, run.checkpoint_path, run.report_path,
             run.report_md_path, run.store_path, run.rounds_path]
    assert all(path.is_file() and path.parent == trained for path in files)
    assert {p.name for p in trained.iterdir()} <= {p.name for p in files} | {run.lock_path.name, run.plots_path.name}


def test_config_data_split_and_store_are_those_the_run_trained_with(trained: Path, shapes_npz: Path) -> None:
    run = Run.open(trained, "test")
    manifest = read_manifest(trained / "model.ckpt")
    assert run.config == config_from_dict(manifest["config"])
    dataset = load_dataset(str(shapes_npz))
    split = split_dataset(dataset, run.config)
    assert np.array_equal(run.split.train, split.train) and np.array_equal(run.split.test, split.test)
    assert sorted(run.label_store().current()) == sorted(int(i) for i in split.labeled)
    assert run.label_store().current() == LabelStore.load(trained / "labels.json").current()
    assert run.report() is not None and run.report()["steps"] == manifest["step"]
    assert [record["command"] for record in run.rounds()] == ["train"]
    assert run.metrics()[-1]["step"] == manifest["step"]


def test_data_moved_elsewhere_is_read_from_there(trained: Path, shapes_npz: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.npz"
    moved.write_bytes(shapes_npz.read_bytes())
    run = Run.open(trained, "test", data=str(moved))
    assert run.config.data.dataset == os.path.abspath(moved)
    assert len(run.dataset.x) == len(load_dataset(str(shapes_npz)).x)


def _private_names_from_other_modules() -> list[str]:
    """Every ``from M import _name`` and ``M._name`` in ``ssvae_core`` where ``M`` is
    another module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    found = []
    for name, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
                if not source.startswith("ssvae_core"):
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                    if alias.name.startswith("_") and not alias.name.startswith("__") and source != name:
                        found.append(f"{path.name}:{node.lineno} imports {alias.name} from {source}")
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("ssvae_core")})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                chain, value = [], node.value
                while isinstance(value, ast.Attribute):
                    chain.insert(0, value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in aliases:
                    target = ".".join([aliases[value.id], *chain])
                    if target != name:
                        found.append(f"{path.name}:{node.lineno} reads {target}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    assert _private_names_from_other_modules() == []
