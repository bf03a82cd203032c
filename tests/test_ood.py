"""Out-of-distribution scores: FPR95 and AUROC by hand, the likelihood and blend scores,
the blend's reference through save/load, and ``ssvae evaluate --ood``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.cli import main
from ssvae_core.config import config_from_dict
from ssvae_core.errors import ConfigError, SSVAEError
from ssvae_core.inference import Inference, OODReference, blend_score
from ssvae_core.metrics import auroc, fpr_at_tpr, ood_table

# --- metrics by hand ---------------------------------------------------------------------------


def test_fpr95_by_hand() -> None:
    inside = np.array([0.1, 0.2, 0.3, 0.4])
    # 4 positives: 95 % of them needs all 4, so the threshold is the smallest, 0.25,
    # and 0.3 and 0.4 of the negatives lie above it
    assert fpr_at_tpr(inside, np.array([0.25, 0.5, 0.6, 0.7])) == 0.5
    assert fpr_at_tpr(inside, np.array([0.5, 0.6])) == 0.0
    assert fpr_at_tpr(np.array([0.5]), np.array([0.5])) == 1.0  # a tie counts as flagged


def test_fpr95_threshold_leaves_out_the_lowest_five_percent_of_positives() -> None:
    outside = np.arange(1.0, 21.0)  # 20 positives: 19 of them make 95 %, threshold 2
    inside = np.array([0.0, 1.5, 2.0, 3.0])
    assert fpr_at_tpr(inside, outside) == 0.5
    assert fpr_at_tpr(inside, outside, tpr=1.0) == 0.75


def test_fpr_at_tpr_rejects_empty_sets() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fpr_at_tpr(np.array([]), np.array([1.0]))


def test_ood_table_reports_auroc_and_fpr95_per_score() -> None:
    inside = {"a": np.array([0.1, 0.2, 0.3, 0.4]), "b": np.array([0.9, 0.8, 0.7, 0.6])}
    outside = {"a": np.array([0.25, 0.5, 0.6, 0.7]), "b": np.array([0.1, 0.2, 0.3, 0.4])}
    table = ood_table(inside, outside)
    # a: 14 of the 16 (out, in) pairs are ordered right; b: none
    assert table["a"] == {"auroc": pytest.approx(14 / 16), "fpr95": 0.5}
    assert table["b"] == {"auroc": 0.0, "fpr95": 1.0}
    assert auroc(inside["a"], outside["a"]) == pytest.approx(0.875)


def test_tail_probability_and_blend_formula_by_hand() -> None:
    reference = OODReference(
        likelihood=np.array([1.0, 2.0, 3.0]), certainty=np.array([0.1, 0.2, 0.3]), step=0, classes=2
    )
    # (1 + #{reference ≥ s}) / (n + 1) inside the range; beyond 3, exp(−(s − 3) / a) / 4
    # with a = 3 − 2 (the mean excess of the top 5 %, here the top value, over the next)
    tail = OODReference.tail(reference.likelihood, np.array([0.0, 2.0, 2.5, 3.0, 9.0]))
    np.testing.assert_allclose(tail, [1.0, 0.75, 0.5, 0.5, np.exp(-6.0) / 4])
    result = Inference(
        probabilities=np.full((1, 2), 0.5),
        certainty=np.array([0.65]),  # OOD score 0.35: p_C = exp(−0.05 / 0.1) / 4
        responsibilities=np.zeros((1, 0)),
        z_mean=np.zeros((1, 2)),
        reconstruction_error=np.zeros(1),
        reconstruction_nll=np.array([9.0]),
        negative_elbo=np.array([9.0]),  # p_L = exp(−6) / 4
    )
    q = np.exp(-0.5) / 4 * np.exp(-6.0) / 4
    np.testing.assert_allclose(blend_score(result, reference), [1.0 - q * (1.0 - np.log(q))])


# --- the scores on a tiny trained model ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained(synthetic: dict[str, np.ndarray]) -> SSVAEClassifier:
    config = config_from_dict(
        {
            "model": {"latent_dim": 2, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": 4},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 30, "batch_size": 16, "log_every": 30},
        }
    )
    return SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])


@pytest.fixture(scope="module")
def noise(synthetic: dict[str, np.ndarray]) -> np.ndarray:
    return np.random.default_rng(1).uniform(size=synthetic["x"].shape).astype(np.float32)


def test_default_score_is_still_one_minus_certainty(trained: SSVAEClassifier, synthetic) -> None:
    x = synthetic["x"]
    expected = np.clip(1.0 - trained.infer(x).certainty, 0.0, 1.0)
    np.testing.assert_allclose(trained.ood_score(x), expected)
    np.testing.assert_allclose(trained.ood_score(x, score="certainty"), expected)


def test_likelihood_score_is_higher_for_noise_than_for_training_like_data(
    trained: SSVAEClassifier, synthetic, noise: np.ndarray
) -> None:
    inside = trained.ood_score(synthetic["x"], score="likelihood")
    outside = trained.ood_score(noise, score="likelihood")
    assert np.all(np.isfinite(inside)) and np.all(np.isfinite(outside))
    assert np.median(outside) > np.max(np.median(inside))
    assert auroc(inside, outside) > 0.9


def test_blend_score_lies_in_unit_interval_and_ranks_noise_higher(
    trained: SSVAEClassifier, synthetic, noise: np.ndarray
) -> None:
    inside = trained.ood_score(synthetic["x"], score="blend")
    outside = trained.ood_score(noise, score="blend")
    assert np.all((inside >= 0.0) & (inside <= 1.0)) and np.all((outside >= 0.0) & (outside <= 1.0))
    assert np.mean(outside) > np.mean(inside)


def test_evaluate_reports_every_score_and_keeps_ood_auroc(
    trained: SSVAEClassifier, synthetic, noise: np.ndarray
) -> None:
    report = trained.evaluate(synthetic["x"], synthetic["y"], ood=noise)
    assert set(report["ood"]) == {"certainty", "likelihood", "blend"}
    assert report["ood_auroc"] == report["ood"]["certainty"]["auroc"]
    for figures in report["ood"].values():
        assert 0.0 <= figures["auroc"] <= 1.0 and 0.0 <= figures["fpr95"] <= 1.0
    only = trained.evaluate(synthetic["x"], synthetic["y"], ood=noise, scores=["likelihood"])
    assert set(only["ood"]) == {"likelihood"} and "ood_auroc" in only


def test_an_unknown_score_name_is_one_clear_error(trained: SSVAEClassifier, synthetic) -> None:
    with pytest.raises(ConfigError, match=r"unknown OOD score 'entropy'.*'certainty', 'likelihood', 'blend'"):
        trained.ood_score(synthetic["x"], score="entropy")
    with pytest.raises(ConfigError, match="unknown OOD score"):
        trained.evaluate(synthetic["x"], synthetic["y"], ood=synthetic["x"], scores=["bogus"])


def test_save_and_load_keep_the_blend_reference(
    trained: SSVAEClassifier, synthetic, noise: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "model.ckpt"
    trained.save(path)
    loaded = SSVAEClassifier.load(path)
    assert loaded.training_data is None
    reference, restored = trained.ood_reference(), loaded.ood_reference()
    np.testing.assert_allclose(restored.likelihood, reference.likelihood)
    np.testing.assert_allclose(restored.certainty, reference.certainty)
    np.testing.assert_allclose(
        loaded.ood_score(noise, score="blend"), trained.ood_score(noise, score="blend"), rtol=1e-6
    )


def test_without_reference_or_training_data_the_blend_is_refused_and_recomputable(
    trained: SSVAEClassifier, synthetic, noise: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "model.ckpt"
    trained.save(path)
    bare = SSVAEClassifier.load(path)
    bare._ood_reference = None  # a checkpoint written before references were kept
    with pytest.raises(SSVAEError, match="blend OOD score needs the training data"):
        bare.ood_score(noise, score="blend")
    report = bare.evaluate(synthetic["x"], synthetic["y"], ood=noise)
    assert set(report["ood"]) == {"certainty", "likelihood"} and "blend" in report["ood_notes"]
    bare.training_data = trained.training_data  # recomputed from the training data
    np.testing.assert_allclose(
        bare.ood_score(noise, score="blend"), trained.ood_score(noise, score="blend"), rtol=1e-6
    )


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, synthetic, noise: np.ndarray) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ood")
    data, ood = root / "shapes.npz", root / "noise.npz"
    np.savez(data, x=synthetic["x"], y=synthetic["y"])
    np.savez(ood, x=noise, y=np.full(len(noise), -1))
    out = root / "run"
    args = [
        "train", "--data", str(data), "--out", str(out), "--steps", "10",
        "--set", "train.batch_size=8", "--set", "train.log_every=10",
        "--set", "model.latent_dim=2", "--set", "model.embedding_dim=4",
        "--set", "prior.num_components=4", "--set", "encoder.hidden=[16]",
        "--set", "decoder.hidden=[16]", "--labels-per-class", "2", "--no-plots", "--quiet",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    return {"out": out, "ood": ood}


def test_cli_evaluate_ood_prints_one_line_per_score(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run["out"]), "--ood", str(run["ood"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "OOD AUROC" in lines[0]
    for score in ("certainty", "likelihood", "blend"):
        (line,) = [x for x in lines if x.startswith(f"OOD {score} ")]
        assert "AUROC 0." in line or "AUROC 1." in line
        assert "FPR95 " in line


def test_cli_evaluate_json_holds_the_per_score_table(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", str(run["out"]), "--ood", str(run["ood"]), "--score", "likelihood", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["ood"]) == {"likelihood"} and "ood_auroc" in report


def test_cli_unknown_score_exits_2_with_one_line(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run["out"]), "--ood", str(run["ood"]), "--score", "entropy"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "ssvae: error: unknown OOD score 'entropy'; choose one of 'certainty', 'likelihood', 'blend'"
    ]
    assert main(["evaluate", str(run["out"]), "--score", "blend"]) == 2
    assert "needs --ood" in capsys.readouterr().err
