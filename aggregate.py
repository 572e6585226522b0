"""Several runs as one result, and two systems compared on the same test tracks (the reproduction
protocol).

Aggregation (evaluate.py --collect). Runs whose config.json differ only in their seeds (the
init/sampling `seed` and the split) are repeated measurements of one experiment: per result record
and metric we report
    mean, sample standard deviation s (ddof=1), n, and the 95% interval mean +- t(0.975, n-1) * s /
        sqrt(n).
Runs that differ in anything else (epochs, which weights were kept, ...) are other experiments:
their records stay apart, told apart by a short "variant" label naming the settings that differ
("epochs=20 weights=last"). An aggregated record holds the key fields of a result record
(protocol.KEY_FIELDS) plus
    variant, n_runs, runs (the run directories), mean / std / ci95 ({metric: value}; ci95 values
        [low, high];
    std and ci95 null for n = 1), evaluated / skipped (one count per run).

Only finished runs (with train_summary.json) are collected: unfinished ones are left out with a
note, or with --include-unfinished kept apart (variant "training=unfinished"). Each run's records
come from protocol.gather_runs, which refuses a run whose data changed since training (a dataset
rebuilt in place), so runs on different data never meet here.

Paired comparison (evaluate.py --compare RUN_A RUN_B). Two systems scored on the same test setup and
split differ, per metric, by mean(A's values) - mean(B's values) over the rows (test tracks for
annotation, test labels for retrieval) defined in both; its 95% interval is the 2.5th and 97.5th
percentile of that difference over bootstrap resamples of the rows (drawn with replacement, the same
rows for A and B: "paired"), seeded. The per-row values come from each run's scores/<setup>.npz
(evaluate.py --save-scores) and metrics.py's definitions.
"""

from __future__ import annotations

import json
import math
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
)
from tables import METRIC_PATTERN

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
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
        meta = _read_json(run_dir / EXTERNAL_FILE)
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
    dropped = set(SEED_FIELDS + config.NO_EFFECT_FIELDS + ("dataset",))
    settings = {key: value for key, value in meta["config"].items() if key not in dropped}
    settings["dataset_dir"] = str(Path(meta["dataset_dir"]).resolve())
    settings["training"] = "unfinished" if is_unfinished(run_dir) else "finished"
    return settings, (
        meta["config"].get("seed"),
        meta["checksums"].get("split") or meta["split_path"],
    )


def is_unfinished(run_dir) -> bool:
    """A training run without train_summary.json: still training, or interrupted (an external
    model's result folder is never unfinished)."""
    return not is_external(run_dir) and not (Path(run_dir) / config.SUMMARY_FILE).is_file()


def variant_labels(settings: dict[Path, dict]) -> dict[Path, str]:
    """A label per run naming the settings that differ between the collected runs ("" when none do),
    leaving out those the records' key already shows (model, side information, training setup). Our
    runs and external models' folders are labelled apart (they have other settings); "?" is a
    setting a run's config.json does not record (written before the flag existed), "default" one it
    records as null."""
    labels = {}
    for external in (False, True):
        family = {run: s for run, s in settings.items() if ("external" in s) == external}
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
def mean_std_ci(values) -> tuple[float, float | None, list[float] | None]:
    """Mean, sample standard deviation (ddof=1) and 95% interval mean +- t(0.975, n-1) * std /
    sqrt(n) of one metric over n runs; std and interval are None for n = 1 (one run says nothing
    about the spread)."""
    values = np.asarray(values, dtype=np.float64)  # (n,)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None, None
    std = float(values.std(ddof=1))
    # here, not at import: scipy.stats costs ~1 s, and every evaluate.py command imports us
    from scipy import stats

    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, std, [mean - half, mean + half]


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
    }
    for name in names:
        values = [r.get(name) for r in records]
        summary = (None, None, None) if any(v is None for v in values) else mean_std_ci(values)
        out["mean"][name], out["std"][name], out["ci95"][name] = summary
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
            key = (*(record.get(k) for k in KEY_FIELDS), experiment[run])
            groups.setdefault(key, []).append((run, record))
    out = [
        aggregate_records(
            [r for _, r in members], labels[members[0][0]], [run for run, _ in members]
        )
        for members in groups.values()
    ]
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
            f"{singles} records come from one run (n = 1): their std and ci95 are null; train more "
            "seeds "
            "(train.py --seed / --split-seed) for an interval."
        )
    if any(labels.values()):
        notes.append(
            "runs differ in more than their seeds; 'variant' names the settings that differ: "
            + "; ".join(sorted(set(filter(None, labels.values()))))
        )
    return out, notes


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
    per_run, notes = gather_runs(run_dirs, force, **evaluate_kwargs)
    if not include_unfinished and (unfinished := [run for run in per_run if is_unfinished(run)]):
        notes.append(
            f"left out {len(unfinished)} unfinished run(s) (no {config.SUMMARY_FILE}: still "
            f"training, or interrupted): {', '.join(map(str, unfinished))}. Let them finish "
            "(train.py --run-dir resumes one), or pass --include-unfinished to see them apart."
        )
        per_run = {run: records for run, records in per_run.items() if run not in unfinished}
    records, more = (aggregate_runs if aggregated else label_runs)(per_run)
    return records, notes + more


# ---- Paired bootstrap ----------------------------------------------------------------------------
def row_metrics(scores, labels, task: str) -> dict[str, np.ndarray]:
    """The value of each metric per test track (annotation: rows of the (n_tracks, n_labels) arrays)
    or per test
    label (retrieval: columns): metrics.roc_auc, average_precision and apk (P@K) of each, NaN where
        undefined (labels all 0 or all 1). metrics.annotation_metrics / retrieval_metrics are their
        means over the defined ones."""
    if task == "retrieval":
        return metrics.per_label_metrics(scores, labels)
    return metrics.per_track_metrics(scores, labels)


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
    out = {
        name: {
            "a": float(a[name][both].mean()),
            "b": float(b[name][both].mean()),
            "diff": float(diffs[i].mean()),
            "ci95": [float(low[i]), float(high[i])],
        }
        for i, name in enumerate(names)
    }
    return out, used, int(both.size - used)


def compare(
    run_a,
    run_b,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    force: bool = False,
    **evaluate_kwargs,
) -> tuple[list[dict], list[str]]:
    """evaluate.py --compare: compare_runs of two run directories, evaluated first where they have
    no scores/ or their results.json is not current; a note names a run whose training has not
    finished."""
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
    scores = {run: _scores_by_test(run) for run in per_run}
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


def _scores_by_test(run_dir: Path) -> dict[str, Path]:
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
    if resamples < 1:
        raise EvaluationError(f"--resamples must be at least 1, got {resamples}.")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationError(
            f"{path} is not valid JSON ({exc}); restore it or rewrite it."
        ) from None
    if not isinstance(value, dict):
        raise EvaluationError(f"{path} is not a JSON object; restore it or rewrite it.")
    return value
