"""The ``ssvae`` command line: ``train``, ``evaluate``, ``report``, ``label``, ``labels``,
``retrain``, ``query``, ``loop``, ``studio`` and ``plugins``.

Exit codes: 0 success, 2 bad input (config, data, checkpoint, plugin; one line on
stderr, nothing overwritten), 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ssvae_core.config import label_budget_argument
from ssvae_core.errors import SSVAEError
from ssvae_core.ood import BACKGROUND_NOISE, DEFAULT_SCORE, OOD_SCORES

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
TEST_DATA_HELP = (
    "the test set that came with the data (data.test_dataset), with the same sample shape and "
    "class names: all of --data then trains and every labeled example of PATH is the test set "
    "(default: a fifth of --data is held out)"
)


def _add_distributed_flags(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "several processes",
        "train together with other processes, one per host, say (jax.distributed): each flag "
        "may instead come from its SSVAE_* environment variable; process 0 writes the run",
    )
    group.add_argument(
        "--distributed", choices=("auto", "off"), default=None,
        help="auto: connect to the other processes, detecting what is not given (SLURM, Open "
        "MPI, Cloud TPU); off: this process alone (default, unless --coordinator, "
        "--num-processes or --process-id is given) [SSVAE_DISTRIBUTED]",
    )
    group.add_argument(
        "--coordinator", metavar="HOST:PORT",
        help="address of process 0, the same for every process [SSVAE_COORDINATOR]",
    )
    group.add_argument(
        "--num-processes", type=int, metavar="N", help="processes in all [SSVAE_NUM_PROCESSES]"
    )
    group.add_argument(
        "--process-id", type=int, metavar="I", help="this process, 0 to N-1 [SSVAE_PROCESS_ID]"
    )
    group.add_argument(
        "--coordinator-timeout", type=int, metavar="SECONDS",
        help="how long to wait for every process (default 300) [SSVAE_COORDINATOR_TIMEOUT]",
    )


def _start_distributed(args: argparse.Namespace) -> bool:
    """Connect to the other processes when the flags or the environment ask for it (before
    JAX computes anything); returns whether this process writes the run."""
    from ssvae_core.distributed import distributed_options, initialize, is_main_process

    options = distributed_options({
        "mode": args.distributed, "coordinator": args.coordinator,
        "num_processes": args.num_processes, "process_id": args.process_id,
        "timeout": args.coordinator_timeout,
    })
    return not initialize(options) or is_main_process()


def _mlflow_dir(args: argparse.Namespace, trackers: Sequence[str]) -> str | None:
    """``--mlflow-dir``, checked (on every process, before any connects)."""
    from ssvae_core.errors import ConfigError
    from ssvae_core.tracking import mlflow_store

    if args.mlflow_dir is None:
        return None
    if "mlflow" not in trackers:
        raise ConfigError("--mlflow-dir names the store of --track mlflow; add --track mlflow")
    mlflow_store(".", args.mlflow_dir)
    return str(args.mlflow_dir)


def _print_follower(result: dict[str, Any], run_dir: object) -> None:
    print(
        f"process {result['process_index']} of {result['process_count']}: trained to step "
        f"{result['steps']}; process 0 writes the run {run_dir}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssvae",
        description="Semi-supervised VAEs whose latent space is the classifier.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model and write a run directory",
        description="Train on the embedded digits data (default) or on your own data, "
        "with the benchmark split (20% held out) and a label budget.",
    )
    train.add_argument("--config", metavar="PATH", help="TOML config file (applied over --preset)")
    train.add_argument(
        "--preset", metavar="NAME",
        help="a tuned configuration shipped with ssvae: digits, mnist, or auto (chosen for the "
        "data's shape and size; see docs/user-guide.md)",
    )
    train.add_argument(
        "--data", metavar="PATH",
        help="an .npz or .csv file, or a folder: an MNIST-style IDX pair, x.npy (and y.npy), or "
        "one subfolder of PNG/JPEG images per class (default: digits)",
    )
    train.add_argument("--test-data", metavar="PATH", help=TEST_DATA_HELP)
    train.add_argument(
        "--labels-per-class", type=label_budget_argument, metavar="N",
        help="label budget per class: an integer (0: no labels, the model learns from the "
        "unlabeled data alone and the report gives clustering accuracy, NMI and ARI) or 'all' "
        "(every training label)",
    )
    train.add_argument("--seed", type=int, metavar="N", help="seed of the split and the model")
    train.add_argument("--steps", type=int, metavar="N", help="optimiser steps")
    train.add_argument(
        "--out", metavar="DIR", help="run directory (default: a new timestamped folder under runs/)"
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set prior.num_components=20",
    )
    train.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint up to --steps total (default: the "
        "run's own train.steps; same data, split, config); finishes a killed run",
    )
    train.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    train.add_argument("--quiet", action="store_true", help="no progress display")
    train.add_argument(
        "--track", action="append", default=[], metavar="NAME",
        help="also log to a tracker (repeatable, or comma-separated): tensorboard, event files "
        "in RUN/tensorboard/ (needs: pip install 'ssvae-core[track]'); mlflow, MLflow's file "
        "store in RUN/mlruns/ (needs: pip install 'ssvae-core[mlflow]'); or one a plugin "
        "adds (ssvae plugins lists them)",
    )
    train.add_argument(
        "--mlflow-dir", metavar="DIR",
        help="with --track mlflow: the MLflow file store to log into (a folder or a file: URI; "
        "default RUN/mlruns); one store for several runs lets MLflow compare them",
    )
    _add_distributed_flags(train)

    evaluate = commands.add_parser(
        "evaluate", help="reload a run's checkpoint and report its metrics",
        description="Without --data the run's own held-out split is rebuilt and evaluated.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or checkpoint file")
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
    evaluate.add_argument("--json", action="store_true", help="print the whole report as JSON")

    report = commands.add_parser(
        "report", help="rewrite a run's report and plots from its checkpoint",
        description="For a run whose report is missing or out of date (e.g. killed after its "
        "last checkpoint).",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")

    background = commands.add_parser(
        "background", help="train a run's background model (the ratio OOD scores)",
        description="Trains a model of the run's config on its training images with a share of "
        "their pixels replaced by noise, and stores it in the run (model.background.ckpt); the "
        "run's own model is not changed.",
    )
    background.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    background.add_argument(
        "--noise", type=float, default=BACKGROUND_NOISE, metavar="RATE",
        help="the share of pixels replaced by uniform noise, in (0, 1]",
    )
    background.add_argument(
        "--steps", type=int, default=None, metavar="N", help="training steps (default: the run's train.steps)",
    )

    label = commands.add_parser(
        "label", help="add labels from a CSV file or a Label Studio export to a run's label store",
        description="FILE.csv has the header 'index,label': rows of the run's dataset (as "
        "loaded; held-out test rows are refused) and label names; FILE.json is a Label Studio "
        "export whose tasks carry the row in data.index. A name the model has not "
        "seen becomes a new class at the next `ssvae retrain`. Any bad row changes nothing.",
    )
    label.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    label.add_argument(
        "labels_file", metavar="FILE",
        help="CSV with columns index,label (or an export of `ssvae labels --export`), or a Label "
        "Studio JSON export (.json)",
    )
    label.add_argument("--data", metavar="PATH", help="where the run's data are, if they moved")
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

    labels = commands.add_parser(
        "labels", help="count a run's labels per class and per source",
        description="The label store is checked against the run's data first, as `ssvae "
        "retrain` checks it: an invalid store is refused, not counted.",
    )
    labels.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    labels.add_argument("--json", action="store_true", help="machine-readable counts")
    labels.add_argument("--data", metavar="PATH", help="where the run's data are, if they moved")
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

    retrain = commands.add_parser(
        "retrain", help="continue a run warm with every label in its store",
        description="Continue from the run's checkpoint (parameters, optimiser state, τ "
        "counts) for --steps more steps on the labels in its label store; new label names "
        "claim free channels. Appends metrics, rewrites checkpoint and report, and records "
        "the round in rounds.jsonl.",
    )
    retrain.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    retrain.add_argument(
        "--steps", type=int, default=1000, metavar="N", help="further optimiser steps (default 1000)"
    )
    retrain.add_argument("--data", metavar="PATH", help="where the run's data are, if they moved")
    retrain.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    retrain.add_argument(
        "--no-split", action="store_true",
        help="keep channels where labeled examples of two classes sit merged this time "
        "(by default such a channel is split first: train.split_channels)",
    )
    retrain.add_argument("--quiet", action="store_true", help="no progress display")
    retrain.add_argument(
        "--track", action="append", default=[], metavar="NAME",
        help="also log to a tracker (repeatable, or comma-separated): tensorboard "
        "(RUN/tensorboard/), mlflow (RUN/mlruns/; the run's MLflow run continues), or one a "
        "plugin adds",
    )
    retrain.add_argument(
        "--mlflow-dir", metavar="DIR",
        help="with --track mlflow: the MLflow file store (default RUN/mlruns)",
    )
    _add_distributed_flags(retrain)

    query = commands.add_parser(
        "query", help="write the unlabeled training examples to label next",
        description="Score the run's unlabeled training examples with an acquisition "
        "strategy and write the N best as a query sheet (CSV: index,label,score,predicted,"
        "certainty, label left empty) with a PNG of their images. Fill in the labels you "
        "know and hand the sheet to `ssvae label`; rows left empty are skipped.",
    )
    query.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
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
    query.add_argument("--data", metavar="PATH", help="where the run's data are, if they moved")

    loop = commands.add_parser(
        "loop", help="simulate query → label → retrain rounds and write the label-efficiency curve",
        description="Train with a few labels per class, then for --rounds rounds query "
        "--per-round examples, label them with the data's own training labels (held-out "
        "labels are never read) and retrain warm for --steps-per-round steps. Each strategy "
        "and seed is a run directory under OUT/runs/; OUT/curve.json and curve.png hold the "
        "held-out accuracy and ECE against labels used.",
    )
    loop.add_argument("--data", metavar="PATH", help="a dataset as train --data takes it (default: digits)")
    loop.add_argument("--test-data", metavar="PATH", help=TEST_DATA_HELP)
    loop.add_argument("--preset", metavar="NAME", help="a shipped preset: auto, digits, mnist")
    loop.add_argument("--config", metavar="PATH", help="TOML config file (applied over --preset)")
    loop.add_argument(
        "--strategy", action="append", metavar="NAME",
        help="acquisition strategy (repeatable, or comma-separated; default entropy)",
    )
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

    studio = commands.add_parser(
        "studio", help="a local web page to explore a run, label what it asks for and retrain",
        description="Serve the labeling studio for RUN_DIR on http://HOST:PORT/ and print its "
        "URL with a random access token (every request needs it). The studio holds the run "
        "while it is open: labels go to the run's label store (source 'studio'), retrains "
        "continue the run warm. Stop it with Ctrl+C. Needs: pip install 'ssvae-core[studio]'.",
    )
    studio.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    studio.add_argument(
        "--host", default="127.0.0.1", metavar="HOST",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    studio.add_argument(
        "--port", type=int, default=8765, metavar="N", help="port (default 8765; 0 picks a free one)"
    )
    studio.add_argument(
        "--token", metavar="TOKEN", help="access token (default: a new random one each start)"
    )
    studio.add_argument("--open", action="store_true", help="open the page in the default browser")
    studio.add_argument("--data", metavar="PATH", help="where the run's data are, if they moved")

    plugins = commands.add_parser("plugins", help="list registered components and their options")
    plugins.add_argument("--json", action="store_true", help="machine-readable listing")
    return parser


def _resume(args: argparse.Namespace) -> int:
    from ssvae_core.errors import ConfigError
    from ssvae_core.progress import TrainingProgress
    from ssvae_core.runs import resume_run

    clashing = [
        flag
        for flag, value in (
            ("--config", args.config), ("--preset", args.preset),
            ("--test-data", args.test_data), ("--labels-per-class", args.labels_per_class), ("--seed", args.seed),
            ("--out", args.out), ("--set", args.set or None), ("--track", args.track or None),
            ("--mlflow-dir", args.mlflow_dir),
        )
        if value is not None
    ]
    if clashing:
        raise ConfigError(
            f"--resume continues a run with its own config; drop {', '.join(clashing)} "
            "(only --steps, --data (where the run's data has moved), --no-plots, --quiet and "
            "the flags of several processes apply)"
        )
    writer = _start_distributed(args)
    total = args.steps if args.steps is not None else _planned_steps(args.resume)
    with TrainingProgress(total, enabled=writer and not args.quiet) as progress:
        report = resume_run(
            args.resume, args.steps, sinks=[progress], on_start=progress.start,
            on_notice=_notice, plots=not args.no_plots, data=args.data,
        )
    if writer:
        _print_train_summary(report, args.resume)
    else:
        _print_follower(report, args.resume)
    return EXIT_OK


def _notice(text: str) -> None:
    print(f"ssvae: {text}", file=sys.stderr)


def _planned_steps(run_dir: str) -> int:
    """The run's own ``train.steps`` (for the progress bar; 0 when it cannot be read)."""
    from pathlib import Path

    from ssvae_core.config import read_toml

    try:
        steps = read_toml(Path(run_dir) / "config.toml").get("train", {}).get("steps", 0)
    except SSVAEError:
        return 0
    return steps if isinstance(steps, int) else 0


