"""Config parsing and validation, ``--set`` overrides, and the TOML round trip."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jax
import pytest

from ssvae_core.config import (
    Config,
    apply_overrides,
    config_from_dict,
    default_config,
    dumps_toml,
    load_config,
    parse_override,
    with_values,
)
from ssvae_core.errors import ConfigError
from ssvae_core.modelling.model import build_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _rejects(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(raw)


# --- defaults ------------------------------------------------------------------------------


def test_default_config_uses_mixture_prior_dense_networks_and_the_tau_head() -> None:
    config = default_config()
    assert (config.prior.name, config.encoder.name, config.decoder.name, config.head.name) == (
        "mixture",
        "dense",
        "dense",
        "tau",
    )
    assert config.model.conditioning == "film"
    assert config.data.dataset == "digits"


def test_missing_keys_take_their_defaults() -> None:
    config = config_from_dict({"model": {"latent_dim": 3}})
    assert config.model.latent_dim == 3
    assert config.model == type(config.model)(latent_dim=3, conditioning="film")


# --- unknown names -------------------------------------------------------------------------


def test_unknown_section_is_rejected_with_a_suggestion() -> None:
    _rejects({"modle": {}}, "unknown config section 'modle' (did you mean 'model'?)")


def test_unknown_core_key_is_rejected_with_a_suggestion() -> None:
    _rejects(
        {"model": {"latnt_dim": 3}}, "unknown option model.latnt_dim (did you mean 'latent_dim'?)"
    )


def test_unknown_component_option_is_rejected_with_a_suggestion() -> None:
    _rejects(
        {"prior": {"num_compnents": 3}},
        "unknown option prior.num_compnents (did you mean 'num_components'?)",
    )


def test_unknown_component_name_is_rejected_with_a_suggestion() -> None:
    _rejects({"prior": {"name": "mixtur"}}, "did you mean 'mixture'?")


def test_section_that_is_not_a_table_is_rejected() -> None:
    _rejects({"model": 3}, "[model] must be a table of options, got 3")


# --- types and ranges ----------------------------------------------------------------------


def test_out_of_range_integer_names_option_bound_and_value() -> None:
    _rejects(
        {"prior": {"num_components": 0}}, "prior.num_components must be an integer >= 2, got 0"
    )


def test_string_for_an_integer_is_rejected() -> None:
    _rejects({"train": {"steps": "ten"}}, "train.steps must be an integer, got 'ten'")


def test_boolean_for_an_integer_is_rejected() -> None:
    _rejects({"train": {"steps": True}}, "train.steps must be an integer, got True")


def test_float_for_an_integer_is_rejected() -> None:
    _rejects({"model": {"latent_dim": 2.5}}, "model.latent_dim must be an integer, got 2.5")


def test_integer_for_a_float_is_accepted_as_float() -> None:
    config = config_from_dict({"train": {"learning_rate": 1}})
    assert config.train.learning_rate == 1.0
    assert isinstance(config.train.learning_rate, float)


def test_exclusive_minimum_rejects_the_bound_itself() -> None:
    _rejects({"model": {"sigma": 0}}, "model.sigma must be a number > 0, got 0.0")


def test_maximum_is_enforced() -> None:
    _rejects(
        {"train": {"labeled_fraction": 1.5}},
        "train.labeled_fraction must be a number <= 1, got 1.5",
    )


def test_choice_outside_the_allowed_set_is_rejected_with_a_suggestion() -> None:
    _rejects({"model": {"likelihood": "bernouli"}}, "(did you mean 'bernoulli'?)")


def test_every_element_of_a_list_option_is_range_checked() -> None:
    _rejects({"encoder": {"hidden": [16, 0]}}, "encoder.hidden must be an integer >= 1")


def test_list_option_rejects_a_non_integer_element() -> None:
    _rejects({"encoder": {"hidden": [16, "wide"]}}, "encoder.hidden[1] must be an integer")


def test_cross_field_rule_is_reported_with_its_section() -> None:
    _rejects({"model": {"sigma_min": 0.5, "sigma_max": 0.1}}, "model.sigma_min must be < sigma_max")


def test_negative_seed_is_rejected() -> None:
    _rejects({"seed": -1}, "seed must be an integer from 0 to 2**63 - 1")


def test_optional_option_accepts_an_integer() -> None:
    assert config_from_dict({"data": {"labels_per_class": 3}}).data.labels_per_class == 3


# --- --set overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("train.steps=20", ["train", "steps"], 20),
        ("loss.beta_z=0.5", ["loss", "beta_z"], 0.5),
        ("loss.reconstruct_labeled=false", ["loss", "reconstruct_labeled"], False),
        ("encoder.hidden=[16, 8]", ["encoder", "hidden"], [16, 8]),
        ("data.dataset=digits", ["data", "dataset"], "digits"),
        ('data.dataset="my data.npz"', ["data", "dataset"], "my data.npz"),
        ("seed=3", ["seed"], 3),
        (" model.latent_dim = 4 ", ["model", "latent_dim"], 4),
    ],
)
def test_parse_override_reads_the_value_as_toml_else_as_a_string(
    text: str, keys: list[str], value: Any
) -> None:
    assert parse_override(text) == (keys, value)


@pytest.mark.parametrize("text", ["train.steps", "a.b.c.d=1", "=3", ".steps=1", "train.=1"])
def test_parse_override_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--set expects section\.key=value"):
        parse_override(text)


def test_apply_overrides_sets_nested_and_top_level_values_without_mutating_input() -> None:
    raw = {"train": {"steps": 5}, "seed": 1}
    result = apply_overrides(raw, ["train.batch_size=8", "model.latent_dim=3", "seed=2"])
    assert result == {"train": {"steps": 5, "batch_size": 8}, "model": {"latent_dim": 3}, "seed": 2}
    assert raw == {"train": {"steps": 5}, "seed": 1}


def test_later_override_wins() -> None:
    assert apply_overrides({}, ["train.steps=5", "train.steps=7"]) == {"train": {"steps": 7}}


def test_override_into_a_non_table_is_rejected() -> None:
    with pytest.raises(ConfigError, match="seed is not a table"):
        apply_overrides({"seed": 1}, ["seed.value=2"])


def test_load_config_applies_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("seed = 4\n[train]\nsteps = 50\nbatch_size = 16\n")
    config = load_config(path, ["train.steps=7"])
    assert (config.seed, config.train.steps, config.train.batch_size) == (4, 7, 16)


def test_load_config_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_load_config_reports_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[train\nsteps = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)


def test_load_config_reports_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .* is a directory; expected a file"):
        load_config(tmp_path)


def test_load_config_reports_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssvae_core.errors as errors_module

    path = tmp_path / "secret.toml"
    path.write_text("seed = 1\n")

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(errors_module, "open", denied, raising=False)
    with pytest.raises(ConfigError, match=r"config file .*secret\.toml' cannot be read \(permission denied\)"):
        load_config(path)


def test_load_config_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("# réglages\nseed = 1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml' is not UTF-8 text \(byte 3\); TOML files must be UTF-8"):
        load_config(path)


def test_an_override_that_is_not_a_string_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"an override must be a string section\.key=value, got 3"):
        apply_overrides({}, [3])  # type: ignore[list-item]


# --- non-finite numbers ----------------------------------------------------------------------

NON_FINITE_OPTIONS = [
    ("train", "learning_rate"),
    ("train", "labeled_fraction"),
    ("train", "grad_clip"),
    ("loss", "beta_z"),
    ("model", "sigma"),
    ("loss.graph_label", "alpha"),
]


def _nested(section: str, key: str, value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {key: value}
    for part in reversed(section.split(".")):
        raw = {part: raw}
    return raw


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("section", "key"), NON_FINITE_OPTIONS)
def test_non_finite_numbers_are_rejected_from_the_api(section: str, key: str, value: float) -> None:
    _rejects(_nested(section, key, value), f"{section}.{key} must be a finite number, got {value!r}")


@pytest.mark.parametrize("text", ["nan", "inf", "+inf", "-inf"])
@pytest.mark.parametrize(("section", "key"), NON_FINITE_OPTIONS)
def test_non_finite_numbers_are_rejected_from_set(section: str, key: str, text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(section)}\.{key} must be a finite number, got -?(nan|inf)$"):
        load_config(None, [f"{section}.{key}={text}"])


def test_non_finite_numbers_are_rejected_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "nan.toml"
    path.write_text("[train]\nlearning_rate = nan\n")
    with pytest.raises(ConfigError, match=r"^train\.learning_rate must be a finite number, got nan$"):
        load_config(path)
    path.write_text("[loss.graph_label]\nalpha = -inf\n")
    with pytest.raises(ConfigError, match=r"^loss\.graph_label\.alpha must be a finite number, got -inf$"):
        load_config(path)


def test_labeled_batch_size_follows_the_labeled_fraction() -> None:
    def size(fraction: float) -> int:
        return config_from_dict(
            {"train": {"batch_size": 8, "labeled_fraction": fraction}}
        ).labeled_batch_size

    assert (size(0.0), size(0.25), size(0.01), size(1.0)) == (0, 2, 1, 7)


# --- round trip ----------------------------------------------------------------------------


def _resolved(raw: dict[str, Any]) -> Config:
    _, config = build_model(
        config_from_dict(raw), input_shape=(4, 4), num_classes=3, key=jax.random.PRNGKey(0)
    )
    return config


def test_resolved_config_round_trips_through_to_dict(tiny_raw: dict[str, Any]) -> None:
    config = _resolved(tiny_raw)
    assert config.head.name == "tau"
    assert config.model.conditioning == "film"
    assert config_from_dict(config.to_dict()) == config


def test_resolved_config_round_trips_through_toml_text(tiny_raw: dict[str, Any]) -> None:
    config = _resolved(tiny_raw)
    text = dumps_toml(config.to_dict())
    assert tomllib.loads(text) == config.to_dict()
    assert config_from_dict(tomllib.loads(text)) == config


def test_config_using_every_label_round_trips() -> None:
    config = config_from_dict({"data": {"labels_per_class": "all"}})
    assert config.data.label_budget is None
    assert config_from_dict(config.to_dict()).data.label_budget is None


def test_config_with_no_labels_is_label_free() -> None:
    config = config_from_dict({"data": {"labels_per_class": 0}})
    assert config.data.label_budget == 0 and config.data.label_free
    assert config_from_dict(config.to_dict()).data.label_free


@pytest.mark.parametrize("value", ["every", -1, 1.5])
def test_labels_per_class_other_than_a_count_or_all_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"data\.labels_per_class must be an integer"):
        config_from_dict({"data": {"labels_per_class": value}})


def test_the_label_budget_flag_is_checked_by_the_config_s_own_check() -> None:
    import argparse

    from ssvae_core.config import label_budget_argument

    assert (label_budget_argument(" 3 "), label_budget_argument("ALL"), label_budget_argument("0")) == (3, "all", 0)
    for text in ("-1", "every", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(
            "labels_per_class must be an integer >= 0 (0: no labels) or 'all' (every training label), got"
        )):
            label_budget_argument(text)


def test_dumps_toml_escapes_quotes_and_backslashes() -> None:
    data = {"data": {"dataset": 'C:\\data\\"odd".npz'}, "seed": 0}
    assert tomllib.loads(dumps_toml(data)) == data


def test_conditioning_film_with_the_standard_prior_is_rejected_when_loaded(tiny_raw: dict[str, Any]) -> None:
    tiny_raw["prior"] = {"name": "standard"}
    tiny_raw["model"]["conditioning"] = "film"
    with pytest.raises(ConfigError, match=r"model\.conditioning must be 'none' or 'auto'"):
        config_from_dict(tiny_raw)


# --- resolved when loaded ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prior", "head", "conditioning"),
    [("mixture", "tau", "film"), ("standard", "softmax", "none")],
)
def test_auto_head_and_conditioning_are_decided_when_loaded(
    prior: str, head: str, conditioning: str
) -> None:
    config = config_from_dict({"prior": {"name": prior}, "head": {"name": "auto"}})
    assert (config.head.name, config.model.conditioning) == (head, conditioning)
    assert config.auto == {"head", "model.conditioning"}
    assert type(config.head.options).__name__ == f"{head.capitalize()}Options"


def test_options_of_an_auto_head_are_checked_against_the_head_chosen() -> None:
    assert config_from_dict({"head": {"name": "auto", "alpha0": 0.5}}).head.options.alpha0 == 0.5
    _rejects(
        {"prior": {"name": "standard"}, "head": {"name": "auto", "alpha0": 0.5}},
        "unknown option head.alpha0",
    )


def test_a_head_that_needs_channels_with_a_prior_without_is_rejected_when_loaded() -> None:
    _rejects(
        {"prior": {"name": "standard"}, "head": {"name": "tau"}},
        "head 'tau' needs a prior with channels, and prior 'standard' has none; use head 'softmax'",
    )


def _registry_with(kind: str, name: str, factory: Any) -> Any:
    from ssvae_core.hookspecs import hookimpl
    from ssvae_core.registry import HOOKS, Registry

    class Plugin:
        pass

    setattr(Plugin, HOOKS[kind], hookimpl(lambda self: {name: factory}))
    registry = Registry(entry_points=False, plugins=[("test-plugin", Plugin())])
    assert not registry.problems, registry.problems
    return registry


def test_a_prior_declared_not_to_condition_the_decoder_gets_none_and_refuses_film() -> None:
    import dataclasses

    from ssvae_core.registry import default_registry

    mixture = default_registry().get("prior", "mixture").factory
    registry = _registry_with("prior", "latent_only", dataclasses.replace(mixture, conditions_decoder=False))
    config = config_from_dict({"prior": {"name": "latent_only"}}, registry)
    assert (config.head.name, config.model.conditioning) == ("tau", "none")
    with pytest.raises(ConfigError, match=r"model\.conditioning must be 'none' or 'auto' for prior 'latent_only'"):
        config_from_dict({"prior": {"name": "latent_only"}, "model": {"conditioning": "concat"}}, registry)


def test_a_decoder_declaring_its_conditioning_methods_gets_one_and_refuses_the_others() -> None:
    import dataclasses

    from ssvae_core.registry import default_registry

    dense = default_registry().get("decoder", "dense").factory
    registry = _registry_with("decoder", "concat_only", dataclasses.replace(dense, conditioning=("concat", "none")))
    config = config_from_dict({"decoder": {"name": "concat_only"}}, registry)
    assert config.model.conditioning == "concat"
    with pytest.raises(ConfigError, match=re.escape("model.conditioning must be one of 'auto', 'concat', 'none' for decoder 'concat_only'")):
        config_from_dict({"decoder": {"name": "concat_only"}, "model": {"conditioning": "film"}}, registry)


def test_a_prior_built_otherwise_than_declared_is_refused_naming_the_declaration() -> None:
    import dataclasses

    from ssvae_core.registry import default_registry

    mixture = default_registry().get("prior", "mixture").factory
    registry = _registry_with("prior", "mislabeled", dataclasses.replace(mixture, channels=False))
    config = config_from_dict({"prior": {"name": "mislabeled"}}, registry)
    assert config.head.name == "softmax"
    with pytest.raises(ConfigError, match="declares channels=False"):
        build_model(config, input_shape=(4,), num_classes=3, key=jax.random.PRNGKey(0), registry=registry)


def test_a_factory_declaring_unknown_conditioning_methods_is_refused() -> None:
    import dataclasses

    from ssvae_core.registry import default_registry

    dense = default_registry().get("decoder", "dense").factory
    with pytest.raises(TypeError, match="'none' included"):
        dataclasses.replace(dense, conditioning=("film",))


# --- typed values --------------------------------------------------------------------------


def test_with_values_sets_typed_values_by_dotted_key() -> None:
    config = with_values(default_config(), {"train.steps": 100, "data.labels_per_class": 1, "seed": 3, "decoder.hidden": (8,)})
    assert (config.train.steps, config.data.labels_per_class, config.seed) == (100, 1, 3)
    assert config.decoder.options.hidden == (8,)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train.steps": 0}, "train.steps must be an integer >= 1, got 0"),
        ({"data.labels_per_class": -1}, "data.labels_per_class must be an integer >= 0 (0: no labels) or 'all'"),
        ({"data.labels_per_class": "every"}, "data.labels_per_class must be an integer >= 0 (0: no labels) or 'all'"),
        ({"model.latnt_dim": 3}, "unknown option model.latnt_dim (did you mean 'latent_dim'?)"),
        ({"train": 3}, "[train] must be a table of options, got 3"),
        ({"a.b.c.d": 1}, "a config key must be section.key, loss.<term>.key or seed, got 'a.b.c.d'"),
    ],
)
def test_with_values_refuses_bad_values_with_the_messages_of_a_config_file(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        with_values(default_config(), values)
    raw = {}
    for key, value in values.items():
        if key.count(".") == 1:
            section, name = key.split(".")
            raw.setdefault(section, {})[name] = value
    if raw:  # the same message from a config file
        with pytest.raises(ConfigError, match=re.escape(message)):
            config_from_dict(raw)


def test_with_values_decides_auto_settings_again_for_a_new_prior() -> None:
    config = with_values(config_from_dict({"head": {"name": "auto", "alpha0": 0.5}}), {"model.latent_dim": 3})
    assert (config.head.name, config.head.options.alpha0) == ("tau", 0.5)
    standard = with_values(default_config(), {"prior.name": "standard"})
    assert (standard.head.name, standard.model.conditioning) == ("softmax", "none")
    explicit = config_from_dict({"head": {"name": "tau"}})
    with pytest.raises(ConfigError, match="head 'tau' needs a prior with channels"):
        with_values(explicit, {"prior.name": "standard"})


def test_load_config_applies_typed_values_before_the_set_strings(tmp_path: Path) -> None:
    config = load_config(None, ["train.steps=7"], values={"train.steps": 100, "data.dataset": 'a "b".npz'})
    assert (config.train.steps, config.data.dataset) == (7, 'a "b".npz')


def test_graph_alpha_of_one_is_rejected() -> None:
    _rejects({"loss": {"graph_label": {"alpha": 1.0}}}, "loss.graph_label.alpha must be < 1, got 1")


def test_a_flat_loss_key_of_a_term_names_its_new_table() -> None:
    _rejects(
        {"loss": {"consistency_weight": 2.0}},
        "loss.consistency_weight is now loss.consistency.weight",
    )


def test_an_unknown_loss_term_table_is_rejected_with_a_suggestion() -> None:
    _rejects({"loss": {"consistensy": {"weight": 1.0}}}, "unknown loss term [loss.consistensy] (did you mean 'consistency'?)")


def test_an_unknown_option_of_a_loss_term_is_rejected() -> None:
    _rejects({"loss": {"usage": {"wieght": 1.0}}}, "unknown option loss.usage.wieght (did you mean 'weight'?)")


def test_term_options_come_from_their_tables_and_overrides() -> None:
    raw = apply_overrides({"loss": {"usage": {"weight": -2.0}}}, ["loss.consistency.weight=0.5", "loss.usage.warmup_steps=10"])
    config = config_from_dict(raw)
    assert config.term_options("usage").weight == -2.0
    assert config.term_options("usage").warmup_steps == 10
    assert config.term_options("consistency").weight == 0.5
    assert config.term_options("supervised").weight == 10.0
    assert config.to_dict()["loss"]["consistency"] == {"weight": 0.5, "warmup_steps": 0, "detach_view": False}


def test_preset_file_and_overrides_merge_term_tables_key_by_key(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[loss.graph_label]\nshare = 0.5\n")
    config = load_config(path, ["loss.graph_label.neighbours=7"], preset="digits")
    options = config.term_options("graph_label")
    assert (options.weight, options.share, options.neighbours) == (5.0, 0.5, 7)
