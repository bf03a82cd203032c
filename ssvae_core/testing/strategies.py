"""Hypothesis strategies for ssvae's arrays, drawn from a small fixed set of shapes.

JAX compiles a function once per distinct input shape, so every strategy here draws its
shapes from short fixed tuples (``BATCH_SIZES``, ``NUM_COMPONENTS``,
``LATENT_DIMS``, ``SAMPLE_SHAPES``) and lets Hypothesis vary only the values: a
property over a compiled function then compiles at most a handful of times.

Typical values: logits in ``[-8, 8]``, means in ``[-4, 4]``, log-variances in ``[-4, 2]``,
inputs in ``[0, 1]``. With ``extreme=True``, ``posteriors`` also draws the edges of
the domain, where a careless ``exp`` or ``log`` overflows: means in ``[-100, 100]``,
log-variances in ``[-20, 10]``, and responsibilities that are near one-hot (one logit up
to 60 above the rest) or near uniform, around logits as large as ±100.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jaxtyping import Bool, Float, Int, PRNGKeyArray

from ssvae_core.modelling.types import EncoderOutput

BATCH_SIZES = (1, 3, 8)
NUM_COMPONENTS = (2, 3, 5)
LATENT_DIMS = (2, 4)
NUM_CLASSES = (2, 3)
SAMPLE_SHAPES = ((6,), (8, 8), (1, 8, 8))

LOGIT_RANGE = (-8.0, 8.0)
MEAN_RANGE = (-4.0, 4.0)
LOG_VAR_RANGE = (-4.0, 2.0)
# The edges of the domain (``extreme=True``): a correct implementation is finite there.
WIDE_MEAN_RANGE = (-100.0, 100.0)
WIDE_LOG_VAR_RANGE = (-20.0, 10.0)
LOGIT_OFFSET_RANGE = (-100.0, 100.0)
PEAK_GAP_RANGE = (20.0, 60.0)
# A large number of channels, for components that must scale in K.
LARGE_NUM_COMPONENTS = 64


def batch_sizes() -> st.SearchStrategy[int]:
    """A batch size from ``BATCH_SIZES`` (1 catches squeezed axes, 8 batch coupling)."""
    return st.sampled_from(BATCH_SIZES)


def num_components() -> st.SearchStrategy[int]:
    """A number of channels ``K`` from ``NUM_COMPONENTS``."""
    return st.sampled_from(NUM_COMPONENTS)


def latent_dims() -> st.SearchStrategy[int]:
    """A latent size ``D`` from ``LATENT_DIMS``."""
    return st.sampled_from(LATENT_DIMS)


def num_classes() -> st.SearchStrategy[int]:
    """A number of labels ``Y`` from ``NUM_CLASSES``."""
    return st.sampled_from(NUM_CLASSES)


def sample_shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """The shape of one input: a vector, an image, or a one-channel image."""
    return st.sampled_from(SAMPLE_SHAPES)


def float_arrays(
    shape: tuple[int, ...], low: float, high: float
) -> st.SearchStrategy[Float[np.ndarray, "..."]]:
    """float32 arrays of ``shape`` with every element in ``[low, high]`` (no NaN, no subnormals)."""
    elements = st.floats(low, high, width=32, allow_nan=False, allow_subnormal=False)
    return hnp.arrays(np.float32, shape, elements=elements)


def logits(batch_size: int, num_components: int) -> st.SearchStrategy[Float[np.ndarray, "B K"]]:
    """Channel logits of shape ``(B, K)`` in ``LOGIT_RANGE``."""
    return float_arrays((batch_size, num_components), *LOGIT_RANGE)


def extreme_logits(
    batch_size: int, num_components: int
) -> st.SearchStrategy[Float[np.ndarray, "B K"]]:
    """Logits of near one-hot or near-uniform responsibilities, offset by up to ±100.

    Near one-hot: one channel per row lies 20–60 above logits in ``[-8, 8]``; near
    uniform: every logit within 2⁻¹⁰ of the row's offset. Softmax is invariant to the
    offset; ``exp`` of a raw logit is not (it overflows float32 above 88).
    """
    shape = (batch_size, num_components)
    offsets = float_arrays((batch_size, 1), *LOGIT_OFFSET_RANGE)
    peaked = st.builds(
        lambda base, gap, winner, offset: _peaked(base, gap, winner) + offset,
        float_arrays(shape, *LOGIT_RANGE),
        float_arrays((batch_size,), *PEAK_GAP_RANGE),
        hnp.arrays(np.int64, (batch_size,), elements=st.integers(0, num_components - 1)),
        offsets,
    )
    flat = st.builds(
        lambda noise, offset: (noise + offset).astype(np.float32),
        float_arrays(shape, -0.0009765625, 0.0009765625),  # ±2⁻¹⁰
        offsets,
    )
    return st.one_of(peaked, flat)


def _peaked(
    base: Float[np.ndarray, "B K"], gap: Float[np.ndarray, " B"], winner: Int[np.ndarray, " B"]
) -> Float[np.ndarray, "B K"]:
    logits = base.copy()
    rows = np.arange(len(base))
    logits[rows, winner] = base.max(axis=1) + gap
    return logits.astype(np.float32)


def means(batch_size: int, latent_dim: int) -> st.SearchStrategy[Float[np.ndarray, "B D"]]:
    """Posterior means ``μ`` of shape ``(B, D)`` in ``MEAN_RANGE``."""
    return float_arrays((batch_size, latent_dim), *MEAN_RANGE)


def log_variances(batch_size: int, latent_dim: int) -> st.SearchStrategy[Float[np.ndarray, "B D"]]:
    """Posterior log-variances ``log σ²`` of shape ``(B, D)`` in ``LOG_VAR_RANGE``."""
    return float_arrays((batch_size, latent_dim), *LOG_VAR_RANGE)


def posteriors(
    batch_size: int, latent_dim: int, num_components: int, *, extreme: bool = False
) -> st.SearchStrategy[EncoderOutput]:
    """A batch of posteriors ``q(z|x) q(c|x)``; ``logits`` is ``None`` when ``K == 0``.

    With ``extreme``, half the draws come from the edges of the domain (module docstring):
    wide means and log-variances, near one-hot or near-uniform responsibilities.
    """
    typical = _posteriors(
        means(batch_size, latent_dim),
        log_variances(batch_size, latent_dim),
        logits(batch_size, num_components) if num_components else st.none(),
    )
    if not extreme:
        return typical
    shape = (batch_size, latent_dim)
    edges = _posteriors(
        st.one_of(means(batch_size, latent_dim), float_arrays(shape, *WIDE_MEAN_RANGE)),
        st.one_of(log_variances(batch_size, latent_dim), float_arrays(shape, *WIDE_LOG_VAR_RANGE)),
        extreme_logits(batch_size, num_components) if num_components else st.none(),
    )
    return st.one_of(typical, edges)


def _posteriors(
    mean: st.SearchStrategy[np.ndarray],
    log_var: st.SearchStrategy[np.ndarray],
    logit: st.SearchStrategy[np.ndarray | None],
) -> st.SearchStrategy[EncoderOutput]:
    return st.builds(
        lambda mean, log_var, logit: EncoderOutput(
            z_mean=jnp.asarray(mean),
            z_log_var=jnp.asarray(log_var),
            logits=None if logit is None else jnp.asarray(logit),
        ),
        mean,
        log_var,
        logit,
    )


def labels(
    batch_size: int, num_classes: int, *, unlabeled: bool = True
) -> st.SearchStrategy[Int[np.ndarray, " B"]]:
    """int32 labels in ``[0, Y)``, with ``-1`` (unlabeled) allowed when ``unlabeled``."""
    low = -1 if unlabeled else 0
    return hnp.arrays(np.int32, (batch_size,), elements=st.integers(low, num_classes - 1))


def inputs(
    batch_size: int, sample_shape: tuple[int, ...]
) -> st.SearchStrategy[Float[np.ndarray, "B ..."]]:
    """A batch of inputs ``x`` in ``[0, 1]`` of shape ``(B, *sample_shape)``."""
    return float_arrays((batch_size, *sample_shape), 0.0, 1.0)


def seeds() -> st.SearchStrategy[int]:
    """An integer seed; ``keys`` turns it into a key (seeds print better in examples)."""
    return st.integers(0, 2**31 - 1)


def keys() -> st.SearchStrategy[PRNGKeyArray]:
    """A PRNG key made from ``seeds``."""
    return seeds().map(jax.random.PRNGKey)


def channel_permutations(num_components: int) -> st.SearchStrategy[Int[np.ndarray, " K"]]:
    """A permutation of ``range(K)`` as an int32 index array."""
    return st.permutations(range(num_components)).map(lambda p: np.asarray(p, dtype=np.int32))


def row_masks(batch_size: int) -> st.SearchStrategy[Bool[np.ndarray, " B"]]:
    """A boolean mask over the batch with at least one row kept and, if ``B > 1``, one changed.

    Used to test that a row's output does not depend on the other rows of its batch.
    """
    if batch_size == 1:
        return st.just(np.ones((1,), dtype=bool))
    return hnp.arrays(bool, (batch_size,)).filter(lambda mask: mask.any() and not mask.all())
