"""End to end on a tiny demo corpus, through the same command lines a user runs (README Quickstart):

demo -> splits.make -> train.py (embedding: instrument-count and random; classification) ->
evaluate.py (--run-dir with --save-scores, --collect, case studies). Every stage must run and write its outputs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def run(*args, expect=0):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == expect, f"{args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "tinydemo"
    run("-m", "demo", "--out", data, "--seed", "3", "--tracks", "48", "--seconds", "3", "--jobs", "2",
        "--no-progress")
    run("-m", "splits.make", "--dataset", data, "--seed", "0")
    runs = {}
    for name, extra in {
        "instrument": ["--side-info", "instrument-count", "--train-setup", "A-X"],
        "random": ["--side-info", "random", "--train-setup", "A-X"],
        "classification": ["--model", "classification", "--train-setup", "A-X"],
    }.items():
        runs[name] = root / "runs" / name
        run("train.py", "--dataset", data, "--epochs", "2", "--batch-size", "16", "--verbose", "0",
            "--run-dir", runs[name], *extra)
    return data, runs


def test_demo_stage_writes_the_dataset_directory(pipeline):
    data, _ = pipeline
    for name in ("tracks.csv", "annotations.csv", "mels.h5", "failures.csv", "summary.json", "genres.csv",
                 "side_info/instrument-count.csv", "side_info/instrument-confidence.csv", "side_info/random.csv",
                 "openmic/openmic-2018.npz", "openmic/class-map.json", "splits/split_seed0.json",
                 "splits/split_seed0.stats.json"):
        assert (data / name).is_file(), name
    summary = json.loads((data / "summary.json").read_text())
    assert summary["tracks"] == 48 and summary["side_info"]["instrument-count"]["dim"] == 40
    assert len(list((data / "audio").rglob("*.flac"))) == 48


def test_training_stage_writes_each_run_directory(pipeline):
    _, runs = pipeline
    for run_dir in runs.values():
        for name in ("config.json", "model.keras", "log.csv", "training_curve.png"):
            assert (run_dir / name).is_file(), (run_dir, name)
        assert len((run_dir / "log.csv").read_text().strip().splitlines()) == 1 + 2  # header + 2 epochs
    config = json.loads((runs["instrument"] / "config.json").read_text())
    assert config["config"]["train_setup"] == "A-X" and config["config"]["side_info"] == "instrument-count"


def test_evaluation_stage_writes_results_scores_and_tables(pipeline):
    data, runs = pipeline
    out = run("evaluate.py", "--run-dir", runs["instrument"], "--save-scores", "--no-progress")
    assert "Table 2" in out.stdout and "Table 3" in out.stdout
    records = json.loads((runs["instrument"] / "results.json").read_text())
    tests = {(r["test"], r["task"]) for r in records if r["part"] == "all"}
    assert {("B-Y", "annotation"), ("(B+C)-(X+Y)", "annotation"), ("(B+C)-Y", "retrieval"),
            ("(A+B+C)-Y", "retrieval"), ("B-X", "retrieval")} <= tests
    assert (runs["instrument"] / "label_map.png").is_file()
    saved = np.load(runs["instrument"] / "scores" / "BC-Y.npz", allow_pickle=False)
    assert str(saved["test"]) == "(B+C)-Y"
    assert saved["scores"].shape == saved["labels"].shape == (len(saved["track_ids"]), len(saved["label_names"]))

    collected = run("evaluate.py", "--collect", *runs.values(), "--format", "csv", "--no-progress")
    assert "random" in collected.stdout and "classification" in collected.stdout
    tables = run("evaluate.py", "--collect", *runs.values(), "--no-progress").stdout
    assert "Table 4" in tables  # both models trained on A-X -> the embedding-vs-classification table


def test_case_studies_run_on_the_trained_model(pipeline):
    data, runs = pipeline
    label = json.loads((runs["instrument"] / "config.json").read_text())["seen_labels"][0]
    query = run("evaluate.py", "--run-dir", runs["instrument"], "--query", label, "--format", "json")
    assert json.loads(query.stdout)
    neighbors = run("evaluate.py", "--run-dir", runs["instrument"], "--neighbors", label)
    assert label in neighbors.stdout
    audio = sorted((data / "audio").rglob("*.flac"))[0]
    annotate = run("evaluate.py", "--run-dir", runs["instrument"], "--annotate", audio)
    assert annotate.stdout.strip()
    missing = run("evaluate.py", "--run-dir", runs["instrument"], "--query", "no-such-word-xyz", expect=2)
    assert "error:" in missing.stderr
