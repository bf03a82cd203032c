"""Several processes (jax.distributed): two processes on this host, one CPU device each,
train as one process does with the same global batch, and only process 0 writes; bad
launches are one line and exit code 2, before anything is written."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

from ssvae_core.api import SSVAEClassifier
from ssvae_core.cli import main
from ssvae_core.errors import ConfigError
from ssvae_core.training.distributed import SOURCES, distributed_options, initialize

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--steps", "20", "--labels-per-class", "2", "--no-plots", "--quiet",
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.batch_size=32",
    "--set", "train.log_every=5", "--set", "train.eval_every=10",
]
CHILD_TIMEOUT = 240  # seconds for every child process together


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _child_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSVAE_") and k != "JAX_COORDINATOR_ADDRESS"}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags), PYTHONUNBUFFERED="1", **variables)
    return env


def _run_all(commands: list[tuple[list[str], Path, dict[str, str]]]) -> list[tuple[int, str, str]]:
    """Start every ``ssvae`` command at once (each in its folder, with its environment) and
    wait for all; past the timeout, or when this test stops, kill each one still running."""
    processes = []
    try:
        for args, cwd, env in commands:
            cwd.mkdir(parents=True, exist_ok=True)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "ssvae_core.cli", *args], cwd=cwd, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        deadline = time.monotonic() + CHILD_TIMEOUT
        results = []
        for process in processes:
            try:
                out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                tails = [p.communicate()[1][-2000:] for p in processes]
                pytest.fail(f"the processes did not finish within {CHILD_TIMEOUT} s; stderr:\n" + "\n---\n".join(tails))
            results.append((process.returncode, out, err))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _metrics(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _leaves(classifier: SSVAEClassifier) -> dict[str, list[np.ndarray]]:
    assert classifier.state is not None
    return {
        "parameters": [np.asarray(a) for a in jax.tree.leaves(eqx.filter(classifier.model, eqx.is_inexact_array))],
        "tau counts": [np.asarray(a) for a in jax.tree.leaves(classifier.state.head_state)],
        "optimiser state": [np.asarray(a) for a in jax.tree.leaves(classifier.opt_state) if np.size(a)],
    }


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(a)), initial=0.0))


@pytest.mark.parametrize("data_on_device", ["on", "off"])
def test_two_processes_train_as_one_and_only_process_0_writes(tmp_path: Path, data_on_device: str) -> None:
    """With the data on the host ("off") each process gathers only its half of each batch."""
    reference = tmp_path / "one"
    assert main(["train", *SMALL, "--out", str(reference), "--set", "train.devices=1"]) == 0
    port = _free_port()
    first, second = tmp_path / "process-0", tmp_path / "process-1"
    run = tmp_path / "two"
    where = ["--set", f"train.data_on_device={data_on_device}"]
    results = _run_all([
        # process 0 by flags, process 1 by environment variables
        (["train", *SMALL, *where, "--out", str(run), "--coordinator", f"127.0.0.1:{port}",
          "--num-processes", "2", "--process-id", "0"], first, _child_env()),
        (["train", *SMALL, *where, "--out", str(tmp_path / "two-seen-by-1")], second,
         _child_env(SSVAE_COORDINATOR=f"127.0.0.1:{port}", SSVAE_NUM_PROCESSES="2", SSVAE_PROCESS_ID="1")),
    ])
    for index, (code, _, err) in enumerate(results):
        assert code == 0, f"process {index} exited with {code}:\n{err[-4000:]}"
    assert "test accuracy" in results[0][1]
    assert f"process 1 of 2: trained to step 20; process 0 writes the run {tmp_path / 'two-seen-by-1'}" in results[1][1]

    # only process 0 wrote: its run directory; process 1 neither its --out nor its folder
    assert not (tmp_path / "two-seen-by-1").exists()
    assert list(second.iterdir()) == [] and list(first.iterdir()) == []
    assert {p.name for p in run.iterdir()} == {p.name for p in reference.iterdir()}

    # the same global batch every step: the same losses, τ counts, parameters, optimiser state
    ours, theirs = _metrics(run), _metrics(reference)
    assert [m["step"] for m in ours] == [m["step"] for m in theirs] == [5, 10, 15, 20]
    assert [("held_out_accuracy" in m) for m in ours] == [False, True, False, True]
    for mine, one in zip(ours, theirs, strict=True):
        for name, value in one.items():
            if name not in ("seconds", "train_time_s"):
                assert abs(mine[name] - value) <= 1e-5 * max(1.0, abs(value)), (mine["step"], name)
    two_processes = SSVAEClassifier.load(run / "model.ckpt")
    one_process = SSVAEClassifier.load(reference / "model.ckpt")
    for what, leaves in _leaves(one_process).items():
        others = _leaves(two_processes)[what]
        assert len(leaves) == len(others) > 0
        assert max(_relative(a, b) for a, b in zip(leaves, others, strict=True)) < 1e-5, what
    report = json.loads((run / "report.json").read_text())
    assert report["steps"] == 20
    assert report["test_accuracy"] == json.loads((reference / "report.json").read_text())["test_accuracy"]


def test_bad_launches_are_one_line_and_exit_2(tmp_path: Path) -> None:
    unreachable, lonely = _free_port(), _free_port()
    results = _run_all([
        (["train", *SMALL, "--out", str(tmp_path / "a"), "--num-processes", "2", "--process-id", "1"],
         tmp_path / "no-coordinator", _child_env()),
        (["train", *SMALL, "--out", str(tmp_path / "b"), "--coordinator", f"127.0.0.1:{unreachable}",
          "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "2"],
         tmp_path / "unreachable", _child_env()),
        (["train", *SMALL, "--out", str(tmp_path / "c")], tmp_path / "lonely",
         _child_env(SSVAE_COORDINATOR=f"127.0.0.1:{lonely}", SSVAE_NUM_PROCESSES="2",
                    SSVAE_PROCESS_ID="0", SSVAE_COORDINATOR_TIMEOUT="2")),
    ])
    expected = [
        "needs the coordinator's address: --coordinator HOST:PORT (SSVAE_COORDINATOR)",
        f"could not reach the coordinator at 127.0.0.1:{unreachable} within 2 s",
        f"only 1 of 2 processes reached the coordinator at 127.0.0.1:{lonely} within 2 s (missing process id 1)",
    ]
    for (code, _, err), message in zip(results, expected, strict=True):
        lines = [line for line in err.splitlines() if line.startswith("ssvae: ")]
        assert code == 2, err[-3000:]
        assert len(lines) == 1 and message in lines[0], err[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lonely", "no-coordinator", "unreachable"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "2", "--process-id", "2"],
         "--process-id must be below the number of processes, 2 (0 to 1), got 2"),
        (["--num-processes", "0"], "--num-processes must be an integer >= 1, got 0"),
        (["--coordinator", "localhost"], "--coordinator must be HOST:PORT (a port from 1 to 65535), got 'localhost'"),
        (["--distributed", "off", "--process-id", "1"], "--distributed is 'off', but --process-id asks for several processes"),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["train", "--steps", "5", "--out", str(tmp_path / "run"), *flags]) == 2
    assert capsys.readouterr().err.strip() == f"ssvae: error: {message}"
    assert not (tmp_path / "run").exists()


def test_options_come_from_flags_over_the_environment() -> None:
    environ = {"SSVAE_COORDINATOR": "10.0.0.1:1234", "SSVAE_NUM_PROCESSES": "4", "SSVAE_PROCESS_ID": "3"}
    options = distributed_options({"process_id": 1}, environ)
    assert (options.mode, options.coordinator, options.num_processes, options.process_id) == ("auto", "10.0.0.1:1234", 4, 1)
    assert not distributed_options({}, {}).enabled  # nothing asked: one process, nothing initialised
    assert distributed_options({"mode": "auto"}, {}).enabled  # left to JAX's detection (SLURM, ...)
    with pytest.raises(ConfigError, match=re.escape("SSVAE_PROCESS_ID must be an integer, got 'one'")):
        distributed_options({}, {"SSVAE_PROCESS_ID": "one"})
    with pytest.raises(ConfigError, match=re.escape("SSVAE_PROCESS_ID must be below the number of processes, 4")):
        distributed_options({}, {**environ, "SSVAE_PROCESS_ID": "4"})
    jax.numpy.zeros(1)  # JAX has computed: too late to connect, and nothing changes
    with pytest.raises(ConfigError, match="must be set up before JAX computes anything"):
        initialize(distributed_options({"coordinator": "127.0.0.1:1", "num_processes": 1, "process_id": 0}))
    assert jax.process_count() == 1


def test_the_user_guide_names_every_flag_and_variable() -> None:
    guide = (ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    section = guide.split("### Several devices", 1)[1].split("\n## ", 1)[0]
    missing = [name for pair in SOURCES.values() for name in pair if f"`{name}" not in section]
    assert not missing, f"docs/user-guide.md, Several devices, does not name {', '.join(missing)}"
