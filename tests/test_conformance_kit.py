"""The conformance kit catches broken plugins, each by the right check, with a readable message.

Every component here is deliberately wrong in one way; the test names the check that must
catch it and what the message must say (component, invariant, counterexample).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.components import BuildContext, ComponentFactory
from ssvae_core.losses import diagonal_gaussian_log_density, gaussian_kl
from ssvae_core.options import option
from ssvae_core.priors.mixture import MixturePrior
from ssvae_core.protocols import AbstractDecoder, AbstractEncoder, AbstractHead, AbstractPrior
from ssvae_core.schedules import Schedule
from ssvae_core.terms import AbstractLossTerm, TermInputs, TermOptions, TermValue
from ssvae_core.testing import (
    ConformanceError,
    check_decoder,
    check_encoder,
    check_head,
    check_loss_term,
    check_prior,
    conformance_checks,
    prepare,
    run_check,
)
from ssvae_core.types import DecoderOutput, EncoderOutput


@dataclass(frozen=True)
class NoOptions:
    """No options."""


class NegativeKLPrior(AbstractPrior):
    """N(0, I), but its KL_z is shifted down by 0.5 nats (a dropped constant gone wrong)."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)

    def log_weights(self) -> Float[Array, " K"]:
        return jnp.zeros((0,))

    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        return {"kl_z": gaussian_kl(posterior.z_mean, posterior.z_log_var) - 0.5}

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        return jax.random.normal(key, (num_samples, self.latent_dim)), jnp.zeros(
            (num_samples,), jnp.int32
        )

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}


def _build_negative_kl(
    options: NoOptions, context: BuildContext, key: PRNGKeyArray
) -> NegativeKLPrior:
    return NegativeKLPrior(
        num_components=0, conditions_decoder=False, latent_dim=context.latent_dim
    )


@dataclass(frozen=True)
class SampleOptions:
    num_samples: int = option(1, help="Monte-Carlo samples S", minimum=1)


class OneSamplePrior(AbstractPrior):
    """N(0, I) with a Monte-Carlo KL_z that ignores its sample count and always uses one sample."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)

    def log_weights(self) -> Float[Array, " K"]:
        return jnp.zeros((0,))

    def kl_terms(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        *,
        encoder: AbstractEncoder,
        key: PRNGKeyArray,
    ) -> dict[str, Float[Array, " B"]]:
        sample = posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * jax.random.normal(
            key, z.shape
        )
        log_q = diagonal_gaussian_log_density(sample, posterior.z_mean, posterior.z_log_var)
        log_p = diagonal_gaussian_log_density(
            sample, jnp.zeros_like(sample), jnp.zeros_like(sample)
        )
        return {"kl_z": log_q - log_p}

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        return jax.random.normal(key, (num_samples, self.latent_dim)), jnp.zeros(
            (num_samples,), jnp.int32
        )

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}


@dataclass(frozen=True)
class FixedPiOptions:
    num_components: int = option(4, help="channels", minimum=2)
    learn_pi: bool = option(False, help="learn π")


def _build_leaky_mixture(
    options: FixedPiOptions, context: BuildContext, key: PRNGKeyArray
) -> MixturePrior:
    # The bug: learn_pi is not passed through, so π is trainable although the options fix it.
    return MixturePrior(context.latent_dim, options.num_components, learn_pi=True)


class ConstantHead(AbstractHead):
    """Spreads only 90 % of the probability over the labels."""

    num_classes: int = eqx.field(static=True)

    def init_state(self) -> None:
        return None

    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: None
    ) -> Float[Array, "B Y"]:
        return jnp.full((z.shape[0], self.num_classes), 0.9 / self.num_classes)

    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: None
    ) -> Float[Array, " B"]:
        return jnp.max(self.predict_proba(posterior, z, state), axis=-1)

    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: None,
    ) -> Float[Array, " B"]:
        return -jnp.log(self.predict_proba(posterior, z, state))[:, 0]

    def update_state(self, state: None, posterior: EncoderOutput, labels: Int[Array, " B"]) -> None:
        return None

    def class_map(self, state: None) -> None:
        return None


class BatchNormalisedHead(AbstractHead):
    """Centres z on the batch mean before its softmax: each row depends on the others."""

    num_classes: int = eqx.field(static=True)

    def init_state(self) -> None:
        return None

    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: None
    ) -> Float[Array, "B Y"]:
        centred = z - jnp.mean(z, axis=0)
        return jax.nn.softmax(centred[:, : self.num_classes], axis=-1)

    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: None
    ) -> Float[Array, " B"]:
        return jnp.max(self.predict_proba(posterior, z, state), axis=-1)

    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: None,
    ) -> Float[Array, " B"]:
        probabilities = self.predict_proba(posterior, z, state)
        return -jnp.log(
            jnp.take_along_axis(probabilities, jnp.clip(labels, 0)[:, None], axis=-1)[:, 0]
        )

    def update_state(self, state: None, posterior: EncoderOutput, labels: Int[Array, " B"]) -> None:
        return None

    def class_map(self, state: None) -> None:
        return None


class UnnormalisedMapHead(AbstractHead):
    """Keeps soft counts per channel, but hands out the smoothed counts as its τ unnormalised."""

    num_classes: int = eqx.field(static=True)
    num_components: int = eqx.field(static=True)

    def init_state(self) -> Float[Array, "K Y"]:
        return jnp.zeros((self.num_components, self.num_classes))

    def predict_proba(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, "B Y"]:
        return jnp.full((z.shape[0], self.num_classes), 1.0 / self.num_classes)

    def certainty(
        self, posterior: EncoderOutput, z: Float[Array, "B D"], state: Float[Array, "K Y"]
    ) -> Float[Array, " B"]:
        return jnp.max(self.predict_proba(posterior, z, state), axis=-1)

    def supervised_loss(
        self,
        posterior: EncoderOutput,
        z: Float[Array, "B D"],
        labels: Int[Array, " B"],
        state: Float[Array, "K Y"],
    ) -> Float[Array, " B"]:
        return -jnp.log(self.predict_proba(posterior, z, state))[:, 0]

    def update_state(
        self, state: Float[Array, "K Y"], posterior: EncoderOutput, labels: Int[Array, " B"]
    ) -> Float[Array, "K Y"]:
        assert posterior.logits is not None
        onehot = jax.nn.one_hot(labels, self.num_classes) * (labels >= 0)[:, None]
        return state + jax.nn.softmax(posterior.logits, axis=-1).T @ onehot

    def class_map(self, state: Float[Array, "K Y"]) -> Float[Array, "K Y"]:
        return state + 0.5


def _build_unnormalised_map_head(
    options: NoOptions, context: BuildContext, key: PRNGKeyArray
) -> UnnormalisedMapHead:
    if context.num_components == 0:
        raise ValueError("needs channels")
    return UnnormalisedMapHead(context.num_classes, context.num_components)


class FlatDecoder(AbstractDecoder):
    """Forgets to reshape: returns a flat vector instead of the sample's shape."""

    output_shape: tuple[int, ...] = eqx.field(static=True)
    conditioning: str = eqx.field(static=True)
    scale_size: int = eqx.field(static=True)
    linear: eqx.nn.Linear

    def __call__(
        self, z: Float[Array, " D"], embedding: Float[Array, " E"] | None
    ) -> DecoderOutput:
        scale_raw = jnp.zeros((self.scale_size,)) if self.scale_size else None
        return DecoderOutput(loc=self.linear(z), scale_raw=scale_raw)


