"""The files of a run directory, read back through one validating reader.

Every file of a run that ssvae reads again goes through ``read_run_text``: a missing
file where one is needed, a directory in its place, a file that cannot be read or is not
UTF-8 is one ``CheckpointError`` line naming the file and what is wrong. On top of it:

``rounds.jsonl``, ``curve.jsonl``
    ``read_json_lines``: every line is a JSON object (``rounds.jsonl``: a round record,
    ``round_problem``); anything else names the file and the line. Both files are
    rewritten atomically, so no kill leaves a line cut short: a bad line is damage.
``metrics.jsonl``
    Appended to while training, so a kill may cut its last line short. ``metric_lines``
    is the one repair (used by ``ssvae_core.runs.rundir.recover``): a last line that is not
    a whole JSON record is dropped; a bad line anywhere else is an error.
``report.json``
    ``read_report``: a JSON object.
``labels.json``, ``config.toml``
    ``ssvae_core.labels.store.LabelStore.load`` and ``ssvae_core.config.read_toml``,
    which give the same guarantees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssvae_core.errors import CheckpointError, read_user_file

Check = Callable[[dict[str, Any]], "str | None"]

# The fields of a round record that later commands read, and their types.
_ROUND_FIELDS: dict[str, tuple[type, ...]] = {
    "round": (int,),
    "command": (str,),
    "from_step": (int,),
    "to_step": (int,),
    "labels": (int,),
    "labels_by_class": (dict,),
}


def _where(path: Path) -> str:
    return f"run file {os.fspath(path)!r}"


def read_run_bytes(path: Path) -> bytes:
    """The bytes of one of a run's files; a directory or an unreadable file is one line."""
    return read_user_file(path, "run file", CheckpointError)


def decode(path: Path, raw: bytes) -> str:
    """``raw`` as UTF-8 text; otherwise one line naming the file and the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(
            f"{_where(path)} is not UTF-8 text (byte {error.start}); the file is damaged: "
            "restore it, or remove it to start it anew"
        ) from None


def read_run_text(path: Path) -> str:
    """The text of one of a run's files (see the module docstring for what is refused)."""
    return decode(path, read_run_bytes(path))


def _record(path: Path, number: int, line: str, check: Check | None) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    problem = None if isinstance(record, dict) else f"is not a JSON object: {line!r:.60}"
    if problem is None and check is not None:
        problem = check(record)  # type: ignore[arg-type]
    if problem is not None:
        raise CheckpointError(f"{_where(path)}, line {number}: {problem}; the file is damaged")
    return record  # type: ignore[return-value]


def read_json_lines(path: Path, check: Check | None = None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file of a run (none when it does not exist); each
    non-blank line must be a JSON object that ``check`` finds no problem with."""
    if not path.exists() and not path.is_symlink():
        return []
    lines = read_run_text(path).splitlines()
    return [_record(path, n, line, check) for n, line in enumerate(lines, 1) if line.strip()]


def round_problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` is not a round record of ``rounds.jsonl``, or None."""
    for name, kinds in _ROUND_FIELDS.items():
        value = record.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"is not a round record ({name!r} is {value!r:.40})"
    counts = record["labels_by_class"]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts.values()):
        return "is not a round record ('labels_by_class' must count examples per class)"
    return None


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """The round records of ``rounds.jsonl``, oldest first."""
    return read_json_lines(path, round_problem)


def metric_problem(record: dict[str, Any]) -> str | None:
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return f"has no integer 'step' ({step!r:.40})"
    return None


def metric_lines(path: Path) -> tuple[list[str], int]:
    """The whole lines of ``metrics.jsonl`` and how many lines a kill cut short (0 or 1).

    Lines are appended while training, so only the last one may be broken (written in
    part, with no newline after it): it is dropped. A bad line before it is an error."""
    pieces = read_run_bytes(path).split(b"\n")
    tail = pieces.pop()  # after the last newline: empty unless a write was cut short
    lines: list[str] = []
    for number, piece in enumerate(pieces, 1):
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(
                f"{_where(path)}, line {number}: is not UTF-8 text; the file is damaged"
            ) from None
        if text.strip():
            _record(path, number, text, metric_problem)
            lines.append(text)
    if not tail.strip():
        return lines, 0
    try:
        text = tail.decode("utf-8")
        whole = metric_problem(json.loads(text)) is None
    except (ValueError, AttributeError):
        whole = False
    if whole:
        lines.append(text)
    return lines, int(not whole)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (none when it does not exist)."""
    return read_json_lines(path, metric_problem)


def read_report(path: Path) -> dict[str, Any] | None:
    """``report.json`` as a dict; None when it does not exist."""
    if not path.exists() and not path.is_symlink():
        return None
    text = read_run_text(path)
    try:
        report = json.loads(text)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise CheckpointError(f"{_where(path)} is not a JSON object; rewrite it with `ssvae report`")
    return report


def append_json_line(path: Path, record: dict[str, Any], check: Check | None = None) -> None:
    """Append ``record`` as one JSON line to ``path`` (the file is checked, then rewritten
    atomically)."""
    from ssvae_core.training.checkpoint import atomic_write_bytes

    kept = read_json_lines(path, check)  # refuses a damaged file before it is rewritten
    lines = [line for line in read_run_text(path).splitlines() if line.strip()] if kept else []
    lines.append(json.dumps(record))
    atomic_write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))
