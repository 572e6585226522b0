"""Side information for labels: instrument vectors (paper Experiment 1; docs/original.md) and the
random baseline.

* Per track, from OpenMIC-style annotations (Y_true likelihoods, Y_mask True where annotated), K
  instruments: instrument i annotated > 0.5 fills slot i ("present"), annotated <= 0.5 fills slot K
  + i ("absent"); flavour `count` puts 1 there, `confidence` |likelihood - 0.5|. Unannotated cells
  fill nothing.
* Per label (genre): the sum over its tracks, standardized on its own (minus its mean over the 2K
  dims, divided by its population std). A label with std 0 (e.g. no annotated track) cannot be
  standardized and is dropped.
The demo corpus and the FMA adapter both call `instrument_side_info`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Registry: side-information kind (file stem in side_info/) -> flavour of instrument_track_vectors.
INSTRUMENT_KINDS = {"instrument-count": "count", "instrument-confidence": "confidence"}
RANDOM_KIND = "random"


def instrument_track_vectors(
    y_true: np.ndarray, y_mask: np.ndarray, flavour: str = "count"
) -> np.ndarray:
    """(n_tracks, K) likelihoods, (n_tracks, K) annotated mask -> (n_tracks, 2K) float64 vectors:
    columns [0, K) "present", [K, 2K) "absent"; flavour "count" (1 in the slot) or "confidence"
    (|y_true - 0.5| in the slot)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_mask = np.asarray(y_mask, dtype=bool)
    if y_true.shape != y_mask.shape or y_true.ndim != 2:
        raise ValueError(
            f"Y_true {y_true.shape} and Y_mask {y_mask.shape} must be equal 2-D shapes"
        )
    if flavour == "count":
        value = np.ones_like(y_true)
    elif flavour == "confidence":
        value = np.abs(y_true - 0.5)
    else:
        raise ValueError(f"unknown instrument flavour {flavour!r}; choose count or confidence")
    present = y_mask & (y_true > 0.5)
    absent = y_mask & (y_true <= 0.5)
    return np.concatenate([np.where(present, value, 0.0), np.where(absent, value, 0.0)], axis=1)


def sum_by_label(
    track_ids, track_vectors: np.ndarray, annotations: pd.DataFrame
) -> tuple[list[str], np.ndarray]:
    """(sorted labels of `annotations` (track_id,label), (n_labels, dim) sums of their tracks'
    vectors).

    track_vectors[i] belongs to track_ids[i]; a pair whose track has no vector adds nothing (a label
    can sum to 0).
    """
    track_index = pd.Index([str(t) for t in track_ids])
    if track_index.has_duplicates:
        raise ValueError(
            f"instrument annotations: track id {track_index[track_index.duplicated()][0]!r} occurs "
            "more than once; give one annotation row per track."
        )
    labels = sorted(annotations["label"].astype(str).unique())
    rows = track_index.get_indexer(annotations["track_id"].astype(str))
    cols = pd.Index(labels).get_indexer(annotations["label"].astype(str))
    keep = rows >= 0
    sums = np.zeros((len(labels), track_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, cols[keep], track_vectors[rows[keep]])
    return labels, sums


def standardize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardize each row by its own mean and population std. Returns (standardized, ok) with ok =
    std > 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    mean = matrix.mean(axis=1, keepdims=True)
    std = matrix.std(axis=1, keepdims=True)
    ok = std[:, 0] > 0
    out = np.zeros_like(matrix)
    out[ok] = (matrix[ok] - mean[ok]) / std[ok]
    return out, ok


def instrument_side_info(
    track_ids,
    y_true: np.ndarray,
    y_mask: np.ndarray,
    annotations: pd.DataFrame,
    flavour: str = "count",
) -> tuple[list[str], np.ndarray, list[str]]:
    """Label vectors from per-track instrument annotations -> (labels kept, (n_kept, 2K)
    standardized vectors, labels dropped because they cannot be standardized)."""
    labels, sums = sum_by_label(
        track_ids, instrument_track_vectors(y_true, y_mask, flavour), annotations
    )
    standardized, ok = standardize_rows(sums)
    kept = [lab for lab, good in zip(labels, ok, strict=True) if good]
    dropped = [lab for lab, good in zip(labels, ok, strict=True) if not good]
    return kept, standardized[ok], dropped


def random_side_info(labels, dim: int, seed: int = 0) -> np.ndarray:
    """The random baseline: (len(labels), dim) i.i.d. standard-normal vectors. A label's vector
    depends only on the seed and on its rank among the sorted labels, not on the input order."""
    order = np.argsort(np.asarray([str(lab) for lab in labels], dtype=object), kind="stable")
    draws = np.random.default_rng(seed).standard_normal((len(order), int(dim)))
    out = np.empty_like(draws)
    out[order] = draws
    return out
