"""Several runs as one result, and two systems compared (the reproduction protocol).

Aggregation (evaluate.py --collect). Runs whose config.json differ only in their seeds (the
init/sampling `seed` and the split) are repeated measurements of one experiment: per result record
and metric we report
    mean, sample standard deviation s (ddof=1), n,
    ci95 = mean +- t(0.975, n-1) * s / sqrt(n): the 95% confidence interval of the mean (where our
        mean over many seeds would lie),
    pi95 = mean +- t(0.975, n-1) * s * sqrt(1 + 1/n): the 95% prediction interval of one new run
        (where a single run, such as each published number, would land),
both clipped to the metrics' range [0, 1]. Runs that differ in anything else (epochs, which weights
were kept, ...) are other experiments: their records stay apart, told apart by a short "variant"
label naming the settings that differ ("epochs=20 weights=last"); settings a model does not use
(config.UNUSED_SETTINGS) are ignored. An aggregated record holds the key fields of a result record
(protocol.KEY_FIELDS) plus
    variant, n_runs, runs (the run directories), mean / std / ci95 / pi95 ({metric: value}; ci95 and
        pi95 values [low, high]; std, ci95 and pi95 null for n = 1), evaluated / skipped (one count
        per run);
    lr_selection {"chosen", "by": "val_loss", "candidates": {lr: mean best val_loss}} and lr, when
        the collected runs hold a learning-rate grid (runs that differ only in seed and lr): the lr
        chosen on validation data (train_summary.json), never on test;
    beats_prior [per run: its best val_loss is below the per-label prior's], classification runs.

Only finished runs (with train_summary.json) are collected: unfinished ones are left out with a
note, or with --include-unfinished kept apart (variant "training=unfinished"). Each run's records
come from protocol.gather_runs, which refuses a run whose data changed since training (a dataset
rebuilt in place), so runs on different data never meet here.

Paired comparison across seeds (evaluate.py --compare FOLDER_A FOLDER_B, each a folder of seed runs
<out>/<kind>/seed<s> as reproduce.py writes them). The runs of seed s in A and in B were trained on
the same split (the same file: checksums) and differ only in the compared setting; per setup and
metric, over the n seeds: mean_diff = mean of A - B, ci95 = the paired t-interval of that mean, and
p_sign_flip = the exact two-sided sign-flip permutation p-value (sign_flip_p). Training and split
luck are inside both.

Paired bootstrap within one trained pair (evaluate.py --compare RUN_A RUN_B). Two systems scored on
the same test setup and split differ, per metric, by mean(A's values) - mean(B's values) over the
rows (test tracks for annotation, test labels for retrieval) defined in both; its 95% interval is
the 2.5th and 97.5th percentile of that difference over bootstrap resamples of the rows (drawn with
replacement, the same rows for A and B: "paired"), seeded. It says nothing about another training
run. The per-row values come from each run's scores/<setup>.npz (evaluate.py --save-scores) and
metrics.py's definitions.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

import config
import metrics
from protocol import (
    EXTERNAL_FILE,
    KEY_FIELDS,
    RESULTS_FILE,
    SCORES_DIR,
    EvaluationError,
    gather_runs,
    is_external,
    read_config,
    read_json_object,
)
from tables import METRIC_PATTERN

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
MIN_RESAMPLES = 1000  # fewer: the percentiles of a 95% interval rest on a handful of resamples
MAX_SIGN_FLIP_PAIRS = 20  # the exact sign-flip p enumerates 2^n sums
DEFAULT_BOOTSTRAP_SEED = 0
SEED_FIELDS = ("seed", "split_seed", "split")  # what the runs of one experiment may change
# the record's key shows them: not in the label
IN_RECORD_KEY = ("model", "side_info", "train_setup", "external")
COUNT_FIELDS = ("evaluated", "skipped")


# ---- Which runs belong together ------------------------------------------------------------------
def run_identity(run_dir) -> tuple[dict, tuple]:
    """(settings, seeds) of a run directory. settings: what makes it another experiment, i.e.
    config.json's training choices except the seeds and the fields that change nothing in the model,
    plus the dataset directory (config's "dataset" may spell it as a name or a path) and whether
    training has finished ("training": finished / unfinished). seeds: (init seed, the split file's
    sha256). An external model's folder: settings (its name, dataset directory, the annotations it
    was scored on, --allow-missing), seeds (None, its split). Runs on other data than their dataset
    directory holds now never get here: protocol.gather_runs refuses them."""
    run_dir = Path(run_dir)
    if is_external(run_dir):
        meta = read_json_object(run_dir / EXTERNAL_FILE)
        split = meta.get("split") if isinstance(meta.get("split"), dict) else {}
        settings = {
            "external": meta.get("name"),
            "dataset_dir": meta.get("dataset_dir"),
            "annotations": meta.get("annotations_sha256"),
            "allow_missing": meta.get("allow_missing"),
        }
        # no split recorded: never a repeat
        return settings, (None, split.get("sha256") or str(run_dir))
    meta = read_config(run_dir)
    unused = config.UNUSED_SETTINGS.get(meta["config"]["model"], {})
    dropped = set(SEED_FIELDS + config.NO_EFFECT_FIELDS + ("dataset", *unused))
    settings = {key: value for key, value in meta["config"].items() if key not in dropped}
    settings["dataset_dir"] = str(Path(meta["dataset_dir"]).resolve())
    settings["training"] = "unfinished" if is_unfinished(run_dir) else "finished"
    return settings, (
        meta["config"].get("seed"),
        meta["checksums"].get("split") or meta["split_path"],
    )


def is_unfinished(run_dir) -> bool:
    """A training run (config.json) without train_summary.json: still training, or interrupted (an
    external model's result folder is never unfinished; a folder that is no run is none)."""
    run_dir = Path(run_dir)
    return (
        (run_dir / config.CONFIG_FILE).is_file()
        and not is_external(run_dir)
        and not (run_dir / config.SUMMARY_FILE).is_file()
    )


def variant_labels(settings: dict[Path, dict]) -> dict[Path, str]:
    """A label per run naming the settings that differ between the collected runs ("" when none do),
    leaving out those the records' key already shows (model, side information, training setup). Our
    runs and external models' folders are labelled apart (they have other settings); "?" is a
    setting a run's config.json does not record (written before the flag existed), "default" one it
    records as null."""
    labels = {}
    for model in {s.get("model") for s in settings.values()}:  # external models: None
        family = {run: s for run, s in settings.items() if s.get("model") == model}
        names = dict.fromkeys(key for s in family.values() for key in s if key not in IN_RECORD_KEY)
        differing = [
            key for key in names if len({json.dumps(s.get(key, "?")) for s in family.values()}) > 1
        ]
        show = lambda value: "default" if value is None else str(value)  # noqa: E731
        labels.update(
            {
                run: " ".join(f"{key}={show(s.get(key, '?'))}" for key in differing)
                for run, s in family.items()
            }
        )
    return labels


# ---- Aggregation ---------------------------------------------------------------------------------
def mean_std_ci(
    values, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float | None, list[float] | None, list[float] | None]:
    """Mean, sample standard deviation s (ddof=1), the 95% confidence interval of the mean, mean +-
    t(0.975, n-1) * s / sqrt(n), and the 95% prediction interval of one new run, mean +- t(0.975,
    n-1) * s * sqrt(1 + 1/n), of one metric over n runs; both intervals clipped to `bounds` (the
    metrics' range). std and intervals are None for n = 1 (one run says nothing about the
    spread)."""
    values = np.asarray(values, dtype=np.float64)  # (n,)
    mean = float(values.mean())
    n = len(values)
    if n < 2:
        return mean, None, None, None
    std = float(values.std(ddof=1))
    # here, not at import: scipy.stats costs ~1 s, and every evaluate.py command imports us
    from scipy import stats

    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    intervals = [
        [max(bounds[0], mean - half), min(bounds[1], mean + half)]
        for half in (t * std / math.sqrt(n), t * std * math.sqrt(1 + 1 / n))
    ]
    return mean, std, *intervals


def aggregate_records(records: list[dict], variant: str = "", runs=()) -> dict:
    """One aggregated record from the records of one setup in n runs (the same key; `runs` their
    directories). A metric that is null (no defined row) in any run is null in the aggregate."""
    keys = {tuple(r.get(k) for k in KEY_FIELDS) for r in records}
    if len(keys) != 1:
        raise EvaluationError(
            f"cannot aggregate records of different setups: {sorted(keys, key=str)}"
        )
    names = dict.fromkeys(key for r in records for key in r if METRIC_PATTERN.match(key))
    out = {
        **{k: records[0].get(k) for k in KEY_FIELDS},
        "variant": variant,
        "n_runs": len(records),
        "runs": [str(run) for run in runs],
        "mean": {},
        "std": {},
        "ci95": {},
        "pi95": {},
    }
    for name in names:
        values = [r.get(name) for r in records]
        summary = (None,) * 4 if any(v is None for v in values) else mean_std_ci(values)
        out["mean"][name], out["std"][name], out["ci95"][name], out["pi95"][name] = summary
    return {**out, **{count: [r.get(count) for r in records] for count in COUNT_FIELDS}}


def aggregate_runs(per_run: dict[Path, list[dict]]) -> tuple[list[dict], list[str]]:
    """Aggregated records of several runs: the records of runs with the same settings (run_identity)
    and the same key are one group. Two runs of one group with the same seeds are an error (a repeat
    is not a new sample)."""
    identity = {run: run_identity(run) for run in per_run}
    labels = variant_labels({run: settings for run, (settings, _) in identity.items()})
    experiment = {
        run: json.dumps(settings, sort_keys=True) for run, (settings, _) in identity.items()
    }
    seen_seeds: dict[tuple, Path] = {}
    for run, (_, seeds) in identity.items():
        if (twin := seen_seeds.setdefault((experiment[run], seeds), run)) != run:
            raise EvaluationError(
                f"runs {twin} and {run} have the same settings and the same seeds (seed "
                f"{seeds[0]}, the same split): a repeated run is no new sample. Collect one of "
                "them, or use --per-run to list each run."
            )
    groups: dict[tuple, list[tuple[Path, dict]]] = {}
    for run, records in per_run.items():
        for record in records:
            if record["model"] == "classification":  # results.json of old runs name one
                record = {**record, "side_info": None}
            key = (*(record.get(k) for k in KEY_FIELDS), experiment[run])
            groups.setdefault(key, []).append((run, record))
    summaries = {  # {} for a run without one (unfinished, or an external model)
        run: read_json_object(path) if (path := run / config.SUMMARY_FILE).is_file() else {}
        for run in per_run
    }
    selections = lr_selections(identity, summaries)
    out = []
    for members in groups.values():
        runs = [run for run, _ in members]
        record = aggregate_records([r for _, r in members], labels[runs[0]], runs)
        if runs[0] in selections:
            record.update(lr=identity[runs[0]][0]["lr"], lr_selection=selections[runs[0]])
        if all("prior_val_loss" in summaries[run] for run in runs):
            record["beats_prior"] = [
                summaries[run]["best_val_loss"] < summaries[run]["prior_val_loss"] for run in runs
            ]
        out.append(record)
    notes = (
        [
            f"{len(per_run)} runs -> {len(out)} aggregated records (runs that differ only in their "
            "seeds are "
            f"one group; n = runs per group, from {min(r['n_runs'] for r in out)} to "
            f"{max(r['n_runs'] for r in out)})."
        ]
        if out
        else []
    )
    if singles := sum(r["n_runs"] == 1 for r in out):
        notes.append(
            f"{singles} records come from one run (n = 1): their std, ci95 and pi95 are null; "
            "train more "
            "seeds "
            "(train.py --seed / --split-seed) for an interval."
        )
    if any(labels.values()):
        notes.append(
            "runs differ in more than their seeds; 'variant' names the settings that differ: "
            + "; ".join(sorted(set(filter(None, labels.values()))))
        )
    return out, notes


def lr_selections(identity: dict, summaries: dict[Path, dict]) -> dict[Path, dict]:
    """{run: its lr_selection} for the runs of every family that differs only in seed and lr and
    holds two lrs or more, all finished and every lr on the same seeds and splits (identity:
    run_identity of each run; summaries: their train_summary.json): the mean best validation loss of
    each lr's runs, and the lr with the lowest. Validation data only: the test setups never choose a
    setting."""
    families: dict[str, dict[float, list[Path]]] = {}
    for run, (settings, _) in identity.items():
        if "lr" in settings:
            rest = json.dumps({k: v for k, v in settings.items() if k != "lr"}, sort_keys=True)
            families.setdefault(rest, {}).setdefault(settings["lr"], []).append(run)
    selections = {}

    def comparable(grid: dict[float, list[Path]]) -> bool:  # finished, every lr on the same seeds
        seeds = {json.dumps(sorted(identity[run][1] for run in runs)) for runs in grid.values()}
        runs = sum(grid.values(), [])
        return (
            len(grid) > 1 and len(seeds) == 1 and all("best_val_loss" in summaries[r] for r in runs)
        )

    for grid in filter(comparable, families.values()):
        losses = {
            lr: float(np.mean([summaries[run]["best_val_loss"] for run in runs]))
            for lr, runs in sorted(grid.items())
        }
        selections.update(
            dict.fromkeys(
                [run for runs in grid.values() for run in runs],
                {
                    "chosen": min(losses, key=losses.get),
                    "by": "val_loss",
                    "candidates": {str(lr): loss for lr, loss in losses.items()},
                },
            )
        )
    return selections


def label_runs(per_run: dict[Path, list[dict]]) -> tuple[list[dict], list[str]]:
    """Each run's records as they are (evaluate.py --collect --per-run); those of runs that share a
    setup (e.g. two seeds of one setup) get a "run" field, the run directory's name, so that the
    tables show them side by side; those of an unfinished run its mark (unfinished_mark)."""
    key = lambda record: tuple(record.get(k) for k in KEY_FIELDS)  # noqa: E731
    runs_of = Counter(k for records in per_run.values() for k in {key(r) for r in records})
    shared = {run for run, records in per_run.items() if any(runs_of[key(r)] > 1 for r in records)}
    notes = (
        [
            f"{len(shared)} runs give results for the same setups; their records are told apart by "
            "a 'run' "
            f"field: {', '.join(sorted(run.name for run in shared))}."
        ]
        if shared
        else []
    )
    return [
        {**r, **({"run": run.name} if run in shared else {}), **unfinished_mark(run)}
        for run, records in per_run.items()
        for r in records
    ], notes


def unfinished_mark(run_dir) -> dict:
    """The "variant" that marks the records of an unfinished run in the tables."""
    return {"variant": "training=unfinished"} if is_unfinished(run_dir) else {}


def collect(
    run_dirs,
    force: bool = False,
    aggregated: bool = False,
    include_unfinished: bool = False,
    **evaluate_kwargs,
):
    """Records of several runs (protocol.gather_runs): with `aggregated`, runs that differ only in
    their seeds become one record of each metric's mean, std and 95% interval (aggregate_runs);
    otherwise each run's records, those of runs that share a setup told apart by a "run" field
    (label_runs). Unfinished runs (is_unfinished) are left out with a note, or with
    `include_unfinished` kept apart: their own rows, variant "training=unfinished". Returns
    (records, notes)."""
    unfinished = [] if include_unfinished else [run for run in run_dirs if is_unfinished(run)]
    per_run, notes = gather_runs(  # the unfinished ones left out before evaluating them
        [run for run in run_dirs if run not in unfinished], force, **evaluate_kwargs
    )
    if unfinished:
        notes.append(
            f"left out {len(unfinished)} unfinished run(s) (no {config.SUMMARY_FILE}: still "
            f"training, or interrupted): {', '.join(map(str, unfinished))}. Let them finish "
            "(train.py --run-dir resumes one), or pass --include-unfinished to see them apart."
        )
    records, more = (aggregate_runs if aggregated else label_runs)(per_run)
    return records, notes + more


# ---- Paired comparison across seeds --------------------------------------------------------------
def seed_runs(folder) -> dict[int, Path]:
    """{s: run directory} of a folder of seed runs (its seed<s>/ subfolders); {} for anything else
    (a run directory has a config.json)."""
    folder = Path(folder).expanduser().resolve()
    is_run = (folder / config.CONFIG_FILE).exists() or not folder.is_dir()
    subfolders = [] if is_run else [path for path in folder.iterdir() if path.is_dir()]
    found = (re.fullmatch(r"seed(\d+)", path.name) for path in subfolders)
    return {int(match[1]): folder / match[0] for match in found if match}


def compare_seeds(
    runs_a: dict[int, Path], runs_b: dict[int, Path], force: bool = False, **evaluate_kwargs
) -> tuple[list[dict], list[str]]:
    """Two systems, each a folder of seed runs ({s: run}), paired by seed: pair_check, then per
    (test, task, part) and metric both report, over the seeds where it is defined in both:
    n_pairs, mean_diff (mean of A - B), ci95 (paired t-interval, mean_std_ci) and p_sign_flip."""
    seeds = sorted(set(runs_a) & set(runs_b))
    if not 2 <= len(seeds) <= MAX_SIGN_FLIP_PAIRS:
        raise EvaluationError(
            f"--compare: A holds seed {sorted(runs_a)}, B seed {sorted(runs_b)}: {len(seeds)} "
            f"seeds in both; pairing by seed needs 2 to {MAX_SIGN_FLIP_PAIRS} (train the same "
            "--seeds for both)."
        )
    pairs = {s: (runs_a[s], runs_b[s]) for s in seeds}
    unpaired = " ".join(map(str, sorted(set(runs_a) ^ set(runs_b)))) or "none"
    notes = [
        f"A - B compares {pair_check(pairs)}, paired over seeds {' '.join(map(str, seeds))} "
        f"(seeds in one folder only, not compared: {unpaired})."
    ]
    per_run, more = gather_runs(
        [run for pair in pairs.values() for run in pair], force, **evaluate_kwargs
    )
    by_setup = {
        run: {(r["test"], r["task"], r.get("part", "all")): r for r in records}
        for run, records in per_run.items()
    }
    setups = set.intersection(*(set(records) for records in by_setup.values()))
    rows = []
    for test, task, part in sorted(setups):
        pair_records = [
            [by_setup[run][test, task, part] for run in pair] for pair in pairs.values()
        ]
        for metric in filter(METRIC_PATTERN.match, pair_records[0][0]):
            if diffs := [
                a[metric] - b[metric]
                for a, b in pair_records
                if None not in (a.get(metric), b.get(metric))
            ]:
                rows.append(
                    {
                        "train": pair_records[0][0]["train"],
                        "test": test,
                        "task": task,
                        "part": part,
                        "metric": metric,
                        "n_pairs": len(diffs),
                        "mean_diff": float(np.mean(diffs)),
                        "ci95": mean_std_ci(diffs, (-1.0, 1.0))[2],
                        "p_sign_flip": sign_flip_p(diffs),
                    }
                )
    return rows, more + notes


def pair_check(pairs: dict[int, tuple[Path, Path]]) -> str:
    """Each folder's runs differ only in their seeds, and the runs of one seed were trained on the
    same split (the same file, by its checksum) with the same init seed: an EvaluationError naming
    the difference otherwise. Returns the compared setting (what A's runs and B's differ in)."""
    identity = {run: run_identity(run) for pair in pairs.values() for run in pair}
    first = next(iter(pairs.values()))
    for s, pair in pairs.items():
        for side, run in enumerate(pair):
            if differences := _differences(identity[first[side]][0], identity[run][0]):
                raise EvaluationError(
                    f"{first[side]} and {run} differ in more than their seeds ({differences}): "
                    "one folder must hold one system."
                )
        if identity[pair[0]][1] != identity[pair[1]][1]:
            raise EvaluationError(
                f"seed {s}: {pair[0]} and {pair[1]} are no pair: (init seed, split checksum) "
                f"{identity[pair[0]][1]} -> {identity[pair[1]][1]}; paired runs share the init "
                "seed and the split file."
            )
    return _differences(identity[first[0]][0], identity[first[1]][0]) or "nothing"


def _differences(a: dict, b: dict) -> str:
    """The settings two dicts disagree on, as "key a -> b; ..." ("" when none; "-": a setting one of
    them does not record, or its model does not use)."""
    keys = sorted(k for k in {*a, *b} if a.get(k, "-") != b.get(k, "-"))
    return "; ".join(f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in keys)


def sign_flip_p(diffs) -> float:
    """Exact two-sided sign-flip permutation p-value of the mean of n paired differences: if A and
    B were exchangeable, each difference's sign would be a fair coin; p = the share of the 2^n sign
    assignments whose |mean| is at least the observed |mean| (the smallest p possible: 2 / 2^n)."""
    sums = np.zeros(1)
    for d in diffs:
        sums = np.concatenate([sums + d, sums - d])  # (2^k,) the sums of every assignment so far
    observed = abs(sum(diffs))
    # the same sum reached in another order may differ in its last bits: a tie, not less
    return float(np.mean(np.abs(sums) >= observed - 1e-12))


# ---- Paired bootstrap ----------------------------------------------------------------------------
def row_metrics(scores, labels, task: str) -> dict[str, np.ndarray]:
    """The value of each metric per test track (annotation: rows of the (n_tracks, n_labels) arrays)
    or per test label (retrieval: columns): metrics.roc_auc, average_precision and apk (P@K) of
    each, NaN where undefined (labels all 0 or all 1). metrics.annotation_metrics /
    retrieval_metrics are their means over the defined ones."""
    per_row = metrics.per_label_metrics if task == "retrieval" else metrics.per_track_metrics
    return per_row(scores, labels)


def paired_bootstrap(
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> tuple[dict[str, dict], int, int]:
    """Per metric of two systems' per-row values (row_metrics, the same rows in the same order): the
    means of A and B and A - B over the rows defined in both, and the 95% percentile interval of A -
    B over `resamples` resamples of those rows (each resample draws as many rows as there are, with
    replacement, for all metrics at once). Returns ({metric: {"a", "b", "diff", "ci95": [low,
    high]}}, rows used, rows left out)."""
    _check_resamples(resamples)
    names = [name for name in a if name in b]
    # (r,) defined in A and in B
    both = np.all([~np.isnan(a[n]) & ~np.isnan(b[n]) for n in names], axis=0)
    used = int(both.sum())
    if not used:
        raise EvaluationError(
            "no test row is defined in both runs (every track or label has all-0 or all-1 labels)"
        )
    diffs = np.stack([a[n][both] - b[n][both] for n in names])  # (k metrics, used)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(names)))
    for i in range(resamples):
        rows = rng.integers(0, used, size=used)  # (used,) rows drawn with replacement
        means[i] = diffs[:, rows].mean(axis=1)
    # (k,) each
    low, high = np.percentile(means, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)], axis=0)
    return (
        {
            name: {
                "a": float(a[name][both].mean()),
                "b": float(b[name][both].mean()),
                "diff": float(diffs[i].mean()),
                "ci95": [float(low[i]), float(high[i])],
            }
            for i, name in enumerate(names)
        },
        used,
        int(both.size - used),
    )


