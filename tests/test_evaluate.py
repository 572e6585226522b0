"""Tests of evaluate.py, embeddings.py and case_studies.py on a tiny hand-made world.

The world (built in tmp_path): 10 tracks, seen labels jazz/pop/rock, unseen labels blues/folk, 4-d
side vectors chosen so that the nearest neighbours are obvious, a mel store written in the
documented HDF5 layout (one track, c4, has no mel: a failed decode), a hand-built split and a run
directory whose config.json records the checksums. Fast tests use a placeholder model.keras
(everything they check happens before the model is loaded); the tests marked slow save an untrained
model from models.build_*_model and evaluate it for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import aggregate
import case_studies
import config
import dataset_dir as ds
import embeddings
import evaluate
import metrics
import protocol
import splits
import train
from fileio import sha256_file, write_json
from preprocess import frontend
from preprocess.frontend import SEGMENT_FRAMES
from preprocess.melstore import MelStore

REPO = Path(__file__).resolve().parent.parent

SEEN = ["jazz", "pop", "rock"]
UNSEEN = ["blues", "folk"]
LABELS_OF = {
    "a1": ["jazz"],
    "a2": ["pop", "rock"],
    "a3": ["rock"],
    "b1": ["blues", "jazz"],
    "b2": ["folk", "pop"],
    "b3": ["blues", "folk", "rock"],
    "c1": ["blues"],
    "c2": ["folk"],
    "c3": ["blues", "folk"],
    "c4": ["folk"],
}
GROUPS = {"A": ["a1", "a2", "a3"], "B": ["b1", "b2", "b3"], "C": ["c1", "c2", "c3", "c4"]}
# Frames per stored track: several segments, exactly one, shorter than a segment (tiled),
# remainders.
FRAMES = {
    "a1": 300,
    "a2": 130,
    "a3": 50,
    "b1": 261,
    "b2": 520,
    "b3": 129,
    "c1": 400,
    "c2": 131,
    "c3": 260,
}
NOT_STORED = "c4"
# Raw side vectors: the neighbours of "jazz" by cosine are blues (0.949), pop (0.447), rock (0.140),
# folk (0).
SIDE = {
    "jazz": [1.0, 0.0, 0.0, 0.0],
    "blues": [0.9, 0.3, 0.0, 0.0],
    "pop": [0.5, 1.0, 0.0, 0.0],
    "rock": [0.2, 1.0, 1.0, 0.0],
    "folk": [0.0, 0.0, 1.0, 1.0],
    "guitar": [1.0, 0.1, 0.0, 0.2],  # has a vector, outside the label set
}
STORE_MEAN, STORE_STD = 0.25, 0.5


# --------------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------------
def write_store(path: Path, frames: dict, seed: int = 0) -> dict:
    """mels.h5 in the documented layout; returns {track_id: (n, 128) float32 frames}."""
    rng = np.random.default_rng(seed)
    mels = {t: rng.standard_normal((n, 128)).astype(np.float32) for t, n in frames.items()}
    ids = list(mels)
    offsets = np.concatenate([[0], np.cumsum([len(mels[t]) for t in ids])]).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "track_ids", data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype("utf-8")
        )
        handle.create_dataset("offsets", data=offsets)
        handle.create_dataset("mel", data=np.concatenate([mels[t] for t in ids]))
        handle.attrs.update(
            {
                "sample_rate": 22050,
                "n_fft": 1024,
                "hop_length": 512,
                "n_mels": 128,
                "mean": STORE_MEAN,
                "std": STORE_STD,
            }
        )
    return mels


def build_dataset(root: Path) -> Path:
    data = root / "tiny"
    (data / "side_info").mkdir(parents=True)
    (data / "audio").mkdir()
    tracks = pd.DataFrame(
        {"track_id": list(LABELS_OF), "path": [f"audio/{t}.wav" for t in LABELS_OF]}
    )
    ds.write_tracks(data / "tracks.csv", tracks)
    annotations = pd.DataFrame(
        [(t, lab) for t, labs in LABELS_OF.items() for lab in labs], columns=["track_id", "label"]
    )
    ds.write_annotations(data / "annotations.csv", annotations)
    ds.write_side_info(data / "side_info" / "x.csv", list(SIDE), np.asarray(list(SIDE.values())))
    write_store(data / "mels.h5", FRAMES)
    split = {
        "seed": 0,
        "unseen_fraction": 0.4,
        "valid_fraction": 0.3,
        "annotations_sha256": splits.annotations_sha256(annotations),
        "seen": SEEN,
        "unseen": sorted(UNSEEN),
        "A": GROUPS["A"],
        "B": GROUPS["B"],
        "C": GROUPS["C"],
        "dropped": [],
        "train": {"A": ["a1", "a2"], "B": ["b1", "b2"], "A+B": ["a1", "a2", "b1", "b2"]},
        "valid": {"A": ["a3"], "B": ["b3"], "A+B": ["a3", "b3"]},
    }
    splits.save_split(split, data / "splits" / "split_seed0.json")
    return data


def write_run(
    run_dir: Path, data: Path, model: str = "embedding", train_setup: str = "A-X"
) -> Path:
    """config.json as train.py writes it and a placeholder model.keras."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train_config = config.TrainConfig(
        dataset=str(data),
        train_setup=train_setup,
        model=model,
        side_info="x",
        epochs=1,
        run_dir=str(run_dir),
    )
    meta = {
        "config": train_config.to_dict(),
        "dataset": "tiny",
        "dataset_dir": str(data),
        "split_path": str(data / "splits" / "split_seed0.json"),
        "side_info_path": str(data / "side_info" / "x.csv"),
        "mels_path": str(data / "mels.h5"),
        "seen_labels": SEEN,
        "checksums": {
            "annotations": sha256_file(data / "annotations.csv"),
            "split": sha256_file(data / "splits" / "split_seed0.json"),
            "side_info": sha256_file(data / "side_info" / "x.csv"),
            "mels": {"mean": STORE_MEAN, "std": STORE_STD, "n_tracks": len(FRAMES)},
        },
        "versions": {},
        "created": "2024-01-01T00:00:00",
        "train": {
            "tracks": 2,
            "valid_tracks": 1,
            "side_dim": len(SIDE["jazz"]),
            "n_labels": len(SEEN),
        },
    }
    write_json(run_dir / config.CONFIG_FILE, meta)
    write_placeholder_model(run_dir / config.MODEL_FILE)
    return run_dir


