"""Run configuration: TOML tables mapped onto validated dataclasses.

Core sections (``data``, ``model``, ``loss``, ``augment``, ``train``, ``calibration``) are
fixed dataclasses; component sections (``prior``, ``encoder``, ``decoder``, ``head``) hold a ``name`` plus that
component's own options, validated against the options dataclass its plugin registered.
Unknown keys are rejected with the nearest valid name suggested.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tomli_w

from ssvae_core.data.augment import AugmentConfig
from ssvae_core.errors import ConfigError, read_user_file
from ssvae_core.modelling.conditioning import CONDITIONING_METHODS
from ssvae_core.modelling.likelihoods import LIKELIHOODS
from ssvae_core.options import option, options_to_dict, parse_options, suggest
from ssvae_core.registry import Registry, default_registry
from ssvae_core.runs.calibration import CalibrationConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# ``data.labels_per_class`` meaning every training label of the data.
EVERY_LABEL = "all"


def check_label_budget(value: object) -> int | str:
    """``value`` if it is a label budget: an integer >= 0 (0: no labels) or ``all``; else a
    ``ValueError``. The one check of ``data.labels_per_class``, wherever it comes from."""
    if value == EVERY_LABEL or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value  # type: ignore[return-value]
    raise ValueError(
        f"labels_per_class must be an integer >= 0 (0: no labels) or {EVERY_LABEL!r} "
        f"(every training label), got {value!r}"
    )


def label_budget_argument(text: str) -> int | str:
    """A command-line label budget, checked by ``check_label_budget``; an
    ``argparse.ArgumentTypeError`` otherwise (argparse exits with status 2)."""
    import argparse

    value = str(text).strip().lower()
    try:
        if value.lstrip("-").isdigit():
            return check_label_budget(int(value))
        return check_label_budget(value if value == EVERY_LABEL else text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass(frozen=True)
class DataConfig:
    dataset: str = option(
        "digits",
        help="'digits' (embedded), an .npz or .csv file, or a folder: MNIST-style IDX files, x.npy (and y.npy), or one subfolder of PNG/JPEG images per class",
    )
    test_dataset: str = option(
        "",
        help="a test set that came with the data, in any form 'dataset' takes, with the same sample shape and class names: the whole of 'dataset' is then training data and this is the test set (empty: hold out a fifth of 'dataset')",
    )
    labels_per_class: int | str = option(
        10,
        help=f"labeled training examples per class: an integer >= 0 (0: none, the model learns from the unlabeled data alone) or {EVERY_LABEL!r} (every training label)",
    )

    exact_neighbours: int = option(
        50_000,
        help="training rows up to which the pixel kNN graphs (graph labels, graph clustering, the calibration's propagation) use exact neighbours; above it approximate ones (pynndescent), whose cost grows about as N·k instead of N²",
        minimum=0,
    )

    def validate(self) -> None:
        if self.test_dataset and self.test_dataset == self.dataset:
            raise ValueError(
                f"test_dataset must be a different dataset from dataset (both are {self.dataset!r}); "
                "leave it empty to hold out a fifth of the data"
            )
        check_label_budget(self.labels_per_class)

    @property
    def label_budget(self) -> int | None:
        """``labels_per_class`` for the split: ``None`` means every training label, 0 none."""
        return None if self.labels_per_class == EVERY_LABEL else int(self.labels_per_class)

    @property
    def label_free(self) -> bool:
        """Whether the split labels nothing: the model learns from unlabeled data alone."""
        return self.labels_per_class == 0


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = option(16, help="size of the continuous latent z", minimum=1)
    embedding_dim: int = option(16, help="size of the component embeddings e_c", minimum=1)
    conditioning: str = option(
        "auto",
        help="how the decoder sees e_c ('auto', decided when the config is loaded: film for a prior whose channels condition the decoder, else none)",
        choices=("auto", *CONDITIONING_METHODS),
    )
    likelihood: str = option("bernoulli", help="observation model p(x|z,c)", choices=LIKELIHOODS)
    sigma: float = option(0.1, help="σ of the fixed Gaussian likelihood", minimum=0.0, exclusive_minimum=True)
    sigma_min: float = option(0.05, help="lower clip of the heteroscedastic σ", minimum=0.0, exclusive_minimum=True)
    sigma_max: float = option(0.5, help="upper clip of the heteroscedastic σ", minimum=0.0, exclusive_minimum=True)
    sigma_per_pixel: bool = option(False, help="one heteroscedastic σ per pixel (else per image)")

    def validate(self) -> None:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"sigma_min must be < sigma_max, got {self.sigma_min:g} >= {self.sigma_max:g}"
            )


@dataclass(frozen=True)
class LossConfig:
    """The ELBO's own weights. Every other term has its own table ``[loss.<term>]``."""

    beta_z: float = option(1.0, help="weight β_z of KL_z after warm-up", minimum=0.0)
    kl_warmup_steps: int = option(0, help="steps over which β_z rises linearly from 0", minimum=0)
    beta_c: float = option(1.0, help="weight β_c of KL(q(c|x) || π)", minimum=0.0)
    dirichlet_weight: float = option(
        1.0, help="λ_π of the prior's regularisers (the Dirichlet penalty on a learnable π)", minimum=0.0
    )
    reconstruct_labeled: bool = option(
        True, help="include the labeled rows of each batch in the reconstruction and KL terms"
    )
    top_channels: int = option(
        0,
        help="decode only each example's M most responsible channels in training (M; 0 = all K): the reconstruction is then the expectation over those M channels, their responsibilities renormalised",
        minimum=0,
    )


