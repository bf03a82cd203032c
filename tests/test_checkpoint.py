"""Checkpoints: an exact round trip, verified contents, clear errors for bad files, and atomic writes."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import equinox as eqx
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.errors import CheckpointError
from ssvae_core.training.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    load_checkpoint,
    read_manifest,
    seal,
)


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
    """The file bytes without re-sealing: an edit that leaves the old content hash in place."""
    header = json.dumps(manifest).encode()
    return MAGIC + struct.pack("<Q", len(header)) + header + leaves


def _forge(saved: Path, tmp_path: Path, **changes) -> Path:
    """A copy of ``saved`` with manifest keys changed and a valid hash: a crafted file."""
    manifest, leaves = _split(saved.read_bytes())
    manifest.update(changes)
    path = tmp_path / "forged.ckpt"
    path.write_bytes(seal(manifest, leaves))
    return path


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
    assert manifest["format_version"] == FORMAT_VERSION == 3
    assert manifest["payload_bytes"] == len(_split(saved.read_bytes())[1])
    assert len(manifest["sha256"]) == 64
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
    with pytest.raises(CheckpointError, match=r"is truncated: its arrays need \d+ bytes"):
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
    path.write_bytes(seal(manifest, leaves))
    with pytest.raises(CheckpointError, match="format version 99; this ssvae reads version 3"):
        load_checkpoint(path)


def test_manifest_without_a_required_key_is_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    del manifest["input_shape"]
    path = tmp_path / "partial.ckpt"
    path.write_bytes(seal(manifest, leaves))
    with pytest.raises(CheckpointError, match="manifest lacks 'input_shape'"):
        load_checkpoint(path)


def test_manifest_with_an_invalid_config_is_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["config"]["prior"]["num_components"] = 0
    path = tmp_path / "badconfig.ckpt"
    path.write_bytes(seal(manifest, leaves))
    with pytest.raises(CheckpointError, match=r"cannot be rebuilt: prior\.num_components"):
        load_checkpoint(path)


def test_arrays_that_do_not_match_the_config_are_reported(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["config"]["model"]["latent_dim"] = 3
    path = tmp_path / "mismatch.ckpt"
    path.write_bytes(seal(manifest, leaves))
    with pytest.raises(CheckpointError, match="arrays do not match its config"):
        load_checkpoint(path)


def test_checkpoint_of_the_previous_format_is_refused(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["format_version"] = 2
    del manifest["sha256"], manifest["payload_bytes"]
    path = tmp_path / "old.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match="format version 2; this ssvae reads version 3"):
        load_checkpoint(path)


# --- verified contents ---------------------------------------------------------------------


@pytest.mark.parametrize("read", [load_checkpoint, read_manifest], ids=["load", "manifest"])
def test_appended_bytes_are_refused(saved: Path, tmp_path: Path, read) -> None:
    path = tmp_path / "appended.ckpt"
    path.write_bytes(saved.read_bytes() + b"\x00")
    with pytest.raises(CheckpointError, match=r"1 unexpected byte\(s\) after its arrays; .*modified or corrupted"):
        read(path)


@pytest.mark.parametrize("read", [load_checkpoint, read_manifest], ids=["load", "manifest"])
def test_an_edited_manifest_value_is_refused(saved: Path, tmp_path: Path, read) -> None:
    manifest, leaves = _split(saved.read_bytes())
    manifest["config"]["seed"] = manifest["config"]["seed"] + 1
    path = tmp_path / "edited.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match="does not match its content hash; the file was modified or corrupted"):
        read(path)


def test_a_flipped_array_byte_is_refused(saved: Path, tmp_path: Path) -> None:
    payload = bytearray(saved.read_bytes())
    payload[-5] ^= 0x01
    path = tmp_path / "flipped.ckpt"
    path.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="does not match its content hash"):
        load_checkpoint(path)


def test_a_manifest_without_its_hash_is_refused(saved: Path, tmp_path: Path) -> None:
    manifest, leaves = _split(saved.read_bytes())
    del manifest["sha256"]
    path = tmp_path / "unsealed.ckpt"
    path.write_bytes(_join(manifest, leaves))
    with pytest.raises(CheckpointError, match="lacks its payload size or content hash"):
        load_checkpoint(path)


def test_a_huge_claimed_input_shape_fails_fast_without_allocating(saved: Path, tmp_path: Path) -> None:
    path = _forge(saved, tmp_path, input_shape=[3000, 3000])  # a dense model of ~3.5 GB
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"describes a model with \d+ bytes of arrays .*but the file holds"):
        load_checkpoint(path)
    assert time.perf_counter() - started < 10.0


def test_an_input_shape_beyond_the_cap_is_refused_before_building(saved: Path, tmp_path: Path) -> None:
    path = _forge(saved, tmp_path, input_shape=[10**6, 10**6])
    with pytest.raises(CheckpointError, match=r"claims input_shape .*at most 10000000 are allowed"):
        read_manifest(path)


@pytest.mark.parametrize(
    "shape", ["4x4", 16, [], [4, 0], [4, -4], [4.0, 4], [True, 4], [1, 1, 1, 1, 1]]
)
def test_a_malformed_input_shape_is_refused(saved: Path, tmp_path: Path, shape) -> None:
    path = _forge(saved, tmp_path, input_shape=shape)
    with pytest.raises(CheckpointError, match="expected a list of 1 to 4 positive integers"):
        load_checkpoint(path)


@pytest.mark.parametrize("names", ["012", [0, 1, 2], {"0": "a"}, None])
def test_label_names_of_the_wrong_type_are_refused(saved: Path, tmp_path: Path, names) -> None:
    path = _forge(saved, tmp_path, label_names=names)
    with pytest.raises(CheckpointError, match=r"label_names .*; expected a list of strings"):
        load_checkpoint(path)


def test_too_many_label_names_are_refused(saved: Path, tmp_path: Path) -> None:
    path = _forge(saved, tmp_path, label_names=[str(i) for i in range(100_001)])
    with pytest.raises(CheckpointError, match="lists 100001 label names; expected 1 to 100000"):
        load_checkpoint(path)


@pytest.mark.parametrize("step", [-1, 2.5, "10", None])
def test_a_malformed_step_is_refused(saved: Path, tmp_path: Path, step) -> None:
    path = _forge(saved, tmp_path, step=step)
    with pytest.raises(CheckpointError, match=r"step .*; expected an integer >= 0"):
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
    # One line naming the file and the cause, not the OSError's traceback.
    with pytest.raises(CheckpointError, match=r"^cannot save a checkpoint to .*model\.ckpt.*: disk full$"):
        fitted_classifier.save(path)
    assert path.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_failed_write_leaves_the_old_checkpoint_intact_and_no_temporary_file(
    fitted_classifier: SSVAEClassifier, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(saved.read_bytes())
    monkeypatch.setattr(os, "fsync", _fail)
    # One line naming the file and the cause, not the OSError's traceback.
    with pytest.raises(CheckpointError, match=r"^cannot save a checkpoint to .*model\.ckpt.*: disk full$"):
        fitted_classifier.save(path)
    assert path.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_saving_an_unfitted_classifier_is_an_error(tmp_path: Path) -> None:
    from ssvae_core.errors import SSVAEError

    with pytest.raises(SSVAEError, match="not fitted"):
        SSVAEClassifier().save(tmp_path / "model.ckpt")
    assert not (tmp_path / "model.ckpt").exists()
