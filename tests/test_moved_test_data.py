"""A run trained with ``--test-data`` whose data and test set have both moved: ``--test-data``
beside ``--data`` on the commands that work on an existing run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssvae_core.cli import main
from ssvae_core.config import load_config
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.runs.run import Run, with_data

TINY = [
    "--steps", "2", "--labels-per-class", "2", "--set", "train.batch_size=8", "--set",
    "train.log_every=2", "--set", "prior.num_components=3", "--quiet", "--no-plots",
]  # fmt: skip


def _pair(folder: Path, rows: int, seed: int, width: int = 4, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    """A NumPy-pair folder: ``x.npy`` (rows × width), ``y.npy`` and ``label_names.txt``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "x.npy", rng.random((rows, width)).astype(np.float32))
    np.save(folder / "y.npy", (np.arange(rows) % 3).astype(np.int64))
    (folder / "label_names.txt").write_text("\n".join(names) + "\n")
    return folder


def _quiet(args: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(args)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time (but the writer
    lock, which a command takes before it reads the data)."""
    return {
        os.fspath(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run trained on ``train/`` with the test set ``test/``, both folders then moved."""
    root = tmp_path_factory.mktemp("moved-test-data")
    train, test = _pair(root / "train", 30, 0), _pair(root / "test", 9, 1)
    run = root / "run"
    assert _quiet(["train", "--data", str(train), "--test-data", str(test), "--out", str(run), *TINY]) == 0
    split = Run.open(run, "test").split
    np.save(root / "split-test.npy", split.test)
    np.save(root / "split-train.npy", split.train)
    train.rename(root / "train-now")
    test.rename(root / "test-now")
    return {
        "root": root, "run": run, "old_train": train, "old_test": test,
        "train": root / "train-now", "test": root / "test-now",
    }


def test_without_test_data_the_run_names_its_missing_test_set_and_the_flag(
    moved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(moved["run"])
    assert main(["labels", str(moved["run"]), "--data", str(moved["train"])]) == 2
    err = capsys.readouterr().err
    assert f"the run's test data {str(moved['old_test'])!r} does not exist" in err
    assert "--test-data PATH" in err
    assert main(["labels", str(moved["run"])]) == 2
    err = capsys.readouterr().err
    assert f"the run's data {str(moved['old_train'])!r} does not exist" in err and "--data PATH" in err
    assert _files(moved["run"]) == before


def test_labels_and_query_read_the_moved_test_set_with_the_same_split(
    moved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--data", str(moved["train"]), "--test-data", str(moved["test"])]
    capsys.readouterr()
    assert main(["labels", str(moved["run"]), "--json", *flags]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 6  # the split's 2 labels per class
    run = Run.open(moved["run"], "test", data=str(moved["train"]), test_data=str(moved["test"]))
    assert run.config.data.test_dataset == str(moved["test"].resolve())
    assert len(run.split.test) == 9 and run.dataset.test_rows == 9
    assert np.array_equal(run.split.test, np.load(moved["root"] / "split-test.npy"))
    assert np.array_equal(run.split.train, np.load(moved["root"] / "split-train.npy"))
    sheet = moved["root"] / "sheet.csv"
    assert main(["query", str(moved["run"]), "--n", "3", "--out", str(sheet), *flags]) == 0
    rows = [int(line.split(",")[0]) for line in sheet.read_text().splitlines()[1:]]
    assert len(rows) == 3 and all(row < 30 for row in rows)  # training rows only, never the test set's


def test_retrain_and_resume_use_the_moved_test_set_and_record_where_it_is(
    moved: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"  # a copy: the other tests need the run's recorded paths as trained
    shutil.copytree(moved["run"], run)
    flags = ["--data", str(moved["train"]), "--test-data", str(moved["test"])]
    assert _quiet(["retrain", str(run), "--steps", "2", "--quiet", "--no-plots", *flags]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["num_test"] == 9 and report["num_train"] == 30
    assert report["test_dataset"] == str(moved["test"].resolve())
    config = (run / "config.toml").read_text()
    assert f'test_dataset = "{moved["test"].resolve()}"' in config
    assert f'dataset = "{moved["train"].resolve()}"' in config
    assert _quiet(["train", "--resume", str(run), "--steps", "6", *flags]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["steps"] == 6 and report["num_test"] == 9
    assert _quiet(["labels", str(run)]) == 0  # the recorded paths are the new ones


def test_the_studio_opens_the_run_with_its_moved_test_set(moved: dict[str, Path]) -> None:
    from ssvae_core.studio.session import StudioSession

    with pytest.raises(DataError, match=r"the run's test data .* does not exist"):
        StudioSession(moved["run"], data=str(moved["train"]))
    with StudioSession(moved["run"], data=str(moved["train"]), test_data=str(moved["test"])) as session:
        assert len(session.split.test) == 9
        assert session.train_rows.tolist() == np.load(moved["root"] / "split-train.npy").tolist()


def test_a_test_part_of_another_shape_or_classes_is_refused_naming_both(
    moved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wide = _pair(moved["root"] / "wide", 9, 2, width=5)
    other = _pair(moved["root"] / "other", 9, 2, names=("a", "b", "x"))
    before = _files(moved["run"])
    data = ["--data", str(moved["train"])]
    assert main(["labels", str(moved["run"]), *data, "--test-data", str(wide)]) == 2
    err = capsys.readouterr().err
    assert f"the test data {str(wide.resolve())!r} has samples of shape (5,)" in err and "(4,)" in err
    assert main(["query", str(moved["run"]), *data, "--test-data", str(other)]) == 2
    assert "classes ['a', 'b', 'x'] but the training data" in capsys.readouterr().err
    assert _files(moved["run"]) == before


def test_test_data_for_a_run_holding_out_a_fifth_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = _pair(tmp_path / "train", 30, 0), _pair(tmp_path / "test", 9, 1)
    run = tmp_path / "run"
    assert _quiet(["train", "--data", str(train), "--out", str(run), *TINY]) == 0
    before = _files(run)
    for command in (["labels", str(run)], ["retrain", str(run), "--steps", "2"], ["train", "--resume", str(run)]):
        capsys.readouterr()
        assert main([*command, "--test-data", str(test)]) == 2
        err = capsys.readouterr().err
        assert f"run {str(run)!r} was given none" in err and "holds out a fifth of its data" in err
    assert _files(run) == before
    with pytest.raises(ConfigError, match="holds out a fifth of its data"):
        Run.open(run, "label", test_data=str(test))
    from ssvae_core.studio.session import StudioSession

    with pytest.raises(ConfigError, match="holds out a fifth of its data"):
        StudioSession(run, test_data=str(test))
    with pytest.raises(ConfigError, match="this run was given none"):
        with_data(load_config(), None, str(test))


def test_a_run_killed_before_its_first_checkpoint_reads_its_test_set_from_config_toml(
    moved: dict[str, Path], tmp_path: Path
) -> None:
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(moved["run"] / "config.toml", killed / "config.toml")
    run = Run.open(killed, "--resume", test_data=str(moved["test"]))
    assert run.recorded_test_set() == str(moved["old_test"].resolve())
    fifth = tmp_path / "fifth"
    fifth.mkdir()
    (fifth / "config.toml").write_text((killed / "config.toml").read_text().replace(
        f'test_dataset = "{moved["old_test"].resolve()}"', 'test_dataset = ""'
    ))
    with pytest.raises(ConfigError, match=r"run '.*fifth' was given none"):
        Run.open(fifth, "--resume", test_data=str(moved["test"]))
