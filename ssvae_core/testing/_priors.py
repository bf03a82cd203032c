"""Conformance checks for priors: KL terms, samples, scales and frozen π.

Each is run on the prior as built and, where a freshly built prior could hide a bug (every
channel alike, every scale 1), on a *trained-like* copy whose trainable arrays were moved
by seeded noise (``trained_like``). The checks of gradients, Monte-Carlo draws and
options are in ``_prior_dynamics``.

Which KL terms are *exact* (analytic) KLs and which are Monte-Carlo estimates is decided
by observation: a term whose value changes with the ``key`` passed to ``kl_terms`` is an
estimate; a deterministic term whose name starts with ``kl`` is taken as an exact KL
(``ConformanceSettings.exact_kl_terms`` overrides this). Exact KLs must be finite, ≥ 0 and
0 when ``q`` equals ``p``; estimates must converge to a high-sample reference as the
sample-count option grows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.config import TrainConfig
from ssvae_core.modelling.components import ComponentFactory
from ssvae_core.modelling.model import reparameterise
from ssvae_core.modelling.priors.channels import AbstractChannelPrior
from ssvae_core.modelling.protocols import AbstractEncoder, AbstractPrior
from ssvae_core.modelling.types import EncoderOutput
from ssvae_core.testing import strategies
from ssvae_core.testing._runner import (
    ConformanceError,
    NotApplicable,
    check,
    expect,
    expect_close,
    expect_identical,
    for_all,
)
from ssvae_core.testing._signatures import protocol_method
from ssvae_core.testing._subjects import (
    MODEL_BATCH_SIZE,
    ConformanceSettings,
    Step,
    Subject,
    build_checked,
    dense_companion,
    expect_finite_step,
    make_context,
    mix_rows,
    permute_channels,
    random_posterior,
)
from ssvae_core.training import make_optimizer

# Monte-Carlo convergence: estimates at two sample counts against a high-sample reference.
MC_SAMPLE_COUNTS = (4, 64)
MC_REFERENCE_SAMPLES = 4096
MC_REPEATS = 32
# Samples per channel for the moments of p(z|c) (KL_z must vanish at the matching q).
MOMENT_SAMPLES = 4096
ONE_HOT_LOGIT = -60.0
# The density implied by the KL terms, compared with sample() in two latent dimensions.
DENSITY_LATENT_DIM = 2
DENSITY_SAMPLES = 20_000
# Grid cells per axis over the central box (the draws' 1st to 99th percentiles), grouped
# DENSITY_CELL_BLOCK per axis into the cells of the chi-square test.
DENSITY_GRID_POINTS = {"fast": 80, "thorough": 160}
DENSITY_CELL_BLOCK = {"fast": 10, "thorough": 20}
DENSITY_BOX_PERCENT = 1.0
DENSITY_MC_SAMPLES = 16
DENSITY_MASS_TOLERANCE = 0.05
DENSITY_P_VALUE = 1e-6
# Stein's identity in the full latent dimension: draws (over all keys), random directions,
# and how many standard errors from 0 a statistic may be.
STEIN_SAMPLES = 8192
STEIN_DIRECTIONS = 4
STEIN_THRESHOLD = 5.5
NARROW_LOG_VAR = -14.0
# The prior as built and as after training: every trainable array (and every channel-indexed
# one) moved by seeded noise of PERTURBATION times its RMS (or 1 where it is all zeros).
AS_BUILT, TRAINED_LIKE = "as built", "trained-like"
PERTURBATION = 0.5
NETWORK_PERTURBATION = 0.1
PERTURBATION_SEED = 3
# sample() is drawn with several keys; each key's draws must pass on their own.
SAMPLE_KEYS = 4
# A learning-rate scale no default uses, to see where an *lr_scale option goes.
PROBE_SCALE = 0.37
# optax.adam's default ε, for the unscaled first step the scales are measured against.
ADAM_EPS = 1e-8


def sampled_kl_terms(
    prior: AbstractPrior, encoder: AbstractEncoder, posterior: EncoderOutput, key: PRNGKeyArray
) -> dict[str, Float[Array, " B"]]:
    """The prior's KL terms per example at one ``z`` drawn from ``posterior`` with ``key``."""
    z_key, prior_key = jax.random.split(key)
    z = reparameterise(posterior, z_key)
    return prior.kl_terms(posterior, z, encoder=encoder, key=prior_key)


_sampled_kl_terms_jit = eqx.filter_jit(sampled_kl_terms)


@eqx.filter_jit
def _monte_carlo_estimates(
    priors: tuple[AbstractPrior, AbstractPrior, AbstractPrior],
    encoder: AbstractEncoder,
    posterior: EncoderOutput,
    key: PRNGKeyArray,
) -> tuple[
    dict[str, Float[Array, "M B"]], dict[str, Float[Array, "M B"]], dict[str, Float[Array, " B"]]
]:
    """Estimates with few and more samples (``MC_REPEATS`` keys each), and the reference."""
    low, high, reference = priors
    keys = jax.random.split(key, MC_REPEATS)
    repeat = jax.vmap(sampled_kl_terms, in_axes=(None, None, None, 0))
    return (
        repeat(low, encoder, posterior, keys),
        repeat(high, encoder, posterior, keys),
        sampled_kl_terms(reference, encoder, posterior, key),
    )


@eqx.filter_jit
def _sample(
    prior: AbstractPrior, encoder: AbstractEncoder, count: int, key: PRNGKeyArray
) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
    return prior.sample(count, encoder=encoder, key=key)


