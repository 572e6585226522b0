"""Evaluation metrics of Choi et al., "Zero-shot Learning for Audio-based Music Classification and
Tagging" (ISMIR 2019), Section 5.3 and Tables 2-4, as numpy functions (no TensorFlow, no
scikit-learn).

Annotation (paper Table 2): each track (row) ranks the test labels; AUC-i / MAP-i = mean over tracks
    of the row's ROC-AUC / average precision, P@K = mean of the original code's "average precision
        at K"
    (ml_metrics `apk`, not plain precision@K: that is why the paper's P@10 can exceed its P@5).
    Retrieval (Tables 3-4): each label (column) ranks the test tracks; AUC-l / MAP-l = mean over
    labels.

A row whose labels are all 0 or all 1 has no ROC-AUC or AP: it is skipped by every metric (counted
in "skipped"), so that AUC, MAP and P@K of one result average the same rows. `roc_auc`,
`average_precision` and `apk` define the metrics on one row; `_fast_row_metrics` computes them for
all rows at once (tests/test_metrics.py: equal).
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10)
ANNOTATION_KEYS = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10")
RETRIEVAL_KEYS = ("AUC-l", "MAP-l")


# ---- The metrics of one row (scores (m,), binary labels (m,)); NaN where the labels are all 0 or a
def roc_auc(scores, labels) -> float:
    """ROC-AUC: the fraction of (positive, negative) pairs where the positive scores higher, a tie
    counting one half (Mann-Whitney U / (P N)); equals sklearn.metrics.roc_auc_score."""
    scores, labels = _row(scores, labels)
    positives = scores[labels][:, None]  # (P, 1)
    negatives = scores[~labels][None, :]  # (1, N)
    if not positives.size or not negatives.size:
        return float("nan")
    return float(np.mean((positives > negatives) + 0.5 * (positives == negatives)))


def average_precision(scores, labels) -> float:
    """Average precision as scikit-learn defines it: sum_n (R_n - R_{n-1}) P_n over the distinct
    score thresholds (tied scores form one threshold), i.e. the mean over the positives of the
    precision of "score >= its score"; equals sklearn.metrics.average_precision_score."""
    scores, labels = _row(scores, labels)
    if labels.all() or not labels.any():
        return float("nan")
    return float(np.mean([labels[scores >= threshold].mean() for threshold in scores[labels]]))


def apk(scores, labels, k: int) -> float:
    """The original code's "average precision at K" (ml_metrics apk; the paper's P@K): rank by
    descending score, ties by lower index first; sum precision@i over the ranks i <= K holding a
    positive; divide by min(P, K)."""
    (k,) = _validate_ks((k,))
    scores, labels = _row(scores, labels)
    if labels.all() or not labels.any():
        return float("nan")
    # (min(k, m),) labels of the top-ranked entries
    top = labels[np.argsort(-scores, kind="stable")][:k]
    precision_at_rank = np.cumsum(top) / np.arange(1, len(top) + 1)
    return float(np.sum(precision_at_rank[top]) / min(labels.sum(), k))


def defined_rows(labels) -> np.ndarray:
    """(n,) bool: rows of an (n, m) label matrix with at least one positive and one negative
    (ROC-AUC/AP defined)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"labels must be a 2-D array (n_tracks, n_labels), got shape {labels.shape}"
        )
    positives = np.count_nonzero(labels, axis=1)
    return (positives > 0) & (positives < labels.shape[1])


def _row(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"one row: scores and labels must be 1-D, got shapes {scores.shape} and {labels.shape}"
        )
    validate(scores[None, :], labels[None, :])
    return scores.astype(np.float64), labels.astype(bool)  # float32 ties stay ties when widened


# ---- The paper's metrics -------------------------------------------------------------------------
def annotation_metrics(scores, labels, ks=DEFAULT_KS) -> dict:
    """Paper Table 2: each TRACK (row of the (n_tracks, n_labels) arrays) ranks the test labels.

    Returns {"AUC-i", "MAP-i", "P@K" for each K: means over the tracks with at least one positive
    and one negative label; "evaluated": int, "skipped": int (the other tracks)}."""
    return _summarize(per_track_metrics(scores, labels, ks))


def retrieval_metrics(scores, labels) -> dict:
    """Paper Tables 3-4: each LABEL (column of the (n_tracks, n_labels) arrays) ranks the test
    tracks.

    Returns {"AUC-l", "MAP-l": means over the labels with at least one positive and one negative
    track; "evaluated", "skipped": the other labels (the paper's Table 4 footnote excluded them)}.
    """
    return _summarize(per_label_metrics(scores, labels))


