"""python -m demo: build the synthetic demo corpus (demo/build.py).

python -m demo --out data/demo --seed 0 [--tracks 1200] [--seconds 7] [--jobs N] [--force]
[--no-progress]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dataset_dir import DatasetError, format_summary
from demo.build import DEFAULT_OUT, DEFAULT_SECONDS, DEFAULT_TRACKS, DemoError, build_demo
from fileio import OutputError
from preprocess.frontend import AudioError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Build the synthetic demo corpus (41 genres described by 20 OpenMIC "
        "instruments) with audio, "
        "annotations, side information and the mel store. Reuses a finished corpus with the same "
        "parameters, resumes an interrupted one, and refuses a non-empty folder that it did not "
        "make; a corpus of other parameters is replaced only with --force.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="dataset directory to write.")
    parser.add_argument(
        "--seed", type=int, default=0, help="corpus seed (labels, arrangements, annotations)."
    )
    parser.add_argument("--tracks", type=int, default=DEFAULT_TRACKS, help="number of tracks.")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="length of every clip in seconds."
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for synthesis and the mel store.",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a corpus of other parameters, or rebuild a finished one; deletes only the "
        "demo's own files (splits/ and other files stay).",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars.")
    return parser


def format_build(summary: dict) -> str:
    """Human-readable lines: counts, dropped genres, build time."""
    demo = summary["demo"]
    dropped = sorted({genre for lost in summary["dropped_genres"].values() for genre in lost})
    lines = [
        format_summary(summary),
        f"  seed {demo['seed']}, {demo['tracks']} tracks x {demo['seconds']} s, "
        f"{len(summary['instruments'])} "
        "instruments, genres.csv + demo_truth.csv written",
        f"  genres dropped from instrument side information: {', '.join(dropped) or 'none'}",
    ]
    if "build" in summary:
        build = summary["build"]
        lines.append(
            f"  built in {build['seconds']} s with {build['jobs']} job(s): {build['rendered']} "
            "rendered, "
            f"{build['reused']} reused"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = build_demo(
            args.out,
            seed=args.seed,
            tracks=args.tracks,
            seconds=args.seconds,
            jobs=args.jobs,
            progress=not args.no_progress,
            force=args.force,
        )
    except (DemoError, DatasetError, OutputError, AudioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_build(summary))
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("dataset", "tracks", "labels", "positives", "label_cardinality")
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
