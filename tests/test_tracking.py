"""`--track tensorboard`: event files that TensorBoard's own reader loads, with every
logged metric, the configuration, the final report and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssvae_core.cli import main

SMALL = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.log_every=5", "--set", "train.eval_every=10",
]


def _events(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_train_and_retrain_write_tensorboard_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--steps", "20", "--labels-per-class", "2", "--out", str(run), "--quiet",
                 "--track", "tensorboard", *SMALL]) == 0
    events = _events(run)
    tags = events.Tags()
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]
    assert [e.step for e in events.Scalars("held_out/held_out_accuracy")] == [10, 20]
    report = json.loads((run / "report.json").read_text())
    (final,) = events.Scalars("report/test_accuracy")
    assert final.step == 20 and final.value == pytest.approx(report["test_accuracy"], rel=1e-6)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/kl_z")] == pytest.approx([m["kl_z"] for m in metrics], rel=1e-6)
    assert {"config", "report"} <= set(tags["tensors"])
    config_text = events.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"latent_dim": 4' in config_text
    assert {"plots/loss_curves", "plots/latent_map", "plots/tau_heatmap"} <= set(tags["images"])
    assert events.Images("plots/latent_map")[0].encoded_image_string.startswith(b"\x89PNG")

    assert main(["retrain", str(run), "--steps", "10", "--quiet", "--no-plots", "--track", "tensorboard"]) == 0
    steps = [e.step for e in _events(run).Scalars("train/loss")]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_bad_trackers_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--steps", "5", "--out", str(tmp_path / "run"), "--track", "wandb"]) == 2
    assert "unknown tracker 'wandb' for --track; allowed: tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
