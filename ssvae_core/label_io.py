"""Labels in and out of a run: CSV and Label Studio JSON, chosen by the file's extension.

Export (``ssvae labels RUN --export FILE``, the studio's download button) writes each
labeled example's current label:

``.csv``
    The header ``index,label,source,time,confirmed`` and one row per labeled example,
    which ``ssvae label`` reads back (it takes ``index`` and ``label``).
``.json``
    A Label Studio task list: per example ``{"id": index, "data": {"index": index,
    "image": "<index>.png"}, "annotations": [{"result": [{"type": "choices", "from_name":
    "label", "to_name": "image", "value": {"choices": [label]}}], "created_at": time,
    "was_cancelled": false, "meta": {"source": ..., "confirmed": ...}}]}``.

Import (``ssvae label RUN FILE.json``) reads a Label Studio export: a JSON list of tasks,
each with the dataset row in ``data.index`` (or ``data.ssvae_index``) and the label in the
first ``choices`` result of its latest annotation that was not cancelled; tasks without one
are skipped. Every problem is one ``DataError`` naming the task.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ssvae_core.errors import DataError
from ssvae_core.labels import EXPORT_HEADER, LabelStore, _normalised, _read_text, read_label_csv

EXPORT_FORMATS = (".csv", ".json")

__all__ = [
    "EXPORT_FORMATS",
    "export_run",
    "export_text",
    "read_label_file",
    "read_label_studio",
    "write_export",
]


def _format(path: str | os.PathLike[str]) -> str:
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise DataError(
            f"{os.fspath(path)!r}: the format is chosen by the extension; use .csv (index,label) "
            "or .json (Label Studio tasks)"
        )
    return suffix


def export_text(store: LabelStore, suffix: str) -> str:
    """The store's current labels as the text of a ``.csv`` or ``.json`` export."""
    latest = {entry.index: entry for entry in store.entries}
    entries = [latest[index] for index in sorted(latest)]
    if suffix == ".csv":
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(EXPORT_HEADER)
        for e in entries:
            writer.writerow([e.index, e.label, e.source, e.time, "yes" if e.confirmed else ""])
        return buffer.getvalue()
    tasks = [
        {
            "id": e.index,
            "data": {"index": e.index, "image": f"{e.index}.png"},
            "annotations": [{
                "result": [{
                    "type": "choices", "from_name": "label", "to_name": "image",
                    "value": {"choices": [e.label]},
                }],
                "created_at": e.time,
                "was_cancelled": False,
                "meta": {"source": e.source, "confirmed": e.confirmed},
            }],
        }
        for e in entries
    ]
    return json.dumps(tasks, indent=1, ensure_ascii=False) + "\n"


def write_export(store: LabelStore, path: str | os.PathLike[str]) -> int:
    """Write ``store``'s current labels to ``path`` (atomically); returns how many."""
    from ssvae_core.checkpoint import atomic_write_bytes

    text = export_text(store, _format(path))
    atomic_write_bytes(path, text.encode("utf-8"))
    return len(store.current())


def export_run(run_dir: str | os.PathLike[str], path: str | os.PathLike[str], *, data: str | None = None) -> int:
    """``ssvae labels RUN --export FILE``: the run's store (checked against its data) to
    ``FILE``; returns how many labels were written."""
    from ssvae_core.data import load_dataset
    from ssvae_core.runs import _run_config, _run_dir, require_checkpoint, run_store, split_dataset

    _format(path)
    out = _run_dir(run_dir, "labels")
    require_checkpoint(out, "before exporting its labels")
    config = _run_config(out, data)
    dataset = load_dataset(config.data.dataset)
    return write_export(run_store(out, dataset, split_dataset(dataset, config)), path)


def _choice(task: dict[str, Any], where: str) -> str | None:
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{where}: 'annotations' must be a list")
    for annotation in reversed(annotations):
        if not isinstance(annotation, dict):
            raise DataError(f"{where}: each annotation must be a JSON object")
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result", []) or []:
            value = result.get("value") if isinstance(result, dict) else None
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and choices:
                if not isinstance(choices[0], str):
                    raise DataError(f"{where}: a choice must be a label name; got {choices[0]!r:.40}")
                return choices[0]
    return None


def read_label_studio(path: str | os.PathLike[str]) -> tuple[list[int], list[str]]:
    """The ``(indices, labels)`` of a Label Studio JSON export (see the module docstring)."""
    name = f"label file {os.fspath(path)!r}"
    text = _read_text(path, "label file", "utf-8-sig")
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{name} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise DataError(f"{name} nests lists and objects too deeply") from None
    if not isinstance(tasks, list):
        raise DataError(f"{name} must be a Label Studio export: a JSON list of tasks")
    indices: list[int] = []
    labels: list[str] = []
    for number, task in enumerate(tasks):
        where = f"{name}, task {number}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(f"{where} must be an object with 'data'")
        data = task["data"]
        index = data.get("index", data.get("ssvae_index"))
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(
                f"{where}: 'data.index' (the example's row in the dataset) must be a whole number >= 0; "
                f"got {index!r:.40}"
            )
        label = _choice(task, where)
        if label is None:
            continue
        normal, problem = _normalised(label)
        if problem is not None:
            raise DataError(f"{where}: the label {problem}")
        indices.append(index)
        labels.append(normal)
    if not indices:
        raise DataError(f"{name} has no task with a label (a 'choices' result)")
    return indices, labels


def read_label_file(path: str | os.PathLike[str]) -> tuple[list[int], list[str]]:
    """The labels of a Label Studio ``.json`` export, or else of a CSV file
    (``ssvae_core.labels.read_label_csv``)."""
    if Path(os.fspath(path)).suffix.lower() == ".json":
        return read_label_studio(path)
    return read_label_csv(path)
