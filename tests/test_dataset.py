"""Tests of the dataset-directory I/O (dataset_dir.py)."""

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataset_dir as ds
import fileio


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
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "track_id,label",
        "007,Rock",
        "2,Jazz",
        "2,Pop",
    ]


def test_label_matrix_by_hand():
    ann = pd.DataFrame({"track_id": ["a", "a", "b", "z"], "label": ["x", "y", "y", "x"]})
    matrix = ds.label_matrix(ann, ["b", "a", "c"], ["y", "x"])
    # 'z' is not a listed track: ignored
    np.testing.assert_array_equal(matrix, [[1, 0], [1, 1], [0, 0]])


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
    with pytest.raises(ds.DatasetError, match="lacks column.*label, v0; expected header label,v0"):
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
    fileio.atomic_write_text(target, "abc")
    assert target.read_text() == "abc" and list(target.parent.iterdir()) == [target]
    assert (
        fileio.sha256_file(target)
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_atomic_write_uses_ordinary_permissions(tmp_path):
    import os

    target = tmp_path / "perm.txt"
    fileio.atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------------------------------
# Door checks (hardening 5 and 10) and malformed CSV rows
# --------------------------------------------------------------------------------------------------
def test_check_finite_in_the_dtype_used():
    out = ds.check_finite([[1.5, -2.0]], "x")
    assert out.dtype == np.float32 and out.tolist() == [[1.5, -2.0]]
    # finite in float64 ...
    assert ds.check_finite([1e300], "x", dtype=np.float64).tolist() == [1e300]
    with pytest.raises(
        ds.DatasetError,
        match=r"vectors: 1 value\(s\) are NaN, infinite or too large for float32 "
        r"\(the first at index \(1, 0\)\)",
    ):
        ds.check_finite([[0.0, 1.0], [1e300, 2.0]], "vectors")  # ... but not in float32
    with pytest.raises(ds.DatasetError, match="2 value"):
        ds.check_finite([np.nan, np.inf, 1.0], "x")
    with pytest.raises(ds.DatasetError, match="x: a value is not a number .*'abc'"):
        ds.check_finite(np.array(["1", "abc"], dtype=object), "x")


def test_side_vectors_is_the_one_missing_vector_check():
    info = ds.SideInfo(
        labels=["a", "b", "c"], vectors=np.arange(6, dtype=np.float64).reshape(3, 2), source="s.csv"
    )
    got = ds.side_vectors(info, ["c", "a"], "s.csv")
    assert got.dtype == np.float32 and got.tolist() == [[4, 5], [0, 1]]
    with pytest.raises(
        ds.DatasetError, match=r"s.csv: 2 label\(s\) have no side-information vector: x, y\. Add"
    ):
        ds.side_vectors(info, ["a", "x", "y"], "s.csv")
    many = [f"m{i}" for i in range(25)]
    with pytest.raises(ds.DatasetError, match=r"25 label\(s\).*m19 \.\.\."):
        info.lookup(many)


def test_side_info_overflowing_float32_is_refused(tmp_path):
    # Hardening 5: 1e300 is finite in float64 (the old check) but inf in the float32 that training
    # uses.
    path = _write(tmp_path / "big.csv", "label,v0,v1\na,1,2\nb,1e300,3\n")
    with pytest.raises(
        ds.DatasetError, match=r"big.csv: 1 value\(s\) are NaN, infinite or too large for float32"
    ):
        ds.read_side_info(path)
    with pytest.raises(ds.DatasetError, match="too large for float32"):
        ds.write_side_info(tmp_path / "out.csv", ["a"], [[1e300]])
    assert not (tmp_path / "out.csv").exists()


def test_side_info_row_with_an_extra_field_names_file_and_line(tmp_path):
    # Hardening 10: pandas raised a ParserError traceback here.
    path = _write(tmp_path / "glove.csv", "label,v0,v1\na,1,2\n\nb,3,4,5\n")
    with pytest.raises(
        ds.DatasetError, match=r"glove.csv, line 4: 4 field\(s\) where the header has 3"
    ):
        ds.read_side_info(path)


@pytest.mark.parametrize(
    "text, message",
    [
        # pandas: silent shift
        ("track_id,path\n1,a.mp3,x\n2,b.mp3\n", r"line 2: 3 field\(s\) where the header has 2"),
        ("track_id,path\n1,a.mp3\n2\n", r"line 3: 1 field\(s\)"),  # pandas: silently filled
        ("track_id,path\n1,a.mp3\n2,\n", "line 3: empty track_id or path"),
        ('track_id,path\n1,"a\nb.mp3"\n1,c.mp3\n', "line 4: track_id '1' occurs more than once"),
        ('track_id,path\n1,"a.mp3\n', "not a readable UTF-8 CSV"),
        ("track_id,track_id,path\n1,2,a\n", "repeats a column name"),
    ],
)
def test_tracks_rows_are_checked_at_the_door(tmp_path, text, message):
    path = _write(tmp_path / "tracks.csv", text)
    with pytest.raises(ds.DatasetError, match=f"tracks file .*tracks.csv.*{message}"):
        ds.read_tracks(path)


def test_side_info_rows_are_checked_at_the_door(tmp_path):
    cases = {
        "label,v0\na,1\na,2\n": "line 3: label 'a' repeats",
        "label,v0\n,1\n": "line 2: empty label",
        "label,v0\na,x1\n": "could not convert string to float: 'x1'",
        "label\na\n": "lacks column.*v0",
        "label,v1\na,1\n": "lacks column.*v0",
        "label,v0,v2\na,1,2\n": "header must be label,v0",
    }
    for text, message in cases.items():
        with pytest.raises(ds.DatasetError, match=message):
            ds.read_side_info(_write(tmp_path / "s.csv", text))
    _write(tmp_path / "ann.csv", "track_id,label\n1,rock\n2,\n")
    with pytest.raises(
        ds.DatasetError, match="annotations file .*ann.csv, line 3: empty track_id or label"
    ):
        ds.read_annotations(tmp_path / "ann.csv")


# Hypothesis: malformed CSV rows (extra or missing fields, quotes, empty ids, non-numeric or
# non-finite values, repeats) give a DatasetError or a correct result, never another exception.
FIELD = st.one_of(
    st.sampled_from(["", "a", "1", "-2.5", "nan", "inf", "1e300"]),
    st.text('ab1,"\n \ré', max_size=5),
)
ROW = st.lists(FIELD, min_size=0, max_size=4)


def _render(rows, quoted: bool) -> str:
    if quoted:  # well-formed CSV quoting of arbitrary fields
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue()
    # raw: commas, quotes and newlines break the rows
    return "".join(",".join(row) + "\n" for row in rows)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from(
        [["track_id", "path"], ["track_id", "label"], ["label", "v0", "v1"], ["label", "v0"]]
    ),
    rows=st.lists(ROW, max_size=5),
    quoted=st.booleans(),
)
def test_readers_give_a_dataset_error_or_a_correct_result(tmp_path, header, rows, quoted):
    path = tmp_path / "fuzz.csv"
    path.write_text(_render([header] + rows, quoted), encoding="utf-8")
    for reader in (ds.read_tracks, ds.read_annotations, ds.read_side_info):
        try:
            result = reader(path)
        except ds.DatasetError:
            continue
        # the rows as written (\r kept inside quotes)
        with open(path, encoding="utf-8", newline="") as handle:
            parsed = [row for row in csv.reader(handle) if row][1:]
        if reader is ds.read_side_info:
            assert result.labels == [row[0] for row in parsed] and len(set(result.labels)) == len(
                result.labels
            )
            assert result.vectors.dtype == np.float32 and np.isfinite(result.vectors).all()
            expected = (
                np.array([row[1:] for row in parsed], float)
                .reshape(-1, len(header) - 1)
                .astype(np.float32)
            )
            np.testing.assert_array_equal(result.vectors, expected)
        else:
            key = "path" if reader is ds.read_tracks else "label"
            expected = [(row[header.index("track_id")], row[header.index(key)]) for row in parsed]
            if reader is ds.read_annotations:
                expected = list(dict.fromkeys(expected))
            assert list(zip(result["track_id"], result[key], strict=True)) == expected
            assert all(result["track_id"] != "") and all(result[key] != "")
            assert reader is ds.read_annotations or result["track_id"].is_unique
