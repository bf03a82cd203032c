"""Preparing a component for the checks: settings, build contexts, companions, a tiny model.

A *subject* is the component under test, built from its factory and options in the
contexts the checks need, together with the companions it works with (a small dense
encoder for a prior, a mixture prior for an encoder, ...). Companions come from the core's
own built-ins, so a check exercises exactly the paths that ``ssvae train`` takes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.config import ComponentConfig, Config, ModelConfig, TrainConfig, default_config
from ssvae_core.hookspecs import hookimpl
from ssvae_core.modelling.components import BuildContext, ComponentFactory
from ssvae_core.modelling.likelihoods import AbstractLikelihood, make_likelihood
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.modelling.objective import build_objective
from ssvae_core.modelling.types import Batch, EncoderOutput
from ssvae_core.registry import PROTOCOLS, Registry
from ssvae_core.testing import strategies
from ssvae_core.testing._runner import ConformanceError, Violation, expect
from ssvae_core.training import (
    StepSpec,
    Trainer,
    TrainingArrays,
    TrainState,
    apply_gradients,
    init_state,
    sample_batch,
    step_gradients,
    training_arrays,
)

BUILD_INVARIANT = (
    "build(options, context, key) returns an instance of the factory's component_type, "
    "a final subclass of the kind's protocol"
)
SUBJECT_NAME = "conformance_subject"
COMPANION_HIDDEN = (16,)
MODEL_BATCH_SIZE = 8
# Default loss terms the fast profile's tiny model leaves out.
HEAVY_TERMS = ("consistency", "graph_label")


PROFILES = ("fast", "thorough")
# Hypothesis examples per property when ``max_examples`` is not given.
PROFILE_EXAMPLES = {"fast": 10, "thorough": 40}


@dataclass(frozen=True)
class ConformanceSettings:
    """Shapes and limits of a conformance run; every field has a sensible default.

    ``input_shape``, ``latent_dim``, ``num_classes`` and ``embedding_dim`` describe the
    model the component is built into; ``num_components`` is ``K`` for encoders, decoders
    and heads (a prior brings its own ``K`` from its options). ``profile`` is ``"fast"``
    (the default: few examples, a tiny model with the likelihood, KL, usage and supervised
    terms, meant to run on every save) or ``"thorough"`` (more examples, heads also built
    with 2 and 64 channels, the tiny model with every default loss term: for CI).
    ``max_examples`` bounds the Hypothesis examples of each property (default from the
    profile: 10 or 40). ``sample_count_option`` names the option that sets a prior's
    Monte-Carlo sample count; ``exact_kl_terms`` lists the KL terms that are exact
    (analytic) KLs, by default every deterministic term whose name starts with ``kl``.
    ``fixed_weights`` says whether π must stay fixed in training (default: unless the
    options have ``learn_pi=True``). ``inert_options`` names options meant to change
    nothing a check can observe (a numerical tolerance, a logging switch), which
    ``every_option_has_an_effect`` then leaves out. ``skip`` names checks not to run. ``shrink=False``
    reports the first failing example as found instead of shrinking it to a smaller one
    (faster where only whether a check fails matters, as in a corpus of known defects).
    """

    input_shape: tuple[int, ...] = (8, 8)
    latent_dim: int = 4
    num_classes: int = 3
    num_components: int = 5
    embedding_dim: int = 4
    profile: str = "fast"
    max_examples: int | None = None
    sample_count_option: str = "num_samples"
    exact_kl_terms: tuple[str, ...] | None = None
    fixed_weights: bool | None = None
    inert_options: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    shrink: bool = True

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.max_examples is None:
            object.__setattr__(self, "max_examples", PROFILE_EXAMPLES[self.profile])
        elif not isinstance(self.max_examples, int) or self.max_examples < 1:
            raise ValueError(f"max_examples must be an integer >= 1, got {self.max_examples!r}")

    @property
    def thorough(self) -> bool:
        return self.profile == "thorough"


def training_inputs(settings: ConformanceSettings, count: int = 32) -> Float[np.ndarray, "N ..."]:
    """Deterministic inputs in [0, 1] for data-dependent initialisation and model batches."""
    rng = np.random.default_rng(0)
    return rng.random((count, *settings.input_shape), dtype=np.float32)


def make_context(
    settings: ConformanceSettings,
    *,
    num_components: int,
    conditioning: str = "none",
    likelihood: AbstractLikelihood | None = None,
) -> BuildContext:
    """The ``BuildContext`` a factory receives inside ``build_model``."""
    return BuildContext(
        input_shape=tuple(settings.input_shape),
        latent_dim=settings.latent_dim,
        num_classes=settings.num_classes,
        num_components=num_components,
        conditioning=conditioning,
        embedding_dim=settings.embedding_dim,
        likelihood=likelihood if likelihood is not None else make_likelihood("bernoulli"),
        data=training_inputs(settings),
    )


def build_checked(
    kind: str,
    factory: ComponentFactory,
    options: Any,
    context: BuildContext,
    label: str,
    *,
    key: PRNGKeyArray | None = None,
) -> Any:
    """``factory.build(...)``, with a failure or a wrong type reported as check ``builds``."""
    key = jax.random.PRNGKey(0) if key is None else key
    try:
        built = factory.build(options, context, key)
    except Exception as error:
        raise ConformanceError(
            label,
            "builds",
            BUILD_INVARIANT,
            f"build raised {type(error).__name__}: {error} (context {context_summary(context)})",
        ) from error
    protocol = PROTOCOLS[kind]
    if not isinstance(built, factory.component_type) or not isinstance(built, protocol):
        raise ConformanceError(
            label,
            "builds",
            BUILD_INVARIANT,
            f"build returned {type(built).__name__}, expected {factory.component_type.__name__} "
            f"(a {protocol.__name__})",
        )
    return built


def context_summary(context: BuildContext) -> str:
    """The context's shape-related fields, for messages."""
    return (
        f"input_shape={context.input_shape}, latent_dim={context.latent_dim}, "
        f"num_components={context.num_components}, conditioning={context.conditioning!r}, "
        f"likelihood={type(context.likelihood).__name__}"
    )