def write_summary(run_dir: Path) -> Path:
    """train_summary.json as train.finish_run writes it when training ends (after stamping the model
    with config.json's hash)."""
    config_sha256 = sha256_file(run_dir / config.CONFIG_FILE)
    train.stamp_model(run_dir / config.MODEL_FILE, config_sha256)
    summary = {
        "finished": True,
        "config_sha256": config_sha256,
        "model_sha256": sha256_file(run_dir / config.MODEL_FILE),
    }
    return write_json(run_dir / config.SUMMARY_FILE, summary)


def write_placeholder_model(path: Path) -> Path:
    """A zip archive that is not a Keras model (a .keras file is one): replaced by a real model in
    the slow tests."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("placeholder.txt", "replaced by a real model in the slow tests")
    return path


@pytest.fixture
def world(tmp_path):
    data = build_dataset(tmp_path)
    return data, write_run(tmp_path / "run", data)


def run_main(argv, capsys):
    code = evaluate.main(list(argv) + ["--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clean_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# --------------------------------------------------------------------------------------------------
# Fast tests (no TensorFlow)
# --------------------------------------------------------------------------------------------------
def test_import_is_light():
    code = (
        "import sys, evaluate, case_studies, aggregate, external; print('tensorflow' in "
        "sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


EXPECTED_SETUPS = {
    "B-Y": (["b1", "b2", "b3"], ["blues", "folk"]),
    "C-Y": (["c1", "c2", "c3"], ["blues", "folk"]),
    "(B+C)-Y": (["b1", "b2", "b3", "c1", "c2", "c3"], ["blues", "folk"]),
    "B-(X+Y)": (["b1", "b2", "b3"], ["jazz", "pop", "rock", "blues", "folk"]),
    "C-(X+Y)": (["c1", "c2", "c3"], ["jazz", "pop", "rock", "blues", "folk"]),
    "(B+C)-(X+Y)": (["b1", "b2", "b3", "c1", "c2", "c3"], ["jazz", "pop", "rock", "blues", "folk"]),
    "(A+B+C)-Y": (["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"], ["blues", "folk"]),
    "B-X": (["b1", "b2", "b3"], ["jazz", "pop", "rock"]),
}
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


@pytest.mark.parametrize("test", list(EXPECTED_SETUPS))
def test_setup_members_pick_the_hand_built_tracks_and_labels(world, test):
    run = protocol.load_run(world[1])
    tracks, labels, missing = protocol.setup_members(run.split, test, set(FRAMES))
    assert (tracks, labels) == EXPECTED_SETUPS[test]
    assert missing == (1 if "C" in test else 0)  # c4 has no mel


def test_setup_plan_per_model_and_training_setup():
    plan, notes = protocol.setup_plan("embedding", "A-X")
    assert plan == [
        ("B-Y", "annotation"),
        ("C-Y", "annotation"),
        ("(B+C)-Y", "annotation"),
        ("B-(X+Y)", "annotation"),
        ("C-(X+Y)", "annotation"),
        ("(B+C)-(X+Y)", "annotation"),
        ("(B+C)-Y", "retrieval"),
        ("(A+B+C)-Y", "retrieval"),
        ("B-X", "retrieval"),
    ]
    assert notes == []
    plan, notes = protocol.setup_plan("embedding", "(A+B)-X")
    assert len(plan) == 8 and ("B-X", "retrieval") not in plan and "A-X only" in notes[0]
    assert protocol.setup_plan("classification", "A-X")[0] == [("B-X", "retrieval")]
    plan, notes = protocol.setup_plan("classification", "B-X")
    assert plan == [] and any("seen labels (X)" in n for n in notes)


def feature_map(calls=None):
    """A stand-in model: (b, 130, 128) segments -> (b, 3) features, recording the batch sizes it is
    called with."""

    def predict(batch):
        if calls is not None:
            calls.append(len(batch))
        return np.stack([batch.sum(axis=(1, 2)), batch[:, 0, 0], batch[:, -1, 5] ** 2], axis=1)

    return predict


@pytest.mark.parametrize("budget", [1, 3, 7, 1000])
def test_batched_track_embeddings_equal_the_definition(world, budget):
    """embeddings.track_embeddings (many tracks per predict call) = embeddings.track_embedding of
    each track."""
    with MelStore(world[0] / "mels.h5", in_memory=False) as store:
        tracks = ["c3", "a1", "b3", "a3", "b2", "c1", "a2", "b1", "c2"]  # not in store order
        rows = [store.index(t) for t in tracks]
        expected = np.stack(
            [
                embeddings.track_embedding(feature_map(), store.segments(r, SEGMENT_FRAMES))
                for r in rows
            ]
        )
        calls = []
        batched = embeddings.track_embeddings(
            feature_map(calls), store, rows, budget, progress=False
        )
        # a3 (50 frames) and b3 (129): tiled
        k = {t: max(1, n // SEGMENT_FRAMES) for t, n in FRAMES.items()}
        assert [len(store.segments(r, SEGMENT_FRAMES)) for r in rows] == [k[t] for t in tracks]
    np.testing.assert_allclose(batched, expected, rtol=1e-12)
    assert sum(calls) == sum(k.values()) and (len(calls) == 1) == (budget == 1000)


def test_cosine_scores_by_hand():
    tracks = np.array([[1.0, 0.0], [3.0, 4.0]])
    labels = np.array([[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    expected = np.array([[0.0, 1 / np.sqrt(2), -1.0], [0.8, 7 / 5 / np.sqrt(2), -0.6]])
    np.testing.assert_allclose(embeddings.cosine_scores(tracks, labels), expected, rtol=1e-6)


def fake_embeddings(calls):
    def compute(ids):
        calls.append(list(ids))
        return np.asarray([[float(t[1:]), 1.0] for t in ids], dtype=np.float32)

    def labels():
        calls.append("labels")
        return np.ones((2, 2), dtype=np.float32)

    return compute, labels


def test_cache_computes_only_what_is_missing_and_recomputes_when_stale(tmp_path):
    path, calls = tmp_path / "embeddings.h5", []
    compute, labels = fake_embeddings(calls)
    fp = {"model_sha256": "a", "store": {"n_tracks": 3}}
    out, lab, info = embeddings.cached_embeddings(
        path, fp, ["t1", "t2"], compute, ["x", "y"], labels
    )
    assert (
        calls == [["t1", "t2"], "labels"] and info["computed_tracks"] == 2 and not info["rejected"]
    )
    out, lab, info = embeddings.cached_embeddings(
        path, fp, ["t3", "t1"], compute, ["x", "y"], labels
    )
    assert calls[2:] == [["t3"]]
    assert info == {
        "cached_tracks": 1,
        "computed_tracks": 1,
        "labels_cached": True,
        "rejected": False,
    }
    np.testing.assert_array_equal(out[:, 0], [3.0, 1.0])
    out, lab, info = embeddings.cached_embeddings(
        path, fp, ["t2", "t3", "t1"], compute, ["x", "y"], labels
    )
    assert len(calls) == 3 and info["computed_tracks"] == 0  # everything from the cache
    np.testing.assert_array_equal(out[:, 0], [2.0, 3.0, 1.0])
    stale = {"model_sha256": "b", "store": {"n_tracks": 3}}
    _, _, info = embeddings.cached_embeddings(path, stale, ["t1"], compute, ["x", "y"], labels)
    assert calls[3:] == [["t1"], "labels"] and info["rejected"]  # another model: recomputed whole
    embeddings.cached_embeddings(path, stale, ["t1"], compute, ["x", "y"], labels, force=True)
    assert calls[5:] == [["t1"], "labels"]


@pytest.mark.parametrize(
    "damage", ["permuted ids", "nan row", "inf label", "truncated", "old layout"]
)
def test_a_damaged_cache_is_recomputed(tmp_path, damage):
    """Hardening 7: a cache whose ids were permuted or whose rows are not finite is detected and
    recomputed."""
    path, calls = tmp_path / "embeddings.h5", []
    compute, labels = fake_embeddings(calls)
    fp = {"model_sha256": "a"}
    embeddings.cached_embeddings(path, fp, ["t1", "t2", "t3"], compute, ["x", "y"], labels)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "old layout":  # what the previous version of this code wrote
        with h5py.File(path, "w") as handle:
            handle.attrs["fingerprint"] = json.dumps(fp)
            handle.create_dataset(
                "tracks/ids", data=np.asarray(["t1"], dtype=object), dtype=h5py.string_dtype()
            )
    else:
        with h5py.File(path, "r+") as handle:
            if damage == "permuted ids":
                handle["track_ids"][...] = np.asarray(["t3", "t1", "t2"], dtype=object)
            elif damage == "nan row":
                handle["tracks"][1] = np.nan
            else:
                handle["labels"][0, 0] = np.inf
    out, lab, info = embeddings.cached_embeddings(
        path, fp, ["t1", "t2", "t3"], compute, ["x", "y"], labels
    )
    assert calls[2:] == [["t1", "t2", "t3"], "labels"] and info["rejected"]
    np.testing.assert_array_equal(out[:, 0], [1.0, 2.0, 3.0])
    assert embeddings.read_cache(path, fp) is not None  # rewritten whole and intact


def test_gzsl_values_seen_unseen_and_harmonic_mean():
    # 3 tracks x (2 seen + 2 unseen) labels; track 2 has no seen positive, so it is skipped in the
    # seen part.
    scores = np.array([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.6], [0.5, 0.4, 0.3, 0.2]])
    labels = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 1, 0]])
    seen_mask = np.array([True, True, False, False])
    parts = protocol.gzsl_values(scores, labels, seen_mask)
    assert parts["seen"] == metrics.annotation_metrics(scores[:, :2], labels[:, :2])
    assert parts["unseen"] == metrics.annotation_metrics(scores[:, 2:], labels[:, 2:])
    # Seen part: tracks 0 and 1 rank their positive first -> AUC 1. Unseen part: tracks 0 (0.3 <
    # 0.8) and 1 (0.1 < 0.6) rank their positive below the negative -> AUC 0; track 2 ranks it first
    # -> AUC 1; mean 1/3.
    assert parts["seen"]["AUC-i"] == 1.0 and parts["seen"]["skipped"] == 1
    assert parts["unseen"]["AUC-i"] == pytest.approx(1 / 3)
    assert parts["harmonic"]["AUC-i"] == pytest.approx(2 * 1.0 * (1 / 3) / (1.0 + 1 / 3))  # = 0.5
    assert parts["harmonic"]["evaluated"] == 2 and parts["harmonic"]["skipped"] == 1


def test_save_scores_npz_reads_back_without_pickle(tmp_path):
    scores = np.array([[0.5, -0.25]], dtype=np.float32)
    path = protocol.save_scores(
        tmp_path, "(B+C)-(X+Y)", scores, np.array([[1, 0]]), ["7"], ["jazz", "folk"]
    )
    assert path == tmp_path / "scores" / "BC-XY.npz"
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"scores", "labels", "track_ids", "label_names", "test"}
        np.testing.assert_array_equal(npz["scores"], scores)
        assert npz["labels"].dtype == np.uint8 and npz["labels"].tolist() == [[1, 0]]
        assert npz["track_ids"].tolist() == ["7"] and npz["label_names"].tolist() == [
            "jazz",
            "folk",
        ]
        assert str(npz["test"]) == "(B+C)-(X+Y)"
    assert sorted(p.name for p in path.parent.iterdir()) == ["BC-XY.npz"]  # no temporary file left


GLOVE_TEXT = (
    "the 0.1 0.2 0.3 0.4\n"
    "jazz 1 2 3 4\n"
    "broken 1 2\n"
    "new york 5 6 7 8\n"
    "lovely 0.5 0.25 0 -1"
)  # last line without a newline


def test_word_vector_uses_glove_only_for_glove_side_info(world, tmp_path):
    data, run_dir = world
    run = protocol.load_run(run_dir)
    vector, source = case_studies.word_vector(run, "guitar", progress=False)
    np.testing.assert_array_equal(vector, np.float32(SIDE["guitar"]))
    assert source == str(data / "side_info" / "x.csv")
    with pytest.raises(protocol.EvaluationError, match="'lovely' has no side-information vector"):
        case_studies.word_vector(run, "lovely", progress=False)
    run.meta["config"]["side_info"] = "glove"
    with pytest.raises(protocol.EvaluationError, match="records no glove_path"):
        case_studies.word_vector(run, "lovely", progress=False)
    glove = tmp_path / "glove.txt"
    write_json(data / "summary.json", {"glove_path": str(glove)})
    with pytest.raises(ds.DatasetError, match="glove.txt does not exist"):
        case_studies.word_vector(run, "lovely", progress=False)
    glove.write_text(GLOVE_TEXT, encoding="utf-8")
    vector, source = case_studies.word_vector(run, "lovely", progress=False)
    np.testing.assert_array_equal(vector, [0.5, 0.25, 0, -1])
    assert source == str(glove) and vector.dtype == np.float32
    np.testing.assert_array_equal(
        case_studies.word_vector(run, "new york", progress=False)[0], [5, 6, 7, 8]
    )
    with pytest.raises(protocol.EvaluationError, match="try 'jazz'"):
        case_studies.word_vector(run, "JAZZ", progress=False)
    glove.write_text("jazz 1 2 3\nlovely 1 2 3\n", encoding="utf-8")
    with pytest.raises(protocol.EvaluationError, match="3-d vectors"):
        case_studies.word_vector(run, "lovely", progress=False)


def fake_record(train="A-X", auc=0.5):
    return {
        "dataset": "tiny",
        "model": "embedding",
        "side_info": "x",
        "train": train,
        "test": "B-Y",
        "task": "annotation",
        "part": "all",
        "AUC-i": auc,
        "evaluated": 3,
        "skipped": 0,
    }


def write_results(run_dir: Path, records: list[dict], finished: bool | None = None) -> Path:
    """results.json of `records` with what evaluate.py records beside them: whether training had
    finished (default: as the run is now) and the run's provenance now."""
    run = protocol.load_run(run_dir)
    identity = {"finished": run.finished if finished is None else finished}
    identity["provenance"] = run.provenance
    return write_json(run_dir / "results.json", [{**r, **identity} for r in records])


