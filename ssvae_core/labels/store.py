"""The label store: every label the examples of a run have received.

A run directory holds ``labels.json``, a UTF-8 JSON object:

    {
     "format": "ssvae-labels",
     "version": 1,
     "entries": [
      {"index": 17, "hash": "3f0a9c1e5b7d2468", "label": "cat", "source": "file",
       "time": "2026-11-26T14:31:05Z"},
      ...
     ]
    }

Each entry records that one example received one label:

``index``
    The row of the example in the dataset as loaded (``load_dataset(...).x[index]``).
``hash``
    A content hash of that row (``example_hash``): the first 16 hex digits of the
    SHA-256 of the row's shape and its float32 bytes. An index alone would silently
    attach a label to another image once the data were reordered or changed;
    ``LabelStore.verify`` refuses a store whose hashes no longer match the data.
``label``
    The label name, in the form ``label_name`` gives it: Unicode NFC, no surrounding
    whitespace, at most 100 characters, at least one visible character, and no control,
    format (zero-width, bidirectional), line-break, private-use or unassigned characters.
    A new name that differs from a name already in use only by case, width, compatibility
    forms or spacing (``Cat`` beside ``cat``) is refused as a look-alike.
``source``
    Where the label came from: ``split``, ``file``, ``oracle``, ``studio``, ``api``, ... —
    any identifier matching ``[a-z][a-z0-9_-]*``.
``time``
    When it was added, in UTC with seconds: ``2026-11-26T14:31:05Z``.
``batch`` (optional)
    An identifier shared by the entries given in one action (a map selection labeled in
    the studio): ``LabelStore.withdraw_last`` takes such an action back as a whole.
``confirmed`` (optional, ``true`` when present)
    A person reviewed this label — kept or corrected it — (``ssvae_core.labels.label_issues``
    does not propose it again while it is current); it settles the example's label.
``annotator`` (optional)
    Who gave the label (a name under the label-name rule; ``ssvae label --annotator``, the
    studio's name field). Entries without one are one anonymous annotator.

Each annotator gives an example one label; another annotator's different label is a vote.
An example's current label is the *consensus* of the latest label of each annotator since
its last confirmed entry (the most votes; a tie goes to the label voted first), so with a
single annotator it is simply the latest entry.

Entries are appended in the order they were added; an example's current label is its
latest entry. The removals are ``LabelStore.withdraw`` and ``LabelStore.withdraw_last``,
the studio's undo: they take back an example's latest entry when that entry is the one
named (the label it held before, if any, is its label again). Adding a label that an example
already holds is a no-op, and giving an example a different label from the one it holds is
refused unless the call says ``relabel=True`` (a correction: the new entry supersedes the old).
``LabelStore`` is immutable: every change returns a new store, which the caller saves (atomically) only once
the change has succeeded.

Labels are also read from CSV files with the header ``index,label`` (``read_label_csv``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import operator
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ssvae_core.errors import DataError, read_user_file

__all__ = [
    "MAX_LABEL_LENGTH",
    "STORE_FORMAT",
    "STORE_NAME",
    "STORE_VERSION",
    "LabelEntry",
    "LabelStore",
    "check_distinct_names",
    "example_hash",
    "example_hashes",
    "label_name",
    "normalised_label",
    "read_label_csv",
    "read_user_text",
]

STORE_NAME = "labels.json"
STORE_FORMAT = "ssvae-labels"
STORE_VERSION = 1
MAX_LABEL_LENGTH = 100
HASH_DIGITS = 16

_ENTRY_FIELDS = ("index", "hash", "label", "source", "time")
_OPTIONAL_FIELDS = ("batch", "confirmed", "annotator")
_BATCH_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}", re.ASCII)
_SOURCE_PATTERN = re.compile(r"[a-z][a-z0-9_-]*", re.ASCII)
_HASH_PATTERN = re.compile(rf"[0-9a-f]{{{HASH_DIGITS}}}", re.ASCII)
_TIME_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_CSV_INDEX_PATTERN = re.compile(r"[0-9]+", re.ASCII)
_CSV_HEADER = ("index", "label")
# ``ssvae query`` writes this sheet: fill in ``label`` where you know it, leave the rest empty
QUERY_SHEET_HEADER = ("index", "label", "score", "predicted", "certainty")
# ``ssvae labels --export FILE.csv`` writes this; ``ssvae label`` reads its index and label
EXPORT_HEADER = ("index", "label", "source", "time", "confirmed")
_HEADERS = (_CSV_HEADER, QUERY_SHEET_HEADER, EXPORT_HEADER)


def example_hash(x_row: np.ndarray) -> str:
    """The content hash of one example: SHA-256 over ``b"8x8:"`` (its shape) followed by
    its values as C-contiguous little-endian float32 bytes; the first 16 hex digits."""
    row = np.ascontiguousarray(x_row, dtype="<f4")
    shape = "x".join(str(size) for size in row.shape)
    digest = hashlib.sha256(f"{shape}:".encode("ascii"))
    digest.update(row.tobytes())
    return digest.hexdigest()[:HASH_DIGITS]


def example_hashes(x: np.ndarray, indices: Iterable[int]) -> list[str]:
    """The content hashes of the rows ``indices`` of ``x``, in order."""
    return [example_hash(x[int(index)]) for index in indices]


def utc_now() -> str:
    """The current time in the store's format, ``2026-11-26T14:31:05Z``."""
    return datetime.now(timezone.utc).strftime(_TIME_FORMAT)