def per_track_metrics(scores, labels, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    """The values annotation_metrics averages: {"AUC-i", "MAP-i", "P@K"} of each track, (n_tracks,)
    arrays (roc_auc, average_precision, apk of its row), NaN for a track whose labels are all 0 or
    all 1."""
    ks = _validate_ks(ks)
    per_row = _fast_row_metrics(*_prepare(scores, labels), ks)
    return {
        "AUC-i": per_row["AUC"],
        "MAP-i": per_row["AP"],
        **{f"P@{k}": per_row[f"P@{k}"] for k in ks},
    }


def per_label_metrics(scores, labels) -> dict[str, np.ndarray]:
    """The values retrieval_metrics averages: {"AUC-l", "MAP-l"} of each label (column), (n_labels,)
    arrays, NaN for a label whose tracks are all negative or all positive."""
    scores, labels = _prepare(scores, labels)
    per_column = _fast_row_metrics(_transposed(scores), _transposed(labels))
    return {"AUC-l": per_column["AUC"], "MAP-l": per_column["AP"]}


def harmonic_mean(seen, unseen):
    """Harmonic mean 2 s u / (s + u) of a seen-label and an unseen-label score (generalized
    zero-shot view, Xian et al. 2018; beyond the paper). Floats or arrays; 0 where s + u = 0; NaN if
    either is NaN."""
    seen, unseen = np.asarray(seen, dtype=np.float64), np.asarray(unseen, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(seen + unseen == 0, 0.0, 2.0 * seen * unseen / (seen + unseen))
    return float(value) if value.ndim == 0 else value


def _summarize(per_row: dict[str, np.ndarray]) -> dict:
    """Means of the per-row values over the defined rows (NaN when none); a row is defined where its
    AUC is."""
    defined = ~np.isnan(next(iter(per_row.values())))
    evaluated = int(defined.sum())
    return {
        **{
            name: float(values[defined].mean()) if evaluated else float("nan")
            for name, values in per_row.items()
        },
        "evaluated": evaluated,
        "skipped": int(defined.size - evaluated),
    }


# ---- Validation ----------------------------------------------------------------------------------
def validate(scores, labels) -> None:
    """Check (n_tracks, n_labels) scores (finite real numbers) and labels (bool or 0/1 numbers) of
    the same shape; raise ValueError with an actionable message otherwise."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    for name, array, letter in (("scores", scores, "x"), ("labels", labels, "y")):
        if array.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array (n_tracks, n_labels), got {array.ndim}-D with shape "
                f"{array.shape}; for a single track or label, pass {letter}[None, :] or "
                f"{letter}[:, None]"
            )
    if scores.shape != labels.shape:
        raise ValueError(
            "scores and labels must have the same shape (n_tracks, n_labels), got scores "
            f"{scores.shape} "
            f"and labels {labels.shape}; check that both use the same tracks and the same label "
            "order"
        )
    if (
        scores.dtype == bool
        or not np.issubdtype(scores.dtype, np.number)
        or np.iscomplexobj(scores)
    ):
        raise ValueError(
            f"scores must be real numbers (integer or floating dtype), got dtype {scores.dtype}"
        )
    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        row, col = np.argwhere(not_finite)[0]
        raise ValueError(
            f"scores contain {int(not_finite.sum())} NaN/inf value(s), the first at row {row}, "
            "column "
            f"{col} (value {scores[row, col]}); a zero-norm embedding gives a NaN cosine: check "
            "the "
            "model outputs"
        )
    if labels.dtype == bool:
        return
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"labels must be bool or 0/1 numbers, got dtype {labels.dtype}")
    not_binary = (labels != 0) & (labels != 1)
    if not_binary.any():
        row, col = np.argwhere(not_binary)[0]
        raise ValueError(
            f"labels must be binary (0/1 or bool), found {int(not_binary.sum())} other value(s), "
            "the "
            f"first at row {row}, column {col} (value {labels[row, col]}); threshold soft labels "
            "first "
            "(e.g. labels > 0.5)"
        )


def _validate_ks(ks) -> tuple[int, ...]:
    ks = tuple(ks)
    if any(
        isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks
    ):
        raise ValueError(f"ks must be positive integers (e.g. ks=(1, 5, 10)), got {ks!r}")
    return tuple(int(k) for k in ks)


def _prepare(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validated (float scores, bool labels); floating scores keep their dtype (ties by equality in
    that dtype)."""
    validate(scores, labels)
    scores, labels = np.asarray(scores), np.asarray(labels)
    scores = scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float64)
    return np.ascontiguousarray(scores), np.ascontiguousarray(labels.astype(bool))


# ---- All rows at once ----------------------------------------------------------------------------
def _fast_row_metrics(scores: np.ndarray, labels: np.ndarray, ks=()) -> dict[str, np.ndarray]:
    """{"AUC", "AP", "P@K" per K: (n,) float64} = roc_auc, average_precision and apk of every row of
    (n, m) float scores and bool labels (NaN on undefined rows), without a loop over rows.

    AUC and AP need, for each positive, only how many entries of its row score below it and how many
    score at most as much: a binary search of its score in its row's sorted scores (a sort of the
    values, no argsort) gives both. AP@K re-ranks only the entries at or above each row's K-th
    largest score."""
    n, m = scores.shape
    ordered = np.sort(scores, axis=1)  # (n, m) each row ascending
    flat = np.flatnonzero(labels)  # (p,) the positives, row by row
    row = flat // m
    value = scores.ravel()[flat]  # (p,)
    below = _count_below(ordered, row, value)  # (p,) entries of the row scoring < value
    through = _count_below(ordered, row, np.nextafter(value, np.inf))  # (p,) scoring <= value
    n_pos = np.bincount(row, minlength=n)  # (n,) P
    # Positives of the row scoring >= each positive: within a row, positives order as their `below`.
    key = row * m + below  # (p,)
    ranked = np.sort(key)
    hits = np.searchsorted(ranked, (row + 1) * m) - np.searchsorted(ranked, key)
    with np.errstate(divide="ignore", invalid="ignore"):
        # ROC-AUC = U / (P N): U = the sum of the positives' average ascending ranks in their tie
        # group, (below + through - 1) / 2, minus P (P - 1) / 2 (a tie counts one half).
        rank_sum = np.bincount(row, weights=(below + through - 1) / 2, minlength=n)
        out = {"AUC": (rank_sum - n_pos * (n_pos - 1) / 2) / (n_pos * (m - n_pos))}
        # AP = mean over the positives of the precision of "score >= its score".
        out["AP"] = np.bincount(row, weights=hits / (m - below), minlength=n) / n_pos
        k_max = min(max(ks, default=0), m)  # (retrieval: no AP@K, no re-ranking)
        top = _top_labels(scores, labels, ordered, k_max) if k_max else np.zeros((n, 0), bool)
        precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
        for k in ks:
            out[f"P@{k}"] = np.sum((top * precision_at_rank)[:, :k], axis=1) / np.minimum(n_pos, k)
    defined = (n_pos > 0) & (n_pos < m)
    return {key: np.where(defined, value, np.nan) for key, value in out.items()}


def _count_below(ordered: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(q,) how many entries of row rows[i] of `ordered` (each row ascending) are < values[i]: one
    branch-free binary search of all q values at once, log2(m) steps of q comparisons."""
    flat = ordered.ravel()
    first = rows * ordered.shape[1]  # (q,) where each row starts in `flat`
    position = first.copy()
    size = ordered.shape[1]  # the answer lies in position - first + [0, size]
    while size > 1:
        half = size // 2
        position += half * (flat[position + half] < values)
        size -= half
    return position + (flat[position] < values) - first  # the one entry left (none if m = 0)


def _top_labels(scores: np.ndarray, labels: np.ndarray, ordered: np.ndarray, k: int) -> np.ndarray:
    """(n, k) labels of each row's k highest scores, by descending score, ties by lower column (as
    apk ranks them); ordered: the rows' ascending scores, 1 <= k <= m."""
    n, m = scores.shape
    cut = ordered[:, m - k]  # (n,) each row's k-th largest score
    # (c,) the candidates, >= k per row, row by row, columns ascending
    flat = np.flatnonzero(scores >= cut[:, None])
    row = flat // m
    flat = flat[np.lexsort((-scores.ravel()[flat], row))]  # stable: tied columns stay ascending
    keep = np.arange(len(flat)) - np.searchsorted(row, row) < k  # the first k of each row
    return labels.ravel()[flat[keep]].reshape(n, k)


def _transposed(x: np.ndarray) -> np.ndarray:
    """x.T as a C-contiguous copy, written 256 rows of x at a time: the blocks stay in the CPU cache
    (twice as fast as np.ascontiguousarray(x.T) at MSD width)."""
    out = np.empty(x.shape[::-1], dtype=x.dtype)
    for start in range(0, len(x), 256):
        out[:, start : start + 256] = x[start : start + 256].T
    return out
