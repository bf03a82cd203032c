"""Conformance checks for encoders and decoders.

Networks map one example; the model ``vmap``-s them over the batch, and so do these
checks. An encoder is built for a prior without channels (``K = 0``) and for one with
``settings.num_components`` channels; a decoder for every conditioning method it accepts
(a factory signals an unsupported method by raising ``ValueError``) and every likelihood.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from jaxtyping import Array, Float

from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.modelling.conditioning import CONDITIONING_METHODS
from ssvae_core.modelling.likelihoods import (
    AbstractLikelihood,
    HeteroscedasticGaussian,
    heteroscedastic_sigma,
    make_likelihood,
)
from ssvae_core.modelling.protocols import AbstractDecoder, AbstractEncoder
from ssvae_core.modelling.types import DecoderOutput, EncoderOutput
from ssvae_core.testing import strategies
from ssvae_core.testing._runner import (
    ConformanceError,
    NotApplicable,
    Violation,
    check,
    expect,
    expect_close,
    expect_identical,
    for_all,
)
from ssvae_core.testing._signatures import protocol_method
from ssvae_core.testing._subjects import (
    BUILD_INVARIANT,
    ConformanceSettings,
    Subject,
    build_checked,
    expect_finite_step,
    make_context,
    mix_rows,
    random_like,
)


def _heteroscedastic(per_pixel: bool) -> HeteroscedasticGaussian:
    """The core's heteroscedastic likelihood with its default σ bounds."""
    likelihood = make_likelihood("heteroscedastic", per_pixel=per_pixel)
    assert isinstance(likelihood, HeteroscedasticGaussian)
    return likelihood


HETEROSCEDASTIC = {
    "heteroscedastic": _heteroscedastic(per_pixel=False),
    "heteroscedastic per pixel": _heteroscedastic(per_pixel=True),
}
LIKELIHOODS: dict[str, AbstractLikelihood] = {
    "bernoulli": make_likelihood("bernoulli"),
    "gaussian": make_likelihood("gaussian"),
    **HETEROSCEDASTIC,
}


def _encode(encoder: AbstractEncoder, x: Float[Array, "B ..."]) -> EncoderOutput:
    return jax.vmap(encoder)(x)


def _decode(
    decoder: AbstractDecoder, z: Float[Array, "B D"], embeddings: Float[Array, "B E"] | None
) -> DecoderOutput:
    return jax.vmap(decoder)(z, embeddings)


_encode_jit = eqx.filter_jit(_encode)
_decode_jit = eqx.filter_jit(_decode)


@eqx.filter_jit
def _nll(
    likelihood: AbstractLikelihood, x: Float[Array, "B ..."], output: DecoderOutput
) -> Float[Array, " B"]:
    return jax.vmap(likelihood.nll)(x, output)


def _host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


class EncoderSubject(Subject):
    """An encoder built for ``K = 0`` and for ``K = settings.num_components``."""

    kind = "encoder"

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        super().__init__(label, factory, options, settings)
        self.variants = {
            count: build_checked(
                "encoder", factory, options, make_context(settings, num_components=count), label
            )
            for count in (0, settings.num_components)
        }

    def encode(self, encoder: AbstractEncoder, x: np.ndarray, *, jit: bool = True) -> EncoderOutput:
        encode = _encode_jit if jit else _encode
        return _host(encode(encoder, jnp.asarray(x)))

    def inputs(
        self, batch_sizes: tuple[int, ...] = strategies.BATCH_SIZES, *, others: bool = False
    ) -> st.SearchStrategy[dict[str, Any]]:
        """A variant's ``K``, a batch of inputs and, with ``others``, a seed for other rows and a mask."""
        shape = self.settings.input_shape

        def draw(batch: int) -> st.SearchStrategy[dict[str, Any]]:
            fields = {
                "num_components": st.sampled_from(tuple(self.variants)),
                "x": strategies.inputs(batch, shape),
            }
            if others:
                fields |= {"others_seed": strategies.seeds(), "mask": strategies.row_masks(batch)}
            return st.fixed_dictionaries(fields)

        return st.sampled_from(batch_sizes).flatmap(draw)


