"""A user's own data: image folders, .npy pairs, CSV tables, a given test set, the auto preset."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ssvae_core.cli import main
from ssvae_core.config import load_config
from ssvae_core.data.datasets import load_csv, load_image_folder
from ssvae_core.data.loading import Dataset, benchmark_split, load_dataset
from ssvae_core.errors import ConfigError, DataError
from ssvae_core.presets import auto_table, preset_names
from ssvae_core.runs.run import split_dataset


def _image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _folder(root: Path, classes: dict[str, int], shape: tuple[int, ...], unlabeled: int = 0, seed: int = 0) -> Path:
    """Images of ``shape`` (grey (H, W) or colour (H, W, 3)): ``classes[name]`` per class, each
    class a brightness band, plus ``unlabeled`` images in ``unlabeled/``."""
    rng = np.random.default_rng(seed)
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            base = 40 + 60 * c
            _image(root / name / f"{i}.png", rng.integers(base, base + 40, shape))
    for i in range(unlabeled):
        _image(root / "unlabeled" / f"u{i}.jpg", rng.integers(0, 255, shape))
    return root


# --- image folders ---------------------------------------------------------------------------


def test_grey_image_folder_gives_hw_samples_sorted_classes_and_unlabeled_rows(tmp_path: Path) -> None:
    root = _folder(tmp_path / "grey", {"zebra": 3, "ant": 2}, (6, 5), unlabeled=2)
    data = load_dataset(root)
    assert data.sample_shape == (6, 5)
    assert data.label_names == ("ant", "zebra")
    assert sorted(data.y.tolist()) == [-1, -1, 0, 0, 1, 1, 1]
    assert data.name == "grey"
    # the pixels are the files' bytes over 255
    first = np.asarray(Image.open(root / "ant" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(data.x[0], first, atol=1e-6)


def test_colour_image_folder_gives_hw3_samples(tmp_path: Path) -> None:
    root = _folder(tmp_path / "colour", {"a": 2, "b": 2}, (4, 4, 3), unlabeled=1)
    data = load_dataset(root)
    assert data.sample_shape == (4, 4, 3)
    assert int((data.y == -1).sum()) == 1
    # a grey image among colour ones is read as RGB
    _image(root / "a" / "grey.png", np.full((4, 4), 77))
    mixed = load_image_folder(root)
    assert mixed.sample_shape == (4, 4, 3) and len(mixed) == 6


def test_images_of_two_sizes_name_a_file_and_the_sizes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "sizes", {"a": 3, "b": 2}, (8, 8))
    _image(root / "b" / "odd.png", np.zeros((10, 7)))
    with pytest.raises(DataError, match=r"odd\.png is 7×10, most are 8×8.*8×8 \(5 images\), 7×10 \(1 images\)"):
        load_dataset(root)


def test_empty_class_folder_and_loose_images_are_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", {"a": 2, "b": 2}, (4, 4))
    (root / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*c holds no images"):
        load_dataset(root)
    (root / "c").rmdir()
    _image(root / "loose.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="holds images directly"):
        load_dataset(root)


def test_an_idx_folder_is_still_read_as_idx(tmp_path: Path) -> None:
    import struct

    folder = tmp_path / "idx"
    folder.mkdir()
    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    (folder / "data-a").write_bytes(struct.pack(">IIII", 0x803, 5, 4, 4) + images.tobytes())
    (folder / "data-b").write_bytes(struct.pack(">II", 0x801, 5) + bytes([0, 1, 0, 1, 1]))
    (folder / "images").mkdir()  # a subfolder does not make it an image folder
    with pytest.raises(DataError, match="exactly one IDX images file"):  # named by the IDX rules
        load_dataset(folder)
    (folder / "data-a").rename(folder / "train-images")
    (folder / "data-b").rename(folder / "train-labels")
    assert load_dataset(folder).y.tolist() == [0, 1, 0, 1, 1]


def test_a_folder_of_nothing_names_every_form(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"x\.npy.*subfolder of PNG/JPEG images"):
        load_dataset(tmp_path)


# --- .npy pairs and CSV ------------------------------------------------------------------------


def test_npy_pair_is_read_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).random((6, 3, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 1, -1, 0, 1, 1]))
    (tmp_path / "label_names.txt").write_text("cat\ndog\n")
    modes = []
    real_load = np.load

    def spy(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    data = load_dataset(tmp_path)
    assert modes == ["r", "r"]
    np.testing.assert_array_equal(data.x, x)
    assert data.label_names == ("cat", "dog") and data.y.tolist() == [0, 1, -1, 0, 1, 1]


def test_npy_pair_of_different_lengths_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    np.save(tmp_path / "y.npy", np.zeros(3, dtype=int))
    with pytest.raises(DataError, match=r"y\.npy holds 3 labels but .*x\.npy holds 4 examples"):
        load_dataset(tmp_path)


def test_csv_with_empty_labels_gives_unlabeled_rows(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("f1,label,f2\n0.1,b,0.2\n0.3,,0.4\n0.5,a,0.6\n0.7,b,0.8\n")
    data = load_dataset(path)
    assert data.label_names == ("a", "b")
    assert data.y.tolist() == [1, -1, 0, 1]
    np.testing.assert_allclose(data.x[1], [0.3, 0.4])
    numeric = tmp_path / "n.csv"
    numeric.write_text("label,v\n10,0\n2,1\n")
    assert load_csv(numeric).label_names == ("2", "10")  # integer names in numeric order


def test_csv_with_a_bad_cell_names_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("f1,f2,label\n0.1,0.2,a\n0.3,oops,b\n")
    with pytest.raises(DataError, match=r"line 3, column 'f2': 'oops' is not a number"):
        load_dataset(path)
    path.write_text("f1,f2\n0.1,0.2\n")
    with pytest.raises(DataError, match="no 'label' column"):
        load_dataset(path)


# --- a given test set --------------------------------------------------------------------------


def _npz(path: Path, rows: int, seed: int, shape=(3,), names=("a", "b", "c")) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((rows, *shape)), y=np.arange(rows) % 3, label_names=np.array(names))
    return path


def test_given_test_split_draws_labels_from_the_train_part_and_tests_the_whole_test_part(tmp_path: Path) -> None:
    train, test = _npz(tmp_path / "train.npz", 30, 0), _npz(tmp_path / "test.npz", 9, 1)
    data = load_dataset(train, test)
    assert len(data) == 39 and data.test_rows == 9
    split = benchmark_split(data.y, 2, seed=5, num_classes=3, given_test=data.test_rows)
    assert split.test.tolist() == list(range(30, 39))
    assert split.train.tolist() == list(range(30))
    assert len(split.labeled) == 6 and split.labeled.max() < 30
    # the label draw is the seed's over the training part, as a held-out split draws it
    rng = np.random.default_rng(5)
    order = rng.permutation(30)
    expected = np.concatenate([rng.choice(order[np.arange(30)[order] % 3 == c], 2, replace=False) for c in range(3)])
    assert split.labeled.tolist() == sorted(expected.tolist())
    # through a config: data.test_dataset
    config = load_config(overrides=[f"data.dataset={json.dumps(str(train))}", f"data.test_dataset={json.dumps(str(test))}", "data.labels_per_class=1"])
    assert split_dataset(load_dataset(config.data.dataset, config.data.test_dataset), config).test.tolist() == list(range(30, 39))


def test_a_test_part_of_another_shape_or_classes_names_both_files(tmp_path: Path) -> None:
    train = _npz(tmp_path / "train.npz", 12, 0)
    with pytest.raises(DataError, match=r"test data .*wide.npz.* shape \(4,\) but the training data .*train.npz.* \(3,\)"):
        load_dataset(train, _npz(tmp_path / "wide.npz", 6, 1, shape=(4,)))
    with pytest.raises(DataError, match=r"classes \['a', 'b', 'x'\] but the training data .*train.npz.* \['a', 'b', 'c'\]"):
        load_dataset(train, _npz(tmp_path / "other.npz", 6, 1, names=("a", "b", "x")))


def test_test_dataset_equal_to_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="test_dataset must be a different dataset"):
        load_config(overrides=['data.test_dataset="digits"'])


def test_dataset_refuses_a_test_part_as_large_as_itself() -> None:
    with pytest.raises(DataError, match="test_rows"):
        Dataset(x=np.zeros((3, 2)), y=np.zeros(3, dtype=int), name="t", num_classes=1, test_rows=3)


# --- the auto preset ---------------------------------------------------------------------------


def test_auto_preset_picks_conv_for_images_of_16_pixels_and_dense_otherwise() -> None:
    assert "auto" in preset_names()
    mnist = auto_table((28, 28), 60000, [6000] * 10, has_unlabeled=False)
    assert mnist["encoder"]["name"] == "conv" and mnist["loss"]["graph_label"]["deskew"]
    assert mnist["train"] == {"steps": 8000, "batch_size": 128}  # 17 passes, rounded up to 500
    assert auto_table((28, 28), 8000, [800] * 10, has_unlabeled=False)["train"]["steps"] == 4000
    assert mnist["data"]["labels_per_class"] == 10
    colour = auto_table((32, 32, 3), 40, [10, 10, 10, 10], has_unlabeled=True)
    assert colour["encoder"]["name"] == "conv" and "deskew" not in colour["loss"]["graph_label"]
    assert colour["train"]["batch_size"] == 16 and colour["data"]["labels_per_class"] == "all"
    digits = auto_table((8, 8), 1437, [140] * 10, has_unlabeled=False)
    assert "encoder" not in digits and "dataset" not in digits["data"]
    assert digits["train"]["steps"] == 4000 and digits["loss"]["top_channels"] == 2
    vectors = auto_table((20,), 600_000, [5, 30, 40], has_unlabeled=False)
    assert "encoder" not in vectors and vectors["train"]["steps"] == 20000
    assert vectors["data"]["labels_per_class"] == "all"  # one class has fewer than 20 labels
    wide = auto_table((15, 300), 500, [100] * 20, has_unlabeled=False, conv=True)
    assert "encoder" not in wide and wide["prior"]["num_components"] == 20
    assert "encoder" not in auto_table((28, 28), 100, [10] * 10, has_unlabeled=False, conv=False)


def test_deskewing_colour_images_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "img", {"red": 6, "green": 6}, (16, 16, 3))
    args = [
        "train", "--data", str(root), "--out", str(tmp_path / "run"), "--preset", "mnist", "--steps", "2",
        "--labels-per-class", "all", "--quiet",
    ]  # fmt: skip
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "loss.graph_label" in error and "one-channel images" in error and "Traceback" not in error


def test_auto_preset_reads_the_data_the_overrides_name(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 4, "b": 4}, (16, 16, 3), unlabeled=4)
    config = load_config(overrides=[f"data.dataset={json.dumps(str(root))}", "train.steps=7"], preset="auto")
    assert config.encoder.name == "conv" and config.data.labels_per_class == "all"
    assert config.train.steps == 7 and config.train.batch_size == 8
    assert load_config(preset="auto") == load_config(preset="digits")  # digits: the digits preset


# --- the command line --------------------------------------------------------------------------


def _train_auto(root: Path, out: Path, *extra: str) -> dict[str, Any]:
    """``ssvae train --preset auto`` on ``root`` with a tiny model for 4 steps; its report."""
    args = [
        "train", "--data", str(root), "--out", str(out), "--preset", "auto", "--steps", "4",
        "--set", "encoder.channels=[4]", "--set", "model.latent_dim=2", "--set", "decoder.hidden=[8]",
        "--quiet", *extra,
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    return json.loads((out / "report.json").read_text())


def test_colour_folder_trains_through_the_cli_with_the_auto_preset_and_plots(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"red": 6, "green": 6}, (16, 16, 3), unlabeled=4)
    out = tmp_path / "run"
    report = _train_auto(root, out, "--set", "train.log_every=2")
    assert report["protocol"] == "held-out fifth" and "test_dataset" not in report
    # the members are drawn in colour: a grey drawing has R = G = B everywhere
    pixels = np.asarray(Image.open(out / "plots" / "channel_reconstructions.png").convert("RGB"), dtype=int)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 30
    assert (out / "plots" / "latent_map.png").exists()
    # the studio's tiles too: the example and a channel's members with their reconstructions
    from ssvae_core.studio.session import StudioSession

    with StudioSession(out) as session:
        example = Image.open(io.BytesIO(session.example_png(0)))
        assert example.mode == "RGB"
        channel = np.asarray(Image.open(io.BytesIO(session.channel_png(0))).convert("RGB"), dtype=int)
        assert np.abs(channel[..., 0] - channel[..., 1]).max() > 30


def test_colour_folder_trains_without_labels_with_the_auto_preset(tmp_path: Path) -> None:
    # the mnist preset's graph clusters act in a label-free run; on colour images they are not deskewed
    loss = auto_table((16, 16, 3), 40, [20, 20], has_unlabeled=False)["loss"]
    assert loss["graph_cluster"]["weight"] > 0 and "deskew" not in loss["graph_cluster"]
    root = _folder(tmp_path / "img", {"red": 12, "green": 12}, (16, 16, 3))
    report = _train_auto(root, tmp_path / "run", "--labels-per-class", "0")
    assert report["label_free"] is True and report["clustering"]["num_classes_present"] == 2

def test_bad_data_on_the_cli_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,label\nx,1\n")
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "line 2, column 'a'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()


def test_train_with_test_data_tests_on_the_given_part_and_reports_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = _npz(tmp_path / "train.npz", 30, 0, shape=(4,)), _npz(tmp_path / "test.npz", 9, 1, shape=(4,))
    out = tmp_path / "run"
    args = [
        "train", "--data", str(train), "--test-data", str(test), "--out", str(out), "--steps", "2",
        "--labels-per-class", "2", "--set", "train.batch_size=8", "--set", "train.log_every=2",
        "--set", "prior.num_components=3", "--quiet", "--no-plots",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"] == "given test split"
    assert report["test_dataset"] == str(test.resolve())
    assert report["num_test"] == 9 and report["num_train"] == 30
    assert f"| test set | given test split ({test.resolve()}) |" in (out / "report.md").read_text()
    # --resume takes --test-data as where the test set is now; this run has all its steps
    assert main(["train", "--resume", str(out), "--test-data", str(test)]) == 2
    assert "has taken all of its 2 steps" in capsys.readouterr().err
