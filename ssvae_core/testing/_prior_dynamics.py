"""Conformance checks of a prior as training uses it: gradients, Monte-Carlo draws, options.

Training follows the gradients of the KL terms, so a term whose values are right but whose
gradient is not (a draw behind ``stop_gradient``) trains the wrong model without a visible
symptom. These checks compare autodiff gradients with finite differences, Monte-Carlo
estimates with a reparameterised reference the kit computes itself, and require every
option to change something observable.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ssvae_core.modelling.protocols import AbstractEncoder, AbstractPrior
from ssvae_core.modelling.types import EncoderOutput
from ssvae_core.testing._priors import (
    NARROW_LOG_VAR,
    PriorSubject,
    one_hot_logits,
    sampled_kl_terms,
    trained_like,
)
from ssvae_core.testing._runner import ConformanceError, NotApplicable, Violation, check, expect
from ssvae_core.testing._subjects import random_posterior

# Finite differences: a central step along a unit direction of each group of inputs.
GRADIENT_STEP = 1e-2
GRADIENT_RTOL = 0.05
GRADIENT_ATOL = 2e-3
# Monte-Carlo terms against the kit's reparameterised reference E_q[log q − log p].
REFERENCE_DRAWS = 1024
REFERENCE_KEYS = 64
# The posterior's log-variances there: away from 0, where σ and σ² would coincide.
REFERENCE_LOG_VARS = (-1.5, 1.0)
REFERENCE_STANDARD_ERRORS = 6.0


def _trainable_spec(posterior: EncoderOutput, prior: AbstractPrior) -> Any:
    """Which leaves of ``(posterior, prior)`` are differentiated: the posterior's arrays
    and the prior's inexact arrays in fields whose scale is not 0."""
    spec = jax.tree.map(eqx.is_inexact_array, (posterior, prior))
    scales = prior.parameter_scales()
    for name, scale in scales.items():
        if scale == 0.0 and jax.tree.leaves(getattr(prior, name, None)):
            spec = eqx.tree_at(
                lambda tree, name=name: getattr(tree[1], name),
                spec,
                replace=jax.tree.map(lambda _: False, getattr(spec[1], name)),
            )
    return spec


def _term_sums(
    trainable: Any, frozen: Any, encoder: AbstractEncoder, key: PRNGKeyArray
) -> dict[str, Float[Array, ""]]:
    posterior, prior = eqx.combine(trainable, frozen)
    return {name: jnp.sum(value) for name, value in sampled_kl_terms(prior, encoder, posterior, key).items()}


_term_gradients_jit = eqx.filter_jit(jax.jacrev(_term_sums))


def _sums_at(
    subject: PriorSubject, trainable: Any, frozen: Any, seed: int
) -> dict[str, float]:
    """Each term summed over the batch, through the subject's compiled ``kl_terms``."""
    posterior, prior = eqx.combine(trainable, frozen)
    return {name: float(np.sum(value)) for name, value in subject.kl(posterior, seed, prior).items()}


def _along(trainable: Any, direction: Any, step: float) -> Any:
    return jax.tree.map(lambda leaf, move: leaf + step * move, trainable, direction)


def _dot(gradient: Any, direction: Any) -> float:
    return float(
        sum(
            float(jnp.sum(g * d))
            for g, d in zip(jax.tree.leaves(gradient), jax.tree.leaves(direction), strict=True)
        )
    )


_KL_GRADIENTS = (
    "kl_gradients",
    "the gradient of every KL term with respect to the posterior (mean, log-variance, "
    "logits) and to each trainable field of the prior, as built and trained-like, matches "
    "central finite differences (for a Monte-Carlo term, with the same key, so the draws "
    "move with the posterior as reparameterised draws do); a Monte-Carlo term averages to "
    "the kit's reparameterised reference E_q[log q(z) − log p(z)], with p the density the KL "
    "terms imply",
    "a Monte-Carlo draw that is not reparameterised (stop_gradient on it) or drawn with "
    "the variance as its scale; a custom gradient or a non-differentiable step in a term",
)


