"""Experiment tracking: metric sinks that write to a tracker's own format, offline.

``ssvae train --track tensorboard`` (and ``ssvae retrain``) adds a
``TensorBoardSink`` that writes TensorBoard event files into ``RUN/tensorboard/``:
every metric of every logged chunk as a scalar (``train/<name>``, held-out evaluations as
``held_out/<name>``), the resolved configuration as text, and at the end the report's
figures (``report/test_accuracy``, ``report/ece``), the report itself as text and the run's
plots as images. ``tensorboard --logdir runs/`` shows them. It needs the ``track`` extra
(``pip install 'ssvae-core[track]'``: TensorBoard's own event writer, no TensorFlow).

``--track mlflow`` adds an ``MLflowSink`` that logs into MLflow's local file store,
``RUN/mlruns/`` (or the store ``--mlflow-dir`` names, which several runs may share): one
MLflow run per run directory (a retrain continues it), the configuration flattened into
parameters (``train.steps``, ``prior.num_components``, ...), the same metrics per step as
TensorBoard gets, the report's figures, and ``report.json``, ``report.md``,
``config.toml`` and the plots as artifacts. It needs the ``mlflow`` extra
(``pip install 'ssvae-core[mlflow]'``: MLflow's client, ``mlflow-skinny``, no server).
Several trackers may be named at once (``--track tensorboard --track mlflow``, or
``--track tensorboard,mlflow``).

Trackers are a plugin kind: both built-in ones are registered through the hook
``ssvae_register_trackers``, and a plugin package adds its own the same way, as a
``TrackerFactory`` whose ``open`` makes a ``TrackerSink`` for a run directory
(``--track NAME`` then picks it; ``ssvae plugins`` lists it).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ssvae_core.errors import ConfigError

if TYPE_CHECKING:
    from ssvae_core.registry import Registry

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
MLFLOW_EXPERIMENT = "ssvae"
RUN_DIR_TAG = "ssvae.run_dir"
HELD_OUT = ("held_out_accuracy", "held_out_ece", "train_time_s")
REPORT_FIGURES = ("test_accuracy", "ece", "reconstruction_error")


class TrackerSink(Protocol):
    """A metric sink that also takes the final report and plots, and is closed."""

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one chunk's mean metrics at training step ``step``."""

    def report(self, report: Mapping[str, Any], plots: Sequence[Path] = ()) -> None:
        """Log the run's final report and its plot files, once, after training."""

    def close(self) -> None:
        """Flush and release what the sink holds; it may be called more than once."""


@dataclass(frozen=True)
class TrackerContext:
    """What a tracker is opened with: the run directory, the resolved configuration as a
    dict (``None`` when an existing run continues: ``ssvae retrain``), and tracker settings
    from the command line by name (``mlflow_dir``)."""

    run_dir: Path
    config: Mapping[str, Any] | None
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class TrackerFactory:
    """A tracker, as a plugin registers it (hook ``ssvae_register_trackers``).

    ``open(context)`` returns the ``TrackerSink`` for one run; it must write nothing
    until the sink is first called. ``requires`` names a module the tracker imports and
    ``install`` what installs it (``"the track extra: pip install 'ssvae-core[track]'"``):
    ``--track`` imports the module before training and names ``install`` if it fails.
    """

    open: Callable[[TrackerContext], TrackerSink]
    description: str
    requires: str | None = None
    install: str = ""


def _registry(registry: Registry | None) -> Registry:
    from ssvae_core.registry import default_registry

    return registry if registry is not None else default_registry()


def check_trackers(names: Sequence[str], registry: Registry | None = None) -> tuple[str, ...]:
    """The tracker names (each item may be a comma-separated list), each registered and
    importable; a ``ConfigError`` naming what to install otherwise."""
    trackers = _registry(registry).trackers
    allowed = ", ".join(trackers)
    given = [n.strip() for item in names for n in item.split(",")]
    if "" in given:
        raise ConfigError(
            f"--track expects tracker names ({allowed}), comma-separated or repeated; "
            f"got an empty name in {','.join(names)!r}"
        )
    chosen = tuple(dict.fromkeys(given))
    for name in chosen:
        if name not in trackers:
            raise ConfigError(f"unknown tracker {name!r} for --track; allowed: {allowed}")
        factory = trackers[name].factory
        if factory.requires is None:
            continue
        try:
            importlib.import_module(factory.requires)
        except ImportError:
            raise ConfigError(
                f"--track {name} needs {factory.install or 'the module ' + factory.requires}"
            ) from None
    return chosen


