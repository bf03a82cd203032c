"""Calibration of p(y|x) after training: the maths on hand-built inputs, the classifier's
use of it, its checkpoint round trip and the report's account of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict
from ssvae_core.data.augment import AugmentConfig
from ssvae_core.data.graph import propagate_labels
from ssvae_core.data.propagation import propagate, wilson_lower_bound
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.runs.calibration import (
    Calibration,
    CalibrationConfig,
    fit_calibration,
    fit_temperature,
    mean_confidence,
    temper,
)
from ssvae_core.runs.reports import markdown_report

NO_VIEWS = AugmentConfig(shift=0.0, rotation=0.0)


def _logits(seed: int = 0, rows: int = 500, classes: int = 5) -> np.ndarray:
    return 3.0 * np.random.default_rng(seed).standard_normal((rows, classes))


# --- the maths -------------------------------------------------------------------------------


def test_tempering_softmax_probabilities_divides_their_logits() -> None:
    logits = _logits()
    np.testing.assert_allclose(temper(softmax(logits, axis=-1), 2.5), softmax(logits / 2.5, axis=-1), rtol=1e-9)


def test_tempering_keeps_rows_normalised_and_every_most_probable_class() -> None:
    probabilities = softmax(_logits(1), axis=-1)
    for temperature in (1.0, 1.7, 40.0):
        tempered = temper(probabilities, temperature)
        np.testing.assert_allclose(tempered.sum(axis=-1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(tempered.argmax(axis=-1), probabilities.argmax(axis=-1))
    assert mean_confidence(temper(probabilities, 3.0)) < mean_confidence(probabilities)


def test_temperature_fit_recovers_a_known_temperature() -> None:
    logits = _logits(2)
    target = mean_confidence(softmax(logits / 2.5, axis=-1))
    assert fit_temperature(softmax(logits, axis=-1), target) == pytest.approx(2.5, rel=1e-6)


def test_wilson_bound_matches_hand_values() -> None:
    # 87 of 100 at z = 1.645: (0.87 + 0.01353 − 1.645 · 0.03462) / 1.02706 = 0.80480
    assert wilson_lower_bound(87, 100) == pytest.approx(0.80480, abs=1e-4)
    assert wilson_lower_bound(10, 10) == pytest.approx(1 / (1 + 1.645**2 / 10), abs=1e-9)
    assert wilson_lower_bound(0, 5) == pytest.approx(0.0, abs=1e-12)
    assert wilson_lower_bound(60, 100) < wilson_lower_bound(600, 1000) < 0.6


def test_temperature_fit_never_sharpens() -> None:
    probabilities = softmax(_logits(3) / 10.0, axis=-1)
    assert fit_temperature(probabilities, 0.99) == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_temperature(probabilities, 1.5)


def _two_clusters(labeled_per_class: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two well-separated clusters of 50 rows each; returns inputs, labels (a few known) and
    the hidden truth."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 50)
    x = (truth[:, None] * 10.0 + rng.standard_normal((100, 4))).astype(np.float32)
    labels = np.full(100, -1)
    for label in (0, 1):
        rows = np.flatnonzero(truth == label)[:labeled_per_class]
        labels[rows] = label
    return x, labels, truth


def test_agreement_calibration_matches_the_share_where_model_and_graph_agree() -> None:
    x, labels, truth = _two_clusters()
    predict, wrong = _predict_with_a_fifth_wrong(x, labels, truth)
    calibration = fit_calibration(
        CalibrationConfig(), x, labels, 2, predict, NO_VIEWS, graph_labels=True, step=7
    )
    assert calibration.facts["rows"] == 98
    assert calibration.facts["agreement"] == pytest.approx(1 - 20 / 98, abs=1e-6)
    assert calibration.facts["confidence_after"] == pytest.approx(calibration.facts["agreement"], abs=1e-6)
    assert calibration.temperature > 1.0 and calibration.step == 7
    predicted = np.where(wrong, 1 - truth, truth)
    np.testing.assert_array_equal(calibration.apply(predict(x)).argmax(axis=-1), predicted)


def _predict_with_a_fifth_wrong(x: np.ndarray, labels: np.ndarray, truth: np.ndarray):
    """A model, as a function of its inputs, sure of every row and wrong on a fifth of the
    unlabeled ones."""
    wrong = np.zeros(labels.size, dtype=bool)
    wrong[np.flatnonzero(labels < 0)[::5]] = True
    predicted = np.where(wrong, 1 - truth, truth)
    by_row = {row.tobytes(): i for i, row in enumerate(x)}

    def predict(inputs: np.ndarray) -> np.ndarray:
        rows = [by_row[row.tobytes()] for row in inputs]
        return np.where(np.eye(2)[predicted[rows]] > 0, 0.999, 0.001)

    return predict, wrong


def test_propagation_spreads_like_the_graph_labels_and_leaves_each_label_out() -> None:
    x, labels, truth = _two_clusters(labeled_per_class=3)
    propagation = propagate(x, labels, 2, neighbours=5, alpha=0.9)
    reference = propagate_labels(x, labels, 2, num_neighbours=5, alpha=0.9)
    np.testing.assert_array_equal(propagation.labels, reference.argmax(axis=-1))
    np.testing.assert_array_equal(propagation.labels, truth)
    assert propagation.held_out.size == 6 and propagation.accuracy == 1.0
    # A label of class 1 given to a row deep in class 0's cluster: left out, the graph
    # gives that row class 0, so one of the seven held-out labels comes back wrong.
    planted = labels.copy()
    planted[10] = 1
    assert propagate(x, planted, 2, neighbours=5, alpha=0.9).accuracy == pytest.approx(6 / 7)
    assert propagate(x, _two_clusters()[1], 2, neighbours=5, alpha=0.9).held_out is None


def test_agreement_is_divided_by_the_propagations_accuracy_unless_the_model_learned_it() -> None:
    x, labels, truth = _two_clusters(labeled_per_class=3)
    labels[10] = 1  # the propagation's held-out accuracy is 6/7
    predict, _ = _predict_with_a_fifth_wrong(x, labels, truth)
    common = (CalibrationConfig(neighbours=5), x, labels, 2, predict, NO_VIEWS)
    learned = fit_calibration(*common, graph_labels=True, step=0)
    apart = fit_calibration(*common, graph_labels=False, step=0)
    agreement = learned.facts["agreement"]
    assert learned.facts["accuracy_estimate"] == agreement
    assert apart.facts["propagation_accuracy"] == pytest.approx(6 / 7, abs=1e-6)
    bound = apart.facts["propagation_accuracy_bound"]
    assert bound == pytest.approx(wilson_lower_bound(6, 7), abs=1e-6) and bound < 6 / 7
    assert apart.facts["accuracy_estimate"] == pytest.approx(min(1.0, agreement / bound), abs=1e-5)
    assert apart.temperature < learned.temperature


def test_agreement_calibration_reads_augmented_views_of_the_unlabeled_rows() -> None:
    x, labels, _ = _two_clusters()
    seen: list[np.ndarray] = []

    def predict(inputs: np.ndarray) -> np.ndarray:
        seen.append(inputs)
        return np.full((inputs.shape[0], 2), 0.5)

    images = x.reshape(100, 2, 2)
    fit_calibration(
        CalibrationConfig(), images, labels, 2, predict, AugmentConfig(noise=0.3), graph_labels=True, step=0
    )
    assert seen[0].shape == (98, 2, 2)
    assert not np.allclose(seen[0], images[labels < 0])


def test_nothing_is_fitted_without_unlabeled_rows_or_with_method_none() -> None:
    x, _, truth = _two_clusters()
    never = pytest.fail  # predict must not be called

    everything = fit_calibration(CalibrationConfig(), x, truth, 2, never, NO_VIEWS, graph_labels=True, step=3)
    assert everything.temperature == 1.0 and "every training row is labeled" in everything.facts["reason"]
    one_class = fit_calibration(CalibrationConfig(), x, np.where(truth == 0, 0, -1), 2, never, NO_VIEWS, graph_labels=True, step=3)
    assert one_class.temperature == 1.0 and "fewer than two classes" in one_class.facts["reason"]
    none = fit_calibration(CalibrationConfig(method="none"), x, truth, 2, never, NO_VIEWS, graph_labels=True, step=3)
    assert (none.method, none.temperature) == ("none", 1.0)


def test_nothing_is_fitted_when_no_label_reaches_an_unlabeled_row() -> None:
    rng = np.random.default_rng(1)
    cluster = np.repeat([0, 1, 2], 10)
    x = (cluster[:, None] * 100.0 + rng.standard_normal((30, 3))).astype(np.float32)
    labels = np.where(cluster < 2, cluster, -1)  # the third cluster is unlabeled and cut off
    calibration = fit_calibration(
        CalibrationConfig(neighbours=3), x, labels, 3, pytest.fail, NO_VIEWS,
        graph_labels=False, step=1,
    )  # fmt: skip
    assert calibration.temperature == 1.0 and "no label reaches" in calibration.facts["reason"]


def test_calibration_round_trips_through_a_dict_and_refuses_a_malformed_one() -> None:
    calibration = Calibration("agreement", 1.75, 40, {"rows": 9, "agreement": 0.8})
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    for bad in (
        {"method": "magic", "temperature": 2.0, "step": 1},
        {"method": "agreement", "temperature": 0.5, "step": 1},
        {"method": "agreement", "temperature": float("nan"), "step": 1},
        {"method": "agreement", "temperature": 2.0},
        [1, 2],
    ):
        with pytest.raises(DataError, match="calibration is malformed"):
            Calibration.from_dict(bad)


def test_config_refuses_an_unknown_method_and_alpha_of_one() -> None:
    with pytest.raises(ConfigError, match=r"calibration\.method"):
        config_from_dict({"calibration": {"method": "isotonic"}})
    with pytest.raises(ConfigError, match="alpha must be < 1"):
        config_from_dict({"calibration": {"alpha": 1.0}})
    assert config_from_dict({}).calibration.method == "agreement"
    with pytest.raises(ConfigError, match=r"calibration\.errors"):
        config_from_dict({"calibration": {"errors": "correlated"}})


def test_the_error_model_decides_whether_the_agreement_is_taken_as_it_is() -> None:
    for errors, graph_labels, shared in [
        ("auto", True, True), ("auto", False, False), ("shared", False, True),
        ("shared", True, True), ("independent", True, False), ("independent", False, False),
    ]:
        assert CalibrationConfig(errors=errors).learned_propagation(graph_labels) is shared


def test_a_classifier_with_graph_labels_can_take_its_mistakes_as_independent(synthetic) -> None:
    def fitted(errors: str) -> SSVAEClassifier:
        config = config_from_dict(
            {
                "model": {"latent_dim": 2, "embedding_dim": 4},
                "prior": {"name": "mixture", "num_components": 4},
                "encoder": {"hidden": [16]},
                "decoder": {"hidden": [16]},
                "loss": {"graph_label": {"weight": 1.0}},
                "calibration": {"errors": errors},
                "train": {"steps": 2, "batch_size": 8, "log_every": 2},
            }
        )
        return SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])

    assert fitted("auto").calibration.facts["learned_propagation"] is True
    assert fitted("independent").calibration.facts["learned_propagation"] is False


# --- the classifier ---------------------------------------------------------------------------


def test_a_fitted_classifier_is_calibrated_for_its_step(fitted_classifier: SSVAEClassifier) -> None:
    calibration = fitted_classifier.calibration
    assert calibration is not None and calibration.method == "agreement"
    assert calibration.step == int(fitted_classifier.state.step)
    assert {"rows", "agreement", "confidence_before", "confidence_after"} <= set(calibration.facts)


def test_calibrated_predictions_keep_every_most_probable_class(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    calibrated = fitted_classifier.predict_proba(synthetic["x"])
    raw = fitted_classifier.predict_proba(synthetic["x"], calibrated=False)
    np.testing.assert_allclose(calibrated, fitted_classifier.calibration.apply(raw), rtol=1e-6)
    np.testing.assert_array_equal(calibrated.argmax(axis=-1), raw.argmax(axis=-1))
    np.testing.assert_array_equal(fitted_classifier.predict(synthetic["x"]), raw.argmax(axis=-1))


def test_a_checkpoint_keeps_the_calibration(
    fitted_classifier: SSVAEClassifier, synthetic, tmp_path: Path
) -> None:
    fitted_classifier.save(tmp_path / "model.ckpt")
    loaded = SSVAEClassifier.load(tmp_path / "model.ckpt")
    assert loaded.calibration == fitted_classifier.calibration
    np.testing.assert_array_equal(
        loaded.predict_proba(synthetic["x"]), fitted_classifier.predict_proba(synthetic["x"])
    )


def test_acquisitions_read_the_calibrated_probabilities(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    from ssvae_core.labels.active import acquisition_inputs

    model, state = fitted_classifier.model, fitted_classifier.state
    labeled = synthetic["partial"] >= 0
    calibration = Calibration("agreement", 3.0, int(state.step))
    raw = acquisition_inputs(model, state.head_state, synthetic["x"], labeled, num_samples=2)
    calibrated = acquisition_inputs(
        model, state.head_state, synthetic["x"], labeled, num_samples=2, calibration=calibration
    )
    np.testing.assert_allclose(calibrated.probabilities, temper(np.asarray(raw.probabilities), 3.0), rtol=1e-5)
    np.testing.assert_allclose(
        calibrated.sample_probabilities, temper(np.asarray(raw.sample_probabilities), 3.0), rtol=1e-5
    )


def test_evaluation_states_the_calibration_and_the_ece_without_it(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    metrics = fitted_classifier.evaluate(synthetic["x"], synthetic["y"])
    stated = metrics["calibration"]
    assert stated["method"] == "agreement"
    assert stated["temperature"] == fitted_classifier.calibration.temperature
    assert stated["agreement"] == fitted_classifier.calibration.facts["agreement"]
    raw = fitted_classifier.predict_proba(synthetic["x"], calibrated=False)
    from ssvae_core.runs.metrics import expected_calibration_error

    assert stated["ece_uncalibrated"] == pytest.approx(expected_calibration_error(raw, synthetic["y"]))


def test_markdown_report_says_how_p_was_calibrated() -> None:
    report = {
        "dataset": "digits", "test_accuracy": 0.9, "ece": 0.03, "num_labels": 10, "prior": "mixture",
        "steps": 10, "wall_time_s": 1.0, "images_per_s": 5.0, "reconstruction_error": 0.1,
        "calibration": {
            "method": "agreement", "temperature": 1.625, "step": 10, "rows": 1149, "agreement": 0.9354,
            "propagation_accuracy": 0.9, "propagation_accuracy_bound": 0.8411, "held_out": 100,
            "learned_propagation": False,
            "accuracy_estimate": 1.0, "confidence_before": 0.9771, "confidence_after": 0.9354,
            "ece_uncalibrated": 0.0779,
        },
    }  # fmt: skip
    text = markdown_report(report)
    assert "agreement: temperature T = 1.625" in text
    assert "1149 unlabeled training rows" in text and "estimated accuracy 1.0000" in text
    assert "over 0.8411, the lower bound of the propagation's accuracy on 100 held-out labels (0.9000)" in text
    assert "ECE without it 0.0779" in text
    report["calibration"]["independence_rejected"] = True
    report["calibration"]["graph_features"] = {"chosen": "plain pixels"}
    text = markdown_report(report)
    assert "taken as it is: above what independent mistakes allow" in text and "over 0.8411" not in text
    assert "a graph of the plain pixels" in text
    report["calibration"]["learned_propagation"] = True
    assert "which the model learned from" in markdown_report(report)


def test_independent_mistakes_fit_nothing_where_no_class_has_two_labels() -> None:
    x, labels, truth = _two_clusters()
    predict, _ = _predict_with_a_fifth_wrong(x, labels, truth)
    common = (x, labels, 2, predict, NO_VIEWS)
    apart = fit_calibration(CalibrationConfig(neighbours=5, errors="independent"), *common, graph_labels=False, step=0)
    fallback = fit_calibration(CalibrationConfig(neighbours=5), *common, graph_labels=False, step=0)
    assert apart.temperature == 1.0 and "two labels" in apart.facts["reason"]
    assert fallback.facts["accuracy_estimate"] == fallback.facts["agreement"] and fallback.temperature > 1.0
