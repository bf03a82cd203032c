"""Labels after training: label issues (out-of-sample probabilities, the ranking, confirmed
labels left out, ``ssvae labels RUN --issues``, ``ssvae label --relabel`` for the
corrections), the noisy oracle of ``ssvae loop``, export and import (CSV and Label Studio
JSON, round trips through a fresh run) and annotators."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssvae_core.cli import main
from ssvae_core.config import load_config
from ssvae_core.data.loading import load_digits
from ssvae_core.labels.label_issues import find_label_issues, out_of_sample_probabilities
from ssvae_core.labels.store import STORE_NAME, LabelStore
from ssvae_core.runs.run import split_dataset

SMALL = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "prior.num_components=10",
]


def _clusters(flip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three well separated classes, 20 examples each, one channel per class; example
    ``flip`` carries a wrong label."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 20)
    z = 4.0 * np.eye(3)[truth] + 0.3 * rng.standard_normal((60, 3))
    r = 0.85 * np.eye(3)[truth] + 0.05
    given = truth.copy()
    given[flip] = (truth[flip] + 1) % 3
    return truth, given, z, r


def test_the_flipped_label_comes_first_with_its_true_label_suggested() -> None:
    _, given, z, r = _clusters(flip=7)
    p = out_of_sample_probabilities(given, 3, responsibilities=r, z=z, probabilities=r)
    assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1.0)
    names = ["a", "b", "c"]
    labels = [names[y] for y in given]
    issues = find_label_issues(list(range(100, 160)), labels, names, p, n=3)
    assert issues[0].index == 107 and issues[0].label == "b" and issues[0].suggested == "a"
    assert issues[0].p_label < 0.2 < 0.7 < issues[0].p_suggested
    assert all(i.suggested != i.label for i in issues)
    # its own label would have hidden it: τ and the neighbours are taken without it
    assert p[7, 0] > p[7, 1]
    # a confirmed label is not proposed again
    again = find_label_issues(list(range(100, 160)), labels, names, p, confirmed={107}, n=3)
    assert 107 not in [i.index for i in again]
    # without channels the model's own probabilities stand in for τ
    plain = out_of_sample_probabilities(given, 3, responsibilities=np.zeros((60, 0)), z=z, probabilities=r)
    assert np.argmin(plain[np.arange(60), given]) == 7


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("issues") / "run"
    assert main(["train", "--labels-per-class", "5", "--steps", "40", "--seed", "0", "--out", str(run),
                 "--quiet", "--no-plots", *SMALL]) == 0
    return run


def test_labels_issues_on_the_command_line_and_corrections(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = shutil.copytree(trained, tmp_path / "run")
    store = LabelStore.load(trained / STORE_NAME)
    current = store.current()
    assert main(["labels", str(trained), "--issues", "--n", "5", "--json"]) == 0
    issues = json.loads(capsys.readouterr().out)
    assert 1 <= len(issues) <= 5
    assert {"index", "label", "suggested", "p_label", "p_suggested", "source"} <= set(issues[0])
    assert all(current[i["index"]] == i["label"] != i["suggested"] for i in issues)
    assert [i["p_label"] for i in issues] == sorted(i["p_label"] for i in issues)
    # a review: the first relabeled, the second kept; neither is proposed again
    first, second = issues[0], issues[1] if len(issues) > 1 else issues[0]
    sheet = tmp_path / "review.csv"
    sheet.write_text(f"index,label\n{first['index']},{first['suggested']}\n{second['index']},{second['label']}\n")
    assert main(["label", str(trained), str(sheet)]) == 2  # without --relabel: refused
    assert "already labeled" in capsys.readouterr().err
    assert main(["label", str(trained), str(sheet), "--relabel"]) == 0
    capsys.readouterr()
    assert LabelStore.load(trained / STORE_NAME).current()[first["index"]] == first["suggested"]
    assert main(["labels", str(trained), "--issues", "--n", "5", "--json"]) == 0
    after = {i["index"] for i in json.loads(capsys.readouterr().out)}
    assert not after & {first["index"], second["index"]}
    assert main(["labels", str(trained), "--issues", "--n", "3"]) == 0
    assert "the model disputes" in capsys.readouterr().out
    assert main(["labels", str(trained), "--issues", "--n", "0"]) == 2
    assert "--n must be a positive integer" in capsys.readouterr().err


def test_a_noisy_oracle_errs_at_its_rate_and_the_same_way_each_time() -> None:
    from ssvae_core.config import load_config
    from ssvae_core.data.loading import load_digits
    from ssvae_core.labels.labeling import Oracle
    from ssvae_core.runs.run import split_dataset

    digits = load_digits()
    split = split_dataset(digits, load_config(None, []))
    rows = [int(i) for i in split.train]
    truth = Oracle(digits, split).labels(rows)
    assert truth == [str(int(digits.y[i])) for i in rows]
    noisy = Oracle(digits, split, noise=0.2, seed=3)
    given = noisy.labels(rows)
    wrong = np.mean([a != b for a, b in zip(given, truth, strict=True)])
    assert 0.16 < wrong < 0.24
    assert noisy.labels(rows[::-1]) == given[::-1]  # each example's draw is its own
    assert noisy.truth(rows) == truth
    assert Oracle(digits, split, noise=0.2, seed=4).labels(rows) != given


def test_a_loop_with_a_noisy_oracle_and_reviews(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = tmp_path / "loop"
    assert main(["loop", "--initial-labels-per-class", "2", "--rounds", "1", "--per-round", "20",
                 "--steps-per-round", "10", "--steps", "30", "--oracle-noise", "0.5", "--review-issues", "10",
                 "--no-plots", "--quiet", "--out", str(loop), *SMALL]) == 0
    capsys.readouterr()
    record = json.loads((loop / "curve.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert record["reviewed"] == 10 and 0 <= record["corrected"] <= 10
    store = LabelStore.load(loop / "runs" / "entropy" / "seed-0" / STORE_NAME)
    oracle = [e for e in store.entries if e.source == "oracle"]
    assert len(oracle) == 20 and sum(e.source == "review" for e in store.entries) == 10
    assert record["wrong_labels"] <= 20 - record["corrected"]
    settings = json.loads((loop / "loop.json").read_text(encoding="utf-8"))
    assert settings["oracle_noise"] == 0.5 and settings["review_issues"] == 10
    for bad, message in ((["--oracle-noise", "1"], "--oracle-noise must be a fraction"),
                         (["--review-issues", "-1"], "--review-issues must be an integer")):
        assert main(["loop", "--out", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err


def _free_rows(run: Path, count: int) -> list[int]:
    """Training rows of the fixture run's split without a label."""
    split = split_dataset(load_digits(), load_config(None, ["data.labels_per_class=5"]))
    held = set(LabelStore.load(run / STORE_NAME).current())
    return [int(i) for i in split.train if int(i) not in held][:count]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_then_import_reproduces_the_labels_exactly(
    trained: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    shutil.copytree(trained, source)
    fresh = tmp_path / "fresh"
    shutil.copytree(trained, fresh)
    store = LabelStore.load(source / STORE_NAME)
    split_rows = sorted(store.current())
    free = _free_rows(source, 6)
    sheet = tmp_path / "more.csv"
    with sheet.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label"])
        writer.writerows(zip(free, ["3", "bar", "é", "a,b", 'say "x"', "7"], strict=True))
    assert main(["label", str(source), str(sheet)]) == 0
    fix = tmp_path / "fix.csv"
    fix.write_text(f"index,label\n{split_rows[0]},bar\n", encoding="utf-8")
    assert main(["label", str(source), str(fix), "--relabel"]) == 0
    exported = tmp_path / f"labels{suffix}"
    assert main(["labels", str(source), "--export", str(exported)]) == 0
    assert "wrote 56 label(s)" in capsys.readouterr().out
    if suffix == ".json":
        tasks = json.loads(exported.read_text(encoding="utf-8"))
        assert len(tasks) == 56 and tasks[0]["annotations"][0]["result"][0]["type"] == "choices"
    wanted = LabelStore.load(source / STORE_NAME).current()
    assert main(["label", str(fresh), str(exported), "--relabel"]) == 0
    assert LabelStore.load(fresh / STORE_NAME).current() == wanted


def test_a_label_studio_export_with_cancelled_and_unlabeled_tasks(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    free = _free_rows(run, 3)
    tasks = [
        {"id": 1, "data": {"image": "a.png", "index": free[0]}, "annotations": [
            {"result": [{"type": "choices", "value": {"choices": ["4"]}}], "was_cancelled": False},
            {"result": [{"type": "choices", "value": {"choices": ["5"]}}], "was_cancelled": True},
        ]},
        {"id": 2, "data": {"ssvae_index": free[1]}, "annotations": [
            {"result": [{"type": "choices", "value": {"choices": [" 6 "]}}]}]},
        {"id": 3, "data": {"index": free[2]}, "annotations": []},
    ]
    path = tmp_path / "project.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    assert main(["label", str(run), str(path)]) == 0
    current = LabelStore.load(run / STORE_NAME).current()
    assert current[free[0]] == "4" and current[free[1]] == "6" and free[2] not in current


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"data": 1}', "a JSON list of tasks"),
        ('[{"data": {"index": -1}}]', "'data.index'"),
        ('[{"data": {"index": "3"}}]', "'data.index'"),
        ('[{"data": {"index": 3}, "annotations": [{"result": [{"value": {"choices": ["\\u200b"]}}]}]}]', "U+200B"),
        ('[{"data": {"index": 3}}]', "no task with a label"),
        ("[" * 100_000 + "]" * 100_000, "too deeply"),
    ],
)
def test_bad_label_studio_files_are_one_line_and_exit_2(
    trained: Path, tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    before = (trained / STORE_NAME).read_bytes()
    assert main(["label", str(trained), str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert (trained / STORE_NAME).read_bytes() == before


def test_export_needs_a_known_extension(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", str(trained), "--export", str(tmp_path / "labels.txt")]) == 2
    assert "use .csv (index,label) or .json" in capsys.readouterr().err
    assert not (tmp_path / "labels.txt").exists()


def test_annotators_on_the_command_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    a, b = _free_rows(run, 2)
    for who, rows in (("ana", f"{a},3\n{b},4\n"), ("ben", f"{a},5\n{b},4\n"), ("cy", f"{a},5\n")):
        sheet = tmp_path / f"{who}.csv"
        sheet.write_text("index,label\n" + rows, encoding="utf-8")
        assert main(["label", str(run), str(sheet), "--annotator", who]) == 0
    capsys.readouterr()
    assert LabelStore.load(run / STORE_NAME).current()[a] == "5"
    assert main(["labels", str(run)]) == 0
    out = capsys.readouterr().out
    assert "per annotator: (no annotator): 50  ana: 2 (1/2 shared agree)  ben: 2 (2/2 shared agree)" in out
    assert "agreement: 0.833 of annotators agree with the consensus" in out
    assert main(["labels", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shared"] == 2 and summary["annotators"]["cy"] == {"labels": 1, "shared": 1, "agreed": 1}
    again = tmp_path / "again.csv"
    again.write_text(f"index,label\n{a},7\n", encoding="utf-8")
    assert main(["label", str(run), str(again), "--annotator", "ana"]) == 2
    assert "already labeled '3' by 'ana'" in capsys.readouterr().err


def test_the_loop_reports_how_much_the_pool_changed_and_stops_when_stable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ssvae_core.labels.stopping import PoolPredictions, prediction_change

    before = PoolPredictions(np.arange(4), np.array([0, 1, 1, 2]), np.array([True, True, False, True]))
    after = PoolPredictions(np.arange(4), np.array([0, 2, 0, 2]), np.array([True, True, True, False]))
    assert prediction_change(before, after) == 0.5  # rows 0 and 1 are unlabeled in both; 1 changed
    loop = tmp_path / "loop"
    assert main(["loop", "--initial-labels-per-class", "2", "--rounds", "4", "--per-round", "5",
                 "--steps-per-round", "1", "--steps", "30", "--stop-when", "stable", "--stable-below", "0.5",
                 "--no-plots", "--out", str(loop), *SMALL]) == 0
    assert "stable: stopped" in capsys.readouterr().out
    records = [json.loads(line) for line in (loop / "curve.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["round"] for r in records] == [0, 1]  # one step per round moves almost nothing
    assert records[1]["stopped"] == "stable" and 0.0 <= records[1]["prediction_change"] < 0.5
    assert main(["loop", "--out", str(tmp_path / "bad"), "--stable-below", "0"]) == 2
    assert "--stable-below must be a fraction" in capsys.readouterr().err
