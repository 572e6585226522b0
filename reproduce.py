"""Train one setup over several seeds and side-information kinds into one folder of runs, then print
the tables with the mean and 95% confidence interval of every metric (evaluate.py --collect).

    python reproduce.py --dataset fma --train-setup A-X --out runs/fma/emb-A-X   # ours, seeds 0-4
    python reproduce.py --dataset fma --train-setup A-X --epochs 20 --weights last \\
        --valid-draws every-epoch --out runs/fma/orig-A-X           # the original's budget
    python reproduce.py --dataset demo --side-info instrument-count random --epochs 6 \\
        --out runs/demo                                             # make demo

Seed s trains on the split of seed s (the dataset's splits/split_seed<s>.json, made when missing),
with weights and sampling seeded by s too: the split's generator and Keras' are separate, so one
number serves both, and the interval over seeds holds the split's luck and training's.
--split-seed N holds the split fixed (every seed trains on split N: training's luck alone, as with
the paper's one split). --lr A B ... trains the grid lr x seed into OUT/<side-info>/lr<lr>/seed<s>;
the tables then show each model at the original's lr and at the lr with the lowest mean best
validation loss. Run OUT/<side-info>/seed<s> is trained by train.py's `run`, in this process:
rerunning the command skips the finished runs and resumes an interrupted one after its last finished
epoch. Every other flag is train.py's, with its default. Training's progress goes to stderr, the
tables to stdout (--format json for scripts), the results page to OUT/report.html (report.py).
Without --side-info the embedding model trains with every kind of PAPER_SIDE_INFO the dataset has
(FMA: both instrument flavours, since the paper does not say which one made its tables; MSD: glove).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import aggregate
import config as cfg
import dataset_dir as dsio
import report
import splits
import tables
import train
from fileio import OutputError, resolved
from preprocess.frontend import AudioError
from protocol import EvaluationError

PAPER_SIDE_INFO = ("instrument-count", "instrument-confidence", "glove")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# train.py flags this command sets per run
REPORT_FILE = "report.html"  # OUT/report.html: the results page (report.py)
SET_HERE = ("seed", "split_seed", "split", "side_info", "run_dir", "lr")


class ReproduceError(ValueError):
    """A flag of this command that cannot work; the message names it."""


def side_info_kinds(config: cfg.TrainConfig, asked: list[str] | None) -> list[str | None]:
    """--side-info as given; else the paper's kinds the dataset has (embedding model) or train.py's
    default."""
    if asked:
        return list(dict.fromkeys(asked))
    if config.model == "classification":
        return [None]  # the classification model reads no side information
    available = dsio.available_side_info(train.resolve_dataset(config))
    if not (kinds := [kind for kind in PAPER_SIDE_INFO if kind in available]):
        raise ReproduceError(
            f"dataset {config.dataset} has none of {', '.join(PAPER_SIDE_INFO)}; available: "
            f"{', '.join(available) or 'none'}. Pass --side-info KIND..."
        )
    return kinds


def run_dir(out: Path, kind: str | None, seed: int, lr: float | None = None) -> Path:
    """OUT/<side-info>/seed<s> (OUT/default/seed<s>: a classification run without --side-info);
    OUT/<side-info>/lr<lr>/seed<s> for a run of an lr grid."""
    return out / (kind or "default") / ("" if lr is None else f"lr{lr}") / f"seed{seed}"


def plan(
    base: cfg.TrainConfig,
    kinds: list[str | None],
    seeds: list[int],
    out: Path,
    lrs: tuple[float, ...] = (),
    split_seed: int | None = None,
) -> list[cfg.TrainConfig]:
    """One configuration per (side-information kind, lr of a grid of two or more, seed): split
    seed = `split_seed`, else the init seed s."""
    grid = lrs if len(lrs) > 1 else [None]
    return [
        dataclasses.replace(
            base,
            side_info=kind,
            seed=seed,
            split_seed=seed if split_seed is None else split_seed,
            split=None,
            lr=base.lr if lr is None else lr,
            run_dir=str(run_dir(out, kind, seed, lr)),
        )
        for kind in kinds
        for lr in grid
        for seed in seeds
    ]


def check_plan(configs: list[cfg.TrainConfig]) -> None:
    """Every run's data and flags, checked before the first one trains (train.prepare; splits made
    if missing)."""
    for config in configs:
        train.prepare(config)


def train_all(configs: list[cfg.TrainConfig]) -> list[Path]:
    """Train every run in turn (a finished one is skipped by train.run, an interrupted one resumed).
    Training's progress goes to stderr: stdout holds only the tables, in the --format asked for."""
    done = []
    with contextlib.redirect_stdout(sys.stderr):
        for number, config in enumerate(configs, 1):
            print(
                f"== run {number}/{len(configs)}: side info {config.side_info or 'default'}, seed "
                f"{config.seed} "
                f"-> {config.run_dir}",
                flush=True,
            )
            done.append(train.run(config))
    return done


