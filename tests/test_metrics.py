"""Tests of metrics.py: the one-row definitions against scikit-learn and a plain Python AP@K loop,
the all-rows fast path against the definitions (random data with ties and undefined rows),
hand-computed cases, skipped counting, and validation errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

import metrics

# --------------------------------------------------------------------------------------------------
# References written from the definitions


def apk_reference(scores_row, labels_row, k):
    """ml_metrics' apk, written from its definition, on one row.

    predicted = labels sorted by descending score (ties: lower column index first, i.e. a stable
    sort of -score), actual = the positive labels; sum precision@i over the ranks i <= k that hold a
    positive; / min(|actual|, k).
    """
    predicted = sorted(range(len(scores_row)), key=lambda col: (-scores_row[col], col))[:k]
    actual = {col for col, value in enumerate(labels_row) if value}
    hits = 0
    total = 0.0
    for rank, col in enumerate(predicted, start=1):
        if col in actual:
            hits += 1
            total += hits / rank
    return total / min(len(actual), k)


def random_case(seed):
    """Random (n, m) scores with many ties and labels with all-negative / all-positive rows and
    columns."""
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 30)), int(rng.integers(1, 25))
    scores = np.round(rng.normal(size=(n, m)), int(rng.integers(0, 3)))  # 0-2 decimals: many ties
    labels = rng.random((n, m)) < rng.uniform(0.05, 0.6)
    if n > 2:
        labels[0] = False  # an all-negative row
        labels[1] = True  # an all-positive row
    if m > 2:
        labels[:, 0] = False  # an all-negative column
    return scores, labels


def per_row(metric, scores, labels, *args):
    """A one-row definition applied to every row: (n,) float64."""
    return np.array(
        [metric(s, y, *args) for s, y in zip(np.asarray(scores), np.asarray(labels), strict=True)],
        dtype=float,
    )


def fast(scores, labels, ks=()):
    """The private all-rows path, on validated inputs (as annotation_metrics calls it)."""
    return metrics._fast_row_metrics(*metrics._prepare(scores, labels), ks)


def sklearn_rows(scores, labels):
    """Per-row scikit-learn ROC-AUC and AP, NaN where a row is all 0 or all 1."""
    auc = np.full(len(scores), np.nan)
    ap = np.full(len(scores), np.nan)
    for i, (s, y) in enumerate(zip(scores, labels, strict=True)):
        if 0 < y.sum() < y.size:
            auc[i] = roc_auc_score(y, s)
            ap[i] = average_precision_score(y, s)
    return auc, ap


# --------------------------------------------------------------------------------------------------
# Equality with scikit-learn and the reference loop


@pytest.mark.parametrize("seed", range(20))
def test_definitions_and_fast_path_equal_sklearn_both_orientations(seed):
    scores, labels = random_case(seed)
    for s, y in [(scores, labels), (scores.T, labels.T)]:
        auc, ap = sklearn_rows(s, y)
        for got_auc, got_ap in [
            (per_row(metrics.roc_auc, s, y), per_row(metrics.average_precision, s, y)),
            (fast(s, y)["AUC"], fast(s, y)["AP"]),
        ]:
            np.testing.assert_array_equal(np.isnan(got_auc), np.isnan(auc))
            np.testing.assert_allclose(got_auc, auc, rtol=0, atol=1e-12)
            np.testing.assert_allclose(got_ap, ap, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_apk_equals_reference_loop(seed):
    scores, labels = random_case(seed)
    got = fast(scores, labels, ks=(1, 2, 5, 10, 50))
    defined = metrics.defined_rows(labels)
    for k in (1, 2, 5, 10, 50):
        expected = np.array(
            [
                apk_reference(s, y, k) if ok else np.nan
                for s, y, ok in zip(scores, labels, defined, strict=True)
            ]
        )
        np.testing.assert_allclose(got[f"P@{k}"], expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            per_row(metrics.apk, scores, labels, k), expected, rtol=0, atol=1e-12
        )


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 6),
    m=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    decimals=st.integers(0, 1),
    as_float32=st.booleans(),
)
def test_fast_path_equals_the_one_row_definitions(n, m, seed, decimals, as_float32):
    """Every shape, tie pattern and undefined row: the private all-rows path gives the public
    definitions."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(n, m)), decimals).astype(
        np.float32 if as_float32 else np.float64
    )
    labels = rng.random((n, m)) < rng.uniform(0.1, 0.9)
    got = fast(scores, labels, ks=(1, 3, 10))
    expected = {
        "AUC": per_row(metrics.roc_auc, scores, labels),
        "AP": per_row(metrics.average_precision, scores, labels),
    }
    expected.update({f"P@{k}": per_row(metrics.apk, scores, labels, k) for k in (1, 3, 10)})
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("seed", range(10))
def test_summaries_equal_sklearn_means(seed):
    scores, labels = random_case(seed + 100)
    auc_i, ap_i = sklearn_rows(scores, labels)
    auc_l, ap_l = sklearn_rows(scores.T, labels.T)
    annotation = metrics.annotation_metrics(scores, labels)
    retrieval = metrics.retrieval_metrics(scores, labels)
    if np.isnan(auc_i).all():
        assert math.isnan(annotation["AUC-i"])
    else:
        assert annotation["AUC-i"] == pytest.approx(np.nanmean(auc_i), abs=1e-12)
        assert annotation["MAP-i"] == pytest.approx(np.nanmean(ap_i), abs=1e-12)
    if not np.isnan(auc_l).all():
        assert retrieval["AUC-l"] == pytest.approx(np.nanmean(auc_l), abs=1e-12)
        assert retrieval["MAP-l"] == pytest.approx(np.nanmean(ap_l), abs=1e-12)
    assert annotation["evaluated"] + annotation["skipped"] == scores.shape[0]
    assert retrieval["evaluated"] + retrieval["skipped"] == scores.shape[1]
    assert annotation["evaluated"] == int(np.sum(~np.isnan(auc_i)))
    assert retrieval["evaluated"] == int(np.sum(~np.isnan(auc_l)))