# Characters no label name may hold, by Unicode category: they are invisible, reorder or
# break the text, or mean nothing (the bidirectional overrides and zero-width spaces are Cf).
_REFUSED_CATEGORIES = {
    "Cc": "a line break or control character",
    "Cf": "an invisible format character (zero-width or bidirectional control)",
    "Zl": "a line break or control character",
    "Zp": "a line break or control character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
}
# A name needs one character of these classes: letters, marks on them, digits, punctuation, symbols.
_VISIBLE_CLASSES = ("L", "N", "P", "S")


def _label_problem(label: object) -> str | None:
    """Why ``label`` (already normalised) is not a valid label name, or None."""
    if not isinstance(label, str):
        return f"must be a string; got {type(label).__name__}"
    if not label:
        return "is empty"
    if len(label) > MAX_LABEL_LENGTH:
        return f"is {len(label)} characters long; at most {MAX_LABEL_LENGTH} are allowed"
    for char in label:
        what = _REFUSED_CATEGORIES.get(unicodedata.category(char))
        if what is not None:
            return f"contains {what} (U+{ord(char):04X})"
    if not any(unicodedata.category(char)[0] in _VISIBLE_CLASSES for char in label):
        return "has no visible character"
    return None


def label_name(label: object) -> str:
    """The label name ``label`` stands for: Unicode NFC with surrounding whitespace removed.

    The one rule of label names, shared by ``ssvae label``, the label store, the studio and
    ``SSVAEClassifier.add_labels``: a name that is empty or invisible once normalised,
    longer than ``MAX_LABEL_LENGTH`` characters, or holding a control, format
    (zero-width, bidirectional), line-break, private-use or unassigned character raises
    ``DataError`` saying which.
    """
    name, problem = normalised_label(label)
    if problem is not None:
        raise DataError(f"label {label!r:.60} {problem}")
    return name


def normalised_label(label: object) -> tuple[str, str | None]:
    """``label`` normalised, and why it is not a valid name (None if it is): what
    ``label_name`` checks, for a caller that words the error itself."""
    name = unicodedata.normalize("NFC", label).strip() if isinstance(label, str) else label
    return str(name), _label_problem(name)


def _look(name: str) -> str:
    """What a name looks like: NFKC, case-folded, runs of spaces as one."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def check_distinct_names(names: Iterable[str], existing: Iterable[str]) -> None:
    """Refuse a new name among ``names`` that looks like another name in use (it differs
    from one of ``existing``, or from another new name, only by case, width, compatibility
    forms or spacing): one ``DataError`` naming both."""
    seen = {_look(name): name for name in existing}
    for name in dict.fromkeys(names):
        twin = seen.setdefault(_look(name), name)
        if twin != name:
            raise DataError(
                f"label {name!r} looks like the label {twin!r} (they differ only in case, width "
                f"or spacing); use {twin!r} or a clearly different name"
            )


def _time_problem(time: object) -> str | None:
    """Why ``time`` is not a UTC time in the store's format, or None."""
    if not isinstance(time, str) or not _TIME_PATTERN.fullmatch(time):
        return f"must be a UTC time like '2026-11-26T14:31:05Z'; got {time!r}"
    try:
        datetime.strptime(time, _TIME_FORMAT)
    except ValueError:
        return f"is not a valid date and time: {time!r}"
    return None


