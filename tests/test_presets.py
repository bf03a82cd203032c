"""Shipped presets: loadable, layered under files and overrides, clear when unusable."""

from __future__ import annotations

import dataclasses

import pytest

from ssvae_core.config import default_config, load_config
from ssvae_core.errors import ConfigError
from ssvae_core.presets import preset_names
from ssvae_core.registry import Registry

CORE_ONLY = Registry(entry_points=False)


def test_digits_and_mnist_presets_are_shipped() -> None:
    assert {"digits", "mnist"} <= set(preset_names())


def test_digits_preset_spells_out_the_defaults_plus_its_speed_settings() -> None:
    preset = load_config(preset="digits", registry=CORE_ONLY)
    assert preset.train.fuse_steps and preset.loss.top_channels == 2
    defaults = default_config(CORE_ONLY)
    assert not defaults.train.fuse_steps and defaults.loss.top_channels == 0
    assert preset == defaults.replace(
        train=dataclasses.replace(defaults.train, fuse_steps=True),
        loss=dataclasses.replace(defaults.loss, top_channels=2),
    )


def test_unknown_preset_names_the_nearest_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'mnsit'.*did you mean 'mnist'"):
        load_config(preset="mnsit", registry=CORE_ONLY)


def test_preset_needing_a_missing_plugin_names_the_package() -> None:
    with pytest.raises(ConfigError, match="ssvae-conv"):
        load_config(preset="mnist", registry=CORE_ONLY)


def test_config_file_and_overrides_apply_over_the_preset(tmp_path) -> None:
    path = tmp_path / "over.toml"
    path.write_text("[prior]\nnum_components = 12\n", encoding="utf-8")
    config = load_config(path, ["loss.beta_z=2"], registry=CORE_ONLY, preset="digits")
    assert config.prior.options.num_components == 12
    assert config.loss.beta_z == 2.0
    assert config.train.steps == 4000