def test_collect_reuses_results_by_content_and_tells_twin_runs_apart(world, tmp_path, monkeypatch):
    """Issue 21: results.json is reused when it was computed from this model.keras, config.json and
    data at this stage of training, whatever the file times; otherwise the run is re-evaluated, the
    note saying why (the old rule, "newer than model.keras", reused a results.json copied from
    another run or written while training was still running)."""
    data, first = world
    second = write_run(tmp_path / "second", data)
    third = write_run(tmp_path / "third", data, train_setup="B-X")
    for run_dir, record in (
        (first, fake_record(auc=0.25)),
        (second, fake_record(auc=0.75)),
        (third, fake_record("B-X")),
    ):
        write_summary(run_dir)
        write_results(run_dir, [record])
        os.utime(run_dir / "model.keras")  # newer than results.json: the same model all the same
    records, notes = aggregate.collect([first, second, third])
    # first and second give the same setup: told apart by "run"; third is unique and stays as it
    # was.
    assert [(r.get("run"), r["AUC-i"]) for r in records] == [
        ("run", 0.25),
        ("second", 0.75),
        (None, 0.5),
    ]
    assert all(r["finished"] is True and "provenance" in r for r in records)
    assert any("told apart by a 'run' field" in n for n in notes)
    assert sum("reusing results.json" in n for n in notes) == 3
    evaluated = []
    monkeypatch.setattr(
        protocol,
        "evaluate_run",
        lambda run, **kwargs: (evaluated.append((run.run_dir.name, kwargs)) or [], []),
    )

    def reason(run_dir, **kwargs):
        _, notes = aggregate.collect([run_dir], **kwargs)
        return next(n.split("evaluating: ")[1] for n in notes if "evaluating: " in n)

    assert reason(first, save=True) == "no scores/ for --save-scores"
    assert reason(first, force=True) == "--force"
    shutil.copyfile(second / "results.json", first / "results.json")  # another run's results
    assert "config_sha256" in reason(first) and "model_sha256" in reason(first)
    write_json(first / "results.json", [fake_record()])  # written before provenance was recorded
    assert (
        reason(first) == "results.json does not record what it was computed from (an older version)"
    )
    write_results(first, [fake_record()], finished=False)  # while training was still running
    assert reason(first) == "results.json is out of date (its finished differ from the run's now)"
    unfinished = write_run(tmp_path / "unfinished", data)
    write_results(unfinished, [fake_record()])
    with zipfile.ZipFile(unfinished / "model.keras", "a") as model:  # training saved a better one
        model.writestr("epoch.txt", "7")
    assert reason(unfinished, include_unfinished=True) == (
        "results.json is out of date (its model_sha256 differ from the run's now)"
    )
    assert [name for name, _ in evaluated] == ["run"] * 6 + ["unfinished"]
    records, notes = aggregate.collect([unfinished])  # left out, before it is evaluated
    assert records == [] and notes[0].startswith("left out 1 unfinished run(s)")
    assert len(evaluated) == 7
    write_json(second / "results.json", {"not": "a list"})
    with pytest.raises(protocol.EvaluationError, match="not a list of result records"):
        aggregate.collect([second])