def _source_problem(source: object) -> str | None:
    if not isinstance(source, str) or not _SOURCE_PATTERN.fullmatch(source):
        return (
            "must be a lowercase identifier matching [a-z][a-z0-9_-]* "
            f"(e.g. 'file', 'oracle'); got {source!r}"
        )
    return None


def _range_message(index: int, n: int) -> str:
    return f"example index {index} is out of range; the data have {n} examples (0..{n - 1})"


def _as_rows(x: np.ndarray) -> np.ndarray:
    rows = np.asarray(x)
    if rows.ndim < 1:
        raise DataError(f"x must be an array of examples with shape (N, ...); got shape {rows.shape}")
    return rows


def _as_list(values: Sequence[Any] | np.ndarray) -> list[Any]:
    return values.ravel().tolist() if isinstance(values, np.ndarray) else list(values)


def _as_index(value: object) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise DataError(f"example index {value!r} is not an integer")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"example index {value!r} is not an integer") from None


@dataclass(frozen=True)
class LabelEntry:
    """One label given to one example (see the module docstring for the fields)."""

    index: int
    hash: str
    label: str
    source: str
    time: str
    batch: str | None = None
    confirmed: bool = False
    annotator: str | None = None

    @property
    def voter(self) -> str:
        """Who this label counts for in the consensus ("" for no annotator)."""
        return self.annotator or ""

    def to_json(self) -> dict[str, Any]:
        """The entry as ``labels.json`` stores it."""
        out: dict[str, Any] = {
            "index": self.index,
            "hash": self.hash,
            "label": self.label,
            "source": self.source,
            "time": self.time,
        }
        if self.batch is not None:
            out["batch"] = self.batch
        if self.confirmed:
            out["confirmed"] = True
        if self.annotator is not None:
            out["annotator"] = self.annotator
        return out