def _tag(name: str) -> str:
    """The tracker's name of a metric: ``train/<name>``, or ``held_out/<name>``."""
    return f"{'held_out' if name in HELD_OUT else 'train'}/{name}"


class TensorBoardSink:
    """A metric sink writing TensorBoard event files into ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike[str], config: Mapping[str, Any] | None = None):
        self.log_dir = Path(log_dir)
        self._config = config
        self._writer: Any = None  # opened at the first event: the run directory exists by then
        self._step = 0

    def _write(self, step: int, values: list[Any]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        if self._writer is None:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = EventFileWriter(os.fspath(self.log_dir))
            if self._config is not None:
                text = "```\n" + json.dumps(self._config, indent=1, default=str) + "\n```"
                config_summary = summary_pb2.Summary(value=[self._text("config", text)])
                self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=config_summary))
        summary = summary_pb2.Summary(value=values)
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    @staticmethod
    def _scalar(tag: str, value: float) -> Any:
        from tensorboard.compat.proto import summary_pb2

        return summary_pb2.Summary.Value(tag=tag, simple_value=float(value))

    @staticmethod
    def _text(tag: str, text: str) -> Any:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2

        tensor = tensor_pb2.TensorProto(
            dtype=7,  # DT_STRING
            string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[]),
        )
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
        )
        return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        self._step = int(step)
        values = [self._scalar(_tag(name), value) for name, value in metrics.items()]
        self._write(step, values)

    def report(self, report: Mapping[str, Any], plots: Sequence[Path] = ()) -> None:
        """The final figures as scalars, the report as text and the plots as images."""
        from tensorboard.compat.proto import summary_pb2

        values = [
            self._scalar(f"report/{name}", report[name])
            for name in REPORT_FIGURES
            if isinstance(report.get(name), (int, float))
        ]
        shown = {k: v for k, v in report.items() if k not in ("confusion", "reliability", "channels")}
        values.append(self._text("report", "```\n" + json.dumps(shown, indent=1, default=str) + "\n```"))
        for path in plots:
            data = Path(path).read_bytes()
            from PIL import Image

            with Image.open(path) as image:
                width, height = image.size
            picture = summary_pb2.Summary.Image(
                height=height, width=width, colorspace=4, encoded_image_string=data
            )
            values.append(summary_pb2.Summary.Value(tag=f"plots/{Path(path).stem}", image=picture))
        self._write(self._step, values)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"steps": 10}}`` → ``{"train.steps": "10"}``: every leaf as text
    (strings as they are, anything else as JSON: ``true``, ``[16]``, ``0.001``)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


class MLflowSink:
    """A metric sink logging into an MLflow file store (``store``, a folder), one MLflow
    run per run directory ``run_dir``.

    With ``config`` (a new run: ``ssvae train``) a new MLflow run starts and the config
    becomes its parameters; without (``ssvae retrain``) the latest MLflow run of
    ``run_dir`` in the store continues, or a new one starts if there is none.
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
    ):
        self.store = Path(store).resolve()
        self.run_dir = Path(run_dir)
        self._config = config
        self._client: Any = None  # opened at the first event: the run directory exists by then
        self.run_id: str | None = None
        self._step = 0
        self._reported = False

    @property
    def tracking_uri(self) -> str:
        return self.store.as_uri()

    def _open(self) -> tuple[Any, str]:
        if self._client is not None and self.run_id is not None:
            return self._client, self.run_id
        # MLflow 3 keeps its file store (the one store with no database or server) behind
        # this switch; earlier versions ignore it.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.store.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(MLFLOW_EXPERIMENT)
        )
        where = os.fspath(self.run_dir.resolve())
        earlier = [] if self._config is not None else self._runs_of(client, experiment_id, where)
        if earlier:
            run_id = earlier[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run = client.create_run(experiment_id, run_name=self.run_dir.name, tags={RUN_DIR_TAG: where})
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in flatten_config(self._config or {}).items()]
            for start in range(0, len(params), 100):  # MLflow takes 100 parameters a call
                client.log_batch(run_id, params=params[start : start + 100])
        self._client, self.run_id = client, run_id
        return client, run_id

    @staticmethod
    def _runs_of(client: Any, experiment_id: str, where: str) -> list[Any]:
        quote = next((q for q in ("'", '"') if q not in where), None)
        if quote is None:
            return []
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = {quote}{where}{quote}",
            max_results=1, order_by=["attributes.start_time DESC"],
        )
        return list(found)

    def _log(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        client, run_id = self._open()
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(step)) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics a call
            client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        self._step = int(step)
        self._log(step, {_tag(name): value for name, value in metrics.items()})

    def report(self, report: Mapping[str, Any], plots: Sequence[Path] = ()) -> None:
        """The final figures as metrics; ``report.json``, ``report.md`` (under
        ``report/``), ``config.toml`` and the plots (under ``plots/``) as artifacts."""
        self._log(
            self._step,
            {f"report/{name}": report[name] for name in REPORT_FIGURES if isinstance(report.get(name), (int, float))},
        )
        client, run_id = self._open()
        for name in ("report.json", "report.md"):
            if (self.run_dir / name).exists():
                client.log_artifact(run_id, os.fspath(self.run_dir / name), "report")
        if (self.run_dir / "config.toml").exists():
            client.log_artifact(run_id, os.fspath(self.run_dir / "config.toml"))
        for path in plots:
            client.log_artifact(run_id, os.fspath(path), "plots")
        self._reported = True

    def close(self) -> None:
        """End the MLflow run: finished after ``report``, failed without."""
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id, "FINISHED" if self._reported else "FAILED")
        self._client = None


