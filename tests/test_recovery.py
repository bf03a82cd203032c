"""Killed training recovers: faults injected into a real ``ssvae train`` subprocess.

A driver script runs the CLI in a child process with one function wrapped so that the
process SIGKILLs itself at a chosen point: right after the metrics line of a given step
(before the first checkpoint, between checkpoints), in the middle of an atomic checkpoint
write (temporary file written, rename not done), or after the final checkpoint and before
the report. ``ssvae train --resume`` must then finish the run, bit for bit equal to an
uninterrupted one, with every metrics step logged once. Two writers on one run directory:
the second is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pytest

from ssvae_core.cli import main
from ssvae_core.runs.rundir import RunLock
from ssvae_core.training.checkpoint import load_checkpoint

STEPS, LOG_EVERY, CHECKPOINT_EVERY = 40, 5, 10
TINY = [
    "--labels-per-class", "2", "--steps", str(STEPS), "--no-plots", "--quiet",
    "--set", f"train.log_every={LOG_EVERY}",
    "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "--set", "train.batch_size=8",
    "--set", "model.latent_dim=2",
    "--set", "model.embedding_dim=4",
    "--set", "prior.num_components=4",
    "--set", "encoder.hidden=[16]",
    "--set", "decoder.hidden=[16]",
]  # fmt: skip

DRIVER = """
import os, signal, sys
from ssvae_core import cli
from ssvae_core.training import loop

