"""``ssvae labels``: count a run's labels, list the disputed ones, or export them."""

from __future__ import annotations

import argparse
from typing import Any

from ssvae_core.cli.arguments import add_json, add_moved_data, add_run_dir, moved_data
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_OK, print_result


def add_arguments(labels: argparse.ArgumentParser) -> None:
    """The run, and what to show instead of the counts."""
    add_run_dir(labels)
    add_json(labels, help="machine-readable counts")
    add_moved_data(labels)
    labels.add_argument(
        "--issues", action="store_true",
        help="list the labeled examples the model most disputes (lowest out-of-sample probability "
        "of their label) with the label it suggests; labels confirmed in a review are left out",
    )
    labels.add_argument(
        "--n", type=int, default=20, metavar="N", help="with --issues: how many to list (default 20)"
    )
    labels.add_argument(
        "--export", metavar="FILE",
        help="write every labeled example's current label to FILE: .csv (index,label,source,time,"
        "confirmed) or .json (Label Studio tasks), chosen by the extension",
    )


def print_issues(issues: list[dict[str, Any]]) -> None:
    """The disputed labels as a table, most likely wrong first."""
    print(f"{len(issues)} label(s) the model disputes, most likely wrong first:")
    print(f"{'index':>7}  {'label':<12} {'p(label)':>8}  {'suggested':<12} {'p':>6}  source")
    for issue in issues:
        print(
            f"{issue['index']:>7}  {issue['label']:<12.12} {issue['p_label']:>8.3f}  "
            f"{issue['suggested']:<12.12} {issue['p_suggested']:>6.3f}  {issue['source']}"
        )


def print_summary(summary: dict[str, Any]) -> None:
    """The counts per class, source and annotator, and the annotators' agreement."""
    print(f"{summary['total']} labeled examples ({summary['entries']} entries)")
    print("per class:  " + "  ".join(f"{name}: {n}" for name, n in summary["by_label"].items()))
    print("per source: " + "  ".join(f"{name}: {n}" for name, n in summary["by_source"].items()))
    if len(summary["annotators"]) > 1 or summary["shared"]:
        print("per annotator: " + "  ".join(
            f"{name}: {row['labels']}" + (f" ({row['agreed']}/{row['shared']} shared agree)" if row["shared"] else "")
            for name, row in summary["annotators"].items()
        ))
        if summary["agreement"] is not None:
            print(
                f"agreement: {summary['agreement']:.3f} of annotators agree with the consensus, on "
                f"average over the {summary['shared']} examples labeled by several"
            )
    if summary["untrained_classes"]:
        print("not trained yet: " + ", ".join(summary["untrained_classes"]) + " (run `ssvae retrain`)")


def run(args: argparse.Namespace) -> int:
    """Export the labels (``--export``), list the disputed ones (``--issues``) or count them."""
    from ssvae_core.cli.workflows import export_run, labels_summary, run_issues

    if args.export is not None:
        count = export_run(args.run_dir, args.export, **moved_data(args))
        print(f"wrote {count} label(s) to {args.export}")
        return EXIT_OK
    if args.issues:
        issues = [issue.to_json() for issue in run_issues(args.run_dir, n=args.n, **moved_data(args))]
        return print_result(issues, args.json, print_issues, ensure_ascii=False)
    return print_result(labels_summary(args.run_dir, **moved_data(args)), args.json, print_summary)


COMMAND = Command(
    name="labels",
    help="count a run's labels per class and per source",
    description="The label store is checked against the run's data first, as `ssvae "
    "retrain` checks it: an invalid store is refused, not counted.",
    add_arguments=add_arguments,
    run=run,
)
