"""Progress display for long training runs (rich, on stderr)."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainingProgress:
    """A progress bar over steps showing the latest loss and supervised loss."""

    def __init__(self, total_steps: int, *, enabled: bool = True):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[summary]}"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
            disable=not enabled,
        )
        self._task = self._progress.add_task("train", total=total_steps, summary="preparing (label propagation, compilation)…")

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        """A metric sink: move the bar to ``step`` and show the latest losses."""
        summary = f"loss {metrics['loss']:.3f}  sup {metrics.get('supervised', 0.0):.3f}"
        self._progress.update(self._task, completed=step, summary=summary)

    def start(self) -> None:
        """Show the bar; called once the run has passed validation."""
        self._progress.start()

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()
