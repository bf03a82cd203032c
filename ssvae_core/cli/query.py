"""``ssvae query``: write the unlabeled training examples to label next."""

from __future__ import annotations

import argparse

from ssvae_core.cli.arguments import add_moved_data, add_run_dir, moved_data
from ssvae_core.cli.command import Command
from ssvae_core.cli.config_flags import strategy_options
from ssvae_core.cli.context import EXIT_OK


def add_arguments(query: argparse.ArgumentParser) -> None:
    """The run, the strategy and its options, how many and where the sheet goes."""
    add_run_dir(query)
    query.add_argument(
        "--strategy", default="entropy", metavar="NAME",
        help="acquisition strategy (default entropy; `ssvae plugins` lists them)",
    )
    query.add_argument("--n", type=int, default=10, metavar="N", help="examples to query (default 10)")
    query.add_argument(
        "--set", action="append", default=[], metavar="OPTION=VALUE",
        help="set one option of the strategy (repeatable), e.g. --set num_samples=16",
    )
    query.add_argument(
        "--seed", type=int, metavar="N", help="seed of random strategies, 0 to 2**63 - 1 (default: the run's)"
    )
    query.add_argument(
        "--out", metavar="FILE.csv",
        help="where to write the sheet, a new .csv file; its picture goes beside it as .png "
        "(default RUN_DIR/queries/step-<step>-<strategy>.csv)",
    )
    add_moved_data(query)


def run(args: argparse.Namespace) -> int:
    """Write the query sheet and say how to hand it back."""
    from ssvae_core.cli.workflows import query_run

    result = query_run(
        args.run_dir, args.n, strategy=args.strategy, options=strategy_options(args.set) or None,
        seed=args.seed, out=args.out, **moved_data(args),
    )
    print(f"{len(result['rows'])} examples to label ({result['strategy']}): {result['path']}")
    if result["image"] is not None:
        print(f"images: {result['image']}")
    print("fill in the label column, then: ssvae label " + f"{args.run_dir} {result['path']}")
    return EXIT_OK


COMMAND = Command(
    name="query",
    help="write the unlabeled training examples to label next",
    description="Score the run's unlabeled training examples with an acquisition "
    "strategy and write the N best as a query sheet (CSV: index,label,score,predicted,"
    "certainty, label left empty) with a PNG of their images. Fill in the labels you "
    "know and hand the sheet to `ssvae label`; rows left empty are skipped.",
    add_arguments=add_arguments,
    run=run,
)