def moved_loss_keys(registry: Registry) -> dict[str, str]:
    """Keys of the former flat ``[loss]`` table, and where each now lives
    (``"usage_weight"`` → ``"usage.weight"``), as each loss term's options declare them
    (``former_keys``)."""
    moved: dict[str, str] = {}
    for name in registry.names("loss_term"):
        options = registry.get("loss_term", name).factory.options
        for old, field in getattr(options, "former_keys", {}).items():
            moved[old] = f"{name}.{field}"
    return moved


# The training step counter is a 32-bit integer: no run may take more steps than this.
MAX_STEPS = 2**31 - 1
# Seeds reach JAX's PRNGKey, which takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1


def check_seed(seed: object, what: str) -> int:
    """``seed`` if it is a whole number from 0 to ``MAX_SEED``; else one ``ConfigError``."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what} must be an integer from 0 to 2**63 - 1 ({MAX_SEED}), got {seed!r:.40}")
    return seed


def check_steps(steps: object, what: str) -> int:
    """``steps`` if it is a whole number from 1 to ``MAX_STEPS``; else one ``ConfigError``."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise ConfigError(
            f"{what} must be a positive integer of at most 2**31 - 1 ({MAX_STEPS}) steps, "
            f"got {steps!r:.40}"
        )
    return steps


@dataclass(frozen=True)
class TrainConfig:
    steps: int = option(4000, help="optimiser steps", minimum=1, maximum=MAX_STEPS)
    batch_size: int = option(128, help="examples per step, labeled ones included", minimum=2)
    labeled_fraction: float = option(
        0.25, help="share of each batch drawn from the labeled examples", minimum=0.0, maximum=1.0
    )
    balance_labels: bool = option(
        True,
        help="draw labeled examples class-balanced: a class with fewer labels (a class named after training, say) has its rows repeated in the labeled pool; equal budgets are unchanged",
    )
    optimizer: str = option("adam", help="optax optimiser", choices=("adam", "adamw"))
    learning_rate: float = option(1e-3, help="step size", minimum=0.0, exclusive_minimum=True)
    lr_schedule: str = option(
        "constant",
        help="learning-rate schedule over train.steps ('cosine' decays to 0; resuming beyond train.steps stretches it to the new total)",
        choices=("constant", "cosine"),
    )
    weight_decay: float = option(1e-4, help="decoupled weight decay (adamw only)", minimum=0.0)
    grad_clip: float = option(5.0, help="global gradient-norm clip (0 disables)", minimum=0.0)
    log_every: int = option(100, help="steps between metric logs (metrics stay on the device until then)", minimum=1)
    checkpoint_every: int = option(
        500,
        help="steps between checkpoints of a run directory, at the end of the log_every chunk that reaches them (0: only at the end)",
        minimum=0,
    )
    fuse_steps: bool = option(
        False, help="compile each log_every chunk into one lax.scan (fast on GPU; slow for convolutions on CPU)"
    )
    devices: int = option(
        0,
        help="devices each process trains on, data-parallel: the batch is split across every process's devices, parameters, optimiser state and τ counts are replicated, and every batch statistic is over the whole batch (0: every local device; batch_size must divide evenly over all of them)",
        minimum=0,
    )
    split_channels: bool = option(
        True,
        help="at the start of each warm retrain, split a channel where labeled examples of two classes sit (or a label lands in a channel another label owns): the moving class gets a copy of the channel in a free (or freed) channel and takes its look-alikes with it; the round record lists the splits",
    )
    data_on_device: str = option(
        "auto",
        help="where the training inputs live: 'on' puts them on the device whole and each step draws its batch there; 'off' keeps them on the host (a memory-mapped array stays one) and a thread gathers each batch's rows, from the same seeded draws, two batches ahead; 'auto' is 'on' up to 512 MiB of float32 inputs, else 'off'. The neighbour term needs 'on'",
        choices=("auto", "on", "off"),
    )
    eval_every: int = option(
        0,
        help="steps between held-out evaluations of a run (at the end of the log_every chunk that reaches them, and at the last step): held_out_accuracy, held_out_ece (of the head's p(y|x): the calibration is fitted after training) and train_time_s join that line of metrics.jsonl (0: off)",
        minimum=0,
    )


