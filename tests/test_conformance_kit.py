"""The conformance kit's messages, settings, strategies and its checks on correct components.

Which check catches which broken component is the seeded-defect corpus's business
(``ssvae_core.testing.defects``, ``tests/test_conformance_defects.py``); the tests here
run the kit end to end on a few of those defects and read the whole message: component,
invariant, violation, minimal counterexample and the usual cause.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssvae_core.testing import (
    ConformanceError,
    ConformanceSettings,
    check_decoder,
    check_encoder,
    check_head,
    check_loss_term,
    check_prior,
    conformance_checks,
    prepare,
    run_check,
    strategies,
)
from ssvae_core.testing._runner import Violation, describe_error, for_all
from ssvae_core.testing.defects import DEFECTS, Defect


def _defect(name: str) -> Defect:
    (defect,) = [defect for defect in DEFECTS if defect.name == name]
    return defect


def _run_one(name: str) -> ConformanceError:
    """Run only the defect's intended check and return the error it must raise (with the
    first failing example found: what the report says is under test, not the shrinking)."""
    defect = _defect(name)
    subject = prepare(defect.factory, defect.options, kind=defect.kind, shrink=False)
    (entry,) = [entry for entry in conformance_checks(defect.kind) if entry.name == defect.check]
    with pytest.raises(ConformanceError) as caught:
        run_check(subject, entry)
    return caught.value


def test_a_prior_with_a_sign_error_fails_the_whole_kit_at_exact_kl_nonnegative() -> None:
    defect = _defect("sign-flipped variance ratio")
    with pytest.raises(ConformanceError) as caught:
        check_prior(defect.factory)
    error = caught.value
    assert error.check == "exact_kl_nonnegative"
    message = str(error)
    assert "prior SignFlippedVarianceRatio fails conformance check 'exact_kl_nonnegative'" in message
    assert "exact (analytic) KL terms are >= 0" in message
    assert "exact KL term 'kl_z' is negative" in message
    assert "minimal counterexample:" in message and "posterior = EncoderOutput(" in message
    assert message.splitlines()[-1] == (
        "  usual cause: a sign error in the log-variance ratio, or a dropped term of the "
        "Gaussian KL"
    )


def test_monte_carlo_kl_that_ignores_its_sample_count_fails_convergence() -> None:
    error = _run_one("sample count ignored")
    assert "RMS error" in error.detail and "expected about a quarter" in error.detail


def test_prior_whose_fixed_pi_still_moves_fails_fixed_weights_stay_fixed() -> None:
    error = _run_one("fixed π not frozen")
    assert "log π moved by up to" in str(error)
    assert "non-learnable π gets exactly zero update" in str(error)


def test_a_type_check_failure_is_cut_to_the_lines_that_matter() -> None:
    error = _run_one("integer KL")
    assert error.check == "signatures"
    violation = error.detail
    assert "channel_kl" in violation
    assert len(violation.splitlines()) <= 7, violation


def test_describe_error_keeps_short_messages_and_cuts_long_ones() -> None:
    assert describe_error(ValueError("bad K")) == "ValueError: bad K"
    long = ValueError("\n".join(f"line {i}" for i in range(20)))
    text = describe_error(long)
    assert text.startswith("ValueError: line 0") and "(14 more lines)" in text


def test_head_whose_rows_do_not_sum_to_one_fails_predict_proba_is_distribution() -> None:
    defect = _defect("90 % of the mass")
    with pytest.raises(ConformanceError) as caught:
        # where the kit stops is under test here; the shrinking is, in the prior's case above
        check_head(defect.factory, shrink=False)
    assert caught.value.check == "predict_proba_is_distribution"
    assert "row sums of p(y|x)" in str(caught.value) and "0.9" in str(caught.value)


def test_head_coupling_batch_members_names_the_mask_in_its_counterexample() -> None:
    error = _run_one("batch-centred logits")
    assert "of the kept rows" in error.detail
    assert "mask = b8[" in str(error)


def test_head_whose_class_map_rows_do_not_sum_to_one_fails_class_map_is_distribution() -> None:
    error = _run_one("counts as τ")
    assert "row sums of class_map" in error.detail
    assert "each channel's row summing to 1" in str(error)


def test_head_without_a_class_map_passes_class_map_is_distribution() -> None:
    subject = prepare("softmax", kind="head", max_examples=5)
    (entry,) = [e for e in conformance_checks("head") if e.name == "class_map_is_distribution"]
    assert run_check(subject, entry) == "no channel→label map"


def test_decoder_with_the_wrong_output_shape_fails_output_matches_sample_shape() -> None:
    with pytest.raises(ConformanceError) as caught:
        check_decoder(_defect("flattened output").factory)
    assert caught.value.check == "output_matches_sample_shape"
    assert "loc has shape (64,), expected (8, 8)" in str(caught.value)


def test_encoder_emitting_logits_without_channels_fails_output_structure() -> None:
    with pytest.raises(ConformanceError) as caught:
        check_encoder(_defect("logits without channels").factory, shrink=False)
    assert caught.value.check == "output_structure"
    assert "logits must be None when num_components == 0" in str(caught.value)


def test_term_whose_rows_depend_on_each_other_names_the_row() -> None:
    assert "value of row 0" in str(_run_one("batch-mean term"))


def test_term_holding_its_weight_as_a_static_float_fails_weights_are_traced() -> None:
    assert "static part of the term changed" in str(_run_one("static weight"))


def test_conformance_error_is_an_assertion_error() -> None:
    assert issubclass(ConformanceError, AssertionError)


def test_skipping_an_unknown_check_is_refused() -> None:
    with pytest.raises(ValueError, match="exact_kl_nonnegativ"):
        check_prior(_defect("dropped −1").factory, skip=("exact_kl_nonnegativ",))


def test_profiles_set_the_examples_and_an_unknown_profile_is_refused() -> None:
    assert ConformanceSettings().max_examples == 10
    assert ConformanceSettings(profile="thorough").max_examples == 40
    assert ConformanceSettings(profile="thorough", max_examples=3).max_examples == 3
    with pytest.raises(ValueError, match="profile must be one of fast, thorough"):
        ConformanceSettings(profile="slow")
    with pytest.raises(ValueError, match="max_examples must be an integer >= 1"):
        ConformanceSettings(max_examples=0)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(strategies.extreme_logits(4, 5))
def test_extreme_logits_are_near_one_hot_or_near_uniform_around_large_offsets(logits) -> None:
    spread = logits.max(axis=1) - logits.min(axis=1)
    gaps = logits.max(axis=1) - np.sort(logits, axis=1)[:, -2]
    assert np.all((spread <= 2e-3) | (gaps >= 20.0 - 1e-3))
    assert np.all(np.abs(logits) <= 100.0 + 8.0 + 60.0)


def test_extreme_posteriors_reach_the_edges_of_the_domain() -> None:
    seen = {"wide mean": False, "low log-variance": False, "peaked": False, "flat": False}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(strategies.posteriors(3, 2, 4, extreme=True))
    def look(posterior) -> None:
        mean, log_var = np.asarray(posterior.z_mean), np.asarray(posterior.z_log_var)
        logits = np.asarray(posterior.logits)
        seen["wide mean"] |= bool(np.abs(mean).max() > 50)
        seen["low log-variance"] |= bool(log_var.min() < -10)
        gaps = logits.max(axis=1) - np.sort(logits, axis=1)[:, -2]
        seen["peaked"] |= bool(gaps.max() > 20)
        seen["flat"] |= bool((logits.max(axis=1) - logits.min(axis=1)).min() < 1e-2)

    look()
    assert all(seen.values()), seen


def test_builtin_terms_pass_check_loss_term() -> None:
    report = check_loss_term("consistency", max_examples=3)
    assert report["per_example_independence"] == "passed"
    assert report["repeat_calls_identical"] == "passed"


def test_priors_pass_the_new_checks_with_notes() -> None:
    report = check_prior("mixture", skip=("monte_carlo_kl_converges",))
    assert report["samples_match_kl_density"].startswith("passed (box mass ")
    assert "Stein statistics within" in report["samples_match_kl_density"]
    assert report["options_honoured"] == "passed (checked num_components, learn_pi)"
    assert report["kl_terms_per_example_finite"] == (
        "passed (K in [2, 10, 64], typical and extreme inputs)"
    )
    assert report["kl_gradients"].startswith("passed (") and "directional" in report["kl_gradients"]
    assert report["every_option_has_an_effect"] == "passed (3 options)"
    assert report["process_hygiene"] == (
        "passed (re-imported ssvae_core.builtin, ssvae_core.modelling.priors.mixture)"
    )


def test_the_trained_like_prior_moves_what_trains_and_keeps_what_is_frozen() -> None:
    defect = _defect("σ² for σ in log space")
    subject = prepare(defect.factory, defect.options, kind="prior")
    built, trained = subject.prior, subject.trained
    # Built at the origin with unit variances: every channel alike until trained.
    assert np.all(np.asarray(built.locations) == 0) and np.all(np.asarray(built.log_variances) == 0)
    moved = np.asarray(trained.locations)
    assert np.all(moved != 0) and len({tuple(row) for row in moved.round(6)}) == len(moved)
    assert np.all(np.asarray(trained.log_variances) != 0)  # no scale entry: trains at 1
    # π's logits have scale 0 and one axis: a fixed π stays as built.
    assert np.array_equal(np.asarray(trained.pi_logits), np.asarray(built.pi_logits))
    assert subject.trained is not subject.prior


def test_an_option_declared_inert_is_left_out_of_every_option_has_an_effect() -> None:
    defect = _defect("option never used")
    subject = prepare(defect.factory, defect.options, kind="prior", inert_options=("log_variance",))
    (entry,) = [e for e in conformance_checks("prior") if e.name == "every_option_has_an_effect"]
    assert run_check(subject, entry) == "4 options"


def test_an_example_that_fails_then_passes_on_replay_is_reported_as_hidden_randomness() -> None:
    calls = []

    def body(example: dict) -> None:
        calls.append(example)
        if len(calls) == 1:  # fails once, passes when Hypothesis replays it
            raise Violation("first call only")

    subject = SimpleNamespace(settings=ConformanceSettings(max_examples=5))
    with pytest.raises(Violation, match="differs between two calls with the same input"):
        for_all(subject, st.fixed_dictionaries({"seed": strategies.seeds()}), body)
