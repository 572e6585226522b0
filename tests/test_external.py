"""Tests of external.py: the exchange format, scoring another model's embeddings or scores
(evaluate.py --external) and exporting a run's embeddings (--export-embeddings).

Fast tests use a generated dataset directory with annotations and a split only (scoring needs no
audio): 400 tracks, 25 labels. The slow test trains nothing but saves an untrained model in
test_evaluate's tiny world, evaluates it, exports it and scores the export.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_evaluate import (
    LABELS_OF,
    NOT_STORED,
    assert_clean_error,
    build_dataset,
    run_main,
    save_model,
    write_run,
)

import config
import dataset_dir as ds
import embeddings
import external
import metrics
import protocol
import splits
import tables

N_TRACKS, N_LABELS, DIM = 400, 25, 16


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A dataset directory (annotations.csv, splits/split_seed0.json) and the split's tracks and
    labels."""
    data = tmp_path_factory.mktemp("external") / "gen"
    rng = np.random.default_rng(7)
    labels = [f"tag{j:02d}" for j in range(N_LABELS)]
    pairs = [
        (f"t{i:03d}", labels[j])
        for i in range(N_TRACKS)
        for j in rng.choice(N_LABELS, size=rng.integers(1, 4), replace=False)
    ]
    annotations = pd.DataFrame(pairs, columns=["track_id", "label"])
    ds.write_annotations(ds.annotations_path(data), annotations)
    split = splits.make_split(annotations, seed=0)
    splits.save_split(split, splits.default_split_path(data))
    tracks = sorted(t for g in splits.GROUPS for t in split[g])
    return {
        "data": data,
        "split": split,
        "tracks": tracks,
        "labels": split["seen"] + split["unseen"],
        "annotations": ds.read_annotations(ds.annotations_path(data)),
    }


def random_exchange(path, tracks, labels, seed=0, dim=DIM):
    rng = np.random.default_rng(seed)
    return external.write_exchange(
        path,
        tracks,
        labels,
        rng.standard_normal((len(tracks), dim)).astype(np.float32),
        rng.standard_normal((len(labels), dim)).astype(np.float32),
    )


def score(path, generated, out, **kwargs):
    return external.evaluate_external(path, generated["data"], out=out, **kwargs)


def by_key(records):
    return {(r["test"], r["task"], r["part"]): r for r in records}


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------
def test_random_embeddings_score_chance_on_every_zero_shot_setup(generated, tmp_path):
    path = random_exchange(tmp_path / "rand.npz", generated["tracks"], generated["labels"])
    records, notes = score(path, generated, tmp_path / "out", name="rand")
    keys = [(r["test"], r["task"], r["part"]) for r in records]
    expected = [(t, task, "all") for t, task in protocol.setup_plan("embedding", "(A+B)-X")[0]]
    expected += [
        (t, "annotation", p)
        for t in ("B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)")
        for p in tables.GZSL_PARTS
    ]
    # no Table 4
    assert sorted(keys) == sorted(expected) and ("B-X", "retrieval", "all") not in keys
    assert {(r["dataset"], r["model"], r["train"], r["side_info"]) for r in records} == {
        ("gen", "rand", "none", "external")
    }
    assert abs(by_key(records)[("(B+C)-Y", "retrieval", "all")]["AUC-l"] - 0.5) < 0.1
    assert not any("missing_tracks" in r for r in records)
    # The result folder: results.json = the records; external.json says what was scored.
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text()) == records
    info = json.loads((out / "external.json").read_text())
    assert info["source"]["path"] == str(path) and info["source"]["sha256"] == external.sha256_file(
        path
    )
    assert info["split"]["path"] == str(splits.default_split_path(generated["data"]))
    assert info["kind"] == "embeddings" and info["missing"] == {"tracks": [], "labels": []}
    assert info["file"] == {"tracks": len(generated["tracks"]), "labels": N_LABELS, "dim": DIM}
    assert not (out / "model.keras").exists() and "wrote" in notes[-1]


