"""What every command shares: exit codes, error reporting, and the training session of the
commands that train and write a run (``train``, ``train --resume``, ``retrain``): which
process writes, its trackers and its progress display."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ssvae_core.errors import ConfigError, SSVAEError

if TYPE_CHECKING:
    from ssvae_core.runs.tracking import TrackerSink
    from ssvae_core.training import MetricSink

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2

Report = dict[str, Any]


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command: bad input (any ``SSVAEError``) is one line on stderr and exit code 2,
    Ctrl+C exit code 1."""
    try:
        return run(args)
    except SSVAEError as error:
        print(f"ssvae: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ssvae: interrupted", file=sys.stderr)
        return EXIT_FAILURE


def notice(text: str) -> None:
    """A warning for the user, on stderr."""
    print(f"ssvae: {text}", file=sys.stderr)


def print_result(
    result: Any, as_json: bool, print_text: Callable[[Any], None], **json_options: Any
) -> int:
    """Print ``result`` as indented JSON (``--json``; ``json_options`` go to ``json.dumps``)
    or as ``print_text`` writes it for a reader; returns ``EXIT_OK``."""
    if as_json:
        print(json.dumps(result, indent=2, **json_options))
    else:
        print_text(result)
    return EXIT_OK


def held_out_line(report: Report) -> str:
    """``test accuracy … ECE …``, or for a run without labels its clustering figures."""
    if report.get("test_accuracy") is None:
        figures = report.get("clustering")
        if not figures:
            return "no labels (label-free run): no accuracy"
        return (
            f"no labels: clustering accuracy {figures['clustering_accuracy']:.4f} "
            f"(many-to-one {figures['many_to_one_accuracy']:.4f})  NMI {figures['nmi']:.4f}  "
            f"ARI {figures['ari']:.4f}"
        )
    return f"test accuracy {report['test_accuracy']:.4f}  ECE {report['ece']:.4f}"


def print_train_summary(report: Report, run_dir: object) -> None:
    """The one line a training command ends with."""
    print(
        f"{held_out_line(report)}  "
        f"labels {report['num_labels']}  prior {report['prior']}  "
        f"time {report['wall_time_s']:.1f}s  run {run_dir}"
    )


def start_distributed(args: argparse.Namespace) -> bool:
    """Connect to the other processes when the flags or the environment ask for it (before
    JAX computes anything); returns whether this process writes the run."""
    from ssvae_core.training.distributed import distributed_options, initialize, is_main_process

    options = distributed_options({
        "mode": args.distributed, "coordinator": args.coordinator,
        "num_processes": args.num_processes, "process_id": args.process_id,
        "timeout": args.coordinator_timeout,
    })
    return not initialize(options) or is_main_process()


def checked_trackers(args: argparse.Namespace) -> tuple[tuple[str, ...], str | None]:
    """``--track`` and ``--mlflow-dir``, checked (on every process, before any connects)."""
    from ssvae_core.runs.tracking import check_trackers, mlflow_store

    trackers = check_trackers(args.track)
    if args.mlflow_dir is None:
        return trackers, None
    if "mlflow" not in trackers:
        raise ConfigError("--mlflow-dir names the store of --track mlflow; add --track mlflow")
    mlflow_store(".", args.mlflow_dir)
    return trackers, str(args.mlflow_dir)


@dataclass(frozen=True)
class TrainingSession:
    """A command that trains: whether this process writes the run (process 0 of several, or
    the only one), whether it shows progress, and the trackers it logs to."""

    writer: bool
    quiet: bool
    trackers: Sequence[str] = ()
    mlflow_dir: str | None = None

    @classmethod
    def start(cls, args: argparse.Namespace, *, tracking: bool = True) -> TrainingSession:
        """Check the tracking flags (when the command has them), then connect to the other
        processes."""
        trackers, mlflow_dir = checked_trackers(args) if tracking else ((), None)
        return cls(start_distributed(args), args.quiet, trackers, mlflow_dir)

    def train(
        self,
        run_dir: object,
        total_steps: int,
        fit: Callable[[list[MetricSink], Callable[[], None]], Report],
        *,
        config: dict[str, Any] | None = None,
    ) -> Report:
        """Call ``fit(sinks, on_start)`` with the progress bar and the trackers as metric
        sinks, hand the report to the trackers, close them whatever happens, and print the
        summary (a follower process says who writes the run)."""
        from ssvae_core.runs.tracking import finish_trackers
        from ssvae_core.training.progress import TrainingProgress

        sinks = self._open_trackers(run_dir, config)
        try:
            with TrainingProgress(total_steps, enabled=self.writer and not self.quiet) as progress:
                report = fit([progress, *sinks], progress.start)
            if sinks:
                finish_trackers(sinks, str(run_dir), report)
        finally:
            for sink in sinks:
                sink.close()
        if self.writer:
            print_train_summary(report, run_dir)
        else:
            print(
                f"process {report['process_index']} of {report['process_count']}: trained to "
                f"step {report['steps']}; process 0 writes the run {run_dir}"
            )
        return report

    def _open_trackers(self, run_dir: object, config: dict[str, Any] | None) -> list[TrackerSink]:
        if not (self.writer and self.trackers):
            return []
        from ssvae_core.runs.tracking import open_trackers

        return open_trackers(str(run_dir), self.trackers, config, mlflow_dir=self.mlflow_dir)