def test_large_matrix_with_ties_matches_sklearn():
    """MSD-like shape slice: float32 cosines with float32 ties, ~3% positives."""
    rng = np.random.default_rng(7)
    scores = np.round(rng.uniform(-1, 1, size=(60, 1126)), 2).astype(np.float32)
    labels = rng.random((60, 1126)) < 0.03
    labels[3] = False
    got = fast(scores, labels, ks=(10,))
    auc, ap = sklearn_rows(scores, labels)
    np.testing.assert_allclose(got["AUC"], auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["AP"], ap, rtol=0, atol=1e-12)
    expected = [apk_reference(s, y, 10) for s, y in zip(scores[4:], labels[4:], strict=True)]
    np.testing.assert_allclose(got["P@10"][4:], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m", [1, 2, 3, 7, 64, 65, 157, 1126])
def test_fast_path_search_counts_like_searchsorted_at_every_width(m):
    """The fast path's binary search of many values in their sorted rows (log2(m) halvings) counts
    what np.searchsorted counts, at the row ends too; the blocked transpose is x.T."""
    rng = np.random.default_rng(m)
    ordered = np.sort(np.round(rng.normal(size=(5, m)), 1), axis=1)
    rows = rng.integers(0, 5, 400)
    values = np.concatenate([np.round(rng.normal(size=394), 1), [-9, 9, 0.0, -0.0]])
    values = np.concatenate([values, ordered[rows[-2:], [0, -1]]])  # a row's own min and max
    expected = [
        np.searchsorted(ordered[r], v, side="left") for r, v in zip(rows, values, strict=True)
    ]
    np.testing.assert_array_equal(metrics._count_below(ordered, rows, values), expected)
    wide = rng.normal(size=(600, m))
    np.testing.assert_array_equal(metrics._transposed(wide), wide.T)
    assert metrics._transposed(wide).flags.c_contiguous  # rows to sort, not a strided view


def test_signed_zeros_tie():
    """-0.0 and 0.0 are one score (a tie), in the definitions and in the fast path."""
    scores = np.array([[0.0, -0.0, 0.5, -0.0, 0.0, -1.0]])
    labels = np.array([[0, 1, 0, 1, 0, 0]], dtype=bool)
    got = fast(scores, labels, ks=(1, 2, 3))
    for key, metric in (("AUC", metrics.roc_auc), ("AP", metrics.average_precision)):
        assert got[key][0] == metric(scores[0], labels[0])
    # AUC: each positive beats one negative (-1) and ties two zeros: (1 + 1) / 2 per positive
    assert got["AUC"][0] == pytest.approx(0.5, abs=1e-15)
    for k in (1, 2, 3):
        assert got[f"P@{k}"][0] == apk_reference(scores[0], labels[0], k)


def test_integer_and_float_labels_and_integer_scores_accepted():
    scores = np.array([[3, 1, 2, 2]])
    expected = metrics.annotation_metrics(
        scores.astype(float), np.array([[True, False, True, False]])
    )
    for labels in ([[1, 0, 1, 0]], np.array([[1.0, 0.0, 1.0, 0.0]])):
        assert metrics.annotation_metrics(scores, labels) == expected


# --------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_perfect_ranking():
    scores = [[0.9, 0.8, 0.1, 0.0]]
    labels = [[1, 1, 0, 0]]
    result = metrics.annotation_metrics(scores, labels)
    assert result["AUC-i"] == 1.0
    assert result["MAP-i"] == 1.0
    assert result["P@1"] == 1.0 and result["P@5"] == 1.0 and result["P@10"] == 1.0
    assert (result["evaluated"], result["skipped"]) == (1, 0)


def test_reversed_ranking():
    scores = [[0.0, 0.1, 0.8, 0.9]]
    labels = [[1, 1, 0, 0]]
    result = metrics.annotation_metrics(scores, labels)
    assert result["AUC-i"] == 0.0
    # Positives at ranks 3 and 4: AP = (1/3 + 2/4) / 2 = 5/12.
    assert result["MAP-i"] == pytest.approx(5 / 12, abs=1e-15)
    assert result["P@1"] == 0.0


def test_all_tied_scores():
    # Every score equal: one threshold. AUC = 1/2 (each pos/neg pair tied), AP = precision at that
    # threshold = 1/4.
    scores = [[0.5, 0.5, 0.5, 0.5]]
    labels = [[0, 1, 0, 0]]
    assert metrics.roc_auc(scores[0], labels[0]) == 0.5
    assert metrics.average_precision(scores[0], labels[0]) == 0.25
    # AP@1 with ties broken by the lower column index: rank 1 is column 0, a negative -> 0.
    # AP@2: ranks = columns 0, 1; the positive at rank 2 -> (1/2) / min(1, 2) = 0.5.
    assert metrics.apk(scores[0], labels[0], 1) == 0.0
    assert metrics.apk(scores[0], labels[0], 2) == 0.5
    assert fast(scores, labels, ks=(1, 2)) == {
        "AUC": [0.5],
        "AP": [0.25],
        "P@1": [0.0],
        "P@2": [0.5],
    }


def test_partial_tie_counts_one_half():
    # Scores 0.9 (pos), 0.5 (pos), 0.5 (neg), 0.1 (neg). Pairs: (0.9, 0.5n) 1, (0.9, 0.1) 1, (0.5p,
    # 0.5n) 1/2, (0.5p, 0.1) 1 -> U = 3.5 of 4 pairs -> AUC 0.875. AP: thresholds 0.9 (P=1/1,
    # R=1/2), 0.5 (P=2/3, R=1): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (one threshold for the tie).
    scores = [0.9, 0.5, 0.5, 0.1]
    # The tied negative comes first or last in column order: the same AUC/AP (order inside a tie is
    # irrelevant).
    for labels in ([1, 1, 0, 0], [1, 0, 1, 0]):
        assert metrics.roc_auc(scores, labels) == pytest.approx(0.875, abs=1e-15)
        assert metrics.average_precision(scores, labels) == pytest.approx(5 / 6, abs=1e-15)
        got = fast([scores], [labels])
        assert got["AUC"][0] == pytest.approx(0.875, abs=1e-15) and got["AP"][0] == pytest.approx(
            5 / 6, abs=1e-15
        )


def test_apk_hand_example_p10_greater_than_p5():
    # 12 labels, descending scores = column order; positives at columns (ranks) 1, 6, 7 (3
    # positives). ranks:     1  2  3  4  5  6  7  8  9 10 11 12 positive:  y  .  .  .  .  y  y  .  .
    # .  .  . AP@1  = (1/1) / min(3, 1)                      = 1 AP@5  = (1/1) / min(3, 5)
    # = 1/3          (only the rank-1 hit is within the top 5) AP@10 = (1/1 + 2/6 + 3/7) / min(3,
    # 10)         = (1 + 1/3 + 3/7) / 3 = 37/63 ~ 0.5873 > AP@5 Plain precision@K would give P@5 =
    # 1/5 and P@10 = 3/10: AP@K is a different metric.
    scores = [np.linspace(1.0, 0.0, 12)]
    labels = [[1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]]
    result = metrics.annotation_metrics(scores, labels)
    assert result["P@1"] == 1.0
    assert result["P@5"] == pytest.approx(1 / 3, abs=1e-15)
    assert result["P@10"] == pytest.approx(37 / 63, abs=1e-15)
    assert result["P@10"] > result["P@5"]


def test_apk_hand_example_divides_by_k_when_many_positives():
    # 6 labels, positives at ranks 2, 3, 4, 5 (P = 4). AP@2 = (1/2) / min(4, 2) = 1/4;
    # AP@5 = (1/2 + 2/3 + 3/4 + 4/5) / min(4, 5) = (163/60) / 4 = 163/240.
    scores = [6, 5, 4, 3, 2, 1]
    labels = [0, 1, 1, 1, 1, 0]
    assert metrics.apk(scores, labels, 2) == pytest.approx(1 / 4, abs=1e-15)
    assert metrics.apk(scores, labels, 5) == pytest.approx(163 / 240, abs=1e-15)
    # K beyond the number of labels uses all 6 ranks: same sum, / min(4, 100) = 4.
    assert metrics.apk(scores, labels, 100) == pytest.approx(163 / 240, abs=1e-15)
    assert fast([scores], [labels], ks=(100,))["P@100"][0] == pytest.approx(163 / 240, abs=1e-15)


def test_apk_tie_at_the_cut_uses_lower_column_first():
    # Scores: col0 0.9, then cols 1..4 tied at 0.5. Top-3 = cols 0, 1, 2 (lowest tied columns
    # first). Positive at col 4 only: not in the top 3 -> AP@3 = 0; positive at col 1 -> rank 2 ->
    # (1/2) / 1 = 0.5.
    scores = [[0.9, 0.5, 0.5, 0.5, 0.5], [0.9, 0.5, 0.5, 0.5, 0.5]]
    labels = [[0, 0, 0, 0, 1], [0, 1, 0, 0, 0]]
    np.testing.assert_array_equal(per_row(metrics.apk, scores, labels, 3), [0.0, 0.5])
    np.testing.assert_array_equal(fast(scores, labels, ks=(3,))["P@3"], [0.0, 0.5])


def test_retrieval_is_annotation_of_the_transpose():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((20, 8)), 1)
    labels = rng.random((20, 8)) < 0.3
    annotation = metrics.annotation_metrics(scores.T, labels.T, ks=())
    retrieval = metrics.retrieval_metrics(scores, labels)
    assert retrieval == {
        "AUC-l": annotation["AUC-i"],
        "MAP-l": annotation["MAP-i"],
        "evaluated": annotation["evaluated"],
        "skipped": annotation["skipped"],
    }


