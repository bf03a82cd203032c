"""The label store: its file format, its checks, and label CSV files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssvae_core.errors import DataError
from ssvae_core.labels.store import (
    STORE_FORMAT,
    STORE_NAME,
    STORE_VERSION,
    LabelEntry,
    LabelStore,
    example_hash,
    example_hashes,
    read_label_csv,
)

NOW = "2026-11-26T14:31:05Z"
LATER = "2026-11-27T09:00:00Z"


@pytest.fixture
def x() -> np.ndarray:
    """Ten distinct 3×3 examples."""
    return np.random.default_rng(0).random((10, 3, 3)).astype(np.float32)


@pytest.fixture
def store(x: np.ndarray) -> LabelStore:
    first = LabelStore.empty().add([0, 1, 2], ["cat", "dog", "cat"], x=x, source="split", now=NOW)
    return first.add([5], ["bird"], x=x, source="oracle", now=LATER)


# ---------------------------------------------------------------- hashes


def test_example_hash_is_16_hex_digits_of_shape_and_float32_content(x: np.ndarray) -> None:
    digest = example_hash(x[3])
    assert len(digest) == 16 and all(c in "0123456789abcdef" for c in digest)
    # The same values in another dtype or memory layout hash the same.
    assert example_hash(x[3].astype(np.float64)) == digest
    assert example_hash(np.asfortranarray(x[3])) == digest
    # Another shape with the same bytes, or another value, does not.
    assert example_hash(x[3].reshape(9)) != digest
    changed = x[3].copy()
    changed[0, 0] += 0.5
    assert example_hash(changed) != digest
    assert example_hashes(x, [3, 4]) == [digest, example_hash(x[4])]


# ---------------------------------------------------------------- save and load


def test_save_load_round_trip(tmp_path: Path, store: LabelStore) -> None:
    path = tmp_path / STORE_NAME
    store.save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == STORE_FORMAT == "ssvae-labels"
    assert document["version"] == STORE_VERSION == 1
    assert document["entries"][0] == {
        "index": 0,
        "hash": store.entries[0].hash,
        "label": "cat",
        "source": "split",
        "time": NOW,
    }
    assert path.read_bytes().endswith(b"}\n")
    loaded = LabelStore.load(path)
    assert loaded == store
    assert loaded.entries == store.entries
    assert all(isinstance(entry, LabelEntry) for entry in loaded.entries)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, store: LabelStore) -> None:
    path = tmp_path / STORE_NAME
    LabelStore.empty().save(path)
    store.save(path)  # replaces the file
    assert sorted(p.name for p in tmp_path.iterdir()) == [STORE_NAME]
    assert LabelStore.load(path) == store
    assert LabelStore.load(tmp_path / STORE_NAME).entries[-1].label == "bird"


def test_empty_store_round_trips(tmp_path: Path) -> None:
    path = tmp_path / STORE_NAME
    LabelStore.empty().save(path)
    assert LabelStore.load(path) == LabelStore.empty()
    assert LabelStore.empty().current() == {}


def _write_store(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _document(**changes: object) -> dict[str, object]:
    entry = {"index": 1, "hash": "0123456789abcdef", "label": "cat", "source": "file", "time": NOW}
    document: dict[str, object] = {"format": STORE_FORMAT, "version": 1, "entries": [entry]}
    document.update(changes)
    return document


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"label store '.*labels\.json' does not exist"):
        LabelStore.load(tmp_path / STORE_NAME)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        LabelStore.load(tmp_path)


def test_load_not_json(tmp_path: Path) -> None:
    path = tmp_path / STORE_NAME
    path.write_text('{"format": "ssvae-labels",\n  oops', encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.json' is not valid JSON \(line 2"):
        LabelStore.load(path)


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / STORE_NAME
    path.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(DataError, match="is not UTF-8 text"):
        LabelStore.load(path)


def test_load_not_an_object(tmp_path: Path) -> None:
    path = _write_store(tmp_path / STORE_NAME, [1, 2])
    with pytest.raises(DataError, match="must hold a JSON object"):
        LabelStore.load(path)


def test_load_wrong_format(tmp_path: Path) -> None:
    path = _write_store(tmp_path / STORE_NAME, _document(format="ssvae-report"))
    with pytest.raises(DataError, match=r"has format 'ssvae-report'; expected 'ssvae-labels'"):
        LabelStore.load(path)


def test_load_newer_version(tmp_path: Path) -> None:
    path = _write_store(tmp_path / STORE_NAME, _document(version=99))
    with pytest.raises(DataError, match=r"version 99, written by a newer ssvae.*reads version 1"):
        LabelStore.load(path)


@pytest.mark.parametrize("version", [0, "1", None, True, 1.5])
def test_load_unknown_version(tmp_path: Path, version: object) -> None:
    path = _write_store(tmp_path / STORE_NAME, _document(version=version))
    with pytest.raises(DataError, match=r"unknown version .*; supported: 1"):
        LabelStore.load(path)


def test_load_entries_not_a_list(tmp_path: Path) -> None:
    path = _write_store(tmp_path / STORE_NAME, _document(entries={"0": "cat"}))
    with pytest.raises(DataError, match="must have 'entries', a JSON list"):
        LabelStore.load(path)


@pytest.mark.parametrize("field", ["index", "hash", "label", "source", "time"])
def test_load_entry_missing_a_field(tmp_path: Path, field: str) -> None:
    document = _document()
    entry = document["entries"][0]  # type: ignore[index]
    del entry[field]
    path = _write_store(tmp_path / STORE_NAME, document)
    with pytest.raises(DataError, match=rf"entry 0 lacks the field '{field}'; each entry has"):
        LabelStore.load(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("index", -1, "'index' must be a whole number >= 0"),
        ("index", "3", "'index' must be a whole number >= 0"),
        ("index", True, "'index' must be a whole number >= 0"),
        ("hash", "XYZ", "'hash' must be 16 lowercase hex digits"),
        ("label", "", "'label' is empty"),
        ("label", "a\nb", "'label' contains a line break"),
        ("label", " cat", "'label' is not in normal form"),
        ("source", "Oracle", "'source' must be a lowercase identifier"),
        ("time", "2026-11-26 14:31:05", "'time' must be a UTC time"),
        ("time", "2026-13-40T14:31:05Z", "'time' is not a valid date and time"),
        ("extra", 1, "unknown field 'extra'"),
    ],
)
def test_load_malformed_entry(tmp_path: Path, field: str, value: object, message: str) -> None:
    document = _document()
    document["entries"][0][field] = value  # type: ignore[index]
    path = _write_store(tmp_path / STORE_NAME, document)
    with pytest.raises(DataError, match=rf"labels\.json', entry 0.*{message}"):
        LabelStore.load(path)


def test_load_inconsistent_hashes(tmp_path: Path) -> None:
    document = _document()
    entries = document["entries"]
    second = dict(entries[0], hash="fedcba9876543210", time=LATER)  # type: ignore[index]
    entries.append(second)  # type: ignore[attr-defined]
    path = _write_store(tmp_path / STORE_NAME, document)
    with pytest.raises(DataError, match="entries 0 and 1 give example 1 different content hashes"):
        LabelStore.load(path)


# ---------------------------------------------------------------- add


def test_add_records_hash_source_and_time(x: np.ndarray, store: LabelStore) -> None:
    assert [e.index for e in store.entries] == [0, 1, 2, 5]
    assert [e.hash for e in store.entries] == example_hashes(x, [0, 1, 2, 5])
    assert [e.source for e in store.entries] == ["split"] * 3 + ["oracle"]
    assert [e.time for e in store.entries] == [NOW] * 3 + [LATER]
    assert store.current() == {0: "cat", 1: "dog", 2: "cat", 5: "bird"}
    assert store.label_names() == ["cat", "dog", "bird"]


def test_add_returns_a_new_store(x: np.ndarray) -> None:
    empty = LabelStore.empty()
    grown = empty.add(np.array([4]), np.array(["cat"]), x=x, source="api", now=NOW)
    assert empty.entries == () and len(grown) == 1
    assert isinstance(grown.entries[0].index, int) and grown.entries[0].label == "cat"


def test_add_stamps_the_current_utc_time(x: np.ndarray) -> None:
    entry = LabelStore.empty().add([0], ["cat"], x=x, source="api").entries[0]
    assert len(entry.time) == 20 and entry.time.endswith("Z") and entry.time[10] == "T"


def test_add_is_idempotent(x: np.ndarray, store: LabelStore) -> None:
    again = store.add([0, 5, 0], ["cat", "bird", "cat"], x=x, source="file", now=LATER)
    assert again == store
    grown = store.add([1, 7, 7], ["dog", "dog", "dog"], x=x, source="file", now=LATER)
    assert grown.entries[: len(store)] == store.entries
    assert [(e.index, e.label, e.source) for e in grown.entries[len(store) :]] == [(7, "dog", "file")]


def test_add_strips_surrounding_whitespace(x: np.ndarray, store: LabelStore) -> None:
    assert store.add([0], ["  cat "], x=x, source="file") == store


@pytest.mark.parametrize("index", [10, 5000, -1])
def test_add_index_out_of_range(x: np.ndarray, index: int) -> None:
    with pytest.raises(
        DataError,
        match=rf"example index {index} is out of range; the data have 10 examples \(0\.\.9\)",
    ):
        LabelStore.empty().add([0, index], ["cat", "dog"], x=x, source="file")


def test_add_index_not_an_integer(x: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"example index 1\.5 is not an integer"):
        LabelStore.empty().add([1.5], ["cat"], x=x, source="file")  # type: ignore[list-item]


@pytest.mark.parametrize("allowed", [{0, 1, 2, 3}, np.array([3, 2, 1, 0]), np.arange(10) < 4])
def test_add_index_outside_allowed(x: np.ndarray, allowed: object) -> None:
    store = LabelStore.empty().add([3], ["cat"], x=x, source="file", allowed=allowed)  # type: ignore[arg-type]
    assert store.current() == {3: "cat"}
    with pytest.raises(
        DataError, match=r"example 6 is not a training example of this run \(it is in the held-out"
    ):
        store.add([2, 6], ["cat", "cat"], x=x, source="file", allowed=allowed)  # type: ignore[arg-type]


def test_add_conflicting_labels_within_one_call(x: np.ndarray, store: LabelStore) -> None:
    with pytest.raises(
        DataError, match=r"example 7 is given two different labels, 'cat' and 'dog'"
    ):
        store.add([7, 8, 7], ["cat", "dog", "dog"], x=x, source="file")


def test_add_conflict_with_the_store(x: np.ndarray, store: LabelStore) -> None:
    with pytest.raises(
        DataError, match=r"example 1 is already labeled 'dog'; it cannot also be labeled 'cat'"
    ):
        store.add([8, 1], ["cat", "cat"], x=x, source="studio")
    # Nothing was added: the store is unchanged.
    assert store.current() == {0: "cat", 1: "dog", 2: "cat", 5: "bird"}


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("a\nb", "contains a line break or control character"),
        ("tab\there", "contains a line break or control character"),
        ("x" * 101, "is 101 characters long; at most 100 are allowed"),
        (3, "must be a string; got int"),
    ],
)
def test_add_bad_label_name(x: np.ndarray, label: object, message: str) -> None:
    with pytest.raises(DataError, match=rf"the label of example 4, .*{message}"):
        LabelStore.empty().add([4], [label], x=x, source="file")  # type: ignore[list-item]


def test_add_accepts_a_100_character_unicode_label(x: np.ndarray) -> None:
    label = "ü" * 100
    assert LabelStore.empty().add([4], [label], x=x, source="file").current() == {4: label}


@pytest.mark.parametrize("source", ["", "Oracle", "1st", "my source"])
def test_add_bad_source(x: np.ndarray, source: str) -> None:
    with pytest.raises(DataError, match=r"label source must be a lowercase identifier"):
        LabelStore.empty().add([4], ["cat"], x=x, source=source)


def test_add_bad_time(x: np.ndarray) -> None:
    with pytest.raises(DataError, match="label time must be a UTC time"):
        LabelStore.empty().add([4], ["cat"], x=x, source="file", now="yesterday")


def test_add_length_mismatch(x: np.ndarray) -> None:
    with pytest.raises(DataError, match="got 2 example indices but 1 labels"):
        LabelStore.empty().add([1, 2], ["cat"], x=x, source="file")


def test_add_refuses_an_example_whose_content_changed(x: np.ndarray, store: LabelStore) -> None:
    shuffled = x[::-1].copy()
    with pytest.raises(DataError, match="example 0 no longer matches its stored content hash"):
        store.add([0], ["cat"], x=shuffled, source="file")


# ---------------------------------------------------------------- verify, counts, label_array


def test_verify_passes_on_the_same_data(x: np.ndarray, store: LabelStore) -> None:
    store.verify(x)
    store.verify(x.copy())


def test_verify_fails_when_the_data_are_reordered(x: np.ndarray, store: LabelStore) -> None:
    reordered = x[[1, 0, *range(2, 10)]]
    assert example_hash(reordered[0]) != store.entries[0].hash
    with pytest.raises(
        DataError,
        match=r"^label store: example 0 no longer matches its stored content hash \(the data "
        r"were changed or reordered\); labels cannot be matched to examples$",
    ):
        store.verify(reordered)


def test_verify_fails_when_the_data_shrink(x: np.ndarray, store: LabelStore) -> None:
    with pytest.raises(DataError, match="label store: example 5 is out of range"):
        store.verify(x[:4])


def test_counts_by_label_and_source(x: np.ndarray, store: LabelStore) -> None:
    grown = store.add([7, 8, 0], ["dog", "cat", "cat"], x=x, source="studio", now=LATER)
    assert grown.counts() == {
        "by_label": {"cat": 3, "dog": 2, "bird": 1},
        "by_source": {"split": 3, "oracle": 1, "studio": 2},
    }
    assert LabelStore.empty().counts() == {"by_label": {}, "by_source": {}}


def test_counts_use_the_latest_entry_of_each_example() -> None:
    h = "0123456789abcdef"
    history = LabelStore(
        (
            LabelEntry(3, h, "cat", "split", NOW),
            LabelEntry(3, h, "dog", "studio", LATER),
        )
    )
    assert history.current() == {3: "dog"}
    assert history.label_names() == ["cat", "dog"]
    assert history.counts() == {"by_label": {"dog": 1}, "by_source": {"studio": 1}}


def test_label_array(store: LabelStore) -> None:
    y = store.label_array(10, ["bird", "cat", "dog"])
    assert y.dtype == np.int32 and y.shape == (10,)
    assert y.tolist() == [1, 2, 1, -1, -1, 0, -1, -1, -1, -1]
    assert LabelStore.empty().label_array(3, ["cat"]).tolist() == [-1, -1, -1]


def test_label_array_unknown_name(store: LabelStore) -> None:
    with pytest.raises(
        DataError, match=r"example 5 is labeled 'bird', which is not one of the labels of this run"
    ):
        store.label_array(10, ["cat", "dog"])


def test_label_array_index_beyond_n(store: LabelStore) -> None:
    with pytest.raises(DataError, match="example index 5 is out of range; the data have 4"):
        store.label_array(4, ["bird", "cat", "dog"])


# ---------------------------------------------------------------- read_label_csv


def _csv(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "labels.csv"
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_read_label_csv(tmp_path: Path) -> None:
    path = _csv(tmp_path, "\ufeff index , label \r\n 3 , cat\r\n\r\n10,dog \r\n0,\"a, b\"\r\n  \r\n")
    assert read_label_csv(path) == ([3, 10, 0], ["cat", "dog", "a, b"])


def test_read_label_csv_unicode_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path, "index,label\n7,Äpfel\n8,猫\n")
    assert read_label_csv(path) == ([7, 8], ["Äpfel", "猫"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("idx,label\n1,cat\n", r"line 1: expected the header 'index,label'"),
        ("1,cat\n2,dog\n", r"line 1: expected the header 'index,label'"),
        ("\nindex,label,extra\n1,cat\n", r"line 2: expected the header 'index,label'"),
        ("index,label\n1,cat\n2,dog,3\n", r"line 3: has 3 fields; expected 2"),
        ("index,label\n1,cat\n\n2\n", r"line 4: has 1 fields; expected 2"),
        ("index,label\none,cat\n", r"line 2: the index 'one' is not a whole number >= 0"),
        ("index,label\n1.0,cat\n", r"line 2: the index '1.0' is not a whole number >= 0"),
        ("index,label\n-4,cat\n", r"line 2: the index '-4' is not a whole number >= 0"),
        ("index,label\n1,cat\n2,  \n", r"line 3: the label is empty"),
        ('index,label\n1,"a\nb"\n', r"line 3: the label contains a line break"),
        ("index,label\n1," + "x" * 101 + "\n", r"line 2: the label is 101 characters long"),
    ],
)
def test_read_label_csv_malformed(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DataError, match=rf"^label file '.*labels\.csv', {message}"):
        read_label_csv(_csv(tmp_path, content))


def test_read_label_csv_without_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has the header but no rows"):
        read_label_csv(_csv(tmp_path, "index,label\n\n"))
    with pytest.raises(DataError, match="is empty; expected the header 'index,label'"):
        read_label_csv(_csv(tmp_path, "\n  \n"))


def test_read_label_csv_missing_file_directory_and_encoding(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"label file '.*nothing\.csv' does not exist"):
        read_label_csv(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_label_csv(tmp_path)
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 14\)"):
        read_label_csv(_csv(tmp_path, b"index,label\n1,\xe9t\xe9\n"))


def test_csv_labels_feed_the_store(tmp_path: Path, x: np.ndarray, store: LabelStore) -> None:
    indices, labels = read_label_csv(_csv(tmp_path, "index,label\n0,cat\n9,bird\n"))
    grown = store.add(indices, labels, x=x, source="file", now=LATER)
    path = tmp_path / STORE_NAME
    grown.save(path)
    loaded = LabelStore.load(path)
    loaded.verify(x)
    assert loaded.current()[9] == "bird" and len(loaded) == len(store) + 1
