"""Checkpoints: one file holding a JSON manifest and the serialised pytree leaves.

Layout: the magic line ``SSVAE-CHECKPOINT\\n``, the manifest length (8 bytes, little
endian), the manifest (UTF-8 JSON: format version, resolved config, step, input shape,
label names, plugin packages and versions), then ``eqx.tree_serialise_leaves`` of
``(model, state, opt_state)``. Loading rebuilds the model skeleton from the config and
fills in the leaves, so a checkpoint never runs code. Files are written to a temporary
name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import optax

from ssvae_core.config import COMPONENT_SECTIONS, Config, config_from_dict
from ssvae_core.errors import CheckpointError, ConfigError
from ssvae_core.model import SSVAE, build_model
from ssvae_core.registry import Registry, default_registry
from ssvae_core.training import TrainState, init_state, make_optimizer

MAGIC = b"SSVAE-CHECKPOINT\n"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: everything needed to predict or to resume training."""

    model: SSVAE
    state: TrainState
    opt_state: optax.OptState
    config: Config
    manifest: dict[str, Any]

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["label_names"])


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def plugin_versions(config: Config, registry: Registry) -> dict[str, dict[str, str]]:
    """The package and version of each component the config uses."""
    versions = {}
    for section in COMPONENT_SECTIONS:
        component = registry.get(section, getattr(config, section).name)
        versions[section] = {
            "name": component.name,
            "package": component.package,
            "version": component.version,
        }
    return versions


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: SSVAE,
    state: TrainState,
    opt_state: optax.OptState,
    config: Config,
    input_shape: tuple[int, ...],
    label_names: tuple[str, ...],
    registry: Registry | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Serialise a run's model, state and optimiser state with its manifest, atomically."""
    registry = registry or default_registry()
    manifest = {
        "format_version": FORMAT_VERSION,
        "step": int(state.step),
        "input_shape": list(input_shape),
        "num_classes": len(label_names),
        "label_names": list(label_names),
        "config": config.to_dict(),
        "plugins": plugin_versions(config, registry),
        **(extra or {}),
    }
    header = json.dumps(manifest).encode("utf-8")
    leaves = io.BytesIO()
    eqx.tree_serialise_leaves(leaves, (model, state, opt_state))
    payload = MAGIC + struct.pack("<Q", len(header)) + header + leaves.getvalue()
    atomic_write_bytes(path, payload)


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    where = os.fspath(path)
    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {where!r} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {where!r} is a directory, expected a checkpoint file") from None
    if not payload.startswith(MAGIC):
        raise CheckpointError(f"{where!r} is not an ssvae checkpoint (bad magic header)")
    offset = len(MAGIC)
    if len(payload) < offset + 8:
        raise CheckpointError(f"checkpoint {where!r} is truncated (no manifest length)")
    (length,) = struct.unpack("<Q", payload[offset : offset + 8])
    offset += 8
    try:
        manifest = json.loads(payload[offset : offset + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {where!r} has a corrupt or truncated manifest") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"checkpoint {where!r} manifest must be a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where!r} has format version {version!r}; this ssvae reads version {FORMAT_VERSION}"
        )
    for key in ("config", "input_shape", "label_names", "step"):
        if key not in manifest:
            raise CheckpointError(f"checkpoint {where!r} manifest lacks {key!r}")
    return manifest, payload[offset + length :]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a checkpoint, without loading its arrays."""
    return _read(path)[0]


def load_checkpoint(path: str | os.PathLike[str], registry: Registry | None = None) -> Checkpoint:
    """Rebuild the model from the manifest's config and fill in the saved leaves."""
    registry = registry or default_registry()
    where = os.fspath(path)
    manifest, leaves = _read(path)
    try:
        config = config_from_dict(manifest["config"], registry)
        model, config = build_model(
            config,
            input_shape=tuple(manifest["input_shape"]),
            num_classes=len(manifest["label_names"]),
            key=jax.random.PRNGKey(0),
            registry=registry,
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {where!r} cannot be rebuilt: {error}") from None
    state = init_state(model, jax.random.PRNGKey(0))
    opt_state = make_optimizer(config.train, model).init(eqx.filter(model, eqx.is_inexact_array))
    try:
        model, state, opt_state = eqx.tree_deserialise_leaves(
            io.BytesIO(leaves), (model, state, opt_state)
        )
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {where!r} arrays do not match its config ({type(error).__name__}: {error}); "
            "the file is truncated or was written by an incompatible plugin version"
        ) from None
    return Checkpoint(model=model, state=state, opt_state=opt_state, config=config, manifest=manifest)
