"""The label loop's commands (label, labels, retrain, query, loop, studio) and the API's label
methods under bad input — one line, exit code 2, nothing written or left behind — and
under kills: ``ssvae label``, ``ssvae retrain`` and ``ssvae loop`` killed at chosen points
(the driver of ``test_recovery.py``), after which the next command on the run completes it
with nothing lost and nothing left behind."""

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
from ssvae_core.labels.store import STORE_NAME, LabelStore, label_name
from ssvae_core.training.checkpoint import load_checkpoint

from .test_recovery import DRIVER, _quiet, cache_env
from .test_recovery import TINY as RECOVERY_TINY

STEPS = 20
TINY = [a if a != "40" else str(STEPS) for a in RECOVERY_TINY]  # checkpoints every 10 steps
RETRAIN = ["--no-plots", "--quiet"]
VOLATILE = ("time", "wall_time_s")  # the fields of a round record that differ between two runs
HUGE_SEED = str(2**63)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shapes_npz: Path) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    _quiet(["train", "--data", str(shapes_npz), "--out", str(out), *TINY])
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, trained: Path) -> dict[str, str]:
    """The killed children's environment: this session's XLA cache, which holds what
    training ``trained`` compiled (see test_recovery.py)."""
    return cache_env(tmp_path_factory)


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


def _unlabeled_train_row(run: Path, shapes_npz: Path) -> int:
    from ssvae_core.config import config_from_dict
    from ssvae_core.data.loading import load_dataset
    from ssvae_core.runs.run import split_dataset

    config = config_from_dict(
        {"seed": 0, "data": {"labels_per_class": 2, "dataset": str(shapes_npz)}}
    )
    split = split_dataset(load_dataset(str(shapes_npz)), config)
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
    from ssvae_core.runs.rundir import recover

    metrics = run / "metrics.jsonl"
    whole = metrics.read_bytes()
    metrics.write_bytes(whole + b'{"step": 15, "lo')
    notes = recover(run, STEPS)
    assert metrics.read_bytes() == whole and len(notes) == 1


# --- seeds, steps, flags ---------------------------------------------------------------------


def test_seeds_beyond_64_bits_are_refused(run: Path, shapes_npz: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "new"
    _refused(["train", "--data", str(shapes_npz), "--out", str(out), *TINY, "--seed", HUGE_SEED], "seed must be an integer from 0 to 2**63 - 1", capsys)
    assert not out.exists()
    before = _files(run)
    _refused(["query", str(run), "--seed", HUGE_SEED], "--seed must be an integer from 0", capsys)
    _refused(["query", str(run), "--seed", "-1"], "--seed must be an integer from 0", capsys)
    assert _files(run) == before
    loop = tmp_path / "loop"
    _refused(["loop", "--data", str(shapes_npz), "--out", str(loop), "--seeds", HUGE_SEED, "--quiet"], "--seeds must be an integer from 0", capsys)
    assert not loop.exists()
    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        _with_data(SSVAEClassifier.load(run / "model.ckpt"), shapes_npz).query(3, seed=2**63)


def _with_data(classifier: SSVAEClassifier, shapes_npz: Path) -> SSVAEClassifier:
    """The loaded classifier holding training data (three rows labeled), as after a fit."""
    from ssvae_core.data.loading import from_arrays, load_dataset

    dataset = load_dataset(str(shapes_npz))
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
    run: Path, shapes_npz: Path, tmp_path: Path, capsys: Any, no_training: None
) -> None:
    before = _files(run)
    _refused(["retrain", str(run), "--steps", str(2**31), "--quiet"], "at most 2**31 - 1", capsys)
    _refused(["retrain", str(run), "--steps", str(2**31 - STEPS), "--quiet"], "at most 2**31 - 1", capsys)
    _refused(["train", "--resume", str(run), "--steps", str(2**31), "--quiet"], "at most 2**31 - 1", capsys)
    assert _files(run) == before
    out = tmp_path / "new"
    _refused(["train", "--data", str(shapes_npz), "--out", str(out), *TINY, "--steps", str(2**31)], "train.steps must be an integer <= 2147483647", capsys)
    assert not out.exists()


