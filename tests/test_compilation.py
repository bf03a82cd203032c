"""The train step compiles once per model structure: new numbers never recompile it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.config import apply_overrides, config_from_dict

STEP_FUNCTION = "jit(_one_step)"


class _Compilations(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])

    def count(self) -> int:
        return sum(name == STEP_FUNCTION for name in self.names)


@pytest.fixture
def compilations() -> Iterator[_Compilations]:
    handler = _Compilations()
    logger = logging.getLogger("jax")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        yield handler
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def _config(*overrides: str) -> Any:
    # A structure no other test builds, so the first fit here really compiles.
    raw = {
        "seed": 0,
        "model": {"latent_dim": 3, "embedding_dim": 4},
        "prior": {"name": "mixture", "num_components": 4},
        "encoder": {"hidden": [13]},
        "decoder": {"hidden": [13]},
        "train": {"steps": 4, "batch_size": 8, "log_every": 2},
    }
    return config_from_dict(apply_overrides(raw, overrides))


def test_fit_resume_more_labels_and_new_weights_compile_the_step_once(
    compilations: _Compilations, synthetic: dict[str, np.ndarray], tmp_path: Path
) -> None:
    x, partial = synthetic["x"], synthetic["partial"]
    classifier = SSVAEClassifier(_config()).fit(x, partial)
    assert compilations.count() == 1

    classifier.resume(x, partial, until_step=6)
    more = partial.copy()
    more[[2, 3, 22, 23, 42, 43]] = synthetic["y"][[2, 3, 22, 23, 42, 43]]
    classifier.resume(x, more, until_step=8)
    assert int(classifier.state.step) == 8

    reweighted = _config(
        "loss.consistency.weight=2.5",
        "loss.supervised.weight=3.0",
        "loss.usage.warmup_steps=3",
        "loss.kl_warmup_steps=2",
        "loss.beta_c=0.5",
        "train.learning_rate=0.003",
        "train.lr_schedule=\"cosine\"",
    )
    SSVAEClassifier(reweighted).fit(x, more)

    classifier.save(tmp_path / "model.ckpt")
    SSVAEClassifier.load(tmp_path / "model.ckpt").resume(x, more, until_step=10)
    assert compilations.count() == 1, compilations.names


def test_a_new_structure_compiles_the_step_again(
    compilations: _Compilations, synthetic: dict[str, np.ndarray]
) -> None:
    # The counter itself must see compilations: a term switched on changes the structure.
    # Without the consistency term (its augmented view) the two steps compile faster.
    base = ("encoder.hidden=[11]", "loss.consistency.weight=0.0")
    SSVAEClassifier(_config(*base)).fit(synthetic["x"], synthetic["partial"])
    SSVAEClassifier(_config(*base, "loss.pseudo_label.weight=1.0")).fit(
        synthetic["x"], synthetic["partial"]
    )
    assert compilations.count() == 2
