"""``ssvae evaluate``: reload a run's checkpoint and report its metrics."""

from __future__ import annotations

import argparse
from typing import Any

from ssvae_core.cli.arguments import add_json, add_run_dir
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import held_out_line, print_result
from ssvae_core.errors import ConfigError
from ssvae_core.runs.ood import DEFAULT_SCORE, OOD_SCORES


def add_arguments(evaluate: argparse.ArgumentParser) -> None:
    """The run, the data to evaluate and the out-of-distribution options."""
    add_run_dir(evaluate, help="a run directory or checkpoint file")
    evaluate.add_argument("--data", metavar="PATH", help="evaluate on every labeled example of PATH")
    evaluate.add_argument(
        "--ood", metavar="PATH",
        help="out-of-distribution inputs: AUROC, FPR at 95%% TPR and AUPR of each OOD score "
        f"({', '.join(OOD_SCORES)}) against the evaluated data",
    )
    evaluate.add_argument(
        "--score", action="append", default=None, metavar="NAME",
        help=f"with --ood: report only this OOD score (repeatable): {', '.join(OOD_SCORES)}",
    )
    evaluate.add_argument(
        "--ood-fpr", type=float, default=None, metavar="RATE",
        help=f"with --ood: also flag inputs whose {DEFAULT_SCORE} score's p-value under the "
        "training data is at most RATE (a false-positive rate in (0, 1), e.g. 0.05) and "
        "report the shares flagged",
    )
    add_json(evaluate, help="print the whole report as JSON")


def print_report(report: dict[str, Any]) -> None:
    """The held-out figures, each OOD score's and the accuracy of each class."""
    line = (
        f"{held_out_line(report)}  "
        f"examples {report['num_test']}  reconstruction MSE {report['reconstruction_error']:.4f}"
    )
    if "ood_auroc" in report:
        line += f"  OOD AUROC {report['ood_auroc']:.4f}"
    print(line)
    for score, figures in (report.get("ood") or {}).items():
        print(
            f"OOD {score:<16}  AUROC {figures['auroc']:.4f}  FPR95 {figures['fpr95']:.4f}  "
            f"AUPR {figures['aupr']:.4f}  vs {report.get('ood_dataset', 'ood')}"
        )
    for score, why in (report.get("ood_notes") or {}).items():
        print(f"OOD {score:<16}  not available: {why}")
    flagged = report.get("ood_flagged")
    if flagged:
        print(
            f"OOD flagged at p ≤ {flagged['fpr']:g} ({flagged['score']}): "
            f"{flagged['flagged_ood']:.1%} of {report.get('ood_dataset', 'ood')}, "
            f"{flagged['flagged_in']:.1%} of the evaluated data"
        )
    per_class = report.get("per_class_accuracy") or {}
    if per_class:
        print(
            f"classes ({len(per_class)}): "
            + "  ".join(
                f"{name} {'—' if value is None else f'{value:.3f}'}" for name, value in per_class.items()
            )
        )


def run(args: argparse.Namespace) -> int:
    """Evaluate the run and print its figures (or the whole report as JSON)."""
    from ssvae_core.cli.workflows import evaluate_run

    if args.score is not None and args.ood is None:
        raise ConfigError("--score chooses among the OOD scores; it needs --ood PATH")
    if args.ood_fpr is not None and args.ood is None:
        raise ConfigError("--ood-fpr flags out-of-distribution inputs; it needs --ood PATH")
    report = evaluate_run(
        args.run_dir, data=args.data, ood=args.ood, ood_scores=args.score, ood_fpr=args.ood_fpr
    )
    return print_result(report, args.json, print_report)


COMMAND = Command(
    name="evaluate",
    help="reload a run's checkpoint and report its metrics",
    description="Without --data the run's own held-out split is rebuilt and evaluated.",
    add_arguments=add_arguments,
    run=run,
)
