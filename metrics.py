"""Evaluation metrics of Choi, Lee, Park and Nam, "Zero-shot Learning for Audio-based Music Classification and
Tagging" (ISMIR 2019), Section 5.3 and Tables 2-4, as pure numpy functions (no TensorFlow, no scikit-learn).

Annotation task (one row per track, ranked over the test labels; paper Table 2):
    AUC-i   mean over tracks of the ROC-AUC of the track's label scores
    MAP-i   mean over tracks of the average precision of the track's label scores
    P@K     mean over tracks of the original code's "average precision at K" (the ``apk`` of the ml_metrics
            recommender library), K = 1, 5, 10.  It is *not* plain precision@K: that is why the paper's P@10 can
            exceed its P@5.
Retrieval task (one row per label, ranked over the test tracks; paper Tables 3 and 4):
    AUC-l   mean over labels of the ROC-AUC of the label's track scores
    MAP-l   mean over labels of the average precision of the label's track scores

Conventions (all functions):
- ``scores`` and ``labels`` are (n_tracks, n_labels) arrays; ``labels`` is binary (bool, or 0/1 numbers).
- ROC-AUC equals ``sklearn.metrics.roc_auc_score`` on each row: tied scores count one half (Mann-Whitney U with
  average ranks).  Average precision equals ``sklearn.metrics.average_precision_score``: the step-wise sum
  ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds, so tied scores form ONE threshold.
- AP@K ranks the labels by descending score; ties are broken by the lower column index first (what a stable sort of
  the negated scores gives), so the result is deterministic and independent of the sorting algorithm.
- A row whose labels are all 0 or all 1 has no defined ROC-AUC or AP.  Such rows are *skipped* (NaN in the per-row
  arrays, left out of every mean, counted in ``"skipped"``).  AP@K is skipped on exactly the same rows (it would be
  0 for an all-negative row and 1 for an all-positive one), so that AUC, MAP and P@K of one result are always
  averages over the same tracks (or labels).  When every row is skipped the means are NaN.

Implementation: one ``np.argsort`` per orientation (the fast unstable one; no formula depends on the order inside
a tie group, and AP@K re-sorts only the few tied entries at the top of each row).  The tie groups are where
consecutive sorted scores differ (an ``np.diff``-style comparison); ``np.searchsorted`` places every positive entry
in its group, so all counts the formulas need come from the positive entries alone, for all rows at once.  There is
no Python loop over rows.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10)
ANNOTATION_KEYS = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10")
RETRIEVAL_KEYS = ("AUC-l", "MAP-l")

__all__ = [
    "DEFAULT_KS",
    "ANNOTATION_KEYS",
    "RETRIEVAL_KEYS",
    "validate",
    "defined_rows",
    "row_metrics",
    "roc_auc_rows",
    "average_precision_rows",
    "apk_rows",
    "annotation_metrics",
    "retrieval_metrics",
    "harmonic_mean",
]


# --------------------------------------------------------------------------------------------------------------------
# Validation


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    """(row, column) of the first True entry of a 2-D boolean mask, as plain ints."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def validate(scores, labels) -> None:
    """Check that ``scores`` and ``labels`` can be evaluated; raise ``ValueError`` with an actionable message if not.

    Parameters
    ----------
    scores : array-like, shape (n_tracks, n_labels)
        Real-valued relevance scores (e.g. cosine similarities); every value must be finite.
    labels : array-like, shape (n_tracks, n_labels)
        Ground truth, binary: bool, or numbers that are all 0 or 1.

    Raises
    ------
    ValueError
        Non-2-D input, shape mismatch, non-numeric or non-finite scores, or non-binary labels.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(
            f"scores must be a 2-D array (n_tracks, n_labels), got {scores.ndim}-D with shape {scores.shape}; "
            "for a single track or label, pass x[None, :] or x[:, None]"
        )
    if labels.ndim != 2:
        raise ValueError(
            f"labels must be a 2-D array (n_tracks, n_labels), got {labels.ndim}-D with shape {labels.shape}; "
            "for a single track or label, pass y[None, :] or y[:, None]"
        )
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must have the same shape (n_tracks, n_labels), got scores {scores.shape} and "
            f"labels {labels.shape}; check that both use the same tracks and the same label order"
        )
    if scores.dtype == bool or not (np.issubdtype(scores.dtype, np.integer)
                                    or np.issubdtype(scores.dtype, np.floating)):
        raise ValueError(
            f"scores must be real numbers (integer or floating dtype), got dtype {scores.dtype}"
        )
    if np.issubdtype(scores.dtype, np.floating):
        bad = ~np.isfinite(scores)
        if bad.any():
            row, col = _first_index(bad)
            raise ValueError(
                f"scores contain {int(bad.sum())} NaN/inf value(s), the first at row {row}, column {col} "
                f"(value {scores[row, col]}); a zero-norm embedding gives a NaN cosine: check the model outputs"
            )
    if labels.dtype != bool:
        if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
            raise ValueError(f"labels must be bool or 0/1 numbers, got dtype {labels.dtype}")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            row, col = _first_index(bad)
            raise ValueError(
                f"labels must be binary (0/1 or bool), found {int(bad.sum())} other value(s), the first at row "
                f"{row}, column {col} (value {labels[row, col]}); threshold soft labels first (e.g. labels > 0.5)"
            )


def _validate_ks(ks) -> tuple[int, ...]:
    """Return ``ks`` as a tuple of positive ints, or raise ValueError."""
    ks = tuple(ks)
    for k in ks:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must be positive integers (e.g. ks=(1, 5, 10)), got {ks!r}")
    return tuple(int(k) for k in ks)


def _prepare(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate, then return (scores as a C-contiguous float array, labels as a C-contiguous bool array).

    Floating scores keep their dtype (float32 cosines are not widened): ties are decided by exact equality in the
    given dtype, as scikit-learn does.
    """
    validate(scores, labels)
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    labels = np.asarray(labels)
    labels = labels if labels.dtype == bool else labels == 1
    return np.ascontiguousarray(scores), np.ascontiguousarray(labels)