def builtin_registry() -> Registry:
    """The core's own components only (the companions of every subject)."""
    return Registry(entry_points=False)


_COMPANIONS: dict[tuple[Any, ...], Any] = {}


def dense_companion(kind: str, context: BuildContext) -> Any:
    """A small built-in dense encoder or decoder for ``context`` (one per context shape).

    Its structure comes from tracing the build abstractly and its weights from NumPy
    (uniform in ±1/√fan-in, biases in ±0.1): initialising through ``jax.random`` op by op
    compiles a program per layer shape, seconds per companion on a small machine.
    """
    key = (
        kind,
        tuple(context.input_shape),
        context.latent_dim,
        context.num_classes,
        context.num_components,
        context.conditioning,
        context.embedding_dim,
        repr(context.likelihood),
    )
    if key not in _COMPANIONS:
        factory = builtin_registry().get(kind, "dense").factory
        shapes = eqx.filter_eval_shape(
            factory.build,
            factory.options(hidden=COMPANION_HIDDEN),
            dataclasses.replace(context, data=None),
            jax.random.PRNGKey(1),
        )
        rng = np.random.default_rng(1)

        def fill(leaf: Any) -> Any:
            if not isinstance(leaf, jax.ShapeDtypeStruct):
                return leaf
            bound = 1.0 / math.sqrt(leaf.shape[-1]) if len(leaf.shape) >= 2 else 0.1
            return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), dtype=leaf.dtype)

        _COMPANIONS[key] = jax.tree.map(
            fill, shapes, is_leaf=lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct)
        )
    return _COMPANIONS[key]


class _SubjectPlugin:
    """Registers the component under test as ``SUBJECT_NAME`` for its kind only."""

    def __init__(self, kind: str, factory: ComponentFactory):
        self.kind = kind
        self.factory = factory

    def _only(self, kind: str) -> dict[str, ComponentFactory]:
        return {SUBJECT_NAME: self.factory} if kind == self.kind else {}

    @hookimpl
    def ssvae_register_priors(self) -> dict[str, ComponentFactory]:
        return self._only("prior")

    @hookimpl
    def ssvae_register_encoders(self) -> dict[str, ComponentFactory]:
        return self._only("encoder")

    @hookimpl
    def ssvae_register_decoders(self) -> dict[str, ComponentFactory]:
        return self._only("decoder")

    @hookimpl
    def ssvae_register_heads(self) -> dict[str, ComponentFactory]:
        return self._only("head")

    @hookimpl
    def ssvae_register_acquisitions(self) -> dict[str, ComponentFactory]:
        return self._only("acquisition")


@dataclass(frozen=True)
class TinyModel:
    """A model built by ``ssvae_core.modelling.model.build_model`` around the subject, with the
    step spec and a batch drawn by the real sampler from the real training arrays (every
    default loss term prepared), so a check takes exactly the step ``ssvae train`` takes."""

    model: SSVAE
    state: TrainState
    batch: Batch
    spec: StepSpec
    data: TrainingArrays
    train: TrainConfig


