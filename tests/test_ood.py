"""Out-of-distribution scores: FPR95, AUROC and AUPR by hand, the likelihood, complexity,
ratio and blend scores, the background model, p-values, the reference through save/load,
and ``ssvae evaluate --ood`` / ``ssvae background``."""

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
from ssvae_core.errors import ConfigError, DataError, SSVAEError
from ssvae_core.modelling.inference import Inference
from ssvae_core.runs.metrics import aupr, auroc, fpr_at_tpr, ood_table
from ssvae_core.runs.ood import (
    DEFAULT_SCORE,
    OOD_SCORES,
    OODInputs,
    OODReference,
    background_path,
    code_length,
    fisher_log_p,
    ood_scores,
    perturb,
)

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
    # a's ranking, highest first: out .7 .6 .5, in .4 .3, out .25, in .2 .1: average
    # precision (1 + 1 + 1 + 4/6) / 4
    assert table["a"] == {"auroc": pytest.approx(14 / 16), "fpr95": 0.5, "aupr": pytest.approx(11 / 12)}
    assert table["b"]["auroc"] == 0.0 and table["b"]["fpr95"] == 1.0
    assert auroc(inside["a"], outside["a"]) == pytest.approx(0.875)
    assert aupr(inside["a"], outside["a"]) == pytest.approx(11 / 12)


