"""Data-parallel training (train.devices): the batch split over a mesh of devices gives the
single-device result. Run in a child process whose CPU shows 4 devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4, which must be set before JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict
from ssvae_core.errors import ConfigError

CHILD = r"""
import json, sys
import jax, numpy as np, equinox as eqx
from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict
assert len(jax.local_devices()) == 4, jax.local_devices()
rng = np.random.default_rng(0)
y = np.repeat(np.arange(3), 20).astype(np.int32)
protos = np.stack([np.eye(4), np.fliplr(np.eye(4)), np.pad(np.ones((2, 2)), 1)])
x = np.clip(protos[y] + 0.1 * rng.standard_normal((60, 4, 4)), 0, 1).astype(np.float32)
partial = np.full(60, -1, np.int32); partial[[0, 1, 20, 21, 40, 41]] = y[[0, 1, 20, 21, 40, 41]]
def fit(devices):
    config = config_from_dict({
        "model": {"latent_dim": 2, "embedding_dim": 4}, "prior": {"name": "mixture", "num_components": 4},
        "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]},
        "train": {"steps": 50, "batch_size": 16, "log_every": 10, "devices": devices},
    })
    c = SSVAEClassifier(config).fit(x, partial)
    leaves = [np.asarray(l) for l in jax.tree.leaves(eqx.filter(c.model, eqx.is_inexact_array))]
    return c, leaves
one, one_leaves = fit(1)
four, four_leaves = fit(4)
sharding = jax.tree.leaves(eqx.filter(four.model, eqx.is_array))[0].sharding
out = {
    "devices": len(sharding.device_set),
    "loss": max(abs(a["loss"] - b["loss"]) / max(1.0, abs(a["loss"])) for a, b in zip(one.history, four.history)),
    "tau": float(np.max(np.abs(np.asarray(one.state.head_state) - np.asarray(four.state.head_state)))),
    "params": max(float(np.max(np.abs(a - b))) for a, b in zip(one_leaves, four_leaves)),
    "proba": float(np.max(np.abs(one.predict_proba(x) - four.predict_proba(x)))),
}
try:
    fit_config = config_from_dict({"train": {"batch_size": 18, "devices": 4}})
    SSVAEClassifier(fit_config).fit(x, partial)
    out["uneven"] = None
except Exception as error:
    out["uneven"] = str(error)
print(json.dumps(out))
"""


def test_four_devices_train_as_one_with_the_same_global_batch() -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4  # parameters, optimiser state and τ counts on every device
    # 50 steps: loss, τ counts, parameters and predictions agree to 1e-5
    assert result["loss"] < 1e-5 and result["tau"] < 1e-5
    assert result["params"] < 1e-5 and result["proba"] < 1e-5
    assert "batch_size = 18 does not split evenly over 4 devices" in result["uneven"]


def test_more_devices_than_the_process_sees_is_a_config_error(
    synthetic: dict[str, np.ndarray],
) -> None:
    import jax

    count = len(jax.local_devices())
    config = config_from_dict({"train": {"steps": 2, "batch_size": 8, "devices": count + 1}})
    with pytest.raises(ConfigError, match=rf"train.devices = {count + 1}, but this process sees {count} device"):
        SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])