def test_error_missing_model_and_missing_config(world, capsys, tmp_path):
    run_dir = world[1]
    (run_dir / config.MODEL_FILE).unlink()
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, "has no model.keras", "train.py --run-dir")
    code, _, err = run_main(["--run-dir", str(tmp_path)], capsys)
    assert_clean_error(code, err, "has no config.json")
    code, _, err = run_main(["--collect", str(tmp_path / "nowhere"), str(run_dir)], capsys)
    assert_clean_error(code, err, "nowhere does not exist")


def test_error_run_dir_is_a_file(world, capsys):
    """Hardening 10: --run-dir naming a file gets one message saying so."""
    code, _, err = run_main(["--run-dir", str(world[1] / "config.json")], capsys)
    assert_clean_error(code, err, "config.json is a file")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda meta: '{"config": ', "is not valid JSON"),
        (lambda meta: "[1, 2]", "'config' is None"),
        (lambda meta: {**meta, "checksums": []}, "'checksums' is []"),
        (lambda meta: {**meta, "split_path": None}, "'split_path' is None"),
        (lambda meta: {**meta, "dataset_dir": 5}, "'dataset_dir' is 5"),
        (lambda meta: {**meta, "train": "4"}, "'train' is '4'"),
        (
            lambda meta: {**meta, "config": {**meta["config"], "model": "cnn"}},
            "'config.model' is 'cnn'",
        ),
        (
            lambda meta: {**meta, "config": {**meta["config"], "train_setup": "C-X"}},
            "'config.train_setup' is 'C-X'",
        ),
        (lambda meta: {**meta, "side_info_path": None}, "an embedding run without side_info_path"),
    ],
)
def test_error_damaged_config_json(world, capsys, corrupt, message):
    """Hardening 10: a hand-corrupted config.json gets one message naming it, never a traceback."""
    path = world[1] / "config.json"
    damaged = corrupt(json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    code, _, err = run_main(["--run-dir", str(world[1])], capsys)
    assert_clean_error(code, err, str(path), message)


@pytest.mark.parametrize(
    "change, message",
    [
        ("annotations", "annotations file"),
        ("split", "split file"),
        ("side_info", "side_info file"),
        ("mels", "mean is 0.25, config.json recorded 0.3"),
    ],
)
def test_error_when_the_data_no_longer_matches_config_json(world, capsys, change, message):
    data, run_dir = world
    if change == "annotations":
        with open(data / "annotations.csv", "a", encoding="utf-8") as handle:
            handle.write("a1,pop\n")
    elif change == "split":
        with open(data / "splits" / "split_seed0.json", "a", encoding="utf-8") as handle:
            handle.write("\n")
    elif change == "side_info":
        ds.write_side_info(
            data / "side_info" / "x.csv", list(SIDE), np.asarray(list(SIDE.values())) * 2
        )
    else:
        meta = json.loads((run_dir / "config.json").read_text())
        meta["checksums"]["mels"]["mean"] = 0.3
        write_json(run_dir / "config.json", meta)
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, "no longer matches its data", message)


