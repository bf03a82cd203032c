"""Run configuration: TOML tables mapped onto validated dataclasses.

Core sections (``data``, ``model``, ``loss``, ``train``) are fixed dataclasses; component
sections (``prior``, ``encoder``, ``decoder``, ``head``) hold a ``name`` plus that
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

from ssvae_core.augment import AugmentConfig
from ssvae_core.conditioning import CONDITIONING_METHODS
from ssvae_core.errors import ConfigError
from ssvae_core.likelihoods import LIKELIHOODS
from ssvae_core.options import option, options_to_dict, parse_options, suggest
from ssvae_core.registry import Registry, default_registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DataConfig:
    dataset: str = option(
        "digits", help="'digits' (embedded), an .npz file, or a folder with MNIST-style IDX files"
    )
    labels_per_class: int = option(
        10, help="labeled training examples per class (0 uses every training label)", minimum=0
    )

    @property
    def label_budget(self) -> int | None:
        """``labels_per_class`` for the split: ``None`` means every training label."""
        return self.labels_per_class or None


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = option(16, help="size of the continuous latent z", minimum=1)
    embedding_dim: int = option(16, help="size of the component embeddings e_c", minimum=1)
    conditioning: str = option(
        "auto",
        help="how the decoder sees e_c ('auto': film for priors that condition the decoder, else none)",
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
    beta_z: float = option(1.0, help="weight β_z of KL_z after warm-up", minimum=0.0)
    kl_warmup_steps: int = option(0, help="steps over which β_z rises linearly from 0", minimum=0)
    beta_c: float = option(1.0, help="weight β_c of KL(q(c|x) || π)", minimum=0.0)
    usage_weight: float = option(
        -5.0, help="w_u of the usage entropy H(p̂): > 0 concentrates, < 0 diversifies"
    )
    supervised_weight: float = option(10.0, help="λ_sup of the supervised loss", minimum=0.0)
    dirichlet_weight: float = option(1.0, help="λ_π of the Dirichlet penalty on a learnable π", minimum=0.0)
    reconstruct_labeled: bool = option(
        True, help="include the labeled rows of each batch in the unsupervised terms"
    )
    consistency_weight: float = option(
        5.0, help="weight of −log Σ_c r_c(x) r_c(x') between an image and an augmented view", minimum=0.0
    )
    neighbour_weight: float = option(
        0.0, help="weight of −log Σ_c r_c(x) r_c(n) between an image and one of its nearest neighbours", minimum=0.0
    )
    num_neighbours: int = option(5, help="k of the k-nearest-neighbour pairs (pixel space)", minimum=1)
    pseudo_label_weight: float = option(
        0.0,
        help="weight of the supervised loss on an augmented view of unlabeled rows whose own p(y|x) is confident",
        minimum=0.0,
    )
    pseudo_label_threshold: float = option(
        0.95, help="least max_y p(y|x) of the clean image for its argmax to become a pseudo-label", minimum=0.0, maximum=1.0
    )
    embedding_repulsion: float = option(
        0.0, help="weight of the RBF repulsion between component embeddings e_c", minimum=0.0
    )
    graph_label_weight: float = option(
        5.0,
        help="weight of the supervised loss on unlabeled rows given a label by propagation over the input kNN graph",
        minimum=0.0,
    )
    graph_label_share: float = option(
        0.8, help="share of the unlabeled training rows, most confident first, that get a propagated label", minimum=0.0, maximum=1.0
    )
    graph_neighbours: int = option(10, help="k of the kNN graph the labels propagate over", minimum=1)
    graph_alpha: float = option(
        0.2, help="α of the propagation F ← αSF + (1 − α)Y, 0 < α < 1 (larger reaches further)", minimum=0.0, exclusive_minimum=True
    )

    def validate(self) -> None:
        if self.graph_alpha >= 1.0:
            raise ValueError(f"graph_alpha must be < 1, got {self.graph_alpha:g}")

    @property
    def uses_view(self) -> bool:
        """Whether a term needs an augmented view of each row."""
        return self.consistency_weight > 0 or self.pseudo_label_weight > 0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = option(4000, help="optimiser steps", minimum=1)
    batch_size: int = option(128, help="examples per step, labeled ones included", minimum=2)
    labeled_fraction: float = option(
        0.25, help="share of each batch drawn from the labeled examples", minimum=0.0, maximum=1.0
    )
    optimizer: str = option("adam", help="optax optimiser", choices=("adam", "adamw"))
    learning_rate: float = option(1e-3, help="step size", minimum=0.0, exclusive_minimum=True)
    lr_schedule: str = option(
        "constant", help="learning-rate schedule over train.steps ('cosine' decays to 0; a resumed run stretches it to the new steps)", choices=("constant", "cosine")
    )
    weight_decay: float = option(1e-4, help="decoupled weight decay (adamw only)", minimum=0.0)
    grad_clip: float = option(5.0, help="global gradient-norm clip (0 disables)", minimum=0.0)
    log_every: int = option(100, help="steps between metric logs (metrics stay on the device until then)", minimum=1)
    fuse_steps: bool = option(
        False, help="compile each log_every chunk into one lax.scan (fast on GPU; slow for convolutions on CPU)"
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
}
COMPONENT_SECTIONS = ("prior", "encoder", "decoder", "head")
DEFAULT_COMPONENTS = {"prior": "mixture", "encoder": "dense", "decoder": "dense", "head": "auto"}
AUTO_HEAD = "auto"


@dataclass(frozen=True)
class Config:
    """A complete, validated run configuration."""

    seed: int
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    augment: AugmentConfig
    train: TrainConfig
    prior: ComponentConfig
    encoder: ComponentConfig
    decoder: ComponentConfig
    head: ComponentConfig

    @property
    def labeled_batch_size(self) -> int:
        """Labeled rows per batch: at least one whenever the fraction is positive."""
        fraction = self.train.labeled_fraction
        if fraction == 0.0:
            return 0
        return min(self.train.batch_size - 1, max(1, math.ceil(fraction * self.train.batch_size)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML-ready) that :func:`config_from_dict` reads back."""
        result: dict[str, Any] = {"seed": self.seed}
        for section in CORE_SECTIONS:
            result[section] = options_to_dict(getattr(self, section))
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
        # Resolved once the prior is built: τ head with channels, softmax without.
        return ComponentConfig(AUTO_HEAD, table)
    component = registry.get(section, name)
    return ComponentConfig(name, parse_options(component.factory.options, table, section))


