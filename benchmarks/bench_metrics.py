"""Benchmark of metrics.py on MSD-shaped random data (paper Table 1: 1,126 labels; a few thousand
test tracks).

Prints, for annotation_metrics + retrieval_metrics together:
- the speedup over the per-row scikit-learn loop (roc_auc_score + average_precision_score on every
  defined track,
  then on every defined label; target >= 20x),
- the time relative to the floor, one argsort of the score matrix per orientation
  (np.argsort(scores, axis=1) + np.argsort(scores, axis=0); target <= 1.5x: the metrics sort the
  values once per orientation, search the positives in them and re-rank only each row's top K),
- the largest absolute difference from scikit-learn over every per-row / per-column AUC and AP
  (target <= 1e-9),
  and, for information, the largest difference of AP@K from a plain Python loop of the ml_metrics
      ``apk``.
Each target line ends in PASS or MISS.  Timings are the best of --repeats runs (the sklearn loop
                                        runs once).
The exit status is 1 when the difference target is missed (a correctness failure); timing misses
exit 0 unless --strict, since timings on a shared machine are noisy.

    python benchmarks/bench_metrics.py [--tracks 4000] [--labels 1126] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import metrics  # noqa: E402  (after the path set-up above)

SPEEDUP_TARGET = 20.0
FLOOR_TARGET = 1.5
DIFF_TARGET = 1e-9


def make_data(
    n_tracks: int, n_labels: int, decimals: int, positive_rate: float, empty_rows: int, seed: int
):
    """Random scores rounded to `decimals` (many ties) and sparse binary labels with some all-zero
    rows."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(-1.0, 1.0, size=(n_tracks, n_labels)), decimals)
    labels = rng.random((n_tracks, n_labels)) < positive_rate
    # Make the labels weakly predictable, so that the metrics are not all ~0.5.
    scores = np.round(scores + 0.3 * labels, decimals)
    labels[rng.choice(n_tracks, size=min(empty_rows, n_tracks), replace=False)] = False
    return scores, labels


def best_time(func, repeats: int) -> float:
    """Smallest wall time of `repeats` calls of func()."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def sklearn_rows(scores: np.ndarray, labels: np.ndarray):
    """Per-row scikit-learn AUC and AP (NaN on undefined rows): the baseline loop."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    auc = np.full(scores.shape[0], np.nan)
    ap = np.full(scores.shape[0], np.nan)
    for i in range(scores.shape[0]):
        if 0 < labels[i].sum() < labels.shape[1]:
            auc[i] = roc_auc_score(labels[i], scores[i])
            ap[i] = average_precision_score(labels[i], scores[i])
    return auc, ap


