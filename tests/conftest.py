"""Shared fixtures: a tiny synthetic dataset, a tiny config, and one fitted classifier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import config_from_dict

NUM_CLASSES = 3
SAMPLE_SHAPE = (4, 4)

# XLA's CPU compiler is set for fast compiles rather than fast code: LLVM at backend
# optimisation level 0, and fusions through XLA's elemental emitters instead of its newer
# MLIR fusion emitters. The tests' small programs compile about three times faster, and
# compiling is most of the suite's time. The programs compute the same operations, but may
# round differently from a default build in the last bits (tanh by a few ulp), so bit-for-bit
# checks compare two runs compiled alike, never a run against numbers from a default build.
# Set before JAX starts a backend, so the xdist workers and the subprocesses the tests
# start (the CLI runs) inherit them. ``SSVAE_TEST_XLA_OPT=default`` keeps XLA's defaults.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _xla_accepts(flags: list[str]) -> bool:
    """Whether this jaxlib starts with ``flags`` (it aborts on a flag it does not know)."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices()"],
            env={**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"},
            capture_output=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def _compile_fast() -> None:
    if os.environ.get("SSVAE_TEST_XLA_OPT") == "default":
        return
    current = os.environ.get("XLA_FLAGS", "").split()
    given = {flag.split("=")[0] for flag in current}
    added = [flag for flag in FAST_COMPILE_FLAGS if flag.split("=")[0] not in given]
    if not added:
        return  # set already (by the xdist controller, for its workers) or by the caller
    # A jaxlib from before the emitter switch, or from after the elemental emitters are
    # gone, would abort on it: then only the optimisation level.
    if "--xla_cpu_use_fusion_emitters=false" in added and not _xla_accepts([*current, *added]):
        added.remove("--xla_cpu_use_fusion_emitters=false")
    os.environ["XLA_FLAGS"] = " ".join([*current, *added])


_compile_fast()


@pytest.fixture(scope="session", autouse=True)
def shared_xla_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One persistent XLA cache for this test session, shared by the xdist workers.

    Most of the suite's time is XLA compiling, and every worker compiles the same tiny
    models (the session fixtures, the CLI runs) again. With the cache a program that one
    worker compiled is loaded by the other. The cache lies in this session's temporary
    directory, so no session sees another's entries. It changes no traced program and no
    compilation count that the tests read (jax logs "Compiling ..." before the cache).
    ``SSVAE_TEST_XLA_CACHE=0`` turns it off.
    """
    if os.environ.get("SSVAE_TEST_XLA_CACHE") == "0":
        return
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory above popen-gw0, popen-gw1, ...
    cache = root / "xla-cache"
    cache.mkdir(exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _prototypes() -> np.ndarray:
    """Three distinct 4×4 images in [0, 1]: a diagonal, an anti-diagonal, a centre block."""
    block = np.zeros((4, 4))
    block[1:3, 1:3] = 1.0
    return np.stack([np.eye(4), np.fliplr(np.eye(4)), block])


@pytest.fixture(scope="session")
def synthetic() -> dict[str, np.ndarray]:
    """60 noisy copies of three prototypes; ``y`` has every label, ``partial`` two per class."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(NUM_CLASSES), 20).astype(np.int32)
    x = np.clip(_prototypes()[y] + 0.1 * rng.standard_normal((60, *SAMPLE_SHAPE)), 0.0, 1.0)
    partial = np.full(60, -1, dtype=np.int32)
    labeled = [0, 1, 20, 21, 40, 41]
    partial[labeled] = y[labeled]
    return {"x": x.astype(np.float32), "y": y, "partial": partial}


@pytest.fixture(scope="session")
def shapes_npz(tmp_path_factory: pytest.TempPathFactory, synthetic: dict[str, np.ndarray]) -> Path:
    """The synthetic data as an ``.npz`` file (arrays ``x`` and ``y``), for the command line."""
    path = tmp_path_factory.mktemp("shapes") / "shapes.npz"
    np.savez(path, x=synthetic["x"], y=synthetic["y"])
    return path


@pytest.fixture
def tiny_raw() -> dict[str, Any]:
    """A raw (TOML-shaped) config for a model that compiles and trains in seconds."""
    return {
        "seed": 0,
        "data": {"labels_per_class": 2},
        "model": {"latent_dim": 2, "embedding_dim": 4},
        "prior": {"name": "mixture", "num_components": 4},
        "encoder": {"hidden": [16]},
        "decoder": {"hidden": [16]},
        "train": {"steps": 10, "batch_size": 8, "log_every": 10},
    }


@pytest.fixture(scope="session")
def fitted_classifier(synthetic: dict[str, np.ndarray]) -> SSVAEClassifier:
    """One classifier fitted for 10 steps on the synthetic data; tests must not mutate it."""
    config = config_from_dict(
        {
            "model": {"latent_dim": 2, "embedding_dim": 4},
            "prior": {"name": "mixture", "num_components": 4},
            "encoder": {"hidden": [16]},
            "decoder": {"hidden": [16]},
            "train": {"steps": 10, "batch_size": 8, "log_every": 10},
        }
    )
    return SSVAEClassifier(config).fit(synthetic["x"], synthetic["partial"])


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a one-module plugin distribution for this test: ``install_plugin(name,
    source, requires_core=...)`` writes ``<name>.py`` and a ``dist-info`` whose entry point
    of the group ``ssvae`` loads it, puts them on ``sys.path`` and drops the cached default
    registry, so that the next one sees the plugin (and the one after the test does not)."""
    import ssvae_core.registry

    def install(name: str, source: str, *, requires_core: str = "") -> None:
        (tmp_path / f"{name}.py").write_text(source)
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n"
            f"Requires-Dist: ssvae-core{requires_core}\n"
            "Requires-Dist: ssvae-core[test]; extra == 'test'\n"
        )
        (info / "entry_points.txt").write_text(f"[ssvae]\n{name} = {name}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setattr(ssvae_core.registry, "_DEFAULT", None)

    return install