# --------------------------------------------------------------------------------------------------
# Skipped rows


def test_skipped_rows_are_counted_and_excluded_from_every_metric():
    # Row 0 all negative, row 1 all positive, row 2 perfect, row 3 reversed.
    scores = [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.9, 0.1, 0.0], [0.0, 0.1, 0.9]]
    labels = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]]
    result = metrics.annotation_metrics(scores, labels)
    assert (result["evaluated"], result["skipped"]) == (2, 2)
    assert result["AUC-i"] == 0.5  # (1 + 0) / 2, rows 0 and 1 not included
    # AP: row 2 -> 1, row 3 -> positive at rank 3 -> 1/3; mean 2/3.
    assert result["MAP-i"] == pytest.approx(2 / 3, abs=1e-15)
    # P@1: row 2 -> 1, row 3 -> 0 (the all-positive row would have given 1: it is skipped too).
    assert result["P@1"] == 0.5
    rows = fast(scores, labels, ks=(1,))
    for key in ("AUC", "AP", "P@1"):
        assert np.isnan(rows[key][:2]).all()
    for metric, args in (
        (metrics.roc_auc, ()),
        (metrics.average_precision, ()),
        (metrics.apk, (1,)),
    ):
        assert np.isnan(per_row(metric, scores, labels, *args)[:2]).all()
    np.testing.assert_array_equal(metrics.defined_rows(labels), [False, False, True, True])


