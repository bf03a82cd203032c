"""Training without labels and choosing the first ones: the clustering metrics, a label-free
run (CLI and API) and its report, the acquisitions that need no label, `ssvae query` on a
label-free run, and `ssvae loop --initial-strategy`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.cli import main
from ssvae_core.config import config_from_dict
from ssvae_core.errors import ConfigError
from ssvae_core.labels.acquisitions import (
    channels_formed,
    kmeans_plus_plus,
    resolved_space,
    typical_picks,
)
from ssvae_core.labels.active import label_free_strategies
from ssvae_core.labels.store import LabelStore
from ssvae_core.modelling.types import AcquisitionInputs
from ssvae_core.runs.metrics import clustering_accuracy, clustering_metrics, many_to_one_accuracy

TINY = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.log_every=20",
]
STEPS = 30


# --- the clustering metrics -----------------------------------------------------------------


def test_clustering_accuracy_matches_clusters_to_classes_one_to_one() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    clusters = np.array([2, 2, 1, 0, 0, 0, 1, 1, 2])  # 2→0, 0→1, 1→2: 7 of 9 right
    assert clustering_accuracy(clusters, labels) == pytest.approx(7 / 9)
    # a greedy map would give cluster 2 to class 0 and then miss; the best map is unique
    assert clustering_accuracy(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])) == 1.0


def test_with_more_clusters_than_classes_one_to_one_leaves_clusters_out_many_to_one_does_not() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # every cluster pure, two per class
    assert clustering_accuracy(clusters, labels) == pytest.approx(0.5)
    assert many_to_one_accuracy(clusters, labels) == 1.0
    assert many_to_one_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_clustering_metrics_read_the_most_responsible_channel() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(4)[[3, 3, 0, 0, 1, 1]] * 0.7 + 0.075  # renamed classes, an unused channel
    figures = clustering_metrics(perfect, labels)
    assert figures["clustering_accuracy"] == 1.0 and figures["many_to_one_accuracy"] == 1.0
    assert figures["nmi"] == pytest.approx(1.0) and figures["ari"] == pytest.approx(1.0)
    assert figures["num_channels"] == 4
    one = clustering_metrics(np.eye(4)[[0] * 6], labels)
    assert one["nmi"] == pytest.approx(0.0) and one["ari"] == pytest.approx(0.0)
    assert one["clustering_accuracy"] == pytest.approx(2 / 6)


# --- the label budget -----------------------------------------------------------------------


def test_train_with_a_label_budget_that_is_not_a_count_or_all_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse: usage and one error line
        main(["train", "--labels-per-class", "every", "--out", str(tmp_path / "run"), "--quiet"])
    assert exited.value.code == 2
    assert "labels_per_class must be an integer >= 0 (0: no labels) or 'all'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- a label-free run -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def free_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("free") / "run"
    code = main(
        ["train", "--labels-per-class", "0", "--steps", str(STEPS), "--seed", "0", "--out", str(run),
         "--quiet", "--set", "train.eval_every=20", *TINY]
    )
    assert code == 0
    return run


def test_a_label_free_run_reports_clustering_and_no_accuracy(free_run: Path) -> None:
    report = json.loads((free_run / "report.json").read_text(encoding="utf-8"))
    assert report["num_labels"] == 0 and report["label_free"] is True
    assert report["test_accuracy"] is None and report["ece"] is None
    assert "reliability" not in report and "confusion" not in report
    for key in ("clustering", "clustering_train"):
        figures = report[key]
        assert 0.0 < figures["clustering_accuracy"] <= figures["many_to_one_accuracy"] <= 1.0
        assert -1.0 <= figures["ari"] <= 1.0 and 0.0 <= figures["nmi"] <= 1.0
    markdown = (free_run / "report.md").read_text(encoding="utf-8")
    assert "no labels were used" in markdown and "test accuracy (τ" not in markdown
    assert "clustering accuracy, channels matched one-to-one (test)" in markdown
    assert "(hidden training labels)" in markdown
    plots = {p.name for p in (free_run / "plots").iterdir()}
    assert "latent_map.png" in plots and "tau_heatmap.png" not in plots and "reliability.png" not in plots
    assert LabelStore.load(free_run / "labels.json").current() == {}
    evaluated = [json.loads(line) for line in (free_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    evaluated = [row for row in evaluated if "train_time_s" in row]
    assert evaluated and all("held_out_clustering_accuracy" in row and "held_out_accuracy" not in row for row in evaluated)


def test_a_labeled_run_reports_clustering_too(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = main(
        ["train", "--labels-per-class", "2", "--steps", "10", "--out", str(run), "--quiet", "--no-plots", *TINY]
    )
    assert code == 0
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["label_free"] is False and isinstance(report["test_accuracy"], float)
    assert set(report["clustering"]) >= {"clustering_accuracy", "many_to_one_accuracy", "nmi", "ari"}
    assert report["clustering_train"]["num_classes_present"] == 10
    assert "clustering accuracy" in (run / "report.md").read_text(encoding="utf-8")


def test_query_on_a_label_free_run_picks_with_label_free_strategies_and_refuses_the_others(
    free_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for strategy in ("typical", "badge"):
        sheet = free_run / f"first-{strategy}.csv"
        assert main(["query", str(free_run), "--strategy", strategy, "--n", "10", "--out", str(sheet)]) == 0
        rows = sheet.read_text(encoding="utf-8").splitlines()[1:]
        assert len({row.split(",")[0] for row in rows}) == 10
        assert all(row.split(",")[3] == "" for row in rows)  # no labels: no predicted class
    capsys.readouterr()
    assert main(["query", str(free_run), "--strategy", "entropy", "--n", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "strategy 'entropy' reads the model's predictions" in err
    assert "badge" in err and "typical" in err and "margin" not in err


def test_label_free_strategies_are_those_that_read_no_prediction() -> None:
    names = label_free_strategies()
    assert {"random", "typical", "cover", "badge", "kcenter", "channel_entropy"} <= set(names)
    assert not {"entropy", "margin", "least_confidence", "bald", "disagreement", "diverse", "ood"} & set(names)


def test_the_api_fits_without_labels_and_queries_the_first_ones(
    tiny_raw: dict[str, Any], synthetic: dict[str, np.ndarray]
) -> None:
    classifier = SSVAEClassifier(config_from_dict(tiny_raw))
    classifier.fit(synthetic["x"], np.full(60, -1), num_classes=3)
    evaluation = classifier.evaluate(synthetic["x"], synthetic["y"])
    assert set(evaluation["clustering"]) >= {"clustering_accuracy", "nmi", "ari"}
    picks = classifier.query(3, "typical")
    assert len(set(picks.indices.tolist())) == 3
    with pytest.raises(ConfigError, match=r"to choose the first labels use one of: .*typical"):
        classifier.query(3, "margin")
    classifier.add_labels(picks.indices, [int(synthetic["y"][i]) for i in picks.indices])
    classifier.retrain(5)
    assert classifier.query(3, "margin").indices.size == 3  # with labels, every strategy again


# --- the acquisitions that need no label ----------------------------------------------------


def _blobs(sizes: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])[: len(sizes)]
    return np.concatenate([c + rng.standard_normal((n, 2)) for c, n in zip(centres, sizes, strict=True)])


def test_typical_picks_take_one_dense_example_per_cluster_largest_first() -> None:
    points = _blobs((40, 30, 20))
    picks = typical_picks(points, np.zeros(90, bool), 3, neighbours=5, seed=0)
    blob = np.repeat([0, 1, 2], [40, 30, 20])
    assert sorted(blob[picks].tolist()) == [0, 1, 2]
    # each pick lies in the inner half of its blob (dense), not on its rim
    for pick in picks:
        members = points[blob == blob[pick]]
        radii = np.linalg.norm(members - members.mean(axis=0), axis=1)
        assert np.linalg.norm(points[pick] - members.mean(axis=0)) < np.median(radii)


def test_typical_picks_skip_clusters_already_labeled() -> None:
    points = _blobs((40, 30, 20))
    labeled = np.zeros(90, bool)
    labeled[[0, 1, 40]] = True  # blobs 0 and 1 hold labels
    picks = typical_picks(points, labeled, 1, neighbours=5, seed=0)
    assert 70 <= int(picks[0]) < 90 and not labeled[picks].any()


def _confident(channels: np.ndarray, num_channels: int, confidence: float = 0.97) -> np.ndarray:
    r = np.full((channels.size, num_channels), (1 - confidence) / (num_channels - 1))
    r[np.arange(channels.size), channels] = confidence
    return r


def test_channels_formed_needs_confident_examples_spread_over_the_channels() -> None:
    channels = np.repeat(np.arange(4), 25)
    assert channels_formed(_confident(channels, 4))
    assert not channels_formed(_confident(np.zeros(100, int), 4))  # everything in one channel
    assert not channels_formed(_confident(channels % 2, 8))  # two of eight channels in use
    assert not channels_formed(np.full((100, 4), 0.25))  # no channel is confident
    assert not channels_formed(_confident(channels, 4, confidence=0.6))
    assert not channels_formed(np.zeros((100, 0)))  # a model without channels


def _inputs(z_mean: np.ndarray, responsibilities: np.ndarray) -> AcquisitionInputs:
    n = responsibilities.shape[0]
    return AcquisitionInputs(
        probabilities=jnp.full((n, 2), 0.5), certainty=jnp.zeros(n), responsibilities=jnp.asarray(responsibilities),
        tau=None, z_mean=jnp.asarray(z_mean), z_log_var=jnp.zeros_like(jnp.asarray(z_mean)),
        sample_probabilities=jnp.zeros((0, n, 2)), labeled=jnp.zeros(n, bool),
    )


def test_typical_reads_the_channels_once_they_have_formed() -> None:
    from ssvae_core.labels.acquisitions import TypicalAcquisition

    # channel 0 spreads over three far-apart blobs of μ(x); channels 1–3 share the fourth
    z = _blobs((40, 40, 40, 60))
    channels = np.concatenate([np.zeros(120, int), np.repeat([1, 2, 3], 20)])
    formed = _inputs(z, _confident(channels, 4))
    assert resolved_space(formed, "auto") == "responsibilities"
    picks = np.asarray(TypicalAcquisition(space="auto", neighbours=5).select(formed, 4, jax.random.PRNGKey(0)))
    assert sorted(channels[picks].tolist()) == [0, 1, 2, 3]
    # within its channel each pick is typical of μ(x): not on the rim of its blob
    blob = np.repeat([0, 1, 2, 3], [40, 40, 40, 60])
    for pick in picks:
        members = z[blob == blob[pick]]
        radii = np.linalg.norm(members - members.mean(axis=0), axis=1)
        assert np.linalg.norm(z[pick] - members.mean(axis=0)) < np.median(radii)
    # on the posterior means alone three picks go to channel 0's blobs
    by_mean = np.asarray(TypicalAcquisition(space="mean", neighbours=5).select(formed, 4, jax.random.PRNGKey(0)))
    assert np.sum(channels[by_mean] == 0) == 3
    # channels that have not formed (everything in one) leave auto on the posterior means
    unformed = _inputs(z, _confident(np.zeros(180, int), 4))
    assert resolved_space(unformed, "auto") == "mean"
    auto = np.asarray(TypicalAcquisition(space="auto", neighbours=5).select(unformed, 4, jax.random.PRNGKey(0)))
    assert sorted(auto.tolist()) == sorted(by_mean.tolist())


def test_kmeans_plus_plus_spreads_a_batch_and_never_takes_a_labeled_example() -> None:
    points = _blobs((25, 25, 25, 25))
    labeled = np.zeros(100, bool)
    labeled[:25] = True
    blob = np.repeat([0, 1, 2, 3], 25)
    hits = [
        sorted(blob[kmeans_plus_plus(points, labeled, 3, np.random.default_rng(seed))].tolist())
        for seed in range(5)
    ]
    assert all(hit == [1, 2, 3] for hit in hits), hits


def test_badge_and_typical_select_distinct_unlabeled_examples_of_a_fitted_model(
    fitted_classifier: SSVAEClassifier,
) -> None:
    from ssvae_core.labels.active import acquisition_inputs, build_acquisition, model_context

    model, state = fitted_classifier.model, fitted_classifier.state
    assert model is not None and state is not None
    x = np.asarray(fitted_classifier.training_data.x)
    labeled = np.zeros(x.shape[0], bool)
    labeled[:5] = True
    inputs = acquisition_inputs(model, state.head_state, x, labeled)
    for name, options in (("typical", {"space": "both"}), ("cover", {}), ("badge", {"over": "channels"}), ("badge", {})):
        acquisition = build_acquisition(name, model_context(model, fitted_classifier.input_shape), options)
        chosen = np.asarray(acquisition.select(inputs, 7, jax.random.PRNGKey(1)))
        assert np.unique(chosen).size == 7 and not labeled[chosen].any(), name
        scores = acquisition.score(inputs, jax.random.PRNGKey(1))
        assert scores.shape == (x.shape[0],) and bool(jnp.all(jnp.isfinite(scores)))


# --- the loop from chosen first labels ------------------------------------------------------


@pytest.mark.parametrize("training", ["cold", "warm"])
def test_the_loop_chooses_its_first_labels_from_a_label_free_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], training: str
) -> None:
    loop = tmp_path / "loop"
    code = main(
        ["loop", "--strategy", "random", "--initial-strategy", "typical", "--initial-training", training,
         "--initial-labels-per-class", "1", "--rounds", "1", "--per-round", "4", "--steps-per-round", "10",
         "--steps", str(STEPS), "--seeds", "0", "--out", str(loop), "--no-plots", "--quiet", *TINY]
    )
    assert code == 0, capsys.readouterr().err
    free = loop / "runs" / "label-free" / "seed-0"
    assert json.loads((free / "report.json").read_text(encoding="utf-8"))["label_free"] is True
    chosen = [line.split(",")[0] for line in (free / "queries" / "initial.csv").read_text(encoding="utf-8").splitlines()[1:]]
    assert len(chosen) == 10
    initial = loop / "runs" / "random" / "seed-0"
    rounds = [json.loads(line) for line in (initial / "rounds.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rounds[0 if training == "cold" else 1]["labels"] == 10
    assert rounds[-1]["labels"] == 14
    assert {int(i) for i in chosen} <= set(LabelStore.load(initial / "labels.json").current())
    records = [json.loads(line) for line in (loop / "curve.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["series"] for r in records} == {"random from typical"}
    first = next(r for r in records if r["round"] == 0)
    assert first["start"] == "typical" and first["labels"] == 10 and "clustering_accuracy" in first["label_free_clustering"]
    summary = json.loads((loop / "curve.json").read_text(encoding="utf-8"))
    assert [row["labels"] for row in summary["random from typical"]] == [10, 14]
    first_run = loop / "runs" / "initial" / "seed-0"
    assert main(["report", str(first_run), "--no-plots"]) == 0  # rewritten from the store's labels
    report = json.loads((first_run / "report.json").read_text(encoding="utf-8"))
    assert report["num_labels"] == 10 and report["label_free"] is False


def test_the_loop_refuses_an_initial_strategy_that_needs_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["loop", "--initial-strategy", "entropy", "--out", str(tmp_path / "loop")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--initial-strategy 'entropy' reads the model's predictions" in err and err.count("\n") == 1
    assert not (tmp_path / "loop").exists()


@pytest.mark.parametrize("name", ["typical", "cover", "badge"])
def test_the_label_free_strategies_pass_the_conformance_kit(name: str) -> None:
    from ssvae_core.testing import check_acquisition

    assert all(result.startswith("passed") for result in check_acquisition(name).values())


def test_the_studio_offers_a_label_free_strategy_first_on_a_run_without_labels(free_run: Path) -> None:
    pytest.importorskip("starlette")
    from ssvae_core.studio import StudioSession

    with StudioSession(free_run) as session:
        state = session.state()
        assert state["default_strategy"] == "typical" and state["accuracy"] is None
        assert len(session.queue(state["default_strategy"], 5)["items"]) == 5