def _kl_gradients(subject: PriorSubject) -> str:
    _, monte_carlo = subject.term_kinds
    checked = 0
    for label, prior in (("as built", subject.prior), ("trained-like", subject.trained)):
        posterior = random_posterior(
            23, 3, subject.settings.latent_dim, subject.num_components
        )
        spec = _trainable_spec(posterior, prior)
        trainable, frozen = eqx.partition((posterior, prior), spec)
        values = _sums_at(subject, trainable, frozen, 24)
        gradients = _term_gradients_jit(trainable, frozen, subject.encoder, jax.random.PRNGKey(24))
        for group, direction in _directions(trainable).items():
            plus = _sums_at(subject, _along(trainable, direction, GRADIENT_STEP), frozen, 24)
            minus = _sums_at(subject, _along(trainable, direction, -GRADIENT_STEP), frozen, 24)
            for name, value in values.items():
                autodiff = _dot(gradients[name], direction)
                finite = (plus[name] - minus[name]) / (2 * GRADIENT_STEP)
                allowed = GRADIENT_RTOL * max(abs(autodiff), abs(finite)) + GRADIENT_ATOL * (
                    1.0 + abs(value)
                )
                if abs(autodiff - finite) <= allowed:
                    checked += 1
                    continue
                if name in monte_carlo:
                    cause = (
                        "the Monte-Carlo draws do not carry the gradient (a draw that is not "
                        "reparameterised: stop_gradient on it, or drawn outside the posterior's "
                        "parameters), so training follows a wrong gradient"
                    )
                else:
                    cause = "the term's gradient is not the derivative of its value"
                raise Violation(
                    f"gradient of term {name!r} ({label} prior) along {group}: autodiff gives "
                    f"{autodiff:.5g}, finite differences{' with the same key' if name in monte_carlo else ''} "
                    f"{finite:.5g}: {cause}"
                )
    note = f"{checked} directional derivatives"
    if monte_carlo:
        note += "; " + _monte_carlo_reference(subject, monte_carlo)
    return note


def _directions(trainable: Any) -> dict[str, Any]:
    """A random unit direction within each group of inputs (zero elsewhere): the
    posterior's mean, log-variance and logits, and each trainable field of the prior."""
    posterior, prior = trainable
    rng = np.random.default_rng(17)
    names = [("posterior", name) for name in ("z_mean", "z_log_var", "logits")]
    names += [("prior", field.name) for field in dataclasses.fields(prior)]
    directions = {}
    for owner, name in names:
        index = 0 if owner == "posterior" else 1
        value = getattr(trainable[index], name, None)
        if not jax.tree.leaves(eqx.filter(value, eqx.is_inexact_array)):
            continue
        noise = jax.tree.map(lambda leaf: rng.normal(size=leaf.shape), value)
        norm = float(np.sqrt(sum(np.sum(leaf**2) for leaf in jax.tree.leaves(noise))))
        if norm == 0:
            continue
        direction = jax.tree.map(jnp.zeros_like, trainable)
        direction = eqx.tree_at(
            lambda tree, index=index, name=name: getattr(tree[index], name),
            direction,
            jax.tree.map(
                lambda leaf, model, norm=norm: jnp.asarray(leaf / norm, model.dtype), noise, value
            ),
        )
        group = f"the posterior's {name}" if owner == "posterior" else f"the prior's field {name!r}"
        directions[group] = direction
    del posterior
    return directions


