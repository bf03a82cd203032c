"""The Python API: SSVAEClassifier fit / predict / score / encode and its errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict
from ssvae_core.data.loading import from_arrays
from ssvae_core.errors import ConfigError, DataError, SSVAEError


def test_fit_resolves_the_head_and_records_history(fitted_classifier: SSVAEClassifier) -> None:
    assert fitted_classifier.config.head.name == "tau"
    assert [row["step"] for row in fitted_classifier.history] == [10]
    assert fitted_classifier.input_shape == (4, 4)
    assert fitted_classifier.label_names == ("0", "1", "2")


def test_predict_proba_rows_sum_to_one(fitted_classifier: SSVAEClassifier, synthetic) -> None:
    probabilities = fitted_classifier.predict_proba(synthetic["x"])
    assert probabilities.shape == (60, 3)
    assert np.all(probabilities >= 0.0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_predict_is_the_most_probable_class(fitted_classifier: SSVAEClassifier, synthetic) -> None:
    x = synthetic["x"]
    np.testing.assert_array_equal(
        fitted_classifier.predict(x), np.argmax(fitted_classifier.predict_proba(x), axis=-1)
    )


def test_ood_scores_lie_in_their_ranges(fitted_classifier: SSVAEClassifier, synthetic) -> None:
    scores = fitted_classifier.ood_score(synthetic["x"], score="certainty")
    assert scores.shape == (60,)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    default = fitted_classifier.ood_score(synthetic["x"])  # −ln of a combined p-value
    assert default.shape == (60,) and np.all(np.isfinite(default)) and np.all(default >= 0.0)


def test_encode_returns_latent_means_and_responsibilities(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    z_mean, responsibilities = fitted_classifier.encode(synthetic["x"][:5])
    assert z_mean.shape == (5, 2)
    assert responsibilities.shape == (5, 4)
    np.testing.assert_allclose(responsibilities.sum(-1), 1.0, rtol=1e-5)


def test_predictions_do_not_depend_on_how_many_inputs_are_passed(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    x = synthetic["x"]
    np.testing.assert_allclose(
        fitted_classifier.predict_proba(x[:7]), fitted_classifier.predict_proba(x)[:7], rtol=1e-5
    )


def test_tau_has_one_row_per_channel_summing_to_one(fitted_classifier: SSVAEClassifier) -> None:
    tau = fitted_classifier.tau
    assert tau.shape == (4, 3)
    np.testing.assert_allclose(tau.sum(-1), 1.0, rtol=1e-5)


def test_evaluate_reports_accuracy_and_calibration(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    result = fitted_classifier.evaluate(synthetic["x"], synthetic["y"])
    assert 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= result["ece"] <= 1.0
    assert result["num_examples"] == 60
    assert len(result["channels"]["usage"]) == 4
    assert np.asarray(result["confusion"]).sum() == 60
    assert "ood_auroc" not in result


def test_evaluate_with_ood_inputs_reports_an_auroc(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    noise = np.random.default_rng(1).uniform(size=(20, 4, 4)).astype(np.float32)
    result = fitted_classifier.evaluate(synthetic["x"], synthetic["y"], ood=noise)
    assert 0.0 <= result["ood_auroc"] <= 1.0


def test_predict_on_wrong_sample_shape_is_a_data_error(
    fitted_classifier: SSVAEClassifier,
) -> None:
    with pytest.raises(DataError, match=r"sample shape \(16,\).*trained on \(4, 4\)"):
        fitted_classifier.predict(np.zeros((3, 16), dtype=np.float32))


def test_evaluate_without_labels_is_a_data_error(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    with pytest.raises(DataError, match="needs labeled examples"):
        fitted_classifier.evaluate(synthetic["x"], np.full(60, -1))


@pytest.mark.parametrize("method", ["predict_proba", "predict", "ood_score", "encode"])
def test_unfitted_classifier_refuses_to_predict(method: str, synthetic) -> None:
    with pytest.raises(SSVAEError, match="not fitted"):
        getattr(SSVAEClassifier(), method)(synthetic["x"])


def test_fit_on_a_single_labeled_class_is_a_data_error(tiny_raw: dict[str, Any], synthetic) -> None:
    classifier = SSVAEClassifier(config_from_dict(tiny_raw))
    y = np.where(synthetic["y"] == 0, 0, -1)
    with pytest.raises(DataError, match=r"at least two classes; y labels only class 0 \('0'\)"):
        classifier.fit(synthetic["x"], y)
    assert classifier.model is None


def test_fit_with_one_class_and_no_labels_is_a_data_error(tiny_raw: dict[str, Any], synthetic) -> None:
    tiny_raw["loss"] = {"supervised": {"weight": 0.0}}
    classifier = SSVAEClassifier(config_from_dict(tiny_raw))
    with pytest.raises(DataError, match="at least two classes; got num_classes=1"):
        classifier.fit(synthetic["x"], np.full(60, -1), num_classes=1)


def test_fit_with_labels_both_in_a_dataset_and_as_y_is_a_data_error(synthetic) -> None:
    dataset = from_arrays(synthetic["x"], synthetic["partial"])
    with pytest.raises(DataError, match="either inside the Dataset or as y, not both"):
        SSVAEClassifier().fit(dataset, synthetic["y"])


@pytest.mark.parametrize(
    "x",
    [{"x": np.zeros((3, 4, 4))}, "images.npz", [[0.1, 0.2], [0.3]], np.zeros((3, 0))],
    ids=["dict", "str", "ragged", "no-features"],
)
def test_fit_on_something_that_is_not_an_array_is_a_data_error(x: Any) -> None:
    with pytest.raises(DataError, match=r"^x (must be an array|has shape)"):
        SSVAEClassifier().fit(x, np.array([0, 1, 0]))


@pytest.mark.parametrize(
    "x",
    [{"x": np.zeros((3, 4, 4))}, "images.npz", [[0.1, 0.2], [0.3]], None],
    ids=["dict", "str", "ragged", "none"],
)
@pytest.mark.parametrize("method", ["predict_proba", "ood_score", "encode"])
def test_predicting_on_something_that_is_not_an_array_is_a_data_error(
    fitted_classifier: SSVAEClassifier, method: str, x: Any
) -> None:
    with pytest.raises(DataError, match=r"^x must be an array"):
        getattr(fitted_classifier, method)(x)


def test_evaluate_with_a_dict_for_labels_is_a_data_error(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    with pytest.raises(DataError, match=r"^y must be an array .*got dict"):
        fitted_classifier.evaluate(synthetic["x"], {"y": synthetic["y"]})


@pytest.mark.parametrize("config", [{"train": {"steps": 5}}, "config.toml", 3], ids=["dict", "str", "int"])
def test_a_config_that_is_not_a_config_is_a_config_error(config: Any) -> None:
    with pytest.raises(ConfigError, match=r"^config must be a ssvae_core\.config\.Config .*got (dict|str|int)"):
        SSVAEClassifier(config=config)


def test_a_dict_config_error_points_to_config_from_dict() -> None:
    with pytest.raises(ConfigError, match="config_from_dict"):
        SSVAEClassifier({"seed": 1})  # type: ignore[arg-type]


def test_fit_trains_on_graph_labels_by_default(fitted_classifier: SSVAEClassifier) -> None:
    # The fixture keeps the default loss settings: graph labels on.
    assert fitted_classifier.config.term_options("graph_label").weight > 0
    assert np.isfinite(fitted_classifier.history[-1]["graph_label"])


def test_graph_labels_cover_the_configured_share_of_unlabeled_rows(
    fitted_classifier: SSVAEClassifier, synthetic
) -> None:
    term = dict(fitted_classifier._objective().named_terms())["graph_label"]
    propagated = term.prepare(synthetic["x"], synthetic["partial"], 3)["graph_labels"]
    unlabeled = synthetic["partial"] < 0
    assert np.all(propagated[~unlabeled] == -1)
    # The share is taken per propagated class: round(0.8 · n_y) rows of each class y.
    per_class = [np.sum(unlabeled & (synthetic["y"] == label)) for label in range(3)]
    assert np.sum(propagated >= 0) == sum(round(0.8 * count) for count in per_class)
    # Three well-separated prototypes: every propagated label is right.
    chosen = propagated >= 0
    np.testing.assert_array_equal(propagated[chosen], synthetic["y"][chosen])


def test_graph_label_weight_zero_skips_the_term(tiny_raw: dict[str, Any], synthetic) -> None:
    tiny_raw["loss"] = {"graph_label": {"weight": 0.0}}
    classifier = SSVAEClassifier(config_from_dict(tiny_raw)).fit(synthetic["x"], synthetic["partial"])
    assert "graph_label" not in classifier.history[-1]
