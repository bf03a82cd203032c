"""AbstractChannelPrior: the shared KL_z / KL_c body, and the mixture prior through it."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ssvae_core.modelling.losses import categorical_kl, gaussian_kl
from ssvae_core.modelling.priors.channels import uniform_log_weights
from ssvae_core.modelling.priors.mixture import MixturePrior
from ssvae_core.plugin import AbstractChannelPrior, AbstractEncoder, EncoderOutput

BATCH, LATENT, K = 5, 3, 4


def _posterior(seed: int = 0, count: int = K) -> EncoderOutput:
    mean_key, var_key, logit_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return EncoderOutput(
        z_mean=jax.random.normal(mean_key, (BATCH, LATENT)),
        z_log_var=0.5 * jax.random.normal(var_key, (BATCH, LATENT)),
        logits=2.0 * jax.random.normal(logit_key, (BATCH, count)),
    )


def _mixture_by_hand(prior: MixturePrior, posterior: EncoderOutput) -> dict[str, jax.Array]:
    """The mixture prior's KL terms as they were written before the base class."""
    assert posterior.logits is not None
    responsibilities = jax.nn.softmax(posterior.logits, axis=-1)
    kl_per_channel = gaussian_kl(posterior.z_mean, posterior.z_log_var)[:, None]
    return {
        "kl_z": jnp.sum(responsibilities * kl_per_channel, axis=-1),
        "kl_c": categorical_kl(posterior.logits, prior.log_weights()),
    }


def _kl_terms(prior: AbstractChannelPrior, posterior: EncoderOutput) -> dict[str, jax.Array]:
    return prior.kl_terms(posterior, posterior.z_mean, encoder=None, key=jax.random.PRNGKey(0))


def _total(terms: dict[str, jax.Array]) -> jax.Array:
    return jnp.sum(terms["kl_z"]) + 0.5 * jnp.sum(terms["kl_c"])


def _assert_same(actual: dict[str, jax.Array], expected: dict[str, jax.Array]) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(np.asarray(actual[name]), np.asarray(value), err_msg=name)


@pytest.fixture(scope="module")
def mixture() -> MixturePrior:
    pi_logits = jax.random.normal(jax.random.PRNGKey(7), (K,))
    return MixturePrior(LATENT, K, learn_pi=True, pi_logits=pi_logits)


def test_mixture_kl_terms_equal_the_hand_formula_bit_for_bit(mixture: MixturePrior) -> None:
    for seed in range(3):
        posterior = _posterior(seed)
        _assert_same(_kl_terms(mixture, posterior), _mixture_by_hand(mixture, posterior))
        _assert_same(
            eqx.filter_jit(_kl_terms)(mixture, posterior),
            eqx.filter_jit(_mixture_by_hand)(mixture, posterior),
        )


def test_mixture_kl_gradients_equal_the_hand_formula_bit_for_bit(mixture: MixturePrior) -> None:
    posterior = _posterior(1)

    @eqx.filter_jit
    def gradients(by_hand: bool) -> tuple[EncoderOutput, MixturePrior]:
        def total(posterior: EncoderOutput, prior: MixturePrior) -> jax.Array:
            terms = _mixture_by_hand(prior, posterior) if by_hand else _kl_terms(prior, posterior)
            return _total(terms)

        return jax.grad(total, argnums=(0, 1))(posterior, mixture)

    for actual, expected in zip(
        jax.tree.leaves(gradients(False)), jax.tree.leaves(gradients(True)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


class ColumnsPrior(AbstractChannelPrior):
    """Hands ``channel_kl`` a fixed array, to see how the base class combines it."""

    num_components: int = eqx.field(static=True)
    conditions_decoder: bool = eqx.field(static=True)
    columns: Float[Array, "B C"]

    def log_weights(self) -> Float[Array, " K"]:
        return uniform_log_weights(self.num_components)

    def channel_kl(
        self, posterior: EncoderOutput, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> Float[Array, "B K"]:
        return self.columns

    def sample(
        self, num_samples: int, *, encoder: AbstractEncoder, key: PRNGKeyArray
    ) -> tuple[Float[Array, "N D"], Int[Array, " N"]]:
        return jnp.zeros((num_samples, LATENT)), jnp.zeros((num_samples,), jnp.int32)

    def regularisers(self) -> dict[str, Float[Array, ""]]:
        return {}

    def parameter_scales(self) -> dict[str, float]:
        return {}


def test_a_full_width_channel_kl_is_weighted_by_the_responsibilities() -> None:
    posterior = _posterior(2)
    columns = jax.random.uniform(jax.random.PRNGKey(3), (BATCH, K))
    terms = _kl_terms(ColumnsPrior(K, True, columns), posterior)
    responsibilities = jax.nn.softmax(posterior.logits, axis=-1)
    np.testing.assert_array_equal(terms["kl_z"], jnp.sum(responsibilities * columns, axis=-1))
    np.testing.assert_array_equal(
        terms["kl_c"], categorical_kl(posterior.logits, uniform_log_weights(K))
    )


def test_a_single_column_is_kl_z_itself() -> None:
    posterior = _posterior(2)
    column = jax.random.uniform(jax.random.PRNGKey(3), (BATCH, 1))
    terms = _kl_terms(ColumnsPrior(K, False, column), posterior)
    np.testing.assert_array_equal(terms["kl_z"], column[:, 0])


def test_with_one_channel_both_shapes_agree() -> None:
    posterior = _posterior(2, count=1)
    column = jax.random.uniform(jax.random.PRNGKey(3), (BATCH, 1))
    terms = _kl_terms(ColumnsPrior(1, False, column), posterior)
    np.testing.assert_array_equal(terms["kl_z"], column[:, 0])
    np.testing.assert_array_equal(terms["kl_c"], 0.0)


def test_a_channel_kl_of_another_shape_is_refused() -> None:
    message = r"ColumnsPrior.channel_kl returned shape \(5, 3\), expected \(5, 4\) or \(5, 1\)"
    with pytest.raises(ValueError, match=message):
        _kl_terms(ColumnsPrior(K, False, jnp.zeros((BATCH, 3))), _posterior())


def test_kl_terms_need_channel_logits() -> None:
    posterior = EncoderOutput(jnp.zeros((BATCH, LATENT)), jnp.zeros((BATCH, LATENT)), None)
    with pytest.raises(AssertionError, match="ColumnsPrior needs channel logits"):
        _kl_terms(ColumnsPrior(K, False, jnp.zeros((BATCH, K))), posterior)


def test_the_mixture_prior_inherits_kl_terms() -> None:
    # Equinox's rule for abstract classes: a concrete method is never overridden.
    assert MixturePrior.kl_terms is AbstractChannelPrior.kl_terms


def test_uniform_log_weights_are_minus_log_k() -> None:
    weights = uniform_log_weights(5)
    assert weights.shape == (5,)
    np.testing.assert_allclose(np.asarray(weights), -np.log(5.0), rtol=1e-6)
    np.testing.assert_array_equal(weights, jnp.full((5,), -jnp.log(5)))