def _build_flat_decoder(
    options: NoOptions, context: BuildContext, key: PRNGKeyArray
) -> FlatDecoder:
    if context.conditioning != "none":
        raise ValueError("supports conditioning 'none' only")
    size = 1
    for extent in context.input_shape:
        size *= extent
    return FlatDecoder(
        output_shape=context.input_shape,
        conditioning="none",
        scale_size=context.likelihood.scale_size(size),
        linear=eqx.nn.Linear(context.latent_dim, size, key=key),
    )


class AlwaysLogitsEncoder(AbstractEncoder):
    """Emits channel logits even for a prior without channels."""

    input_shape: tuple[int, ...] = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    num_components: int = eqx.field(static=True)

    def __call__(self, x: Float[Array, "*sample"]) -> EncoderOutput:
        mean = jnp.full((self.latent_dim,), jnp.mean(x))
        return EncoderOutput(
            z_mean=mean,
            z_log_var=jnp.zeros_like(mean),
            logits=jnp.zeros((max(self.num_components, 1),)),
        )


def _factory(
    component_type: type,
    build: Callable[[Any, BuildContext, PRNGKeyArray], Any],
    options: type = NoOptions,
) -> ComponentFactory:
    return ComponentFactory(component_type, options, build, "deliberately broken")


def _run_one(factory: ComponentFactory, kind: str, check: str) -> ConformanceError:
    """Run only ``check`` on the component and return the error it must raise."""
    subject = prepare(factory, kind=kind, max_examples=10)
    (entry,) = [entry for entry in conformance_checks(kind) if entry.name == check]
    with pytest.raises(ConformanceError) as caught:
        run_check(subject, entry)
    return caught.value


def test_prior_with_a_negative_kl_fails_exact_kl_nonnegative_with_a_shrunk_counterexample() -> None:
    factory = _factory(NegativeKLPrior, _build_negative_kl)
    with pytest.raises(ConformanceError) as caught:
        check_prior(factory)
    error = caught.value
    assert error.check == "exact_kl_nonnegative"
    message = str(error)
    assert "prior NegativeKLPrior fails conformance check 'exact_kl_nonnegative'" in message
    assert "exact (analytic) KL terms are >= 0" in message
    assert "exact KL term 'kl_z' is negative" in message
    assert (
        "minimal counterexample:" in message
        and "posterior = EncoderOutput(z_mean=f32[1, 4]" in message
    )