def test_error_split_made_from_other_annotations(world, capsys):
    """Hardening 4: the split is checked against the annotations even when config.json's checksums
    agree (a run trained with an explicit --split made before the annotations changed)."""
    data, run_dir = world
    with open(data / "annotations.csv", "a", encoding="utf-8") as handle:
        handle.write("a1,pop\n")
    meta = json.loads((run_dir / "config.json").read_text())
    meta["checksums"]["annotations"] = sha256_file(data / "annotations.csv")
    write_json(run_dir / "config.json", meta)
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, "split_seed0.json", "splits.make")


def test_error_model_swapped_after_training(world, capsys):
    """Hardening 6: a model.keras other than the one train_summary.json records is refused, naming
    the run."""
    run_dir = world[1]
    write_json(run_dir / "train_summary.json", {"finished": True, "model_sha256": "0" * 64})
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, f"run {run_dir}", "model.keras is not the model this run trained")
    (run_dir / "train_summary.json").write_text("{broken")
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(code, err, "train_summary.json is damaged")
    write_json(
        run_dir / "train_summary.json", {"model_sha256": sha256_file(run_dir / "model.keras")}
    )
    # the recorded model
    assert protocol.load_run(run_dir).model_sha256 == sha256_file(run_dir / "model.keras")


def test_error_word_without_a_vector(world, capsys):
    code, _, err = run_main(["--run-dir", str(world[1]), "--query", "banjo"], capsys)
    assert_clean_error(code, err, "'banjo' has no side-information vector", "x.csv")
    code, _, err = run_main(["--run-dir", str(world[1]), "--neighbors", "banjo"], capsys)
    assert_clean_error(code, err, "'banjo' has no side-information vector")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--query", "jazz", "--collect", "RUN"], "use --run-dir, not --collect"),
        (["--query", "jazz", "--top", "0"], "--top must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--include-unfinished"], "--include-unfinished: used with --collect only"),
        (["--annotate", "AUDIO", "--max-seconds", "-5"], "--max-seconds must be a positive number"),
        (["--annotate", "AUDIO", "--max-seconds", "0"], "--max-seconds must be a positive number"),
        (
            ["--annotate", "AUDIO", "--max-seconds", "inf"],
            "--max-seconds must be a positive number",
        ),
        (
            ["--annotate", "AUDIO", "--max-seconds", "nan"],
            "--max-seconds must be a positive number",
        ),
    ],
)
def test_error_bad_flags(world, capsys, tmp_path, argv, message):
    """Includes hardening 8: --annotate FILE --max-seconds -5 is refused naming the flag."""
    audio = tmp_path / "tone.wav"
    import soundfile

    soundfile.write(audio, np.zeros(22050, dtype=np.float32), 22050)
    argv = [str(world[1]) if a == "RUN" else str(audio) if a == "AUDIO" else a for a in argv]
    code, _, err = run_main(
        (["--run-dir", str(world[1])] if "--collect" not in argv else []) + argv, capsys
    )
    assert_clean_error(code, err, message)