def test_every_row_skipped_gives_nan_means():
    result = metrics.annotation_metrics([[0.1, 0.2], [0.3, 0.4]], [[0, 0], [1, 1]])
    assert (result["evaluated"], result["skipped"]) == (0, 2)
    assert all(math.isnan(result[key]) for key in metrics.ANNOTATION_KEYS)
    retrieval = metrics.retrieval_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
    assert (retrieval["evaluated"], retrieval["skipped"]) == (0, 3)


def test_result_keys():
    scores, labels = random_case(5)
    assert list(metrics.annotation_metrics(scores, labels)) == [
        *metrics.ANNOTATION_KEYS,
        "evaluated",
        "skipped",
    ]
    assert list(metrics.retrieval_metrics(scores, labels)) == [
        *metrics.RETRIEVAL_KEYS,
        "evaluated",
        "skipped",
    ]
    assert list(metrics.annotation_metrics(scores, labels, ks=(3,))) == [
        "AUC-i",
        "MAP-i",
        "P@3",
        "evaluated",
        "skipped",
    ]


def test_harmonic_mean():
    assert metrics.harmonic_mean(0.5, 0.5) == 0.5
    assert metrics.harmonic_mean(1.0, 0.25) == pytest.approx(0.4)
    assert metrics.harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(metrics.harmonic_mean(float("nan"), 0.3))


