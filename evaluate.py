"""Evaluate trained runs on every zero-shot test setup of the paper and print its tables: the
command.

    python evaluate.py                                # the latest run under runs/
    python evaluate.py --run-dir runs/X --save-scores # + scores/<setup>.npz per test setup
    python evaluate.py --collect runs/A runs/B        # runs merged; seeds aggregated (mean, CI, PI)
    python evaluate.py --collect runs/*/seed* --report results.html  # + the results page
    python evaluate.py --compare runs/demo/a runs/demo/b  # two folders of seed runs: A - B over
                                                          # the seeds, t-interval, sign-flip p
    python evaluate.py --compare runs/A runs/B        # two runs: A - B, paired bootstrap over the
                                                      # test rows (within one trained pair)
    python evaluate.py --run-dir runs/X --query guitar --annotate song.mp3 --neighbors lovely
    python evaluate.py --external clap.npz --dataset demo   # another model's embeddings
    python evaluate.py --run-dir runs/X --export-embeddings ours.npz   # ours, in that format

This file holds the flags, the dispatch and the printing. The evaluation itself is protocol.py (one
run: its embeddings, scores, test setups and results.json); aggregate.py merges runs and compares
two systems, case_studies.py runs Tables 5-7, external.py scores other models, tables.py lays
results out as the paper does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import aggregate
import case_studies
import config
import dataset_dir as ds
import external
import protocol
import report
import splits
import tables
from fileio import OutputError, resolved
from preprocess.frontend import AudioError
from protocol import EvaluationError

ONLY_EXTERNAL = {
    "--dataset": "dataset",
    "--split": "split",
    "--name": "name",
    "--out": "out",
    # flags that mean something with --external only
    "--allow-missing": "allow_missing",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Evaluate trained zero-shot runs (paper Tables 2-4, plus a generalized zero-shot view) "
            "and run the case "
            "studies (Tables 5-7). Writes <run_dir>/results.json, embeddings.h5 (cache) and "
            "label_map.png; prints tables."
        ),
    )
    add = parser.add_argument
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--run-dir", help="run directory written by train.py. Default: the latest run under runs/."
    )
    where.add_argument(
        "--collect",
        nargs="+",
        metavar="RUN_DIR",
        help="several run directories merged into one set of tables; a run's results.json is "
        "reused when it was computed from the run's model.keras, config.json and data as they are "
        "now (else, or with --force, the run is evaluated again). Finished runs that differ only "
        "in their seeds are aggregated: mean +- 95%% t-interval (aggregate.py).",
    )
    where.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="two folders of seed runs (reproduce.py's OUT/<kind>, holding seed<s>/), paired by "
        "seed (same split file and init seed; A's runs and B's differ only in the compared "
        "setting): per setup and metric, the mean over seeds of A - B, its paired 95%% "
        "t-interval and the exact sign-flip p. Two run directories: the paired bootstrap over "
        "the test rows of that one trained pair, A - B with a 95%% interval (evaluates with "
        "scores/).",
    )
    where.add_argument(
        "--external",
        metavar="FILE.npz",
        help="score another model's embeddings or scores (exchange format: external.py, "
        "docs/external.md) on every zero-shot setup of Tables 2-3; with --dataset.",
    )
    add(
        "--per-run",
        action="store_true",
        help="--collect: one row per run, no aggregation over seeds.",
    )
    add(
        "--include-unfinished",
        action="store_true",
        help="--collect: also show runs whose training has not finished (no train_summary.json), "
        "apart from the finished ones (variant training=unfinished); by default they are left out.",
    )
    add(
        "--resamples",
        type=int,
        default=aggregate.DEFAULT_RESAMPLES,
        help="--compare of two runs: bootstrap resamples of the test tracks/labels (at least "
        f"{aggregate.MIN_RESAMPLES}).",
    )
    add(
        "--bootstrap-seed",
        type=int,
        default=aggregate.DEFAULT_BOOTSTRAP_SEED,
        help="--compare: seed of the bootstrap resampling.",
    )
    add(
        "--format",
        choices=tables.FORMATS,
        default="table",
        help="output format of tables and case studies.",
    )
    add(
        "--report",
        metavar="FILE.html",
        help="--collect: also write one self-contained results page (forest plots against the "
        "paper, the tables, per-label AUC of the unseen labels, training curves, label maps; "
        "evaluates with --save-scores).",
    )
    add(
        "--save-scores",
        action="store_true",
        help="also write <run_dir>/scores/<setup>.npz (scores, labels, ...).",
    )
    add(
        "--force",
        action="store_true",
        help="re-evaluate runs with a results.json (--collect), recompute the cache.",
    )
    # the case studies (case_studies.py)
    add(
        "--query",
        metavar="WORD",
        help="case study (Table 5): top tracks for a word with a side-information vector "
        "(with GloVe side information: any word of the GloVe file).",
    )
    add(
        "--annotate",
        metavar="AUDIO_FILE",
        help="case study (Table 6): top labels for an audio file.",
    )
    add(
        "--neighbors",
        metavar="WORD",
        help="case study (Table 7): nearest labels in the side-information vs the embedding space.",
    )
    add(
        "--top",
        type=int,
        help="results per case study. Default: 5 for --query, 10 for --annotate, --neighbors.",
    )
    add(
        "--max-seconds",
        type=float,
        help="--annotate: read at most this many seconds (MSD used 30). Default: all.",
    )
    # other models (external.py)
    add(
        "--dataset",
        help="--external: dataset directory (or demo, fma, msd) whose split and annotations score "
        "it.",
    )
    add(
        "--split",
        metavar="SPLIT.json",
        help="--external: split file. Default: <dataset>/splits/split_seed0.json.",
    )
    add(
        "--name",
        help="--external: the model's name in records and tables. Default: the file's name.",
    )
    add("--out", metavar="DIR", help="--external: result folder. Default: runs/external-<name>.")
    add(
        "--allow-missing",
        action="store_true",
        help="--external: score each setup on the tracks and labels the "
        "file has (counted in the records) instead of refusing a file that lacks some.",
    )
    add(
        "--export-embeddings",
        metavar="FILE.npz",
        help="write the run's track and label embeddings in the exchange "
        "format (--external on it reproduces the run's results).",
    )
    add(
        "--batch-size",
        type=int,
        default=protocol.DEFAULT_BATCH_SIZE,
        help="segments per inference call.",
    )
    add("--no-progress", action="store_true", help="hide progress bars.")
    return parser


def check_flags(args) -> None:
    """EvaluationError naming the first flag that cannot work or does not go with the others."""
    case_study = case_study_asked(args)
    stray = [flag for flag, key in ONLY_EXTERNAL.items() if getattr(args, key)]
    seconds = args.max_seconds
    rules = [  # (holds, the message when it does not)
        (args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}."),
        (
            0 <= args.bootstrap_seed <= config.MAX_SEED,
            f"--bootstrap-seed must be in 0..{config.MAX_SEED}, got {args.bootstrap_seed}.",
        ),
        (args.top is None or args.top >= 1, f"--top must be >= 1, got {args.top}."),
        (
            seconds is None or (math.isfinite(seconds) and seconds > 0),
            f"--max-seconds must be a positive number of seconds, got {seconds}.",
        ),
        (
            args.collect or not args.include_unfinished,
            "--include-unfinished: used with --collect only.",
        ),
        (
            not (case_study and (args.collect or args.compare)),
            "--query/--annotate/--neighbors work on one run: use --run-dir, not --collect.",
        ),
        (args.external or not stray, f"{', '.join(stray)}: used with --external only."),
        (
            not (args.export_embeddings and (args.external or args.collect or args.compare)),
            "--export-embeddings exports one run (--run-dir), not several or an external model.",
        ),
        (
            not args.report or (args.collect and not args.per_run),
            "--report needs --collect RUN... (aggregated over seeds: no --per-run).",
        ),
        (
            args.dataset or not args.external,
            "--external needs --dataset: the dataset directory whose split scores the file.",
        ),
        (
            not (case_study and (args.external or args.export_embeddings)),
            "--query/--annotate/--neighbors work on a --run-dir, not with --external or "
            "--export-embeddings.",
        ),
    ]
    if broken := next((message for holds, message in rules if not holds), None):
        raise EvaluationError(broken)
    paths = {"--run-dir": [args.run_dir], "--collect": args.collect, "--compare": args.compare}
    paths |= {"--external": [args.external], "--out": [args.out], "--split": [args.split]}
    for flag, values in {**paths, "--export-embeddings": [args.export_embeddings]}.items():
        for value in filter(None, values or []):
            resolved(value, flag)  # a symbolic link loop: one line naming the flag
    if args.report:
        report.check_path(args.report)


def case_study_asked(args) -> bool:
    return any(flag is not None for flag in (args.query, args.annotate, args.neighbors))


def run_case_studies(args) -> str:
    """--query / --annotate / --neighbors on --run-dir (default: the latest run), as text."""
    run = protocol.load_run(args.run_dir or config.latest_run_dir())
    progress = not args.no_progress
    studies = {  # each case study, given how many rows it shows
        "query": lambda top: case_studies.query(run, args.query, top, progress, args.batch_size),
        "annotate": lambda top: case_studies.annotate(
            run, args.annotate, top, args.max_seconds, progress, args.batch_size
        ),
        "neighbors": lambda top: case_studies.neighbors(run, args.neighbors, top, progress),
    }
    results = {  # those asked for, in this order
        kind: study(args.top or case_studies.DEFAULT_TOP[kind])
        for kind, study in studies.items()
        if getattr(args, kind) is not None
    }
    if args.format == "json":
        return json.dumps(results, indent=2) + "\n"
    return "\n".join(
        case_studies.render(kind, result, args.format) for kind, result in results.items()
    )


def export_embeddings(args) -> str:
    """--export-embeddings: the run's embeddings in the exchange format; a JSON summary."""
    summary = external.export_embeddings(
        args.run_dir or config.latest_run_dir(),
        args.export_embeddings,
        args.force,
        args.batch_size,
        not args.no_progress,
    )
    print(
        f"note: wrote {summary['path']}: {summary['tracks']} tracks, {summary['labels']} labels, "
        f"{summary['dim']} dimensions ({summary['left_out']} track(s) of the split have no mel: "
        "left out, as "
        "in the run's evaluation).",
        file=sys.stderr,
    )
    return json.dumps(summary) + "\n"


