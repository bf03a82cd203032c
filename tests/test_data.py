"""Tests for ssvae_core.data.loading: loaders, validation and the benchmark split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ssvae_core.data.loading import (
    Dataset,
    Split,
    benchmark_split,
    from_arrays,
    load_dataset,
    load_digits,
    load_idx,
    load_idx_folder,
    load_npz,
)
from ssvae_core.errors import DataError, SSVAEError


def _write_idx(path: Path, arr: np.ndarray, magic: int, *, gz: bool = False) -> Path:
    payload = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def _idx_pair(
    folder: Path, n: int = 6, *, gz: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 3
    suffix = ".gz" if gz else ""
    _write_idx(folder / f"train-images-idx3-ubyte{suffix}", images, 0x803, gz=gz)
    _write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels, 0x801, gz=gz)
    return images, labels


def _balanced_y(n_per_class: int = 30, k: int = 3) -> np.ndarray:
    return np.tile(np.arange(k), n_per_class)


# --- Dataset / from_arrays -------------------------------------------------------------


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, SSVAEError) and issubclass(DataError, ValueError)


def test_digits_loads_with_expected_shape_and_range() -> None:
    ds = load_digits()
    assert ds.x.shape == (1797, 8, 8) and ds.x.dtype == np.float32
    assert ds.x.min() >= 0.0 and ds.x.max() == 1.0
    assert ds.y.dtype == np.int32 and ds.y.shape == (1797,)
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.sample_shape == (8, 8) and len(ds) == 1797
    assert ds.label_names == tuple(str(c) for c in range(10))


def test_from_arrays_default_label_names_and_inferred_classes() -> None:
    ds = from_arrays(np.zeros((4, 2)), np.array([0, 1, 2, -1]))
    assert ds.num_classes == 3 and ds.label_names == ("0", "1", "2")
    assert ds.name == "arrays"


def test_uint8_is_scaled_by_255() -> None:
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    ds = from_arrays(x)
    np.testing.assert_allclose(ds.x, [[0.0, 0.2, 1.0]], rtol=1e-6)
    assert ds.x.dtype == np.float32


def test_binary_integer_x_is_kept() -> None:
    ds = from_arrays(np.array([[0, 1], [1, 0]], dtype=np.int64))
    np.testing.assert_array_equal(ds.x, [[0.0, 1.0], [1.0, 0.0]])


def test_stored_arrays_are_read_only_copies() -> None:
    x = np.full((2, 2), 0.5, dtype=np.float32)
    ds = from_arrays(x, np.array([0, 0]))
    x[0, 0] = 0.0
    assert ds.x[0, 0] == 0.5
    with pytest.raises(ValueError):
        ds.x[0, 0] = 1.0


def test_unlabeled_only_dataset_is_allowed() -> None:
    ds = from_arrays(np.zeros((3, 2)))
    assert (ds.y == -1).all() and ds.num_classes == 0


def test_rank_one_x_raises() -> None:
    with pytest.raises(DataError, match=r"rank >= 2; got shape \(5,\)"):
        from_arrays(np.zeros(5))


def test_empty_x_raises() -> None:
    with pytest.raises(DataError, match="no examples"):
        from_arrays(np.zeros((0, 3)))


def test_y_of_wrong_rank_raises() -> None:
    with pytest.raises(DataError, match=r"y must be 1-D.*\(2, 2\)"):
        from_arrays(np.zeros((4, 2)), np.zeros((2, 2), dtype=int))


def test_y_of_wrong_length_raises() -> None:
    with pytest.raises(DataError, match="3 labels for 4 examples"):
        from_arrays(np.zeros((4, 2)), np.array([0, 1, 0]))


def test_nan_in_x_raises_with_count() -> None:
    x = np.zeros((3, 2))
    x[0, 0] = np.nan
    x[2, 1] = np.inf
    with pytest.raises(DataError, match="2 non-finite"):
        from_arrays(x)


def test_float_x_out_of_range_raises_with_min_max() -> None:
    with pytest.raises(DataError, match=r"\[0, 1\]; observed min -0.5, max 3.*rescale"):
        from_arrays(np.array([[-0.5, 3.0]]))


def test_wide_integer_x_out_of_range_raises() -> None:
    with pytest.raises(DataError, match=r"int32 with values in \[0, 7\]"):
        from_arrays(np.array([[0, 7]], dtype=np.int32))


def test_non_numeric_x_raises() -> None:
    with pytest.raises(DataError, match="dtype <U1"):
        from_arrays(np.array([["a", "b"]]))


def test_non_integer_labels_raise() -> None:
    with pytest.raises(DataError, match=r"labels must be integers.*0.5"):
        from_arrays(np.zeros((2, 2)), np.array([0.0, 0.5]))


def test_integral_float_labels_are_accepted() -> None:
    ds = from_arrays(np.zeros((2, 2)), np.array([0.0, 1.0]))
    assert ds.y.tolist() == [0, 1]


def test_label_below_minus_one_raises() -> None:
    with pytest.raises(
        DataError, match=r"label -2 .*-1 \(unlabeled\) or a class in 0..1"
    ):
        from_arrays(np.zeros((3, 2)), np.array([0, 1, -2]))


def test_label_beyond_num_classes_raises() -> None:
    with pytest.raises(DataError, match=r"label 5 .*0..2"):
        from_arrays(np.zeros((3, 2)), np.array([0, 1, 5]), num_classes=3)


def test_fewer_labeled_than_classes_raises() -> None:
    with pytest.raises(DataError, match=r"only 2 labeled example.*4 classes"):
        from_arrays(np.zeros((3, 2)), np.array([0, 3, -1]))


def test_class_without_labeled_example_raises() -> None:
    with pytest.raises(DataError, match=r"class\(es\) \[1\] have no labeled example"):
        from_arrays(np.zeros((4, 2)), np.array([0, 2, 0, 2]))


def test_label_names_length_mismatch_raises() -> None:
    with pytest.raises(DataError, match="2 entries but num_classes is 3"):
        from_arrays(np.zeros((3, 2)), np.array([0, 1, 2]), num_classes=3, label_names=["a", "b"])


def test_label_beyond_the_label_names_is_out_of_range() -> None:
    y = np.array([*range(10)] * 2 + [99])
    with pytest.raises(
        DataError, match=r"label 99 is out of range \[0, num_classes\) = \[0, 10\) \(10 label_names"
    ):
        from_arrays(np.zeros((21, 2)), y, label_names=[f"c{i}" for i in range(10)])


def test_one_far_off_label_is_out_of_range_not_a_crowd_of_missing_classes() -> None:
    y = np.array([*range(10)] * 2 + [99])
    with pytest.raises(DataError, match=r"label 99 is out of range \[0, 10\): the labels in use are 0\.\.9") as info:
        from_arrays(np.zeros((21, 2)), y)
    assert "missing" not in str(info.value) and "have no labeled example" not in str(info.value)


def test_zero_features_raise() -> None:
    with pytest.raises(DataError, match=r"shape \(5, 0\), so each example has no features"):
        from_arrays(np.zeros((5, 0)), np.array([0, 1, 0, 1, 0]))
    with pytest.raises(DataError, match="no features"):
        from_arrays(np.zeros((5, 3, 0)))


def test_ragged_list_raises() -> None:
    with pytest.raises(DataError, match=r"x must be an array of numbers .*ragged"):
        from_arrays([[0.1, 0.2], [0.3]])


def test_ragged_labels_raise() -> None:
    with pytest.raises(DataError, match=r"y must be an array of numbers with shape \(N,\)"):
        from_arrays(np.zeros((2, 2)), [[0], [1, 1]])


@pytest.mark.parametrize("x", [{"x": [[0.1, 0.2]]}, "data.npz", None, {1, 2}], ids=["dict", "str", "none", "set"])
def test_container_that_is_not_an_array_raises(x) -> None:
    with pytest.raises(DataError, match=r"x must be an array .*; got (dict|str|NoneType|set)$"):
        from_arrays(x)


def test_dict_for_labels_raises() -> None:
    with pytest.raises(DataError, match=r"y must be an array .*; got dict"):
        from_arrays(np.zeros((2, 2)), {"y": [0, 1]})


@pytest.mark.parametrize("names", ["ab", 5, {"a": 0}])
def test_label_names_that_are_not_a_sequence_raise(names) -> None:
    with pytest.raises(DataError, match="label_names must be a sequence of strings"):
        from_arrays(np.zeros((2, 2)), np.array([0, 1]), label_names=names)


def test_dataset_constructor_validates() -> None:
    with pytest.raises(DataError, match="observed min"):
        Dataset(x=np.full((1, 2), 2.0), y=np.array([-1]), name="d", num_classes=0)


# --- npz ---------------------------------------------------------------------------------


def test_npz_roundtrip_keeps_unlabeled(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 3, 2)).astype(np.float32)
    y = np.array([0, 1, -1, 1, 0])
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, y=y, label_names=np.array(["cat", "dog"]))
    ds = load_npz(path)
    np.testing.assert_array_equal(ds.x, x)
    assert ds.y.tolist() == y.tolist()
    assert ds.name == "toy" and ds.num_classes == 2 and ds.label_names == ("cat", "dog")


def test_npz_without_y_is_unlabeled(tmp_path: Path) -> None:
    path = tmp_path / "u.npz"
    np.savez(path, x=np.zeros((2, 2)))
    assert (load_npz(path).y == -1).all()


def test_npz_missing_x_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 2)))
    with pytest.raises(
        DataError, match=r"bad\.npz has arrays \['images'\]; expected .*'x'"
    ):
        load_npz(path)


def test_npz_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*nope\.npz"):
        load_npz(tmp_path / "nope.npz")


def test_npz_garbage_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match=r"junk\.npz is not a valid \.npz archive \(it starts with b'not a zi'\)"):
        load_npz(path)


@pytest.mark.parametrize(
    ("head", "found"),
    [(b"\x89PNG\r\n\x1a\n" + bytes(64), "it is a PNG image"), (b"", "it is empty")],
    ids=["png", "empty"],
)
def test_npz_that_is_not_a_zip_archive_raises_without_the_pickle_hint(
    tmp_path: Path, head: bytes, found: str
) -> None:
    path = tmp_path / "picture.npz"
    path.write_bytes(head)
    with pytest.raises(DataError, match=rf"picture\.npz is not a valid \.npz archive \({found}\)") as info:
        load_npz(path)
    assert "pickle" not in str(info.value)


def test_npz_with_an_object_array_raises(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([[0.1], [0.2, 0.3]], dtype=object))
    with pytest.raises(DataError, match=r"array 'x' in .*objects\.npz holds Python objects"):
        load_npz(path)


def test_npz_with_a_label_beyond_its_label_names_raises(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    y = np.array([*range(10)] * 2 + [99])
    np.savez(path, x=np.zeros((21, 2)), y=y, label_names=np.array([f"c{i}" for i in range(10)]))
    with pytest.raises(DataError, match=r"label 99 is out of range \[0, num_classes\) = \[0, 10\)"):
        load_npz(path)


# --- IDX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    images, labels = _idx_pair(tmp_path, gz=gz)
    sfx = ".gz" if gz else ""
    ds = load_idx(
        tmp_path / f"train-images-idx3-ubyte{sfx}",
        tmp_path / f"train-labels-idx1-ubyte{sfx}",
    )
    np.testing.assert_allclose(ds.x, images / 255.0, rtol=1e-6)
    assert ds.y.tolist() == labels.tolist() and ds.name == "train-images-idx3-ubyte"


def test_idx_gzip_detected_by_magic_bytes_not_suffix(tmp_path: Path) -> None:
    images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    path = _write_idx(tmp_path / "images.bin", images, 0x803, gz=True)
    np.testing.assert_allclose(load_idx(path).x, images / 255.0, rtol=1e-6)


def test_idx_wrong_magic_raises(tmp_path: Path) -> None:
    path = _write_idx(tmp_path / "imgs", np.zeros((2, 2, 2)), 0x801)
    with pytest.raises(
        DataError, match=r"imgs has magic number 0x00000801; expected 0x00000803"
    ):
        load_idx(path)


def test_idx_truncated_raises(tmp_path: Path) -> None:
    path = _write_idx(tmp_path / "imgs", np.zeros((3, 2, 2)), 0x803)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(
        DataError, match=r"imgs is truncated: .*needs 12 data bytes, found 11"
    ):
        load_idx(path)


def test_idx_corrupt_gzip_raises(tmp_path: Path) -> None:
    path = _write_idx(tmp_path / "imgs.gz", np.zeros((3, 2, 2)), 0x803, gz=True)
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(
        DataError, match=r"imgs\.gz looks gzipped but cannot be decompressed"
    ):
        load_idx(path)


def test_idx_label_far_beyond_the_others_is_out_of_range(tmp_path: Path) -> None:
    labels = np.array([*range(10)] * 2 + [99])
    imgs = _write_idx(tmp_path / "imgs", np.zeros((21, 2, 2)), 0x803)
    labs = _write_idx(tmp_path / "labs", labels, 0x801)
    with pytest.raises(DataError, match=r"label 99 is out of range \[0, 10\)"):
        load_idx(imgs, labs)


def test_idx_count_mismatch_raises(tmp_path: Path) -> None:
    imgs = _write_idx(tmp_path / "imgs", np.zeros((3, 2, 2)), 0x803)
    labs = _write_idx(tmp_path / "labs", np.zeros(2), 0x801)
    with pytest.raises(
        DataError, match=r"labs holds 2 labels but .*imgs holds 3 images"
    ):
        load_idx(imgs, labs)


def test_idx_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"IDX images file not found: .*absent"):
        load_idx(tmp_path / "absent")


def test_idx_folder_loads_pair_named_after_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mini"
    folder.mkdir()
    images, _ = _idx_pair(folder, gz=True)
    ds = load_idx_folder(folder)
    assert ds.name == "mini" and ds.x.shape == images.shape


def test_idx_folder_with_two_image_files_raises(tmp_path: Path) -> None:
    _idx_pair(tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((1, 2, 2)), 0x803)
    with pytest.raises(DataError, match=r"exactly one IDX images file.*found 2"):
        load_idx_folder(tmp_path)


def test_idx_folder_without_labels_raises(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 2, 2)), 0x803)
    with pytest.raises(DataError, match=r"exactly one IDX labels file.*found 0"):
        load_idx_folder(tmp_path)


# --- load_dataset --------------------------------------------------------------------------


def test_load_dataset_dispatches_by_form(tmp_path: Path) -> None:
    assert load_dataset("digits").name == "digits"
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 2)))
    assert load_dataset(tmp_path / "a.npz").name == "a"
    (tmp_path / "idx").mkdir()
    _idx_pair(tmp_path / "idx")
    assert load_dataset(str(tmp_path / "idx")).name == "idx"


def test_load_dataset_unknown_spec_lists_allowed_forms(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"does not exist; expected 'digits', .*\.npz.*directory"
    ):
        load_dataset(tmp_path / "mnist")


def test_load_dataset_wrong_file_type_raises(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("1,2\n")
    with pytest.raises(
        DataError, match=r"not a \.npz or \.csv file or a directory; expected 'digits'"
    ):
        load_dataset(path)


# --- benchmark_split -----------------------------------------------------------------------


def _reference_split(
    y: np.ndarray, lpc: int, seed: int, k: int
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    test, train = idx[: len(y) // 5], idx[len(y) // 5 :]
    labeled = [rng.choice(train[y[train] == c], lpc, replace=False) for c in range(k)]
    return train, test, np.concatenate(labeled)


def test_split_sizes() -> None:
    y = load_digits().y
    split = benchmark_split(y, 10, seed=0)
    assert isinstance(split, Split)
    assert len(split.test) == 1797 // 5 and len(split.train) == 1797 - 1797 // 5
    assert len(split.labeled) == 100
    assert np.bincount(y[split.labeled], minlength=10).tolist() == [10] * 10


def test_split_follows_exact_protocol() -> None:
    y = np.random.default_rng(7).integers(0, 4, size=103)
    split = benchmark_split(y, 3, seed=11)
    train, test, labeled = _reference_split(y, 3, 11, 4)
    np.testing.assert_array_equal(split.test, test)
    np.testing.assert_array_equal(split.train, np.sort(train))
    np.testing.assert_array_equal(split.labeled, np.sort(labeled))


def test_split_dtypes_are_int64() -> None:
    split = benchmark_split(_balanced_y(), 2, seed=0)
    assert {a.dtype for a in (split.train, split.test, split.labeled)} == {
        np.dtype(np.int64)
    }


def test_split_is_deterministic_by_seed() -> None:
    y = _balanced_y()
    a, b, c = (benchmark_split(y, 2, seed=s) for s in (5, 5, 6))
    for name in ("train", "test", "labeled"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.test, c.test)


def test_split_labeled_subset_of_train_and_train_test_disjoint() -> None:
    split = benchmark_split(_balanced_y(), 4, seed=1)
    assert set(split.labeled) <= set(split.train)
    assert not set(split.train) & set(split.test)
    assert sorted([*split.train, *split.test]) == list(range(90))


def test_split_none_uses_every_train_label() -> None:
    y = _balanced_y()
    y[::7] = -1
    split = benchmark_split(y, None, seed=2)
    np.testing.assert_array_equal(split.labeled, split.train[y[split.train] >= 0])


def test_split_unlabeled_never_in_test_or_labeled() -> None:
    y = _balanced_y(40)
    y[::4] = -1
    split = benchmark_split(y, 5, seed=3)
    assert (y[split.test] >= 0).all() and (y[split.labeled] >= 0).all()
    assert sorted([*split.train, *split.test]) == list(range(len(y)))


def test_split_unlabeled_keep_the_same_permutation() -> None:
    y = _balanced_y()
    y_partial = y.copy()
    y_partial[[0, 1]] = -1
    full, partial = (
        benchmark_split(y, None, seed=4),
        benchmark_split(y_partial, None, seed=4),
    )
    np.testing.assert_array_equal(partial.test, full.test[~np.isin(full.test, [0, 1])])


def test_split_too_few_examples_in_class_raises() -> None:
    y = np.array([0] * 40 + [1] * 3)
    with pytest.raises(
        DataError, match=r"class 1 has \d labeled training example.*=5 requested"
    ):
        benchmark_split(y, 5, seed=0)


@pytest.mark.parametrize("lpc", [-1, -3])
def test_split_labels_per_class_below_zero_raises(lpc: int) -> None:
    with pytest.raises(DataError, match=f"integer >= 0 or None; got {lpc}"):
        benchmark_split(_balanced_y(), lpc, seed=0)


def test_split_of_no_labels_keeps_train_and_test_and_labels_nothing() -> None:
    y = _balanced_y()
    none, every = benchmark_split(y, 0, seed=3), benchmark_split(y, None, seed=3)
    assert none.labeled.size == 0
    np.testing.assert_array_equal(none.train, every.train)
    np.testing.assert_array_equal(none.test, every.test)


def test_split_label_out_of_range_raises() -> None:
    with pytest.raises(DataError, match=r"label 3 .*0..2"):
        benchmark_split(np.array([0, 1, 2, 3] * 5), 1, seed=0, num_classes=3)


def test_split_of_a_single_labeled_class_raises() -> None:
    with pytest.raises(DataError, match=r"labels only one class \(0\); .*at least two classes"):
        benchmark_split(np.array([0] * 20 + [-1] * 20), 2, seed=0)


def test_split_without_test_examples_raises() -> None:
    with pytest.raises(DataError, match="test set is empty"):
        benchmark_split(np.array([0, 1, 0]), 1, seed=0)
