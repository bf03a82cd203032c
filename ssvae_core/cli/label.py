"""``ssvae label``: add labels from a file to a run's label store."""

from __future__ import annotations

import argparse

from ssvae_core.cli.arguments import add_moved_data, add_run_dir, moved_data
from ssvae_core.cli.command import Command
from ssvae_core.cli.context import EXIT_OK


def add_arguments(label: argparse.ArgumentParser) -> None:
    """The run, the labels file, who labeled and whether the labels correct old ones."""
    add_run_dir(label)
    label.add_argument(
        "labels_file", metavar="FILE",
        help="CSV with columns index,label (or an export of `ssvae labels --export`), or a Label "
        "Studio JSON export (.json)",
    )
    add_moved_data(label)
    label.add_argument(
        "--annotator", metavar="NAME",
        help="who gave these labels (kept in the store); an example labeled differently by "
        "several annotators holds their consensus, and `ssvae labels` reports their agreement",
    )
    label.add_argument(
        "--relabel", action="store_true",
        help="corrections: an example that holds another label gets this one (a new entry that "
        "supersedes the old); rows that keep an example's label confirm it, so `ssvae labels "
        "--issues` does not propose it again",
    )


def run(args: argparse.Namespace) -> int:
    """Add the file's labels and say how many (and which new classes) there were."""
    from ssvae_core.cli.workflows import label_run

    result = label_run(
        args.run_dir, args.labels_file, relabel=args.relabel, annotator=args.annotator,
        **moved_data(args),
    )
    new = result["new_classes"]
    print(
        f"added {result['added']} label(s) to {args.run_dir}"
        + (f"; new classes {', '.join(new)} (they claim free channels at the next retrain)" if new else "")
    )
    return EXIT_OK


COMMAND = Command(
    name="label",
    help="add labels from a CSV file or a Label Studio export to a run's label store",
    description="FILE.csv has the header 'index,label': rows of the run's dataset (as "
    "loaded; held-out test rows are refused) and label names; FILE.json is a Label Studio "
    "export whose tasks carry the row in data.index. A name the model has not "
    "seen becomes a new class at the next `ssvae retrain`. Any bad row changes nothing.",
    add_arguments=add_arguments,
    run=run,
)