def test_tail_probability_and_blend_formula_by_hand() -> None:
    reference = OODReference(
        scores={"likelihood": np.array([1.0, 2.0, 3.0]), "certainty": np.array([0.1, 0.2, 0.3])},
        step=0, classes=2,
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
    blend = ood_scores(OODInputs(result), reference, ("blend",))["blend"]
    np.testing.assert_allclose(blend, [1.0 - q * (1.0 - np.log(q))])


def test_fisher_combination_by_hand() -> None:
    # two p-values: q (1 − ln q); three: q (1 − ln q + ln² q / 2)
    p = np.array([0.5, 0.01]), np.array([0.2, 0.03]), np.array([0.9, 0.5])
    q2, q3 = p[0] * p[1], p[0] * p[1] * p[2]
    np.testing.assert_allclose(np.exp(fisher_log_p([np.log(p[0]), np.log(p[1])])), q2 * (1 - np.log(q2)))
    np.testing.assert_allclose(
        np.exp(fisher_log_p([np.log(v) for v in p])), q3 * (1 - np.log(q3) + np.log(q3) ** 2 / 2)
    )
    # one p-value is itself
    np.testing.assert_allclose(np.exp(fisher_log_p([np.log(p[0])])), p[0])


def test_code_length_is_longer_for_busier_images() -> None:
    rng = np.random.default_rng(0)
    blank, noise = np.zeros((1, 28, 28)), rng.uniform(size=(1, 28, 28))
    stripes = np.tile((np.arange(28) % 2).astype(float), (1, 28, 1))
    lengths = code_length(np.concatenate([blank, stripes, noise]))
    assert lengths[0] < lengths[1] < lengths[2]
    assert lengths[2] > 28 * 28 * 7 * np.log(2)  # noise barely compresses: ≥ 7 bits a pixel
    # any sample shape: flat vectors, RGB and single-channel images
    assert code_length(rng.uniform(size=(3, 64))).shape == (3,)
    assert code_length(rng.uniform(size=(2, 8, 8, 3))).shape == (2,)
    np.testing.assert_allclose(code_length(blank[..., None]), code_length(blank))


def test_perturb_replaces_about_the_rate_and_is_seeded() -> None:
    x = np.full((50, 8, 8), 0.5, dtype=np.float32)
    noisy = perturb(x, 0.2, seed=3)
    assert abs(np.mean(noisy != x) - 0.2) < 0.03
    np.testing.assert_array_equal(noisy, perturb(x, 0.2, seed=3))
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0


def test_a_reference_saved_before_the_new_scores_still_loads() -> None:
    old = {"step": 3, "classes": 2, "likelihood": [2.0, 1.0], "certainty": [0.1, 0.3]}
    reference = OODReference.from_dict(old)
    np.testing.assert_array_equal(reference.likelihood, [1.0, 2.0])
    assert not reference.has(("complexity",)) and reference.has(("blend",))
    with pytest.raises(DataError, match="malformed"):
        OODReference.from_dict({**old, "complexity": [float("nan")]})


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


def test_certainty_score_is_one_minus_certainty(trained: SSVAEClassifier, synthetic) -> None:
    x = synthetic["x"]
    expected = np.clip(1.0 - trained.infer(x).certainty, 0.0, 1.0)
    np.testing.assert_allclose(trained.ood_score(x, score="certainty"), expected)


def test_default_score_is_the_chosen_one(trained: SSVAEClassifier, synthetic, noise) -> None:
    assert DEFAULT_SCORE == "blend_excess"
    np.testing.assert_allclose(trained.ood_score(noise), trained.ood_score(noise, score=DEFAULT_SCORE))


def test_complexity_score_is_the_likelihood_less_the_code_length(trained: SSVAEClassifier, noise) -> None:
    expected = trained.ood_score(noise, score="likelihood") - code_length(noise)
    np.testing.assert_allclose(trained.ood_score(noise, score="complexity"), expected, rtol=1e-6)


def test_p_values_are_calibrated_on_the_training_data(trained: SSVAEClassifier, synthetic, noise) -> None:
    for score in ("certainty", "likelihood", "complexity", "excess", DEFAULT_SCORE):
        inside = trained.ood_score(synthetic["x"], score=score, as_="p_value")
        assert np.all((inside > 0) & (inside <= 1))
        # the reference is the training data itself: a share ≤ α flagged at level α
        for alpha in (0.05, 0.2, 0.5):
            assert np.mean(inside <= alpha) <= alpha + 1e-9
    outside = trained.ood_score(noise, score="likelihood", as_="p_value")
    assert np.mean(outside <= 0.05) > 0.9
    with pytest.raises(ConfigError, match="as_ must be one of 'score', 'p_value'"):
        trained.ood_score(noise, as_="probability")


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
    # without a background model the ratio scores are noted, not computed
    assert set(report["ood"]) == set(OOD_SCORES) - {"ratio", "blend_ratio"}
    assert set(report["ood_notes"]) == {"ratio", "blend_ratio"}
    assert "background model" in report["ood_notes"]["ratio"]
    assert report["ood_auroc"] == report["ood"]["certainty"]["auroc"]
    for figures in report["ood"].values():
        assert set(figures) == {"auroc", "fpr95", "aupr"}
        assert all(0.0 <= v <= 1.0 for v in figures.values())
    only = trained.evaluate(synthetic["x"], synthetic["y"], ood=noise, scores=["likelihood"])
    assert set(only["ood"]) == {"likelihood"} and "ood_auroc" in only


def test_an_unknown_score_name_is_one_clear_error(trained: SSVAEClassifier, synthetic) -> None:
    with pytest.raises(ConfigError, match=r"unknown OOD score 'entropy'.*'certainty', 'likelihood', 'blend', 'complexity', 'excess', 'ratio'"):
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
    with pytest.raises(SSVAEError, match="OOD blends and p-values need the training data"):
        bare.ood_score(noise, score="blend")
    with pytest.raises(SSVAEError, match="OOD blends and p-values need the training data"):
        bare.ood_score(noise, score="likelihood", as_="p_value")
    report = bare.evaluate(synthetic["x"], synthetic["y"], ood=noise)
    assert set(report["ood"]) == {"certainty", "likelihood", "complexity", "excess"}
    assert {"blend", "blend_complexity"} <= set(report["ood_notes"])
    bare.training_data = trained.training_data  # recomputed from the training data
    np.testing.assert_allclose(
        bare.ood_score(noise, score="blend"), trained.ood_score(noise, score="blend"), rtol=1e-6
    )


def test_the_ood_acquisition_ranks_by_the_named_score(trained: SSVAEClassifier, synthetic) -> None:
    from ssvae_core.labels.active import query

    assert trained.training_data is not None
    unlabeled = np.flatnonzero(trained.training_data.y < 0)
    for score in ("likelihood", "excess", DEFAULT_SCORE):
        values = trained.ood_score(trained.training_data.x, score=score)
        result = trained.query(5, strategy="ood", options={"score": score})
        expected = unlabeled[np.argsort(-values[unlabeled], kind="stable")][:5]
        np.testing.assert_array_equal(np.sort(result.indices), np.sort(expected))
        np.testing.assert_allclose(result.scores, values[result.indices], rtol=1e-5)
    # the default stays the head's certainty, which needs nothing more
    plain = trained.query(5, strategy="ood")
    np.testing.assert_allclose(plain.scores, 1.0 - plain.certainty, rtol=1e-5)
    model, state = trained.model, trained.state
    assert model is not None and state is not None
    with pytest.raises(ConfigError, match="ranks by the excess OOD score, which needs the classifier"):
        query(model, state.head_state, synthetic["x"], synthetic["partial"] >= 0, 3,
              strategy="ood", options={"score": "excess"})  # fmt: skip
    with pytest.raises(ConfigError, match="score"):
        trained.query(5, strategy="ood", options={"score": "entropy"})


# --- the background model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_background(synthetic: dict[str, np.ndarray]) -> SSVAEClassifier:
    config = config_from_dict(
        {
            "model": {"latent_dim": 2, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": 4},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 20, "batch_size": 16, "log_every": 20},
        }
    )
    classifier = SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])
    classifier.ood_reference()  # a reference without the ratio scores, to be replaced
    return classifier