def test_records_equal_metrics_of_hand_computed_cosines(generated, tmp_path):
    """(B+C)-Y annotation of an embeddings file = metrics of cosines computed here, on the split's
    members."""
    path = random_exchange(tmp_path / "e.npz", generated["tracks"], generated["labels"], seed=3)
    records, _ = score(path, generated, tmp_path / "out")
    with np.load(path, allow_pickle=False) as npz:
        ids, te, le = npz["track_ids"].tolist(), npz["track_embeddings"], npz["label_embeddings"]
    tracks, labels = splits.setup_tracks_labels(generated["split"], "(B+C)-Y")
    a = te[[ids.index(t) for t in tracks]].astype(np.float64)
    b = le[[generated["labels"].index(lab) for lab in labels]].astype(np.float64)
    cosine = (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None]
    truth = ds.label_matrix(generated["annotations"], tracks, labels)
    want = metrics.annotation_metrics(cosine, truth)
    got = by_key(records)[("(B+C)-Y", "annotation", "all")]
    for key in ("AUC-i", "MAP-i", "P@1", "evaluated", "skipped"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_huge_finite_embeddings_score_as_their_directions(generated, tmp_path):
    """Issue 21: embeddings scaled by 1e200 (finite float64) overflowed the norm, every cosine
    became 0 and every AUC 0.5. Scores are cosines: the same directions give the same records."""
    rng = np.random.default_rng(5)
    label_emb = rng.standard_normal((N_LABELS, DIM))
    truth = ds.label_matrix(generated["annotations"], generated["tracks"], generated["labels"])
    track_emb = truth @ label_emb + 0.5 * rng.standard_normal((len(generated["tracks"]), DIM))
    records = {}
    for scale in (1.0, 1e200):
        path = external.write_exchange(
            tmp_path / f"x{scale:g}.npz",
            generated["tracks"],
            generated["labels"],
            track_emb * scale,
            label_emb * scale,
        )
        records[scale] = score(path, generated, tmp_path / f"out{scale:g}", name="m")[0]
    assert by_key(records[1.0])[("(B+C)-Y", "retrieval", "all")]["AUC-l"] > 0.7
    assert records[1e200] == [
        {k: pytest.approx(v) if isinstance(v, float) else v for k, v in r.items()}
        for r in records[1.0]
    ]


def test_a_scores_file_and_an_embeddings_file_with_the_same_scores_give_identical_records(
    generated, tmp_path
):
    tracks, labels = generated["tracks"], generated["labels"]
    emb = random_exchange(tmp_path / "emb.npz", tracks, labels, seed=1)
    exchange = external.read_exchange(emb)
    # (n, m) float32
    scores = embeddings.cosine_scores(exchange.track_embeddings, exchange.label_embeddings)
    order = np.random.default_rng(2).permutation(len(tracks))  # another row order: matched by id
    via_scores = external.write_exchange(
        tmp_path / "scores.npz",
        np.asarray(tracks)[order],
        labels,
        scores=scores[order].astype(np.float64),
    )
    from_embeddings, _ = score(emb, generated, tmp_path / "a", name="m")
    from_scores, _ = score(via_scores, generated, tmp_path / "b", name="m")
    assert json.dumps(from_scores) == json.dumps(from_embeddings)
    assert json.loads((tmp_path / "b" / "external.json").read_text())["kind"] == "scores"


def test_missing_tracks_and_labels_are_an_error_listing_the_first_few_and_the_count(
    generated, tmp_path, capsys
):
    tracks, labels = generated["tracks"], generated["labels"]
    path = random_exchange(tmp_path / "part.npz", tracks[7:] + ["extra1"], labels[:-2])
    out = tmp_path / "out"
    code, _, err = run_main(
        ["--external", str(path), "--dataset", str(generated["data"]), "--out", str(out)], capsys
    )
    assert_clean_error(
        code,
        err,
        f"{path} lacks 7 of the split's {len(tracks)} tracks ({', '.join(tracks[:5])}, ...)",
        f"and 2 of the split's {N_LABELS} labels ({labels[-2]}, {labels[-1]})",
        "--allow-missing",
    )
    assert not out.exists()  # refused before the result folder is made


def test_allow_missing_restricts_the_setups_and_reports_it(generated, tmp_path, capsys):
    tracks, labels, split = generated["tracks"], generated["labels"], generated["split"]
    gone_tracks, gone_labels = set(split["C"][:4] + split["A"][:2]), {split["unseen"][0]}
    kept_tracks = [t for t in tracks if t not in gone_tracks] + ["extra1"]
    path = random_exchange(
        tmp_path / "part.npz", kept_tracks, [lab for lab in labels if lab not in gone_labels]
    )
    out = tmp_path / "out"
    code, stdout, err = run_main(
        [
            "--external",
            str(path),
            "--dataset",
            str(generated["data"]),
            "--out",
            str(out),
            "--allow-missing",
            "--format",
            "json",
            "--save-scores",
        ],
        capsys,
    )
    assert code == 0, err
    assert "--allow-missing: 6 track(s) and 1 label(s) of the split are not in the file" in err
    assert "1 track(s) and 0 label(s) of the file are not in the split" in err
    records = by_key(json.loads((out / "results.json").read_text()))
    assert {r["table"] for r in json.loads(stdout)} == {"2", "3", "gzsl"}
    expected_lost = {"B-Y": (0, 1), "C-Y": (4, 1), "(B+C)-(X+Y)": (4, 1), "(A+B+C)-Y": (6, 1)}
    for test, lost in expected_lost.items():
        record = next(r for (t, _, _), r in records.items() if t == test)
        assert (record["missing_tracks"], record["missing_labels"]) == lost, test
    # The restricted (A+B+C)-Y retrieval = the metrics on the kept tracks and labels, computed here.
    exchange = external.read_exchange(path)
    members, setup_labels = splits.setup_tracks_labels(split, "(A+B+C)-Y")
    members = [t for t in members if t not in gone_tracks]
    setup_labels = [lab for lab in setup_labels if lab not in gone_labels]
    want = metrics.retrieval_metrics(
        exchange.setup_scores(members, setup_labels),
        ds.label_matrix(generated["annotations"], members, setup_labels),
    )
    got = records[("(A+B+C)-Y", "retrieval", "all")]
    assert (got["AUC-l"], got["evaluated"] + got["skipped"]) == (want["AUC-l"], len(setup_labels))
    # --save-scores: the restricted setup
    with np.load(out / "scores" / "ABC-Y.npz", allow_pickle=False) as npz:
        assert npz["track_ids"].tolist() == members and npz["label_names"].tolist() == setup_labels
    info = json.loads((out / "external.json").read_text())
    assert info["allow_missing"] and sorted(info["missing"]["tracks"]) == sorted(gone_tracks)
    assert info["missing"]["labels"] == sorted(gone_labels) and info["ignored"] == {
        "tracks": 1,
        "labels": 0,
    }


def test_tables_place_an_external_model_under_our_rows(generated, tmp_path):
    path = random_exchange(tmp_path / "e.npz", generated["tracks"], generated["labels"])
    theirs, _ = score(path, generated, tmp_path / "out", name="clap")
    ours = [{**r, "model": "embedding", "train": "(A+B)-X", "side_info": "glove"} for r in theirs]
    text = tables.render_tables(ours + theirs)
    table2 = text.split("Table 2.")[1].split("Table 3.")[0].splitlines()
    rows = [line.split()[:4] for line in table2 if line.split()[:1] in (["(A+B)-X"], ["none"])]
    assert rows == [["(A+B)-X", "B-Y", "glove", "embedding"], ["none", "B-Y", "external", "clap"]]
    assert "Other results" not in text


# --------------------------------------------------------------------------------------------------
# The exchange format at the door
# --------------------------------------------------------------------------------------------------
GOOD = {
    "track_ids": np.array(["a", "b", "c"]),
    "track_embeddings": np.eye(3, 4, dtype=np.float32),
    "label_names": np.array(["x", "y"]),
    "label_embeddings": np.ones((2, 4)),
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"extra": np.zeros(2)}, "unknown array(s) ['extra']"),
        ({"track_embeddings": None}, "lacks array(s) ['track_embeddings']"),
        (
            {"scores": np.zeros((3, 2))},
            "has both 'scores' and ['label_embeddings', 'track_embeddings']",
        ),
        (
            {"track_ids": np.array([b"a", b"b", b"c"])},
            "array 'track_ids' is 1-D |S1; it must be a 1-D array of strings",
        ),
        ({"label_names": np.array([["x", "y"]])}, "array 'label_names' is 2-D <U1"),
        ({"track_ids": np.array(["a", "b", "a"])}, "array 'track_ids' repeats 1 name(s) (a)"),
        (
            {"label_names": np.array(["x", ""])},
            "array 'label_names' is empty or holds an empty string",
        ),
        (
            {"track_embeddings": np.ones((3, 4), dtype=np.int64)},
            "'track_embeddings' has dtype int64; it must hold floats",
        ),
        (
            {"track_embeddings": np.ones((2, 4))},
            "has shape (2, 4); it must be (len(track_ids), d) = (3, d) with d >= 1",
        ),
        (
            {"label_embeddings": np.ones((2, 5))},
            "'label_embeddings' has shape (2, 5); it must be (len(label_names), d of "
            "track_embeddings) = (2, 4)",
        ),
        ({"track_embeddings": np.ones((3, 0))}, "with d >= 1"),
        (
            {"label_embeddings": np.array([[1.0, np.nan, 0, 0], [0, 0, np.inf, 1]])},
            "'label_embeddings' has 2 NaN or infinite value(s), the first at index (0, 1)",
        ),
    ],
)
def test_malformed_exchange_files_are_refused_naming_the_file_and_the_array(
    tmp_path, change, message
):
    arrays = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(external.ExternalError, match=f"^{path}: ") as info:
        external.read_exchange(path)
    assert message in str(info.value)


