"""τ's invariants with free channels and a label space that grows after training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ssvae_core.labels.labelspace import claim_channels
from ssvae_core.modelling.heads import TauHead
from ssvae_core.modelling.losses import tau_probabilities
from ssvae_core.modelling.types import EncoderOutput
from ssvae_core.testing import strategies

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None)
# Channel counts K from a short fixed tuple, as in the kit's strategies (each new shape
# runs the head's operations through XLA again): both ends of the range 3..12 and one K
# between them.
NUM_COMPONENTS = (3, 5, 12)


@st.composite
def open_cases(draw: st.DrawFn) -> dict[str, object]:
    """A τ head whose counts leave some channels free (rows of zeros), a batch's logits,
    and claims for new classes among the free channels."""
    batch, count, classes = (
        draw(strategies.batch_sizes()),
        draw(st.sampled_from(NUM_COMPONENTS)),
        draw(strategies.num_classes()),
    )
    counts = draw(strategies.float_arrays((count, classes), 0.0, 50.0))
    free = draw(st.lists(st.booleans(), min_size=count, max_size=count).filter(any))
    counts = np.where(np.asarray(free)[:, None], 0.0, counts + 1.0).astype(np.float32)
    free_rows = [c for c in range(count) if free[c]]
    new = draw(st.integers(1, min(3, len(free_rows))))
    chosen = draw(st.permutations(free_rows))[:new]
    claims = {classes + j: (chosen[j],) for j in range(new)}
    head = TauHead(
        num_components=count, num_classes=classes, alpha0=draw(st.floats(1e-3, 2.0)),
        count_decay=0.99, initial_counts=draw(st.floats(0.0, 20.0)),
    )
    return {
        "head": head,
        "counts": counts,
        "free": np.asarray(free),
        "claims": claims,
        "logits": draw(strategies.logits(batch, count)),
    }


@PROPERTY
@given(open_cases())
def test_channels_without_label_mass_are_free_and_uniform_in_tau(case: dict) -> None:
    head, counts = case["head"], case["counts"]
    usage = jnp.full(counts.shape[0], 1.0 / counts.shape[0])
    free = np.asarray(head.free_channels(counts, usage))
    assert np.array_equal(free, case["free"])
    tau = np.asarray(head.class_map(counts))
    np.testing.assert_allclose(tau[case["free"]], 1.0 / head.num_classes, rtol=1e-5)


@PROPERTY
@given(open_cases())
def test_unused_channels_are_free_whatever_their_label_mass(case: dict) -> None:
    head, counts = case["head"], case["counts"] + 1.0
    usage = np.full(counts.shape[0], 1.0 / counts.shape[0])
    usage[0] = 0.0
    assert bool(head.free_channels(counts, jnp.asarray(usage))[0])


@PROPERTY
@given(open_cases())
def test_growing_the_label_space_keeps_old_rows_and_gives_claimed_channels_away(case: dict) -> None:
    head, counts, claims = case["head"], case["counts"], case["claims"]
    total = head.num_classes + len(claims)
    grown_head, grown = head.assign_channels(counts, total, claims)
    grown = np.asarray(grown)
    assert grown_head.num_classes == total and grown.shape == (counts.shape[0], total)
    claimed = {c for channels in claims.values() for c in channels}
    kept = [c for c in range(counts.shape[0]) if c not in claimed]
    np.testing.assert_array_equal(grown[kept, : head.num_classes], counts[kept])
    np.testing.assert_array_equal(grown[kept, head.num_classes :], 0.0)
    tau = np.asarray(grown_head.class_map(jnp.asarray(grown)))
    np.testing.assert_allclose(tau.sum(-1), 1.0, atol=1e-5)
    for label, channels in claims.items():
        assert all(int(np.argmax(tau[c])) == label for c in channels)
    probabilities = np.asarray(tau_probabilities(jax.nn.softmax(case["logits"]), tau))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


@PROPERTY
@given(open_cases())
def test_certainty_of_an_example_held_by_free_channels_is_at_most_one_over_y(case: dict) -> None:
    head, counts, free = case["head"], case["counts"], case["free"]
    logits = np.where(free, 0.0, -1e4).astype(np.float32)[None, :]
    posterior = EncoderOutput(
        z_mean=jnp.zeros((1, 2)), z_log_var=jnp.zeros((1, 2)), logits=jnp.asarray(logits)
    )
    certainty = float(head.certainty(posterior, jnp.zeros((1, 2)), jnp.asarray(counts))[0])
    assert certainty <= 1.0 / head.num_classes + 1e-5


@PROPERTY
@given(
    st.integers(2, 10).flatmap(
        lambda k: st.tuples(
            strategies.float_arrays((5, k), 0.0, 1.0),
            st.lists(st.booleans(), min_size=k, max_size=k).filter(any),
        )
    )
)
def test_claims_are_free_distinct_and_at_most_three(case: tuple[np.ndarray, list[bool]]) -> None:
    responsibilities, free = case
    chosen = claim_channels(responsibilities, np.asarray(free), label="new")
    assert 1 <= len(chosen) <= 3 and len(set(chosen)) == len(chosen)
    assert all(free[c] for c in chosen)
    mass = responsibilities.sum(0)
    best = max(mass[c] for c in range(len(free)) if free[c])
    assert mass[chosen[0]] == best