@dataclass(frozen=True)
class LabelStore:
    """Every label a run's examples have received, oldest first; immutable."""

    entries: tuple[LabelEntry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def empty(cls) -> LabelStore:
        """A store with no labels."""
        return cls(())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelStore:
        """Read and check a ``labels.json``; every problem is one ``DataError`` line."""
        where = f"label store {os.fspath(path)!r}"
        text = read_user_text(path, "label store", "utf-8")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where} is not valid JSON (line {error.lineno}, column {error.colno}: "
                f"{error.msg})"
            ) from None
        if not isinstance(document, dict):
            raise DataError(
                f"{where} must hold a JSON object with 'format', 'version' and 'entries'; "
                f"got a JSON {type(document).__name__}"
            )
        form = document.get("format")
        if form != STORE_FORMAT:
            raise DataError(f"{where} has format {form!r}; expected {STORE_FORMAT!r}")
        version = document.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > STORE_VERSION:
            raise DataError(
                f"{where} has version {version}, written by a newer ssvae; this ssvae reads "
                f"version {STORE_VERSION}"
            )
        if version != STORE_VERSION or isinstance(version, bool):
            raise DataError(
                f"{where} has unknown version {version!r}; supported: {STORE_VERSION}"
            )
        raw_entries = document.get("entries")
        if not isinstance(raw_entries, list):
            raise DataError(f"{where} must have 'entries', a JSON list; got {raw_entries!r:.60}")
        unknown = sorted(set(document) - {"format", "version", "entries"})
        if unknown:
            raise DataError(
                f"{where} has unknown field {unknown[0]!r}; allowed: 'format', 'version', "
                "'entries'"
            )
        entries = tuple(
            _entry_from_json(item, f"{where}, entry {number}")
            for number, item in enumerate(raw_entries)
        )
        first_hash: dict[int, tuple[int, str]] = {}
        for number, entry in enumerate(entries):
            earlier = first_hash.setdefault(entry.index, (number, entry.hash))
            if earlier[1] != entry.hash:
                raise DataError(
                    f"{where}: entries {earlier[0]} and {number} give example {entry.index} "
                    f"different content hashes ({earlier[1]} and {entry.hash}); the file is "
                    "inconsistent"
                )
        return cls(entries)

    def to_json(self) -> dict[str, Any]:
        """The store as ``labels.json`` holds it."""
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "entries": [entry.to_json() for entry in self.entries],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to ``path`` atomically (a temporary file beside it, then renamed)."""
        # Imported here: the checkpoint module loads JAX, which reading labels never needs.
        from ssvae_core.training.checkpoint import atomic_write_bytes

        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))

    def add(
        self,
        indices: Sequence[int] | np.ndarray,
        labels: Sequence[str] | np.ndarray,
        *,
        x: np.ndarray,
        source: str,
        allowed: Iterable[int] | np.ndarray | None = None,
        now: str | None = None,
        known: Sequence[str] = (),
        batch: str | None = None,
        relabel: bool = False,
        confirm: bool = False,
        annotator: str | None = None,
    ) -> LabelStore:
        """A new store with ``labels[k]`` given to example ``indices[k]``.

        ``x`` is the dataset's examples (the hashes are taken from it); ``allowed``, when
        given, is the indices that may be labeled (a run's training rows), or a boolean mask
        over the rows of ``x``; ``known`` is further names in use (the model's classes).
        Label names are normalised by ``label_name``. Labels an example already holds
        are skipped. Everything is checked before anything is built: an index out of range
        or not allowed, a label name that is not valid or looks like another name in use
        (``check_distinct_names``), or an example given a label different from the one
        it holds (in this call or in the store) raises ``DataError`` and nothing is added;
        with ``relabel=True`` the new label supersedes the one held (a correction, marked
        ``confirmed``). ``batch``
        marks the entries of this call as one action (``withdraw_last``); with
        ``confirm=True`` the entries are marked ``confirmed`` and added even where the
        example holds that label already (a review that kept it). ``annotator`` names who
        gave the labels: a label differing from another annotator's is a vote, not a
        conflict (see the module docstring).
        """
        rows = _as_rows(x)
        n = len(rows)
        if isinstance(indices, (str, bytes)) or isinstance(labels, (str, bytes)):
            raise DataError("give the example indices and the labels as sequences, not strings")
        index_list = [_as_index(value) for value in _as_list(indices)]
        label_list = _as_list(labels)
        if len(index_list) != len(label_list):
            raise DataError(
                f"got {len(index_list)} example indices but {len(label_list)} labels; "
                "give one label per index"
            )
        time, annotator = _checked_action(source, now, batch, annotator)
        allowed_set = _allowed_indices(allowed, n)

        names = []
        for index, label in zip(index_list, label_list, strict=True):
            name, problem = normalised_label(label)
            if problem is not None:
                raise DataError(f"the label of example {index}, {label!r:.60}, {problem}")
            names.append(name)
        check_distinct_names(names, [*known, *self.label_names()])
        _check_rows(index_list, n, allowed_set)
        held = self._votes().get(annotator or "", {})
        requested = self._requested(index_list, names, rows, held, annotator=annotator, relabel=relabel)
        added = tuple(
            LabelEntry(
                index=index,
                hash=example_hash(rows[index]),
                label=name,
                source=source,
                time=time,
                batch=batch,
                confirmed=confirm or relabel,  # a correction settles the example's label
                annotator=annotator,
            )
            for index, name in requested.items()
            if held.get(index) != name or confirm
        )
        return LabelStore(self.entries + added)

    def _requested(
        self,
        index_list: list[int],
        names: list[str],
        rows: np.ndarray,
        held: dict[int, str],
        *,
        annotator: str | None,
        relabel: bool,
    ) -> dict[int, str]:
        """The label asked for each example, checked against the others of the call, the
        label the annotator gave it before (``held``) and the example's stored hash."""
        stored_hash = {entry.index: entry.hash for entry in self.entries}
        requested: dict[int, str] = {}
        for index, name in zip(index_list, names, strict=True):
            earlier = requested.get(index)
            if earlier is not None and earlier != name:
                raise DataError(
                    f"example {index} is given two different labels, {earlier!r} and {name!r}; "
                    "give each example one label"
                )
            if index in held and held[index] != name and not relabel:
                raise DataError(
                    f"example {index} is already labeled {held[index]!r}"
                    + (f" by {annotator!r}" if annotator else "")
                    + f"; it cannot also be labeled {name!r}"
                )
            if index in stored_hash and stored_hash[index] != example_hash(rows[index]):
                raise DataError(_changed_message(index))
            requested[index] = name
        return requested

    def withdraw(self, index: int, label: str, *, source: str) -> tuple[LabelStore, LabelEntry]:
        """A new store without example ``index``'s latest entry, which must give it ``label``
        from ``source`` (an undo takes back exactly the label it gave, never an older one or
        another tool's). Returns the new store and the entry removed; anything else is a
        ``DataError`` and nothing changes."""
        index = _as_index(index)
        position = next(
            (k for k in range(len(self.entries) - 1, -1, -1) if self.entries[k].index == index), None
        )
        if position is None:
            raise DataError(f"example {index} has no label to withdraw")
        entry = self.entries[position]
        if entry.label != label:
            raise DataError(
                f"example {index} is labeled {entry.label!r}, not {label!r}; nothing was withdrawn"
            )
        if entry.source != source:
            raise DataError(
                f"example {index} got its label {label!r} from {entry.source!r}; only labels from "
                f"{source!r} can be withdrawn here"
            )
        return LabelStore(self.entries[:position] + self.entries[position + 1 :]), entry

    def withdraw_last(self, *, source: str) -> tuple[LabelStore, list[LabelEntry]]:
        """A new store without the latest action from ``source`` that can still be taken
        back: its latest entry that is still its example's latest, with every other entry of
        the same ``batch`` that is still its example's latest. Returns the new store and the
        entries removed; ``DataError`` when there is nothing to take back."""
        latest = {entry.index: k for k, entry in enumerate(self.entries)}
        last = next(
            (k for k in range(len(self.entries) - 1, -1, -1)
             if self.entries[k].source == source and latest[self.entries[k].index] == k),
            None,
        )
        if last is None:
            raise DataError(f"there is no label from {source!r} to take back")
        batch = self.entries[last].batch
        removed = {
            k for k in latest.values()
            if k == last or (batch is not None and self.entries[k].batch == batch
                             and self.entries[k].source == source)
        }
        kept = tuple(entry for k, entry in enumerate(self.entries) if k not in removed)
        return LabelStore(kept), [self.entries[k] for k in sorted(removed)]

    def _open_entries(self) -> dict[int, list[LabelEntry]]:
        """Per example, its entries since its last confirmed one (that one included)."""
        out: dict[int, list[LabelEntry]] = {}
        for entry in self.entries:
            if entry.confirmed:
                out[entry.index] = [entry]
            else:
                out.setdefault(entry.index, []).append(entry)
        return out

    def _votes(self) -> dict[str, dict[int, str]]:
        """Per annotator ("" for none), its label of each example in the consensus."""
        votes: dict[str, dict[int, str]] = {}
        for index, ballot in self.ballots().items():
            for voter, label in ballot.items():
                votes.setdefault(voter, {})[index] = label
        return votes

    def ballots(self) -> dict[int, dict[str, str]]:
        """Per example, each annotator's label in its consensus (``{"": ...}`` for labels
        without an annotator)."""
        out: dict[int, dict[str, str]] = {}
        for index, entries in self._open_entries().items():
            ballot: dict[str, str] = {}
            for entry in entries:
                ballot.pop(entry.voter, None)
                ballot[entry.voter] = entry.label
            out[index] = ballot
        return out

    def current(self) -> dict[int, str]:
        """Each labeled example's current label, by index: the consensus of its annotators
        (the latest entry where there is one annotator)."""
        out: dict[int, str] = {}
        for index, ballot in sorted(self.ballots().items()):
            if len(ballot) == 1:
                out[index] = next(iter(ballot.values()))
                continue
            tally: dict[str, int] = {}
            for label in ballot.values():  # in the order voted: a tie goes to the first
                tally[label] = tally.get(label, 0) + 1
            out[index] = max(tally, key=lambda label: tally[label])
        return out

    def label_names(self) -> list[str]:
        """The distinct labels of all entries, in order of first appearance."""
        return list(dict.fromkeys(entry.label for entry in self.entries))

    def counts(self) -> dict[str, dict[str, int]]:
        """How many examples currently hold each label, and how many got their current label
        from each source: ``{"by_label": {...}, "by_source": {...}}``."""
        latest = {entry.index: entry for entry in self.entries}
        by_label: dict[str, int] = {name: 0 for name in self.label_names()}
        by_source: dict[str, int] = {}
        for index, label in self.current().items():
            by_label[label] += 1
            source = latest[index].source
            by_source[source] = by_source.get(source, 0) + 1
        return {
            "by_label": {name: count for name, count in by_label.items() if count},
            "by_source": by_source,
        }

    def verify(self, x: np.ndarray) -> None:
        """Check that every entry's example is still in ``x`` with the content it was labeled
        with; raises ``DataError`` for the first one that is not."""
        rows = _as_rows(x)
        n = len(rows)
        checked: dict[int, str] = {}
        for entry in self.entries:
            if entry.index >= n:
                raise DataError(
                    f"label store: example {entry.index} is out of range; the data have {n} "
                    "examples (the data were changed); labels cannot be matched to examples"
                )
            if entry.index not in checked:
                checked[entry.index] = example_hash(rows[entry.index])
            if checked[entry.index] != entry.hash:
                raise DataError(_changed_message(entry.index))

    def label_array(self, n: int, names: Sequence[str]) -> np.ndarray:
        """The current labels as an int32 array of length ``n``: ``-1`` where an example is
        unlabeled, else the position of its label in ``names``."""
        position: dict[str, int] = {}
        for number, name in enumerate(names):
            position.setdefault(name, number)
        y = np.full(n, -1, dtype=np.int32)
        for index, label in self.current().items():
            if index >= n:
                raise DataError(_range_message(index, n))
            if label not in position:
                known = ", ".join(repr(name) for name in names) or "none"
                raise DataError(
                    f"example {index} is labeled {label!r}, which is not one of the labels "
                    f"of this run ({known})"
                )
            y[index] = position[label]
        return y


def _changed_message(index: int) -> str:
    return (
        f"label store: example {index} no longer matches its stored content hash (the data "
        "were changed or reordered); labels cannot be matched to examples"
    )


def _allowed_indices(allowed: Iterable[int] | np.ndarray | None, n: int) -> set[int] | None:
    if allowed is None:
        return None
    if isinstance(allowed, np.ndarray) and allowed.dtype == np.bool_:
        if allowed.shape != (n,):
            raise DataError(
                f"the mask of examples that may be labeled has shape {allowed.shape}; "
                f"expected ({n},), one value per example"
            )
        return {int(index) for index in np.flatnonzero(allowed)}
    values = allowed.ravel().tolist() if isinstance(allowed, np.ndarray) else allowed
    return {_as_index(value) for value in values}


def _entry_from_json(item: object, where: str) -> LabelEntry:
    allowed = ", ".join(repr(name) for name in _ENTRY_FIELDS)
    if not isinstance(item, dict):
        raise DataError(f"{where} must be a JSON object with {allowed}; got {item!r:.60}")
    for name in _ENTRY_FIELDS:
        if name not in item:
            raise DataError(f"{where} lacks the field {name!r}; each entry has {allowed}")
    unknown = sorted(set(item) - set(_ENTRY_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        optional = ", ".join(repr(name) for name in _OPTIONAL_FIELDS)
        raise DataError(f"{where} has unknown field {unknown[0]!r}; allowed: {allowed} and {optional}")
    batch = item.get("batch")
    if batch is not None and (not isinstance(batch, str) or not _BATCH_PATTERN.fullmatch(batch)):
        raise DataError(f"{where}: 'batch' must match [A-Za-z0-9_-]{{1,40}}; got {batch!r:.60}")
    if "confirmed" in item and item["confirmed"] is not True:
        raise DataError(f"{where}: 'confirmed' must be true when present; got {item['confirmed']!r:.40}")
    annotator = item.get("annotator")
    if annotator is not None:
        problem = _label_problem(annotator)
        if problem is not None:
            raise DataError(f"{where}: 'annotator' {problem}")
    index = item["index"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise DataError(f"{where}: 'index' must be a whole number >= 0; got {index!r}")
    digest = item["hash"]
    if not isinstance(digest, str) or not _HASH_PATTERN.fullmatch(digest):
        raise DataError(
            f"{where}: 'hash' must be {HASH_DIGITS} lowercase hex digits; got {digest!r:.60}"
        )
    label = item["label"]
    problem = _label_problem(label)
    if problem is None and label != label_name(label):
        problem = "is not in normal form (Unicode NFC, no surrounding whitespace)"
    if problem is not None:
        raise DataError(f"{where}: 'label' {problem}")
    for name, check in (("source", _source_problem), ("time", _time_problem)):
        problem = check(item[name])
        if problem is not None:
            raise DataError(f"{where}: {name!r} {problem}")
    return LabelEntry(
        index=index, hash=digest, label=label, source=item["source"], time=item["time"], batch=batch,
        confirmed="confirmed" in item, annotator=annotator,
    )


def _checked_action(
    source: str, now: str | None, batch: str | None, annotator: str | None
) -> tuple[str, str | None]:
    """The time of a call to ``LabelStore.add`` and its annotator's name, normalised,
    after checking its source, time, batch and annotator."""
    problem = _source_problem(source)
    if problem is not None:
        raise DataError(f"label source {problem}")
    time = utc_now() if now is None else now
    problem = _time_problem(time)
    if problem is not None:
        raise DataError(f"label time {problem}")
    if batch is not None and (not isinstance(batch, str) or not _BATCH_PATTERN.fullmatch(batch)):
        raise DataError(f"a label batch must match [A-Za-z0-9_-]{{1,40}}; got {batch!r:.60}")
    if annotator is not None:
        who, problem = normalised_label(annotator)
        if problem is not None:
            raise DataError(f"the annotator's name {annotator!r:.60} {problem}")
        annotator = who
    return time, annotator


def _check_rows(index_list: list[int], n: int, allowed_set: set[int] | None) -> None:
    """Refuse an index out of range or not among the allowed ones."""
    for index in index_list:
        if not 0 <= index < n:
            raise DataError(_range_message(index, n))
        if allowed_set is not None and index not in allowed_set:
            raise DataError(
                f"example {index} is not a training example of this run (it is in the "
                "held-out test set or out of range)"
            )


def read_user_text(path: str | os.PathLike[str], what: str, encoding: str) -> str:
    """The text of a file the user named; unreadable or not UTF-8 is one ``DataError``."""
    raw = read_user_file(path, what, DataError)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{what} {os.fspath(path)!r} is not UTF-8 text (byte {error.start})") from None


def read_label_csv(path: str | os.PathLike[str]) -> tuple[list[int], list[str]]:
    """The ``(indices, labels)`` of a CSV file with the header ``index,label``.

    UTF-8 (a byte-order mark is allowed); whitespace around fields is ignored and blank
    lines are skipped; quoting is strict (an unterminated or stray quote is an error). Each
    row is a whole-number example index and a label name (``label_name``). A query
    sheet written by ``ssvae query`` (header ``index,label,score,predicted,certainty``) is
    read the same way, except that rows whose label was left empty are skipped. Every
    problem is one ``DataError`` line naming the file and the line.
    """
    where = f"label file {os.fspath(path)!r}"
    text = read_user_text(path, "label file", "utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    indices: list[int] = []
    labels: list[str] = []
    header_seen = False
    header = _CSV_HEADER
    skipped = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataError(f"{where}, line {reader.line_num}: {error}") from None
        line = reader.line_num
        fields = [field.strip() for field in row]
        if not any(fields):
            continue
        if not header_seen:
            if tuple(fields) not in _HEADERS:
                raise DataError(
                    f"{where}, line {line}: expected the header 'index,label' (or a query "
                    f"sheet's '{','.join(QUERY_SHEET_HEADER)}', or an export's "
                    f"'{','.join(EXPORT_HEADER)}'); got {','.join(row)!r:.80}"
                )
            header = tuple(fields)
            header_seen = True
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{where}, line {line}: has {len(fields)} fields; expected {len(header)} "
                f"({','.join(header)})"
            )
        index_text, label = fields[:2]
        if header == QUERY_SHEET_HEADER and not label:
            skipped += 1
            continue
        if not _CSV_INDEX_PATTERN.fullmatch(index_text):
            raise DataError(
                f"{where}, line {line}: the index {index_text!r:.40} is not a whole number >= 0"
            )
        if len(index_text) > 18:
            raise DataError(f"{where}, line {line}: the index {index_text:.40}... is out of range")
        name, problem = normalised_label(label)
        if problem is not None:
            raise DataError(f"{where}, line {line}: the label {problem}")
        indices.append(int(index_text))
        labels.append(name)
    if not header_seen:
        raise DataError(f"{where} is empty; expected the header 'index,label' and one row per label")
    if not indices and skipped:
        raise DataError(
            f"{where} is a query sheet with no label filled in ({skipped} rows); write each "
            "example's label in its 'label' column"
        )
    if not indices:
        raise DataError(f"{where} has the header but no rows; expected one 'index,label' row per label")
    return indices, labels
