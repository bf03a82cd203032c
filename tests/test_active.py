"""The label loop: classifier.query, `ssvae query`, the query sheet through `ssvae label`,
the simulated loop (its oracle, its curve), and one round by hand equal to the loop's."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.cli import main
from ssvae_core.config import load_config
from ssvae_core.data.loading import load_digits
from ssvae_core.errors import DataError
from ssvae_core.labels.labeling import LoopPlan, Oracle, parse_seeds, run_loop
from ssvae_core.labels.store import LabelStore, read_label_csv
from ssvae_core.runs.run import split_dataset

from .test_compilation import _Compilations, compilations  # noqa: F401

TINY = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.log_every=20",
]
INITIAL_STEPS, ROUND_STEPS, PER_ROUND = 40, 20, 6


def _train(out: Path) -> None:
    code = main(
        ["train", "--labels-per-class", "1", "--steps", str(INITIAL_STEPS), "--seed", "0",
         "--out", str(out), "--quiet", "--no-plots", *TINY]
    )
    assert code == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("active") / "run"
    _train(run)
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _sheet(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _fill(path: Path, labels: dict[int, str]) -> None:
    rows = _sheet(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "label": labels.get(int(row["index"]), "")})


def test_query_writes_a_sheet_of_unlabeled_training_rows(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(run), "--strategy", "margin", "--n", "7"]) == 0
    sheet = run / "queries" / "step-40-margin.csv"
    assert str(sheet) in capsys.readouterr().out
    assert sheet.with_suffix(".png").stat().st_size > 0
    rows = _sheet(sheet)
    assert list(rows[0]) == ["index", "label", "score", "predicted", "certainty"]
    assert len(rows) == 7 and all(row["label"] == "" for row in rows)
    config = load_config(run / "config.toml")
    digits = load_digits()
    split = split_dataset(digits, config)
    labeled = set(LabelStore.load(run / "labels.json").current())
    indices = [int(row["index"]) for row in rows]
    assert set(indices) <= set(split.train.tolist()) and not set(indices) & labeled
    assert len(set(indices)) == 7
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)  # best first
    # the same query again is the same sheet, written beside the first
    assert main(["query", str(run), "--strategy", "margin", "--n", "7"]) == 0
    assert _sheet(run / "queries" / "step-40-margin-2.csv") == rows


def test_a_filled_sheet_labels_only_its_filled_rows(run: Path) -> None:
    out = run.parent / "sheet.csv"
    assert main(["query", str(run), "--strategy", "kcenter", "--n", "4", "--out", str(out)]) == 0
    rows = _sheet(out)
    with pytest.raises(DataError, match="query sheet with no label filled in"):
        read_label_csv(out)
    digits = load_digits()
    first, second = int(rows[0]["index"]), int(rows[2]["index"])
    _fill(out, {first: str(digits.y[first]), second: str(digits.y[second])})
    before = len(LabelStore.load(run / "labels.json").current())
    assert main(["label", str(run), str(out)]) == 0
    after = LabelStore.load(run / "labels.json").current()
    assert len(after) == before + 2 and after[first] == str(digits.y[first])


def test_query_bad_input_is_one_line_and_exit_2(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--strategy", "entopy"], "strategy 'entopy' is not registered (did you mean 'entropy'?)"),
        (["--n", "100000"], "cannot query 100000 examples: only"),
        (["--n", "0"], "positive integer"),
        (["--strategy", "bald", "--set", "num_samples=1"], "bald.num_samples must be an integer >= 2"),
        (["--set", "nonsense"], "--set expects section.key=value"),
    ]
    for extra, message in cases:
        assert main(["query", str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (run / "queries").exists()
    taken = run.parent / "taken.csv"
    taken.write_text("index,label\n", encoding="utf-8")
    assert main(["query", str(run), "--out", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert taken.read_text(encoding="utf-8") == "index,label\n"
    (run / "model.ckpt").unlink()
    assert main(["query", str(run)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert main(["query", str(run.parent / "missing")]) == 2


def test_classifier_query_picks_unlabeled_rows_and_labels_them() -> None:
    digits = load_digits()
    y = np.full(len(digits.y), -1)
    for c in range(10):
        y[np.flatnonzero(digits.y == c)[:2]] = c
    # the config of the runs above (the compiled step is shared)
    config = load_config(None, [f"train.steps={INITIAL_STEPS}", *TINY[1::2]])
    classifier = SSVAEClassifier(config).fit(digits.x, y)
    result = classifier.query(5, "entropy")
    assert len(result) == 5 and not np.any(y[result.indices] >= 0)
    assert np.all(np.diff(result.scores) <= 0)
    same = classifier.query(5, "random", seed=3)
    assert np.array_equal(same.indices, classifier.query(5, "random", seed=3).indices)
    classifier.add_labels(result.indices, [int(digits.y[i]) for i in result.indices])
    assert int(np.sum(classifier.training_data.y >= 0)) == 25
    assert not set(classifier.query(5, "entropy").indices) & set(result.indices.tolist())


def test_the_oracle_never_reveals_held_out_labels() -> None:
    digits = load_digits()
    config = load_config(None, ["data.labels_per_class=1"])
    split = split_dataset(digits, config)
    oracle = Oracle(digits, split)
    assert oracle.labels(split.train[:3].tolist()) == [str(digits.y[i]) for i in split.train[:3]]
    with pytest.raises(DataError, match="training examples only"):
        oracle.labels([int(split.test[0])])


def test_parse_seeds() -> None:
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(Exception, match="--seeds"):
            parse_seeds(bad)


def test_one_round_by_hand_equals_the_loops_first_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = tmp_path / "loop"
    code = main(
        ["loop", "--strategy", "entropy,random", "--initial-labels-per-class", "1", "--rounds", "1",
         "--per-round", str(PER_ROUND), "--steps-per-round", str(ROUND_STEPS), "--steps", str(INITIAL_STEPS),
         "--seeds", "0", "--out", str(loop), *TINY]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "entropy seed 0 round 1/1" in out and "curve:" in out
    summary = json.loads((loop / "curve.json").read_text(encoding="utf-8"))
    assert list(summary) == ["entropy", "random"]
    assert [row["labels"] for row in summary["entropy"]] == [10, 16]
    assert (loop / "curve.png").stat().st_size > 0
    lines = [json.loads(line) for line in (loop / "curve.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and {line["round"] for line in lines} == {0, 1}

    # by hand: train, query, label the sheet with the data's labels, retrain
    hand = tmp_path / "hand"
    _train(hand)
    assert main(["query", str(hand), "--strategy", "entropy", "--n", str(PER_ROUND)]) == 0
    sheet = hand / "queries" / f"step-{INITIAL_STEPS}-entropy.csv"
    digits = load_digits()
    _fill(sheet, {int(row["index"]): str(digits.y[int(row["index"])]) for row in _sheet(sheet)})
    assert main(["label", str(hand), str(sheet)]) == 0
    assert main(["retrain", str(hand), "--steps", str(ROUND_STEPS), "--quiet", "--no-plots"]) == 0

    ran = loop / "runs" / "entropy" / "seed-0"
    loop_sheet = _sheet(ran / "queries" / "round-1.csv")
    assert [r["index"] for r in loop_sheet] == [r["index"] for r in _sheet(sheet)]
    by_hand = json.loads((hand / "rounds.jsonl").read_text(encoding="utf-8").splitlines()[1])
    in_loop = json.loads((ran / "rounds.jsonl").read_text(encoding="utf-8").splitlines()[1])
    for key in ("labels", "labels_by_class", "to_step", "test_accuracy", "ece"):
        assert by_hand[key] == in_loop[key], key
    x = digits.x[:64]
    np.testing.assert_array_equal(
        SSVAEClassifier.load(hand / "model.ckpt").predict_proba(x),
        SSVAEClassifier.load(ran / "model.ckpt").predict_proba(x),
    )


def test_loop_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--strategy", "nope"], "strategy 'nope' is not registered"),
        (["--rounds", "0"], "--rounds must be a positive integer"),
        (["--seeds", "x"], "--seeds must be"),
        (["--strategy", "entropy", "--strategy", "entropy"], "names a strategy twice"),
    ]
    for extra, message in cases:
        assert main(["loop", "--out", str(tmp_path / "loop"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "loop").exists()
    plan = LoopPlan(load_config(None, []), ("entropy",), (0,), rounds=1, per_round=5, steps_per_round=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("", encoding="utf-8")
    with pytest.raises(Exception, match="already exists and is not empty"):
        run_loop(plan, tmp_path / "full")


def test_the_loop_compiles_nothing_after_its_first_round(
    tmp_path: Path, compilations: _Compilations  # noqa: F811
) -> None:
    config = load_config(None, [f"train.steps={INITIAL_STEPS}", "data.labels_per_class=1", *TINY[1::2]])
    plan = LoopPlan(config, ("margin",), (0,), rounds=3, per_round=PER_ROUND, steps_per_round=ROUND_STEPS)
    seen: list[tuple[int, list[str]]] = []
    run_loop(plan, tmp_path / "loop", on_round=lambda r: seen.append((r["round"], list(compilations.names))), plots=False)
    after_first = dict(seen)[1]
    assert dict(seen)[3] == after_first, set(dict(seen)[3]) ^ set(after_first)
