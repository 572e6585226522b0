"""Tests of the dataset-directory I/O (dataset_dir.py)."""

import json

import numpy as np
import pandas as pd
import pytest

import dataset_dir as ds


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_resolve_named_and_path(tmp_path):
    assert ds.resolve_dataset_dir("demo") == (ds.DATA_ROOT / "demo").resolve()
    assert ds.resolve_dataset_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(ds.DatasetError, match="not one of demo, fma, msd"):
        ds.resolve_dataset_dir(tmp_path / "nope")


def test_tracks_roundtrip_and_errors(tmp_path):
    frame = pd.DataFrame({"track_id": ["2", "10", "1"], "path": ["a.flac", "b.flac", "c.flac"]})
    ds.write_tracks(tmp_path / "tracks.csv", frame)
    back = ds.read_tracks(tmp_path / "tracks.csv")
    assert back["track_id"].tolist() == ["2", "10", "1"]  # order kept, ids stay strings
    _write(tmp_path / "dup.csv", "track_id,path\n1,a\n1,b\n")
    with pytest.raises(ds.DatasetError, match="'1' occurs more than once"):
        ds.read_tracks(tmp_path / "dup.csv")
    _write(tmp_path / "cols.csv", "id,path\n1,a\n")
    with pytest.raises(ds.DatasetError, match="lacks column.*track_id"):
        ds.read_tracks(tmp_path / "cols.csv")
    _write(tmp_path / "empty.csv", "")
    with pytest.raises(ds.DatasetError, match="is empty"):
        ds.read_tracks(tmp_path / "empty.csv")
    with pytest.raises(ds.DatasetError, match="does not exist"):
        ds.read_tracks(tmp_path / "missing.csv")


def test_annotations_are_strings_deduplicated_and_sorted(tmp_path):
    path = _write(tmp_path / "ann.csv", "track_id,label\n007,Rock\n2,Pop\n007,Rock\n2,Jazz\n")
    frame = ds.read_annotations(path)
    assert frame.values.tolist() == [["007", "Rock"], ["2", "Pop"], ["2", "Jazz"]]
    ds.write_annotations(tmp_path / "out.csv", frame)
    assert (tmp_path / "out.csv").read_text().splitlines() == ["track_id,label", "007,Rock", "2,Jazz", "2,Pop"]


def test_label_matrix_by_hand():
    ann = pd.DataFrame({"track_id": ["a", "a", "b", "z"], "label": ["x", "y", "y", "x"]})
    matrix = ds.label_matrix(ann, ["b", "a", "c"], ["y", "x"])
    np.testing.assert_array_equal(matrix, [[1, 0], [1, 1], [0, 0]])  # 'z' is not a listed track: ignored


def test_side_info_roundtrip_lookup_and_errors(tmp_path):
    path = tmp_path / "side_info" / "k.csv"
    ds.write_side_info(path, ["b", "a"], [[1.5, -2.0], [0.25, 1e-7]])
    info = ds.read_side_info(path)
    assert info.labels == ["a", "b"] and info.dim == 2  # rows sorted by label
    np.testing.assert_allclose(info.lookup(["b", "a"]), [[1.5, -2.0], [0.25, 1e-7]], rtol=1e-6)
    with pytest.raises(ds.DatasetError, match="1 label\\(s\\) have no side-information vector: c"):
        info.lookup(["a", "c"])
    _write(tmp_path / "bad.csv", "label,v0,v1\na,1,nan\n")
    with pytest.raises(ds.DatasetError, match="NaN"):
        ds.read_side_info(tmp_path / "bad.csv")
    _write(tmp_path / "hdr.csv", "name,x\na,1\n")
    with pytest.raises(ds.DatasetError, match="header must be label,v0"):
        ds.read_side_info(tmp_path / "hdr.csv")
    assert ds.available_side_info(tmp_path) == ["k"]
    with pytest.raises(ds.DatasetError, match="This dataset has: k"):
        ds.resolve_side_info(tmp_path, "glove")


def test_summarize_counts(tmp_path):
    _write(tmp_path / "tracks.csv", "track_id,path\n1,a.flac\n2,b.flac\n3,c.flac\n")
    _write(tmp_path / "annotations.csv", "track_id,label\n1,x\n1,y\n2,x\n9,z\n")
    ds.write_side_info(tmp_path / "side_info" / "random.csv", ["x", "y"], np.ones((2, 3)))
    summary = ds.summarize(tmp_path, extra={"note": "hand-made"})
    assert summary["tracks"] == 3 and summary["tracks_with_labels"] == 2
    assert summary["labels"] == 2 and summary["positives"] == 3  # track 9 is not in tracks.csv
    assert summary["label_cardinality"] == 1.5
    assert summary["side_info"] == {"random": {"labels": 2, "dim": 3}}
    assert json.loads((tmp_path / "summary.json").read_text())["note"] == "hand-made"
    assert "3 tracks (2 labelled), 2 labels" in ds.format_summary(summary)


def test_atomic_write_and_sha(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    ds.atomic_write_text(target, "abc")
    assert target.read_text() == "abc" and list(target.parent.iterdir()) == [target]
    assert ds.sha256_file(target) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_write_uses_ordinary_permissions(tmp_path):
    import os

    target = tmp_path / "perm.txt"
    ds.atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
