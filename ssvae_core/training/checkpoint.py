"""Checkpoints: one file holding a JSON manifest and the serialised pytree leaves.

Layout: the magic line ``SSVAE-CHECKPOINT\\n``, the manifest length (8 bytes, little
endian), the manifest (UTF-8 JSON: format version, resolved config, step, input shape,
label names, plugin packages and versions, the size of the array payload and a SHA-256
content hash), then ``eqx.tree_serialise_leaves`` of ``(model, state, opt_state)``.
Loading rebuilds the model skeleton from the config and fills in the leaves, so a
checkpoint never runs code. Files are written to a temporary name and renamed, so a crash
never leaves a half-written checkpoint.

Every read (``read_manifest`` and ``load_checkpoint``) verifies the content hash,
which covers the manifest (without the hash itself, as canonical JSON) and every array
byte, and refuses a file with bytes appended, cut off or changed. The manifest's claims
(input shape, label names, step) are then checked before anything is built, so a crafted
manifest cannot make loading allocate more than the file's own arrays could fill.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import equinox as eqx
import jax
import optax

from ssvae_core.config import COMPONENT_SECTIONS, Config, config_from_dict
from ssvae_core.errors import CheckpointError, ConfigError, read_user_file
from ssvae_core.modelling.model import SSVAE, build_model
from ssvae_core.registry import Registry, default_registry
from ssvae_core.training import TrainState, init_state, make_optimizer

MAGIC = b"SSVAE-CHECKPOINT\n"
FORMAT_VERSION = 3
HASH_KEY = "sha256"
PAYLOAD_KEY = "payload_bytes"
MAX_INPUT_SIZE = 10**7  # values in one example (a 3162 x 3162 image); far above any real input
MAX_INPUT_RANK = 4
MAX_CLASSES = 10**5


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
        # mkstemp creates 0600; give the file the mode any other file written here gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
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


def content_hash(manifest: dict[str, Any], leaves: bytes) -> str:
    """SHA-256 (hex) of the manifest without its hash field, as canonical JSON, and the arrays.

    The canonical JSON has sorted keys, no spaces and ASCII escapes, so re-encoding the
    manifest (or reordering its keys) does not change the hash.
    """
    unsealed = {key: value for key, value in manifest.items() if key != HASH_KEY}
    canonical = json.dumps(
        unsealed, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")
    digest = hashlib.sha256()
    digest.update(struct.pack("<Q", len(canonical)))
    digest.update(canonical)
    digest.update(leaves)
    return digest.hexdigest()


def seal(manifest: dict[str, Any], leaves: bytes) -> bytes:
    """The checkpoint file's bytes: ``manifest`` with payload size and content hash, then ``leaves``."""
    sealed = {key: value for key, value in manifest.items() if key != HASH_KEY}
    sealed[PAYLOAD_KEY] = len(leaves)
    sealed[HASH_KEY] = content_hash(sealed, leaves)
    header = json.dumps(sealed).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(header)) + header + leaves


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
    """Serialise a run's model, state and optimiser state with its manifest, atomically.

    ``extra`` adds keys to the manifest; it cannot replace the keys ssvae writes itself.
    """
    registry = registry or default_registry()
    manifest = {
        **(extra or {}),
        "format_version": FORMAT_VERSION,
        "step": int(state.step),
        "input_shape": list(input_shape),
        "num_classes": len(label_names),
        "label_names": list(label_names),
        "config": config.to_dict(),
        "plugins": plugin_versions(config, registry),
    }
    leaves = io.BytesIO()
    eqx.tree_serialise_leaves(leaves, (model, state, opt_state))
    atomic_write_bytes(path, seal(manifest, leaves.getvalue()))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_claims(manifest: dict[str, Any], where: str) -> None:
    """Refuse a manifest whose shape, labels or step are malformed or implausibly large."""
    shape = manifest["input_shape"]
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_INPUT_RANK
        or not all(_is_int(d) and d > 0 for d in shape)
    ):
        raise CheckpointError(
            f"checkpoint {where!r} manifest has input_shape {shape!r}; expected a list of "
            f"1 to {MAX_INPUT_RANK} positive integers"
        )
    if math.prod(shape) > MAX_INPUT_SIZE:
        raise CheckpointError(
            f"checkpoint {where!r} manifest claims input_shape {shape} "
            f"({math.prod(shape)} values per example); at most {MAX_INPUT_SIZE} are allowed"
        )
    names = manifest["label_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(
            f"checkpoint {where!r} manifest has label_names {_short(names)}; expected a list of strings"
        )
    if not 1 <= len(names) <= MAX_CLASSES:
        raise CheckpointError(
            f"checkpoint {where!r} manifest lists {len(names)} label names; "
            f"expected 1 to {MAX_CLASSES}"
        )
    step = manifest["step"]
    if not _is_int(step) or step < 0:
        raise CheckpointError(
            f"checkpoint {where!r} manifest has step {_short(step)}; expected an integer >= 0"
        )
    if not isinstance(manifest["config"], dict):
        raise CheckpointError(
            f"checkpoint {where!r} manifest has config {_short(manifest['config'])}; expected a JSON object"
        )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    where = os.fspath(path)
    payload = read_user_file(path, "checkpoint", CheckpointError)
    if not payload.startswith(MAGIC):
        raise CheckpointError(f"{where!r} is not an ssvae checkpoint (bad magic header)")
    offset = len(MAGIC)
    if len(payload) < offset + 8:
        raise CheckpointError(f"checkpoint {where!r} is truncated (no manifest length)")
    (length,) = struct.unpack("<Q", payload[offset : offset + 8])
    offset += 8
    try:
        manifest = json.loads(payload[offset : offset + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"checkpoint {where!r} has a corrupt or truncated manifest") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"checkpoint {where!r} manifest must be a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where!r} has format version {_short(version)}; "
            f"this ssvae reads version {FORMAT_VERSION}"
        )
    leaves = payload[offset + length :]
    expected = manifest.get(PAYLOAD_KEY)
    stored = manifest.get(HASH_KEY)
    if not _is_int(expected) or not isinstance(stored, str):
        raise CheckpointError(
            f"checkpoint {where!r} manifest lacks its payload size or content hash; "
            "the file was modified or corrupted"
        )
    if len(leaves) > expected:
        raise CheckpointError(
            f"checkpoint {where!r} has {len(leaves) - expected} unexpected byte(s) after its "
            "arrays; the file was modified or corrupted"
        )
    if len(leaves) < expected:
        raise CheckpointError(
            f"checkpoint {where!r} is truncated: its arrays need {expected} bytes, "
            f"the file holds {len(leaves)}"
        )
    try:
        actual = content_hash(manifest, leaves)
    except (TypeError, ValueError):  # NaN or infinity in the manifest: not written by ssvae
        actual = ""
    if not hmac.compare_digest(actual, stored):
        raise CheckpointError(
            f"checkpoint {where!r} does not match its content hash; "
            "the file was modified or corrupted after it was written"
        )
    for key in ("config", "input_shape", "label_names", "step"):
        if key not in manifest:
            raise CheckpointError(f"checkpoint {where!r} manifest lacks {key!r}")
    _check_claims(manifest, where)
    return manifest, leaves


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a checkpoint, without loading its arrays.

    Like ``load_checkpoint`` it verifies the content hash and the manifest's claims,
    so a modified, truncated or extended file is a ``CheckpointError`` here too.
    """
    return _read(path)[0]


def _skeleton(
    config: Config, input_shape: tuple[int, ...], num_classes: int, registry: Registry
) -> tuple[SSVAE, Config, TrainState, optax.OptState]:
    model, config = build_model(
        config,
        input_shape=input_shape,
        num_classes=num_classes,
        key=jax.random.PRNGKey(0),
        registry=registry,
    )
    state = init_state(model, jax.random.PRNGKey(0))
    opt_state = make_optimizer(config.train, model).init(eqx.filter(model, eqx.is_inexact_array))
    return model, config, state, opt_state


def _array_bytes(tree: Any) -> int:
    """Bytes of array data in ``tree`` (arrays or their shape-only stand-ins)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            total += math.prod(leaf.shape) * leaf.dtype.itemsize
    return total


