"""train.eval_every: held-out accuracy during training in metrics.jsonl, the time to reach
given accuracies in the report, and the held-out curve beside the loss curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssvae_core.cli import main
from ssvae_core.runs.reports import TIME_TO_ACCURACY, time_to_accuracy

SMALL = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.log_every=5",
]


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_eval_every_logs_the_held_out_curve_and_the_report_gives_time_to_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "--steps", "22", "--labels-per-class", "2", "--out", str(run), "--quiet", *SMALL,
            "--set", "train.eval_every=10"]
    assert main(args) == 0
    lines = _lines(run)
    assert [row["step"] for row in lines] == [5, 10, 15, 20, 22]
    evaluated = [row for row in lines if "held_out_accuracy" in row]
    # every 10 steps at the end of the chunk that reaches them, and at the last step
    assert [row["step"] for row in evaluated] == [10, 20, 22]
    times = [row["train_time_s"] for row in evaluated]
    assert times == sorted(times) and times[0] > 0
    assert all(0.0 <= row["held_out_accuracy"] <= 1.0 and 0.0 <= row["held_out_ece"] <= 1.0 for row in evaluated)
    report = json.loads((run / "report.json").read_text())
    # the last evaluation scored the final model on the held-out split, as the report does
    assert evaluated[-1]["held_out_accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-9)
    reached = report["time_to_accuracy"]
    assert list(reached) == [f"{goal:g}" for goal in TIME_TO_ACCURACY]
    for goal, seconds in reached.items():
        first = next((row for row in evaluated if row["held_out_accuracy"] >= float(goal)), None)
        assert seconds == (None if first is None else pytest.approx(first["train_time_s"]))
    assert "training time (s) to held-out accuracy 0.9" in (run / "report.md").read_text()
    assert (run / "plots" / "loss_curves.png").read_bytes().startswith(b"\x89PNG")

    # a resumed run goes on with the curve, its training time counted from the first run's
    assert main(["train", "--resume", str(run), "--steps", "30", "--quiet", "--no-plots"]) == 0
    more = [row for row in _lines(run) if "held_out_accuracy" in row]
    assert [row["step"] for row in more] == [10, 20, 22, 30]
    assert more[-1]["train_time_s"] > more[-2]["train_time_s"]


def test_without_eval_every_nothing_is_evaluated_during_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--steps", "10", "--labels-per-class", "2", "--out", str(run), "--quiet",
                 "--no-plots", *SMALL]) == 0
    assert not any("held_out_accuracy" in row for row in _lines(run))
    assert "time_to_accuracy" not in json.loads((run / "report.json").read_text())


def test_time_to_accuracy_takes_the_first_evaluation_that_reaches_each_goal() -> None:
    history = [
        {"step": 5, "loss": 1.0},
        {"step": 10, "held_out_accuracy": 0.85, "train_time_s": 1.5},
        {"step": 20, "held_out_accuracy": 0.93, "train_time_s": 3.25},
        {"step": 30, "held_out_accuracy": 0.91, "train_time_s": 5.0},
        {"step": 40, "held_out_accuracy": 0.96, "train_time_s": 7.0},
    ]
    assert time_to_accuracy(history) == {"0.8": 1.5, "0.9": 3.25, "0.95": 7.0, "0.97": None, "0.99": None}
    assert time_to_accuracy([{"step": 5, "loss": 1.0}]) is None
