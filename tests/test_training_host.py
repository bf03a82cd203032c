"""Training from host data (``train.data_on_device = "off"``): the same batches as the
device path, a memory-mapped array read only batch by batch."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvae_core.config import config_from_dict
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.model import build_model
from ssvae_core.modelling.objective import build_objective
from ssvae_core.training import (
    DEVICE_BYTES,
    HostBatches,
    HostTrainingArrays,
    Trainer,
    TrainingArrays,
    data_fits_device,
    init_state,
    sample_batch,
    training_arrays,
)

SHAPE = (4, 4)


def _config(graph_label: float = 1.0, **train: Any) -> Any:
    return config_from_dict(
        {
            "seed": 0,
            "model": {"latent_dim": 2, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": 4},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 6, "batch_size": 8, "log_every": 3, **train},
            "loss": {"graph_label": {"weight": graph_label, "neighbours": 3}},
        }
    )


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, *SHAPE)).astype(np.float32)
    labels = np.full(40, -1, dtype=np.int32)
    labels[[0, 1, 2, 3, 4, 5]] = [0, 1, 2, 0, 1, 2]
    return x, labels


def _train(config: Any, x: Any, labels: np.ndarray, *, on_device: bool, objective: bool = True):
    model, _ = build_model(config, input_shape=SHAPE, num_classes=3, key=jax.random.PRNGKey(0))
    trainer = Trainer.for_model(config, model, build_objective(config, model, input_shape=SHAPE, num_classes=3))
    arrays = training_arrays(
        x, labels, objective=trainer.spec.objective if objective else None, num_classes=3, on_device=on_device
    )
    seen: list[dict[str, float]] = []
    state = init_state(model, jax.random.PRNGKey(1))
    result = trainer.train(
        arrays, model, state, trainer.init_opt_state(model), sinks=[lambda step, m: seen.append(dict(m, step=step))]
    )
    return arrays, result, seen


def _leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]


def test_host_batches_are_the_rows_the_device_path_draws() -> None:
    x, labels = _data()
    key = jax.random.PRNGKey(7)
    device = training_arrays(x, labels)
    host = training_arrays(x, labels, on_device=False)
    batches = HostBatches(host, key, 4, 8, 2)
    try:
        for drawn in batches:
            key, batch_key, _ = jax.random.split(key, 3)
            batch = sample_batch(device, batch_key, 8, 2)
            assert np.array_equal(np.asarray(drawn.rows), np.asarray(batch.rows))
            assert np.array_equal(np.asarray(drawn.labels), np.asarray(batch.labels))
            assert np.array_equal(np.asarray(drawn.x), np.asarray(batch.x))
    finally:
        batches.close()


@pytest.mark.parametrize("fused", [False, True])
def test_host_batches_train_as_the_device_path(fused: bool) -> None:
    """Same seed, same rows drawn, same augmentation: the same losses and parameters.

    The two paths are different compiled programs; with XLA's default flags they agree
    bit for bit; with the suite's fast-compile flags they round differently, which Adam
    carries into the parameters at about 1e-5."""
    config = _config(fuse_steps=fused)
    x, labels = _data()
    device_arrays, (device_model, device_state, _), device_seen = _train(config, x, labels, on_device=True)
    host_arrays, (host_model, host_state, _), host_seen = _train(config, x, labels, on_device=False)
    assert isinstance(device_arrays, TrainingArrays) and isinstance(host_arrays, HostTrainingArrays)
    assert host_arrays.fields  # the graph labels' per-row arrays, gathered with the rows
    assert [m["step"] for m in host_seen] == [m["step"] for m in device_seen] == [3, 6]
    for host, device in zip(host_seen, device_seen, strict=True):
        for name in device:
            if name != "seconds":
                assert host[name] == pytest.approx(device[name], rel=1e-6, abs=1e-7), name
    for a, b in zip(_leaves((host_model, host_state)), _leaves((device_model, device_state)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_resumed_run_draws_the_same_batches_from_host_data() -> None:
    config = _config()
    x, labels = _data()
    _, reached, _ = _train(config, x, labels, on_device=True)
    trainer = Trainer.for_model(
        config, reached[0], build_objective(config, reached[0], input_shape=SHAPE, num_classes=3)
    )
    runs = []
    for on_device in (True, False):
        arrays = training_arrays(x, labels, objective=trainer.spec.objective, num_classes=3, on_device=on_device)
        start = jax.tree.map(lambda a: jnp.array(a, copy=True) if isinstance(a, jax.Array) else a, reached)
        runs.append(trainer.train(arrays, *start, until_step=9))
    assert int(runs[1][1].step) == 9
    for a, b in zip(_leaves(runs[0][:2]), _leaves(runs[1][:2]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


class _RowsOnly:
    """A memory-mapped array that records the rows read and refuses to be read whole."""

    def __init__(self, array: np.memmap):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.reads.append(len(rows))
        return self.array[rows]

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise AssertionError("the whole training array was read")


def test_a_memory_mapped_array_is_read_batch_by_batch(tmp_path) -> None:
    x, labels = _data()
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    config = _config(graph_label=0.0)  # the graph's preparation reads every row
    arrays, (_, state, _), seen = _train(config, mapped, labels, on_device=False, objective=False)
    assert arrays.x is mapped and isinstance(arrays.x, np.memmap)
    assert int(state.step) == 6 and all(np.isfinite(m["loss"]) for m in seen)

    watched = _RowsOnly(mapped)
    _, (_, state, _), _ = _train(config, watched, labels, on_device=False, objective=False)
    assert int(state.step) == 6
    assert watched.reads == [config.train.batch_size] * 6


def test_auto_keeps_data_on_the_device_up_to_the_limit() -> None:
    small = np.broadcast_to(np.float32(0), (DEVICE_BYTES // 4 // 16, 16))
    large = np.broadcast_to(np.float32(0), (DEVICE_BYTES // 4 // 16 + 1, 16))
    assert data_fits_device(small) and not data_fits_device(large)
    assert data_fits_device(large, "on") and not data_fits_device(small, "off")
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        data_fits_device(small, "sometimes")


def test_data_on_device_is_validated() -> None:
    assert _config().train.data_on_device == "auto"
    with pytest.raises(ConfigError, match="data_on_device"):
        _config(data_on_device="host")


def test_the_neighbour_term_needs_the_data_on_the_device() -> None:
    raw = {
        "seed": 0,
        "model": {"latent_dim": 2, "embedding_dim": 4},
        "prior": {"name": "mixture", "num_components": 4},
        "encoder": {"hidden": [16]},
        "decoder": {"hidden": [16]},
        "train": {"steps": 2, "batch_size": 8, "log_every": 2},
        "loss": {"neighbour": {"weight": 1.0, "neighbours": 2}, "graph_label": {"weight": 0.0}},
    }
    x, labels = _data()
    with pytest.raises(ConfigError, match="data_on_device"):
        _train(config_from_dict(raw), x, labels, on_device=False)


def test_the_host_step_compiles_once_for_every_batch(monkeypatch) -> None:
    from ssvae_core.training import loop

    traced: list[int] = []
    original = loop._given_step

    def counted(*args: Any, **kwargs: Any) -> Any:
        traced.append(1)  # runs only while the step is being traced
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_given_step", counted)
    x, labels = _data()
    _, (_, state, _), _ = _train(_config(graph_label=0.0, steps=7, log_every=7), x, labels, on_device=False, objective=False)
    assert int(state.step) == 7 and len(traced) <= 1  # 0 where an earlier test compiled it
