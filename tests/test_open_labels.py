"""Labels after training: free channels, claiming them, τ growth, warm retraining, and the
label/labels/retrain commands on a run directory."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.cli import main
from ssvae_core.config import config_from_dict
from ssvae_core.data.loading import benchmark_split
from ssvae_core.errors import DataError, SSVAEError
from ssvae_core.labels.labelspace import claim_channels, claim_for_classes
from ssvae_core.labels.store import STORE_NAME, LabelStore
from ssvae_core.modelling.model import build_model
from ssvae_core.modelling.objective import build_objective
from ssvae_core.modelling.schedules import constant
from ssvae_core.modelling.terms.builtin import UsageTerm
from ssvae_core.training import labeled_pool

from .test_compilation import _Compilations, compilations  # noqa: F401

RAW = {
    "seed": 0,
    "model": {"latent_dim": 2, "embedding_dim": 4},
    "prior": {"name": "mixture", "num_components": 6},
    "encoder": {"hidden": [16]},
    "decoder": {"hidden": [16]},
    "loss": {"graph_label": {"weight": 0.0}},
    # 10 steps leave the responsibilities of the labeled examples nearly uniform, so every
    # channel holds some label mass: a larger share marks the unowned ones free.
    "head": {"name": "tau", "free_mass": 0.12},
    "train": {"steps": 10, "batch_size": 8, "log_every": 5},
}


def test_claim_takes_the_free_channel_holding_most_responsibility() -> None:
    r = np.array([[0.7, 0.1, 0.2, 0.0], [0.6, 0.3, 0.1, 0.0]])
    free = np.array([False, True, True, True])
    assert claim_channels(r, free, label="x") == (1, 2)  # 0 is owned; 3 holds nothing


def test_claim_takes_at_most_three_channels_and_only_those_near_the_best() -> None:
    r = np.array([[0.2, 0.2, 0.2, 0.2, 0.2], [0.5, 0.0, 0.0, 0.0, 0.5]])
    assert claim_channels(r, np.ones(5, bool), label="x") == (0, 4, 1)
    lopsided = np.array([[0.9, 0.05, 0.05]])
    assert claim_channels(lopsided, np.ones(3, bool), label="x") == (0,)


def test_claim_without_a_free_channel_says_what_to_do() -> None:
    with pytest.raises(DataError, match=r"no free channel is left for the new class 'cat'.*num_components=8"):
        claim_channels(np.ones((2, 4)) / 4, np.zeros(4, bool), label="cat")


def test_two_new_classes_never_claim_the_same_channel() -> None:
    r = np.array([[0.1, 0.9, 0.0], [0.1, 0.8, 0.1]])
    claims = claim_for_classes(r, ["a", "b"], ["a", "b"], np.ones(3, bool))
    assert claims[0][0] == 1 and 1 not in claims[1]


def test_a_class_without_labels_is_accepted_by_the_split() -> None:
    y = np.repeat(np.arange(3), 30)
    y[y == 2] = -1
    split = benchmark_split(y, 5, 0, num_classes=3)
    assert set(y[split.labeled]) == {0, 1}


@pytest.fixture(scope="module")
def open_classifier(synthetic: dict[str, np.ndarray]) -> SSVAEClassifier:
    """Fitted on two of the three shapes: class 2 has no label and no name."""
    partial = synthetic["partial"].copy()
    partial[partial == 2] = -1
    return SSVAEClassifier(config_from_dict(RAW)).fit(
        synthetic["x"], partial, label_names=["diag", "anti"]
    )


def test_report_lists_every_channel_with_owner_and_free_flag(
    open_classifier: SSVAEClassifier, synthetic: dict[str, np.ndarray]
) -> None:
    rows = open_classifier.channels()
    assert [row["channel"] for row in rows] == list(range(6))
    assert all(set(row) >= {"usage", "owner", "tau_max", "label_mass_share", "free"} for row in rows)
    assert any(row["free"] for row in rows)  # 6 channels, 2 labeled classes
    assert all((row["owner"] is None) == row["free"] for row in rows)
    table = open_classifier.evaluate(synthetic["x"][:40], synthetic["y"][:40])["channels"]["table"]
    assert len(table) == 6


def test_a_new_name_claims_free_channels_grows_tau_and_survives_a_reload(
    open_classifier: SSVAEClassifier, synthetic: dict[str, np.ndarray], tmp_path: Path
) -> None:
    classifier = SSVAEClassifier.load(_saved(open_classifier, tmp_path))
    classifier.resume(open_classifier.training_data, until_step=10 + 1)
    free_before = {row["channel"] for row in classifier.channels() if row["free"]}
    tau_before = classifier.tau.copy()
    assert classifier.add_labels([40, 41, 42], ["block"] * 3) == ("block",)
    assert classifier.label_names == ("diag", "anti", "block")
    claimed = classifier.claims["block"]
    assert 1 <= len(claimed) <= 3 and set(claimed) <= free_before
    tau = classifier.tau
    assert tau.shape == (6, 3)
    assert all(int(np.argmax(tau[c])) == 2 for c in claimed)
    kept = [c for c in range(6) if c not in claimed]
    # old classes keep their counts: their τ proportions are unchanged
    old = tau[kept, :2] / tau[kept, :2].sum(-1, keepdims=True)
    np.testing.assert_allclose(old, tau_before[kept] / tau_before[kept].sum(-1, keepdims=True), rtol=1e-5)

    classifier.retrain(5)
    assert int(classifier.state.step) == 16
    path = tmp_path / "grown.ckpt"
    classifier.save(path)
    reloaded = SSVAEClassifier.load(path)
    assert reloaded.label_names == ("diag", "anti", "block")
    np.testing.assert_array_equal(reloaded.predict_proba(synthetic["x"]), classifier.predict_proba(synthetic["x"]))
    assert reloaded.evaluate(synthetic["x"], synthetic["y"]) == classifier.evaluate(synthetic["x"], synthetic["y"])


def _saved(classifier: SSVAEClassifier, tmp_path: Path) -> Path:
    path = tmp_path / "open.ckpt"
    classifier.save(path)
    return path


@pytest.mark.parametrize(
    ("indices", "labels", "message"),
    [
        ([999], ["diag"], "index 999 is out of range"),
        ([40, 40], ["diag", "anti"], "row 40 is given two labels"),
        ([0], ["anti"], "row 0 is already labeled 'diag'"),
        ([40], [7], "class index 7 is unknown"),
        ([40], [""], "label '' is empty"),
        ([40], [None], "a label must be a class name"),
        # the store's rule holds here too: line breaks, control characters, length, look-alikes
        ([40], ["a\nb"], "contains a line break"),
        ([40], ["bell\x07"], "contains a line break or control character"),
        ([40], ["x" * 1000], "is 1000 characters long"),
        ([40], ["\u200b"], "invisible format character"),
        ([40], ["diag\u200b"], "invisible format character"),
        ([40], ["Diag"], "looks like the label 'diag'"),
        ([40, 41], ["diag"], "one label per index"),
    ],
)
def test_bad_labels_raise_and_change_nothing(
    open_classifier: SSVAEClassifier, indices: list[int], labels: list[Any], message: str
) -> None:
    before = (open_classifier.label_names, open_classifier.training_data.y.copy(), open_classifier.tau.copy())
    with pytest.raises(DataError, match=message):
        open_classifier.add_labels(indices, labels)
    assert open_classifier.label_names == before[0]
    np.testing.assert_array_equal(open_classifier.training_data.y, before[1])
    np.testing.assert_array_equal(open_classifier.tau, before[2])


def test_a_loaded_classifier_has_no_training_data_to_label(
    open_classifier: SSVAEClassifier, tmp_path: Path
) -> None:
    loaded = SSVAEClassifier.load(_saved(open_classifier, tmp_path))
    with pytest.raises(SSVAEError, match="holds no training data"):
        loaded.add_labels([0], ["diag"])
    with pytest.raises(SSVAEError, match="holds no training data"):
        loaded.retrain(5)


def test_retraining_with_more_labels_of_known_classes_compiles_nothing_new(
    compilations: _Compilations, synthetic: dict[str, np.ndarray]  # noqa: F811
) -> None:
    config = config_from_dict({**RAW, "encoder": {"hidden": [15]}})  # a structure of its own
    classifier = SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])
    assert compilations.count() == 1
    classifier.add_labels([2, 3, 22], [0, 0, 1])
    classifier.retrain(4)
    classifier.add_labels([4, 24], ["0", "1"])
    classifier.retrain(4)
    assert compilations.count() == 1, compilations.names
    assert int(np.sum(classifier.training_data.y >= 0)) == 11


# --- the command line ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_run(tmp_path_factory: pytest.TempPathFactory, synthetic: dict[str, np.ndarray]) -> dict[str, Any]:
    """``ssvae train`` on data whose third class has no label at all."""
    root = tmp_path_factory.mktemp("open")
    y = synthetic["y"].copy()
    y[y == 2] = -1
    np.savez(root / "two.npz", x=synthetic["x"], y=y)
    out = root / "run"
    code = main([
        "train", "--data", str(root / "two.npz"), "--out", str(out), "--quiet", "--no-plots",
        "--labels-per-class", "2", "--steps", "10", "--set", "train.batch_size=8",
        "--set", "model.latent_dim=2", "--set", "prior.num_components=6",
        "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]",
        "--set", "loss.graph_label.weight=0", "--set", "train.log_every=5",
        "--set", 'head.name="tau"', "--set", "head.free_mass=0.12",
    ])
    assert code == 0
    train_rows = [i for i in range(60) if synthetic["y"][i] == 2]
    split = benchmark_split(y, 2, 0)
    hidden = [i for i in train_rows if i in set(split.train.tolist())]
    return {"root": root, "out": out, "hidden": hidden, "split": split}


def _write_csv(path: Path, rows: list[tuple[object, object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label"])
        writer.writerows(rows)
    return path


def test_train_writes_the_label_store_and_the_first_round(open_run: dict[str, Any]) -> None:
    out = open_run["out"]
    store = LabelStore.load(out / STORE_NAME)
    assert sorted(store.current()) == sorted(open_run["split"].labeled.tolist())
    assert {entry.source for entry in store.entries} == {"split"}
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["command"] == "train" and rounds[0]["labels"] == 4
    report = json.loads((out / "report.json").read_text())
    assert any(row["free"] for row in report["channels"]["table"])
    assert "free" in (out / "report.md").read_text()


def test_label_labels_retrain_evaluate_round_trip_also_after_moving_the_run(
    open_run: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, root = open_run["out"], open_run["root"]
    new = _write_csv(root / "new.csv", [(i, "block") for i in open_run["hidden"][:3]])
    assert main(["label", str(out), str(new)]) == 0
    assert "new classes block" in capsys.readouterr().out
    assert main(["labels", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_source"] == {"split": 4, "file": 3}
    assert summary["untrained_classes"] == ["block"]

    assert main(["retrain", str(out), "--steps", "5", "--quiet", "--no-plots"]) == 0
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["command"] for r in rounds] == ["train", "retrain"]
    assert rounds[1]["from_step"] == 10 and rounds[1]["to_step"] == 15
    assert rounds[1]["labels_by_class"]["block"] == 3 and rounds[1]["claimed_channels"]["block"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["label_names"] == ["0", "1", "block"]

    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    assert main(["evaluate", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == report["test_accuracy"]
    assert main(["retrain", str(moved), "--steps", "5", "--quiet", "--no-plots"]) == 0
    assert json.loads((moved / "report.json").read_text())["steps"] == 20


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(100000, "0")], "out of range"),
        ([("test", "0")], "line 2"),
        ([("TEST_ROW", "0")], "not a training example"),
        ([("HIDDEN", "0"), ("HIDDEN", "1")], "two different labels|two labels"),
    ],
)
def test_bad_label_files_exit_2_with_one_line_and_change_nothing(
    open_run: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    rows: list[tuple[object, object]], message: str,
) -> None:
    out = open_run["out"]
    before = (out / STORE_NAME).read_bytes()
    test_row = int(open_run["split"].test[0])
    hidden = open_run["hidden"][-1]
    rows = [
        (test_row if i == "TEST_ROW" else hidden if i == "HIDDEN" else i, label) for i, label in rows
    ]
    bad = _write_csv(tmp_path / "bad.csv", rows)
    capsys.readouterr()
    assert main(["label", str(out), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert (out / STORE_NAME).read_bytes() == before


# --- usage spread over classes, not channels --------------------------------------------------


@pytest.mark.parametrize(
    ("components", "spread", "cap"),
    [(6, "classes", np.log(3)), (3, "classes", None), (6, "channels", None)],
)
def test_usage_entropy_is_capped_at_log_y_only_with_more_channels_than_classes(
    components: int, spread: str, cap: float | None
) -> None:
    raw = {**RAW, "prior": {"name": "mixture", "num_components": components}, "loss": {"usage": {"spread": spread}}}
    model, config = build_model(config_from_dict(raw), input_shape=(4, 4), num_classes=3, key=jax.random.PRNGKey(0))
    term = dict(build_objective(config, model, input_shape=(4, 4), num_classes=3).named_terms())["usage"]
    assert term.cap == (None if cap is None else pytest.approx(cap))


def test_capped_usage_entropy_stops_rewarding_spread_beyond_the_classes() -> None:
    term = UsageTerm(constant(1.0), cap=float(np.log(3)))
    spread = SimpleNamespace(responsibilities=jnp.full((4, 6), 1 / 6))
    three = SimpleNamespace(responsibilities=jnp.tile(jnp.array([1 / 3] * 3 + [0.0] * 3), (4, 1)))
    two = SimpleNamespace(responsibilities=jnp.tile(jnp.array([0.5, 0.5, 0, 0, 0, 0]), (4, 1)))
    key = jax.random.PRNGKey(0)
    assert float(term(spread, key).values) == pytest.approx(np.log(3), rel=1e-6)
    assert float(term(three, key).values) == pytest.approx(np.log(3), rel=1e-6)
    assert float(term(two, key).values) == pytest.approx(np.log(2), rel=1e-6)


def test_a_balanced_labeled_pool_repeats_the_rows_of_classes_with_fewer_labels() -> None:
    labels = np.full(40, -1)
    labels[:10] = 0
    labels[10:20] = 1
    labels[[30, 31]] = 2  # a class named after training, with 2 labels
    index, y, count = labeled_pool(labels, balance=True)
    drawn = y[:count]
    assert count == 30 and [int(np.sum(drawn == c)) for c in range(3)] == [10, 10, 10]
    assert set(index[:count][drawn == 2]) == {30, 31}
    equal = np.where(labels == 2, -1, labels)
    assert [a.tolist() for a in labeled_pool(equal, balance=True)[:2]] == [
        a.tolist() for a in labeled_pool(equal)[:2]
    ]
    crowded = np.full(12, -1)
    crowded[:10] = 0
    crowded[10] = 1  # balancing would need 20 slots of 12: left as it is
    assert labeled_pool(crowded, balance=True)[2] == 11
