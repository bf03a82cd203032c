"""The training rounds of a run directory: ``rounds.jsonl`` and the round each checkpoint
belongs to.

Every training command (``train``, ``retrain``, ``train --resume``) is a round; when it
ends, its record is appended to ``rounds.jsonl``: the command, the steps it went from and
to, the labels it trained with (per class), the channels claimed, held-out accuracy and
ECE, the free channels, the wall time. Each checkpoint a round writes carries the round it
belongs to in its manifest (``round``: command, ``from_step``, the planned ``to_step``,
``labels_by_class``), so a round whose command was killed after a checkpoint is never lost:
the next command on the run finds the checkpoint's step beyond the last recorded round
(``unrecorded_round``) and records it — complete when the checkpoint is the round's
last, else marked ``"partial": true`` — or, for ``train --resume``, finishes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssvae_core.labels.store import utc_now
from ssvae_core.runs.runfiles import append_json_line, read_metrics, read_rounds, round_problem

if TYPE_CHECKING:
    from ssvae_core.api import SSVAEClassifier

ROUNDS_NAME = "rounds.jsonl"


def round_info(
    command: str, from_step: int, to_step: int, label_names: tuple[str, ...] | list[str], labels: np.ndarray
) -> dict[str, Any]:
    """What a round's checkpoints record of it: ``labels`` are the training labels
    (``-1``: unlabeled) as positions in ``label_names``."""
    return {
        "command": command,
        "from_step": int(from_step),
        "to_step": int(to_step),
        "labels_by_class": {name: int(np.sum(labels == c)) for c, name in enumerate(label_names)},
    }


def _valid_info(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    record = {"round": 0, "labels": 0, **value}
    return round_problem(record) is None


def last_step(out: Path) -> int | None:
    """The step the last recorded round reached (None: no round recorded)."""
    rounds = read_rounds(out / ROUNDS_NAME)
    return rounds[-1]["to_step"] if rounds else None


def unrecorded_round(out: Path, manifest: dict[str, Any], step: int) -> dict[str, Any] | None:
    """The round of a checkpoint at ``step`` that ``rounds.jsonl`` does not record yet
    (its ``round`` from the manifest), or None when it is recorded. A checkpoint written
    before checkpoints carried their round gets ``labels_by_class`` None."""
    last = last_step(out)
    if last is not None and step <= last:
        return None
    info = manifest.get("round")
    if _valid_info(info):
        return dict(info)  # type: ignore[arg-type]
    return {
        "command": "train" if last is None else "retrain",
        "from_step": 0 if last is None else last,
        "to_step": step,
        "labels_by_class": None,
    }


def trained_classes(out: Path) -> set[str] | None:
    """The classes that had labels when the run last trained (None: no round recorded)."""
    rounds = read_rounds(out / ROUNDS_NAME)
    if not rounds:
        return None
    return {name for name, n in rounds[-1]["labels_by_class"].items() if n > 0}


def seconds_between(out: Path, from_step: int, to_step: int) -> float:
    """The training time logged in ``metrics.jsonl`` for the steps after ``from_step``
    up to ``to_step``."""
    return float(
        sum(
            float(row.get("seconds", 0.0))
            for row in read_metrics(out / "metrics.jsonl")
            if from_step < row["step"] <= to_step
        )
    )


def record_round(
    out: Path,
    info: dict[str, Any],
    classifier: SSVAEClassifier,
    report: dict[str, Any],
    wall_time: float,
    **more: Any,
) -> dict[str, Any]:
    """Append the record of a round (``info``: ``round_info``, its ``to_step``
    planned) to ``rounds.jsonl``; the step reached is the classifier's. A round that
    stopped before its planned step is marked ``"partial": true``."""
    path = out / ROUNDS_NAME
    step = int(classifier.state.step) if classifier.state is not None else 0
    by_class = dict(info["labels_by_class"])
    record = {
        "round": len(read_rounds(path)),
        "command": info["command"],
        "from_step": info["from_step"],
        "to_step": step,
        "labels": int(sum(by_class.values())),
        "labels_by_class": by_class,
        "claimed_channels": {name: list(c) for name, c in classifier.claims.items()},
        "test_accuracy": report["test_accuracy"],
        "ece": report["ece"],
        "free_channels": (report.get("channels") or {}).get("free_channels", []),
        "channel_splits": classifier.channel_splits,
        "wall_time_s": round(wall_time, 3),
        "time": utc_now(),
        **more,
    }
    if step < info["to_step"]:
        record["partial"] = True
    append_json_line(path, record, round_problem)
    return record