def print_tables(run_dirs: list[Path], fmt: str, page: Path) -> int:
    """The runs' tables with the mean and 95% interval over seeds (evaluate.py --collect RUN...
    --report PAGE); notes to stderr."""
    try:
        records, notes = aggregate.collect(run_dirs, aggregated=True, save=True)
        notes.append(f"wrote {report.write_report(page, records, notes)} (open it in a browser)")
    except (EvaluationError, dsio.DatasetError, splits.SplitError, AudioError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"note: {note}" for note in notes), file=sys.stderr)
    sys.stdout.write(tables.render_tables(records, fmt=fmt).rstrip("\n") + "\n")
    return 0


def build_parser():
    parser = cfg.build_parser(
        skip=SET_HERE,
        description=__doc__.split("\n\n")[0],
        epilog="Other flags: train.py's (python train.py --help).",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        help="seeds: each gives one run per side-information kind (its split seed and init seed).",
    )
    parser.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=[cfg.TrainConfig.lr],
        help="SGD learning rate (paper: 0.001); two or more values train the grid lr x seed, and "
        "the tables show each model at the original's lr and at the lr with the lowest mean best "
        "validation loss (chosen on validation data).",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=None,
        dest="fixed_split_seed",
        metavar="N",
        help="train every seed on the split of this seed (the split held fixed: the interval "
        "holds training's luck alone). Default: seed s trains on split s.",
    )
    parser.add_argument(
        "--side-info",
        nargs="+",
        dest="side_info_kinds",
        default=None,
        help=f"side-information kinds; default: those of {', '.join(PAPER_SIDE_INFO)} the "
        "dataset has (embedding model).",
    )
    parser.add_argument("--out", required=True, help="folder of the runs: OUT/<side-info>/seed<s>.")
    parser.add_argument(
        "--format",
        choices=tables.FORMATS,
        default="table",
        help="format of the tables printed at the end.",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg.check_backend()  # before Keras is imported
        out = resolved(args.out, "--out")
        rules = [  # (holds, the message when it does not)
            (
                len(set(args.seeds)) == len(args.seeds)
                and 0 <= min(args.seeds) <= max(args.seeds) <= cfg.MAX_SEED,
                f"--seeds {' '.join(map(str, args.seeds))}: give distinct seeds in "
                f"0..{cfg.MAX_SEED}.",
            ),
            (
                out.is_dir() or not out.exists(),
                f"--out {out} is a file: pass a folder for the runs.",
            ),
            (
                len(set(args.lr)) == len(args.lr),
                f"--lr {' '.join(map(str, args.lr))}: give distinct values (one lr, or a grid of "
                "two or more).",
            ),
        ]
        if broken := next((message for holds, message in rules if not holds), None):
            raise ReproduceError(broken)
        # the other lrs of a grid: check_plan checks every run's flags before anything trains
        base = cfg.check_config(
            cfg.config_from_args(argparse.Namespace(**vars(args) | {"lr": args.lr[0]}))
        )
        configs = plan(
            base,
            side_info_kinds(base, args.side_info_kinds),
            args.seeds,
            out,
            tuple(args.lr),
            args.fixed_split_seed,
        )
        check_plan(configs)
        run_dirs = train_all(configs)
    except (
        ReproduceError,
        train.TrainError,
        cfg.ConfigError,
        cfg.RunDirError,
        dsio.DatasetError,
        splits.SplitError,
        AudioError,
        OutputError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return print_tables(run_dirs, args.format, out / REPORT_FILE)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