def _reference_totals(
    prior: AbstractPrior,
    encoder: AbstractEncoder,
    posterior: EncoderOutput,
    key: PRNGKeyArray,
    names: tuple[str, ...],
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    """The kit's estimate of ``Σ terms`` at a posterior with one-hot ``q(c|x)``, and its
    standard error.

    With ``T(q) = Σ terms = KL(q(z|x) || p(z|c)) − log π_c`` and, at a narrow
    ``q = N(z, σ²I)``, ``T = −H − log p(z|c) − log π_c``: ``T(q) = E_q[log q(z) + T(δ_z) +
    H]`` over reparameterised draws ``z ~ q(z|x)`` the kit makes itself.
    """
    draw_key, term_key = jax.random.split(key)
    batch, latent_dim = posterior.z_mean.shape
    std = jnp.exp(0.5 * posterior.z_log_var)
    z = posterior.z_mean + std * jax.random.normal(draw_key, (REFERENCE_DRAWS, batch, latent_dim))
    log_q = -0.5 * jnp.sum(
        jnp.log(2 * jnp.pi) + posterior.z_log_var + ((z - posterior.z_mean) / std) ** 2, axis=-1
    )
    flat = z.reshape(-1, latent_dim)
    log_var = jnp.full_like(flat, NARROW_LOG_VAR)
    logits = (
        None
        if posterior.logits is None
        else jnp.broadcast_to(posterior.logits, (REFERENCE_DRAWS, *posterior.logits.shape)).reshape(
            -1, posterior.logits.shape[-1]
        )
    )
    narrow = EncoderOutput(z_mean=flat, z_log_var=log_var, logits=logits)
    terms = prior.kl_terms(narrow, flat, encoder=encoder, key=term_key)
    entropy = 0.5 * latent_dim * (jnp.log(2 * jnp.pi * jnp.e) + NARROW_LOG_VAR)
    at_points = sum(terms[name] for name in names).reshape(REFERENCE_DRAWS, batch) + entropy
    values = log_q + at_points
    return jnp.mean(values, axis=0), jnp.std(values, axis=0) / np.sqrt(REFERENCE_DRAWS)


_reference_totals_jit = eqx.filter_jit(_reference_totals)


def _monte_carlo_reference(subject: PriorSubject, monte_carlo: tuple[str, ...]) -> str:
    prior, encoder = subject.prior, subject.encoder
    count, latent_dim = subject.num_components, subject.settings.latent_dim
    batch = 3
    means = np.random.default_rng(25).uniform(-1.0, 1.0, (batch, latent_dim))
    log_vars = np.resize(np.asarray(REFERENCE_LOG_VARS), latent_dim)
    posterior = EncoderOutput(
        z_mean=jnp.asarray(means, dtype=jnp.float32),
        z_log_var=jnp.asarray(np.broadcast_to(log_vars, (batch, latent_dim)), dtype=jnp.float32),
        logits=jnp.asarray(one_hot_logits(np.arange(batch) % count, count)) if count else None,
    )
    # The prior's own estimate with many keys (its compiled kl_terms, no new program).
    estimates = [subject.kl(posterior, 100 + index) for index in range(REFERENCE_KEYS)]
    terms = tuple(estimates[0])
    totals = np.stack([sum(e[name].astype(np.float64) for name in terms) for e in estimates])
    estimate = totals.mean(0)
    spread = totals.std(0) / np.sqrt(REFERENCE_KEYS)
    reference, error = (
        np.asarray(value, dtype=np.float64)
        for value in _reference_totals_jit(
            prior, encoder, posterior, jax.random.PRNGKey(27), terms
        )
    )
    allowed = REFERENCE_STANDARD_ERRORS * np.sqrt(spread**2 + error**2) + 1e-2 * (
        1 + np.abs(reference)
    )
    expect(
        np.all(np.abs(estimate - reference) <= allowed),
        f"the KL terms ({' + '.join(terms)}, Monte-Carlo: {', '.join(monte_carlo)}) average "
        f"{np.round(estimate, 4).tolist()} over {REFERENCE_KEYS} keys at posteriors with "
        f"log-variances {list(REFERENCE_LOG_VARS)}, but the reparameterised reference "
        f"E_q[log q(z) − log p(z)] is {np.round(reference, 4).tolist()} (allowed difference "
        f"{np.round(allowed, 4).tolist()}): the draws do not follow q(z|x) — a scale of "
        "exp(log_var) (the variance) where exp(log_var / 2) (the standard deviation) belongs?",
    )
    return f"Monte-Carlo estimate within {np.abs(estimate - reference).max():.3g} of the reference"


# --- Every option has an effect -----------------------------------------------------------


def _candidates(field: dataclasses.Field[Any], value: Any, annotation: Any) -> list[Any]:
    """Other values of an option within its declared range or choices."""
    metadata = field.metadata
    choices = metadata.get("choices")
    if choices:
        return [choice for choice in choices if choice != value]
    if isinstance(value, bool):
        return [not value]
    low, high = metadata.get("minimum"), metadata.get("maximum")
    exclusive = metadata.get("exclusive_minimum", False)

    def allowed(candidate: float) -> bool:
        if low is not None and (candidate < low or (exclusive and candidate == low)):
            return False
        return high is None or candidate <= high

    if isinstance(value, int):
        return [c for c in (value + 1, value - 1, value * 2) if c != value and allowed(c)][:1]
    if isinstance(value, float):
        options = (value * 1.5 + 0.25, value * 0.5, value + 0.5, value - 0.5)
        return [c for c in options if c != value and allowed(c)][:1]
    if isinstance(value, tuple) and value and isinstance(value[0], (int, float)):
        return [(value[0] + 1, *value[1:])]
    del annotation
    return []


class _Observation:
    """What a change of option can show, computed stage by stage as comparisons need it:
    the prior's arrays, π, scales and regularisers; the KL terms at a fixed posterior and
    key; draws of ``sample()``."""

    def __init__(self, subject: PriorSubject, prior: AbstractPrior, encoder: AbstractEncoder):
        # The KL terms and draws of the trained-like prior: an option can act only on
        # parameters away from their initial values (a spline's interval, say).
        self.subject, self.prior, self.encoder = subject, prior, encoder
        self.trained = trained_like(prior)
        self._stages: dict[int, list[np.ndarray]] = {}

    def stage(self, index: int) -> list[np.ndarray]:
        if index not in self._stages:
            self._stages[index] = self._compute(index)
        return self._stages[index]

    def _compute(self, index: int) -> list[np.ndarray]:
        prior, key = self.prior, jax.random.PRNGKey(30)
        if index == 0:
            arrays = [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(prior, eqx.is_array))]
            scales = sorted(prior.parameter_scales().items())
            penalties = sorted(prior.regularisers().items())
            return [
                *arrays,
                np.asarray(prior.log_weights()),
                np.asarray([repr(scales)], dtype=object),
                *(np.asarray(value) for _, value in penalties),
            ]
        if index == 1:
            latent_dim = self.subject.settings.latent_dim
            posterior = random_posterior(29, 3, latent_dim, prior.num_components)
            # Eagerly: each option's static values would compile a program of their own,
            # while eager operations reuse those compiled for the other checks' batches.
            terms = self.subject.kl(posterior, 30, self.trained, encoder=self.encoder, jit=False)
            return [np.asarray(terms[name]) for name in sorted(terms)]
        z, channels = self.trained.sample(3, encoder=self.encoder, key=key)
        return [np.asarray(z), np.asarray(channels)]