def test_scores_arrays_are_checked_like_embeddings(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(
        path, track_ids=GOOD["track_ids"], label_names=GOOD["label_names"], scores=np.zeros((2, 3))
    )
    with pytest.raises(
        external.ExternalError,
        match=r"'scores' has shape \(2, 3\); it must be \(len\(track_ids\), "
        r"len\(label_names\)\) = \(3, 2\)",
    ):
        external.read_exchange(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("text", "is not a readable .npz file"),
        ("npy", "holds a single array; the exchange format is an .npz of named arrays"),
        ("pickle", "array 'track_ids' holds Python objects (needs pickle)"),
        ("missing", "does not exist"),
    ],
)
def test_files_that_are_not_plain_npz_are_refused(tmp_path, content, message):
    path = tmp_path / "f.npz"
    if content == "text":
        path.write_text("track_ids,embedding\n")
    elif content == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    elif content == "pickle":
        np.savez(path, **{**GOOD, "track_ids": np.array(["a", "b", "c"], dtype=object)})
    with pytest.raises(external.ExternalError, match=f"^{path}") as info:
        external.read_exchange(path)
    assert message in str(info.value)


def test_write_exchange_checks_before_writing(tmp_path):
    with pytest.raises(external.ExternalError, match="repeats 1 name"):
        external.write_exchange(
            tmp_path / "w.npz", ["a", "a"], ["x"], np.ones((2, 3)), np.ones((1, 3))
        )
    assert list(tmp_path.iterdir()) == []
    path = external.write_exchange(
        tmp_path / "w.npz", ["a", "b"], ["x"], scores=np.array([[0.5], [0.25]])
    )
    back = external.read_exchange(path)
    assert (back.track_ids, back.label_names, back.kind) == (["a", "b"], ["x"], "scores")
    np.testing.assert_array_equal(back.setup_scores(["b", "a"], ["x"]), [[0.25], [0.5]])