def config_from_dict(raw: Mapping[str, Any], registry: Registry | None = None) -> Config:
    """Build a validated :class:`Config`; missing keys take their defaults."""
    registry = registry or default_registry()
    allowed = ["seed", *CORE_SECTIONS, *COMPONENT_SECTIONS]
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"unknown config section {key!r}{suggest(key, allowed)}; allowed: {', '.join(allowed)}"
            )
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    sections: dict[str, Any] = {}
    for section, cls in CORE_SECTIONS.items():
        sections[section] = parse_options(cls, _table(raw, section), section)
    for section in COMPONENT_SECTIONS:
        sections[section] = parse_component(section, _table(raw, section), registry)
    return Config(seed=seed, **sections)


def default_config(registry: Registry | None = None) -> Config:
    """Every default: mixture prior, dense networks, τ head, digits with 10 labels per class."""
    return config_from_dict({}, registry)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` → (path, value); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    path, value_text = text.split("=", 1)
    keys = [k.strip() for k in path.strip().split(".")]
    if not all(keys) or len(keys) > 2:
        raise ConfigError(f"--set expects section.key=value (or seed=N), got {text!r}")
    try:
        value = tomllib.loads(f"value = {value_text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return keys, value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``section.key=value`` override applied."""
    result = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) == 1:
            result[keys[0]] = value
            continue
        section, key = keys
        table = result.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"cannot set {section}.{key}: {section} is not a table")
        table[key] = value
    return result


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`ConfigError`."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {error}") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    registry: Registry | None = None,
    *,
    preset: str | None = None,
) -> Config:
    """Defaults, then a shipped preset (if named), then the TOML file at ``path`` (if any),
    then ``overrides``; later layers win key by key."""
    raw: dict[str, Any] = {}
    if preset is not None:
        from ssvae_core.presets import preset_path

        raw = read_toml(preset_path(preset))
    if path is not None:
        raw = merge_tables(raw, read_toml(path))
    return config_from_dict(apply_overrides(raw, overrides), registry)


def merge_tables(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, merging tables one level deep."""
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """TOML text for a dict of scalars and one level of tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for key, table in data.items():
        if isinstance(table, Mapping):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"
