"""Make a zero-shot split file (paper Sec. 3.2, Figure 2 (c)) and print / save its Table 1
statistics.

    python -m splits.make --dataset demo     # data/demo/annotations.csv ->
                                             data/demo/splits/split_seed0.json
    python -m splits.make --annotations FILE.csv --out FILE.json [--seed 0] [--unseen-fraction 0.2]
        ...

Writes the split JSON and, beside it, <name>.stats.json (splits/README.md has the algorithm and both
formats).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import splits
from dataset_dir import annotations_path, dataset_name, read_annotations, resolve_dataset_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m splits.make",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Split labels into seen (X) / unseen (Y) and tracks into groups A / B / C with "
        "train/valid "
        "parts (Choi et al. 2019, Sec. 3.2), seeded; see splits/README.md.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--annotations",
        type=Path,
        help="CSV with header track_id,label, one row per positive pair.",
    )
    source.add_argument(
        "--dataset",
        help="demo | fma | msd (data/<name>) or a dataset directory: reads "
        "<dir>/annotations.csv and writes <dir>/splits/split_seed{seed}.json unless --out is "
        "given.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="split JSON to write (required with --annotations); "
        "statistics go to <out without .json>.stats.json.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the label shuffle and the train/valid shuffles.",
    )
    parser.add_argument(
        "--unseen-fraction",
        type=float,
        default=0.2,
        help="fraction of labels held out as unseen (Y); seen = int(n_labels * (1 - fraction)).",
    )
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="fraction of each of A, B, A+B kept "
        "for validation; train = int(n_tracks * (1 - fraction)).",
    )
    return parser


def run(args) -> dict:
    """Make, save and print one split; returns its statistics."""
    name = None
    if args.dataset is not None:
        dataset_dir = resolve_dataset_dir(args.dataset, must_exist=True)
        annotations_csv = annotations_path(dataset_dir)
        name = dataset_name(dataset_dir)
        out = args.out or splits.default_split_path(dataset_dir, args.seed)
    elif args.out is None:
        raise splits.SplitError("--out is required with --annotations (the split JSON to write).")
    else:
        annotations_csv = args.annotations
        out = args.out
    start = time.perf_counter()
    annotations = read_annotations(annotations_csv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", splits.SplitWarning)
        split, stats = splits.make_split_with_statistics(
            annotations,
            args.seed,
            args.unseen_fraction,
            args.valid_fraction,
            source=str(annotations_csv),
        )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    refuse_other_split(Path(out), split)
    splits.save_split(split, out)
    stats_file = splits.save_statistics(stats, splits.stats_path(out))
    print(splits.format_statistics(stats, splits.paper_statistics(name)))
    print(f"wrote {out} and {stats_file} ({time.perf_counter() - start:.1f} s)")
    return stats


def refuse_other_split(path: Path, split: dict) -> None:
    """SplitError when `path` exists and holds anything but this very split (the same split may be
    written again): runs trained on a split refuse it once it has changed."""
    if not path.exists() or (
        path.is_file() and path.read_bytes() == splits.format_split(split).encode()
    ):
        return
    try:
        old = splits.load_split(path)
    except splits.SplitError:
        raise splits.SplitError(
            f"{path} exists and is not a split file: refusing to overwrite it. Pass another --out."
        ) from None
    differ = [
        f"--{key.replace('_', '-')} {old[key]} (asked: {split[key]})"
        for key in ("seed", "unseen_fraction", "valid_fraction")
        if old[key] != split[key]
    ]
    if old["annotations_sha256"] != split["annotations_sha256"]:
        differ.append("the annotations it was made from (if they are gone, delete the file first)")
    raise splits.SplitError(
        f"{path} holds another split ({'; '.join(differ) or 'other content'}): refusing to "
        "overwrite it, since the runs trained on it would no longer load. Pass --out NEW.json."
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as exc:  # DatasetError, SplitError and OutputError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
