"""Bad input to the label loop's commands (label, labels, retrain, query, loop, studio) and
to the API's label methods: one line, exit code 2, and nothing written or left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.cli import main
from ssvae_core.errors import CheckpointError, ConfigError, DataError
from ssvae_core.labels import STORE_NAME, LabelStore, label_name

from .test_recovery import TINY as RECOVERY_TINY

STEPS = 10
TINY = [a if a != "40" else str(STEPS) for a in RECOVERY_TINY]
HUGE_SEED = str(2**63)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, synthetic: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    np.savez(path, x=synthetic["x"], y=synthetic["y"])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _files(folder: Path) -> dict[str, bytes]:
    return {
        os.fspath(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _refused(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``ssvae ARGS`` exits 2 with one line that says ``message``."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssvae: error: "), err
    assert message in err, err


def _unlabeled_train_row(run: Path, data: Path) -> int:
    from ssvae_core.config import config_from_dict
    from ssvae_core.data import load_dataset
    from ssvae_core.runs import split_dataset

    config = config_from_dict(
        {"seed": 0, "data": {"labels_per_class": 2, "dataset": str(data)}}
    )
    split = split_dataset(load_dataset(str(data)), config)
    labeled = set(LabelStore.load(run / STORE_NAME).current())
    return next(int(i) for i in split.train if int(i) not in labeled)


# --- run files that are damaged --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rounds.jsonl", b'{"round": 0}\n\xff\xfe\n', "rounds.jsonl"),
        ("rounds.jsonl", b"garbage\n", "rounds.jsonl', line 1: is not a JSON object"),
        ("metrics.jsonl", b'{"step": 5}\n\xff\xfe\n{"step": 10}\n', "metrics.jsonl', line 2: is not UTF-8"),
        ("metrics.jsonl", None, "metrics.jsonl' is a directory"),
    ],
    ids=["rounds-not-utf8", "rounds-garbage", "metrics-not-utf8", "metrics-directory"],
)
def test_a_damaged_run_file_is_one_line_for_retrain_and_resume(
    run: Path, name: str, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / name
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    before = _files(run)
    _refused(["retrain", str(run), "--steps", "5", "--quiet", "--no-plots"], message, capsys)
    _refused(["train", "--resume", str(run), "--steps", str(STEPS + 5), "--quiet", "--no-plots"], message, capsys)
    assert _files(run) == before


def test_a_metrics_line_cut_short_by_a_kill_is_the_one_repair(run: Path) -> None:
    from ssvae_core.rundir import recover

    metrics = run / "metrics.jsonl"
    whole = metrics.read_bytes()
    metrics.write_bytes(whole + b'{"step": 15, "lo')
    notes = recover(run, STEPS)
    assert metrics.read_bytes() == whole and len(notes) == 1


# --- seeds, steps, flags ---------------------------------------------------------------------


def test_seeds_beyond_64_bits_are_refused(run: Path, data: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "new"
    _refused(["train", "--data", str(data), "--out", str(out), *TINY, "--seed", HUGE_SEED], "seed must be an integer from 0 to 2**63 - 1", capsys)
    assert not out.exists()
    before = _files(run)
    _refused(["query", str(run), "--seed", HUGE_SEED], "--seed must be an integer from 0", capsys)
    _refused(["query", str(run), "--seed", "-1"], "--seed must be an integer from 0", capsys)
    assert _files(run) == before
    loop = tmp_path / "loop"
    _refused(["loop", "--data", str(data), "--out", str(loop), "--seeds", HUGE_SEED, "--quiet"], "--seeds must be an integer from 0", capsys)
    assert not loop.exists()
    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        _with_data(SSVAEClassifier.load(run / "model.ckpt"), data).query(3, seed=2**63)


def _with_data(classifier: SSVAEClassifier, data: Path) -> SSVAEClassifier:
    """The loaded classifier holding training data (three rows labeled), as after a fit."""
    from ssvae_core.data import from_arrays, load_dataset

    dataset = load_dataset(str(data))
    y = np.full(len(dataset.y), -1, dtype=np.int32)
    y[[0, 20, 40]] = dataset.y[[0, 20, 40]]
    classifier.training_data = from_arrays(
        dataset.x, y, num_classes=len(classifier.label_names), label_names=classifier.label_names
    )
    return classifier


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training of any kind fails the test: input must be refused before it starts."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started on input that should have been refused")

    for method in ("fit", "resume", "retrain"):
        monkeypatch.setattr(SSVAEClassifier, method, started)


def test_steps_beyond_the_32_bit_step_counter_are_refused(
    run: Path, data: Path, tmp_path: Path, capsys: Any, no_training: None
) -> None:
    before = _files(run)
    _refused(["retrain", str(run), "--steps", str(2**31), "--quiet"], "at most 2**31 - 1", capsys)
    _refused(["retrain", str(run), "--steps", str(2**31 - STEPS), "--quiet"], "at most 2**31 - 1", capsys)
    _refused(["train", "--resume", str(run), "--steps", str(2**31), "--quiet"], "at most 2**31 - 1", capsys)
    assert _files(run) == before
    out = tmp_path / "new"
    _refused(["train", "--data", str(data), "--out", str(out), *TINY, "--steps", str(2**31)], "train.steps must be an integer <= 2147483647", capsys)
    assert not out.exists()


def test_empty_tracker_names_and_blank_studio_tokens_are_refused(
    run: Path, data: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "new"
    _refused(["train", "--data", str(data), "--out", str(out), *TINY, "--track", ","], "got an empty name in ','", capsys)
    assert not out.exists()
    _refused(["retrain", str(run), "--track", "tensorboard,", "--quiet"], "--track expects tracker names", capsys)
    pytest.importorskip("starlette")
    for token in (" " * 8, "abc defgh", "abcdefgh\x07"):
        _refused(["studio", str(run), "--token", token, "--port", "0"], "without spaces or control characters", capsys)


def test_a_coordinator_that_is_no_host_name_is_refused_before_jax_starts(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    command = [
        sys.executable, "-c", "import sys; from ssvae_core.cli import main; sys.exit(main(sys.argv[1:]))",
        "train", "--data", str(data), "--out", str(out), *TINY,
        "--coordinator", "bad host!:1234", "--num-processes", "1", "--process-id", "0",
    ]
    result = subprocess.run(command, capture_output=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert "--coordinator host 'bad host!' is not a host name" in result.stderr.decode()
    assert not out.exists()


def test_save_to_a_directory_or_an_unwritable_place_is_one_error(run: Path, tmp_path: Path) -> None:
    classifier = SSVAEClassifier.load(run / "model.ckpt")
    with pytest.raises(CheckpointError, match="it is a directory"):
        classifier.save(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot save a checkpoint to"):
        classifier.save(blocker / "model.ckpt")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(CheckpointError, match=r"[Pp]ermission denied"):
            classifier.save(locked / "model.ckpt")
        assert list(locked.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", "file", *(["locked"] if os.geteuid() else [])])


# --- query, loop -----------------------------------------------------------------------------


def test_query_out_must_be_a_new_csv(run: Path, tmp_path: Path, capsys: Any) -> None:
    before = _files(run)
    for name in ("sheet.png", "sheet", "sheet.txt"):
        _refused(["query", str(run), "--out", str(tmp_path / name)], "must name a .csv file", capsys)
    _refused(["query", str(run), "--out", str(tmp_path / "missing" / "s.csv")], "its folder does not exist", capsys)
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_loop_refuses_a_budget_beyond_the_pool_before_training(
    data: Path, tmp_path: Path, capsys: Any, no_training: None
) -> None:
    out = tmp_path / "loop"
    _refused(
        ["loop", "--data", str(data), "--out", str(out), "--per-round", "1000000", *TINY[2:]],
        "unlabeled examples; query fewer", capsys,
    )
    assert not out.exists()
    _refused(
        ["loop", "--data", str(data), "--out", str(out), "--rounds", "3", "--steps-per-round", str(2**30), "--quiet"],
        "at most 2**31 - 1", capsys,
    )
    assert not out.exists()


# --- label names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{i},"abc\n', "unexpected end of data"),
        ("{i},\u200b\n", "invisible format character (zero-width or bidirectional control) (U+200B)"),
        ("{i},3\u200b\n", "U+200B"),
        ("{i},\u202ecat\n", "U+202E"),
        ("{i},\u2066x\u2069\n", "U+2066"),
        ("{i},\u0301\n", "has no visible character"),
        ("{i},\u2162\n{i2},iii\n", "label 'iii' looks like the label 'Ⅲ'"),  # a Roman numeral three
        ("{i},CAT\n{i2},cat\n", "looks like the label 'CAT'"),
        ("{i},\uff11\n", "looks like the label '1'"),  # a full-width 1 beside the run's class 1
    ],
    ids=["open-quote", "zero-width-only", "zero-width-suffix", "rtl-override", "bidi-isolate", "only-a-mark", "roman-numeral", "case", "full-width"],
)
def test_label_refuses_names_that_are_invisible_or_look_like_others(
    run: Path, data: Path, tmp_path: Path, row: str, message: str, capsys: Any
) -> None:
    index = _unlabeled_train_row(run, data)
    second = index + 1 if index + 1 < 48 else index - 1
    text = "index,label\n" + row.format(i=index, i2=second)
    sheet = tmp_path / "labels.csv"
    sheet.write_text(text, encoding="utf-8")
    before = _files(run)
    _refused(["label", str(run), str(sheet)], message, capsys)
    assert _files(run) == before


def test_a_name_in_another_normal_form_is_the_same_class(run: Path, data: Path, tmp_path: Path) -> None:
    index = _unlabeled_train_row(run, data)
    sheet = tmp_path / "labels.csv"
    sheet.write_text(f"index,label\n{index},cafe\u0301\n", encoding="utf-8")  # decomposed é
    assert main(["label", str(run), str(sheet)]) == 0
    assert LabelStore.load(run / STORE_NAME).current()[index] == "caf\u00e9"
    assert label_name("  cafe\u0301 ") == "caf\u00e9"


def test_labels_refuses_a_store_that_every_other_command_refuses(run: Path, capsys: Any) -> None:
    path = run / STORE_NAME
    document = json.loads(path.read_text())
    good = json.dumps(document)
    document["entries"][0]["index"] = 59999
    path.write_text(json.dumps(document))
    _refused(["labels", str(run)], "example 59999 is out of range", capsys)
    document = json.loads(good)
    entry = document["entries"][0]
    entry["hash"] = "0" * 16 if entry["hash"] != "0" * 16 else "1" * 16
    path.write_text(json.dumps(document))
    _refused(["labels", str(run)], f"example {entry['index']} no longer matches its stored content hash", capsys)
    _refused(["retrain", str(run), "--steps", "5", "--quiet"], "no longer matches its stored content hash", capsys)


def test_the_api_refuses_the_names_the_store_refuses(run: Path, data: Path) -> None:
    classifier = _with_data(SSVAEClassifier.load(run / "model.ckpt"), data)
    before = classifier.training_data.y.copy()
    for name, message in [
        ("a\nb", "line break"), ("x" * 1000, "1000 characters long"), ("bell\x07", "control character"),
        ("\u200b", "invisible format character"), ("\u202ecat", "U+202E"), ("\uff11", "looks like the label '1'"),
    ]:
        with pytest.raises(DataError, match=re.escape(message)):
            classifier.add_labels([10], [name])
    np.testing.assert_array_equal(classifier.training_data.y, before)


# --- nothing left in folders that are no runs -------------------------------------------------


def test_commands_on_a_folder_that_is_no_run_leave_no_lock(tmp_path: Path, capsys: Any) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    sheet = tmp_path / "labels.csv"
    sheet.write_text("index,label\n1,a\n")
    for args in (
        ["label", str(folder), str(sheet)], ["report", str(folder)], ["train", "--resume", str(folder), "--quiet"],
        ["retrain", str(folder), "--quiet"], ["query", str(folder)], ["labels", str(folder)],
    ):
        _refused(args, "is not a run directory (it has neither model.ckpt nor config.toml)", capsys)
    assert list(folder.iterdir()) == []