# --------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), r"same shape.*\(2, 3\).*\(3, 2\)"),
        (np.zeros(3), np.zeros(3), r"scores must be a 2-D array.*1-D"),
        (np.zeros((2, 3)), np.zeros((2, 3, 1)), r"labels must be a 2-D array.*3-D"),
        (
            np.array([[0.1, np.nan], [0.2, 0.3]]),
            np.array([[1, 0], [0, 1]]),
            r"1 NaN/inf.*row 0, column 1",
        ),
        (
            np.array([[0.1, 0.2], [np.inf, 0.3]]),
            np.array([[1, 0], [0, 1]]),
            r"NaN/inf.*row 1, column 0",
        ),
        (np.zeros((2, 2)), np.array([[1, 0], [2, 1]]), r"binary.*row 1, column 0 \(value 2\)"),
        (np.zeros((2, 2)), np.array([[1.0, 0.5], [0.0, 1.0]]), r"binary.*labels > 0\.5"),
        (np.zeros((1, 2)), np.array([[1.0, np.nan]]), r"binary"),
        (np.array([["a", "b"]]), np.array([[1, 0]]), r"scores must be real numbers"),
    ],
)
def test_validation_errors(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        metrics.validate(scores, labels)
    with pytest.raises(ValueError, match=message):
        metrics.annotation_metrics(scores, labels)
    with pytest.raises(ValueError, match=message):
        metrics.retrieval_metrics(scores, labels)


def test_one_row_definitions_validate_their_input():
    with pytest.raises(
        ValueError, match=r"one row: scores and labels must be 1-D, got shapes \(1, 2\) and \(2,\)"
    ):
        metrics.roc_auc([[0.1, 0.2]], [1, 0])
    with pytest.raises(ValueError, match=r"binary.*value 2"):
        metrics.average_precision([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match=r"NaN/inf"):
        metrics.apk([0.1, np.inf], [1, 0], 1)
    with pytest.raises(ValueError, match=r"ks must be positive integers"):
        metrics.apk([0.1, 0.2], [1, 0], 0)


def test_retrieval_error_names_the_original_orientation():
    scores = np.zeros((3, 2))
    scores[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 2, column 1"):
        metrics.retrieval_metrics(scores, np.zeros((3, 2)))


@pytest.mark.parametrize("ks", [(0,), (-1, 5), (2.5,), (True,)])
def test_bad_ks(ks):
    with pytest.raises(ValueError, match=r"ks must be positive integers"):
        metrics.annotation_metrics([[0.1, 0.2]], [[1, 0]], ks=ks)


def test_no_tensorflow_import():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, metrics, tables; assert 'tensorflow' not in sys.modules and 'keras' not "
        "in "
        "sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1]
    )
