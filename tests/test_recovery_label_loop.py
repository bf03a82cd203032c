"""Killed label-loop commands recover: ``ssvae label``, ``ssvae retrain`` and ``ssvae loop``
killed at chosen points (the driver of ``test_recovery.py``), then the next command on
the run completes it with nothing lost and nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from ssvae_core.checkpoint import load_checkpoint
from ssvae_core.labels import STORE_NAME, LabelStore

from .test_recovery import DRIVER, _quiet
from .test_recovery import TINY as RECOVERY_TINY

STEPS = 20
TINY = [a if a != "40" else str(STEPS) for a in RECOVERY_TINY]  # checkpoints every 10 steps
RETRAIN = ["--no-plots", "--quiet"]
VOLATILE = ("time", "wall_time_s")  # the fields of a round record that differ between two runs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, synthetic: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    np.savez(path, x=synthetic["x"], y=synthetic["y"])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    _quiet(["train", "--data", str(data), "--out", str(out), *TINY])
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, trained: Path) -> dict[str, str]:
    """The killed children's environment: this session's XLA cache (see test_recovery.py)."""
    if os.environ.get("SSVAE_TEST_XLA_CACHE") == "0":
        return dict(os.environ)
    cache = jax.config.jax_compilation_cache_dir or str(tmp_path_factory.mktemp("xla-cache"))
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _kill(args: list[str], mode: str, at: int, env: dict[str, str]) -> None:
    command = [sys.executable, "-c", DRIVER, mode, str(at), *args]
    result = subprocess.run(command, capture_output=True, timeout=300, check=False, env=env)
    assert result.returncode == -9, result.stderr.decode()[-2000:]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted writes, anywhere below ``folder``."""
    return sorted(p.name for p in folder.rglob(".*") if p.name != ".lock")


def _rounds(run: Path) -> list[dict[str, object]]:
    lines = (run / "rounds.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in lines]


def _sheet(run: Path, tmp_path: Path, data: Path) -> tuple[Path, dict[int, str]]:
    from ssvae_core.data import load_dataset
    from ssvae_core.runs import _run_config, split_dataset

    dataset = load_dataset(str(data))
    split = split_dataset(dataset, _run_config(run, None))
    held = LabelStore.load(run / STORE_NAME).current()
    rows = [int(i) for i in split.train if int(i) not in held][:4]
    labels = {row: dataset.label_names[int(dataset.y[row])] for row in rows}
    sheet = tmp_path / "labels.csv"
    sheet.write_text("index,label\n" + "".join(f"{row},{name}\n" for row, name in labels.items()))
    return sheet, labels


def test_a_label_killed_while_writing_the_store_is_redone_by_the_next_label(
    run: Path, data: Path, env: dict[str, str], tmp_path: Path
) -> None:
    sheet, labels = _sheet(run, tmp_path, data)
    store = (run / STORE_NAME).read_bytes()
    _kill(["label", str(run), str(sheet)], f"rename:{STORE_NAME}", 1, env)
    assert (run / STORE_NAME).read_bytes() == store  # the store is the old one, whole
    assert _leftovers(run)  # the temporary file of the interrupted write
    _quiet(["label", str(run), str(sheet)])
    assert _leftovers(run) == []
    current = LabelStore.load(run / STORE_NAME).current()
    assert {row: current[row] for row in labels} == labels


@pytest.mark.parametrize(
    "mode", ["rename:report.json", "rename:rounds.jsonl"], ids=["before-report", "before-round-record"]
)
def test_a_retrain_killed_after_its_last_step_is_completed_by_resume(
    mode: str, run: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    straight = tmp_path / "straight"
    shutil.copytree(run, straight)
    _quiet(["retrain", str(straight), "--steps", "10", *RETRAIN])
    _kill(["retrain", str(run), "--steps", "10", *RETRAIN], mode, 1, env)
    assert load_checkpoint(run / "model.ckpt").manifest["step"] == STEPS + 10
    assert len(_rounds(run)) == 1  # the retrain's round is not recorded yet
    _quiet(["train", "--resume", str(run), *RETRAIN])
    assert _rounds(run) == _rounds(straight)
    assert (run / "model.ckpt").read_bytes() == (straight / "model.ckpt").read_bytes()
    report = json.loads((run / "report.json").read_text())
    assert report["test_accuracy"] == json.loads((straight / "report.json").read_text())["test_accuracy"]
    assert _leftovers(run) == []


def test_a_retrain_killed_after_a_checkpoint_is_recorded_as_a_partial_round(
    run: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _kill(["retrain", str(run), "--steps", "20", *RETRAIN], "metrics", STEPS + 15, env)
    assert load_checkpoint(run / "model.ckpt").manifest["step"] == STEPS + 10
    _quiet(["retrain", str(run), "--steps", "10", *RETRAIN])
    rounds = _rounds(run)
    assert [(r["command"], r["from_step"], r["to_step"], r.get("partial")) for r in rounds] == [
        ("train", 0, STEPS, None),
        ("retrain", STEPS, STEPS + 10, True),
        ("retrain", STEPS + 10, STEPS + 20, None),
    ]
    assert "stopped before step 40" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, STEPS + 21, 5))  # every step logged once
    assert _leftovers(run) == []


def test_a_loop_killed_in_a_round_leaves_runs_the_next_command_completes(
    data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    loop = tmp_path / "loop"
    flags = [a for a in TINY[2:] if a != "--no-plots"]
    args = [
        "loop", "--data", str(data), "--out", str(loop), "--rounds", "1", "--per-round", "3",
        "--steps-per-round", "10", "--no-plots", *flags,
    ]
    # rounds.jsonl is written by the initial training, then by round 1's retrain: killed there
    _kill(args, "rename:rounds.jsonl", 2, env)
    run = loop / "runs" / "entropy" / "seed-0"
    assert load_checkpoint(run / "model.ckpt").manifest["step"] == STEPS + 10
    assert len(_rounds(run)) == 1
    _quiet(["report", str(run), "--no-plots"])
    rounds = _rounds(run)
    assert [(r["command"], r["from_step"], r["to_step"], r["labels"]) for r in rounds] == [
        ("train", 0, STEPS, 3), ("retrain", STEPS, STEPS + 10, 6)
    ]
    assert _leftovers(loop) == []
    curve = [json.loads(line) for line in (loop / "curve.jsonl").read_text().splitlines()]
    assert [r["round"] for r in curve] == [0]
