"""Hand-computed tests of the instrument side information (preprocess/side_info.py) and the OpenMIC
reader (preprocess/openmic.py). Rules: docs/original.md; formats: docs/formats.md."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from dataset_dir import DatasetError
from preprocess import openmic, side_info

# The real OpenMIC-2018 class map, in index order.
OPENMIC_INSTRUMENTS = [
    "accordion",
    "banjo",
    "bass",
    "cello",
    "clarinet",
    "cymbals",
    "drums",
    "flute",
    "guitar",
    "mallet_percussion",
    "mandolin",
    "organ",
    "piano",
    "saxophone",
    "synthesizer",
    "trombone",
    "trumpet",
    "ukulele",
    "violin",
    "voice",
]

# Three instruments (K = 3, so 6 slots: present 0..2, absent 3..5) and four tracks.
#   t0: inst0 0.9 present, inst1 0.2 absent, inst2 unannotated (0.5, mask False)
#   t1: inst0 unannotated, inst1 0.75 present, inst2 0.0 absent
#   t2: inst0 1.0 present, inst1 masked-in at exactly 0.5 -> absent (count 1, confidence 0), inst2
#   0.4 absent
#   t3: only inst0, masked-in at exactly 0.5 -> absent slot 3 with count 1 and confidence 0
Y_TRUE = np.array([[0.9, 0.2, 0.5], [0.5, 0.75, 0.0], [1.0, 0.5, 0.4], [0.5, 0.5, 0.5]])
Y_MASK = np.array(
    [[True, True, False], [False, True, True], [True, True, True], [True, False, False]]
)
TRACKS = ["t0", "t1", "t2", "t3"]
COUNT = np.array(
    [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1], [1, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 0]], float
)
CONFIDENCE = np.array(
    [[0.4, 0, 0, 0, 0.3, 0], [0, 0.25, 0, 0, 0, 0.5], [0.5, 0, 0, 0, 0, 0.1], [0, 0, 0, 0, 0, 0]]
)
ANNOTATIONS = pd.DataFrame(
    [
        ("t0", "Rock"),
        ("t2", "Rock"),
        ("t1", "Jazz"),
        ("t1", "Pop"),
        ("t2", "Pop"),
        ("t3", "Drone"),
        ("t9", "Ghost"),
    ],  # t9 has no instrument vector: Ghost sums to zeros
    columns=["track_id", "label"],
)


def test_track_vectors_count_and_confidence():
    np.testing.assert_array_equal(
        side_info.instrument_track_vectors(Y_TRUE, Y_MASK, "count"), COUNT
    )
    np.testing.assert_allclose(
        side_info.instrument_track_vectors(Y_TRUE, Y_MASK, "confidence"), CONFIDENCE, atol=1e-12
    )


def test_track_vectors_float32_input_and_errors():
    got = side_info.instrument_track_vectors(Y_TRUE.astype(np.float32), Y_MASK, "confidence")
    np.testing.assert_allclose(got, CONFIDENCE, atol=1e-6)  # OpenMIC stores float32
    with pytest.raises(ValueError, match="unknown instrument flavour 'binary'"):
        side_info.instrument_track_vectors(Y_TRUE, Y_MASK, "binary")
    with pytest.raises(ValueError, match="must be equal 2-D shapes"):
        side_info.instrument_track_vectors(Y_TRUE, Y_MASK[:, :2], "count")


def test_sum_by_label_per_genre_sums():
    labels, sums = side_info.sum_by_label(TRACKS, COUNT, ANNOTATIONS)
    assert labels == ["Drone", "Ghost", "Jazz", "Pop", "Rock"]
    expected = {
        "Drone": [0, 0, 0, 1, 0, 0],  # t3
        "Ghost": [0, 0, 0, 0, 0, 0],  # t9 has no vector
        "Jazz": [0, 1, 0, 0, 0, 1],  # t1
        "Pop": [1, 1, 0, 0, 1, 2],  # t1 + t2
        "Rock": [2, 0, 0, 0, 2, 1],  # t0 + t2
    }
    for label, row in zip(labels, sums, strict=True):
        np.testing.assert_array_equal(row, expected[label], err_msg=label)


def test_standardize_rows_by_hand():
    # Rock count sums [2,0,0,0,2,1]: mean 5/6, population variance (9 - 6 * 25/36) / 6 = 29/36,
    # so the standardized row is (6x - 5) / sqrt(29).
    rows = np.array([[2, 0, 0, 0, 2, 1], [0, 0, 0, 0, 0, 0], [3, 3, 3, 3, 3, 3]], float)
    out, ok = side_info.standardize_rows(rows)
    np.testing.assert_allclose(out[0], np.array([7, -5, -5, -5, 7, 1]) / math.sqrt(29), rtol=1e-12)
    assert ok.tolist() == [True, False, False]  # all-zero and constant rows have std 0
    np.testing.assert_array_equal(out[1:], 0.0)


def test_instrument_side_info_count_drops_unstandardizable_genre():
    kept, vectors, dropped = side_info.instrument_side_info(
        TRACKS, Y_TRUE, Y_MASK, ANNOTATIONS, "count"
    )
    assert kept == ["Drone", "Jazz", "Pop", "Rock"]
    assert dropped == ["Ghost"]
    assert vectors.shape == (4, 6)
    # Jazz [0,1,0,0,0,1]: mean 1/3, variance (2 - 6/9) / 6 = 2/9 -> (3x - 1) / sqrt(2).
    np.testing.assert_allclose(
        vectors[1], np.array([-1, 2, -1, -1, -1, 2]) / math.sqrt(2), rtol=1e-12
    )
    np.testing.assert_allclose(
        vectors[3], np.array([7, -5, -5, -5, 7, 1]) / math.sqrt(29), rtol=1e-12
    )
    # Drone [0,0,0,1,0,0]: mean 1/6, variance 5/36 -> (6x - 1) / sqrt(5).
    np.testing.assert_allclose(
        vectors[0], np.array([-1, -1, -1, 5, -1, -1]) / math.sqrt(5), rtol=1e-12
    )
    np.testing.assert_allclose(vectors.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(vectors.std(axis=1), 1.0, rtol=1e-12)


def test_instrument_side_info_confidence_by_hand():
    kept, vectors, dropped = side_info.instrument_side_info(
        TRACKS, Y_TRUE, Y_MASK, ANNOTATIONS, "confidence"
    )
    # Drone's only track is annotated at exactly 0.5: confidence 0 everywhere, so it cannot be
    # standardized here although its count vector can.
    assert kept == ["Jazz", "Pop", "Rock"]
    assert dropped == ["Drone", "Ghost"]
    pop = np.array([0.5, 0.25, 0, 0, 0, 0.6])  # t1 + t2
    np.testing.assert_allclose(vectors[1], (pop - pop.mean()) / pop.std(), rtol=1e-12)
    rock = np.array([0.9, 0, 0, 0, 0.3, 0.1])  # t0 + t2
    # mean 1.3/6; population variance (0.81 + 0.09 + 0.01)/6 - (1.3/6)^2
    mean = 1.3 / 6
    std = math.sqrt(0.91 / 6 - mean**2)
    np.testing.assert_allclose(vectors[2], (rock - mean) / std, rtol=1e-12)


def test_instrument_side_info_ignores_annotation_order_and_extra_tracks():
    shuffled = ANNOTATIONS.sample(frac=1.0, random_state=3)
    a = side_info.instrument_side_info(TRACKS, Y_TRUE, Y_MASK, ANNOTATIONS, "count")
    b = side_info.instrument_side_info(TRACKS[::-1], Y_TRUE[::-1], Y_MASK[::-1], shuffled, "count")
    assert a[0] == b[0] and a[2] == b[2]
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)


def test_random_side_info_is_seeded_and_order_free():
    labels = ["rock", "jazz", "pop"]
    first = side_info.random_side_info(labels, 5, seed=7)
    assert first.shape == (3, 5)
    np.testing.assert_array_equal(first, side_info.random_side_info(labels, 5, seed=7))
    # A label's vector depends on its rank among the sorted labels: jazz (rank 0), pop (1), rock
    # (2).
    draws = np.random.default_rng(7).standard_normal((3, 5))
    np.testing.assert_array_equal(first, draws[[2, 0, 1]])
    reordered = side_info.random_side_info(["pop", "rock", "jazz"], 5, seed=7)
    np.testing.assert_array_equal(reordered, draws[[1, 2, 0]])
    assert not np.allclose(first, side_info.random_side_info(labels, 5, seed=8))


# --------------------------------------------------------------------------------------------------
# OpenMIC reader
# --------------------------------------------------------------------------------------------------
def _openmic_fixture(folder, n=3):
    keys = ["000046_3840", "000002_0", "000140_10000"][:n]
    y_true = np.array([[0.9, 0.5, 0.1], [0.5, 0.75, 0.5], [0.0, 1.0, 0.5]])[:n]
    y_mask = np.array([[True, False, True], [False, True, False], [True, True, False]])[:n]
    openmic.write_openmic(folder, keys, y_true, y_mask, ["bass", "drums", "voice"])
    return keys, y_true, y_mask


def test_write_and_load_openmic_sorted_by_sample_key(tmp_path):
    _openmic_fixture(tmp_path)
    data = openmic.load_openmic(tmp_path)
    assert data.sample_keys.tolist() == ["000002_0", "000046_3840", "000140_10000"]
    assert data.instruments == ["bass", "drums", "voice"]
    np.testing.assert_allclose(
        data.y_true, [[0.5, 0.75, 0.5], [0.9, 0.5, 0.1], [0.0, 1.0, 0.5]], rtol=1e-6
    )
    assert data.y_true.dtype == np.float32
    assert data.y_mask.tolist() == [[False, True, False], [True, False, True], [True, True, False]]
    assert json.loads((tmp_path / "class-map.json").read_text()) == {
        "bass": 0,
        "drums": 1,
        "voice": 2,
    }


def test_real_class_map_order(tmp_path):
    # Written like the real file (json, indent 4, name -> index); shuffled key order must not
    # matter.
    mapping = {name: i for i, name in enumerate(OPENMIC_INSTRUMENTS)}
    shuffled = dict(sorted(mapping.items(), key=lambda item: -item[1]))
    (tmp_path / "class-map.json").write_text(json.dumps(shuffled, indent=4))
    assert openmic.read_class_map(tmp_path / "class-map.json") == OPENMIC_INSTRUMENTS
    (tmp_path / "gap.json").write_text(json.dumps({"a": 0, "b": 2}))
    with pytest.raises(DatasetError, match="must map names to indices 0..1 without gaps"):
        openmic.read_class_map(tmp_path / "gap.json")


def _object_key_npz(folder, keys, y_true, y_mask):
    """The published openmic-2018.npz stores sample_key as an object array. np.savez writes such an
    array the way the publishers did (numpy serializes it); the reader under test must never
    deserialize it."""
    order = np.argsort(keys)
    np.savez(
        folder / "openmic-2018.npz",
        Y_true=y_true[order].astype(np.float32),
        Y_mask=y_mask[order],
        sample_key=np.array(keys, dtype=object)[order],
        X=np.zeros((len(keys), 2, 4), np.uint8),
    )


def test_object_sample_key_recovered_from_partitions(tmp_path):
    keys, y_true, y_mask = _openmic_fixture(tmp_path)
    (tmp_path / "openmic-2018.npz").unlink()
    _object_key_npz(tmp_path, keys, y_true, y_mask)
    parts = tmp_path / "partitions"
    parts.mkdir()
    (parts / "split01_train.csv").write_text("000140_10000\n000002_0\n")
    (parts / "split01_test.csv").write_text("000046_3840\n")
    data = openmic.load_openmic(tmp_path)
    assert data.sample_keys.tolist() == ["000002_0", "000046_3840", "000140_10000"]
    np.testing.assert_allclose(data.y_true[1], [0.9, 0.5, 0.1], rtol=1e-6)  # row of 000046_3840
    # An incomplete partitions folder cannot name every row: clear error, no unpickling.
    (parts / "split01_test.csv").unlink()
    with pytest.raises(DatasetError, match="partition files .* list 2 distinct keys for 3 rows"):
        openmic.load_openmic(tmp_path)


def test_load_openmic_errors(tmp_path):
    with pytest.raises(DatasetError, match="openmic-2018.npz do not exist"):
        openmic.load_openmic(tmp_path)
    _openmic_fixture(tmp_path)
    np.savez(
        tmp_path / "openmic-2018.npz",
        Y_true=np.zeros((2, 3)),
        sample_key=np.array(["000001_0", "000002_0"]),
    )
    with pytest.raises(DatasetError, match="lacks array.*Y_mask"):
        openmic.load_openmic(tmp_path)
    np.savez(
        tmp_path / "openmic-2018.npz",
        Y_true=np.zeros((2, 4)),
        Y_mask=np.zeros((2, 4), bool),
        sample_key=np.array(["000001_0", "000002_0"]),
    )
    with pytest.raises(DatasetError, match="4 instrument columns, 3 in the class map"):
        openmic.load_openmic(tmp_path)
    (tmp_path / "openmic-2018.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        openmic.load_openmic(tmp_path)


def test_track_id_from_sample_key():
    assert openmic.track_id_from_sample_key("000046_3840") == "46"
    assert openmic.track_id_from_sample_key("155310_0") == "155310"
    with pytest.raises(DatasetError, match="does not start with a numeric FMA track id"):
        openmic.track_id_from_sample_key("abc_3840")
    with pytest.raises(DatasetError, match="does not start with a numeric FMA track id"):
        openmic.track_id_from_sample_key("\u00b2_0")  # a superscript digit is not a decimal digit


def test_duplicate_track_ids_are_a_clear_error():
    ann = pd.DataFrame({"track_id": ["1"], "label": ["g"]})
    with pytest.raises(ValueError, match="track id '1' occurs more than once"):
        side_info.instrument_side_info(["1", "1"], np.full((2, 2), 0.9), np.ones((2, 2), bool), ann)


def test_object_or_non_finite_y_true_is_a_clear_error(tmp_path, monkeypatch):
    # Hardening 10: an object Y_true raised numpy's ValueError (a traceback). Nothing may be
    # unpickled on the way.
    keys, y_true, y_mask = _openmic_fixture(tmp_path)
    np.savez(
        tmp_path / "openmic-2018.npz",
        Y_true=np.array(y_true.tolist(), dtype=object),
        Y_mask=y_mask,
        sample_key=np.array(keys),
    )
    monkeypatch.setattr("pickle.load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(
        DatasetError, match="Y_true or Y_mask is an object array, which we never unpickle"
    ):
        openmic.load_openmic(tmp_path)
    y_true[1, 2] = np.nan
    openmic.write_openmic(tmp_path, keys, y_true, y_mask, ["bass", "drums", "voice"])
    with pytest.raises(DatasetError, match=r"openmic-2018.npz: Y_true: 1 value\(s\) are NaN"):
        openmic.load_openmic(tmp_path)
