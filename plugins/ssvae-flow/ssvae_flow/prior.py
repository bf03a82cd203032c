"""The flow prior: K channels ``N(μ_c, I)`` pushed through one shared normalising flow.

Generative model:

    c ~ Cat(π)
    u | c ~ N(μ_c, I)                   a learned mean per channel (the base)
    z = T(u)                            T: one invertible flow shared by every channel

so ``log p(z|c) = log N(T⁻¹(z); μ_c, I) + log |det ∂T⁻¹(z)/∂z|``. ``T`` is a flowjax
bijection (``masked_autoregressive_bijection`` builds the plugin's); its parameters are
an ordinary field of the prior, wrapped by paramax where flowjax constrains them, and are
unwrapped on every use. Because the channels differ only in the base, one inverse pass of
the flow per latent sample serves all K channels.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.bijections import AbstractBijection, RationalQuadraticSpline
from flowjax.distributions import StandardNormal
from flowjax.flows import masked_autoregressive_flow
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.plugin import (
    AbstractChannelPrior,
    AbstractEncoder,
    EncoderOutput,
    diagonal_gaussian_log_density,
    pi_log_weights,
    pi_logits_field,
    pi_regularisers,
)


def _zero_output_layer(layer: eqx.nn.Linear) -> eqx.nn.Linear:
    """The layer with every floating-point array (weight and bias) set to zero."""
    return jax.tree.map(
        lambda leaf: jnp.zeros_like(leaf) if eqx.is_inexact_array(leaf) else leaf, layer
    )


def _is_mlp(node: object) -> bool:
    return isinstance(node, eqx.nn.MLP)


def _output_layers(tree: object) -> list[eqx.nn.Linear]:
    """The last linear layer of every MLP in ``tree`` (the flow's conditioner networks)."""
    return [node.layers[-1] for node in jax.tree.leaves(tree, is_leaf=_is_mlp) if _is_mlp(node)]


# The flow's passes are compiled functions of the (wrapped) bijection, so that an eager call
# compiles them once per prior: flowjax's lax.scan over layers and coordinates would
# otherwise be traced and compiled again on every eager call. Under an outer jit they are
# inlined like any other function.
@eqx.filter_jit
def _inverse_and_log_det(
    bijection: AbstractBijection, z: Float[Array, "N D"]
) -> tuple[Float[Array, "N D"], Float[Array, " N"]]:
    return jax.vmap(paramax.unwrap(bijection).inverse_and_log_det)(z)


@eqx.filter_jit
def _transform(bijection: AbstractBijection, u: Float[Array, "N D"]) -> Float[Array, "N D"]:
    return jax.vmap(paramax.unwrap(bijection).transform)(u)


TRANSFORMERS = ("affine", "spline")


def masked_autoregressive_bijection(
    latent_dim: int,
    *,
    depth: int,
    width: int,
    transformer: str = "affine",
    knots: int = 8,
    interval: float = 4.0,
    key: PRNGKeyArray,
) -> AbstractBijection:
    """A masked autoregressive flow of ``depth`` layers on ``R^D``, starting as a permutation.

    Each layer transforms coordinate ``d`` by a monotone map whose parameters a masked MLP
    (one hidden layer of ``width`` units) computes from the coordinates before it, and the
    coordinates are permuted between layers. The map is ``transformer``:

    - ``"affine"``: ``y = a·x + b`` with ``a = softplus(·) + 0.01`` (flowjax's default);
    - ``"spline"``: a rational-quadratic spline with ``knots`` inner knots on
      ``[−interval, interval]``, the identity outside it (Durkan et al., 2019).

    The last layer of every MLP starts at zero, so every map starts as the identity and the
    flow as a fixed permutation of the coordinates (log-determinant 0). Density evaluation
    (``inverse``) is one pass per layer, sampling (``transform``) ``D`` passes per layer.
    """
    if transformer not in TRANSFORMERS:
        raise ValueError(
            f"transformer must be one of {', '.join(map(repr, TRANSFORMERS))}, got {transformer!r}"
        )
    flow = masked_autoregressive_flow(
        key,
        base_dist=StandardNormal((latent_dim,)),
        transformer=RationalQuadraticSpline(knots=knots, interval=interval)
        if transformer == "spline"
        else None,
        flow_layers=depth,
        nn_width=width,
        nn_depth=1,
    )
    return eqx.tree_at(_output_layers, flow.bijection, replace_fn=_zero_output_layer)


class FlowPrior(AbstractChannelPrior):
    """``c ~ Cat(π)``, ``z | c ~ T_# N(μ_c, I)`` with a learned flow ``T`` and means ``μ_c``.

    ``KL_z`` has no closed form. For each channel it is the Monte-Carlo estimate with S
    samples ``z_s ~ q(z|x)`` drawn from the ``key`` passed to ``kl_terms``, the same draws for
    every channel:

        KL(q(z|x) || p(z|c)) ≈ (1/S) Σ_s [log q(z_s|x) − log N(u_s; μ_c, I) − log |det J_{T⁻¹}(z_s)|]

    with ``u_s = T⁻¹(z_s)``; ``channel_kl`` returns the ``(B, K)`` matrix and
    ``AbstractChannelPrior.kl_terms`` weights it by the responsibilities,
    ``KL_z = Σ_c r_c KL(q(z|x) || p(z|c))``, with ``KL_c = KL(q(c|x) || π)``. The decoder is
    conditioned on the channel, as for the built-in mixture prior.

    π is uniform unless ``learn_pi``: then ``π = softmax(pi_logits)`` (a trainable field,
    zeros at the start) with the Dirichlet MAP penalty ``−Σ_c (α − 1) log π_c`` among the
    ``regularisers``; with a fixed π the field is ``None`` and nothing can move π.
    ``flow_lr_scale`` multiplies the flow's optimiser update (0 freezes it).
    """

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    flow_lr_scale: float = eqx.field(static=True)
    learn_pi: bool = eqx.field(static=True)
    dirichlet_alpha: float = eqx.field(static=True)
    means: Float[Array, "K D"]
    bijection: AbstractBijection
    pi_logits: Float[Array, " K"] | None

    def __init__(
        self,
        means: Float[Array, "K D"],
        bijection: AbstractBijection,
        *,
        num_samples: int = 1,
        flow_lr_scale: float = 1.0,
        learn_pi: bool = False,
        dirichlet_alpha: float = 1.0,
        pi_logits: Float[Array, " K"] | None = None,
    ):
        means = jnp.asarray(means, dtype=jnp.float32)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {means.shape}")
        if bijection.shape != means.shape[1:] or bijection.cond_shape is not None:
            raise ValueError(
                f"the flow must be an unconditional bijection of shape {means.shape[1:]}, got "
                f"shape {bijection.shape} and condition shape {bijection.cond_shape}"
            )
        if num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples}")
        if flow_lr_scale < 0:
            raise ValueError(f"flow_lr_scale must be a number >= 0, got {flow_lr_scale}")
        self.pi_logits = pi_logits_field(
            means.shape[0], learn_pi=learn_pi, dirichlet_alpha=dirichlet_alpha, pi_logits=pi_logits
        )
        self.means = means
        self.bijection = bijection
        self.num_components, self.latent_dim = means.shape
        self.conditions_decoder = True
        self.num_samples = num_samples
        self.flow_lr_scale = float(flow_lr_scale)
        self.learn_pi = learn_pi
        self.dirichlet_alpha = dirichlet_alpha

    def log_weights(self) -> Float[Array, " K"]:
        """``log π``: ``log_softmax(pi_logits)`` when π is learned, else ``−log K``."""
        return pi_log_weights(self.pi_logits, self.num_components)

    def to_base(self, z: Float[Array, "*b D"]) -> tuple[Float[Array, "*b D"], Float[Array, "*b"]]:
        """``(u, log |det ∂T⁻¹(z)/∂z|)`` with ``u = T⁻¹(z)``, for any batch shape."""
        batch = z.shape[:-1]
        u, log_det = _inverse_and_log_det(self.bijection, z.reshape(-1, self.latent_dim))
        return u.reshape(*batch, self.latent_dim), log_det.reshape(batch)

    def channel_log_density(self, z: Float[Array, "*b D"]) -> Float[Array, "*b K"]:
        """``log p(z|c)`` for every channel: ``log N(T⁻¹(z); μ_c, I) + log |det J_{T⁻¹}(z)|``."""
        u, log_det = self.to_base(z)
        log_base = diagonal_gaussian_log_density(
            u[..., None, :], self.means, jnp.zeros_like(self.means)
        )
        return log_base + log_det[..., None]

    def log_density(self, z: Float[Array, "*b D"]) -> Float[Array, "*b"]:
        """``log p(z) = logsumexp_c (log π_c + log p(z|c))``."""
        return jax.nn.logsumexp(self.log_weights() + self.channel_log_density(z), axis=-1)

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        """Monte-Carlo ``KL(q(z|x) || p(z|c))`` from S fresh samples of ``key``, shape ``(B, K)``."""
        noise = jax.random.normal(key, (self.num_samples, *posterior.z_mean.shape))
        samples = posterior.z_mean + jnp.exp(0.5 * posterior.z_log_var) * noise
        log_q = diagonal_gaussian_log_density(samples, posterior.z_mean, posterior.z_log_var)
        log_p = self.channel_log_density(samples)
        return jnp.mean(log_q[..., None] - log_p, axis=0)

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        """``c ~ π``, ``u ~ N(μ_c, I)``, ``z = T(u)``; returns ``(z, c)``."""
        channel_key, base_key = jax.random.split(key)
        channels = jax.random.categorical(channel_key, self.log_weights(), shape=(num_samples,))
        u = self.means[channels] + jax.random.normal(base_key, (num_samples, self.latent_dim))
        return _transform(self.bijection, u), channels

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        """The Dirichlet MAP penalty ``−Σ_c (α − 1) log π_c`` on a learned π; none otherwise."""
        return pi_regularisers(self.pi_logits, self.dirichlet_alpha)

    def parameter_scales(self) -> dict[str, float]:
        return {"bijection": self.flow_lr_scale}