def open_trackers(
    out: str | os.PathLike[str],
    names: Sequence[str],
    config: Mapping[str, Any] | None,
    *,
    mlflow_dir: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
) -> list[TrackerSink]:
    """The sinks of ``names`` (checked by ``check_trackers``) for run directory
    ``out``; nothing is written until training logs its first chunk. The MLflow store is
    ``mlflow_dir`` (a folder, or a ``file:`` URI), by default ``out/mlruns``."""
    trackers = _registry(registry).trackers
    context = TrackerContext(Path(out), config, {"mlflow_dir": mlflow_dir})
    return [trackers[name].factory.open(context) for name in names]


def _open_tensorboard(context: TrackerContext) -> TrackerSink:
    return TensorBoardSink(context.run_dir / TENSORBOARD_DIR, context.config)


def _open_mlflow(context: TrackerContext) -> TrackerSink:
    store = mlflow_store(context.run_dir, context.settings.get("mlflow_dir"))
    return MLflowSink(store, context.run_dir, context.config)


BUILTIN_TRACKERS = {
    "tensorboard": TrackerFactory(
        _open_tensorboard,
        "TensorBoard event files in RUN/tensorboard/",
        requires="tensorboard",
        install="the track extra: pip install 'ssvae-core[track]'",
    ),
    "mlflow": TrackerFactory(
        _open_mlflow,
        "an MLflow file store in RUN/mlruns/ (or --mlflow-dir)",
        requires="mlflow",
        install="the mlflow extra: pip install 'ssvae-core[mlflow]'",
    ),
}


def mlflow_store(out: str | os.PathLike[str], given: str | os.PathLike[str] | None) -> Path:
    """The folder of the MLflow file store: ``given`` (a path or a ``file:`` URI) or
    ``out/mlruns``; any other URI (a tracking server) is a ``ConfigError``."""
    if given is None:
        return Path(out) / MLFLOW_DIR
    text = os.fspath(given)
    if text.startswith("file:"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"--mlflow-dir {text!r} names another host; give a local folder")
        return Path(unquote(parsed.path))
    if "://" in text:
        raise ConfigError(
            f"--mlflow-dir takes a local folder or a file: URI (MLflow's file store, offline), got {text!r}"
        )
    return Path(text)


def finish_trackers(sinks: Sequence[TrackerSink], out: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Hand the final report and the run's plots to each tracker, and close it."""
    folder = Path(out) / "plots"
    plots = sorted(folder.glob("*.png")) if folder.is_dir() else []
    for sink in sinks:
        sink.report(report, plots)
        sink.close()