def tiny_model(
    kind: str,
    factory: ComponentFactory,
    options: Any,
    settings: ConformanceSettings,
    *,
    channels: bool = True,
    conditioning: str = "auto",
) -> TinyModel:
    """The subject inside a small model; the other components are the dense built-ins.

    ``channels`` picks the companion prior: ``mixture`` with ``settings.num_components``
    channels, or ``standard``. Adam without clipping, so one step is easy to predict.
    """
    registry = _subject_registry(kind, factory)
    config = _tiny_config(kind, options, settings, registry, channels=channels, conditioning=conditioning)
    data = training_inputs(settings)
    model, config = build_model(
        config,
        input_shape=tuple(settings.input_shape),
        num_classes=settings.num_classes,
        key=jax.random.PRNGKey(2),
        data=data,
        registry=registry,
    )
    objective = build_objective(
        config,
        model,
        input_shape=tuple(settings.input_shape),
        num_classes=settings.num_classes,
        registry=registry,
    )
    positions = np.arange(len(data))
    labels = np.where(positions % 4 == 0, positions % settings.num_classes, -1)
    arrays = training_arrays(data, labels, objective=objective, num_classes=settings.num_classes)
    spec = Trainer.for_model(config, model, objective).spec
    # Compiled: drawn eagerly, the augmentation compiles dozens of small programs.
    batch = eqx.filter_jit(sample_batch)(
        arrays,
        jax.random.PRNGKey(5),
        spec.batch_size,
        spec.labeled_batch_size,
        augment=spec.augment,
        with_view=objective.uses_view,
    )
    return TinyModel(
        model, init_state(model, jax.random.PRNGKey(3)), batch, spec, arrays, config.train
    )


def _subject_registry(kind: str, factory: ComponentFactory) -> Registry:
    """The built-ins and the subject, registered as a plugin of its own."""
    # final=False: the seeded defects are correct components with one method overridden;
    # the abstract-or-final rule is the registry's to enforce, the kit checks behaviour.
    registry = Registry(
        entry_points=False,
        plugins=[("ssvae-conformance-subject", _SubjectPlugin(kind, factory))],
        final=False,
    )
    if registry.problems:
        raise RuntimeError("; ".join(problem.reason for problem in registry.problems))
    return registry


def _tiny_config(
    kind: str,
    options: Any,
    settings: ConformanceSettings,
    registry: Registry,
    *,
    channels: bool,
    conditioning: str,
) -> Config:
    """The tiny model's config: the subject in its section, small dense companions, the
    heavy loss terms off unless ``settings.thorough``."""
    dense = registry.get("encoder", "dense").factory.options(hidden=COMPANION_HIDDEN)
    if channels:
        mixture = registry.get("prior", "mixture").factory.options(
            num_components=settings.num_components
        )
        prior = ComponentConfig("mixture", mixture)
    else:
        prior = ComponentConfig("standard", registry.get("prior", "standard").factory.options())
    components = {
        "prior": prior,
        "encoder": ComponentConfig("dense", dense),
        "decoder": ComponentConfig("dense", dense),
        "head": ComponentConfig("auto", {}),
    }
    components[kind] = ComponentConfig(SUBJECT_NAME, options)
    train = TrainConfig(
        batch_size=MODEL_BATCH_SIZE, learning_rate=1e-2, grad_clip=0.0, optimizer="adam"
    )
    config = default_config(registry)
    if not settings.thorough:
        # The consistency term's augmented view and the graph labels' propagation dominate
        # the step's compile time and do not touch the component under test.
        config = config.replace(
            terms=tuple(
                (name, dataclasses.replace(options, weight=0.0) if name in HEAVY_TERMS else options)
                for name, options in config.terms
            )
        )
    return config.replace(
        model=ModelConfig(
            latent_dim=settings.latent_dim,
            embedding_dim=settings.embedding_dim,
            conditioning=conditioning,
        ),
        train=train,
        **components,
    )


@dataclass(frozen=True)
class Step:
    """One optimiser step of a tiny model: the new model, its metrics, the gradient applied."""

    model: SSVAE
    metrics: dict[str, Float[Array, ""]]
    gradients: SSVAE