@check(
    "encoder",
    "attributes",
    "input_shape, latent_dim and num_components equal the build context's",
    hint="fields set from constants instead of the build context",
)
def _encoder_attributes(subject: EncoderSubject) -> None:
    settings = subject.settings
    for count, encoder in subject.variants.items():
        expect(
            tuple(encoder.input_shape) == tuple(settings.input_shape),
            f"input_shape {encoder.input_shape} != context {settings.input_shape}",
        )
        expect(
            encoder.latent_dim == settings.latent_dim,
            f"latent_dim {encoder.latent_dim} != context {settings.latent_dim}",
        )
        expect(
            encoder.num_components == count,
            f"num_components {encoder.num_components} != context {count}",
        )


@check(
    "encoder",
    "signatures",
    "__call__ accepts one example and returns an EncoderOutput as "
    "its jaxtyping-annotated protocol signature says (checked by beartype)",
    hint="an output with a batch axis (the model vmaps one example) or of the wrong dtype",
)
def _encoder_signatures(subject: EncoderSubject) -> None:
    calls = {
        count: protocol_method(AbstractEncoder, "__call__", e)
        for count, e in subject.variants.items()
    }

    def body(example: dict[str, Any]) -> None:
        # Shapes and dtypes are all a signature states: trace abstractly, compile nothing.
        eqx.filter_eval_shape(calls[example["num_components"]], jnp.asarray(example["x"][0]))

    for_all(subject, subject.inputs((1,)), body)


@check(
    "encoder",
    "output_structure",
    "z_mean and z_log_var are finite (B, D) floats; logits are "
    "finite (B, K) floats with channels and None without",
    hint="logits returned without channels (K = 0 needs None), the wrong latent size, or an unbounded log-variance overflowing",
)
def _encoder_outputs(subject: EncoderSubject) -> None:
    latent_dim = subject.settings.latent_dim

    def body(example: dict[str, Any]) -> None:
        count, x = example["num_components"], example["x"]
        output = subject.encode(subject.variants[count], x)
        expect(
            isinstance(output, EncoderOutput),
            f"returned {type(output).__name__}, not EncoderOutput",
        )
        batch = x.shape[0]
        for name in ("z_mean", "z_log_var"):
            value = getattr(output, name)
            expect(
                value.shape == (batch, latent_dim),
                f"{name} has shape {value.shape}, expected ({batch}, {latent_dim})",
            )
            expect(
                np.issubdtype(value.dtype, np.floating) and np.all(np.isfinite(value)),
                f"{name} is not finite floats",
            )
        logits = output.logits
        if count == 0:
            expect(logits is None, "logits must be None when num_components == 0")
        elif logits is None:
            raise Violation(f"logits are None with num_components = {count}")
        else:
            expect(
                logits.shape == (batch, count),
                f"logits have shape {logits.shape}, expected ({batch}, {count})",
            )
            expect(np.all(np.isfinite(logits)), "logits are not finite")

    for_all(subject, subject.inputs(), body)


@check(
    "encoder",
    "responsibilities_are_distributions",
    "responsibilities r = softmax(logits) are >= 0 and each row sums to 1",
    hint="NaN or infinite logits (log of a negative number, division by zero)",
)
def _responsibilities(subject: EncoderSubject) -> None:
    count = subject.settings.num_components

    def body(example: dict[str, Any]) -> None:
        output = subject.encode(subject.variants[count], example["x"])
        responsibilities = np.asarray(output.responsibilities)
        expect(np.all(responsibilities >= 0), f"negative responsibilities: {responsibilities}")
        expect_close(responsibilities.sum(-1), np.ones(responsibilities.shape[0]), "row sums of r")

    for_all(subject, subject.inputs(), body)


