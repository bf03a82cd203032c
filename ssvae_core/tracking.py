"""Experiment tracking: metric sinks that write to a tracker's own format, offline.

``ssvae train --track tensorboard`` (and ``ssvae retrain``) adds a
:class:`TensorBoardSink` that writes TensorBoard event files into ``RUN/tensorboard/``:
every metric of every logged chunk as a scalar (``train/<name>``, held-out evaluations as
``held_out/<name>``), the resolved configuration as text, and at the end the report's
figures (``report/test_accuracy``, ``report/ece``), the report itself as text and the run's
plots as images. ``tensorboard --logdir runs/`` shows them. It needs the ``track`` extra
(``pip install 'ssvae-core[track]'``: TensorBoard's own event writer, no TensorFlow).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ssvae_core.errors import ConfigError

TRACKERS = ("tensorboard",)
TENSORBOARD_DIR = "tensorboard"
HELD_OUT = ("held_out_accuracy", "held_out_ece", "train_time_s")


def check_trackers(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The tracker names, each known and importable; a :class:`ConfigError` otherwise."""
    chosen = tuple(dict.fromkeys(names))
    for name in chosen:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r} for --track; allowed: {', '.join(TRACKERS)}")
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--track tensorboard needs the track extra: pip install 'ssvae-core[track]'"
            ) from None
    return chosen


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
        values = [
            self._scalar(f"{'held_out' if name in HELD_OUT else 'train'}/{name}", value)
            for name, value in metrics.items()
        ]
        self._write(step, values)

    def report(self, report: Mapping[str, Any], plots: Sequence[Path] = ()) -> None:
        """The final figures as scalars, the report as text and the plots as images."""
        from tensorboard.compat.proto import summary_pb2

        values = [
            self._scalar(f"report/{name}", report[name])
            for name in ("test_accuracy", "ece", "reconstruction_error")
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


def open_trackers(
    out: str | os.PathLike[str], names: Sequence[str], config: Mapping[str, Any] | None
) -> list[TensorBoardSink]:
    """The sinks of ``names`` (checked by :func:`check_trackers`) for run directory
    ``out``; nothing is written until training logs its first chunk."""
    return [TensorBoardSink(Path(out) / TENSORBOARD_DIR, config) for name in names if name == "tensorboard"]


def finish_trackers(sinks: Sequence[TensorBoardSink], out: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Hand the final report and the run's plots to each tracker, and close it."""
    folder = Path(out) / "plots"
    plots = sorted(folder.glob("*.png")) if folder.is_dir() else []
    for sink in sinks:
        sink.report(report, plots)
        sink.close()