@dataclass(frozen=True)
class ComponentConfig:
    """A component by registry name, with its options (a validated dataclass)."""

    name: str
    options: Any


CORE_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "calibration": CalibrationConfig,
}
COMPONENT_SECTIONS = ("prior", "encoder", "decoder", "head")
DEFAULT_COMPONENTS = {"prior": "mixture", "encoder": "dense", "decoder": "dense", "head": "auto"}
AUTO_HEAD = "auto"


@dataclass(frozen=True)
class Config:
    """A complete, validated run configuration.

    ``load_config`` and ``config_from_dict`` return it resolved: ``head`` names a head and
    ``model.conditioning`` a method, never ``"auto"`` (``resolve_components``). ``auto``
    names the settings that were ``"auto"`` (``"head"``, ``"model.conditioning"``), so that
    ``with_values`` decides them again for the new values.
    """

    seed: int
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    augment: AugmentConfig
    train: TrainConfig
    calibration: CalibrationConfig
    prior: ComponentConfig
    encoder: ComponentConfig
    decoder: ComponentConfig
    head: ComponentConfig
    terms: tuple[tuple[str, Any], ...] = ()
    auto: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)

    def term_options(self, name: str) -> Any:
        """The options of loss term ``name`` (its ``[loss.<name>]`` table)."""
        for term, options in self.terms:
            if term == name:
                return options
        raise KeyError(name)

    @property
    def labeled_batch_size(self) -> int:
        """Labeled rows per batch: at least one whenever the fraction is positive."""
        fraction = self.train.labeled_fraction
        if fraction == 0.0:
            return 0
        return min(self.train.batch_size - 1, max(1, math.ceil(fraction * self.train.batch_size)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML-ready) that ``config_from_dict`` reads back."""
        result: dict[str, Any] = {"seed": self.seed}
        for section in CORE_SECTIONS:
            result[section] = options_to_dict(getattr(self, section))
        for name, options in self.terms:
            result["loss"][name] = options_to_dict(options)
        for section in COMPONENT_SECTIONS:
            component: ComponentConfig = getattr(self, section)
            options = (
                dict(component.options)
                if isinstance(component.options, Mapping)
                else options_to_dict(component.options)
            )
            result[section] = {"name": component.name, **options}
        return result

    def replace(self, **changes: Any) -> Config:
        """A copy with whole sections replaced."""
        return dataclasses.replace(self, **changes)


def _table(raw: Mapping[str, Any], section: str) -> dict[str, Any]:
    value = raw.get(section, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{section}] must be a table of options, got {value!r}")
    return dict(value)


def parse_component(
    section: str, raw: Mapping[str, Any], registry: Registry
) -> ComponentConfig:
    """Validate one component section against the options of the component it names."""
    table = dict(raw)
    name = table.pop("name", DEFAULT_COMPONENTS[section])
    if not isinstance(name, str):
        raise ConfigError(f"{section}.name must be a string, got {name!r}")
    if section == "head" and name == AUTO_HEAD:
        # Decided by resolve_components: τ head with channels, softmax without.
        return ComponentConfig(AUTO_HEAD, table)
    component = registry.get(section, name)
    return ComponentConfig(name, parse_options(component.factory.options, table, section))


def config_from_dict(raw: Mapping[str, Any], registry: Registry | None = None) -> Config:
    """Build a validated ``Config``; missing keys take their defaults."""
    registry = registry or default_registry()
    allowed = ["seed", *CORE_SECTIONS, *COMPONENT_SECTIONS]
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"unknown config section {key!r}{suggest(key, allowed)}; allowed: {', '.join(allowed)}"
            )
    seed = check_seed(raw.get("seed", 0), "seed")
    sections: dict[str, Any] = {}
    loss_table = _table(raw, "loss")
    term_tables = {k: v for k, v in loss_table.items() if isinstance(v, Mapping)}
    core_loss = {k: v for k, v in loss_table.items() if k not in term_tables}
    moved = moved_loss_keys(registry) if core_loss else {}
    for key in core_loss:
        if key in moved:
            raise ConfigError(
                f"loss.{key} is now loss.{moved[key]}: each loss term has its own "
                f"table [loss.<term>] (in --set: loss.{moved[key]}=...)"
            )
    for section, cls in CORE_SECTIONS.items():
        table = core_loss if section == "loss" else _table(raw, section)
        sections[section] = parse_options(cls, table, section)
    for section in COMPONENT_SECTIONS:
        sections[section] = parse_component(section, _table(raw, section), registry)
    sections["terms"] = parse_terms(term_tables, registry)
    return resolve_components(Config(seed=seed, **sections), registry)


def _auto_conditioning(conditions_decoder: bool, accepted: Sequence[str]) -> str:
    """``film`` for a prior whose channels condition the decoder (else the first other
    method the decoder accepts), ``none`` otherwise."""
    others = [method for method in accepted if method != "none"]
    if not conditions_decoder or not others:
        return "none"
    return "film" if "film" in others else others[0]


def _resolved_conditioning(config: Config, conditions_decoder: bool, registry: Registry) -> str:
    conditioning = config.model.conditioning
    decoder = config.decoder.name
    accepted = registry.get("decoder", decoder).factory.conditioning
    if conditioning == "auto":
        return _auto_conditioning(conditions_decoder, accepted)
    if conditioning != "none" and not conditions_decoder:
        raise ConfigError(
            f"model.conditioning must be 'none' or 'auto' for prior {config.prior.name!r}, "
            f"whose channels do not condition the decoder; got {conditioning!r}"
        )
    if conditioning not in accepted:
        raise ConfigError(
            f"model.conditioning must be one of {', '.join(repr(m) for m in ('auto', *accepted))} "
            f"for decoder {decoder!r}, which accepts only those; got {conditioning!r}"
        )
    return conditioning


def _resolved_head(config: Config, channels: bool, registry: Registry) -> ComponentConfig:
    head = config.head
    if head.name == AUTO_HEAD:
        head = parse_component("head", {"name": "tau" if channels else "softmax", **head.options}, registry)
    elif isinstance(head.options, Mapping):  # a ComponentConfig written by hand
        head = parse_component("head", {"name": head.name, **head.options}, registry)
    if registry.get("head", head.name).factory.needs_channels and not channels:
        raise ConfigError(
            f"head {head.name!r} needs a prior with channels, and prior {config.prior.name!r} "
            "has none; use head 'softmax' (or 'auto')"
        )
    return head


def resolve_components(config: Config, registry: Registry | None = None) -> Config:
    """``config`` with ``head = "auto"`` and ``model.conditioning = "auto"`` decided from
    what the factories declare (``ComponentFactory``): the τ head for a prior with
    channels, else softmax; ``film`` for a prior whose channels condition the decoder,
    else ``none``. A combination the declarations rule out (a conditioning method with a
    prior whose channels do not condition the decoder or a decoder that does not accept
    it, a head that needs channels with a prior without) is one ``ConfigError``. A
    resolved config comes back unchanged."""
    registry = registry or default_registry()
    prior = registry.get("prior", config.prior.name).factory
    channels = prior.has_channels(config.prior.options)
    conditioning = _resolved_conditioning(config, prior.channels_condition_decoder(config.prior.options), registry)
    head = _resolved_head(config, channels, registry)
    auto = set(config.auto)
    if config.model.conditioning == "auto":
        auto.add("model.conditioning")
    if config.head.name == AUTO_HEAD:
        auto.add("head")
    if conditioning == config.model.conditioning and head == config.head and auto == config.auto:
        return config
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, conditioning=conditioning),
        head=head,
        auto=frozenset(auto),
    )


def parse_terms(tables: Mapping[str, Mapping[str, Any]], registry: Registry) -> tuple[tuple[str, Any], ...]:
    """Every registered loss term with its options: the ``[loss.<term>]`` table or defaults."""
    names = registry.ordered("loss_term")
    for name in tables:
        if name not in names:
            raise ConfigError(
                f"unknown loss term [loss.{name}]{suggest(name, names)}; registered terms: "
                f"{', '.join(names)} (a term from a plugin needs its package installed)"
            )
    return tuple(
        (
            name,
            parse_options(registry.get("loss_term", name).factory.options, tables.get(name, {}), f"loss.{name}"),
        )
        for name in names
    )


def default_config(registry: Registry | None = None) -> Config:
    """Every default: mixture prior, dense networks, τ head, digits with 10 labels per class."""
    return config_from_dict({}, registry)


def _key_path(path: str) -> list[str] | None:
    """``section.key`` → its parts; ``None`` unless 1 to 3 non-empty parts."""
    keys = [k.strip() for k in path.strip().split(".")]
    return keys if all(keys) and len(keys) <= 3 else None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` → (path, value); the value is read as TOML, else as a string."""
    if not isinstance(text, str):
        raise ConfigError(f"an override must be a string section.key=value, got {text!r}")
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    path, value_text = text.split("=", 1)
    keys = _key_path(path)
    if keys is None:
        raise ConfigError(
            f"--set expects section.key=value, loss.<term>.key=value or seed=N, got {text!r}"
        )
    try:
        value = tomllib.loads(f"value = {value_text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return keys, value


def _set_value(table: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    """Set ``table[k1][k2]... = value``, making the tables on the way."""
    for depth, key in enumerate(keys[:-1]):
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"cannot set {'.'.join(keys)}: {where} is not a table")
    table[keys[-1]] = value


def set_values(raw: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with typed ``values`` set by dotted key (``{"train.steps": 100}``)."""
    result = merge_tables({}, raw)
    for path, value in values.items():
        keys = _key_path(path) if isinstance(path, str) else None
        if keys is None:
            raise ConfigError(
                f"a config key must be section.key, loss.<term>.key or seed, got {path!r}"
            )
        _set_value(result, keys, list(value) if isinstance(value, tuple) else value)
    return result


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``section.key=value`` override applied."""
    result = merge_tables({}, raw)
    for text in overrides:
        keys, value = parse_override(text)
        _set_value(result, keys, value)
    return result


def _unresolved_dict(config: Config) -> dict[str, Any]:
    """``config.to_dict()`` with the settings that were ``"auto"`` set to ``"auto"`` again
    (an automatic head keeps only the options that differ from its defaults)."""
    raw = config.to_dict()
    if "model.conditioning" in config.auto:
        raw["model"]["conditioning"] = "auto"
    if "head" in config.auto:
        defaults = options_to_dict(type(config.head.options)())
        raw["head"] = {"name": AUTO_HEAD} | {
            key: value for key, value in raw["head"].items() if key != "name" and defaults.get(key) != value
        }
    return raw


def with_values(config: Config, values: Mapping[str, Any], registry: Registry | None = None) -> Config:
    """``config`` with typed values set by dotted key, e.g.
    ``with_values(config, {"train.steps": 100, "data.labels_per_class": 1})``.

    The result is checked as a whole, as a TOML file would be, with the same messages
    (one ``ConfigError``); settings that were ``"auto"`` are decided again for the new
    values (a new prior gets the head that suits it); a component given another name
    starts from that component's defaults."""
    raw = _unresolved_dict(config)
    for section in COMPONENT_SECTIONS:
        name = values.get(f"{section}.name", raw[section]["name"])
        if name != raw[section]["name"]:
            raw[section] = {"name": name}
    return config_from_dict(set_values(raw, values), registry)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or malformed file is a ``ConfigError``."""
    try:
        where = repr(os.fspath(path))
    except TypeError:
        raise ConfigError(f"a config file path must be a string or path, got {path!r}") from None
    data = read_user_file(path, "config file", ConfigError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {where} is not UTF-8 text (byte {error.start}); TOML files must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {where} is not valid TOML: {error}") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    registry: Registry | None = None,
    *,
    preset: str | None = None,
    values: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then a shipped preset (if named), then the TOML file at ``path`` (if any),
    then typed ``values`` by dotted key (as ``with_values``), then the ``section.key=value``
    strings of ``overrides``; later layers win key by key. The config comes back resolved
    (``resolve_components``)."""
    raw: dict[str, Any] = {}
    top = read_toml(path) if path is not None else {}
    if preset is not None:
        from ssvae_core.presets import preset_table

        # the auto preset reads the data that the file, values and overrides name
        raw = preset_table(preset, apply_overrides(set_values(top, values or {}), overrides), registry)
    raw = merge_tables(raw, top)
    return config_from_dict(apply_overrides(set_values(raw, values or {}), overrides), registry)


def merge_tables(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, merging tables at every depth; ``base`` is left unchanged."""
    merged = {k: merge_tables({}, v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_tables(merged[key], value)
        else:
            merged[key] = merge_tables({}, value) if isinstance(value, Mapping) else value
    return merged


def dumps_toml(data: Mapping[str, Any]) -> str:
    """TOML text for a config dict (nested tables become ``[a.b]`` sections)."""
    return tomli_w.dumps(data)
