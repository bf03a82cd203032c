"""The ``ssvae`` command line, called in-process: train, evaluate, plugins, and bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssvae_core.cli import main
from ssvae_core.config import load_config

TINY = [
    "--set", "train.batch_size=8",
    "--set", "model.latent_dim=2",
    "--set", "model.embedding_dim=4",
    "--set", "prior.num_components=4",
    "--set", "encoder.hidden=[16]",
    "--set", "decoder.hidden=[16]",
    "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory: pytest.TempPathFactory, synthetic) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    np.savez(path, x=synthetic["x"], y=synthetic["y"])
    return path


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, npz_path: Path) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("runs") / "run"
    args = _train_args(
        npz_path, out, "--steps", "10", "--set", "train.log_every=10",
        "--labels-per-class", "2", "--seed", "0", "--no-plots",
    )  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    return {"code": code, "out": out, "stdout": stdout.getvalue()}


def _report(run: dict[str, Any]) -> dict[str, Any]:
    return json.loads((run["out"] / "report.json").read_text())


# --- train ---------------------------------------------------------------------------------


def test_train_exits_zero_and_prints_one_summary_line(run: dict[str, Any]) -> None:
    assert run["code"] == 0
    lines = run["stdout"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("test accuracy ")


def test_train_writes_config_metrics_checkpoint_and_report(run: dict[str, Any]) -> None:
    names = {p.name for p in run["out"].iterdir()}
    assert {"config.toml", "metrics.jsonl", "model.ckpt", "report.json"} <= names
    assert "plots" not in names


def test_train_report_holds_the_headline_facts(run: dict[str, Any]) -> None:
    report = _report(run)
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert 0.0 <= report["ece"] <= 1.0
    assert report["num_labels"] == 6
    assert report["prior"] == "mixture"
    assert report["wall_time_s"] > 0.0


def test_train_config_toml_is_the_resolved_config_with_cli_values(run: dict[str, Any]) -> None:
    config = load_config(run["out"] / "config.toml")
    assert config.head.name == "tau"
    assert config.model.conditioning == "film"
    assert config.train.steps == 10
    assert config.data.labels_per_class == 2
    assert config.encoder.options.hidden == (16,)


def test_train_metrics_log_has_one_line_per_chunk(run: dict[str, Any]) -> None:
    rows = [json.loads(line) for line in (run["out"] / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10]
    assert {"loss", "reconstruction", "kl_z", "kl_c", "supervised"} <= set(rows[0])


# --- evaluate ------------------------------------------------------------------------------


def test_evaluate_reproduces_the_reported_test_accuracy(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run["out"]), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    report = _report(run)
    assert evaluated["test_accuracy"] == report["test_accuracy"]
    assert evaluated["ece"] == pytest.approx(report["ece"])
    assert evaluated["num_labels"] == report["num_labels"]


def test_evaluate_prints_a_summary_line(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run["out"] / "model.ckpt")]) == 0
    assert capsys.readouterr().out.startswith("test accuracy ")


def test_evaluate_with_a_bad_checkpoint_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.ckpt").write_text("not a checkpoint")
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssvae: error:") and "not an ssvae checkpoint" in err


def test_evaluate_with_a_missing_run_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- bad input -----------------------------------------------------------------------------


def test_bad_config_key_exits_2_with_one_line_and_no_run_dir(
    tmp_path: Path, npz_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_train_args(npz_path, out, "--set", "model.latnt_dim=3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ssvae: error:") and "did you mean 'latent_dim'?" in err[0]
    assert not out.exists()


def test_existing_non_empty_out_exits_2_and_is_left_untouched(
    tmp_path: Path, npz_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(_train_args(npz_path, out, "--steps", "1")) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"


def test_bad_data_path_exits_2_and_creates_no_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_train_args(tmp_path / "missing.npz", out, "--steps", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.npz" in err[0]
    assert not out.exists()


def test_data_path_outside_the_basic_multilingual_plane_is_used_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing-\U0001f600.npz"
    assert main(_train_args(missing, tmp_path / "run", "--steps", "1")) == 2
    assert str(missing) in capsys.readouterr().err


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssvae: error:"), err
    return err[0]


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_option_exits_2_with_one_line_and_no_run_dir(
    tmp_path: Path, npz_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    out = tmp_path / "run"
    assert main(_train_args(npz_path, out, "--set", f"train.learning_rate={value}")) == 2
    assert _one_error_line(capsys).endswith(f"train.learning_rate must be a finite number, got {value}")
    assert not out.exists()


def test_config_path_that_is_a_directory_exits_2(
    tmp_path: Path, npz_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_train_args(npz_path, out, "--config", str(tmp_path))) == 2
    assert "is a directory; expected a file" in _one_error_line(capsys)
    assert not out.exists()


def test_png_renamed_npz_exits_2_with_one_line_and_no_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "picture.npz", tmp_path / "run"
    data.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert main(_train_args(data, out, "--steps", "1")) == 2
    line = _one_error_line(capsys)
    assert "is not a valid .npz archive (it is a PNG image)" in line and "pickle" not in line
    assert not out.exists()


def test_data_labelling_a_single_class_exits_2_and_creates_no_run_dir(
    tmp_path: Path, synthetic, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "one-class.npz", tmp_path / "run"
    np.savez(data, x=synthetic["x"], y=np.where(synthetic["y"] == 0, 0, -1))
    assert main(_train_args(data, out, "--steps", "1")) == 2
    assert "labels only one class (0)" in _one_error_line(capsys)
    assert not out.exists()


def test_data_with_a_far_off_label_exits_2_naming_it_out_of_range(
    tmp_path: Path, synthetic, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "outlier.npz", tmp_path / "run"
    y = synthetic["y"].copy()
    y[0] = 99
    np.savez(data, x=synthetic["x"], y=y)
    assert main(_train_args(data, out, "--steps", "1")) == 2
    assert "label 99 is out of range [0, 3)" in _one_error_line(capsys)
    assert not out.exists()


def test_evaluate_a_checkpoint_with_appended_bytes_exits_2(
    run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes((run["out"] / "model.ckpt").read_bytes() + b"junk")
    assert main(["evaluate", str(checkpoint)]) == 2
    assert "4 unexpected byte(s) after its arrays; the file was modified or corrupted" in _one_error_line(capsys)


# --- plugins -------------------------------------------------------------------------------


def test_plugins_lists_the_mixture_prior_and_tau_head(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["prior", "mixture"] for line in out.splitlines())
    assert any(line.split()[:2] == ["head", "tau"] for line in out.splitlines())


def test_plugins_json_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {(c["kind"], c["name"]) for c in listing["components"]}
    assert {("prior", "mixture"), ("head", "tau"), ("encoder", "dense")} <= names
    mixture = next(c for c in listing["components"] if c["name"] == "mixture")
    assert "num_components" in {option["name"] for option in mixture["options"]}
    assert isinstance(listing["problems"], list)



@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["report"], ["plugins"]])
def test_help_prints_percent_signs_once(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "%%" not in out and "%(" not in out
    if command == ["train"]:
        assert "(20% held out)" in " ".join(out.split())

# --- default data with plots ---------------------------------------------------------------


def test_train_on_default_digits_writes_png_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "digits-run"
    args = ["train", "--out", str(out), "--steps", "5", "--set", "train.log_every=5", *TINY]
    assert main(args) == 0
    assert _report({"out": out})["dataset"] == "digits"
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert {"loss_curves.png", "tau_heatmap.png", "reliability.png"} <= set(plots)
    for name in plots:
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG")


# --- resume --------------------------------------------------------------------------------


def _checkpoint_arrays(path: Path) -> list[np.ndarray]:
    import equinox as eqx
    import jax

    from ssvae_core.training.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(
        (loaded.model, loaded.state), eqx.is_array
    ))]


def test_resumed_run_matches_an_uninterrupted_run(tmp_path: Path, npz_path: Path) -> None:
    common = ("--set", "train.log_every=5", "--labels-per-class", "2", "--no-plots", "--quiet")
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(_train_args(npz_path, straight, "--steps", "10", *common)) == 0
        assert main(_train_args(npz_path, split_run, "--steps", "5", *common)) == 0
        assert main(["train", "--resume", str(split_run), "--steps", "10", "--quiet", "--no-plots"]) == 0
    for a, b in zip(
        _checkpoint_arrays(straight / "model.ckpt"),
        _checkpoint_arrays(split_run / "model.ckpt"),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    steps = [json.loads(line)["step"] for line in (split_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10]
    assert json.loads((split_run / "report.json").read_text())["steps"] == 10


def test_resume_of_a_finished_run_without_steps_exits_2(run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(run["out"])]) == 2
    assert "has taken all of its 10 steps; pass --steps N > 10" in capsys.readouterr().err


def test_resume_to_fewer_steps_than_taken_exits_2_and_leaves_the_run_intact(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = (run["out"] / "model.ckpt").read_bytes()
    assert main(["train", "--resume", str(run["out"]), "--steps", "5", "--quiet"]) == 2
    assert "must exceed the 10 steps" in capsys.readouterr().err
    assert (run["out"] / "model.ckpt").read_bytes() == before


def test_resume_rejects_options_that_would_change_the_run(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", str(run["out"]), "--steps", "20", "--seed", "3"]) == 2
    assert "drop --seed" in capsys.readouterr().err


# --- the model is built once ---------------------------------------------------------------


def test_train_builds_the_model_once(
    tmp_path: Path, npz_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssvae_core.api
    import ssvae_core.runs.lifecycle
    from ssvae_core.modelling.model import build_model

    calls = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("data") is not None)
        return build_model(*args, **kwargs)

    monkeypatch.setattr(ssvae_core.api, "build_model", counted)
    monkeypatch.setattr(ssvae_core.runs.lifecycle, "build_model", counted)
    out = tmp_path / "run"
    assert main(_train_args(npz_path, out, "--steps", "2", "--set", "train.log_every=2", "--no-plots")) == 0
    assert calls == [True]  # once, with the training data
    assert load_config(out / "config.toml").head.name == "tau"


def test_a_component_that_cannot_be_built_for_the_data_writes_no_run_dir(
    tmp_path: Path, synthetic
) -> None:
    import dataclasses

    from ssvae_core.config import config_from_dict
    from ssvae_core.data.loading import from_arrays
    from ssvae_core.errors import ConfigError
    from ssvae_core.hookspecs import hookimpl
    from ssvae_core.registry import Registry, default_registry
    from ssvae_core.runs.lifecycle import train_run

    dense = default_registry().get("decoder", "dense").factory

    def refuse(options: Any, context: Any, key: Any) -> Any:
        raise ValueError(f"input shape {context.input_shape} is not square")

    class Plugin:
        @hookimpl
        def ssvae_register_decoders(self) -> dict[str, Any]:
            return {"square": dataclasses.replace(dense, build=refuse)}

    registry = Registry(entry_points=False, plugins=[("square-plugin", Plugin())])
    config = config_from_dict({"decoder": {"name": "square"}, "train": {"steps": 2}}, registry)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"decoder 'square': input shape .* is not square"):
        train_run(config, out, dataset=from_arrays(synthetic["x"], synthetic["y"]), registry=registry)
    assert not out.exists()
