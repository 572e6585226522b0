"""End to end on a tiny demo corpus, through the same command lines a user runs (README Quickstart):

python -m demo -> python -m splits.make -> train.py (embedding: instrument-count and random;
classification) -> evaluate.py (--run-dir with --save-scores, --collect, case studies). Each
stage's outputs are read back and checked: files present, values in range, the expected setups and
table rows there.
"""

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dataset_dir as ds
import metrics
import protocol
import splits
from fileio import sha256_file
from preprocess.melstore import MelStore
from preprocess.store import failures_path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
METRICS = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10", "AUC-l", "MAP-l")
SLUG = {
    "B-Y": "B-Y",
    "C-Y": "C-Y",
    "(B+C)-Y": "BC-Y",
    "B-(X+Y)": "B-XY",
    "C-(X+Y)": "C-XY",
    "(B+C)-(X+Y)": "BC-XY",
    "(A+B+C)-Y": "ABC-Y",
    "B-X": "B-X",
}


def run(*args, expect=0):
    result = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == expect, (
        f"{args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "tinydemo"
    run(
        "-m",
        "demo",
        "--out",
        data,
        "--seed",
        "3",
        "--tracks",
        "48",
        "--seconds",
        "3",
        "--jobs",
        "2",
        "--no-progress",
    )
    run("-m", "splits.make", "--dataset", data, "--seed", "0")
    runs = {}
    for name, extra in {
        "instrument": ["--side-info", "instrument-count", "--train-setup", "A-X"],
        "random": ["--side-info", "random", "--train-setup", "A-X"],
        "classification": ["--model", "classification", "--train-setup", "A-X"],
    }.items():
        runs[name] = root / "runs" / name
        run(
            "train.py",
            "--dataset",
            data,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--verbose",
            "0",
            "--run-dir",
            runs[name],
            *extra,
        )
    return data, runs


def test_demo_stage_writes_the_dataset_directory(pipeline):
    data, _ = pipeline
    for name in (
        "tracks.csv",
        "annotations.csv",
        "mels.h5",
        "summary.json",
        "genres.csv",
        "side_info/instrument-count.csv",
        "side_info/instrument-confidence.csv",
        "side_info/random.csv",
        "openmic/openmic-2018.npz",
        "openmic/class-map.json",
        "splits/split_seed0.json",
        "splits/split_seed0.stats.json",
    ):
        assert (data / name).is_file(), name
    summary = json.loads((data / "summary.json").read_text())
    assert summary["tracks"] == 48 and summary["side_info"]["instrument-count"]["dim"] == 40
    assert len(list((data / "audio").rglob("*.flac"))) == 48
    tracks = ds.read_tracks(data / "tracks.csv")
    annotations = ds.read_annotations(data / "annotations.csv")
    assert len(tracks) == 48 and set(annotations["track_id"]) <= set(tracks["track_id"])
    labels = sorted(set(annotations["label"]))
    assert summary["labels"] == len(labels) and summary["positives"] == len(annotations)
    for kind in ("instrument-count", "instrument-confidence", "random"):
        vectors = ds.side_vectors(
            ds.read_side_info(data / "side_info" / f"{kind}.csv"), labels, kind
        )
        assert vectors.shape[0] == len(labels) and np.isfinite(vectors).all() and vectors.std() > 0
    failed = list(csv.DictReader(io.StringIO(failures_path(data / "mels.h5").read_text())))
    with MelStore(data / "mels.h5", in_memory=False) as store:
        assert len(store) + len(failed) == 48 and set(store.track_ids) <= set(tracks["track_id"])
        assert (store.lengths >= 120).all()  # 3 s at 22,050 Hz / 512 hop = 130 frames
        assert math.isfinite(store.mean) and store.std > 0
        frames = store.frames(0)
        assert (
            frames.shape[1] == 128 and abs(float(frames.mean())) < 5 and np.isfinite(frames).all()
        )
    split = splits.load_split(data / "splits" / "split_seed0.json", annotations)
    assert set(split["seen"]).isdisjoint(split["unseen"]) and split["seen"] and split["unseen"]
    assert all(split[group] for group in ("A", "B", "C"))


def read_log(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_training_stage_writes_each_run_directory(pipeline):
    _, runs = pipeline
    for run_dir in runs.values():
        for file in (
            "config.json",
            "model.keras",
            "log.csv",
            "training_curve.png",
            "train_summary.json",
        ):
            assert (run_dir / file).is_file(), (run_dir, file)
        log = read_log(run_dir / "log.csv")
        assert [int(float(row["epoch"])) for row in log] == [0, 1]  # header + 2 epochs
        for row in log:
            assert all(
                math.isfinite(float(row[key])) and float(row[key]) >= 0
                for key in ("loss", "val_loss")
            ), row
        summary = json.loads((run_dir / "train_summary.json").read_text())
        assert summary["finished"] and summary["epochs_completed"] == 2
        assert summary["model_sha256"] == sha256_file(run_dir / "model.keras")
    config = json.loads((runs["instrument"] / "config.json").read_text())
    assert (
        config["config"]["train_setup"] == "A-X"
        and config["config"]["side_info"] == "instrument-count"
    )
    assert config["train"]["side_dim"] == 40 and config["train"]["n_labels"] == len(
        config["seen_labels"]
    )


def test_evaluation_stage_writes_results_scores_and_tables(pipeline):
    data, runs = pipeline
    run_dir = runs["instrument"]
    out = run("evaluate.py", "--run-dir", run_dir, "--save-scores", "--no-progress")
    records = json.loads((run_dir / "results.json").read_text())
    plan = protocol.setup_plan("embedding", "A-X")[0]
    gzsl = {
        (t, "annotation", part)
        for t in ("B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)")
        for part in ("seen", "unseen", "harmonic")
    }
    expected = {(t, task, "all") for t, task in plan} | gzsl
    assert {(r["test"], r["task"], r["part"]) for r in records} == expected and len(records) == len(
        expected
    )
    assert all(
        r["dataset"] == "tinydemo" and r["side_info"] == "instrument-count" and r["train"] == "A-X"
        for r in records
    )
    tracks = set(ds.read_tracks(data / "tracks.csv")["track_id"])
    by_key = {(r["test"], r["task"], r["part"]): r for r in records}
    for test, task in plan:
        with np.load(run_dir / "scores" / f"{SLUG[test]}.npz", allow_pickle=False) as npz:
            scores, labels = npz["scores"], npz["labels"]
            assert str(npz["test"]) == test and set(npz["track_ids"].tolist()) <= tracks
            assert (
                scores.shape
                == labels.shape
                == (len(npz["track_ids"]), len(npz["label_names"]))
                != (0, 0)
            )
            # cosines; 0/1 truth
            assert np.all(np.abs(scores) <= 1 + 1e-6) and set(np.unique(labels)) <= {0, 1}
        record = by_key[(test, task, "all")]
        assert record["evaluated"] + record["skipped"] == (
            len(scores) if task == "annotation" else scores.shape[1]
        )
        recomputed = (
            metrics.annotation_metrics if task == "annotation" else metrics.retrieval_metrics
        )(scores, labels)
        for name in METRICS:
            if name in record:
                value = recomputed[name]
                assert record[name] == (None if math.isnan(value) else value), (test, task, name)
                assert record[name] is None or 0 <= record[name] <= 1
    assert (run_dir / "label_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The printed tables hold a row per setup with the results' numbers.
    assert "Table 2" in out.stdout and "Table 3" in out.stdout
    for (test, task, part), record in by_key.items():
        if part == "all" and test != "B-X":
            assert (
                test in out.stdout
                and f"{record['AUC-i' if task == 'annotation' else 'AUC-l']:.4f}" in out.stdout
            )

    collected = run("evaluate.py", "--collect", *runs.values(), "--format", "csv", "--no-progress")
    rows = list(csv.DictReader(io.StringIO(collected.stdout)))
    assert {row["side_info"] for row in rows} >= {"instrument-count", "random"}
    assert {row["model"] for row in rows} == {"embedding", "classification"}
    assert {(row["test"], row["task"]) for row in rows if row["model"] == "classification"} == {
        ("B-X", "retrieval")
    }
    for record in records:  # the instrument run's records, one row per metric, same values
        for name in METRICS:
            if record.get(name) is not None:
                row = [
                    r
                    for r in rows
                    if r["metric"] == name and all(r[k] == record[k] for k in protocol.KEY_FIELDS)
                ]
                assert len(row) == 1 and float(row[0]["value"]) == pytest.approx(
                    record[name], abs=1e-12
                )
    tables = run("evaluate.py", "--collect", *runs.values(), "--no-progress").stdout
    assert "Table 4" in tables and "classification" in tables  # both models trained on A-X: Table 4


def test_case_studies_run_on_the_trained_model(pipeline):
    data, runs = pipeline
    config = json.loads((runs["instrument"] / "config.json").read_text())
    label = config["seen_labels"][0]
    query = json.loads(
        run(
            "evaluate.py",
            "--run-dir",
            runs["instrument"],
            "--query",
            label,
            "--format",
            "json",
            "--no-progress",
        ).stdout
    )["query"]
    annotations = ds.read_annotations(data / "annotations.csv")
    assert query["status"] == "seen label" and len(query["tracks"]) == 5
    scores = [row["score"] for row in query["tracks"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    for row in query["tracks"]:
        assert row["labels"] == sorted(
            annotations["label"][annotations["track_id"] == row["track_id"]]
        )
    split = splits.load_split(config["split_path"])
    n_labels = len(split["seen"]) + len(split["unseen"])
    neighbors = run(
        "evaluate.py",
        "--run-dir",
        runs["instrument"],
        "--neighbors",
        label,
        "--format",
        "csv",
        "--no-progress",
    ).stdout.splitlines()
    assert neighbors[0].startswith(f"# Nearest labels to {label!r}") and len(neighbors) == 2 + min(
        10, n_labels - 1
    )
    rows = list(csv.reader(neighbors[2:]))
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    for cosines in ([float(row[2]) for row in rows], [float(row[4]) for row in rows]):
        assert cosines == sorted(cosines, reverse=True) and all(-1 <= c <= 1 for c in cosines)
    assert label not in {row[1] for row in rows} | {row[3] for row in rows}
    audio = sorted((data / "audio").rglob("*.flac"))[0]
    annotate = json.loads(
        run(
            "evaluate.py",
            "--run-dir",
            runs["instrument"],
            "--annotate",
            audio,
            "--format",
            "json",
            "--no-progress",
        ).stdout
    )["annotate"]
    assert annotate["segments"] == 1 and len(annotate["labels"]) == min(10, n_labels)
    assert {row["label"] for row in annotate["labels"] if row["unseen"]} <= set(split["unseen"])
    assert {row["label"] for row in annotate["labels"]} <= set(split["seen"]) | set(split["unseen"])
    missing = run(
        "evaluate.py", "--run-dir", runs["instrument"], "--query", "no-such-word-xyz", expect=2
    )
    assert missing.stderr.startswith("error: 'no-such-word-xyz' has no side-information vector")