def test_empty_tracker_names_and_blank_studio_tokens_are_refused(
    run: Path, shapes_npz: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "new"
    _refused(["train", "--data", str(shapes_npz), "--out", str(out), *TINY, "--track", ","], "got an empty name in ','", capsys)
    assert not out.exists()
    _refused(["retrain", str(run), "--track", "tensorboard,", "--quiet"], "--track expects tracker names", capsys)
    pytest.importorskip("starlette")
    for token in (" " * 8, "abc defgh", "abcdefgh\x07"):
        _refused(["studio", str(run), "--token", token, "--port", "0"], "without spaces or control characters", capsys)


def test_a_coordinator_that_is_no_host_name_is_refused_before_jax_starts(shapes_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    command = [
        sys.executable, "-c", "import sys; from ssvae_core.cli import main; sys.exit(main(sys.argv[1:]))",
        "train", "--data", str(shapes_npz), "--out", str(out), *TINY,
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
    shapes_npz: Path, tmp_path: Path, capsys: Any, no_training: None
) -> None:
    out = tmp_path / "loop"
    _refused(
        ["loop", "--data", str(shapes_npz), "--out", str(out), "--per-round", "1000000", *TINY[2:]],
        "unlabeled examples; query fewer", capsys,
    )
    assert not out.exists()
    _refused(
        ["loop", "--data", str(shapes_npz), "--out", str(out), "--rounds", "3", "--steps-per-round", str(2**30), "--quiet"],
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
    run: Path, shapes_npz: Path, tmp_path: Path, row: str, message: str, capsys: Any
) -> None:
    index = _unlabeled_train_row(run, shapes_npz)
    second = index + 1 if index + 1 < 48 else index - 1
    text = "index,label\n" + row.format(i=index, i2=second)
    sheet = tmp_path / "labels.csv"
    sheet.write_text(text, encoding="utf-8")
    before = _files(run)
    _refused(["label", str(run), str(sheet)], message, capsys)
    assert _files(run) == before


def test_a_name_in_another_normal_form_is_the_same_class(run: Path, shapes_npz: Path, tmp_path: Path) -> None:
    index = _unlabeled_train_row(run, shapes_npz)
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


def test_the_api_refuses_the_names_the_store_refuses(run: Path, shapes_npz: Path) -> None:
    classifier = _with_data(SSVAEClassifier.load(run / "model.ckpt"), shapes_npz)
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


# --- kills ----------------------------------------------------------------------------------


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


def _sheet(run: Path, tmp_path: Path, shapes_npz: Path) -> tuple[Path, dict[int, str]]:
    from ssvae_core.data.loading import load_dataset
    from ssvae_core.runs.run import Run, split_dataset

    dataset = load_dataset(str(shapes_npz))
    split = split_dataset(dataset, Run(run).config)
    held = LabelStore.load(run / STORE_NAME).current()
    rows = [int(i) for i in split.train if int(i) not in held][:4]
    labels = {row: dataset.label_names[int(dataset.y[row])] for row in rows}
    sheet = tmp_path / "labels.csv"
    sheet.write_text("index,label\n" + "".join(f"{row},{name}\n" for row, name in labels.items()))
    return sheet, labels


def test_a_label_killed_while_writing_the_store_is_redone_by_the_next_label(
    run: Path, shapes_npz: Path, env: dict[str, str], tmp_path: Path
) -> None:
    sheet, labels = _sheet(run, tmp_path, shapes_npz)
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
    shapes_npz: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    loop = tmp_path / "loop"
    flags = [a for a in TINY[2:] if a != "--no-plots"]
    args = [
        "loop", "--data", str(shapes_npz), "--out", str(loop), "--rounds", "1", "--per-round", "3",
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
