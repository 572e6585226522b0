"""How long does making a split take on MSD-shaped annotations, relative to just reading the CSV?

Generates random annotations shaped like the paper's MSD set (406,409 tracks with 18-character
MSD-style ids, 1,126 labels with Zipf-like frequencies, 1 + Poisson(1.5) labels per track, about a
million positive rows) into a temporary CSV, then times (best of --repeats):

    read:   pandas.read_csv(csv, dtype=str)                      the floor: parsing the file
    split:  read_annotations + make_split_with_statistics + save_split + save_statistics
            (everything `python -m splits.make` does)
    load:   load_split(split, annotations file), as every train.py and evaluate.py call does:
            "first" hashes the annotations (their canonical SHA-256), "repeated" finds the digest
            remembered beside the file (splits.annotations_file_sha256) -> target: repeated load
            <= 0.2 x first load

at full size and at one tenth. Prints split/read at both sizes and the growth factor of the split
time between them (10x the data -> ~10x the time when the work is linear; target: at most 2.6x the
time per doubling of the data, compounded: <= 23.9x for 10x). Usage:

    .venv/bin/python benchmarks/bench_splits.py [--tracks 406409] [--labels 1126] [--repeats 3]
        [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import splits  # noqa: E402
from dataset_dir import read_annotations  # noqa: E402

MSD_TRACKS = 406_409
MSD_LABELS = 1_126
LOAD_TARGET = 0.2  # repeated load / first load
DOUBLING_TARGET = 2.6  # at most this factor of time per doubling of the data (bench_scale's rule)


def msd_like_annotations(
    n_tracks: int, n_labels: int, seed: int = 0, mean_extra: float = 1.5
) -> pd.DataFrame:
    """Random (track_id, label) pairs: label k drawn with probability proportional to 1 / (k + 1)
    (Zipf-like), 1 + Poisson(mean_extra) draws per track (repeats merged), MSD-style ids 'TR' + 16
    hex digits."""
    rng = np.random.default_rng(seed)
    per_track = 1 + rng.poisson(mean_extra, size=n_tracks)
    weights = 1.0 / np.arange(1, n_labels + 1)
    label_codes = rng.choice(n_labels, size=int(per_track.sum()), p=weights / weights.sum())
    track_codes = np.repeat(np.arange(n_tracks), per_track)
    digits = rng.integers(0, 16**8, size=(n_tracks, 2), dtype=np.int64)
    track_ids = np.array([f"TR{a:08X}{b:08X}" for a, b in digits], dtype=object)
    label_names = np.array([f"tag{k:04d}" for k in rng.permutation(n_labels)], dtype=object)
    frame = pd.DataFrame({"track_id": track_ids[track_codes], "label": label_names[label_codes]})
    return frame.drop_duplicates()


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n_tracks: int, n_labels: int, repeats: int, seed: int, folder: Path) -> dict:
    frame = msd_like_annotations(n_tracks, n_labels, seed)
    csv_path = folder / f"annotations_{n_tracks}.csv"
    frame.to_csv(csv_path, index=False)
    out = folder / f"split_{n_tracks}.json"

    def make():
        annotations = read_annotations(csv_path)
        split, stats = splits.make_split_with_statistics(
            annotations, seed=seed, source=str(csv_path)
        )
        splits.save_split(split, out)
        splits.save_statistics(stats, splits.stats_path(out))
        return stats

    stats = make()  # warm-up; also gives the sizes printed below
    read_s = best_time(lambda: pd.read_csv(csv_path, dtype=str, keep_default_na=False), repeats)
    split_s = best_time(make, repeats)
    remembered = csv_path.with_name(f".{csv_path.name}.sha256.json")

    def first_load():
        remembered.unlink(missing_ok=True)
        splits.load_split(out, csv_path)

    first_load_s = best_time(first_load, repeats)
    load_s = best_time(lambda: splits.load_split(out, csv_path), repeats)
    return {
        "tracks": n_tracks,
        "rows": len(frame),
        "read_s": read_s,
        "split_s": split_s,
        "first_load_s": first_load_s,
        "repeated_load_s": load_s,
        "stats": stats,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--tracks", type=int, default=MSD_TRACKS, help="tracks at full size (paper MSD: 406,409)"
    )
    parser.add_argument("--labels", type=int, default=MSD_LABELS, help="labels (paper MSD: 1,126)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timings per measurement (the best is kept)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random annotations and of the split"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_tracks in (args.tracks // 10, args.tracks):
            result = measure(n_tracks, args.labels, args.repeats, args.seed, Path(tmp))
            results.append(result)
            ins = result["stats"]["instances"]
            print(
                f"{n_tracks:>8} tracks {result['rows']:>9} rows: read {result['read_s']:.2f} s, "
                f"split {result['split_s']:.2f} s ({1e6 * result['split_s'] / result['rows']:.2f} "
                "us/row), "
                f"split/read {result['split_s'] / result['read_s']:.2f} "
                f"(A {ins['A']}, B {ins['B']}, C {ins['C']}, dropped {ins['dropped']})"
            )
            print(
                f"{'':>8} load_split with the annotations check: first {result['first_load_s']:.2f}"
                f" s (hashes them), repeated {result['repeated_load_s']:.2f} s (remembered digest)"
            )
    small, full = results
    growth = full["split_s"] / small["split_s"]
    growth_target = DOUBLING_TARGET ** np.log2(full["rows"] / small["rows"])
    load_ratio = full["repeated_load_s"] / full["first_load_s"]
    print(
        f"split time growth for {full['rows'] / small['rows']:.1f}x the rows: "
        f"{growth:.1f}x (read: "
        f"{full['read_s'] / small['read_s']:.1f}x); "
        f"split/read ratio {small['split_s'] / small['read_s']:.2f} at 1/10 size, "
        f"{full['split_s'] / full['read_s']:.2f} at full size"
    )
    checks = {
        "growth": (growth, "<=", growth_target, bool(growth <= growth_target)),
        "repeated_load_over_first": (
            load_ratio,
            "<=",
            LOAD_TARGET,
            bool(load_ratio <= LOAD_TARGET),
        ),
    }
    for name, (value, relation, target, ok) in checks.items():
        print(f"{name}: {value:.3f} (target {relation} {target:g})  {'PASS' if ok else 'MISS'}")
    if args.json:
        for result in results:
            result.pop("stats")
        record = {"sizes": results, **{name: check[0] for name, check in checks.items()}}
        record["pass"] = {name: check[3] for name, check in checks.items()}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
