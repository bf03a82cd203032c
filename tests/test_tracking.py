"""`--track tensorboard`: event files that TensorBoard's own reader loads, with every
logged metric, the configuration, the final report and the plots. `--track mlflow`: an
MLflow file store that MLflow's own client reads back, with the configuration as
parameters, every metric per step, and the report and plots as artifacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ssvae_core.cli import main
from ssvae_core.errors import ConfigError

SMALL = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.log_every=5", "--set", "train.eval_every=10",
]


def _events(run: Path) -> Any:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_train_and_retrain_write_tensorboard_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
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
    assert "unknown tracker 'wandb' for --track; allowed: tensorboard, mlflow" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_and_retrain_log_to_an_mlflow_file_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    # several trackers at once, as a comma-separated list
    assert main(["train", "--steps", "10", "--labels-per-class", "2", "--out", str(run), "--quiet",
                 "--track", "tensorboard,mlflow", *SMALL]) == 0
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("ssvae")
    (logged,) = client.search_runs([experiment.experiment_id])
    run_id = logged.info.run_id
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.tags["ssvae.run_dir"] == str(run.resolve())
    params = logged.data.params
    assert params["model.latent_dim"] == "4" and params["train.steps"] == "10"
    assert params["encoder.hidden"] == "[16]" and params["prior.name"] == "mixture"
    assert params["loss.consistency.weight"] == "0.0"

    def history(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history("train/loss") == [(m["step"], pytest.approx(m["loss"], rel=1e-6)) for m in metrics]
    assert [step for step, _ in history("train/kl_z")] == [5, 10]
    assert history("held_out/held_out_accuracy") == [(10, pytest.approx(metrics[-1]["held_out_accuracy"]))]
    report = json.loads((run / "report.json").read_text())
    assert history("report/test_accuracy") == [(10, pytest.approx(report["test_accuracy"]))]
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.toml", "plots", "report"}
    assert {a.path for a in client.list_artifacts(run_id, "report")} == {"report/report.json", "report/report.md"}
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/loss_curves.png", "plots/latent_map.png", "plots/tau_heatmap.png"} <= plots
    copied = Path(client.download_artifacts(run_id, "report/report.json", str(tmp_path)))
    assert json.loads(copied.read_text()) == report

    # a retrain continues the same MLflow run, its steps after the first ones
    assert main(["retrain", str(run), "--steps", "5", "--quiet", "--no-plots", "--track", "mlflow"]) == 0
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == run_id and again.info.status == "FINISHED"
    assert [step for step, _ in history("train/loss")] == [5, 10, 15]
    assert [step for step, _ in history("report/test_accuracy")] == [10, 15]


def test_a_missing_mlflow_names_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    assert main(["train", "--steps", "5", "--out", str(tmp_path / "run"), "--track", "mlflow"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ssvae: error: --track mlflow needs the mlflow extra: pip install 'ssvae-core[mlflow]'"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mlflow-dir", "x"], "--mlflow-dir names the store of --track mlflow; add --track mlflow"),
        (["--track", "mlflow", "--mlflow-dir", "http://host:5000"],
         "--mlflow-dir takes a local folder or a file: URI (MLflow's file store, offline), got 'http://host:5000'"),
    ],
)
def test_bad_mlflow_stores_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    pytest.importorskip("mlflow")
    assert main(["train", "--steps", "5", "--out", str(tmp_path / "run"), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"ssvae: error: {message}"
    assert not (tmp_path / "run").exists()


def test_the_mlflow_store_is_a_local_folder(tmp_path: Path) -> None:
    from ssvae_core.runs.tracking import mlflow_store

    assert mlflow_store(tmp_path, None) == tmp_path / "mlruns"
    assert mlflow_store(tmp_path, "shared/mlruns") == Path("shared/mlruns")
    assert mlflow_store(tmp_path, "file:///data/ml%20runs") == Path("/data/ml runs")
    with pytest.raises(ConfigError, match="names another host"):
        mlflow_store(tmp_path, "file://server/data/mlruns")


TINY_TRACKER = '''
import json

from ssvae_core.plugin import TrackerFactory, hookimpl


class LinesSink:
    def __init__(self, context):
        self.path = context.run_dir / "tiny_tracker.jsonl"
        self.fresh = context.config is not None

    def __call__(self, step, metrics):
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, "fresh": self.fresh, **metrics}) + "\\n")

    def report(self, report, plots=()):
        with self.path.open("a") as handle:
            handle.write(json.dumps({"report": report["test_accuracy"], "plots": len(plots)}) + "\\n")

    def close(self):
        with self.path.open("a") as handle:
            handle.write('"closed"\\n')


@hookimpl
def ssvae_register_trackers():
    return {"tiny": TrackerFactory(LinesSink, "JSON lines in RUN/tiny_tracker.jsonl")}
'''


def test_a_plugin_adds_a_tracker_through_an_entry_point(
    tmp_path: Path, install_plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("ssvae_tiny_tracker", TINY_TRACKER)
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert "tracker   tiny" in listing and "ssvae-tiny-tracker 1.0" in listing
    run = tmp_path / "run"
    assert main(["train", "--steps", "10", "--labels-per-class", "2", "--out", str(run), "--quiet",
                 "--no-plots", "--track", "tiny", *SMALL]) == 0
    lines = [json.loads(line) for line in (run / "tiny_tracker.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines[:2]] == [5, 10] and lines[0]["fresh"] is True
    assert "loss" in lines[0]
    report = json.loads((run / "report.json").read_text())
    assert lines[2] == {"report": report["test_accuracy"], "plots": 0}
    assert lines[3:] and set(lines[3:]) == {"closed"}


def test_an_unknown_tracker_lists_the_ones_plugins_added(
    tmp_path: Path, install_plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin("ssvae_tiny_tracker", TINY_TRACKER)
    assert main(["train", "--steps", "5", "--out", str(tmp_path / "run"), "--track", "wandb"]) == 2
    assert "allowed: tensorboard, mlflow, tiny" in capsys.readouterr().err