def test_monte_carlo_kl_that_ignores_its_sample_count_fails_convergence() -> None:
    factory = _factory(
        OneSamplePrior,
        lambda options, context, key: OneSamplePrior(
            0, False, context.latent_dim, options.num_samples
        ),
        SampleOptions,
    )
    error = _run_one(factory, "prior", "monte_carlo_kl_converges")
    assert "RMS error" in error.detail and "expected about a quarter" in error.detail


def test_prior_whose_fixed_pi_still_moves_fails_fixed_weights_stay_fixed() -> None:
    factory = ComponentFactory(
        MixturePrior, FixedPiOptions, _build_leaky_mixture, "learn_pi ignored"
    )
    error = _run_one(factory, "prior", "fixed_weights_stay_fixed")
    assert "log π moved by up to" in str(error)
    assert "non-learnable π gets exactly zero update" in str(error)


def test_head_whose_rows_do_not_sum_to_one_fails_predict_proba_is_distribution() -> None:
    factory = _factory(
        ConstantHead, lambda options, context, key: ConstantHead(context.num_classes)
    )
    with pytest.raises(ConformanceError) as caught:
        check_head(factory)
    assert caught.value.check == "predict_proba_is_distribution"
    assert "row sums of p(y|x)" in str(caught.value) and "0.9" in str(caught.value)


def test_head_coupling_batch_members_fails_per_example_independence() -> None:
    factory = _factory(
        BatchNormalisedHead, lambda options, context, key: BatchNormalisedHead(context.num_classes)
    )
    error = _run_one(factory, "head", "per_example_independence")
    assert "of the kept rows" in error.detail
    assert "mask = b8[" in str(error)


def test_head_whose_class_map_rows_do_not_sum_to_one_fails_class_map_is_distribution() -> None:
    error = _run_one(
        _factory(UnnormalisedMapHead, _build_unnormalised_map_head),
        "head",
        "class_map_is_distribution",
    )
    assert "row sums of class_map" in error.detail
    assert "each channel's row summing to 1" in str(error)


def test_head_without_a_class_map_passes_class_map_is_distribution() -> None:
    subject = prepare("softmax", kind="head", max_examples=5)
    (entry,) = [e for e in conformance_checks("head") if e.name == "class_map_is_distribution"]
    assert run_check(subject, entry) == "no channel→label map"


def test_decoder_with_the_wrong_output_shape_fails_output_matches_sample_shape() -> None:
    with pytest.raises(ConformanceError) as caught:
        check_decoder(_factory(FlatDecoder, _build_flat_decoder))
    assert caught.value.check == "output_matches_sample_shape"
    assert "loc has shape (64,), expected (8, 8)" in str(caught.value)


def test_encoder_emitting_logits_without_channels_fails_output_structure() -> None:
    factory = _factory(
        AlwaysLogitsEncoder,
        lambda options, context, key: AlwaysLogitsEncoder(
            context.input_shape, context.latent_dim, context.num_components
        ),
    )
    with pytest.raises(ConformanceError) as caught:
        check_encoder(factory)
    assert caught.value.check == "output_structure"
    assert "logits must be None when num_components == 0" in str(caught.value)


def test_conformance_error_is_an_assertion_error() -> None:
    assert issubclass(ConformanceError, AssertionError)


def test_skipping_an_unknown_check_is_refused() -> None:
    factory = _factory(NegativeKLPrior, _build_negative_kl)
    with pytest.raises(ValueError, match="exact_kl_nonnegativ"):
        check_prior(factory, skip=("exact_kl_nonnegativ",))


# --- loss terms -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _TermOptions(TermOptions):
    weight: float = option(1.0, help="weight")


class BatchMeanTerm(AbstractLossTerm):
    """Claims to be per-example, but each row's value is the batch mean of the inputs."""

    weight: Schedule

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        mean = jnp.mean(inputs.batch.x)
        return TermValue(jnp.full(inputs.batch.x.shape[:1], mean))


class StaticWeightTerm(AbstractLossTerm):
    """Keeps its weight as a Python float: every new weight would recompile the step."""

    weight: Schedule
    factor: float = eqx.field(static=True)

    def __call__(self, inputs: TermInputs, key: PRNGKeyArray) -> TermValue:
        return TermValue(self.factor * jnp.mean(inputs.batch.x.reshape(inputs.batch.x.shape[0], -1), axis=1))


def test_term_whose_rows_depend_on_each_other_fails_per_example_independence() -> None:
    factory = ComponentFactory(
        BatchMeanTerm, _TermOptions, lambda options, context, key: BatchMeanTerm(options.schedule()), "x"
    )
    error = _run_one(factory, "loss_term", "per_example_independence")
    assert "value of row 0" in str(error)


def test_term_holding_its_weight_as_a_static_float_fails_weights_are_traced() -> None:
    factory = ComponentFactory(
        StaticWeightTerm,
        _TermOptions,
        lambda options, context, key: StaticWeightTerm(options.schedule(), options.weight),
        "x",
    )
    error = _run_one(factory, "loss_term", "weights_are_traced")
    assert "static part of the term changed" in str(error)


def test_builtin_terms_pass_check_loss_term() -> None:
    report = check_loss_term("consistency", max_examples=3)
    assert report["per_example_independence"] == "passed"