def test_the_background_model_leaves_the_model_alone_and_gives_the_ratio_scores(
    with_background: SSVAEClassifier, synthetic, noise: np.ndarray, tmp_path: Path
) -> None:
    import equinox as eqx
    import jax

    classifier = with_background
    with pytest.raises(ConfigError, match="ratio OOD scores need a background model"):
        classifier.ood_score(noise, score="ratio")
    before = jax.tree_util.tree_leaves(eqx.filter(classifier.model, eqx.is_array))
    probabilities = classifier.predict_proba(synthetic["x"])
    classifier.fit_background(noise=0.3, steps=8)
    after = jax.tree_util.tree_leaves(eqx.filter(classifier.model, eqx.is_array))
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    np.testing.assert_array_equal(classifier.predict_proba(synthetic["x"]), probabilities)
    background = classifier.background
    assert background is not None and background.state is not None and int(background.state.step) == 8
    assert background.background_info is not None and background.background_info["noise"] == 0.3
    expected = classifier.ood_score(noise, score="likelihood") - background.ood_score(noise, score="likelihood")
    np.testing.assert_allclose(classifier.ood_score(noise, score="ratio"), expected, rtol=1e-5)
    assert classifier.ood_reference().has(("ratio", "blend_ratio"))
    # saved beside the checkpoint and restored with it
    path = tmp_path / "model.ckpt"
    classifier.save(path)
    assert background_path(path).is_file() and background_path(path).name == "model.background.ckpt"
    loaded = SSVAEClassifier.load(path)
    assert loaded.background is not None
    for score in ("ratio", "blend_ratio"):
        np.testing.assert_allclose(
            loaded.ood_score(noise, score=score), classifier.ood_score(noise, score=score), rtol=1e-5
        )
    report = loaded.evaluate(synthetic["x"], synthetic["y"], ood=noise)
    assert set(report["ood"]) == set(OOD_SCORES) and "ood_notes" not in report


def test_background_options_are_checked(with_background: SSVAEClassifier) -> None:
    with pytest.raises(ConfigError, match=r"noise rate must be in \(0, 1\]"):
        with_background.fit_background(noise=0.0)
    with pytest.raises(ConfigError, match="steps must be a positive integer"):
        with_background.fit_background(steps=0)