def load_checkpoint(path: str | os.PathLike[str], registry: Registry | None = None) -> Checkpoint:
    """Rebuild the model from the manifest's config and fill in the saved leaves.

    The file is verified first (content hash, payload size, manifest claims); then the
    skeleton is traced without allocating, and a manifest whose model would need more array
    bytes than the file holds is refused before any array is built. (A plugin component
    that needs concrete values while it is built cannot be traced; its skeleton is built
    directly, bounded by the cap on the claimed input size.)
    """
    registry = registry or default_registry()
    where = os.fspath(path)
    manifest, leaves = _read(path)
    input_shape = tuple(manifest["input_shape"])
    num_classes = len(manifest["label_names"])
    try:
        config = config_from_dict(manifest["config"], registry)
        try:
            shapes = eqx.filter_eval_shape(
                lambda: _skeleton(config, input_shape, num_classes, registry)
            )
            needed = _array_bytes((shapes[0], shapes[2], shapes[3]))
        except jax.errors.JAXTypeError:  # a component that cannot be built from shapes alone
            needed = 0
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {where!r} cannot be rebuilt: {error}") from None
    if needed > len(leaves):
        raise CheckpointError(
            f"checkpoint {where!r} manifest describes a model with {needed} bytes of arrays "
            f"(input_shape {list(input_shape)}, {num_classes} classes), but the file holds "
            f"{len(leaves)}; the manifest does not match the arrays"
        )
    try:
        model, config, state, opt_state = _skeleton(config, input_shape, num_classes, registry)
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {where!r} cannot be rebuilt: {error}") from None
    try:
        model, state, opt_state = eqx.tree_deserialise_leaves(
            io.BytesIO(leaves), (model, state, opt_state)
        )
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {where!r} arrays do not match its config ({type(error).__name__}: {error}); "
            "the file was written by an incompatible ssvae or plugin version"
        ) from None
    return Checkpoint(model=model, state=state, opt_state=opt_state, config=config, manifest=manifest)