# --------------------------------------------------------------------------------------------------
# Flags and folders
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "demo"], "--dataset: used with --external only"),
        (["--allow-missing", "--name", "x"], "--name, --allow-missing: used with --external only"),
        (["--external", "f.npz"], "--external needs --dataset"),
        (
            ["--collect", "a", "b", "--export-embeddings", "e.npz"],
            "--export-embeddings exports one run (--run-dir)",
        ),
        (
            ["--external", "f.npz", "--dataset", "x", "--query", "jazz"],
            "--query/--annotate/--neighbors work on a --run-",
        ),
    ],
)
def test_flags_used_wrongly_give_one_error_line(capsys, argv, message):
    code, _, err = run_main(argv, capsys)
    assert_clean_error(code, err, message)


@pytest.mark.parametrize(
    "name, message", [("embedding", "other than our model kinds"), ("a/b", "use 1-64 letters")]
)
def test_bad_names_are_refused(generated, tmp_path, name, message):
    path = random_exchange(tmp_path / "e.npz", generated["tracks"], generated["labels"])
    with pytest.raises(external.ExternalError, match=message):
        score(path, generated, tmp_path / "out", name=name)


def test_a_foreign_result_folder_is_refused_and_ours_is_reused(generated, tmp_path, capsys):
    path = random_exchange(tmp_path / "e.npz", generated["tracks"], generated["labels"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    code, _, err = run_main(
        ["--external", str(path), "--dataset", str(generated["data"]), "--out", str(foreign)],
        capsys,
    )
    assert_clean_error(
        code, err, f"{foreign} is not empty and was not made by `evaluate.py --external`"
    )
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    for _ in range(2):  # the second run finds its own marker and rewrites its results
        records, _ = score(path, generated, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "results.json").read_text()) == records


def test_export_refuses_a_classification_run_and_an_existing_file(tmp_path, capsys):
    data = build_dataset(tmp_path)
    run_dir = write_run(tmp_path / "cls", data, model="classification")
    code, _, err = run_main(
        ["--run-dir", str(run_dir), "--export-embeddings", str(tmp_path / "e.npz")], capsys
    )
    assert_clean_error(code, err, "is a classification model: it has no label embeddings to export")
    (tmp_path / "e.npz").write_bytes(b"user's file")
    for target, message in (
        (tmp_path / "e.npz", "exists; remove it"),
        (tmp_path / "e.txt", "must end with .npz"),
    ):
        code, _, err = run_main(
            ["--run-dir", str(run_dir), "--export-embeddings", str(target)], capsys
        )
        assert_clean_error(code, err, f"--export-embeddings {target}: {message}")
    assert (tmp_path / "e.npz").read_bytes() == b"user's file"


# --------------------------------------------------------------------------------------------------
# Slow: export a run, score the export, get the run's own results
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_then_external_reproduces_the_runs_results(tmp_path, capsys):
    data = build_dataset(tmp_path)
    run_dir = write_run(tmp_path / "run", data)  # A-X: its results include Table 4's B-X
    save_model(run_dir / config.MODEL_FILE, "embedding")
    assert run_main(["--run-dir", str(run_dir)], capsys)[0] == 0
    ours = json.loads((run_dir / "results.json").read_text())
    export = tmp_path / "ours.npz"
    code, out, err = run_main(
        ["--run-dir", str(run_dir), "--export-embeddings", str(export)], capsys
    )
    assert code == 0, err
    assert json.loads(out) == {
        "path": str(export),
        "tracks": len(LABELS_OF) - 1,
        "labels": 5,
        "dim": 100,
        "left_out": 1,
    }
    exchange = external.read_exchange(export)
    assert NOT_STORED not in exchange.track_ids and exchange.label_names == [
        "jazz",
        "pop",
        "rock",
        "blues",
        "folk",
    ]

    argv = [
        "--external",
        str(export),
        "--dataset",
        str(data),
        "--out",
        str(tmp_path / "ext"),
        "--format",
        "json",
    ]
    code, _, err = run_main(argv, capsys)  # c4 has no mel: the run left it out, the export lacks it
    assert_clean_error(code, err, f"{export} lacks 1 of the split's 10 tracks (c4)")
    code, _, err = run_main(argv + ["--allow-missing"], capsys)
    assert code == 0, err
    theirs = json.loads((tmp_path / "ext" / "results.json").read_text())
    assert {(r["test"], r["task"], r["part"]) for r in theirs} == {
        (r["test"], r["task"], r["part"]) for r in ours if r["test"] != "B-X"
    }
    mine = by_key(ours)
    for record in theirs:
        want = mine[(record["test"], record["task"], record["part"])]
        assert (
            record["missing_tracks"] == (1 if "C" in record["test"] else 0)
            and record["missing_labels"] == 0
        )
        for key, value in want.items():
            if key in ("model", "train", "side_info", "finished", "provenance"):
                continue
            if isinstance(value, float):
                assert record[key] == pytest.approx(value, abs=1e-9), (record["test"], key)
            else:
                assert record[key] == value, (record["test"], key)
