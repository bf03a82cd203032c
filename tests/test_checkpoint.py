"""Checkpoints: an exact round trip, clear errors for bad files, and atomic writes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import equinox as eqx
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.checkpoint import MAGIC, load_checkpoint, read_manifest
from ssvae_core.errors import CheckpointError


@pytest.fixture(scope="module")
def saved(fitted_classifier: SSVAEClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "model.ckpt"
    fitted_classifier.save(path)
    return path


def _split(payload: bytes) -> tuple[dict, bytes]:
    offset = len(MAGIC)
    (length,) = struct.unpack("<Q", payload[offset : offset + 8])
    manifest = json.loads(payload[offset + 8 : offset + 8 + length])
    return manifest, payload[offset + 8 + length :]


def _join(manifest: dict, leaves: bytes) -> bytes:
    header = json.dumps(manifest).encode()
    return MAGIC + struct.pack("<Q", len(header)) + header + leaves


# --- round trip ----------------------------------------------------------------------------


def test_loaded_classifier_predicts_exactly_as_the_saved_one(
    fitted_classifier: SSVAEClassifier, saved: Path, synthetic
) -> None:
    loaded = SSVAEClassifier.load(saved)
    np.testing.assert_array_equal(
        loaded.predict_proba(synthetic["x"]), fitted_classifier.predict_proba(synthetic["x"])
    )
    np.testing.assert_array_equal(
        loaded.ood_score(synthetic["x"]), fitted_classifier.ood_score(synthetic["x"])
    )


def test_loaded_classifier_keeps_tau_step_labels_and_config(
    fitted_classifier: SSVAEClassifier, saved: Path
) -> None:
    loaded = SSVAEClassifier.load(saved)
    np.testing.assert_array_equal(loaded.tau, fitted_classifier.tau)
    assert int(loaded.state.step) == int(fitted_classifier.state.step)
    assert loaded.label_names == fitted_classifier.label_names
    assert loaded.input_shape == fitted_classifier.input_shape
    assert loaded.config == fitted_classifier.config


def test_manifest_records_version_step_shape_and_plugins(saved: Path) -> None:
    manifest = read_manifest(saved)
    assert manifest["format_version"] == 2
    assert manifest["step"] == 10
    assert manifest["input_shape"] == [4, 4]
    assert manifest["label_names"] == ["0", "1", "2"]
    assert manifest["plugins"]["prior"]["name"] == "mixture"
    assert manifest["plugins"]["prior"]["package"] == "ssvae-core"


# --- bad files -----------------------------------------------------------------------------


def test_missing_checkpoint_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.ckpt")


def test_directory_instead_of_checkpoint_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_non_checkpoint_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n")
    with pytest.raises(CheckpointError, match="not an ssvae checkpoint"):
        load_checkpoint(path)


def test_file_truncated_before_the_manifest_length_is_reported(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.ckpt"
    path.write_bytes(saved.read_bytes()[: len(MAGIC) + 3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_file_truncated_inside_the_manifest_is_reported(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.ckpt"
    path.write_bytes(saved.read_bytes()[: len(MAGIC) + 8 + 20])
    with pytest.raises(CheckpointError, match="corrupt or truncated manifest"):
        load_checkpoint(path)


def test_file_truncated_inside_the_arrays_is_reported(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.ckpt"
    payload = saved.read_bytes()
    path.write_bytes(payload[: len(payload) - 100])
    with pytest.raises(CheckpointError, match="arrays do not match its config"):
        load_checkpoint(path)


def test_corrupted_manifest_is_reported(saved: Path, tmp_path: Path) -> None:
    payload = bytearray(saved.read_bytes())
    start = len(MAGIC) + 8
    payload[start : start + 4] = b"\xff\xfe{["
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="corrupt or truncated manifest"):
        load_checkpoint(path)


def test_wrong_format_version_is_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["format_version"] = 99
    path = tmp_path / "future.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match="format version 99; this ssvae reads version 2"):
        load_checkpoint(path)


def test_manifest_without_a_required_key_is_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    del manifest["input_shape"]
    path = tmp_path / "partial.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match="manifest lacks 'input_shape'"):
        load_checkpoint(path)


def test_manifest_with_an_invalid_config_is_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["config"]["prior"]["num_components"] = 0
    path = tmp_path / "badconfig.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match=r"cannot be rebuilt: prior\.num_components"):
        load_checkpoint(path)


def test_arrays_that_do_not_match_the_config_are_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["config"]["model"]["latent_dim"] = 3
    path = tmp_path / "mismatch.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match="arrays do not match its config"):
        load_checkpoint(path)


# --- atomic writes -------------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise OSError("disk full")


def test_failed_serialisation_leaves_the_old_checkpoint_intact(
    fitted_classifier: SSVAEClassifier, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(saved.read_bytes())
    monkeypatch.setattr(eqx, "tree_serialise_leaves", _fail)
    with pytest.raises(OSError, match="disk full"):
        fitted_classifier.save(path)
    assert path.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_failed_write_leaves_the_old_checkpoint_intact_and_no_temporary_file(
    fitted_classifier: SSVAEClassifier, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(saved.read_bytes())
    monkeypatch.setattr(os, "fsync", _fail)
    with pytest.raises(OSError, match="disk full"):
        fitted_classifier.save(path)
    assert path.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_saving_an_unfitted_classifier_is_an_error(tmp_path: Path) -> None:
    from ssvae_core.errors import SSVAEError

    with pytest.raises(SSVAEError, match="not fitted"):
        SSVAEClassifier().save(tmp_path / "model.ckpt")
    assert not (tmp_path / "model.ckpt").exists()