def test_a_reference_without_the_new_scores_is_recomputed_or_refused(
    trained: SSVAEClassifier, noise: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "model.ckpt"
    trained.save(path)
    old = SSVAEClassifier.load(path)
    full = old.ood_reference()
    old._ood_reference = OODReference(  # as a checkpoint written before the new scores
        scores={"likelihood": full.likelihood, "certainty": full.certainty}, step=full.step, classes=full.classes
    )
    assert not old.ood_reference_complete()
    np.testing.assert_allclose(old.ood_score(noise, score="blend"), trained.ood_score(noise, score="blend"))
    with pytest.raises(SSVAEError, match="need the training data"):
        old.ood_score(noise)  # blend_excess reads the excess scores the reference lacks
    with pytest.raises(SSVAEError, match="need the training data"):
        old.ood_score(noise, score="blend", as_="p_value")  # the blend's own distribution
    old.training_data = trained.training_data
    np.testing.assert_allclose(old.ood_score(noise), trained.ood_score(noise), rtol=1e-6)
    assert old.ood_reference_complete()


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
    for score in ("certainty", "likelihood", "blend", "complexity", "excess", "blend_complexity", "blend_excess"):
        (line,) = [x for x in lines if x.startswith(f"OOD {score} ")]
        assert "AUROC 0." in line or "AUROC 1." in line
        assert "FPR95 " in line and "AUPR " in line
    (line,) = [x for x in lines if x.startswith("OOD ratio ")]
    assert "not available" in line and "ssvae background" in line


def test_cli_ood_fpr_flags_at_the_rate_and_rejects_bad_rates(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run["out"]), "--ood", str(run["ood"]), "--ood-fpr", "0.05", "--json"]) == 0
    flagged = json.loads(capsys.readouterr().out)["ood_flagged"]
    assert flagged["score"] == DEFAULT_SCORE and flagged["fpr"] == 0.05
    # the share of OOD inputs whose default score's p-value is ≤ 0.05
    p = SSVAEClassifier.load(run["out"] / "model.ckpt").ood_score(np.load(run["ood"])["x"], as_="p_value")
    assert flagged["flagged_ood"] == pytest.approx(np.mean(p <= 0.05))
    assert main(["evaluate", str(run["out"]), "--ood", str(run["ood"]), "--ood-fpr", "0.05"]) == 0
    assert "OOD flagged at p ≤ 0.05 (blend_excess)" in capsys.readouterr().out
    for bad in ("0", "1.5"):
        assert main(["evaluate", str(run["out"]), "--ood", str(run["ood"]), "--ood-fpr", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"ssvae: error: the OOD false-positive rate must be a number strictly between 0 and 1; got {float(bad)!r}"]
    assert main(["evaluate", str(run["out"]), "--ood-fpr", "0.05"]) == 2
    assert "needs --ood" in capsys.readouterr().err


def test_cli_background_trains_and_stores_the_background(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = run["out"]
    before = SSVAEClassifier.load(out / "model.ckpt")
    assert main(["background", str(out), "--steps", "5", "--noise", "0.1"]) == 0
    assert "background model: 5 steps" in capsys.readouterr().out
    assert (out / "model.background.ckpt").is_file()
    after = SSVAEClassifier.load(out / "model.ckpt")
    np.testing.assert_array_equal(after.predict_proba(np.load(run["ood"])["x"]), before.predict_proba(np.load(run["ood"])["x"]))
    assert main(["evaluate", str(out), "--ood", str(run["ood"]), "--score", "ratio"]) == 0
    assert "OOD ratio " in capsys.readouterr().out
    assert main(["background", str(out), "--noise", "2"]) == 2
    assert "noise rate must be in (0, 1]" in capsys.readouterr().err


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
        "ssvae: error: unknown OOD score 'entropy'; choose one of "
        + ", ".join(repr(name) for name in OOD_SCORES)
    ]
    assert main(["evaluate", str(run["out"]), "--score", "blend"]) == 2
    assert "needs --ood" in capsys.readouterr().err