def sample_with_keys(
    prior: AbstractPrior, encoder: AbstractEncoder, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` draws for each of ``SAMPLE_KEYS`` keys from ``seed`` on, as float64 NumPy
    arrays of shape ``(SAMPLE_KEYS, count, D)`` and ``(SAMPLE_KEYS, count)``."""
    # One program, called once per key (vmapping sample() over keys compiles far slower).
    draws = [_sample(prior, encoder, count, jax.random.PRNGKey(seed + i)) for i in range(SAMPLE_KEYS)]
    return (
        np.stack([np.asarray(z, dtype=np.float64) for z, _ in draws]),
        np.stack([np.asarray(c) for _, c in draws]),
    )


def one_hot_logits(channels: np.ndarray, num_components: int) -> np.ndarray:
    """Logits whose softmax is (numerically) one-hot at ``channels``."""
    logits = np.full((len(channels), num_components), ONE_HOT_LOGIT, dtype=np.float32)
    logits[np.arange(len(channels)), channels] = 0.0
    return logits


def trained_like(prior: AbstractPrior, seed: int = PERTURBATION_SEED) -> AbstractPrior:
    """``prior`` with its parameters moved as training moves them: every inexact array of a
    field whose ``parameter_scales()`` entry is not 0 (a field without an entry trains at
    scale 1), and every channel-indexed array (leading axis ``K``, two axes or more) of the
    others, gets seeded Gaussian noise of ``PERTURBATION`` times its RMS (1 where it is 0);
    other arrays of two axes or more (network weights) ``NETWORK_PERTURBATION`` times.

    A freshly built prior is often special (every channel at the origin, every scale 1),
    which hides a ``sample()`` that ignores the channel or mixes up σ and σ².
    """
    scales = prior.parameter_scales()
    count = prior.num_components
    rng = np.random.default_rng(seed)
    changes = {}
    for field in dataclasses.fields(prior):
        value = getattr(prior, field.name, None)
        trains = scales.get(field.name, 1.0) != 0.0

        def move(leaf: Any, trains: bool = trains) -> Any:
            if not eqx.is_inexact_array(leaf) or leaf.size == 0:
                return leaf
            channel_indexed = leaf.ndim >= 2 and count > 0 and leaf.shape[0] == count
            if not (trains or channel_indexed):
                return leaf
            values = np.asarray(leaf, dtype=np.float64)
            rms = float(np.sqrt(np.mean(values**2)))
            # Network weights compound through layers: they move less than channel parameters.
            size = PERTURBATION if channel_indexed or leaf.ndim < 2 else NETWORK_PERTURBATION
            noise = rng.normal(size=leaf.shape) * size * (rms if rms > 0 else 1.0)
            return jnp.asarray(values + noise, dtype=leaf.dtype)

        if value is not None and jax.tree.leaves(eqx.filter(value, eqx.is_inexact_array)):
            changes[field.name] = jax.tree.map(move, value)
    if not changes:
        return prior
    names = list(changes)
    return eqx.tree_at(
        lambda module: [getattr(module, name) for name in names],
        prior,
        [changes[name] for name in names],
    )


def _shifted(
    subject: PriorSubject, bound: float, batch: int = 3
) -> st.SearchStrategy[dict[str, Any]]:
    """Posteriors, a per-row logit shift in ``[−bound, bound]``, a seed and a variant."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "posterior": strategies.posteriors(
            batch, subject.settings.latent_dim, subject.num_components
        ),
        "shift": strategies.float_arrays((batch,), -bound, bound),
        "seed": strategies.seeds(),
        "prior": st.sampled_from((AS_BUILT, TRAINED_LIKE)),
    }
    return st.fixed_dictionaries(fields)


class _PriorOnly(eqx.Module):
    """The prior as the only trainable part, shaped like a model (``.prior``) so that
    ``make_optimizer`` labels its fields as in training."""

    prior: AbstractPrior


@dataclass(frozen=True)
class _PriorTiny:
    model: _PriorOnly
    train: TrainConfig


@eqx.filter_jit
def _prior_step(
    wrapper: _PriorOnly,
    encoder: AbstractEncoder,
    posterior: EncoderOutput,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation,
    rate: float,
) -> tuple[_PriorOnly, dict[str, Float[Array, ""]], _PriorOnly]:
    """One optimiser step of the prior alone on ``mean(Σ KL terms) + Σ regularisers``."""
    params, static = eqx.partition(wrapper, eqx.is_inexact_array)

    def loss(params: _PriorOnly) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        prior = eqx.combine(params, static).prior
        terms = {n: jnp.mean(v) for n, v in sampled_kl_terms(prior, encoder, posterior, key).items()}
        penalties = prior.regularisers()
        return sum(terms.values()) + sum(penalties.values()), {**terms, **penalties}

    (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    updates = jax.tree.map(lambda update: -rate * update, updates)
    return eqx.apply_updates(wrapper, updates), metrics, grads


class PriorSubject(Subject):
    """A prior built for a model without channels yet, with a dense companion encoder."""

    kind = "prior"

    def __init__(
        self, label: str, factory: ComponentFactory, options: Any, settings: ConformanceSettings
    ):
        super().__init__(label, factory, options, settings)
        self.context = make_context(settings, num_components=0)
        self.prior = build_checked("prior", factory, options, self.context, label)
        count = self.prior.num_components
        # A malformed K is reported by the attributes check; the other checks assume none.
        self.num_components = count if isinstance(count, int) and count >= 0 else 0
        encoder_context = make_context(settings, num_components=self.num_components)
        self.encoder = dense_companion("encoder", encoder_context)
        self.trained = trained_like(self.prior)

    def variant(self, example: dict[str, Any]) -> AbstractPrior:
        """The prior an example asks for (``example["prior"]``): as built or trained-like."""
        return self.trained if example.get("prior") == TRAINED_LIKE else self.prior

    @cached_property
    def tiny(self) -> Any:
        """The thorough profile trains the prior inside a small model; the fast one alone."""
        if self.settings.thorough:
            return super().tiny
        train = TrainConfig(
            batch_size=MODEL_BATCH_SIZE, learning_rate=1e-2, grad_clip=0.0, optimizer="adam"
        )
        return _PriorTiny(_PriorOnly(self.prior), train)

    @cached_property
    def step(self) -> Step:
        """One optimiser step through ``make_optimizer``: the full
        ``train_step`` of the small model (thorough) or of the prior's KL terms (fast)."""
        if self.settings.thorough:
            return super().step
        tiny = self.tiny
        posterior = random_posterior(
            7, MODEL_BATCH_SIZE, self.settings.latent_dim, self.num_components
        )
        optimizer = make_optimizer(tiny.train, tiny.model)
        updated, metrics, grads = _prior_step(
            tiny.model,
            self.encoder,
            posterior,
            jax.random.PRNGKey(4),
            optimizer,
            tiny.train.learning_rate,
        )
        return Step(updated, metrics, grads)

    def kl(
        self,
        posterior: EncoderOutput,
        seed: int,
        prior: AbstractPrior | None = None,
        *,
        encoder: AbstractEncoder | None = None,
        jit: bool = True,
    ) -> dict[str, np.ndarray]:
        """The prior's KL terms as NumPy arrays (``z`` and the prior's key come from ``seed``)."""
        prior = self.prior if prior is None else prior
        encoder = self.encoder if encoder is None else encoder
        key = jax.random.PRNGKey(seed)
        kl_terms = _sampled_kl_terms_jit if jit else sampled_kl_terms
        terms = kl_terms(prior, encoder, posterior, key)
        expect(isinstance(terms, dict), f"kl_terms returned {type(terms).__name__}, not a dict")
        return {name: np.asarray(value) for name, value in terms.items()}

    def inputs(
        self,
        batch_sizes: tuple[int, ...] = strategies.BATCH_SIZES,
        *,
        extreme: bool = False,
        num_components: int | None = None,
    ) -> st.SearchStrategy[dict[str, Any]]:
        """A batch of posteriors for ``K`` channels (this prior's by default), a seed and
        the prior as built or trained-like; with ``extreme``, from the edges of the domain
        too (``strategies``)."""
        latent_dim = self.settings.latent_dim
        count = self.num_components if num_components is None else num_components
        return st.sampled_from(batch_sizes).flatmap(
            lambda batch: st.fixed_dictionaries(
                {
                    "posterior": strategies.posteriors(batch, latent_dim, count, extreme=extreme),
                    "seed": strategies.seeds(),
                    "prior": st.sampled_from((AS_BUILT, TRAINED_LIKE)),
                }
            )
        )

    def rebuilt(
        self, settings: ConformanceSettings | None = None, **changes: Any
    ) -> tuple[AbstractPrior, AbstractEncoder]:
        """The prior built with changed options (and settings), with a matching companion."""
        settings = self.settings if settings is None else settings
        options = dataclasses.replace(self.options, **changes) if changes else self.options
        prior = build_checked(
            "prior", self.factory, options, make_context(settings, num_components=0), self.label
        )
        count = prior.num_components
        count = count if isinstance(count, int) and count >= 0 else 0
        encoder = dense_companion("encoder", make_context(settings, num_components=count))
        return prior, encoder

    @cached_property
    def channel_variants(self) -> dict[int, tuple[AbstractPrior, AbstractEncoder]]:
        """The prior with 2 and with many channels besides its own ``K``, where its options
        have a ``num_components`` that allows them."""
        variants = {self.num_components: (self.prior, self.encoder)}
        names = {field.name for field in dataclasses.fields(self.options)}
        if "num_components" not in names or self.num_components == 0:
            return variants
        for count in (2, strategies.LARGE_NUM_COMPONENTS):
            if count in variants:
                continue
            try:
                variants[count] = self.rebuilt(num_components=count)
            except ConformanceError:
                continue  # the options refuse this K; the build itself is checked elsewhere
        return variants

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Each channel's sample mean and variance of ``p(z|c)`` (one row without channels)."""
        z, c = self.samples
        z = z.astype(np.float64)
        rows = [z[c == channel] for channel in range(max(self.num_components, 1))]
        means = np.stack([r.mean(0) if len(r) else np.zeros(z.shape[1]) for r in rows])
        variances = np.stack([r.var(0) if len(r) > 1 else np.ones(z.shape[1]) for r in rows])
        return means, np.clip(variances, 1e-8, 1e8)

    def near_prior(self, batch: int = 3) -> st.SearchStrategy[dict[str, Any]]:
        """Posteriors close to one channel of the prior: one-hot ``q(c|x)`` on channel
        ``c``, mean within a standard deviation of ``p(z|c)``'s and log-variance within
        ±3 of its own — where a KL that is wrong in sign or scale goes negative."""
        count, latent_dim = max(self.num_components, 1), self.settings.latent_dim

        def build(channels: np.ndarray, shift: np.ndarray, spread: np.ndarray) -> EncoderOutput:
            means, variances = self.moments
            std = np.sqrt(variances[channels])
            return EncoderOutput(
                z_mean=jnp.asarray(means[channels] + shift * std, dtype=jnp.float32),
                z_log_var=jnp.asarray(np.log(variances[channels]) + spread, dtype=jnp.float32),
                logits=jnp.asarray(one_hot_logits(channels, self.num_components))
                if self.num_components
                else None,
            )

        posterior = st.builds(
            build,
            hnp.arrays(np.int64, (batch,), elements=st.integers(0, count - 1)),
            strategies.float_arrays((batch, latent_dim), -1.0, 1.0),
            strategies.float_arrays((batch, latent_dim), -3.0, 3.0),
        )
        return st.fixed_dictionaries(
            {"posterior": posterior, "seed": strategies.seeds(), "prior": st.just(TRAINED_LIKE)}
        )

    @cached_property
    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """``MOMENT_SAMPLES`` draws per channel from the trained-like prior's ``sample()``
        (``SAMPLE_KEYS`` keys), as NumPy arrays."""
        count = MOMENT_SAMPLES * max(self.num_components, 1) // SAMPLE_KEYS
        z, channels = sample_with_keys(self.trained, self.encoder, count, 5)
        return z.reshape(-1, z.shape[-1]).astype(np.float32), channels.reshape(-1)

    @cached_property
    def term_kinds(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(exact, monte_carlo)`` term names, told apart by their dependence on the key."""
        posterior = random_posterior(0, 3, self.settings.latent_dim, self.num_components)
        first, second = self.kl(posterior, 0), self.kl(posterior, 1)
        monte_carlo = tuple(name for name in first if not np.array_equal(first[name], second[name]))
        if self.settings.exact_kl_terms is not None:
            exact = tuple(self.settings.exact_kl_terms)
        else:
            ignoring = self.key_ignoring_terms
            exact = tuple(
                n for n in first if n.startswith("kl") and n not in monte_carlo + ignoring
            )
        return exact, monte_carlo

    @cached_property
    def key_ignoring_terms(self) -> tuple[str, ...]:
        """Terms that do not change with the key but do with the sample-count option:
        Monte-Carlo estimates that draw from something other than their ``key``."""
        option = self.settings.sample_count_option
        names = {field.name for field in dataclasses.fields(self.options)}
        if option not in names:
            return ()
        posterior = random_posterior(0, 3, self.settings.latent_dim, self.num_components)
        first, second = self.kl(posterior, 0), self.kl(posterior, 1)
        fixed = [name for name in first if np.array_equal(first[name], second[name])]
        count = getattr(self.options, option)
        try:
            other, encoder = self.rebuilt(**{option: count + 1})
        except ConformanceError:
            return ()
        # Eagerly: another sample count is another program to compile, while the eager
        # operations are those the eager checks run anyway.
        changed = self.kl(posterior, 0, other, encoder=encoder, jit=False)
        return tuple(
            name
            for name in fixed
            if name in changed and not np.allclose(changed[name], first[name], rtol=1e-6, atol=1e-7)
        )


@check(
    "prior",
    "attributes",
    "num_components is an int >= 0 (0: no channels, which cannot "
    "condition the decoder); log_weights() is a finite log-distribution over the K channels",
    hint="num_components taken from the wrong option, or log_weights() built from raw logits without log_softmax",
)
def _attributes(subject: PriorSubject) -> None:
    prior = subject.prior
    count = prior.num_components
    expect(
        isinstance(count, int) and not isinstance(count, bool) and count >= 0,
        f"num_components must be an int >= 0, got {count!r}",
    )
    expect(
        isinstance(prior.conditions_decoder, bool),
        f"conditions_decoder must be a bool, got {prior.conditions_decoder!r}",
    )
    expect(
        count > 0 or not prior.conditions_decoder,
        "a prior without channels (num_components == 0) cannot condition the decoder",
    )
    log_weights = np.asarray(prior.log_weights())
    expect(
        log_weights.shape == (count,),
        f"log_weights() has shape {log_weights.shape}, expected ({count},)",
    )
    if count:
        expect(np.all(np.isfinite(log_weights)), f"log_weights() is not finite: {log_weights}")
        total = float(jax.nn.logsumexp(log_weights))
        expect(abs(total) < 1e-5, f"exp(log_weights()) sums to {np.exp(total):.6g}, not 1")


@check(
    "prior",
    "signatures",
    "every AbstractPrior method (and channel_kl of an AbstractChannelPrior) accepts and "
    "returns what its jaxtyping-annotated protocol signature says (checked by beartype)",
    hint="a method returning the wrong rank or dtype ((B, 1) for (B,), integers for floats) or naming its parameters differently from the protocol",
)
def _signatures(subject: PriorSubject) -> None:
    prior, encoder = subject.prior, subject.encoder
    methods = {
        name: protocol_method(AbstractPrior, name, prior)
        for name in ("log_weights", "kl_terms", "sample", "regularisers", "parameter_scales")
    }
    if isinstance(prior, AbstractChannelPrior):
        methods["channel_kl"] = protocol_method(AbstractChannelPrior, "channel_kl", prior)

    def call_all(posterior: EncoderOutput, key: PRNGKeyArray) -> None:
        methods["log_weights"]()
        methods["kl_terms"](posterior, reparameterise(posterior, key), encoder=encoder, key=key)
        if "channel_kl" in methods:
            methods["channel_kl"](posterior, encoder=encoder, key=key)
        methods["sample"](5, encoder=encoder, key=key)
        methods["regularisers"]()
        methods["parameter_scales"]()

    def body(example: dict[str, Any]) -> None:
        # Shapes and dtypes are all a signature states: trace abstractly, compile nothing.
        eqx.filter_eval_shape(call_all, example["posterior"], jax.random.PRNGKey(example["seed"]))

    for_all(subject, subject.inputs(), body)


@check(
    "prior",
    "kl_terms_per_example_finite",
    "kl_terms returns a non-empty dict of finite float arrays of shape (B,), one value per "
    "example, on typical inputs and at the edges of the domain (means up to ±100, "
    "log-variances in [-20, 10], near one-hot and near-uniform responsibilities), with the "
    "prior's own K and, where its options allow, K = 2 and K = 64",
    hint="exp or log of raw values overflowing at large latents, extreme log-variances or peaked logits (use logsumexp, log_softmax); or a term summed over the batch",
)
def _kl_terms_finite(subject: PriorSubject) -> str:
    variants = subject.channel_variants

    def body(example: dict[str, Any]) -> None:
        prior, encoder = variants[example["num_components"]]
        if example["num_components"] == subject.num_components:
            prior = subject.variant(example)
        batch = example["posterior"].z_mean.shape[0]
        terms = subject.kl(example["posterior"], example["seed"], prior, encoder=encoder)
        expect(terms, "kl_terms returned no terms")
        for name, value in terms.items():
            expect(
                value.shape == (batch,),
                f"term {name!r} has shape {value.shape}, expected ({batch},)",
            )
            expect(
                np.issubdtype(value.dtype, np.floating), f"term {name!r} has dtype {value.dtype}"
            )
            expect(np.all(np.isfinite(value)), f"term {name!r} is not finite: {value}")

    strategy = st.sampled_from(tuple(variants)).flatmap(
        # Other K's at one batch size: each (K, B) compiles kl_terms once more.
        lambda count: subject.inputs(
            strategies.BATCH_SIZES if count == subject.num_components else (3,),
            extreme=True,
            num_components=count,
        ).map(lambda example: {"num_components": count, **example})
    )
    for_all(subject, strategy, body)
    return f"K in {sorted(variants)}, typical and extreme inputs"


@check(
    "prior",
    "exact_kl_nonnegative",
    "exact (analytic) KL terms are >= 0, on typical and extreme inputs and on posteriors "
    "close to a channel of the prior, where a wrong sign or scale shows",
    hint="a sign error in the log-variance ratio, or a dropped term of the Gaussian KL",
)
def _exact_kl_nonnegative(subject: PriorSubject) -> str:
    exact, _ = subject.term_kinds
    if not exact:
        raise NotApplicable("no exact KL terms")

    def body(example: dict[str, Any]) -> None:
        terms = subject.kl(example["posterior"], example["seed"], subject.variant(example))
        for name in exact:
            expect(
                np.all(terms[name] >= -1e-4), f"exact KL term {name!r} is negative: {terms[name]}"
            )

    for_all(subject, st.one_of(subject.near_prior(), subject.inputs(extreme=True)), body)
    return f"exact terms: {', '.join(exact)}"


def _channel_moments(subject: PriorSubject) -> tuple[list[int], np.ndarray, np.ndarray, str | None]:
    """Channels, means and variances of p(z|c) from samples; why no diagonal Gaussian q fits."""
    channels = max(subject.num_components, 1)
    z, c = subject.samples
    z = z.astype(np.float64)
    used: list[int] = []
    means: list[np.ndarray] = []
    variances: list[np.ndarray] = []
    for channel in range(channels):
        samples = z[c == channel]
        if len(samples) < MOMENT_SAMPLES // 4:
            continue
        mean, std = samples.mean(0), samples.std(0)
        standard = (samples - mean) / np.maximum(std, 1e-12)
        skew, excess_kurtosis = np.mean(standard**3, 0), np.mean(standard**4, 0) - 3.0
        correlation = np.corrcoef(samples, rowvar=False) if samples.shape[1] > 1 else np.eye(1)
        off_diagonal = np.abs(correlation - np.diag(np.diag(correlation))).max()
        if np.abs(skew).max() > 0.3 or np.abs(excess_kurtosis).max() > 0.6 or off_diagonal > 0.1:
            reason = (
                f"p(z|c={channel}) is not a diagonal Gaussian (skewness up to "
                f"{np.abs(skew).max():.2f}, excess kurtosis up to {np.abs(excess_kurtosis).max():.2f}, "
                f"correlation up to {off_diagonal:.2f}), so no q(z|x) equals it"
            )
            return used, np.zeros(0), np.zeros(0), reason
        used.append(channel)
        means.append(mean)
        variances.append(std**2)
    return used, np.asarray(means), np.asarray(variances), None


@check(
    "prior",
    "exact_kl_zero_at_prior",
    "exact KL terms are 0 when q equals p: kl_c at "
    "logits = log π, kl_z at q(z|x) = p(z|c) with one-hot q(c|x) (p(z|c)'s moments from sample())",
    hint="a missing or extra constant (the -1 or log 2π of a Gaussian KL), or sample() using other moments than the KL",
)
def _exact_kl_zero(subject: PriorSubject) -> str:
    exact, _ = subject.term_kinds
    notes = []
    latent_terms = [name for name in exact if name != "kl_c"]
    if "kl_c" in exact and subject.num_components:
        def body(example: dict[str, Any]) -> None:
            prior = subject.variant(example)
            shifted = np.asarray(prior.log_weights()) + example["shift"][:, None]
            posterior = dataclasses.replace(
                example["posterior"], logits=jnp.asarray(shifted, dtype=jnp.float32)
            )
            kl_c = subject.kl(posterior, example["seed"], prior)["kl_c"]
            expect_close(kl_c, np.zeros_like(kl_c), "kl_c at logits = log π + const", atol=1e-5)

        for_all(subject, _shifted(subject, 5.0), body)
        notes.append("kl_c")
    if latent_terms:
        channels, means, variances, reason = _channel_moments(subject)
        if reason is not None:
            notes.append(f"not {', '.join(latent_terms)}: {reason}")
        elif channels:
            logits = (
                jnp.asarray(one_hot_logits(np.asarray(channels), subject.num_components))
                if subject.num_components
                else None
            )
            posterior = EncoderOutput(
                z_mean=jnp.asarray(means, dtype=jnp.float32),
                z_log_var=jnp.asarray(np.log(variances), dtype=jnp.float32),
                logits=logits,
            )
            terms = subject.kl(posterior, 0, subject.trained)
            for name in latent_terms:
                # Moments from MOMENT_SAMPLES draws miss p by about D / MOMENT_SAMPLES nats.
                expect(
                    np.all(np.abs(terms[name]) < 0.02),
                    f"{name} = {terms[name]} at q(z|x) = p(z|c) for channels {channels} "
                    f"(means {np.round(means, 3).tolist()}, variances {np.round(variances, 3).tolist()})",
                )
            notes.append(", ".join(latent_terms))
    if not notes:
        raise NotApplicable("no exact KL terms")
    return "checked " + "; ".join(notes)


@check(
    "prior",
    "monte_carlo_kl_converges",
    "Monte-Carlo KL estimates converge to a "
    f"{MC_REFERENCE_SAMPLES}-sample reference: the error shrinks with the sample count "
    f"({MC_SAMPLE_COUNTS[0]} -> {MC_SAMPLE_COUNTS[1]}), the estimate is unbiased and the reference >= 0",
    hint="the estimate ignores its sample-count option, reuses one draw, or takes the log of a mean instead of the mean of logs",
)
def _monte_carlo_converges(subject: PriorSubject) -> str:
    _, monte_carlo = subject.term_kinds
    if not monte_carlo:
        raise NotApplicable("every KL term is deterministic")
    option = subject.settings.sample_count_option
    names = {field.name for field in dataclasses.fields(subject.options)}
    if option not in names:
        raise NotApplicable(
            f"Monte-Carlo terms {', '.join(monte_carlo)} but no option {option!r} sets the "
            "sample count (pass sample_count_option=...)"
        )
    priors = tuple(
        build_checked(
            "prior",
            subject.factory,
            dataclasses.replace(subject.options, **{option: count}),
            subject.context,
            subject.label,
        )
        for count in (*MC_SAMPLE_COUNTS, MC_REFERENCE_SAMPLES)
    )

    def body(example: dict[str, Any]) -> None:
        estimates_low, estimates_high, reference = _monte_carlo_estimates(
            priors, subject.encoder, example["posterior"], jax.random.PRNGKey(example["seed"])
        )
        for name in monte_carlo:
            target = np.asarray(reference[name])
            spread_low, spread_high = (
                np.asarray(estimates_low[name]),
                np.asarray(estimates_high[name]),
            )
            expect(
                np.all(np.isfinite(target)),
                f"{name} with {MC_REFERENCE_SAMPLES} samples is not finite",
            )
            error_low = float(np.sqrt(np.mean((spread_low - target) ** 2)))
            error_high = float(np.sqrt(np.mean((spread_high - target) ** 2)))
            tolerance = 1e-3 * (1.0 + float(np.mean(np.abs(target))))
            # The error of an unbiased estimate falls as 1/sqrt(S): 16x the samples, 1/4 the error.
            expect(
                error_high <= 0.5 * error_low + tolerance,
                f"{name}: RMS error {error_low:.4g} with {MC_SAMPLE_COUNTS[0]} samples and "
                f"{error_high:.4g} with {MC_SAMPLE_COUNTS[1]} (expected about a quarter) "
                f"against the {MC_REFERENCE_SAMPLES}-sample value {target}",
            )
            sd_high = spread_high.std(0)
            sd_reference = sd_high * np.sqrt(MC_SAMPLE_COUNTS[1] / MC_REFERENCE_SAMPLES)
            bias = spread_high.mean(0) - target
            allowed = 6.0 * (sd_high / np.sqrt(MC_REPEATS) + sd_reference) + tolerance
            expect(
                np.all(np.abs(bias) <= allowed),
                f"{name}: mean of {MC_REPEATS} estimates with {MC_SAMPLE_COUNTS[1]} samples "
                f"misses the reference {target} by {bias} (allowed {allowed})",
            )
            expect(
                np.all(target >= -4.0 * sd_reference - tolerance),
                f"{name}: the {MC_REFERENCE_SAMPLES}-sample estimate of a KL is negative: {target}",
            )

    for_all(subject, subject.inputs((3,)), body)
    return f"Monte-Carlo terms: {', '.join(monte_carlo)}"


@check(
    "prior",
    "per_example_independence",
    "each example's KL terms do not depend on the other members of the batch",
    hint="a mean or normalisation over the batch axis inside a per-example term",
)
def _per_example(subject: PriorSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        mask = example["mask"]
        others = random_posterior(
            example["others_seed"], len(mask), subject.settings.latent_dim, subject.num_components
        )
        mixed = mix_rows(mask, example["posterior"], others)
        prior = subject.variant(example)
        alone, together = (
            subject.kl(example["posterior"], example["seed"], prior),
            subject.kl(mixed, example["seed"], prior),
        )
        for name, value in alone.items():
            expect_close(together[name][mask], value[mask], f"term {name!r} of the kept rows")

    strategy = st.sampled_from((3, 8)).flatmap(
        lambda batch: st.fixed_dictionaries(
            {
                "posterior": strategies.posteriors(
                    batch, subject.settings.latent_dim, subject.num_components
                ),
                "others_seed": strategies.seeds(),
                "mask": strategies.row_masks(batch),
                "seed": strategies.seeds(),
                "prior": st.sampled_from((AS_BUILT, TRAINED_LIKE)),
            }
        )
    )
    for_all(subject, strategy, body)


@check(
    "prior",
    "jit_matches_eager",
    "kl_terms gives the same values under jit and eagerly",
    hint="Python control flow or NumPy on array values, computed once at trace time under jit",
)
def _jit_matches_eager(subject: PriorSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        prior = subject.variant(example)
        compiled = subject.kl(example["posterior"], example["seed"], prior)
        eager = subject.kl(example["posterior"], example["seed"], prior, jit=False)
        for name, value in compiled.items():
            expect_close(value, eager[name], f"term {name!r}", rtol=1e-4, atol=1e-4)

    for_all(subject, subject.inputs((3,)), body)


@check(
    "prior",
    "repeat_calls_identical",
    "two eager calls of kl_terms, and of sample(), with the same inputs and key give "
    "bit-identical results: all randomness comes from the key",
    hint="NumPy or Python randomness (or a global counter) inside a method; draw from the key argument",
)
def _repeat_calls(subject: PriorSubject) -> None:
    def body(example: dict[str, Any]) -> None:
        prior = subject.variant(example)
        first = subject.kl(example["posterior"], example["seed"], prior, jit=False)
        second = subject.kl(example["posterior"], example["seed"], prior, jit=False)
        expect_identical(first, second, "kl_terms")
        key = jax.random.PRNGKey(example["seed"])
        expect_identical(
            prior.sample(3, encoder=subject.encoder, key=key),
            prior.sample(3, encoder=subject.encoder, key=key),
            "sample",
        )

    for_all(subject, subject.inputs((3,)), body)


@check(
    "prior",
    "kl_invariant_to_logit_shift",
    "adding a constant to a row's logits (which leaves q(c|x) = softmax(logits) unchanged) "
    "leaves every KL term of that row unchanged",
    hint="raw logits used as log-probabilities; take log_softmax (or categorical_kl) of them",
)
def _logit_shift(subject: PriorSubject) -> None:
    if subject.num_components == 0:
        raise NotApplicable("no channels")

    def body(example: dict[str, Any]) -> None:
        posterior, seed = example["posterior"], example["seed"]
        shifted = dataclasses.replace(
            posterior, logits=posterior.logits + jnp.asarray(example["shift"])[:, None]
        )
        prior = subject.variant(example)
        before, after = subject.kl(posterior, seed, prior), subject.kl(shifted, seed, prior)
        for name, value in before.items():
            expect_close(
                after[name], value, f"term {name!r} after shifting the logits", rtol=1e-4, atol=1e-3
            )

    for_all(subject, _shifted(subject, 50.0), body)


def _relabels(
    subject: PriorSubject,
    permuted: AbstractPrior,
    posterior: EncoderOutput,
    permutation: np.ndarray,
    seed: int,
) -> bool:
    """Whether ``permuted`` is this prior with its channels relabelled by ``permutation``.

    Channel ``j`` of ``permuted`` must act as channel ``permutation[j]`` of the prior: same
    weight, and the same terms under a one-hot ``q(c|x)`` (row ``j`` of both batches, so a
    Monte-Carlo term sees the same noise).
    """
    count = subject.num_components
    log_weights = np.asarray(subject.trained.log_weights())
    if not np.allclose(np.asarray(permuted.log_weights()), log_weights[permutation], atol=1e-6):
        return False

    def one_hot_batch(channels: np.ndarray) -> EncoderOutput:
        return EncoderOutput(
            z_mean=jnp.repeat(posterior.z_mean[:1], count, axis=0),
            z_log_var=jnp.repeat(posterior.z_log_var[:1], count, axis=0),
            logits=jnp.asarray(one_hot_logits(channels, count)),
        )

    original = subject.kl(one_hot_batch(permutation), seed, subject.trained)
    relabelled = subject.kl(one_hot_batch(np.arange(count)), seed, permuted)
    return all(
        np.allclose(relabelled[name], original[name], rtol=1e-4, atol=1e-4) for name in original
    )


@check(
    "prior",
    "channel_permutation",
    "relabelling the channels (logits and the prior's "
    "channel-indexed parameters together) leaves every KL term unchanged; with uniform π, "
    "permuting the logits alone leaves kl_c unchanged",
    hint="channel parameters kept on an axis other than the leading one, or a term that treats one channel specially",
)
def _channel_permutation(subject: PriorSubject) -> str:
    count = subject.num_components
    if count < 2:
        raise NotApplicable("fewer than two channels")
    trained = subject.trained
    log_weights = np.asarray(trained.log_weights())
    uniform = bool(np.allclose(log_weights, log_weights[0], atol=1e-6))
    probe = random_posterior(0, 3, subject.settings.latent_dim, count)
    cycle = np.roll(np.arange(count), 1)
    relabels = _relabels(subject, permute_channels(trained, cycle), probe, cycle, 0)
    if not relabels and not uniform:
        raise NotApplicable(
            "π is not uniform and its channel parameters are not channel-indexed array fields"
        )

    def body(example: dict[str, Any]) -> None:
        posterior, permutation, seed = example["posterior"], example["permutation"], example["seed"]
        permuted_posterior = dataclasses.replace(posterior, logits=posterior.logits[:, permutation])
        before = subject.kl(posterior, seed, trained)
        if relabels:
            permuted = permute_channels(trained, permutation)
            after = subject.kl(permuted_posterior, seed, permuted)
            for name, value in before.items():
                expect_close(
                    after[name], value, f"term {name!r} after relabelling", rtol=1e-4, atol=1e-4
                )
        elif "kl_c" in before:
            after = subject.kl(permuted_posterior, seed, trained)
            expect_close(
                after["kl_c"],
                before["kl_c"],
                "kl_c after permuting the logits",
                rtol=1e-4,
                atol=1e-5,
            )

    fields: dict[str, st.SearchStrategy[Any]] = {
        "posterior": strategies.posteriors(3, subject.settings.latent_dim, count),
        "permutation": strategies.channel_permutations(count),
        "seed": strategies.seeds(),
    }
    for_all(subject, st.fixed_dictionaries(fields), body)
    if relabels:
        return "every term, with the channel-indexed fields permuted"
    return "kl_c only: the prior's channel parameters are not channel-indexed array fields"


@check(
    "prior",
    "samples_follow_prior",
    "sample(n) returns finite z of shape (n, D) and "
    "integer channels in [0, K) (all 0 without channels) drawn with frequencies π",
    hint="sample() drawing channels uniformly or from unnormalised weights instead of from π",
)
def _samples(subject: PriorSubject) -> None:
    count, latent_dim = subject.num_components, subject.settings.latent_dim
    z, channels = subject.samples
    draws = len(z)
    expect(
        z.shape == (draws, latent_dim), f"z has shape {z.shape}, expected ({draws}, {latent_dim})"
    )
    expect(np.issubdtype(z.dtype, np.floating) and np.all(np.isfinite(z)), "z is not finite floats")
    expect(channels.shape == (draws,), f"channels have shape {channels.shape}, expected ({draws},)")
    expect(np.issubdtype(channels.dtype, np.integer), f"channels have dtype {channels.dtype}")
    if count == 0:
        expect(np.all(channels == 0), "a prior without channels must return channel 0")
        return
    expect(np.all((channels >= 0) & (channels < count)), f"channels outside [0, {count})")
    weights = np.exp(np.asarray(subject.trained.log_weights(), dtype=np.float64))
    frequencies = np.bincount(channels, minlength=count) / draws
    spread = np.clip(weights, 0.0, 1.0)  # an unnormalised π is the attributes check's finding
    allowed = 5.0 * np.sqrt(spread * (1 - spread) / draws) + 1e-3
    expect(
        np.all(np.abs(frequencies - weights) <= allowed),
        f"channel frequencies {np.round(frequencies, 3)} do not match π = {np.round(weights, 3)}",
    )


def _implied_log_density(
    prior: AbstractPrior,
    encoder: AbstractEncoder,
    points: Float[Array, "G D"],
    key: PRNGKeyArray,
    names: tuple[str, ...],
) -> Float[Array, " G"]:
    """``log p(z)`` at ``points`` as the KL terms define it.

    For a narrow ``q = N(z, σ²I)`` with one-hot ``q(c|x)`` on channel ``c``, the KL terms
    sum to ``−H(q) − log p(z|c) − log π_c`` (up to ``O(σ²)``), so
    ``log p(z) = logsumexp_c(−Σ terms − H(q))``; without channels ``−Σ terms − H(q)``.
    """
    log_var = jnp.full_like(points, NARROW_LOG_VAR)
    entropy = 0.5 * jnp.sum(jnp.log(2 * jnp.pi * jnp.e) + log_var, axis=-1)
    count = prior.num_components

    def joint(logits: Float[Array, "G K"] | None) -> Float[Array, " G"]:
        posterior = EncoderOutput(z_mean=points, z_log_var=log_var, logits=logits)
        terms = prior.kl_terms(posterior, points, encoder=encoder, key=key)
        return -sum(terms[name] for name in names) - entropy

    if count == 0:
        return joint(None)
    one_hot = jnp.where(jnp.eye(count, dtype=bool), 0.0, ONE_HOT_LOGIT).astype(points.dtype)
    per_channel = jax.vmap(lambda row: joint(jnp.broadcast_to(row, (points.shape[0], count))))(
        one_hot
    )
    return jax.nn.logsumexp(per_channel, axis=0)


_implied_log_density_jit = eqx.filter_jit(_implied_log_density)


def _implied_score(
    prior: AbstractPrior,
    encoder: AbstractEncoder,
    points: Float[Array, "G D"],
    key: PRNGKeyArray,
    names: tuple[str, ...],
) -> Float[Array, "G D"]:
    """``∇_z log p(z)`` at ``points``, of the density the KL terms imply."""

    def total(z: Float[Array, "G D"]) -> Float[Array, ""]:
        return jnp.sum(_implied_log_density(prior, encoder, z, key, names))

    return jax.grad(total)(points)


_implied_score_jit = eqx.filter_jit(_implied_score)


def _stein_statistics(
    z: np.ndarray, score: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Stein's identity on random projections: for ``z ~ p`` and ``u = (v·z − m) / s``,
    ``E[(v·∇log p(z)) g(u) + |v|² g'(u) / s] = 0`` for bounded smooth ``g`` (here tanh
    and sin). Returns each statistic's mean and standard error, one per direction and
    function; bounded test functions keep them finite for heavy-tailed ``p`` too."""
    projected = z @ directions.T  # (N, J)
    slopes = score @ directions.T
    centre = np.median(projected, axis=0)
    quartiles = np.percentile(projected, [25, 75], axis=0)
    width = np.maximum(quartiles[1] - quartiles[0], 1e-6)
    u = (projected - centre) / width
    norms = np.sum(directions**2, axis=1)
    tanh = np.tanh(u)
    values = np.concatenate(
        [
            slopes * tanh + norms * (1.0 - tanh**2) / width,
            slopes * np.sin(u) + norms * np.cos(u) / width,
        ],
        axis=1,
    )
    return values.mean(0), values.std(0) / np.sqrt(len(z))


@check(
    "prior",
    "samples_match_kl_density",
    "sample() draws from the distribution the KL terms assume, for each of several keys and "
    "for the prior as trained (parameters moved): in two latent dimensions the density "
    "log p(z) implied by the KL terms at narrow posteriors gives the central box of the "
    "draws their share of the mass and each cell of it the draws' counts (a chi-square "
    "test); in the full latent dimension its score satisfies Stein's identity on the draws "
    "along random projections",
    hint="sample() scaling by the variance instead of the standard deviation, ignoring the "
    "channel's parameters, or drawing independent coordinates where the density couples them; "
    "or a missing normalising constant in the KL",
)
def _samples_match_density(subject: PriorSubject) -> str:
    names = {field.name for field in dataclasses.fields(subject.options)}
    exact, monte_carlo = subject.term_kinds
    changes = {}
    if monte_carlo and subject.settings.sample_count_option in names:
        changes[subject.settings.sample_count_option] = DENSITY_MC_SAMPLES
    terms = tuple(dict.fromkeys((*exact, *monte_carlo)))
    settings = dataclasses.replace(subject.settings, latent_dim=DENSITY_LATENT_DIM)
    try:
        prior, encoder = subject.rebuilt(settings, **changes)
    except ConformanceError as error:
        raise NotApplicable(
            f"cannot be built with latent_dim {DENSITY_LATENT_DIM}: {error.detail}"
        ) from None
    note = _density_in_two_dimensions(subject, trained_like(prior), encoder, terms)
    # The moments' draws and the score, from the trained-like prior. Its own sample count
    # does: at a narrow posterior a Monte-Carlo term's noise moves log q, not ∇ log p.
    worst = _stein_in_full_dimension(subject, subject.trained, terms)
    return f"{note}; Stein statistics within {worst:.1f} standard errors"


def _draws(
    prior: AbstractPrior, encoder: AbstractEncoder, count: int, seed: int
) -> list[np.ndarray]:
    """``count`` draws of ``sample()`` for each of ``SAMPLE_KEYS`` keys."""
    z, _ = sample_with_keys(prior, encoder, count, seed)
    for index, draws in enumerate(z):
        expect(np.all(np.isfinite(draws)), f"sample() returned non-finite z (key {seed + index})")
    return list(z)


def _density_in_two_dimensions(
    subject: PriorSubject, prior: AbstractPrior, encoder: AbstractEncoder, terms: tuple[str, ...]
) -> str:
    draws = _draws(prior, encoder, DENSITY_SAMPLES // SAMPLE_KEYS, 11)
    pooled = np.concatenate(draws)
    # The central box holds most of the draws; its size does not depend on the tails.
    low, high = np.percentile(pooled, DENSITY_BOX_PERCENT, axis=0), np.percentile(
        pooled, 100 - DENSITY_BOX_PERCENT, axis=0
    )
    margin = 0.05 * (high - low)
    low, high = low - margin, high + margin
    cells = DENSITY_GRID_POINTS[subject.settings.profile]
    edges = [np.linspace(low[d], high[d], cells + 1) for d in range(DENSITY_LATENT_DIM)]
    centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
    grid = np.stack(np.meshgrid(*centres, indexing="ij"), axis=-1).reshape(-1, DENSITY_LATENT_DIM)
    log_p = np.asarray(
        _implied_log_density_jit(
            prior, encoder, jnp.asarray(grid, dtype=jnp.float32), jax.random.PRNGKey(12), terms
        ),
        dtype=np.float64,
    )
    expect(np.all(np.isfinite(log_p)), "the density implied by the KL terms is not finite")
    cell = np.prod([e[1] - e[0] for e in edges])
    mass = (np.exp(log_p) * cell).reshape(cells, cells)
    inside = np.all((pooled >= low) & (pooled <= high), axis=1).mean()
    total = float(mass.sum())
    allowed = DENSITY_MASS_TOLERANCE + 5 * np.sqrt(inside * (1 - inside) / len(pooled))
    expect(
        abs(total - inside) <= allowed,
        f"the density implied by the KL terms ({' + '.join(terms)}) puts mass {total:.4f} on "
        f"the central box [{np.round(low, 3).tolist()}, {np.round(high, 3).tolist()}], where "
        f"{inside:.4f} of {len(pooled)} draws of sample() fall",
    )
    # Coarse cells of DENSITY_CELL_BLOCK x DENSITY_CELL_BLOCK grid cells, a chi-square test
    # per key.
    block = DENSITY_CELL_BLOCK[subject.settings.profile]
    coarse = mass.reshape(cells // block, block, cells // block, block).sum(axis=(1, 3))
    coarse_edges = [e[::block] for e in edges]
    worst = 1.0
    for index, z in enumerate(draws):
        observed, _, _ = np.histogram2d(z[:, 0], z[:, 1], bins=coarse_edges)
        # The shape within the box is tested here, its mass above: a Monte-Carlo term's
        # noise makes the implied density's mass a few per cent high (Jensen), evenly.
        expected = coarse / total * observed.sum()
        used = expected >= 5
        statistic = float(np.sum((observed[used] - expected[used]) ** 2 / expected[used]))
        p_value = float(scipy.stats.chi2.sf(statistic, int(used.sum()) - 1))
        worst = min(worst, p_value)
        expect(
            p_value >= DENSITY_P_VALUE,
            f"draws of sample() with key {11 + index} do not follow the density the KL terms "
            f"imply: chi-square {statistic:.1f} over {int(used.sum())} cells of the central box "
            f"(p = {p_value:.2g}); largest excess {_largest_excess(observed, expected)}",
        )
    return f"box mass {total:.3f} (draws {inside:.3f}), chi-square p >= {worst:.2g}"


def _largest_excess(observed: np.ndarray, expected: np.ndarray) -> str:
    deviation = np.where(expected >= 5, (observed - expected) / np.sqrt(np.maximum(expected, 1)), 0)
    index = np.unravel_index(np.argmax(np.abs(deviation)), deviation.shape)
    return (
        f"{int(observed[index])} draws where {expected[index]:.1f} are expected "
        f"(cell {tuple(int(i) for i in index)})"
    )


def _stein_in_full_dimension(
    subject: PriorSubject, prior: AbstractPrior, terms: tuple[str, ...]
) -> float:
    latent_dim = subject.settings.latent_dim
    directions = np.random.default_rng(13).normal(size=(STEIN_DIRECTIONS, latent_dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    z_all, _ = subject.samples
    per_key = len(z_all) // SAMPLE_KEYS
    used = min(per_key, STEIN_SAMPLES // SAMPLE_KEYS)
    draws = z_all.reshape(SAMPLE_KEYS, per_key, latent_dim)[:, :used].astype(np.float64)
    score = np.asarray(
        _implied_score_jit(
            prior,
            subject.encoder,
            jnp.asarray(draws.reshape(-1, latent_dim), dtype=jnp.float32),
            jax.random.PRNGKey(22),
            terms,
        ),
        dtype=np.float64,
    ).reshape(draws.shape)
    expect(np.all(np.isfinite(score)), "the gradient of the implied log-density is not finite")
    worst = 0.0
    for index in range(SAMPLE_KEYS):
        means, errors = _stein_statistics(draws[index], score[index], directions)
        ratios = np.abs(means) / np.maximum(errors, 1e-12)
        worst = max(worst, float(ratios.max()))
        expect(
            np.all(ratios <= STEIN_THRESHOLD),
            f"draws of sample() with key {5 + index} in {latent_dim} dimensions break Stein's "
            f"identity for the density the KL terms imply: along {STEIN_DIRECTIONS} random "
            f"directions (tanh and sin test functions) the statistics are "
            f"{np.round(ratios, 1).tolist()} standard errors from 0 (at most {STEIN_THRESHOLD})",
        )
    return worst


@check(
    "prior",
    "regularisers_finite",
    "regularisers() returns finite float scalars by name",
    hint="a penalty left as a vector instead of summed to a scalar, or the log of a parameter that reached 0",
)
def _regularisers(subject: PriorSubject) -> None:
    penalties = subject.prior.regularisers()
    expect(isinstance(penalties, dict), f"regularisers() returned {type(penalties).__name__}")
    for name, value in penalties.items():
        value = np.asarray(value)
        expect(value.shape == (), f"regulariser {name!r} has shape {value.shape}, expected ()")
        expect(np.isfinite(value), f"regulariser {name!r} is not finite: {value}")


@check(
    "prior",
    "parameter_scales_valid",
    "parameter_scales() maps field names of the prior "
    "that hold trainable arrays to finite scales >= 0",
    hint="a misspelt field name, or a scale for a static field",
)
def _scales_valid(subject: PriorSubject) -> None:
    scales = subject.prior.parameter_scales()
    expect(isinstance(scales, dict), f"parameter_scales() returned {type(scales).__name__}")
    fields = {field.name for field in dataclasses.fields(subject.prior)}
    for name, scale in scales.items():
        expect(
            name in fields,
            f"{name!r} is not a field of {type(subject.prior).__name__} (fields: {sorted(fields)})",
        )
        expect(
            isinstance(scale, float) and np.isfinite(scale) and scale >= 0.0,
            f"scale of {name!r} must be a finite float >= 0, got {scale!r}",
        )
        leaves = jax.tree.leaves(eqx.filter(getattr(subject.prior, name), eqx.is_inexact_array))
        expect(
            leaves,
            f"field {name!r} holds no trainable (inexact) array, so a scale cannot act on it",
        )


@check(
    "prior",
    "options_honoured",
    "options with a known meaning do what they say: num_components = K builds K channels; "
    "an option named *lr_scale set to s gives parameter_scales() entries proportional to s; "
    "learn_pi = False gives every field that moves π a scale of 0, learn_pi = True does not",
    hint="the factory ignores an option (a hard-coded K, a learning-rate scale never passed "
    "to the prior)",
)
def _options_honoured(subject: PriorSubject) -> str:
    options = subject.options
    names = [field.name for field in dataclasses.fields(options)]
    checked = []
    if "num_components" in names:
        wanted = options.num_components
        expect(
            subject.prior.num_components == wanted,
            f"option num_components = {wanted} built a prior with {subject.prior.num_components}",
        )
        other = wanted + 1
        try:
            prior, _ = subject.rebuilt(num_components=other)
        except ConformanceError:
            prior = None  # the options refuse K + 1
        if prior is not None:
            expect(
                prior.num_components == other and np.shape(prior.log_weights()) == (other,),
                f"option num_components = {other} built a prior with {prior.num_components} "
                f"channels and log_weights() of shape {np.shape(prior.log_weights())}",
            )
        checked.append("num_components")
    base = subject.prior.parameter_scales()
    for name in (n for n in names if n.endswith("lr_scale")):
        value = getattr(options, name)
        prior, _ = subject.rebuilt(**{name: PROBE_SCALE})
        scales = prior.parameter_scales()
        changed = {field: scale for field, scale in scales.items() if base.get(field) != scale}
        if value == PROBE_SCALE:
            continue
        expect(
            changed,
            f"option {name} = {PROBE_SCALE} (default {value}) changes no entry of "
            f"parameter_scales() {scales}",
        )
        for field, scale in changed.items():
            expected = PROBE_SCALE * (base.get(field, 1.0) / value) if value else PROBE_SCALE
            expect(
                abs(scale - expected) <= 1e-6 * max(1.0, abs(expected)),
                f"option {name} = {PROBE_SCALE} gives field {field!r} the scale {scale}, "
                f"expected {expected:.6g}",
            )
        checked.append(name)
    if "learn_pi" in names and subject.num_components > 1:
        for learn in (False, True):
            prior, _ = subject.rebuilt(learn_pi=learn)
            moving = _fields_moving_pi(prior)
            scales = prior.parameter_scales()
            frozen = [field for field in moving if scales.get(field, 1.0) == 0.0]
            if learn:
                expect(
                    moving and len(frozen) < len(moving),
                    f"learn_pi = True but no field that π depends on can move (fields "
                    f"{moving}, scales {scales})",
                )
            else:
                expect(
                    len(frozen) == len(moving),
                    f"learn_pi = False but fields {sorted(set(moving) - set(frozen))} move π "
                    f"and their scale is not 0 (scales {scales})",
                )
        checked.append("learn_pi")
    if not checked:
        raise NotApplicable("no options with a known meaning (num_components, *lr_scale, learn_pi)")
    return f"checked {', '.join(checked)}"


def _fields_moving_pi(prior: AbstractPrior) -> list[str]:
    """Fields of the prior whose arrays change ``log π`` (a nonzero gradient)."""
    count = prior.num_components
    weights = jnp.arange(1, count + 1, dtype=jnp.float32)

    def total(module: AbstractPrior) -> Float[Array, ""]:
        return jnp.sum(weights * module.log_weights())

    gradient = eqx.filter_grad(total)(prior)
    moving = []
    for field in dataclasses.fields(prior):
        leaves = jax.tree.leaves(eqx.filter(getattr(gradient, field.name, None), eqx.is_array))
        if any(np.any(np.asarray(leaf) != 0) for leaf in leaves):
            moving.append(field.name)
    return moving


@check(
    "prior",
    "parameter_scales_honoured",
    "after one optimiser step through make_optimizer (the prior alone on its KL terms; "
    "in the thorough profile a small model's train_step), a field "
    "with scale 0 is bitwise unchanged and a field with scale s moves s times the unscaled Adam update",
    hint="a parameter held twice (a copy outside the named field) or rescaled inside the prior",
)
def _scales_honoured(subject: PriorSubject) -> str:
    model = subject.tiny.model
    scales = model.prior.parameter_scales()
    if not scales:
        raise NotApplicable("declares no parameter scales")
    gradients, updated = subject.step.gradients, subject.step.model
    rate = subject.tiny.train.learning_rate
    still = []
    for name, scale in scales.items():
        before = jax.tree.leaves(eqx.filter(getattr(model.prior, name), eqx.is_inexact_array))
        after = jax.tree.leaves(eqx.filter(getattr(updated.prior, name), eqx.is_inexact_array))
        # Adam's first step from zero moments, bias-corrected: −lr · g / (|g| + ε).
        reference = [
            -rate * np.asarray(g) / (np.abs(np.asarray(g)) + ADAM_EPS)
            for g in jax.tree.leaves(getattr(gradients.prior, name))
        ]
        grads = jax.tree.leaves(getattr(gradients.prior, name))
        if not any(np.any(np.asarray(g) != 0) for g in grads):
            still.append(name)
        for old, new, step in zip(before, after, reference, strict=True):
            old, new = np.asarray(old), np.asarray(new)
            if scale == 0.0:
                expect(
                    np.array_equal(old, new),
                    f"field {name!r} has scale 0.0 but moved by up to {np.abs(new - old).max():.3g}",
                )
            else:
                expect_close(
                    new - old,
                    scale * np.asarray(step),
                    f"update of field {name!r} (scale {scale}) vs {scale} x unscaled Adam update",
                    rtol=1e-3,
                    atol=1e-6,
                )
    return f"no gradient reached {', '.join(still)}" if still else ""


@check(
    "prior",
    "fixed_weights_stay_fixed",
    "a non-learnable π gets exactly zero update in a "
    "full optimiser step (make_optimizer + train_step)",
    hint="π's field missing from parameter_scales() (give it 0.0 unless π is learned)",
)
def _fixed_weights(subject: PriorSubject) -> None:
    if subject.num_components == 0:
        raise NotApplicable("no channels")
    fixed = subject.settings.fixed_weights
    if fixed is None:
        fixed = not getattr(subject.options, "learn_pi", False)
    if not fixed:
        raise NotApplicable("π is learnable with these options")
    updated = subject.step.model
    before = np.asarray(subject.tiny.model.prior.log_weights())
    after = np.asarray(updated.prior.log_weights())
    expect(
        np.array_equal(before, after),
        f"log π moved by up to {np.abs(after - before).max():.3g} in one optimiser step although π "
        "is fixed (give its field scale 0.0 in parameter_scales())",
    )


@check(
    "prior",
    "trains_one_step",
    "in a small model, one train step gives finite metrics and finite parameters",
    hint="a gradient that is NaN where the value is finite (sqrt or log at 0, jnp.where with an unsafe branch)",
)
def _trains(subject: PriorSubject) -> None:
    expect_finite_step(subject)