@check(
    "encoder",
    "per_example_independence",
    "each example's encoding does not depend on the other members of the batch",
    hint="batch statistics (BatchNorm-style) inside the encoder",
)
def _encoder_per_example(subject: EncoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        encoder, mask = subject.variants[example["num_components"]], example["mask"]
        alone = subject.encode(encoder, example["x"])
        others = random_like(example["others_seed"], example["x"], 0.0, 1.0)
        together = subject.encode(encoder, mix_rows(mask, example["x"], others))
        for name in ("z_mean", "z_log_var", "logits"):
            if getattr(alone, name) is not None:
                expect_close(
                    getattr(together, name)[mask],
                    getattr(alone, name)[mask],
                    f"{name} of the kept rows",
                )

    for_all(subject, subject.inputs((3, 8), others=True), body)


@check(
    "encoder",
    "jit_matches_eager",
    "the encoding is the same under jit and eagerly",
    hint="Python control flow or NumPy on array values, computed once at trace time under jit",
)
def _encoder_jit(subject: EncoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        encoder = subject.variants[example["num_components"]]
        compiled = subject.encode(encoder, example["x"])
        eager = subject.encode(encoder, example["x"], jit=False)
        for name in ("z_mean", "z_log_var", "logits"):
            if getattr(compiled, name) is not None:
                expect_close(
                    getattr(compiled, name), getattr(eager, name), name, rtol=1e-4, atol=1e-5
                )

    for_all(subject, subject.inputs((3,)), body)


@check(
    "encoder",
    "repeat_calls_identical",
    "two eager calls with the same input give bit-identical encodings",
    hint="NumPy or Python randomness (or a global counter) inside a call; draw from the key argument, if any",
)
def _encoder_repeat(subject: EncoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        encoder = subject.variants[example["num_components"]]
        first = subject.encode(encoder, example["x"], jit=False)
        second = subject.encode(encoder, example["x"], jit=False)
        expect_identical(first, second, "the encoding")

    for_all(subject, subject.inputs((3,)), body)


@check(
    "encoder",
    "trains_one_step",
    "in a small model, one train step gives finite metrics and finite parameters",
    hint="a gradient that is NaN where the value is finite (sqrt or log at 0, jnp.where with an unsafe branch)",
)
def _encoder_trains(subject: EncoderSubject) -> None:
    expect_finite_step(subject)


class DecoderSubject(Subject):
    """A decoder built for every conditioning method it accepts and every likelihood."""

    kind = "decoder"

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        super().__init__(label, factory, options, settings)
        self.unsupported: dict[str, str] = {}
        self.builds: dict[tuple[str, str], AbstractDecoder] = {}
        for method in CONDITIONING_METHODS:
            context = make_context(
                settings, num_components=settings.num_components, conditioning=method
            )
            try:
                self.builds[method, "bernoulli"] = build_checked(
                    "decoder", factory, options, context, label
                )
            except ConformanceError as error:
                if not isinstance(error.__cause__, ValueError):
                    raise
                self.unsupported[method] = str(error.__cause__)
        self.methods = tuple(m for m in CONDITIONING_METHODS if m not in self.unsupported)
        if not self.methods:
            raise ConformanceError(
                label,
                "builds",
                BUILD_INVARIANT,
                f"build raised ValueError for every conditioning method: {self.unsupported}",
            )

    def decoder(self, method: str, likelihood: str = "bernoulli") -> AbstractDecoder:
        """The decoder for one conditioning method and likelihood (built once)."""
        if (method, likelihood) not in self.builds:
            context = make_context(
                self.settings,
                num_components=self.settings.num_components,
                conditioning=method,
                likelihood=LIKELIHOODS[likelihood],
            )
            self.builds[method, likelihood] = build_checked(
                "decoder", self.factory, self.options, context, self.label
            )
        return self.builds[method, likelihood]

    @cached_property
    def conditioned(self) -> tuple[str, ...]:
        """Supported methods that use the embedding."""
        return tuple(m for m in self.methods if m != "none")

    def model_options(self) -> tuple[bool, str]:
        return True, (self.conditioned[0] if self.conditioned else "none")

    def decode(
        self,
        method: str,
        likelihood: str,
        z: np.ndarray,
        embeddings: np.ndarray | None,
        *,
        jit: bool = True,
    ) -> DecoderOutput:
        decoder = self.decoder(method, likelihood)
        conditioning = None if method == "none" else jnp.asarray(embeddings)
        decode = _decode_jit if jit else _decode
        return _host(decode(decoder, jnp.asarray(z), conditioning))

    def inputs(
        self,
        variants: tuple[tuple[str, str], ...],
        batch_sizes: tuple[int, ...] = (3,),
        *,
        z_range: float = 4.0,
        others: bool = False,
    ) -> st.SearchStrategy[dict[str, Any]]:
        """A (conditioning, likelihood) variant, latents, embeddings and data of one batch."""
        settings = self.settings

        def draw(batch: int) -> st.SearchStrategy[dict[str, Any]]:
            fields = {
                "variant": st.sampled_from(variants),
                "z": strategies.float_arrays((batch, settings.latent_dim), -z_range, z_range),
                "embeddings": strategies.float_arrays((batch, settings.embedding_dim), -3.0, 3.0),
                "x": strategies.inputs(batch, settings.input_shape),
            }
            if others:
                fields |= {"others_seed": strategies.seeds(), "mask": strategies.row_masks(batch)}
            return st.fixed_dictionaries(fields)

        return st.sampled_from(batch_sizes).flatmap(draw)

    def finite_variants(self) -> tuple[tuple[str, str], ...]:
        """Every method with Bernoulli, and every likelihood with the first method."""
        first = self.methods[0]
        return tuple((m, "bernoulli") for m in self.methods) + tuple(
            (first, name) for name in LIKELIHOODS if name != "bernoulli"
        )


@check(
    "decoder",
    "supports_conditioning_none",
    "the decoder builds with conditioning 'none' "
    "(priors without channels need it); other methods may be refused with ValueError",
    hint="the factory refuses conditioning 'none', or raises something other than ValueError for a method it does not support",
)
def _decoder_none(subject: DecoderSubject) -> str:
    expect(
        "none" in subject.methods,
        f"build refused conditioning 'none': {subject.unsupported.get('none')}",
    )
    refused = f"; refuses {', '.join(subject.unsupported)}" if subject.unsupported else ""
    return f"supports {', '.join(subject.methods)}{refused}"


@check(
    "decoder",
    "attributes",
    "output_shape equals the context's input_shape and conditioning the context's method",
    hint="fields set from constants instead of the build context",
)
def _decoder_attributes(subject: DecoderSubject) -> None:
    for method in subject.methods:
        decoder = subject.decoder(method)
        expect(
            tuple(decoder.output_shape) == tuple(subject.settings.input_shape),
            f"output_shape {decoder.output_shape} != input_shape {subject.settings.input_shape}",
        )
        expect(
            decoder.conditioning == method,
            f"conditioning {decoder.conditioning!r} built for {method!r}",
        )


@check(
    "decoder",
    "output_matches_sample_shape",
    "for every supported conditioning method and every "
    "likelihood, loc has the sample's shape and scale_raw the likelihood's scale_size (None for 0)",
    hint="loc flattened or not reshaped to the input shape, or scale_raw sized for another likelihood",
)
def _decoder_shapes(subject: DecoderSubject) -> str:
    settings, batch = subject.settings, 3
    sample_size = math.prod(settings.input_shape)
    z = jax.ShapeDtypeStruct((batch, settings.latent_dim), jnp.float32)
    embeddings = jax.ShapeDtypeStruct((batch, settings.embedding_dim), jnp.float32)
    for method in subject.methods:
        for name, likelihood in LIKELIHOODS.items():
            decoder = subject.decoder(method, name)
            where = f"conditioning {method!r}, likelihood {name!r}"
            output = eqx.filter_eval_shape(
                _decode, decoder, z, None if method == "none" else embeddings
            )
            expect(
                isinstance(output, DecoderOutput),
                f"{where}: returned {type(output).__name__}, not DecoderOutput",
            )
            expected = (batch, *settings.input_shape)
            expect(
                output.loc.shape == expected,
                f"{where}: loc has shape {output.loc.shape[1:]}, expected {tuple(settings.input_shape)}",
            )
            expect(
                jnp.issubdtype(output.loc.dtype, jnp.floating),
                f"{where}: loc has dtype {output.loc.dtype}",
            )
            size = likelihood.scale_size(sample_size)
            if size == 0:
                expect(output.scale_raw is None, f"{where}: scale_raw must be None")
            else:
                shape = None if output.scale_raw is None else output.scale_raw.shape[1:]
                expect(
                    shape == (size,), f"{where}: scale_raw has shape {shape}, expected ({size},)"
                )
    return f"{len(subject.methods)} conditioning methods x {len(LIKELIHOODS)} likelihoods"


@check(
    "decoder",
    "outputs_finite",
    "loc, scale_raw and the likelihood's NLL are finite for "
    "latents in [-4, 4] and inputs in [0, 1]",
    hint="an unbounded exp in the output layer, or the log of a non-positive activation",
)
def _decoder_finite(subject: DecoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        output = subject.decode(method, name, example["z"], example["embeddings"])
        expect(np.all(np.isfinite(output.loc)), "loc is not finite")
        if output.scale_raw is not None:
            expect(np.all(np.isfinite(output.scale_raw)), "scale_raw is not finite")
        nll = np.asarray(
            _nll(LIKELIHOODS[name], jnp.asarray(example["x"]), jax.tree.map(jnp.asarray, output))
        )
        expect(np.all(np.isfinite(nll)), f"NLL is not finite: {nll}")

    for_all(subject, subject.inputs(subject.finite_variants()), body)


@check(
    "decoder",
    "heteroscedastic_sigma_in_bounds",
    "the heteroscedastic σ = clip(σ_min + "
    "softplus(scale_raw), σ_min, σ_max) lies in [σ_min, σ_max], per image and per pixel, even for "
    "latents far out (|z| <= 30)",
    hint="σ computed without the likelihood's bounds (use the likelihood's own transform)",
)
def _decoder_sigma(subject: DecoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        likelihood = HETEROSCEDASTIC[name]
        output = subject.decode(method, name, example["z"], example["embeddings"])
        sigma = np.asarray(
            heteroscedastic_sigma(
                jnp.asarray(output.scale_raw), likelihood.sigma_min, likelihood.sigma_max
            )
        )
        expect(
            np.all((sigma >= likelihood.sigma_min) & (sigma <= likelihood.sigma_max)),
            f"σ outside [{likelihood.sigma_min}, {likelihood.sigma_max}]: {sigma.min()} .. {sigma.max()}",
        )

    variants = tuple((subject.methods[0], name) for name in HETEROSCEDASTIC)
    for_all(subject, subject.inputs(variants, z_range=30.0), body)


@check(
    "decoder",
    "conditioning_uses_embedding",
    "with a conditioning method other than 'none', "
    "different component embeddings give different outputs",
    hint="the embedding accepted but never used (a conditioning method wired to nothing)",
)
def _decoder_uses_embedding(subject: DecoderSubject) -> None:
    if not subject.conditioned:
        raise NotApplicable("supports only conditioning 'none'")

    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        shifted = example["embeddings"] + example["shift"]
        first = subject.decode(method, name, example["z"], example["embeddings"])
        second = subject.decode(method, name, example["z"], shifted)
        change = np.abs(first.loc - second.loc).reshape(first.loc.shape[0], -1).max(-1)
        expect(
            np.all(change > 1e-6),
            f"loc does not change with the embedding (largest change per row {change})",
        )

    base = subject.inputs(tuple((m, "bernoulli") for m in subject.conditioned))
    strategy = base.flatmap(
        lambda example: st.fixed_dictionaries(
            {"shift": strategies.float_arrays(example["embeddings"].shape, 0.5, 2.0)}
        ).map(lambda extra: {**example, **extra})
    )
    for_all(subject, strategy, body)


@check(
    "decoder",
    "per_example_independence",
    "each example's output does not depend on the other members of the batch",
    hint="batch statistics (BatchNorm-style) inside the decoder",
)
def _decoder_per_example(subject: DecoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        mask, seed = example["mask"], example["others_seed"]
        alone = subject.decode(method, name, example["z"], example["embeddings"])
        together = subject.decode(
            method,
            name,
            mix_rows(mask, example["z"], random_like(seed, example["z"], -4.0, 4.0)),
            mix_rows(
                mask, example["embeddings"], random_like(seed + 1, example["embeddings"], -3.0, 3.0)
            ),
        )
        expect_close(together.loc[mask], alone.loc[mask], "loc of the kept rows")

    method = subject.conditioned[0] if subject.conditioned else "none"
    for_all(subject, subject.inputs(((method, "bernoulli"),), (3, 8), others=True), body)


@check(
    "decoder",
    "jit_matches_eager",
    "the output is the same under jit and eagerly",
    hint="Python control flow or NumPy on array values, computed once at trace time under jit",
)
def _decoder_jit(subject: DecoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        compiled = subject.decode(method, name, example["z"], example["embeddings"])
        eager = subject.decode(method, name, example["z"], example["embeddings"], jit=False)
        expect_close(compiled.loc, eager.loc, "loc", rtol=1e-4, atol=1e-5)
        if compiled.scale_raw is not None:
            expect_close(compiled.scale_raw, eager.scale_raw, "scale_raw", rtol=1e-4, atol=1e-5)

    variants = (
        *((m, "bernoulli") for m in subject.methods),
        (subject.methods[0], "heteroscedastic"),
    )
    for_all(subject, subject.inputs(variants), body)


@check(
    "decoder",
    "repeat_calls_identical",
    "two eager calls with the same latents and embeddings give bit-identical outputs",
    hint="NumPy or Python randomness (or a global counter) inside a call; draw from the key argument, if any",
)
def _decoder_repeat(subject: DecoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        first = subject.decode(method, name, example["z"], example["embeddings"], jit=False)
        second = subject.decode(method, name, example["z"], example["embeddings"], jit=False)
        expect_identical(first, second, "the decoder output")

    variants = tuple((m, "bernoulli") for m in subject.methods)
    for_all(subject, subject.inputs(variants), body)


@check(
    "decoder",
    "signatures",
    "__call__ accepts one latent and embedding and returns a "
    "DecoderOutput as its jaxtyping-annotated protocol signature says (checked by beartype)",
    hint="an output with a batch axis (the model vmaps one example) or of the wrong dtype",
)
def _decoder_signatures(subject: DecoderSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        method, name = example["variant"]
        call = protocol_method(AbstractDecoder, "__call__", subject.decoder(method, name))
        embedding = None if method == "none" else jnp.asarray(example["embeddings"][0])
        eqx.filter_eval_shape(call, jnp.asarray(example["z"][0]), embedding)

    for_all(subject, subject.inputs(tuple((m, "bernoulli") for m in subject.methods), (1,)), body)


@check(
    "decoder",
    "trains_one_step",
    "in a small model, one train step gives finite metrics and finite parameters",
    hint="a gradient that is NaN where the value is finite (sqrt or log at 0, jnp.where with an unsafe branch)",
)
def _decoder_trains(subject: DecoderSubject) -> None:
    expect_finite_step(subject)