@eqx.filter_jit
def _step(
    model: SSVAE,
    state: TrainState,
    batch: Batch,
    key: PRNGKeyArray,
    spec: StepSpec,
    data: TrainingArrays,
) -> tuple[SSVAE, dict[str, Float[Array, ""]], SSVAE]:
    # The two halves of ``train_step``, so the gradient it applies is computed once.
    grads, metrics, posterior = step_gradients(model, state, batch, key, spec=spec, train_x=data.x)
    opt_state = spec.optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    updated, _, _ = apply_gradients(model, state, opt_state, grads, posterior, batch, spec=spec)
    return updated, metrics, grads


class Subject:
    """A component prepared for checking: its label, factory, options and settings."""

    kind: str
    # What building the subject changed in the process-wide state (``prepare`` records it,
    # then undoes it); ``None`` when the subject was not built through ``prepare``.
    build_changes: list[str] | None = None

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        self.label = label
        self.factory = factory
        self.options = options
        self.settings = settings

    def model_options(self) -> tuple[bool, str]:
        """``(channels, conditioning)`` of the tiny model this subject is checked in."""
        return True, "auto"

    @cached_property
    def tiny(self) -> TinyModel:
        channels, conditioning = self.model_options()
        return tiny_model(
            self.kind,
            self.factory,
            self.options,
            self.settings,
            channels=channels,
            conditioning=conditioning,
        )

    @cached_property
    def step(self) -> Step:
        """One optimiser step (the real ``train_step`` and optimiser) of the tiny model."""
        tiny = self.tiny
        return Step(
            *_step(tiny.model, tiny.state, tiny.batch, jax.random.PRNGKey(4), tiny.spec, tiny.data)
        )


def permute_channels(tree: PyTree[Any], permutation: Int[np.ndarray, " K"]) -> PyTree[Any]:
    """Reorder the leading axis of every inexact array leaf whose leading size is ``K``.

    Channel-indexed parameters and statistics (π logits, pseudo-inputs, τ counts, channel
    locations) keep the channel on the leading axis, so this relabels the channels.
    """
    size = len(permutation)

    def reorder(leaf: Any) -> Any:
        if eqx.is_inexact_array(leaf) and leaf.ndim >= 1 and leaf.shape[0] == size:
            return leaf[jnp.asarray(permutation)]
        return leaf

    return jax.tree.map(reorder, tree)


def mix_rows(mask: Bool[np.ndarray, " B"], kept: PyTree[Any], other: PyTree[Any]) -> PyTree[Any]:
    """Rows of ``kept`` where ``mask`` is true and rows of ``other`` elsewhere, leaf by leaf."""

    def choose(a: Any, b: Any) -> Any:
        return jnp.where(jnp.asarray(mask).reshape(-1, *([1] * (jnp.ndim(a) - 1))), a, b)

    return jax.tree.map(choose, kept, other)


def random_posterior(
    seed: int, batch_size: int, latent_dim: int, num_components: int
) -> EncoderOutput:
    """A posterior batch drawn from ``seed`` within the ranges of ``strategies``.

    For inputs whose values do not matter to a property (the other rows of a batch, the
    history behind a head's state): a seed shrinks in one step, an array in hundreds.
    """
    rng = np.random.default_rng(seed)

    def uniform(bounds: tuple[float, float], shape: tuple[int, ...]) -> Float[Array, "..."]:
        return jnp.asarray(rng.uniform(*bounds, shape), dtype=jnp.float32)

    return EncoderOutput(
        z_mean=uniform(strategies.MEAN_RANGE, (batch_size, latent_dim)),
        z_log_var=uniform(strategies.LOG_VAR_RANGE, (batch_size, latent_dim)),
        logits=uniform(strategies.LOGIT_RANGE, (batch_size, num_components))
        if num_components
        else None,
    )


def random_like(
    seed: int, array: Float[np.ndarray, "..."], low: float, high: float
) -> Float[np.ndarray, "..."]:
    """Uniform values in ``[low, high]`` of ``array``'s shape, drawn from ``seed``."""
    return np.random.default_rng(seed).uniform(low, high, np.shape(array)).astype(np.float32)


def expect_finite_step(subject: Subject) -> None:
    """One train step of the subject's tiny model leaves every metric and parameter finite."""
    updated, metrics = subject.step.model, subject.step.metrics
    for name, value in metrics.items():
        expect(np.all(np.isfinite(np.asarray(value))), f"metric {name!r} is not finite: {value}")
    for path, leaf in jax.tree_util.tree_leaves_with_path(
        eqx.filter(updated, eqx.is_inexact_array)
    ):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise Violation(f"parameter {jax.tree_util.keystr(path)} is not finite after one step")