def _report(args: argparse.Namespace) -> int:
    from ssvae_core.runs import report_run

    report = report_run(args.run_dir, on_notice=_notice, plots=not args.no_plots)
    _print_train_summary(report, args.run_dir)
    return EXIT_OK


def _background(args: argparse.Namespace) -> int:
    from ssvae_core.ood import background_run

    info = background_run(args.run_dir, noise=args.noise, steps=args.steps)
    print(
        f"background model: {info['steps']} steps in {info['train_time_s']:.1f} s, noise "
        f"{info['noise']:g}, {info['bytes'] / 1e6:.2f} MB in {info['file']}"
    )
    return EXIT_OK


def _held_out_line(report: dict[str, Any]) -> str:
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


def _print_train_summary(report: dict[str, Any], run_dir: object) -> None:
    print(
        f"{_held_out_line(report)}  "
        f"labels {report['num_labels']}  prior {report['prior']}  "
        f"time {report['wall_time_s']:.1f}s  run {run_dir}"
    )


def _train(args: argparse.Namespace) -> int:
    from ssvae_core.config import load_config
    from ssvae_core.progress import TrainingProgress
    from ssvae_core.runs import new_run_dir, train_run
    from ssvae_core.tracking import check_trackers, finish_trackers, open_trackers

    if args.resume is not None:
        return _resume(args)

    flags = {
        "data.dataset": args.data, "data.test_dataset": args.test_data,
        "data.labels_per_class": args.labels_per_class,
        "seed": args.seed, "train.steps": args.steps,
    }
    values = {key: value for key, value in flags.items() if value is not None}
    config = load_config(args.config, args.set, preset=args.preset, values=values)
    trackers = check_trackers(args.track)
    mlflow_dir = _mlflow_dir(args, trackers)
    writer = _start_distributed(args)
    out = args.out if args.out is not None else new_run_dir()
    sinks = open_trackers(out, trackers, config.to_dict(), mlflow_dir=mlflow_dir) if writer else []
    try:
        with TrainingProgress(config.train.steps, enabled=writer and not args.quiet) as progress:
            report = train_run(
                config, out, sinks=[progress, *sinks], on_start=progress.start, plots=not args.no_plots
            )
        if writer:
            finish_trackers(sinks, out, report)
    finally:
        for sink in sinks:
            sink.close()
    if writer:
        _print_train_summary(report, out)
    else:
        _print_follower(report, out)
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from ssvae_core.runs import evaluate_run

    if args.score is not None and args.ood is None:
        from ssvae_core.errors import ConfigError

        raise ConfigError("--score chooses among the OOD scores; it needs --ood PATH")
    if args.ood_fpr is not None and args.ood is None:
        from ssvae_core.errors import ConfigError

        raise ConfigError("--ood-fpr flags out-of-distribution inputs; it needs --ood PATH")
    report = evaluate_run(
        args.run_dir, data=args.data, ood=args.ood, ood_scores=args.score, ood_fpr=args.ood_fpr
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    line = (
        f"{_held_out_line(report)}  "
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
    return EXIT_OK


def _label(args: argparse.Namespace) -> int:
    from ssvae_core.runs import label_run

    result = label_run(
        args.run_dir, args.labels_file, data=args.data, relabel=args.relabel, annotator=args.annotator
    )
    new = result["new_classes"]
    print(
        f"added {result['added']} label(s) to {args.run_dir}"
        + (f"; new classes {', '.join(new)} (they claim free channels at the next retrain)" if new else "")
    )
    return EXIT_OK


def _labels(args: argparse.Namespace) -> int:
    from ssvae_core.runs import labels_summary

    if args.export is not None:
        from ssvae_core.label_io import export_run

        count = export_run(args.run_dir, args.export, data=args.data)
        print(f"wrote {count} label(s) to {args.export}")
        return EXIT_OK
    if args.issues:
        from ssvae_core.label_issues import run_issues

        issues = [issue.to_json() for issue in run_issues(args.run_dir, n=args.n, data=args.data)]
        if args.json:
            print(json.dumps(issues, indent=2, ensure_ascii=False))
            return EXIT_OK
        print(f"{len(issues)} label(s) the model disputes, most likely wrong first:")
        print(f"{'index':>7}  {'label':<12} {'p(label)':>8}  {'suggested':<12} {'p':>6}  source")
        for issue in issues:
            print(
                f"{issue['index']:>7}  {issue['label']:<12.12} {issue['p_label']:>8.3f}  "
                f"{issue['suggested']:<12.12} {issue['p_suggested']:>6.3f}  {issue['source']}"
            )
        return EXIT_OK
    summary = labels_summary(args.run_dir, data=args.data)
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
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
    return EXIT_OK


def _retrain(args: argparse.Namespace) -> int:
    from ssvae_core.progress import TrainingProgress
    from ssvae_core.runs import retrain_run
    from ssvae_core.tracking import check_trackers, finish_trackers, open_trackers

    done = _checkpoint_step(args.run_dir)
    trackers = check_trackers(args.track)
    mlflow_dir = _mlflow_dir(args, trackers)
    writer = _start_distributed(args)
    sinks = open_trackers(args.run_dir, trackers, None, mlflow_dir=mlflow_dir) if writer else []
    try:
        with TrainingProgress(done + max(args.steps, 0), enabled=writer and not args.quiet) as progress:
            report = retrain_run(
                args.run_dir, args.steps, sinks=[progress, *sinks], on_start=progress.start,
                on_notice=_notice, plots=not args.no_plots, data=args.data,
                split_channels=False if args.no_split else None,
            )
        if writer:
            finish_trackers(sinks, args.run_dir, report)
    finally:
        for sink in sinks:
            sink.close()
    if writer:
        _print_train_summary(report, args.run_dir)
    else:
        _print_follower(report, args.run_dir)
    return EXIT_OK


def _checkpoint_step(run_dir: str) -> int:
    """The step of the run's checkpoint (for the progress bar; 0 when it cannot be read)."""
    from pathlib import Path

    from ssvae_core.checkpoint import read_manifest

    try:
        step = read_manifest(Path(run_dir) / "model.ckpt").get("step", 0)
    except SSVAEError:
        return 0
    return step if isinstance(step, int) else 0


def _strategy_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set option=value`` pairs of a strategy, values read as TOML."""
    from ssvae_core.config import parse_override
    from ssvae_core.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        keys, value = parse_override(pair)
        if len(keys) != 1:
            raise ConfigError(f"--set of a strategy expects OPTION=VALUE (one name), got {pair!r}")
        options[keys[0]] = value
    return options


def _query(args: argparse.Namespace) -> int:
    from ssvae_core.labeling import query_run

    result = query_run(
        args.run_dir, args.n, strategy=args.strategy, options=_strategy_options(args.set) or None,
        seed=args.seed, out=args.out, data=args.data,
    )
    print(f"{len(result['rows'])} examples to label ({result['strategy']}): {result['path']}")
    if result["image"] is not None:
        print(f"images: {result['image']}")
    print("fill in the label column, then: ssvae label " + f"{args.run_dir} {result['path']}")
    return EXIT_OK


def _loop(args: argparse.Namespace) -> int:
    from ssvae_core.config import load_config
    from ssvae_core.labeling import LoopPlan, parse_seeds, run_loop
    from ssvae_core.runs import new_run_dir

    overrides = list(args.set)
    if args.data is not None:
        overrides.insert(0, f"data.dataset={json.dumps(args.data, ensure_ascii=False)}")
    if args.test_data is not None:
        overrides.insert(0, f"data.test_dataset={json.dumps(args.test_data, ensure_ascii=False)}")
    overrides.insert(0, f"data.labels_per_class={args.initial_labels_per_class}")
    if args.steps is not None:
        overrides.insert(0, f"train.steps={args.steps}")
    config = load_config(args.config, overrides, preset=args.preset)
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
    total = len(plan.seeds) * len(plan.strategies) * plan.rounds

    def progress(record: dict[str, Any]) -> None:
        if args.quiet:
            return
        print(
            f"{record['strategy']:>16} seed {record['seed']} round {record['round']}/{plan.rounds}: "
            f"{record['labels']} labels, test accuracy {record['test_accuracy']:.4f}, "
            f"ECE {record['ece']:.4f} ({record['wall_time_s']:.1f}s)"
            + (f", predictions changed {100 * record['prediction_change']:.1f} %" if "prediction_change" in record else "")
            + (" — stable: stopped" if record.get("stopped") else ""),
            flush=True,
        )

    if not args.quiet:
        print(
            f"loop: {len(plan.strategies)} strategies × {len(plan.seeds)} seeds × {plan.rounds} rounds "
            f"({total} rounds of {plan.per_round} queries) → {out}",
            flush=True,
        )
    summary = run_loop(plan, out, on_round=progress, plots=not args.no_plots)
    for strategy, rows in summary.items():
        last = rows[-1]
        print(
            f"{strategy}: {last['labels']:.0f} labels, test accuracy {last['test_accuracy']:.4f} "
            f"± {last['test_accuracy_std']:.4f}, ECE {last['ece']:.4f}"
        )
    print(f"curve: {out}/curve.json" + ("" if args.no_plots else f", {out}/curve.png"))
    return EXIT_OK


def _studio(args: argparse.Namespace) -> int:
    from ssvae_core.errors import ConfigError

    try:
        from ssvae_core.studio.server import serve
    except ImportError as error:
        raise ConfigError(
            f"ssvae studio needs the studio extra ({error.name} is missing): "
            "pip install 'ssvae-core[studio]'"
        ) from None
    if args.token is not None and (
        len(args.token) < 8 or not all(char.isprintable() and not char.isspace() for char in args.token)
    ):
        raise ConfigError(
            "--token must be at least 8 characters long, without spaces or control characters"
        )

    def ready(url: str) -> None:
        print(f"ssvae studio: serving {args.run_dir} at\n    {url}\n(Ctrl+C stops it)", flush=True)

    try:
        serve(
            args.run_dir, host=args.host, port=args.port, token=args.token, data=args.data,
            open_browser=args.open, on_ready=ready,
        )
    except KeyboardInterrupt:  # Ctrl+C is how the studio is stopped: the run is closed by now
        pass
    print("ssvae studio: stopped", flush=True)
    return EXIT_OK


def _plugins(args: argparse.Namespace) -> int:
    from ssvae_core.options import describe_options
    from ssvae_core.registry import default_registry

    registry = default_registry()
    listing: list[dict[str, Any]] = [
        {
            "kind": c.kind,
            "name": c.name,
            "package": c.package,
            "version": c.version,
            "description": c.factory.description,
            "options": describe_options(c.factory.options),
        }
        for c in registry
    ]
    trackers = [
        {"name": t.name, "package": t.package, "version": t.version, "description": t.factory.description}
        for t in registry.trackers.values()
    ]
    problems = [{"plugin": p.plugin, "reason": p.reason} for p in registry.problems]
    if args.json:
        print(json.dumps({"components": listing, "trackers": trackers, "problems": problems}, indent=2, default=str))
        return EXIT_OK
    for entry in [*listing, *({"kind": "tracker", "options": [], **t} for t in trackers)]:
        print(f"{entry['kind']:9} {entry['name']:19} {entry['package']} {entry['version']}  — {entry['description']}")
        for opt in entry["options"]:
            allowed = f" {opt['choices']}" if "choices" in opt else ""
            print(f"    {opt['name']} = {opt['default']!r}  ({opt['type']}{allowed}) {opt['help']}")
    for problem in problems:
        print(f"problem: plugin {problem['plugin']!r}: {problem['reason']}", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssvae`` console script."""
    args = _parser().parse_args(argv)
    handlers = {
        "train": _train, "evaluate": _evaluate, "report": _report, "background": _background, "label": _label,
        "labels": _labels, "retrain": _retrain, "query": _query, "loop": _loop,
        "studio": _studio, "plugins": _plugins,
    }
    try:
        return handlers[args.command](args)
    except SSVAEError as error:
        print(f"ssvae: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ssvae: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