STAGES = 3


def _observe(subject: PriorSubject, options: Any) -> _Observation | None:
    """The prior built with ``options``; ``None`` when they cannot be built."""
    try:
        prior, encoder = subject.rebuilt(**_diff(subject.options, options))
    except ConformanceError:
        return None
    return _Observation(subject, prior, encoder)


def _diff(base: Any, options: Any) -> dict[str, Any]:
    return {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(options)
        if getattr(options, field.name) != getattr(base, field.name)
    }


def _same(first: _Observation, second: _Observation) -> bool:
    for index in range(STAGES):
        if not _same_arrays(first.stage(index), second.stage(index)):
            return False
    return True


def _same_arrays(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    if len(first) != len(second):
        return False
    for a, b in zip(first, second, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype == object:
            if a.tolist() != b.tolist():
                return False
        elif not np.allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True):
            return False
    return True


_EVERY_OPTION = (
    "every_option_has_an_effect",
    "each option of the options class, changed to another allowed value, changes something "
    "observable — the prior's arrays, π, parameter_scales(), regularisers(), the KL terms at a "
    "fixed posterior and key, or draws of sample() — alone or together with a change of one "
    "switch (an option with choices, or a bool: a sample count acts only with a Monte-Carlo "
    "estimator); options named in inert_options are exempt",
    "an option parsed but never passed to the prior, or stored on it and never used",
)


def _every_option(subject: PriorSubject) -> str:
    options = subject.options
    hints = typing.get_type_hints(type(options))
    fields = [f for f in dataclasses.fields(options) if f.name not in subject.settings.inert_options]
    if not fields:
        raise NotApplicable("no options (or all declared inert)")
    changes: dict[str, Any] = {}
    skipped = []
    for field in fields:
        candidates = _candidates(field, getattr(options, field.name), hints.get(field.name))
        if candidates:
            changes[field.name] = candidates[0]
        else:
            skipped.append(field.name)
    base = _Observation(subject, subject.prior, subject.encoder)
    fingerprints: dict[str, _Observation | None] = {}
    for name, value in changes.items():
        fingerprints[name] = _observe(subject, dataclasses.replace(options, **{name: value}))
    inert = [
        name for name, seen in fingerprints.items() if seen is not None and _same(seen, base)
    ]
    for name in inert:
        if not _acts_with_another(subject, name, changes, fingerprints):
            raise Violation(
                f"option {name} = {changes[name]!r} (default {getattr(options, name)!r}) changes "
                "nothing observable (arrays, π, scales, regularisers, KL terms, samples), alone "
                "or together with a change of any switch among the options (declare it in "
                "inert_options if it is meant to act on none of these)"
            )
    note = f"{len(changes)} options"
    if skipped:
        note += f"; not varied (no other value known): {', '.join(skipped)}"
    return note


def _acts_with_another(
    subject: PriorSubject,
    name: str,
    changes: dict[str, Any],
    fingerprints: dict[str, _Observation | None],
) -> bool:
    """Whether changing ``name`` shows once a switch (an option with choices, or a bool)
    is changed too: a sample count acts only with a Monte-Carlo estimator, say."""
    # Bools first: switching one rarely needs a new program; a choice often does.
    for other, value in sorted(changes.items(), key=lambda item: not isinstance(item[1], bool)):
        field = next(f for f in dataclasses.fields(subject.options) if f.name == other)
        switch = bool(field.metadata.get("choices")) or isinstance(value, bool)
        if other == name or not switch or fingerprints.get(other) is None:
            continue
        moved = dataclasses.replace(subject.options, **{other: value})
        both = _observe(subject, dataclasses.replace(moved, **{name: changes[name]}))
        seen = fingerprints[other]
        if both is not None and seen is not None and not _same(both, seen):
            return True
    return False


_DRAWS_FROM_KEY = (
    "monte_carlo_draws_from_key",
    "a term that changes with the sample-count option is a Monte-Carlo estimate, and its "
    "draws come from the key passed to kl_terms: it changes with the key",
    "a Monte-Carlo estimate that draws from a fixed jax.random.PRNGKey(0) (or a key stored on "
    "the prior) instead of the key argument, so every step reuses the same draws",
)


def _draws_from_key(subject: PriorSubject) -> str:
    option = subject.settings.sample_count_option
    if option not in {field.name for field in dataclasses.fields(subject.options)}:
        raise NotApplicable(f"no option {option!r} sets a sample count")
    ignoring = subject.key_ignoring_terms
    expect(
        not ignoring,
        f"term(s) {', '.join(map(repr, ignoring))} change with {option} but not with the key "
        "passed to kl_terms: a Monte-Carlo estimate whose draws ignore that key",
    )
    _, monte_carlo = subject.term_kinds
    return f"Monte-Carlo terms: {', '.join(monte_carlo)}" if monte_carlo else "no Monte-Carlo terms"


def register_prior_dynamics() -> None:
    """Add these checks to the prior's, after its value checks."""
    for (name, invariant, hint), function in (
        (_DRAWS_FROM_KEY, _draws_from_key),
        (_KL_GRADIENTS, _kl_gradients),
        (_EVERY_OPTION, _every_option),
    ):
        check("prior", name, invariant, hint=hint)(function)
