"""Labels in and out of a run: CSV and Label Studio JSON, chosen by the file's extension.

``label_run`` (``ssvae label RUN FILE``) adds a file's labels to the run's label store,
``labels_summary`` (``ssvae labels RUN``) counts them, and ``export_run`` writes them out.

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

from ssvae_core.errors import CheckpointError, DataError
from ssvae_core.labels.store import (
    EXPORT_HEADER,
    STORE_NAME,
    LabelStore,
    normalised_label,
    read_label_csv,
    read_user_text,
)
from ssvae_core.runs.run import Run

EXPORT_FORMATS = (".csv", ".json")

__all__ = [
    "EXPORT_FORMATS",
    "export_run",
    "export_text",
    "label_run",
    "labels_summary",
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
    from ssvae_core.training.checkpoint import atomic_write_bytes

    text = export_text(store, _format(path))
    atomic_write_bytes(path, text.encode("utf-8"))
    return len(store.current())


def export_run(
    run_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    data: str | None = None,
    test_data: str | None = None,
) -> int:
    """``ssvae labels RUN --export FILE``: the run's store (checked against its data) to
    ``FILE``; returns how many labels were written."""
    _format(path)
    run = Run.open(run_dir, "labels", data=data, test_data=test_data)
    run.require_checkpoint("before exporting its labels")
    return write_export(run.label_store(), path)


def label_run(
    run_dir: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    *,
    source: str = "file",
    data: str | None = None,
    test_data: str | None = None,
    relabel: bool = False,
    annotator: str | None = None,
) -> dict[str, Any]:
    """Add the labels of a file (``read_label_file``: rows of the run's dataset, label
    names, new names allowed) to the run's label store. With ``relabel`` the rows are a
    review: they replace the labels examples hold, and confirm those they keep.

    Every row is checked first — an unknown index, a held-out test example, an example
    given two different labels, a malformed file — and any problem changes nothing.
    Returns ``{"added": n, "new_classes": [...], "counts": ...}``.
    """
    run = Run.open(run_dir, "label", data=data, test_data=test_data)
    indices, names = read_label_file(labels_file)
    with run.lock():
        run.require_checkpoint("before labeling")
        manifest = run.manifest()
        run.recover(int(manifest["step"]))  # what an interrupted command left, the store's included
        store = run.label_store()
        updated = store.add(
            indices, names, x=run.dataset.x, source=source, allowed=run.split.train,
            known=manifest["label_names"], relabel=relabel, confirm=relabel, annotator=annotator,
        )
        updated.save(run.store_path)
        known = set(manifest["label_names"])
        return {
            "added": len(updated) - len(store),
            "new_classes": [name for name in updated.label_names() if name not in known],
            "counts": updated.counts(),
        }


def labels_summary(
    run_dir: str | os.PathLike[str], *, data: str | None = None, test_data: str | None = None
) -> dict[str, Any]:
    """The run's label store in numbers: labels per class and per source. The store is
    checked as every command that trains on it checks it (against the run's data, which
    ``data`` and ``test_data`` point to where they have moved): an invalid store is refused, not counted."""
    from ssvae_core.labels.annotators import agreement

    run = Run.open(run_dir, "labels", data=data, test_data=test_data)
    if not run.store_path.exists():
        raise CheckpointError(
            f"{os.fspath(run.path)!r} has no label store ({STORE_NAME}); it was written before "
            "runs kept one — `ssvae retrain` creates it from the split"
        )
    store = LabelStore.load(run.store_path)
    run.require_checkpoint("before counting its labels")
    manifest = run.manifest()
    store.verify(run.dataset.x)
    outside = sorted(set(store.current()) - {int(row) for row in run.split.train})
    if outside:
        raise DataError(
            f"label store: example {outside[0]} is not a training example of this run (it is "
            "in the held-out test set); remove it from labels.json"
        )
    known = list(manifest.get("label_names", []))
    counts = store.counts()
    # the model's classes in its order, then classes it has not trained on yet
    order = {name: i for i, name in enumerate(dict.fromkeys([*known, *store.label_names()]))}
    by_label = dict(sorted(counts["by_label"].items(), key=lambda item: order.get(item[0], len(order))))
    return {
        "total": len(store.current()),
        "entries": len(store),
        "by_label": by_label,
        "by_source": counts["by_source"],
        "untrained_classes": [n for n in store.label_names() if known and n not in known],
        **agreement(store),
    }


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
    text = read_user_text(path, "label file", "utf-8-sig")
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
        normal, problem = normalised_label(label)
        if problem is not None:
            raise DataError(f"{where}: the label {problem}")
        indices.append(index)
        labels.append(normal)
    if not indices:
        raise DataError(f"{name} has no task with a label (a 'choices' result)")
    return indices, labels


def read_label_file(path: str | os.PathLike[str]) -> tuple[list[int], list[str]]:
    """The labels of a Label Studio ``.json`` export, or else of a CSV file
    (``ssvae_core.labels.store.read_label_csv``)."""
    if Path(os.fspath(path)).suffix.lower() == ".json":
        return read_label_studio(path)
    return read_label_csv(path)