mode, at = sys.argv[1], int(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if mode == "metrics":
    logged = loop.JsonLinesSink.__call__
    def call(self, step, metrics):
        logged(self, step, metrics)
        if step >= at:
            die()
    loop.JsonLinesSink.__call__ = call
else:
    # "rename:NAME" kills in the at-th atomic write of the run file NAME
    target = {"rename": "model.ckpt", "report": "report.json"}.get(mode) or mode.partition(":")[2]
    rename, seen = os.replace, []
    def replace(source, destination):
        if str(destination).endswith(target):
            seen.append(destination)
            if len(seen) >= at:
                die()
        return rename(source, destination)
    os.replace = replace
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def data(shapes_npz: Path) -> Path:
    return shapes_npz


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """The uninterrupted run every recovered run must equal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    _quiet(["train", "--data", str(data), "--out", str(out), *TINY])
    return out


@pytest.fixture(scope="module")
def child_env(tmp_path_factory: pytest.TempPathFactory, straight: Path) -> dict[str, str]:
    """The environment of the killed children: the session's persistent XLA cache.

    Each child is a fresh process that would compile the same train step again. With the
    session's cache (``tests/conftest.py``), which already holds what the uninterrupted
    run in this process compiled, the children load those executables instead; without
    it (``SSVAE_TEST_XLA_CACHE=0``) they compile. Loading changes no result: a cached
    executable is the one the same program compiles to.
    """
    return cache_env(tmp_path_factory)


def cache_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a child process that uses the session's persistent XLA cache."""
    if os.environ.get("SSVAE_TEST_XLA_CACHE") == "0":
        return dict(os.environ)
    cache = jax.config.jax_compilation_cache_dir or str(tmp_path_factory.mktemp("xla-cache"))
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def _quiet(args: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    assert code == 0, args
    return code


def _killed(data: Path, out: Path, mode: str, at: int, env: dict[str, str]) -> None:
    command = [sys.executable, "-c", DRIVER, mode, str(at), "train", "--data", str(data), "--out", str(out), *TINY]
    result = subprocess.run(command, capture_output=True, timeout=300, check=False, env=env)
    assert result.returncode == -9, result.stderr.decode()[-2000:]


def _arrays(run: Path) -> list[np.ndarray]:
    loaded = load_checkpoint(run / "model.ckpt")
    leaves = eqx.filter((loaded.model, loaded.state, loaded.opt_state), eqx.is_array)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(leaves)]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_equal_runs(recovered: Path, straight: Path) -> None:
    for a, b in zip(_arrays(recovered), _arrays(straight), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same manifest and arrays: the checkpoint files are equal byte for byte.
    assert (recovered / "model.ckpt").read_bytes() == (straight / "model.ckpt").read_bytes()
    assert _steps(recovered) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    report = json.loads((recovered / "report.json").read_text())
    assert report["test_accuracy"] == json.loads((straight / "report.json").read_text())["test_accuracy"]
    assert not [p.name for p in recovered.iterdir() if p.name.startswith(".model.ckpt.")]
    # one round, "train" from step 0, however often the run was killed and resumed
    assert _round_facts(recovered) == _round_facts(straight) == [("train", 0, STEPS)]


def _round_facts(run: Path) -> list[tuple[Any, ...]]:
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["test_accuracy"] for r in rounds] == [json.loads((run / "report.json").read_text())["test_accuracy"]]
    return [(r["command"], r["from_step"], r["to_step"]) for r in rounds]


@pytest.mark.parametrize(
    ("mode", "at", "checkpoint_step"),
    [
        ("metrics", 5, None),  # before the first checkpoint: the run starts again
        ("metrics", 25, 20),  # between checkpoints: metrics of step 25 are dropped
        ("rename", 2, 10),  # during the second checkpoint's rename: its temporary file is removed
    ],
    ids=["before-first-checkpoint", "between-checkpoints", "during-checkpoint-rename"],
)
def test_a_killed_run_resumes_to_the_uninterrupted_result(
    mode: str,
    at: int,
    checkpoint_step: int | None,
    data: Path,
    straight: Path,
    child_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    _killed(data, out, mode, at, child_env)
    if checkpoint_step is None:
        assert not (out / "model.ckpt").exists()
    else:
        assert load_checkpoint(out / "model.ckpt").manifest["step"] == checkpoint_step
    assert not (out / "report.json").exists()
    _quiet(["train", "--resume", str(out), "--quiet", "--no-plots"])
    _assert_equal_runs(out, straight)
    if mode == "rename":
        assert "left by a write that was interrupted" in capsys.readouterr().err


def test_a_run_killed_before_its_report_gets_it_from_resume(
    data: Path, straight: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    _killed(data, out, "report", 1, child_env)
    assert load_checkpoint(out / "model.ckpt").manifest["step"] == STEPS
    _quiet(["train", "--resume", str(out), "--quiet", "--no-plots"])
    _assert_equal_runs(out, straight)


def test_report_command_rewrites_a_lost_report(straight: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.ckpt", "config.toml", "metrics.jsonl"):
        (copy / name).write_bytes((straight / name).read_bytes())
    _quiet(["report", str(copy), "--no-plots"])
    rewritten = json.loads((copy / "report.json").read_text())
    original = json.loads((straight / "report.json").read_text())
    assert rewritten["test_accuracy"] == original["test_accuracy"]
    assert rewritten["steps"] == STEPS


def test_a_second_writer_is_refused_and_changes_nothing(
    straight: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in straight.iterdir() if p.is_file()}
    with RunLock(straight):
        assert main(["train", "--resume", str(straight), "--steps", str(STEPS + 10), "--quiet"]) == 2
        assert "is being written by another ssvae process" in capsys.readouterr().err
        assert main(["report", str(straight)]) == 2
    empty = tmp_path / "claimed"
    empty.mkdir()
    with RunLock(empty):
        assert main(["train", "--data", str(data), "--out", str(empty), *TINY]) == 2
        assert "is being written by another ssvae process" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in straight.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}


def test_out_that_is_a_file_is_refused_as_a_file(tmp_path: Path, data: Path, capsys: Any) -> None:
    path = tmp_path / "taken"
    path.write_text("x")
    assert main(["train", "--data", str(data), "--out", str(path), *TINY]) == 2
    assert "is a file" in capsys.readouterr().err


def test_resuming_a_cosine_schedule_from_a_checkpoint_keeps_its_horizon(
    synthetic: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from ssvae_core import SSVAEClassifier, config_from_dict

    config = config_from_dict(
        {
            "model": {"latent_dim": 2, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": 4},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 10, "batch_size": 8, "log_every": 5, "checkpoint_every": 5,
                      "lr_schedule": "cosine"},
        }
    )
    x, labels = synthetic["x"], synthetic["partial"]
    saved: list[int] = []

    def keep_first(classifier: SSVAEClassifier) -> None:
        if not saved:
            classifier.save(tmp_path / "model.ckpt")
            saved.append(int(classifier.state.step))

    straight = SSVAEClassifier(config).fit(x, labels, on_checkpoint=keep_first)
    assert saved == [5]
    resumed = SSVAEClassifier.load(tmp_path / "model.ckpt").resume(x, labels, until_step=10)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(straight.model, eqx.is_array)),
        jax.tree.leaves(eqx.filter(resumed.model, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_data_paths_are_stored_absolute_and_resume_follows_moved_data(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "here" / "shapes.npz"
    local.parent.mkdir()
    local.write_bytes(data.read_bytes())
    monkeypatch.chdir(local.parent)
    out = tmp_path / "run"
    args = [a if a != str(STEPS) else "10" for a in TINY]
    _quiet(["train", "--data", "shapes.npz", "--out", str(out), *args])
    assert f'dataset = "{local}"' in (out / "config.toml").read_text()
    moved = tmp_path / "elsewhere.npz"
    local.rename(moved)
    assert main(["train", "--resume", str(out), "--steps", "15", "--quiet", "--no-plots"]) == 2
    assert "shapes.npz" in capsys.readouterr().err
    _quiet(["train", "--resume", str(out), "--steps", "15", "--data", str(moved), "--quiet", "--no-plots"])
    assert f'dataset = "{moved}"' in (out / "config.toml").read_text()
    assert load_checkpoint(out / "model.ckpt").manifest["step"] == 15


def test_out_below_a_file_is_refused_before_anything_is_written(
    tmp_path: Path, data: Path, capsys: Any
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--data", str(data), "--out", str(blocker / "run"), *TINY]) == 2
    assert "lies below a file" in capsys.readouterr().err


def test_files_of_a_run_directory_share_one_mode(straight: Path) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in straight.iterdir() if p.is_file() and p.name != ".lock"}
    assert len(set(modes.values())) == 1, modes


def test_resume_of_a_folder_that_is_no_run_directory_exits_2(tmp_path: Path, capsys: Any) -> None:
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2
    assert "is not a run directory (it has neither model.ckpt nor config.toml)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "report expects a run directory" in capsys.readouterr().err
