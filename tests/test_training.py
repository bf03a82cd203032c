"""The pure train step, the optimiser's freezing of π, τ counts and determinism."""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.config import config_from_dict
from ssvae_core.modelling.model import build_model
from ssvae_core.modelling.objective import build_objective
from ssvae_core.modelling.schedules import Schedule
from ssvae_core.modelling.types import Batch
from ssvae_core.training import (
    Trainer,
    init_state,
    labeled_pool,
    sample_batch,
    train_step,
    training_arrays,
)

SHAPE = (4, 4)
LABELED_PER_BATCH = 3
jit_train_step = eqx.filter_jit(train_step)


def _raw(learn_pi: bool) -> dict[str, Any]:
    return {
        "seed": 0,
        "model": {"latent_dim": 2, "embedding_dim": 4},
        "prior": {
            "name": "mixture",
            "num_components": 4,
            "learn_pi": learn_pi,
            "dirichlet_alpha": 2.0,
        },
        "head": {"name": "tau", "count_decay": 1.0},
        "encoder": {"hidden": [16]},
        "decoder": {"hidden": [16]},
        "train": {"steps": 5, "batch_size": 8, "log_every": 5},
        # A hand-made batch carries no propagated labels.
        "loss": {"graph_label": {"weight": 0.0}},
    }


@dataclasses.dataclass
class Setup:
    config: Any
    model: Any
    state: Any
    trainer: Trainer
    opt_state: Any
    batch: Batch


def _trainer(config, model) -> Trainer:
    objective = build_objective(config, model, input_shape=SHAPE, num_classes=3)
    return Trainer.for_model(config, model, objective)


def _setup(learn_pi: bool) -> Setup:
    config = config_from_dict(_raw(learn_pi))
    model, config = build_model(config, input_shape=SHAPE, num_classes=3, key=jax.random.PRNGKey(0))
    trainer = _trainer(config, model)
    opt_state = trainer.init_opt_state(model)
    x = jax.random.uniform(jax.random.PRNGKey(1), (8, *SHAPE))
    labels = jnp.array([-1, -1, -1, -1, -1, 0, 1, 2], dtype=jnp.int32)
    assert int(jnp.sum(labels >= 0)) == LABELED_PER_BATCH
    state = init_state(model, jax.random.PRNGKey(2))
    batch = Batch(x=x, labels=labels, x_view=x)
    return Setup(config, model, state, trainer, opt_state, batch)


def _step(setup: Setup, model=None, state=None, opt_state=None, *, step_fn=jit_train_step):
    return step_fn(
        setup.model if model is None else model,
        setup.state if state is None else state,
        setup.opt_state if opt_state is None else opt_state,
        setup.batch,
        jax.random.PRNGKey(3),
        spec=setup.trainer.spec,
    )


@pytest.fixture(scope="module")
def frozen() -> Setup:
    return _setup(learn_pi=False)


@pytest.fixture(scope="module")
def frozen_step(frozen: Setup):
    return _step(frozen)


@pytest.fixture(scope="module")
def learned() -> Setup:
    return _setup(learn_pi=True)


@pytest.fixture(scope="module")
def learned_step(learned: Setup):
    return _step(learned)


def _params(model) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]


# --- π: frozen versus learnable -----------------------------------------------------------


def test_frozen_pi_gets_exactly_zero_update(frozen: Setup, frozen_step) -> None:
    new_model = frozen_step[0]
    assert np.array_equal(
        np.asarray(new_model.prior.pi_logits), np.asarray(frozen.model.prior.pi_logits)
    )


def test_frozen_pi_step_still_updates_the_other_parameters(frozen: Setup, frozen_step) -> None:
    new_model = frozen_step[0]
    old = np.asarray(frozen.model.encoder.heads.mean.weight)
    assert not np.array_equal(np.asarray(new_model.encoder.heads.mean.weight), old)
    old_decoder = np.asarray(frozen.model.decoder.loc_head.weight)
    assert not np.array_equal(np.asarray(new_model.decoder.loc_head.weight), old_decoder)


def test_learnable_pi_changes_after_a_step(learned: Setup, learned_step) -> None:
    new_model = learned_step[0]
    assert not np.array_equal(
        np.asarray(new_model.prior.pi_logits), np.asarray(learned.model.prior.pi_logits)
    )


def test_dirichlet_term_is_in_metrics_only_with_learnable_pi(frozen_step, learned_step) -> None:
    assert "dirichlet_pi" not in frozen_step[3]
    assert "dirichlet_pi" in learned_step[3]
    assert np.isfinite(float(learned_step[3]["dirichlet_pi"]))


# --- state bookkeeping --------------------------------------------------------------------


def test_step_counter_advances_by_one(frozen: Setup, frozen_step) -> None:
    assert int(frozen_step[1].step) == int(frozen.state.step) + 1


def test_tau_counts_grow_by_the_number_of_labeled_rows_per_step(frozen: Setup) -> None:
    model, state, opt_state = frozen.model, frozen.state, frozen.opt_state
    totals = [float(jnp.sum(state.head_state))]
    for _ in range(3):
        model, state, opt_state, _ = _step(frozen, model, state, opt_state)
        totals.append(float(jnp.sum(state.head_state)))
    np.testing.assert_allclose(np.diff(totals), LABELED_PER_BATCH, rtol=1e-5)


def test_train_step_preserves_the_array_types_of_the_state(frozen: Setup, frozen_step) -> None:
    before = jax.tree.map(jax.typeof, frozen.state)
    after = jax.tree.map(jax.typeof, frozen_step[1])
    assert before == after