def apk_loop(scores_row: np.ndarray, labels_row: np.ndarray, k: int) -> float:
    """The ml_metrics apk on one row: ranks by descending score, ties by lower column index (stable
    sort)."""
    predicted = np.argsort(-scores_row, kind="stable")[:k]
    actual = set(np.flatnonzero(labels_row))
    hits, total = 0, 0.0
    for rank, label in enumerate(predicted, start=1):
        if label in actual:
            hits += 1
            total += hits / rank
    return total / min(len(actual), k)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run(args) -> dict:
    scores, labels = make_data(
        args.tracks, args.labels, args.decimals, args.positive_rate, args.empty_rows, args.seed
    )

    def ours():
        metrics.annotation_metrics(scores, labels)
        metrics.retrieval_metrics(scores, labels)

    def floor():
        np.argsort(scores, axis=1)
        np.argsort(scores, axis=0)

    ours()  # warm-up (imports, page faults)
    t_ours = best_time(ours, args.repeats)
    t_floor = best_time(floor, args.repeats)

    start = time.perf_counter()
    auc_i, ap_i = sklearn_rows(scores, labels)
    auc_l, ap_l = sklearn_rows(scores.T, labels.T)
    t_loop = time.perf_counter() - start

    rows = metrics._fast_row_metrics(scores, labels, ks=metrics.DEFAULT_KS)
    cols = metrics._fast_row_metrics(np.ascontiguousarray(scores.T), np.ascontiguousarray(labels.T))
    diffs = [
        np.nanmax(np.abs(rows["AUC"] - auc_i)),
        np.nanmax(np.abs(rows["AP"] - ap_i)),
        np.nanmax(np.abs(cols["AUC"] - auc_l)),
        np.nanmax(np.abs(cols["AP"] - ap_l)),
    ]
    same_nan = all(
        np.array_equal(np.isnan(a), np.isnan(b))
        for a, b in [
            (rows["AUC"], auc_i),
            (rows["AP"], ap_i),
            (cols["AUC"], auc_l),
            (cols["AP"], ap_l),
        ]
    )
    max_diff = float(max(diffs)) if same_nan else float("inf")

    check_rows = np.flatnonzero(metrics.defined_rows(labels))[: args.apk_rows]
    apk_diff = 0.0
    for k in metrics.DEFAULT_KS:
        reference = np.array([apk_loop(scores[i], labels[i], k) for i in check_rows])
        apk_diff = max(
            apk_diff, float(np.max(np.abs(rows[f"P@{k}"][check_rows] - reference), initial=0.0))
        )

    return {
        "shape": list(scores.shape),
        "decimals": args.decimals,
        "positive_rate": args.positive_rate,
        "skipped_tracks": int(np.sum(~metrics.defined_rows(labels))),
        "skipped_labels": int(np.sum(~metrics.defined_rows(labels.T))),
        "seconds_ours": t_ours,
        "seconds_floor": t_floor,
        "seconds_sklearn_loop": t_loop,
        "speedup": t_loop / t_ours,
        "floor_ratio": t_ours / t_floor,
        "max_abs_diff_sklearn": max_diff,
        "max_abs_diff_apk_loop": apk_diff,
        "apk_rows_checked": len(check_rows),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tracks", type=int, default=4000, help="number of tracks (rows) (default: 4000)"
    )
    parser.add_argument(
        "--labels", type=int, default=1126, help="number of labels (columns) (default: 1126, MSD)"
    )
    parser.add_argument(
        "--decimals",
        type=int,
        default=2,
        help="round scores to this many decimals, for ties (default: 2)",
    )
    parser.add_argument(
        "--positive-rate",
        type=float,
        default=0.025,
        help="fraction of positive labels (default: 0.025)",
    )
    parser.add_argument(
        "--empty-rows", type=int, default=50, help="tracks made all-negative (default: 50)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timing repeats, best kept (default: 5)"
    )
    parser.add_argument(
        "--apk-rows",
        type=int,
        default=300,
        help="rows checked against the Python apk loop (default: 300)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the results to this JSON file (default: none)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 on a timing MISS too (default: off)"
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.tracks < 1 or args.labels < 2 or args.repeats < 1:
        print("error: --tracks must be >= 1, --labels >= 2 and --repeats >= 1", file=sys.stderr)
        return 2
    result = run(args)
    speed_ok = result["speedup"] >= SPEEDUP_TARGET
    floor_ok = result["floor_ratio"] <= FLOOR_TARGET
    diff_ok = (
        result["max_abs_diff_sklearn"] <= DIFF_TARGET
        and result["max_abs_diff_apk_loop"] <= DIFF_TARGET
    )
    n, m = result["shape"]
    print(
        f"data: {n} x {m} scores rounded to {args.decimals} decimals, {args.positive_rate:.1%} "
        "positives, "
        f"{result['skipped_tracks']} tracks and {result['skipped_labels']} labels skipped"
    )
    print(f"metrics.py (annotation + retrieval): {result['seconds_ours'] * 1e3:9.1f} ms")
    print(f"floor (argsort axis=1 + axis=0):     {result['seconds_floor'] * 1e3:9.1f} ms")
    print(f"scikit-learn per-row loop:           {result['seconds_sklearn_loop'] * 1e3:9.1f} ms")
    print(
        f"speedup over the loop: {result['speedup']:8.1f}x   (target >= {SPEEDUP_TARGET:g}x)  "
        f"{verdict(speed_ok)}"
    )
    print(
        f"time / floor:          {result['floor_ratio']:8.2f}x   (target <= {FLOOR_TARGET:g}x)   "
        f"{verdict(floor_ok)}"
    )
    print(
        f"max |ours - sklearn|:  {result['max_abs_diff_sklearn']:.2e}   (target <= "
        f"{DIFF_TARGET:g}; "
        f"AP@K vs Python loop on {result['apk_rows_checked']} rows: "
        f"{result['max_abs_diff_apk_loop']:.2e})  "
        f"{verdict(diff_ok)}"
    )
    result.update({"pass_speedup": speed_ok, "pass_floor": floor_ok, "pass_diff": diff_ok})
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not diff_ok or (args.strict and not (speed_ok and floor_ok)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
