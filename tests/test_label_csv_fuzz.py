"""The label CSV reader under fuzzing: any bytes, and any rows written as CSV, give either
the rows (every label a valid name in normal form) or one :class:`DataError`, never
another exception."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ssvae_core.errors import DataError
from ssvae_core.labels.store import label_name, read_label_csv

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "labels.csv"


def _read(path: Path, payload: bytes) -> tuple[list[int], list[str]] | None:
    path.write_bytes(payload)
    try:
        indices, labels = read_label_csv(path)
    except DataError as error:
        assert "\n" not in str(error)  # one line
        return None
    assert len(indices) == len(labels) > 0
    assert all(isinstance(i, int) and i >= 0 for i in indices)
    assert all(label_name(label) == label for label in labels)
    return indices, labels


HEADERS = st.sampled_from([b"", b"index,label\n", b"\xef\xbb\xbfindex,label\r\n", b"index,label,score,predicted,certainty\n"])


@FUZZ
@given(header=HEADERS, body=st.binary(max_size=200))
@example(header=b"index,label\n", body=b'1,"abc\n')
@example(header=b"index,label\n", body=b"1,\xe2\x80\x8b\n")
@example(header=b"index,label\n", body=b"9" * 5000 + b",a\n")
@example(header=b"index,label\n", body=b"1,a\x00b\n")
def test_any_bytes_give_valid_rows_or_one_data_error(path: Path, header: bytes, body: bytes) -> None:
    _read(path, header + body)


NAMES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["cat", " cat ", "cafe\u0301", "\u200b", "3\u200b", "\u202ecat", "a\nb", "a,b", 'say "hi"', "x" * 101]),
)


@FUZZ
@given(rows=st.lists(st.tuples(st.integers(0, 10**6), NAMES), min_size=1, max_size=6))
@example(rows=[(0, "\r0")])
def test_rows_written_as_csv_read_back_as_their_normal_names(
    path: Path, rows: list[tuple[int, str]]
) -> None:
    buffer = io.StringIO(newline="")
    # The CSV default line ending, so that a field holding a lone "\r" or "\n" is quoted
    # (a writer quotes the characters of its own line terminator only).
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["index", "label"])
    writer.writerows(rows)
    result = _read(path, buffer.getvalue().encode("utf-8"))
    try:
        expected = ([index for index, _ in rows], [label_name(name) for _, name in rows])
    except DataError:
        assert result is None  # a name the rule refuses is refused by the reader too
        return
    assert result == expected