def test_evaluate_py_as_a_script_gives_one_error_line(world):
    """Run as `python evaluate.py`, a case study's error is caught too (one EvaluationError)."""
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--run-dir", str(world[1]), "--query", "banjo"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.startswith(
        "error: 'banjo' has no side-information vector"
    )


# --------------------------------------------------------------------------------------------------
# Slow tests: a real (untrained) model saved to model.keras
# --------------------------------------------------------------------------------------------------
def save_model(
    path: Path,
    model_kind: str,
    seed: int = 0,
    side_dim: int = len(SIDE["jazz"]),
    n_labels: int = len(SEEN),
):
    import keras

    import models

    keras.utils.set_random_seed(seed)
    model = (
        models.build_embedding_model(side_dim)
        if model_kind == "embedding"
        else models.build_classification_model(n_labels)
    )
    model.save(path)
    return keras.saving.load_model(path, compile=False)


def independent_track_embeddings(module, data: Path, tracks) -> np.ndarray:
    """Mean of per-segment outputs, one direct call per track (no batching, no cache)."""
    with MelStore(data / "mels.h5", in_memory=False) as store:
        return np.stack(
            [
                np.asarray(module(store.segments(store.index(t)), training=False)).mean(axis=0)
                for t in tracks
            ]
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An embedding run (A-X) evaluated once through the command line with --save-scores."""
    import models

    root = tmp_path_factory.mktemp("evaluate_world")
    data = build_dataset(root)
    run_dir = write_run(root / "run", data)
    model = save_model(run_dir / config.MODEL_FILE, "embedding")
    code = evaluate.main(
        ["--run-dir", str(run_dir), "--save-scores", "--format", "json", "--no-progress"]
    )
    assert code == 0
    return {
        "data": data,
        "run_dir": run_dir,
        "audio": models.get_audio_module(model),
        "semantic": models.get_semantic_module(model),
    }


@pytest.mark.slow
def test_track_embedding_is_the_mean_of_segment_embeddings(trained):
    run = protocol.load_run(trained["run_dir"])
    tracks = list(FRAMES)
    with MelStore(run.mels_path, in_memory=False) as store:
        track_emb, label_emb, info = protocol.embed(run, store, tracks, progress=False)
        assert info == {
            "cached_tracks": 9,
            "computed_tracks": 0,
            "labels_cached": True,
            "rejected": False,
        }
        expected = independent_track_embeddings(trained["audio"], trained["data"], tracks)
        np.testing.assert_allclose(track_emb, expected, rtol=1e-4, atol=1e-5)
        # Label embeddings of the split's labels (seen, then unseen) = the semantic module on the
        # raw vectors.
        assert run.labels == SEEN + sorted(UNSEEN)
        vectors = np.asarray([SIDE[lab] for lab in run.labels], dtype=np.float32)
        np.testing.assert_allclose(
            label_emb, np.asarray(trained["semantic"](vectors)), rtol=1e-5, atol=1e-6
        )
        # Computed afresh (force) with a batch size that splits tracks across batches: the same.
        fresh, _, info = protocol.embed(
            run, store, tracks, force=True, batch_size=3, progress=False
        )
    assert info["computed_tracks"] == 9
    np.testing.assert_allclose(fresh, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_results_json_round_trip_and_metrics_from_saved_scores(trained):
    run_dir, data = trained["run_dir"], trained["data"]
    records = json.loads((run_dir / "results.json").read_text())
    keys = [(r["train"], r["test"], r["task"], r["part"]) for r in records]
    expected = [("A-X", t, task, "all") for t, task in protocol.setup_plan("embedding", "A-X")[0]]
    expected += [
        ("A-X", t, "annotation", p)
        for t in ("B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)")
        for p in ("seen", "unseen", "harmonic")
    ]
    assert sorted(keys) == sorted(expected) and len(set(keys)) == len(keys)
    assert all(
        r["dataset"] == "tiny" and r["model"] == "embedding" and r["side_info"] == "x"
        for r in records
    )

    tracks = list(FRAMES)
    track_emb = independent_track_embeddings(trained["audio"], data, tracks)
    label_emb = np.asarray(trained["semantic"](np.asarray(list(SIDE.values()), dtype=np.float32)))
    by_key = {(r["test"], r["task"], r["part"]): r for r in records}
    for test, (want_tracks, want_labels) in EXPECTED_SETUPS.items():
        with np.load(run_dir / "scores" / f"{SLUG[test]}.npz", allow_pickle=False) as npz:
            assert (
                npz["track_ids"].tolist() == want_tracks
                and npz["label_names"].tolist() == want_labels
            )
            assert str(npz["test"]) == test
            truth = np.array(
                [[lab in LABELS_OF[t] for lab in want_labels] for t in want_tracks], dtype=np.uint8
            )
            np.testing.assert_array_equal(npz["labels"], truth)
            rows = [tracks.index(t) for t in want_tracks]
            cols = [list(SIDE).index(lab) for lab in want_labels]
            a, b = track_emb[rows], label_emb[cols]
            cosine = (
                (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None]
            )
            np.testing.assert_allclose(npz["scores"], cosine, rtol=1e-4, atol=1e-5)
            scores, labels = npz["scores"], npz["labels"]
        for task in ("annotation", "retrieval"):
            if (test, task, "all") in by_key:
                metric = (
                    metrics.annotation_metrics
                    if task == "annotation"
                    else metrics.retrieval_metrics
                )
                recomputed = metric(scores, labels)
                record = by_key[(test, task, "all")]
                for name, value in recomputed.items():
                    assert record[name] == (None if np.isnan(value) else value), (test, task, name)
    # C-Y: c3 carries both unseen labels (all positive) -> skipped.
    assert by_key[("C-Y", "annotation", "all")]["skipped"] == 1
    # (B+C)-(X+Y) harmonic part = harmonic mean of the seen and unseen parts.
    seen, unseen = (
        by_key[("(B+C)-(X+Y)", "annotation", "seen")],
        by_key[("(B+C)-(X+Y)", "annotation", "unseen")],
    )
    harmonic = by_key[("(B+C)-(X+Y)", "annotation", "harmonic")]
    assert harmonic["MAP-i"] == pytest.approx(
        2 * seen["MAP-i"] * unseen["MAP-i"] / (seen["MAP-i"] + unseen["MAP-i"])
    )
    assert by_key[("C-(X+Y)", "annotation", "seen")]["AUC-i"] is None  # C tracks have no seen label
    # A re-evaluation from the cache gives the same records; the label map exists.
    again, notes = protocol.evaluate_run(run_dir, progress=False)
    assert again == records and any("9 from embeddings.h5, 0 computed." in n for n in notes)
    assert (run_dir / "label_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_permuted_cache_gives_the_same_results(trained):
    """Hardening 7, end to end: track ids permuted in embeddings.h5 are detected, the cache is
    recomputed, and the records equal those of the intact cache (the old code returned the permuted
    rows: wrong metrics)."""
    run_dir = trained["run_dir"]
    records = json.loads((run_dir / "results.json").read_text())
    with h5py.File(run_dir / "embeddings.h5", "r+") as handle:
        ids = handle["track_ids"].asstr()[...]
        handle["track_ids"][...] = np.asarray(np.roll(ids, 1), dtype=object)
    again, notes = protocol.evaluate_run(run_dir, progress=False)
    assert any(
        "0 from embeddings.h5, 9 computed (the cache did not match this run: replaced)" in n
        for n in notes
    )
    assert json.dumps(again) == json.dumps(records)


@pytest.mark.slow
@pytest.mark.parametrize(
    "run_model, saved, message",
    [
        (
            "embedding",
            {"model_kind": "embedding", "side_dim": 5},
            "side information (None, 5) (config.json: (None, 4))",
        ),
        (
            "classification",
            {"model_kind": "classification", "n_labels": 4},
            "labels (None, 4) (config.json: (None, 3))",
        ),
        (
            "embedding",
            {"model_kind": "classification"},
            "kind classification (config.json: embedding)",
        ),
    ],
)
def test_error_model_that_does_not_fit_the_config(
    trained, tmp_path, capsys, run_model, saved, message
):
    """Hardening 6: a model from another run (another side-information dimension, another label
    count, another kind) is refused with one message naming the run, before any score is computed.
    """
    run_dir = write_run(tmp_path / "swapped", trained["data"], model=run_model)
    save_model(run_dir / config.MODEL_FILE, **saved)
    code, _, err = run_main(["--run-dir", str(run_dir)], capsys)
    assert_clean_error(
        code, err, f"run {run_dir}: model.keras does not fit the run's config.json", message
    )
    assert not (run_dir / "results.json").exists() and not (run_dir / "embeddings.h5").exists()


@pytest.mark.slow
def test_collect_merges_runs_and_prints_tables(trained, tmp_path, capsys):
    """Issue 21 too: --collect averages finished runs only; an unfinished one (the trained fixture
    has no train_summary.json) is left out with a note, or with --include-unfinished shown apart,
    its rows marked "training=unfinished"."""
    copy = write_run(tmp_path / "second", trained["data"], train_setup="(A+B)-X")
    (copy / config.MODEL_FILE).write_bytes((trained["run_dir"] / config.MODEL_FILE).read_bytes())
    write_summary(copy)
    argv = ["--collect", str(trained["run_dir"]), str(copy)]
    code, out, err = run_main(argv + ["--format", "json"], capsys)
    assert code == 0, err
    assert {r["train"] for r in json.loads(out)} == {"(A+B)-X"}
    assert "left out 1 unfinished run(s) (no train_summary.json" in err
    code, out, err = run_main(argv + ["--include-unfinished", "--format", "table"], capsys)
    assert code == 0, err
    assert (
        "Table 2" in out
        and "Table 3" in out
        and "(A+B)-X" in out
        and "generalized zero-shot" in out
    )
    assert "training=unfinished" in out and "training=finished" in out
    assert "reusing results.json" in err
    merged = json.loads((copy / "results.json").read_text())
    assert {r["train"] for r in merged} == {"(A+B)-X"} and not any(
        r["test"] == "B-X" for r in merged
    )
    assert all(r["finished"] is True for r in merged)


@pytest.mark.slow
def test_query_and_neighbors_on_a_known_case(trained, capsys):
    run_dir, data = trained["run_dir"], trained["data"]
    code, out, err = run_main(
        ["--run-dir", str(run_dir), "--query", "guitar", "--neighbors", "jazz", "--format", "json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    query = result["query"]
    assert query["status"] == "outside the label set" and query["n_tracks"] == 9
    tracks = list(FRAMES)
    track_emb = independent_track_embeddings(trained["audio"], data, tracks)
    word = np.asarray(trained["semantic"](np.asarray([SIDE["guitar"]], dtype=np.float32)))[0]
    cosine = track_emb @ word / np.linalg.norm(track_emb, axis=1) / np.linalg.norm(word)
    assert [r["track_id"] for r in query["tracks"]] == [tracks[i] for i in np.argsort(-cosine)[:5]]
    np.testing.assert_allclose(
        [r["score"] for r in query["tracks"]], np.sort(cosine)[::-1][:5], rtol=1e-4
    )
    assert query["tracks"][0]["labels"] == LABELS_OF[query["tracks"][0]["track_id"]]
    assert query["tracks"][0]["path"] == f"audio/{query['tracks'][0]['track_id']}.wav"

    near = result["neighbors"]
    assert near["status"] == "seen label"
    assert [r["label"] for r in near["side_information"]] == ["blues", "pop", "rock", "folk"]
    assert [r["unseen"] for r in near["side_information"]] == [True, False, False, True]
    np.testing.assert_allclose(
        [r["cosine"] for r in near["side_information"]], [0.9487, 0.4472, 0.1400, 0.0], atol=1e-4
    )
    names = SEEN + UNSEEN
    emb = np.asarray(trained["semantic"](np.asarray([SIDE[n] for n in names], dtype=np.float32)))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit[0]
    assert [r["label"] for r in near["embedding"]] == [
        names[i] for i in np.argsort(-sims) if names[i] != "jazz"
    ]

    code, out, _ = run_main(["--run-dir", str(run_dir), "--query", "blues", "--top", "2"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and "unseen label" in lines[0] and len(lines) == 4  # title, header, 2 rows
    assert lines[1].split() == ["rank", "track_id", "score", "labels", "path"]
    for fmt, first in (
        ("csv", "# Nearest labels to 'jazz'"),
        ("markdown", "**Nearest labels to 'jazz'"),
    ):
        code, out, _ = run_main(
            ["--run-dir", str(run_dir), "--neighbors", "jazz", "--format", fmt], capsys
        )
        assert code == 0 and out.startswith(first) and "blues (unseen)" in out
    assert (
        "| rank | side information | cosine | embedding | cosine |" in out
        and out.count("\n") == 2 + 2 + 4
    )


@pytest.mark.slow
def test_annotate_an_audio_file(trained, tmp_path, capsys):
    import soundfile

    path = tmp_path / "tone.wav"
    t = np.arange(int(22050 * 4.5)) / 22050
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t), 22050)
    code, out, err = run_main(
        ["--run-dir", str(trained["run_dir"]), "--annotate", str(path), "--format", "json"], capsys
    )
    assert code == 0, err
    result = json.loads(out)["annotate"]
    frames = frontend.file_frames(path, STORE_MEAN, STORE_STD)
    segments = frames[: len(frames) // SEGMENT_FRAMES * SEGMENT_FRAMES].reshape(
        -1, SEGMENT_FRAMES, 128
    )
    assert result["segments"] == len(segments) == 1
    track = np.asarray(trained["audio"](segments, training=False)).mean(axis=0)
    names = SEEN + UNSEEN
    emb = np.asarray(trained["semantic"](np.asarray([SIDE[n] for n in names], dtype=np.float32)))
    cosine = emb @ track / np.linalg.norm(emb, axis=1) / np.linalg.norm(track)
    assert [r["label"] for r in result["labels"]] == [names[i] for i in np.argsort(-cosine)]
    np.testing.assert_allclose(
        [r["score"] for r in result["labels"]], np.sort(cosine)[::-1], rtol=1e-4
    )
    assert {r["label"] for r in result["labels"] if r["unseen"]} == set(UNSEEN)
    code, out, _ = run_main(
        ["--run-dir", str(trained["run_dir"]), "--annotate", str(path), "--max-seconds", "2"],
        capsys,
    )
    # 2 s = 87 frames: tiled to one segment
    assert code == 0 and "(unseen)" in out and "(1 segments)" in out
    code, _, err = run_main(
        ["--run-dir", str(trained["run_dir"]), "--annotate", str(tmp_path / "none.wav")], capsys
    )
    assert_clean_error(code, err, "none.wav")
    # issue 21: 1e30 samples printed a table of nan
    soundfile.write(tmp_path / "loud.wav", np.full(22050, 1e30, np.float32), 22050, "FLOAT")
    code, out, err = run_main(
        ["--run-dir", str(trained["run_dir"]), "--annotate", str(tmp_path / "loud.wav")], capsys
    )
    assert_clean_error(code, err, "loud.wav: decoded samples reach 1e+30")
    assert out == ""


@pytest.mark.slow
def test_classification_run_averages_sigmoids_on_b_x(trained, tmp_path):
    run_dir = write_run(tmp_path / "clf", trained["data"], model="classification")
    model = save_model(run_dir / config.MODEL_FILE, "classification", seed=3)
    records, notes = protocol.evaluate_run(run_dir, save=True, progress=False)
    # side information: null, the classification model reads none
    assert [(r["test"], r["task"], r["part"], r["side_info"]) for r in records] == [
        ("B-X", "retrieval", "all", None)
    ]
    assert any("classification model scores only its seen labels" in n for n in notes)
    with MelStore(trained["data"] / "mels.h5", in_memory=False) as store:
        expected = np.stack(
            [
                np.asarray(model(store.segments(store.index(t)), training=False)).mean(axis=0)
                for t in EXPECTED_SETUPS["B-X"][0]
            ]
        )
    with np.load(run_dir / "scores" / "B-X.npz", allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["scores"], expected, rtol=1e-4, atol=1e-6)
        assert (
            records[0]["AUC-l"] == metrics.retrieval_metrics(npz["scores"], npz["labels"])["AUC-l"]
        )
    assert not (run_dir / "label_map.png").exists()
    run = protocol.load_run(run_dir)
    with pytest.raises(protocol.EvaluationError, match="classification model"):
        case_studies.neighbors(run, "jazz", progress=False)
    result = case_studies.query(run, "pop", top=3, progress=False)
    assert result["vector_from"] == "classification output" and len(result["tracks"]) == 3
    with pytest.raises(protocol.EvaluationError, match="not one of the 3 seen labels"):
        case_studies.query(run, "blues", progress=False)