def results(args) -> tuple[str, list[str]]:
    """The tables of --compare, --collect, --external or one run (--run-dir / the latest), and the
    notes."""
    kwargs = {
        "save": args.save_scores or bool(args.report),  # the page's per-label AUC reads scores/
        "batch_size": args.batch_size,
        "progress": not args.no_progress,
    }
    if args.compare:
        rows, notes = aggregate.compare(
            *args.compare, args.resamples, args.bootstrap_seed, args.force, **kwargs
        )
        return tables.render_comparison(rows, fmt=args.format, names=args.compare), notes
    if args.collect:
        records, notes = aggregate.collect(
            args.collect,
            force=args.force,
            aggregated=not args.per_run,
            include_unfinished=args.include_unfinished,
            **kwargs,
        )
        if args.report:
            notes.append(f"wrote {report.write_report(args.report, records, notes)}")
    elif args.external:
        records, notes = external.evaluate_external(
            args.external,
            args.dataset,
            args.split,
            args.name,
            args.out,
            args.allow_missing,
            args.save_scores,
        )
    else:
        run_dir = args.run_dir or config.latest_run_dir()
        records, notes = protocol.evaluate_run(run_dir, force=args.force, **kwargs)
        records = [{**r, **aggregate.unfinished_mark(run_dir)} for r in records]
    return tables.render_tables(records, fmt=args.format), notes


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config.check_backend()  # before Keras is imported
        check_flags(args)
        if args.export_embeddings:
            sys.stdout.write(export_embeddings(args))
        elif case_study_asked(args):
            sys.stdout.write(run_case_studies(args))
        else:
            text, notes = results(args)
            print("\n".join(f"note: {note}" for note in notes), file=sys.stderr)
            sys.stdout.write(text.rstrip("\n") + "\n")
        return 0
    except (
        EvaluationError,
        config.ConfigError,
        ds.DatasetError,
        splits.SplitError,
        AudioError,
        OutputError,
        FileNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