# --------------------------------------------------------------------------------------------------------------------
# Per-row metrics (one sort)


def defined_rows(labels) -> np.ndarray:
    """Rows with a defined ROC-AUC / AP: at least one positive and at least one negative label.

    labels: (n, m) binary.  Returns (n,) bool.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array (n_tracks, n_labels), got shape {labels.shape}")
    positives = np.count_nonzero(labels, axis=1)
    return (positives > 0) & (positives < labels.shape[1])


def _top_k_labels(flat_order: np.ndarray, sorted_scores: np.ndarray, sorted_labels: np.ndarray,
                  starts: np.ndarray, kmax: int) -> np.ndarray:
    """Labels of the top ``kmax`` entries of each row, by descending score, ties by lower column index first.

    flat_order, sorted_scores, sorted_labels: (n, m), the row-wise ASCENDING (unstable) sort as flat indices into
    the (n, m) matrix, its scores and its labels; starts: ascending flat positions of the tie-group starts in the
    sorted matrix.  Returns (n, kmax) bool.

    Only the tail of the ascending order can reach the top ``kmax``: the last ``W`` positions, where ``W`` covers
    the whole tie group of the kmax-th largest score in every row.  Re-sorting that (n, W) tail by the unique key
    (tie group, -column index) fixes the tie order without a stable sort of the full matrix.
    """
    n, m = sorted_scores.shape
    row_offset = np.arange(n, dtype=np.int64) * m                                  # (n,)
    boundary = row_offset + (m - kmax)                                             # flat position of the kmax-th
    boundary_start = starts[np.searchsorted(starts, boundary, side="right") - 1] - row_offset
    width = m - int(boundary_start.min())
    tail_column = flat_order[:, m - width:] - row_offset[:, None]                  # (n, W) column indices
    tail_scores = sorted_scores[:, m - width:]
    # Tie-group number inside the tail (increasing with the score): equal scores share a number.
    group = np.zeros((n, width), dtype=np.int64)
    np.cumsum(tail_scores[:, 1:] != tail_scores[:, :-1], axis=1, out=group[:, 1:])
    key = group * m + (m - 1 - tail_column)          # ascending key = ascending score, then descending column
    resorted = np.argsort(key, axis=1)               # keys are unique: any sort algorithm gives the same result
    top = resorted[:, ::-1][:, :kmax]                # descending score, then ascending column index
    return np.take_along_axis(sorted_labels[:, m - width:], top, axis=1)


def row_metrics(scores, labels, ks=()) -> dict[str, np.ndarray]:
    """ROC-AUC, average precision and AP@K of every row, from a single argsort of ``scores``.

    Parameters
    ----------
    scores : array-like, shape (n, m)
        Scores; each row is ranked over its m columns.
    labels : array-like, shape (n, m)
        Binary ground truth.
    ks : iterable of int
        Cut-offs K for AP@K (may be empty).

    Returns
    -------
    dict with (n,) float64 arrays: ``"AUC"``, ``"AP"`` and ``"P@K"`` for each K in ``ks``; NaN on rows whose labels
    are all 0 or all 1 (see :func:`defined_rows`).

    Formulas, for a row with P positives and N negatives (m = P + N), sorted ascending; for the element at 0-based
    position j: [b_j, e_j] = first and last positions of its tie group, c_j = number of positives before position j.
        ROC-AUC = U / (P N),  U = #{(pos, neg): s_pos > s_neg} + 1/2 #{(pos, neg): s_pos = s_neg}
                = sum_{j positive} ((b_j + e_j) / 2 - c_j)
          ((b_j + e_j) / 2 + 1 is the average rank of j's tie group: the Mann-Whitney statistic with average ranks,
           sum of positive ranks - P (P + 1) / 2, and sum_{j positive} c_j = P (P - 1) / 2)
        AP      = 1/P * sum_{j positive} (P - c_{b_j}) / (m - b_j)
          (the precision at the threshold "score >= s_j", shared by the whole tie group: step-wise, as sklearn)
        AP@K    = 1/min(P, K) * sum_{i=1..K, label at rank i positive} (#positives in ranks 1..i) / i
          (ranks by descending score, ties by lower column index; K larger than m uses all m columns)
    Every per-element quantity is evaluated at the positive entries only: the tie groups come from
    ``np.flatnonzero`` of the group starts (where ``np.diff`` of the sorted scores is non-zero) and
    ``np.searchsorted`` of the positives in them.
    """
    ks = _validate_ks(ks)
    scores, labels = _prepare(scores, labels)
    n, m = scores.shape
    defined = defined_rows(labels)
    out = {"AUC": np.full(n, np.nan), "AP": np.full(n, np.nan)}
    out.update({f"P@{k}": np.full(n, np.nan) for k in ks})
    if n == 0 or not defined.any():
        return out

    # Ascending, unstable (SIMD quicksort): the AUC and AP formulas do not depend on the order inside a tie group.
    flat_order = np.argsort(scores, axis=1)                                     # (n, m) column indices ...
    flat_order += (np.arange(n, dtype=np.int64) * m)[:, None]                   # ... made flat indices, in place
    sorted_scores = scores.ravel().take(flat_order)                              # (n, m) ascending per row
    sorted_labels = labels.ravel().take(flat_order)                              # (n, m) bool

    # Tie groups: flat positions where a group starts (every row starts one), plus an end sentinel.
    is_start = np.ones((n, m), dtype=bool)
    np.not_equal(sorted_scores[:, 1:], sorted_scores[:, :-1], out=is_start[:, 1:])
    starts = np.append(np.flatnonzero(is_start), n * m)                         # (n_groups + 1,)

    # Positive entries (a few percent of the matrix), in row-major order: row, position j, c_j, b_j, e_j.
    positives = np.flatnonzero(sorted_labels)                                    # (n_positives,) flat positions
    pos_row = positives // m
    row_offset = pos_row * m
    n_pos = np.bincount(pos_row, minlength=n)                                    # P per row
    n_neg = m - n_pos
    first_positive = np.cumsum(n_pos) - n_pos                                    # index in `positives` per row
    pos_before = np.arange(positives.size) - first_positive[pos_row]             # c_j
    group = np.searchsorted(starts, positives, side="right") - 1
    group_first = starts[group]                                                  # flat b_j
    group_last = starts[group + 1] - 1                                           # flat e_j
    # c_{b_j}: positives of the row before the tie group of j.
    pos_before_group = np.searchsorted(positives, group_first, side="left") - first_positive[pos_row]

    with np.errstate(divide="ignore", invalid="ignore"):
        # ROC-AUC (Mann-Whitney U with ties counting one half); the weights are exact integers in float64.
        twice_u = np.bincount(pos_row, weights=group_first + group_last - 2 * (row_offset + pos_before),
                              minlength=n)
        out["AUC"] = np.where(defined, 0.5 * twice_u / (n_pos * n_neg), np.nan)

        # Average precision, step-wise over the distinct thresholds.
        precision = (n_pos[pos_row] - pos_before_group) / (m - (group_first - row_offset))
        out["AP"] = np.where(defined, np.bincount(pos_row, weights=precision, minlength=n) / n_pos, np.nan)

    if ks:
        kmax = min(max(ks), m)
        top = _top_k_labels(flat_order, sorted_scores, sorted_labels, starts, kmax)   # (n, kmax) bool
        hits = np.cumsum(top, axis=1)                                                # positives in ranks 1..i
        precision_at_rank = np.where(top, hits / np.arange(1, kmax + 1), 0.0)        # counted where a positive is
        summed = np.cumsum(precision_at_rank, axis=1)
        for k in ks:
            kk = min(k, m)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"P@{k}"] = np.where(defined, summed[:, kk - 1] / np.minimum(n_pos, k), np.nan)
    return out


def roc_auc_rows(scores, labels) -> np.ndarray:
    """ROC-AUC of each row, (n,) float64, NaN where undefined; equals sklearn's ``roc_auc_score`` per row.

    scores, labels: (n, m).  AUC = U / (P N) with ties counting one half (see :func:`row_metrics`).
    """
    return row_metrics(scores, labels)["AUC"]


def average_precision_rows(scores, labels) -> np.ndarray:
    """Average precision of each row, (n,) float64, NaN where undefined; equals sklearn's
    ``average_precision_score`` per row: sum over distinct thresholds of (R_k - R_{k-1}) * P_k.

    scores, labels: (n, m).
    """
    return row_metrics(scores, labels)["AP"]


def apk_rows(scores, labels, k: int) -> np.ndarray:
    """The original code's "average precision at K" (paper's P@K) of each row, (n,) float64.

    scores, labels: (n, m).  AP@K = sum_{i<=K, rank i positive} precision@i / min(P, K); ranks by descending score,
    ties by lower column index.  NaN on the rows skipped by every metric (all labels 0 or all 1).
    """
    (k,) = _validate_ks((k,))
    return row_metrics(scores, labels, ks=(k,))[f"P@{k}"]


# --------------------------------------------------------------------------------------------------------------------
# The paper's metrics


def _summarize(per_row: dict[str, np.ndarray], names: dict[str, str]) -> dict:
    """Average per-row arrays over the defined rows; add "evaluated" and "skipped" counts.

    names maps a per-row key ("AUC") to its published name ("AUC-i").  Means of no rows are NaN (no warning).
    """
    first = next(iter(per_row.values()))
    defined = ~np.isnan(first)
    evaluated = int(defined.sum())
    result = {}
    for key, name in names.items():
        result[name] = float(per_row[key][defined].mean()) if evaluated else float("nan")
    result["evaluated"] = evaluated
    result["skipped"] = int(first.shape[0] - evaluated)
    return result


def annotation_metrics(scores, labels, ks=DEFAULT_KS) -> dict:
    """Annotation metrics of paper Table 2: each TRACK (row) ranks the test labels (columns).

    Parameters
    ----------
    scores, labels : array-like, shape (n_tracks, n_labels)
    ks : iterable of int, default (1, 5, 10)

    Returns
    -------
    {"AUC-i": float, "MAP-i": float, "P@1": float, "P@5": float, "P@10": float (one "P@K" per K),
     "evaluated": int, "skipped": int}
    Means over the tracks that have at least one positive and one negative label; "skipped" counts the others.
    """
    ks = _validate_ks(ks)
    per_row = row_metrics(scores, labels, ks=ks)
    names = {"AUC": "AUC-i", "AP": "MAP-i"}
    names.update({f"P@{k}": f"P@{k}" for k in ks})
    return _summarize(per_row, names)


def retrieval_metrics(scores, labels) -> dict:
    """Retrieval metrics of paper Tables 3-4: each LABEL (column) ranks the test tracks (rows).

    Parameters
    ----------
    scores, labels : array-like, shape (n_tracks, n_labels)

    Returns
    -------
    {"AUC-l": float, "MAP-l": float, "evaluated": int, "skipped": int}
    Means over the labels that have at least one positive and one negative track; "skipped" counts the others
    (the paper's Table 4 footnote excluded such labels).
    """
    validate(scores, labels)
    # Transposed copy so that the one sort runs along contiguous memory.
    per_column = row_metrics(np.ascontiguousarray(np.asarray(scores).T), np.ascontiguousarray(np.asarray(labels).T))
    return _summarize(per_column, {"AUC": "AUC-l", "AP": "MAP-l"})


def harmonic_mean(seen, unseen):
    """Harmonic mean 2 s u / (s + u) of a seen-label and an unseen-label score (generalized zero-shot view,
    Xian et al. 2018; beyond the paper).  Works on floats or arrays; 0 where s + u = 0; NaN if either is NaN.
    """
    seen = np.asarray(seen, dtype=np.float64)
    unseen = np.asarray(unseen, dtype=np.float64)
    total = seen + unseen
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(total == 0, 0.0, 2.0 * seen * unseen / total)
    return float(value) if value.ndim == 0 else value
