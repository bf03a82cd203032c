"""``ssvae loop``: simulate query → label → retrain rounds and write the label-efficiency
curve."""

from __future__ import annotations

import argparse
from typing import Any

from ssvae_core.cli.arguments import add_test_data
from ssvae_core.cli.command import Command
from ssvae_core.cli.config_flags import run_config
from ssvae_core.cli.context import EXIT_OK


def add_arguments(loop: argparse.ArgumentParser) -> None:
    """The data and config, the first labels, the simulated annotator, the rounds, the
    output."""
    loop.add_argument("--data", metavar="PATH", help="a dataset as train --data takes it (default: digits)")
    add_test_data(loop)
    loop.add_argument("--preset", metavar="NAME", help="a shipped preset: auto, digits, mnist")
    loop.add_argument("--config", metavar="PATH", help="TOML config file (applied over --preset)")
    loop.add_argument(
        "--strategy", action="append", metavar="NAME",
        help="acquisition strategy (repeatable, or comma-separated; default entropy)",
    )
    add_first_labels(loop)
    add_review(loop)
    loop.add_argument("--rounds", type=int, default=5, metavar="R", help="query rounds (default 5)")
    loop.add_argument("--per-round", type=int, default=10, metavar="N", help="queries per round (default 10)")
    loop.add_argument(
        "--steps-per-round", type=int, default=500, metavar="M", help="warm steps per round (default 500)"
    )
    loop.add_argument("--steps", type=int, metavar="N", help="steps of the first training (default: the config's)")
    loop.add_argument("--seeds", default="0", metavar="LIST", help="split and model seeds, e.g. 0,1,2 (default 0)")
    loop.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable)",
    )
    loop.add_argument("--out", metavar="DIR", help="loop directory (default: a new folder under runs/)")
    loop.add_argument("--no-plots", action="store_true", help="skip curve.png")
    loop.add_argument("--quiet", action="store_true", help="no progress lines")


def add_first_labels(loop: argparse.ArgumentParser) -> None:
    """How many first labels, and how they are chosen and trained on."""
    loop.add_argument(
        "--initial-labels-per-class", type=int, default=1, metavar="K",
        help="labels per class of the first training (default 1)",
    )
    loop.add_argument(
        "--initial-strategy", metavar="NAME",
        help="choose the first labels (K × classes) with this strategy from a model trained on "
        "the unlabeled data alone (with the same config), instead of drawing K per class at "
        "random; a strategy that needs no label: typical, badge, kcenter, channel_entropy, random",
    )
    loop.add_argument(
        "--initial-training", choices=("warm", "cold"), default="warm",
        help="with --initial-strategy: continue the label-free model on the chosen labels for "
        "--steps-per-round steps (warm, default) or train the first model on them from scratch (cold)",
    )


def add_review(loop: argparse.ArgumentParser) -> None:
    """The simulated annotator's mistakes, their review, and when to stop."""
    loop.add_argument(
        "--oracle-noise", type=float, default=0.0, metavar="P",
        help="the simulated annotator gives a wrong label (another class, uniformly) with "
        "probability P, the same one each time an example is asked (default 0)",
    )
    loop.add_argument(
        "--review-issues", type=int, default=0, metavar="N",
        help="each round, before retraining, review the top N label issues (`ssvae labels "
        "--issues`) with the data's true labels: wrong ones corrected, right ones confirmed "
        "(default 0: no review)",
    )
    loop.add_argument(
        "--stop-when", choices=("stable",), metavar="stable",
        help="end a strategy's rounds early once its labels stop paying: 'stable' when the share "
        "of the unlabeled pool whose predicted class changed in a round falls below "
        "--stable-below (every round's share is in curve.jsonl as prediction_change)",
    )
    loop.add_argument(
        "--stable-below", type=float, default=0.01, metavar="F",
        help="with --stop-when stable: the share of changed predictions that counts as stable (default 0.01)",
    )


def print_round(record: dict[str, Any], rounds: int) -> None:
    """One progress line per finished round."""
    print(
        f"{record['strategy']:>16} seed {record['seed']} round {record['round']}/{rounds}: "
        f"{record['labels']} labels, test accuracy {record['test_accuracy']:.4f}, "
        f"ECE {record['ece']:.4f} ({record['wall_time_s']:.1f}s)"
        + (f", predictions changed {100 * record['prediction_change']:.1f} %" if "prediction_change" in record else "")
        + (" — stable: stopped" if record.get("stopped") else ""),
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """Run every strategy's rounds for every seed, then print each strategy's last figures."""
    from ssvae_core.cli.workflows import LoopPlan, new_run_dir, parse_seeds, run_loop

    config = run_config(args, labels_per_class=args.initial_labels_per_class)
    strategies = tuple(
        name.strip() for item in (args.strategy or ["entropy"]) for name in item.split(",") if name.strip()
    )
    plan = LoopPlan(
        config, strategies, tuple(parse_seeds(args.seeds)),
        rounds=args.rounds, per_round=args.per_round, steps_per_round=args.steps_per_round,
        initial_strategy=args.initial_strategy, initial_training=args.initial_training,
        oracle_noise=args.oracle_noise, review_issues=args.review_issues,
        stop_when=args.stop_when, stable_below=args.stable_below,
    )
    out = args.out if args.out is not None else new_run_dir()
    if not args.quiet:
        total = len(plan.seeds) * len(plan.strategies) * plan.rounds
        print(
            f"loop: {len(plan.strategies)} strategies × {len(plan.seeds)} seeds × {plan.rounds} rounds "
            f"({total} rounds of {plan.per_round} queries) → {out}",
            flush=True,
        )
    summary = run_loop(
        plan, out, on_round=None if args.quiet else lambda record: print_round(record, plan.rounds),
        plots=not args.no_plots,
    )
    for strategy, rows in summary.items():
        last = rows[-1]
        print(
            f"{strategy}: {last['labels']:.0f} labels, test accuracy {last['test_accuracy']:.4f} "
            f"± {last['test_accuracy_std']:.4f}, ECE {last['ece']:.4f}"
        )
    print(f"curve: {out}/curve.json" + ("" if args.no_plots else f", {out}/curve.png"))
    return EXIT_OK


COMMAND = Command(
    name="loop",
    help="simulate query → label → retrain rounds and write the label-efficiency curve",
    description="Train with a few labels per class, then for --rounds rounds query "
    "--per-round examples, label them with the data's own training labels (held-out "
    "labels are never read) and retrain warm for --steps-per-round steps. Each strategy "
    "and seed is a run directory under OUT/runs/; OUT/curve.json and curve.png hold the "
    "held-out accuracy and ECE against labels used.",
    add_arguments=add_arguments,
    run=run,
)
