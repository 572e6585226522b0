"""Tests of aggregate.py and evaluate.py --collect / --compare on hand-made run directories
(config.json, results.json, scores/*.npz; no model is loaded): aggregates equal a recomputation from
each run's own results.json, the grouping rules (seeds only; other settings -> a variant label;
repeated seeds refused), external result folders, the paired bootstrap against a plain loop, and the
error messages."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import build_dataset, write_results, write_summary
from test_evaluate import write_run as write_tiny_run

import aggregate
import evaluate
import metrics
import protocol
import splits
import tables
from fileio import sha256_file, write_json

# t(0.975, df), from tables of t
T975 = {1: 12.706204736174707, 2: 4.302652729749464, 4: 2.7764451051977987}
ANNOTATION = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10")


def result(
    test="B-Y",
    task="annotation",
    part="all",
    side_info="instrument-count",
    train="(A+B)-X",
    dataset="demo",
    **values,
):
    return {
        "dataset": dataset,
        "model": "embedding",
        "side_info": side_info,
        "train": train,
        "test": test,
        "task": task,
        "part": part,
        **values,
    }


def write_run(path, records, seed=0, split="split-0", root=None, **settings):
    """A finished run directory as train.py + evaluate.py leave it, on test_evaluate's tiny dataset
    (in `root`, default the run's parent folder; split "split-N" is its split saved with seed N):
    config.json, a placeholder model.keras, train_summary.json, and `records` as its results.json
    with what evaluate.py records beside them (finished, provenance), so that --collect reuses
    them."""
    root = Path(root or path.parent)
    data = root / "tiny"
    if not data.is_dir():
        build_dataset(root)
    split_path = data / "splits" / f"{split}.json"
    if not split_path.is_file():
        split_seed = int(split.rsplit("-", 1)[1])
        splits.save_split(
            {**splits.load_split(data / "splits" / "split_seed0.json"), "seed": split_seed},
            split_path,
        )
    write_tiny_run(path, data)
    meta = json.loads((path / "config.json").read_text())
    meta["config"] = {
        "dataset": "demo",
        "split": str(split_path),
        "train_setup": "(A+B)-X",
        "model": "embedding",
        "side_info": "instrument-count",
        "epochs": None,
        "seed": seed,
        "run_dir": str(path),
        "verbose": 1,
        "workers": 1,
        "keep_checkpoints": 0,
        **settings,
    }
    meta["split_path"] = str(split_path)
    meta["checksums"]["split"] = sha256_file(split_path)
    write_json(path / "config.json", meta)
    write_summary(path)
    write_results(path, records)
    return path


def write_external(path, records, name="clap", split="split-0"):
    path.mkdir(parents=True)
    write_json(
        path / "external.json",
        {
            "name": name,
            "dataset_dir": "/data/demo",
            "allow_missing": False,
            "split": {"path": f"/data/{split}.json", "sha256": f"sha-{split}"},
        },
    )
    write_json(path / "results.json", records)
    return path


def values(rng, names=ANNOTATION):
    return {name: float(rng.uniform(0.3, 0.9)) for name in names}


# ---- Aggregation ---------------------------------------------------------------------------------
def test_aggregates_equal_a_recomputation_from_each_runs_results_json(tmp_path):
    rng = np.random.default_rng(7)
    runs = [
        write_run(
            tmp_path / f"seed{s}",
            [
                result(**values(rng), evaluated=150 + s, skipped=s),
                result("(B+C)-Y", "retrieval", **values(rng, ("AUC-l", "MAP-l"))),
            ],
            seed=s,
            split=f"split-{s}",
        )
        for s in range(3)
    ]
    records, notes = aggregate.collect(runs, aggregated=True)
    assert len(records) == 2 and all(r["n_runs"] == 3 and r["variant"] == "" for r in records)
    assert any("3 runs -> 2 aggregated records" in n for n in notes)
    own = [json.loads((run / "results.json").read_text()) for run in runs]
    for record in records:
        i = [r["test"] for r in own[0]].index(record["test"])
        assert {k: record[k] for k in protocol.KEY_FIELDS} == {
            k: own[0][i][k] for k in protocol.KEY_FIELDS
        }
        assert record["runs"] == [str(run) for run in runs]
        for name, mean in record["mean"].items():
            column = [results[i][name] for results in own]
            sd = statistics.stdev(column)
            assert abs(mean - statistics.fmean(column)) < 1e-9
            assert abs(record["std"][name] - sd) < 1e-9
            # confidence interval of the mean, prediction interval of one run; clipped to [0, 1]
            for key, half in (
                ("ci95", T975[2] * sd / math.sqrt(3)),
                ("pi95", T975[2] * sd * math.sqrt(1 + 1 / 3)),
            ):
                expected = [max(0.0, mean - half), min(1.0, mean + half)]
                assert np.allclose(record[key][name], expected, rtol=0, atol=1e-9)
    assert records[0]["evaluated"] == [150, 151, 152] and records[0]["skipped"] == [0, 1, 2]


def test_mean_std_ci_by_hand():
    # std = 0.01 * sqrt(2); ci half = t(.975, 1) * 0.01; pi half = t(.975, 1) * 0.01 * sqrt(3)
    mean, std, ci95, pi95 = aggregate.mean_std_ci([0.5, 0.52])
    assert mean == pytest.approx(0.51) and std == pytest.approx(0.01 * math.sqrt(2))
    assert ci95 == pytest.approx([0.51 - T975[1] * 0.01, 0.51 + T975[1] * 0.01])
    half = T975[1] * 0.01 * math.sqrt(3)
    assert pi95 == pytest.approx([0.51 - half, 0.51 + half])
    # at n = 5 the prediction interval is sqrt(1 + 5) = 2.45 times as wide
    five = aggregate.mean_std_ci([0.40, 0.45, 0.5, 0.55, 0.6])
    assert (five[3][1] - five[3][0]) / (five[2][1] - five[2][0]) == pytest.approx(math.sqrt(6))
    # clipped to the metrics' range [0, 1]: (0.5, 0.7) has half-widths 1.27 and 2.2
    assert aggregate.mean_std_ci([0.5, 0.7])[2:] == ([0.0, 1.0], [0.0, 1.0])
    assert aggregate.mean_std_ci([0.5, 0.5, 0.5, 0.5, 0.5]) == (0.5, 0.0, [0.5, 0.5], [0.5, 0.5])
    assert aggregate.mean_std_ci([0.25]) == (0.25, None, None, None)


def test_grouping_seeds_only_and_variant_labels(tmp_path):
    rng = np.random.default_rng(0)
    ours = [
        write_run(
            tmp_path / f"ours{s}",
            [result(**values(rng))],
            seed=s,
            split=f"split-{s}",
            workers=s + 1,
            verbose=s % 2,
            keep_checkpoints=s,
            weights="best",
        )
        for s in range(2)
    ]
    original = [
        write_run(
            tmp_path / f"orig{s}",
            [result(**values(rng))],
            seed=s,
            split=f"split-{s}",
            epochs=20,
            weights="last",
        )
        for s in range(3)
    ]
    other_side = write_run(
        tmp_path / "random",
        [result(side_info="random", **values(rng))],
        side_info="random",
        weights="best",
    )
    records, notes = aggregate.collect([*ours, *original, other_side], aggregated=True)
    summary = [(r["side_info"], r["variant"], r["n_runs"]) for r in records]
    assert summary == [
        ("instrument-count", "epochs=default weights=best", 2),
        ("instrument-count", "epochs=20 weights=last", 3),
        ("random", "epochs=default weights=best", 1),
    ]
    assert any("1 records come from one run (n = 1)" in n for n in notes)
    assert all(records[2][key] == dict.fromkeys(ANNOTATION) for key in ("std", "ci95", "pi95"))
    assert any("'variant' names the settings that differ" in n for n in notes)
    # --per-run: today's rows, twins told apart by the run directory's name.
    per_run, _ = aggregate.collect([*ours, other_side])
    assert [r.get("run") for r in per_run] == ["ours0", "ours1", None]


def test_variant_labels_name_what_differs():
    labels = aggregate.variant_labels(
        {
            "new": {"epochs": 20, "weights": "last", "model": "embedding", "lr": 0.001},
            # config.json from before --weights
            "old": {"epochs": 20, "model": "embedding", "lr": 0.001},
            # each model is labelled apart (its records never share a key with the other's)
            "cls": {"epochs": 40, "weights": "last", "model": "classification", "lr": 0.001},
            "cls2": {"epochs": 40, "weights": "last", "model": "classification", "lr": 0.008},
            "clap": {"external": "clap", "allow_missing": False},
            "clap2": {"external": "clap2", "allow_missing": True},
        }
    )
    assert labels == {
        "new": "weights=last",
        "old": "weights=?",
        "cls": "lr=0.001",
        "cls2": "lr=0.008",
        "clap": "allow_missing=False",
        "clap2": "allow_missing=True",
    }
    assert aggregate.variant_labels({"a": {"epochs": None}, "b": {"epochs": 5}}) == {
        "a": "epochs=default",
        "b": "epochs=5",
    }


def test_repeated_seeds_are_refused_and_null_metrics_stay_null(tmp_path):
    first = write_run(tmp_path / "a", [result(**{"AUC-i": 0.6, "P@1": None})], seed=3)
    twin = write_run(tmp_path / "b", [result(**{"AUC-i": 0.7, "P@1": 0.1})], seed=3)
    with pytest.raises(
        protocol.EvaluationError, match=r"same settings and the same seeds \(seed 3.*--per-run"
    ):
        aggregate.collect([first, twin], aggregated=True)
    other = write_run(
        tmp_path / "c", [result(**{"AUC-i": 0.7, "P@1": 0.1})], seed=3, split="split-1"
    )
    # same init seed, another split: a sample
    (record,), _ = aggregate.collect([first, other], aggregated=True)
    assert (
        record["mean"] == {"AUC-i": pytest.approx(0.65), "P@1": None}
        and record["ci95"]["P@1"] is None
    )


def test_external_folders_are_reused_and_placed_under_ours(tmp_path):
    rng = np.random.default_rng(1)
    ours = [
        write_run(tmp_path / f"ours{s}", [result(**values(rng))], seed=s, split=f"split-{s}")
        for s in range(2)
    ]
    external = [
        write_external(
            tmp_path / f"clap{s}",
            [{**result(**values(rng)), "model": "clap", "train": "none", "side_info": "external"}],
            split=f"split-{s}",
        )
        for s in range(2)
    ]
    records, _ = aggregate.collect([external[0], *ours, external[1]], aggregated=True)
    assert [(r["model"], r["n_runs"], r["variant"]) for r in records] == [
        ("clap", 2, ""),
        ("embedding", 2, ""),
    ]
    # never evaluated, even with --force
    _, notes = protocol.gather_runs(external, force=True, save=True)
    assert sum("an external model's results, never re-evaluated" in n for n in notes) == 2
    text = tables.render_tables(records, fmt="markdown")
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| (A+B)-X") or line.startswith("| none")
    ]
    assert [row.split(" | ")[0:4] for row in rows] == [
        ["| (A+B)-X", "B-Y", "instrument-count", "embedding"],
        ["| none", "B-Y", "external", "clap"],
    ]


def test_collect_cli_json_is_the_aggregated_record_format(tmp_path, capsys):
    runs = [
        write_run(
            tmp_path / f"s{s}",
            [result(dataset="fma", train="A-X", **{"AUC-i": auc})],
            seed=s,
            split=f"split-{s}",
        )
        for s, auc in enumerate((0.85, 0.855, 0.86))
    ]
    assert evaluate.main(["--collect", *map(str, runs), "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert set(record) >= {
        *protocol.KEY_FIELDS,
        "n_runs",
        "mean",
        "std",
        "ci95",
        "pi95",
        "verdict",
        "paper",
    }
    assert record["n_runs"] == 3 and record["mean"]["AUC-i"] == pytest.approx(0.855)
    half = T975[2] * 0.005 / math.sqrt(3)
    assert record["ci95"]["AUC-i"] == pytest.approx([0.855 - half, 0.855 + half])
    assert record["pi95"]["AUC-i"] == pytest.approx([0.855 - 2 * half, 0.855 + 2 * half])
    # the published run (0.8736) is above our mean's interval, inside that of one new run
    assert record["ci95"]["AUC-i"][1] < 0.8736 < record["pi95"]["AUC-i"][1]
    assert record["paper"] == {"AUC-i": 0.8736} and record["verdict"] == {"AUC-i": "inside"}


# ---- Paired bootstrap ----------------------------------------------------------------------------
def reference_bootstrap(a, b, resamples, seed):
    """The paired bootstrap as a plain loop: same draws, Python sums, percentiles by linear
    interpolation."""
    used = [i for i in range(len(a)) if not (math.isnan(a[i]) or math.isnan(b[i]))]
    diffs = [float(a[i] - b[i]) for i in used]
    rng, means = np.random.default_rng(seed), []
    for _ in range(resamples):
        rows = rng.integers(0, len(diffs), size=len(diffs))
        means.append(sum(diffs[r] for r in rows) / len(diffs))
    means.sort()

    def percentile(q):
        position = q / 100 * (len(means) - 1)
        low = math.floor(position)
        return means[low] + (position - low) * (means[min(low + 1, len(means) - 1)] - means[low])

    return sum(diffs) / len(diffs), [percentile(2.5), percentile(97.5)], len(a) - len(used)


def test_paired_bootstrap_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    a = {"AUC-i": rng.uniform(size=40), "MAP-i": rng.uniform(size=40)}
    b = {"AUC-i": a["AUC-i"] - rng.normal(0.05, 0.1, size=40), "MAP-i": rng.uniform(size=40)}
    # undefined rows (one metric undefined means all are): left out of both metrics
    a["AUC-i"][[4, 9]] = np.nan
    b["MAP-i"][4] = np.nan
    result, used, left_out = aggregate.paired_bootstrap(a, b, resamples=1000, seed=11)
    assert (used, left_out) == (38, 2)
    keep = ~np.isnan(a["AUC-i"])
    for name in a:
        b_kept = np.where(keep, b[name], np.nan)
        diff, ci95, dropped = reference_bootstrap(np.where(keep, a[name], np.nan), b_kept, 1000, 11)
        assert dropped == 2
        assert result[name]["diff"] == pytest.approx(diff, abs=1e-12)
        assert result[name]["ci95"] == pytest.approx(ci95, abs=1e-12)
        assert result[name]["a"] - result[name]["b"] == pytest.approx(diff, abs=1e-12)
    # A constant difference has a zero-width interval; the same seed gives the same interval.
    same, _, _ = aggregate.paired_bootstrap(
        {"AUC-i": np.full(9, 0.8)}, {"AUC-i": np.full(9, 0.5)}, 1000, 0
    )
    assert same["AUC-i"]["ci95"] == pytest.approx([0.3, 0.3])
    assert aggregate.paired_bootstrap(a, b, 1000, 11)[0] == result
    with pytest.raises(protocol.EvaluationError, match="--resamples must be at least 1000, got 1"):
        aggregate.paired_bootstrap(a, b, 1, 0)


def test_row_metrics_are_the_per_row_definitions():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(12, 7)).round(1)  # ties
    labels = rng.uniform(size=(12, 7)) < 0.3
    labels[0] = False  # undefined row
    rows = aggregate.row_metrics(scores, labels, "annotation")
    for i in range(12):
        assert rows["AUC-i"][i] == pytest.approx(metrics.roc_auc(scores[i], labels[i]), nan_ok=True)
        assert rows["MAP-i"][i] == pytest.approx(
            metrics.average_precision(scores[i], labels[i]), nan_ok=True
        )
        assert rows["P@5"][i] == pytest.approx(metrics.apk(scores[i], labels[i], 5), nan_ok=True)
    assert np.nanmean(rows["AUC-i"]) == pytest.approx(
        metrics.annotation_metrics(scores, labels)["AUC-i"]
    )
    columns = aggregate.row_metrics(scores, labels, "retrieval")
    assert columns["MAP-l"][2] == pytest.approx(
        metrics.average_precision(scores[:, 2], labels[:, 2]), nan_ok=True
    )
    assert np.nanmean(columns["AUC-l"]) == pytest.approx(
        metrics.retrieval_metrics(scores, labels)["AUC-l"]
    )


def scored_run(path, scores, labels, tracks, names, seed=0, **settings):
    """A run with scores/B-Y.npz and the results.json its scores give (annotation and retrieval on
    B-Y)."""
    records = [
        result(**{k: v for k, v in metrics.annotation_metrics(scores, labels).items()}),
        result(task="retrieval", **metrics.retrieval_metrics(scores, labels)),
    ]
    run = write_run(path, records, seed=seed, **settings)
    protocol.save_scores(run, "B-Y", scores, labels, tracks, names)
    return run


def compare_world(tmp_path, rng):
    tracks, names = [f"t{i}" for i in range(30)], [f"l{j}" for j in range(6)]
    labels = rng.uniform(size=(30, 6)) < 0.35
    # a track without labels (and others by chance): left out of the annotation comparison
    labels[3] = False
    good = np.float32(labels + rng.normal(0, 0.8, size=labels.shape))  # better than random
    bad = np.float32(rng.normal(size=labels.shape))
    order = rng.permutation(30)  # B stores its tracks in another order: paired by id
    run_a = scored_run(tmp_path / "a", good, labels, tracks, names)
    run_b = scored_run(
        tmp_path / "b",
        bad[order],
        labels[order],
        [tracks[i] for i in order],
        names,
        side_info="random",
    )
    return run_a, run_b, (good, bad, labels)


def test_compare_cli_on_scored_runs(tmp_path, capsys):
    run_a, run_b, (good, bad, labels) = compare_world(tmp_path, np.random.default_rng(2))
    assert (
        evaluate.main(
            [
                "--compare",
                str(run_a),
                str(run_b),
                "--resamples",
                "1000",
                "--bootstrap-seed",
                "4",
                "--format",
                "json",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    rows = {(r["task"], r["metric"]): r for r in json.loads(out)}
    assert set(rows) == {("annotation", m) for m in ANNOTATION} | {
        ("retrieval", "AUC-l"),
        ("retrieval", "MAP-l"),
    }
    auc = rows["annotation", "AUC-i"]
    expected = (
        metrics.annotation_metrics(good, labels)["AUC-i"]
        - metrics.annotation_metrics(bad, labels)["AUC-i"]
    )
    defined = int(metrics.defined_rows(labels).sum())
    assert auc["diff"] == pytest.approx(expected, abs=1e-9)
    assert (auc["rows"], auc["left_out"]) == (defined, 30 - defined)
    a_rows = aggregate.row_metrics(good, labels, "annotation")["AUC-i"]
    b_rows = aggregate.row_metrics(bad, labels, "annotation")["AUC-i"]
    assert auc["ci95"] == pytest.approx(reference_bootstrap(a_rows, b_rows, 1000, 4)[1], abs=1e-12)
    assert (auc["resamples"], auc["seed"]) == (
        1000,
        4,
    ) and f"{30 - defined} test tracks left out" in err
    assert evaluate.main(["--compare", str(run_a), str(run_b), "--resamples", "1000"]) == 0
    text = capsys.readouterr().out
    assert (
        "Paired comparison A - B within one trained pair (bootstrap over its test rows), dataset "
        "demo"
        in text
        and "over 1000 paired bootstrap resamples" in text
    )
    assert f"A = {run_a}" in text


def test_compare_with_an_external_models_folder(tmp_path):
    run_a, _, (good, bad, labels) = compare_world(tmp_path, np.random.default_rng(2))
    tracks, names = [f"t{i}" for i in range(30)], [f"l{j}" for j in range(6)]
    clap = write_external(
        tmp_path / "clap",
        [
            {**r, "model": "clap", "train": "none", "side_info": "external"}
            for r in json.loads((tmp_path / "b" / "results.json").read_text())
        ],
    )
    protocol.save_scores(clap, "B-Y", bad, labels, tracks, names)
    rows, notes = aggregate.compare(run_a, clap, resamples=1000)
    assert {r["run_b"] for r in rows} == {str(clap)} and any(
        "an external model's results" in n for n in notes
    )
    auc = next(r for r in rows if r["metric"] == "AUC-l")
    assert auc["diff"] == pytest.approx(
        metrics.retrieval_metrics(good, labels)["AUC-l"]
        - metrics.retrieval_metrics(bad, labels)["AUC-l"],
        abs=1e-9,
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            "other tracks",
            "scored test B-Y on different track ids: a paired comparison needs the same test setup",
        ),
        ("stale scores", "the scores are from an earlier evaluation. Rerun evaluate.py"),
        ("no scores", "has no scores/ file for test B-Y"),
        ("same run", "--compare needs two different run directories, got 1"),
        ("few resamples", "--resamples must be at least 1000, got 999"),
    ],
)
def test_compare_errors(tmp_path, capsys, damage, message):
    run_a, run_b, (good, bad, labels) = compare_world(tmp_path, np.random.default_rng(2))
    tracks, names = [f"t{i}" for i in range(30)], [f"l{j}" for j in range(6)]
    if damage == "other tracks":
        protocol.save_scores(run_b, "B-Y", bad, labels, [f"x{i}" for i in range(30)], names)
    elif damage == "stale scores":
        protocol.save_scores(run_b, "B-Y", bad[::-1].copy(), labels, tracks, names)
    elif damage == "no scores":
        (run_b / "scores" / "B-Y.npz").unlink()
    extra = ["--resamples", "999"] if damage == "few resamples" else []
    code = evaluate.main(
        ["--compare", str(run_a), str(run_a if damage == "same run" else run_b), *extra]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


# ---- Tiny real runs ------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_runs_aggregate_and_compare(tmp_path):
    """Two untrained models (init seeds 0 and 1) evaluated for real on test_evaluate's tiny world:
    --collect equals a recomputation from their own results.json, --compare from their own scores/.
    """
    from test_evaluate import save_model

    data, runs = build_dataset(tmp_path), []
    for seed in (0, 1):
        run = write_tiny_run(tmp_path / f"seed{seed}", data)
        meta = json.loads((run / "config.json").read_text())
        meta["config"]["seed"] = seed
        write_json(run / "config.json", meta)
        save_model(run / "model.keras", "embedding", seed=seed)
        write_summary(run)
        runs.append(run)
    records, _ = aggregate.collect(
        runs, aggregated=True, save=True, progress=False, label_map=False
    )
    own = [
        {
            (r["test"], r["task"], r["part"]): r
            for r in json.loads((run / "results.json").read_text())
        }
        for run in runs
    ]
    assert len(records) == len(own[0]) and all(r["n_runs"] == 2 for r in records)
    for record in records:
        pair = [results[record["test"], record["task"], record["part"]] for results in own]
        for name, mean in record["mean"].items():
            if mean is not None:
                column = [r[name] for r in pair]
                assert abs(mean - statistics.fmean(column)) < 1e-9
                half = T975[1] * statistics.stdev(column) / math.sqrt(2)
                expected = [max(0.0, mean - half), min(1.0, mean + half)]  # clipped to [0, 1]
                assert np.allclose(record["ci95"][name], expected, rtol=0, atol=1e-9)
    rows, _ = aggregate.compare(*runs, resamples=1000, seed=0, progress=False)
    for row in rows:
        a, b = (results[row["test"], row["task"], "all"][row["metric"]] for results in own)
        assert (
            row["diff"] == pytest.approx(a - b, abs=1e-9)
            and row["ci95"][0] <= row["diff"] <= row["ci95"][1]
        )


# ---- Settings a model does not use; the learning-rate grid ---------------------------------------
def classification_run(path, records, seed, lr=0.001, old=False, summary=None):
    """A classification run: config.json as train.py writes it today (unused settings null) or
    before (old: side information and loss reduction recorded though unused)."""
    unused = (
        {"side_info": "instrument-count", "loss_reduction": "sum", "margin": 0.4, "negatives": 1}
        if old
        else {"side_info": None, "loss_reduction": None, "margin": None, "negatives": None}
    )
    records = [
        {**r, "model": "classification", "side_info": unused["side_info"] if old else None}
        for r in records
    ]
    run = write_run(
        path, records, seed=seed, split=f"split-{seed}", model="classification", lr=lr, **unused
    )
    if summary is not None:
        write_json(run / "train_summary.json", {"finished": True, **summary})
    return run


def test_old_and_new_classification_runs_collect_together(tmp_path):
    rng = np.random.default_rng(4)
    table4 = ("B-X", "retrieval")
    runs = [
        classification_run(
            tmp_path / f"s{s}", [result(*table4, **values(rng, ("AUC-l",)))], s, old=s == 0
        )
        for s in range(3)
    ]
    (record,), notes = aggregate.collect(runs, aggregated=True)
    assert (record["n_runs"], record["variant"], record["side_info"]) == (3, "", None)
    assert not any("variant" in note for note in notes)


def test_lr_selection_is_the_lowest_mean_best_val_loss_of_the_runs_train_summary(tmp_path):
    rng = np.random.default_rng(5)
    grid = (0.001, 0.008, 0.064)
    runs = [
        classification_run(
            tmp_path / f"lr{lr}-seed{s}",  # one folder: one dataset
            [result("B-X", "retrieval", **values(rng, ("AUC-l", "MAP-l")))],
            s,
            lr=lr,
            summary={
                "best_val_loss": float(rng.uniform(0.1, 0.2)),
                "prior_val_loss": 0.15,
                "best_epoch": 3,
            },
        )
        for lr in grid
        for s in range(3)
    ]
    # the embedding model trained at one lr: no grid, no selection
    embedding = write_run(tmp_path / "emb", [result("B-X", "retrieval", **{"AUC-l": 0.7})])
    records, _ = aggregate.collect([*runs, embedding], aggregated=True)
    summaries = {run: json.loads((run / "train_summary.json").read_text()) for run in runs}
    losses = {
        lr: statistics.fmean(
            summaries[tmp_path / f"lr{lr}-seed{s}"]["best_val_loss"] for s in range(3)
        )
        for lr in grid
    }
    chosen = min(losses, key=losses.get)
    classification = [r for r in records if r["model"] == "classification"]
    assert [(r["lr"], r["n_runs"], r["variant"]) for r in classification] == [
        (lr, 3, f"lr={lr}") for lr in grid
    ]
    for record in classification:
        assert (
            record["lr_selection"]["chosen"] == chosen
            and record["lr_selection"]["by"] == "val_loss"
        )
        assert record["lr_selection"]["candidates"] == pytest.approx(
            {str(lr): loss for lr, loss in losses.items()}
        )
        assert record["beats_prior"] == [
            summaries[Path(run)]["best_val_loss"] < 0.15 for run in record["runs"]
        ]
    (emb,) = [r for r in records if r["model"] == "embedding"]
    assert "lr_selection" not in emb and "beats_prior" not in emb
    # a grid run without its train_summary.json (unfinished: left out): no selection from part of
    # the grid, whose lrs would be compared on different seeds
    (runs[0] / "train_summary.json").unlink()
    records, _ = aggregate.collect(runs, aggregated=True)
    assert not any("lr_selection" in r for r in records)


# ---- Paired comparison across seeds --------------------------------------------------------------
def brute_force_sign_flip(diffs):
    """The share of the 2^n sign assignments whose |sum| >= the observed |sum|, in exact
    arithmetic."""
    exact = [Fraction(str(d)) for d in diffs]
    observed = abs(sum(exact))
    signs = list(itertools.product((1, -1), repeat=len(exact)))
    hits = [abs(sum(s * d for s, d in zip(one, exact, strict=True))) >= observed for one in signs]
    return sum(hits) / len(signs)


@pytest.mark.parametrize(
    "diffs",
    [
        [0.02, 0.03, 0.01, 0.04, 0.02],  # all positive: 2 / 2^5
        [0.1, -0.1, 0.2, 0.3, -0.2, 0.1],  # ties between assignments
        [0.05, -0.01, 0.02],
        [0.0, 0.0, 0.0],  # no difference: every assignment ties, p = 1
        [0.013],
    ],
)
def test_sign_flip_p_equals_a_brute_force_enumeration(diffs):
    assert aggregate.sign_flip_p(diffs) == pytest.approx(brute_force_sign_flip(diffs), abs=1e-15)


def seed_folder(root, kind, aucs, side_info="instrument-count", splits=None, **settings):
    """reproduce.py's <out>/<kind>/seed<s> with one Table 4 record per run."""
    for s, auc in enumerate(aucs):
        write_run(
            root / kind / f"seed{s}",
            [
                result(
                    "B-X",
                    "retrieval",
                    side_info=side_info,
                    train="A-X",
                    **{"AUC-l": auc, "MAP-l": auc / 2},
                )
            ],
            seed=s,
            split=(splits or {}).get(s, f"split-{s}"),
            root=root,  # both folders on one dataset
            side_info=side_info,
            **settings,
        )
    return root / kind


def test_compare_across_seeds_against_scipy_and_an_enumeration(tmp_path, capsys):
    from scipy import stats

    a = [0.80, 0.78, 0.83, 0.79, 0.81]
    b = [0.76, 0.77, 0.80, 0.80, 0.75]
    folder_a = seed_folder(tmp_path, "instrument-count", a)
    folder_b = seed_folder(
        tmp_path, "random", b[:4] + [0.7, 0.7], side_info="random"
    )  # seed5: B only
    rows, notes = aggregate.compare(folder_a, folder_b)
    auc = next(r for r in rows if r["metric"] == "AUC-l")
    assert set(auc) == {
        "train",
        "test",
        "task",
        "part",
        "metric",
        "n_pairs",
        "mean_diff",
        "ci95",
        "p_sign_flip",
    }
    diffs = [x - y for x, y in zip(a, b[:4] + [0.7], strict=True)]
    assert (auc["train"], auc["test"], auc["task"], auc["part"], auc["n_pairs"]) == (
        "A-X",
        "B-X",
        "retrieval",
        "all",
        5,
    )
    assert auc["mean_diff"] == pytest.approx(statistics.fmean(diffs), abs=1e-12)
    low, high = stats.t.interval(0.95, 4, loc=statistics.fmean(diffs), scale=stats.sem(diffs))
    assert auc["ci95"] == pytest.approx([low, high], abs=1e-12)
    assert auc["p_sign_flip"] == pytest.approx(brute_force_sign_flip(diffs), abs=1e-15)
    assert any(
        "A - B compares side_info instrument-count -> random, paired over seeds 0 1 2 3 4" in n
        for n in notes
    )
    assert any("seeds in one folder only, not compared: 5" in n for n in notes)
    assert evaluate.main(["--compare", str(folder_a), str(folder_b)]) == 0
    out = capsys.readouterr().out
    assert (
        "Paired comparison A - B across seeds" in out and "2 comparisons (setups x metrics)" in out
    )


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "no common seed",
            "A holds seed [0, 1, 2], B seed [7]: 0 seeds in both; pairing by seed needs 2 to 20",
        ),
        ("one seed", "1 seeds in both"),
        ("other split", "seed 1: "),
        (
            "mixed folder",
            "differ in more than their seeds (epochs 20 -> 40): one folder must hold one system",
        ),
        ("folder and run", "give two run directories or two folders of seed runs"),
    ],
)
def test_compare_across_seeds_errors(tmp_path, capsys, case, message):
    folder_a = seed_folder(tmp_path / "a", "emb", [0.8, 0.7, 0.75], epochs=20)
    other = {"other split": {"splits": {1: "split-9"}}, "mixed folder": {"epochs": 20}}
    folder_b = seed_folder(
        tmp_path / "b",
        "emb",
        {"no common seed": [], "one seed": [0.7]}.get(case, [0.7, 0.6, 0.6]),
        **other.get(case, {}),
    )
    if case == "mixed folder":  # seed 3 of A trained for other epochs
        for folder, epochs in ((folder_a, 40), (folder_b, 20)):
            write_run(
                folder / "seed3",
                [result()],
                seed=3,
                split="split-3",
                root=folder.parent,
                epochs=epochs,
            )
    if case == "no common seed":
        write_run(folder_b / "seed7", [result()], seed=7)
    if case == "folder and run":
        folder_b = folder_b / "seed0"
    code = evaluate.main(["--compare", str(folder_a), str(folder_b)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