def compare(
    run_a,
    run_b,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    force: bool = False,
    **evaluate_kwargs,
) -> tuple[list[dict], list[str]]:
    """evaluate.py --compare: two folders of seed runs, compare_seeds; two run directories,
    compare_runs (evaluated first where they have no scores/ or their results.json is not current;
    a note names a run whose training has not finished)."""
    folders = [seed_runs(run_a), seed_runs(run_b)]
    if all(folders):
        return compare_seeds(*folders, force, **evaluate_kwargs)
    if any(folders):
        raise EvaluationError(
            f"--compare {run_a} {run_b}: give two run directories or two folders of seed runs "
            "(reproduce.py's OUT/<kind>, holding seed<s>/), not one of each."
        )
    _check_resamples(resamples)  # before any evaluation
    per_run, notes = gather_runs([run_a, run_b], force, **{**evaluate_kwargs, "save": True})
    rows, more = compare_runs(per_run, resamples, seed)
    unfinished = [
        f"{run}: training has not finished (no {config.SUMMARY_FILE}): compared as it is so far."
        for run in per_run
        if is_unfinished(run)
    ]
    return rows, notes + unfinished + more


def compare_runs(
    per_run: dict[Path, list[dict]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> tuple[list[dict], list[str]]:
    """Paired comparison of two runs (A, B: the dict's order) on every (test, task) both report
    (part "all"): one row per metric with A, B, A - B and its bootstrap interval (paired_bootstrap),
    from scores/<setup>.npz."""
    if len(per_run) != 2:
        raise EvaluationError(f"--compare needs two different run directories, got {len(per_run)}.")
    (run_a, records_a), (run_b, records_b) = per_run.items()

    def setups(records):
        return {(r["test"], r["task"]): r for r in records if r.get("part", "all") == "all"}

    setups_a, setups_b = setups(records_a), setups(records_b)
    if not (common := [key for key in setups_a if key in setups_b]):
        raise EvaluationError(f"{run_a} and {run_b} share no test setup to compare.")
    if {r["dataset"] for r in records_a + records_b} != {records_a[0]["dataset"]}:
        raise EvaluationError(
            f"{run_a} and {run_b} are results on different datasets: nothing is paired."
        )
    rows = []
    notes = []
    scores = {run: scores_by_test(run) for run in per_run}
    for test, task in common:
        a, b = _aligned_scores(run_a, scores[run_a], run_b, scores[run_b], test)
        values = {}
        for run, (score, label), record in (
            (run_a, a, setups_a[test, task]),
            (run_b, b, setups_b[test, task]),
        ):
            values[run] = row_metrics(score, label, task)
            _check_against_results(run, test, task, values[run], record)
        result, used, left_out = paired_bootstrap(values[run_a], values[run_b], resamples, seed)
        rows += [
            {
                "dataset": records_a[0]["dataset"],
                "test": test,
                "task": task,
                "metric": name,
                **value,
                "rows": used,
                "left_out": left_out,
                "resamples": resamples,
                "seed": seed,
                "run_a": str(run_a),
                "run_b": str(run_b),
            }
            for name, value in result.items()
        ]
        if left_out:
            notes.append(
                f"{test} {task}: {left_out} test {'tracks' if task == 'annotation' else 'labels'} "
                "left "
                "out (undefined in either run: their labels are all 0 or all 1)."
            )
    if missing := sorted(set(setups_a).symmetric_difference(setups_b)):
        notes.append(
            "setups only one run reports, not compared: "
            f"{', '.join(f'{t} {k}' for t, k in missing)}"
        )
    return rows, notes


def scores_by_test(run_dir: Path) -> dict[str, Path]:
    """{test setup: scores/<setup>.npz} of a run, by the test name each file stores."""
    found = {}
    for path in sorted((Path(run_dir) / SCORES_DIR).glob("*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            found[str(npz["test"])] = path
    return found


def _aligned_scores(run_a: Path, files_a: dict, run_b: Path, files_b: dict, test: str):
    """((scores, labels) of A, (scores, labels) of B) of one test setup, B's rows and columns in A's
    order; an error when the runs were not scored on the same tracks, labels and annotations
    (another split)."""
    arrays = []
    for run, files in ((run_a, files_a), (run_b, files_b)):
        if test not in files:
            raise EvaluationError(
                f"{run} has no {SCORES_DIR}/ file for test {test}: a paired comparison needs each "
                "run's scores (evaluate.py --run-dir RUN --save-scores --force; an external "
                "model: evaluate.py --external FILE ... --save-scores)."
            )
        with np.load(files[test], allow_pickle=False) as npz:
            arrays.append(
                {key: npz[key] for key in ("scores", "labels", "track_ids", "label_names")}
            )
    a, b = arrays
    same = {
        key: set(a[key].tolist()) == set(b[key].tolist()) for key in ("track_ids", "label_names")
    }
    if not all(same.values()):
        raise EvaluationError(
            f"{run_a} and {run_b} scored test {test} on different "
            f"{' and '.join(k.replace('_', ' ') for k, ok in same.items() if not ok)}: a paired "
            "comparison needs the same test setup and split (train both on the same split)."
        )
    rows = {t: i for i, t in enumerate(b["track_ids"].tolist())}
    cols = {lab: j for j, lab in enumerate(b["label_names"].tolist())}
    order = np.ix_(
        [rows[t] for t in a["track_ids"].tolist()], [cols[lab] for lab in a["label_names"].tolist()]
    )
    if not np.array_equal(a["labels"], b["labels"][order]):
        raise EvaluationError(
            f"{run_a} and {run_b} scored test {test} against different annotations; re-evaluate "
            "both on the same dataset."
        )
    return (a["scores"], a["labels"]), (b["scores"][order], b["labels"][order])


def _check_against_results(run: Path, test: str, task: str, values: dict, record: dict) -> None:
    """The scores file must reproduce the run's results.json (else it is left from an earlier
    evaluation)."""
    for name, per_row in values.items():
        defined = per_row[~np.isnan(per_row)]
        mean = float(defined.mean()) if defined.size else None
        recorded = record.get(name)
        if (mean is None) != (recorded is None) or (
            mean is not None and abs(mean - recorded) > 1e-9
        ):
            raise EvaluationError(
                f"{run}/{SCORES_DIR}: test {test} gives {task} {name} {mean}, its {RESULTS_FILE} "
                f"says {recorded}: the scores are from an earlier evaluation. Rerun evaluate.py "
                f"--run-dir {run} --save-scores --force."
            )


def _check_resamples(resamples: int) -> None:
    if resamples < MIN_RESAMPLES:
        raise EvaluationError(
            f"--resamples must be at least {MIN_RESAMPLES}, got {resamples}: the 2.5th and 97.5th "
            "percentiles of fewer resamples rest on a handful of them."
        )
