"""Our zero-shot split statistics of an MTG-Jamendo dataset directory, one CSV row in the layout of
the paper's Table 1 (reference/paper_split_stats.csv) plus the dropped tracks, the seed and the
annotations' sha256.

    python -m preprocess.jamendo_stats --dataset DIR --name jamendo-genre --out
        reference/jamendo_genre_split_stats.csv

DIR is any dataset directory (e.g. one built with `python -m preprocess.jamendo ...
--metadata-only`); the split is made in memory exactly as `python -m splits.make --dataset DIR
--seed S` makes it (nothing is written into DIR).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

import dataset_dir as ds
import splits
from fileio import atomic_write_text

COLUMNS = (
    "dataset",
    "seen_labels_X",
    "unseen_labels_Y",
    "labels_total",
    "A",
    "B",
    "C",
    "instances_total",
    "dropped",
    "seed",
    "annotations_sha256",
)


def table1_row(name: str, stats: dict) -> dict:
    """splits.split_statistics output -> one row of COLUMNS."""
    labels, instances = stats["labels"], stats["instances"]
    return {
        "dataset": name,
        "seen_labels_X": labels["X"],
        "unseen_labels_Y": labels["Y"],
        "labels_total": labels["total"],
        "A": instances["A"],
        "B": instances["B"],
        "C": instances["C"],
        "instances_total": instances["total"],
        "dropped": instances["dropped"],
        "seed": stats["seed"],
        "annotations_sha256": stats["annotations_sha256"],
    }


def split_stats_row(dataset_dir, name: str, seed: int = 0) -> tuple[dict, dict]:
    """(Table 1 row, full statistics) of the seed-`seed` split of <dataset_dir>/annotations.csv."""
    path = ds.annotations_path(ds.resolve_dataset_dir(dataset_dir, must_exist=True))
    _, stats = splits.make_split_with_statistics(ds.read_annotations(path), seed, source=str(path))
    return table1_row(name, stats), stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.jamendo_stats",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Split statistics (paper Table 1 layout) of a dataset directory "
        "as one CSV row.",
    )
    parser.add_argument(
        "--dataset", required=True, help="dataset directory (its annotations.csv is split)"
    )
    parser.add_argument(
        "--name", required=True, help="value of the CSV's dataset column, e.g. jamendo-genre"
    )
    parser.add_argument("--out", required=True, help="CSV file to write (header + one row)")
    parser.add_argument(
        "--seed", type=int, default=0, help="split seed (the default split of train.py is 0)"
    )
    args = parser.parse_args(argv)
    try:
        row, stats = split_stats_row(args.dataset, args.name, args.seed)
        text = pd.DataFrame([row], columns=list(COLUMNS)).to_csv(index=False)
        atomic_write_text(args.out, text)
    except (ValueError, OSError) as exc:  # DatasetError, SplitError and OutputError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(splits.format_statistics(stats))
    print(text, end="")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
