"""The library functions the commands call to do their work, imported in this one place.

Commands import them from here inside their run functions, so that ``ssvae --help`` and
parsing stay free of JAX; where one of them moves in the library, only this module changes.
"""

from __future__ import annotations

from ssvae_core.labels.label_io import export_run
from ssvae_core.labels.label_issues import run_issues
from ssvae_core.labels.labeling import LoopPlan, parse_seeds, query_run, run_loop
from ssvae_core.runs.lifecycle import (
    evaluate_run,
    label_run,
    labels_summary,
    new_run_dir,
    report_run,
    resume_run,
    retrain_run,
    train_run,
)
from ssvae_core.runs.ood import background_run

__all__ = [
    "LoopPlan",
    "background_run",
    "evaluate_run",
    "export_run",
    "label_run",
    "labels_summary",
    "new_run_dir",
    "parse_seeds",
    "query_run",
    "report_run",
    "resume_run",
    "retrain_run",
    "run_issues",
    "run_loop",
    "train_run",
]
