"""The objective: the ELBO of the prior plus the weighted loss terms.

    L = mean_rows[ Σ_c r_c(x) NLL(x | z, c) + β_z(t) KL_z + β_c KL_c + (other KL terms) ]
      + λ_π(t) Σ R_prior                         (the prior's own regularisers)
      + Σ_terms w_term(t) · mean_mask(term)      (supervised, usage, consistency, ...)

``rows`` are every row of the batch, or only the unlabeled ones when
``loss.reconstruct_labeled`` is off. Every weight is a traced
``Schedule``, so new weights, warm-ups or learning rates reuse
the compiled step. Every term keeps its own name in the returned metrics.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ssvae_core.config import Config
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.components import BuildContext
from ssvae_core.modelling.losses import expected_reconstruction, top_channel_reconstruction
from ssvae_core.modelling.model import SSVAE
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.terms.base import AbstractLossTerm, TermInputs, masked_mean
from ssvae_core.modelling.types import Batch, EncoderOutput, reparameterise
from ssvae_core.registry import Registry, default_registry


class Objective(eqx.Module):
    """The loss of one batch: the ELBO's weights and the active loss terms, in order."""

    beta_z: Schedule
    beta_c: Schedule
    prior_weight: Schedule
    terms: tuple[AbstractLossTerm, ...]
    names: tuple[str, ...] = eqx.field(static=True)
    reconstruct_labeled: bool = eqx.field(static=True)
    top_channels: int = eqx.field(static=True, default=0)

    @property
    def uses_view(self) -> bool:
        """Whether a term needs an augmented view of each row."""
        return any("x_view" in term.requires for term in self.terms)

    def reconstruction(
        self,
        model: SSVAE,
        x: Float[Array, "B ..."],
        z: Float[Array, "B D"],
        responsibilities: Float[Array, "B K"] | None,
    ) -> Float[Array, " B"]:
        """``Σ_c r_c NLL(x | z, c)`` per row, over every channel or the ``top_channels`` most
        responsible ones (chosen without gradient, responsibilities renormalised over them)."""
        top = self.top_channels
        if responsibilities is not None and model.embeddings is not None and 0 < top < responsibilities.shape[-1]:
            _, channels = jax.lax.top_k(jax.lax.stop_gradient(responsibilities), top)
            nll = model.selected_channel_nll(x, z, channels)
            chosen = jnp.take_along_axis(responsibilities, channels, axis=-1)
            return top_channel_reconstruction(chosen, nll)
        nll = model.channel_nll(x, z)
        if responsibilities is None or nll.shape[-1] == 1:
            return nll[:, 0]
        return expected_reconstruction(responsibilities, nll)

    def named_terms(self) -> tuple[tuple[str, AbstractLossTerm], ...]:
        return tuple(zip(self.names, self.terms, strict=True))

    def __call__(
        self,
        model: SSVAE,
        head_state: PyTree[Any],
        batch: Batch,
        step: Int[Array, ""],
        key: PRNGKeyArray,
        *,
        train_x: Float[Array, "N ..."] | None = None,
    ) -> tuple[Float[Array, ""], tuple[dict[str, Float[Array, ""]], EncoderOutput]]:
        """Total loss and ``(metrics, posterior)``; ``batch.labels == -1`` marks unlabeled rows."""
        z_key, prior_key = jax.random.split(key)
        posterior = model.encode(batch.x)
        z = reparameterise(posterior, z_key)
        reconstruction = self.reconstruction(model, batch.x, z, posterior.responsibilities)

        labeled = (batch.labels >= 0).astype(jnp.float32)
        rows = jnp.ones_like(labeled) if self.reconstruct_labeled else 1.0 - labeled
        kl_terms = model.prior.kl_terms(posterior, z, encoder=model.encoder, key=prior_key)
        beta_z = self.beta_z(step)
        weights = {"kl_z": beta_z, "kl_c": self.beta_c(step)}

        metrics: dict[str, Float[Array, ""]] = {"reconstruction": masked_mean(reconstruction, rows)}
        per_example = reconstruction
        for name, values in kl_terms.items():
            per_example = per_example + weights.get(name, 1.0) * values
            metrics[name] = masked_mean(values, rows)
        total = masked_mean(per_example, rows)
        for name, value in model.prior.regularisers().items():
            metrics[name] = value
            total = total + self.prior_weight(step) * value

        inputs = TermInputs(model, head_state, batch, posterior, z, step, train_x)
        term_keys = jax.random.split(jax.random.fold_in(key, 1), max(len(self.terms), 1))
        for index, (name, term) in enumerate(self.named_terms()):
            result = term(inputs, term_keys[index])
            metrics[name] = masked_mean(result.values, result.mask)
            metrics.update(result.metrics or {})
            total = total + term.weight(step) * metrics[name]
        metrics["beta_z"] = beta_z
        metrics["loss"] = total
        return total, (metrics, posterior)


def term_context(config: Config, model: SSVAE, input_shape: tuple[int, ...], num_classes: int) -> BuildContext:
    """The build context a loss term sees: the model's shapes, channels and conditioning."""
    return BuildContext(
        input_shape=tuple(input_shape),
        latent_dim=config.model.latent_dim,
        num_classes=num_classes,
        num_components=model.num_components,
        conditioning=config.model.conditioning,
        embedding_dim=config.model.embedding_dim,
        likelihood=model.likelihood,
    )


def build_objective(
    config: Config,
    model: SSVAE,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    registry: Registry | None = None,
) -> Objective:
    """The objective a (resolved) config describes for ``model``.

    A term with weight 0 is left out; so is a term that requires channels or component
    embeddings the model does not have.
    """
    registry = registry or default_registry()
    loss = config.loss
    context = term_context(config, model, input_shape, num_classes)
    available = {"x_view"}
    if model.num_components > 0:
        available.add("channels")
    if model.embeddings is not None:
        available.add("embeddings")
    names, terms = [], []
    for index, (name, options) in enumerate(config.terms):
        if options.weight == 0.0:
            continue
        registered = registry.get("loss_term", name)
        term_type: type[AbstractLossTerm] = registered.factory.component_type
        if not term_type.requires <= available:
            continue
        try:
            term = registered.factory.build(options, context, jax.random.PRNGKey(index))
        except ValueError as error:
            raise ConfigError(f"loss.{name}: {error}") from None
        if not isinstance(term, AbstractLossTerm):
            raise ConfigError(
                f"loss term {name!r} from plugin {registered.plugin!r} built "
                f"{type(term).__name__}, which is not an AbstractLossTerm"
            )
        names.append(name)
        terms.append(term)
    return Objective(
        beta_z=Schedule(loss.beta_z, warmup_steps=loss.kl_warmup_steps),
        beta_c=Schedule(loss.beta_c),
        prior_weight=Schedule(loss.dirichlet_weight),
        terms=tuple(terms),
        names=tuple(names),
        reconstruct_labeled=loss.reconstruct_labeled,
        top_channels=loss.top_channels,
    )