def test_jit_and_eager_train_step_agree(frozen: Setup, frozen_step) -> None:
    eager = _step(frozen, step_fn=train_step)
    for eager_leaf, jit_leaf in zip(_params(eager[0]), _params(frozen_step[0]), strict=True):
        np.testing.assert_allclose(eager_leaf, jit_leaf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(eager[1].head_state), np.asarray(frozen_step[1].head_state), rtol=1e-5
    )
    for name, value in frozen_step[3].items():
        assert float(eager[3][name]) == pytest.approx(float(value), rel=1e-4, abs=1e-6)


# --- batches and the loop -----------------------------------------------------------------


def _labels_at(count: int, rows: list[int], values: list[int]) -> np.ndarray:
    labels = np.full(count, -1, dtype=np.int32)
    labels[rows] = values
    return labels


def test_sample_batch_puts_the_labeled_rows_last() -> None:
    x = np.zeros((10, *SHAPE), np.float32)
    x[7:] = 1.0
    data = training_arrays(x, _labels_at(10, [7, 8, 9], [0, 1, 2]))
    batch = sample_batch(data, jax.random.PRNGKey(0), 8, 2)
    labels = np.asarray(batch.labels)
    assert batch.x.shape == (8, *SHAPE)
    assert np.all(labels[:6] == -1) and np.all(labels[6:] >= 0)
    assert np.all(np.asarray(batch.x[6:]) == 1.0)
    assert np.array_equal(np.asarray(batch.x), x[np.asarray(batch.rows)])


def test_labeled_pool_has_one_slot_per_row_and_draws_only_labeled_rows() -> None:
    labels = _labels_at(10, [2, 5], [1, 0])
    index, y, count = labeled_pool(labels)
    assert index.shape == y.shape == (10,) and count == 2
    assert list(index[:2]) == [2, 5] and list(y[:2]) == [1, 0] and np.all(y[2:] == -1)
    data = training_arrays(np.zeros((10, *SHAPE), np.float32), labels)
    batch = sample_batch(data, jax.random.PRNGKey(1), 64, 32)
    rows, drawn = np.asarray(batch.rows)[32:], np.asarray(batch.labels)[32:]
    assert set(rows) <= {2, 5} and np.array_equal(drawn, labels[rows])


def _train_from_seed(config, arrays, sinks=()):
    model, _ = build_model(
        config, input_shape=SHAPE, num_classes=3, key=jax.random.PRNGKey(config.seed)
    )
    trainer = _trainer(config, model)
    state = init_state(model, jax.random.PRNGKey(config.seed + 1))
    opt_state = trainer.init_opt_state(model)
    return trainer.train(arrays, model, state, opt_state, sinks=sinks)


def test_same_seed_gives_bit_identical_parameters(frozen: Setup, synthetic) -> None:
    labels = _labels_at(len(synthetic["x"]), [0, 20, 40], list(synthetic["y"][[0, 20, 40]]))
    arrays = training_arrays(synthetic["x"], labels)
    seen: list[tuple[int, dict[str, float]]] = []
    first = _train_from_seed(frozen.config, arrays, [lambda s, m: seen.append((s, m))])
    second = _train_from_seed(frozen.config, arrays)
    for a, b in zip(_params(first[0]), _params(second[0]), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(np.asarray(first[1].head_state), np.asarray(second[1].head_state))
    assert int(first[1].step) == frozen.config.train.steps
    assert [step for step, _ in seen] == [frozen.config.train.steps]
    assert all(np.isfinite(v) for v in seen[0][1].values())


# --- learning-rate schedule ---------------------------------------------------------------


def _rates(schedule: str, steps: int) -> list[float]:
    train = dataclasses.replace(config_from_dict(_raw(False)).train, lr_schedule=schedule, steps=steps)
    from ssvae_core.training import learning_rate

    rate = learning_rate(train)
    assert isinstance(rate, Schedule)
    return [float(rate(jnp.asarray(t))) for t in range(steps + 1)]


def test_cosine_schedule_halves_the_step_midway_and_ends_at_zero() -> None:
    constant = _rates("constant", steps=2)
    cosine = _rates("cosine", steps=2)
    # lr · ½(1 + cos(π t / T)): 1, ½, 0 of the constant schedule's at t = 0, 1, 2.
    assert constant == [pytest.approx(1e-3)] * 3
    assert cosine[0] == pytest.approx(constant[0], rel=1e-6)
    assert cosine[1] == pytest.approx(0.5 * constant[1], rel=1e-5)
    assert cosine[2] == pytest.approx(0.0, abs=1e-12)


def test_a_step_moves_parameters_by_the_learning_rate_times_the_adam_direction(frozen: Setup) -> None:
    # Adam's first update is g / (|g| + ε) ≈ sign(g): every moved parameter moves by ≈ lr.
    config = frozen.config
    train = dataclasses.replace(config.train, grad_clip=0.0, learning_rate=0.01)
    trainer = _trainer(config.replace(train=train), frozen.model)
    updated = _step(dataclasses.replace(frozen, trainer=trainer, opt_state=trainer.init_opt_state(frozen.model)))[0]
    moves = np.concatenate(
        [np.abs(a - b).ravel() for a, b in zip(_params(updated), _params(frozen.model), strict=True)]
    )
    moved = moves[moves > 0]
    assert moved.size > 0 and np.all(moved <= 0.01 * (1 + 1e-4)) and np.median(moved) > 0.009
