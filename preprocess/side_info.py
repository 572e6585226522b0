"""Side information for labels: instrument attribute vectors (paper Experiment 1) and the random baseline.

Instrument vectors follow the original implementation (../shared/REFERENCE.md, "Side information"):

* per track, from OpenMIC-2018-style annotations (`Y_true` likelihoods in [0, 1], `Y_mask` True where annotated):
  instrument i annotated with likelihood > 0.5 fills slot i ("present"), annotated with likelihood <= 0.5 fills
  slot K + i ("absent"), K = number of instruments (20 for OpenMIC, so 40 dims). Unannotated cells fill nothing.
  Flavour `count` puts 1 in the slot, `confidence` puts |likelihood - 0.5|.
* per label (genre): the sum of the vectors of its tracks, then each label vector is standardized on its own
  (minus its mean over the 2K dims, divided by its population std). A label whose std is 0 (e.g. no annotated
  track) cannot be standardized and is dropped.

The demo corpus and the FMA adapter both call `instrument_side_info`, so the two go through the same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Registry: side-information kind (file stem in side_info/) -> flavour of instrument_track_vectors.
INSTRUMENT_KINDS = {"instrument-count": "count", "instrument-confidence": "confidence"}
RANDOM_KIND = "random"


def instrument_track_vectors(y_true: np.ndarray, y_mask: np.ndarray, flavour: str = "count") -> np.ndarray:
    """Per-track 2K-dim instrument vectors.

    Args:
        y_true: (n_tracks, K) likelihoods in [0, 1] (OpenMIC `Y_true`).
        y_mask: (n_tracks, K) bool, True where the instrument was annotated (OpenMIC `Y_mask`).
        flavour: "count" (1 in the slot) or "confidence" (|y_true - 0.5| in the slot).

    Returns:
        (n_tracks, 2K) float64: columns [0, K) "present", [K, 2K) "absent".
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_mask = np.asarray(y_mask, dtype=bool)
    if y_true.shape != y_mask.shape or y_true.ndim != 2:
        raise ValueError(f"Y_true {y_true.shape} and Y_mask {y_mask.shape} must be equal 2-D shapes")
    if flavour == "count":
        value = np.ones_like(y_true)
    elif flavour == "confidence":
        value = np.abs(y_true - 0.5)
    else:
        raise ValueError(f"unknown instrument flavour {flavour!r}; choose count or confidence")
    present = y_mask & (y_true > 0.5)
    absent = y_mask & (y_true <= 0.5)
    return np.concatenate([np.where(present, value, 0.0), np.where(absent, value, 0.0)], axis=1)


def sum_by_label(track_ids, track_vectors: np.ndarray, annotations: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Sum the vectors of each label's tracks.

    Args:
        track_ids: ids of the rows of `track_vectors` (tracks with instrument annotations).
        track_vectors: (n_tracks, dim).
        annotations: DataFrame track_id,label (positive pairs). Pairs whose track has no vector add nothing.

    Returns:
        (labels sorted, (n_labels, dim) sums); every label of `annotations` is listed, with zeros if none of its
        tracks has a vector.
    """
    track_index = pd.Series(list(track_ids), dtype=str)
    if track_index.duplicated().any():
        raise ValueError(
            f"instrument annotations: track id {track_index[track_index.duplicated()].iloc[0]!r} occurs more than "
            "once; give one annotation row per track."
        )
    labels = sorted(annotations["label"].astype(str).unique())
    rows = pd.Index(pd.Series(list(track_ids), dtype=str)).get_indexer(annotations["track_id"].astype(str))
    cols = pd.Index(labels).get_indexer(annotations["label"].astype(str))
    keep = rows >= 0
    sums = np.zeros((len(labels), track_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, cols[keep], track_vectors[rows[keep]])
    return labels, sums


def standardize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardize each row by its own mean and population std. Returns (standardized, ok) with ok = std > 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    mean = matrix.mean(axis=1, keepdims=True)
    std = matrix.std(axis=1, keepdims=True)
    ok = std[:, 0] > 0
    out = np.zeros_like(matrix)
    out[ok] = (matrix[ok] - mean[ok]) / std[ok]
    return out, ok


def instrument_side_info(
    track_ids, y_true: np.ndarray, y_mask: np.ndarray, annotations: pd.DataFrame, flavour: str = "count"
) -> tuple[list[str], np.ndarray, list[str]]:
    """Label vectors from per-track instrument annotations.

    Returns (labels kept, (n_kept, 2K) standardized vectors, labels dropped because they cannot be standardized).
    """
    vectors = instrument_track_vectors(y_true, y_mask, flavour)
    labels, sums = sum_by_label(track_ids, vectors, annotations)
    standardized, ok = standardize_rows(sums)
    kept = [lab for lab, good in zip(labels, ok) if good]
    dropped = [lab for lab, good in zip(labels, ok) if not good]
    return kept, standardized[ok], dropped


def random_side_info(labels, dim: int, seed: int = 0) -> np.ndarray:
    """The random baseline: i.i.d. standard-normal vectors, (len(labels), dim), reproducible from the seed.

    A label's vector depends only on the seed and on its rank among the sorted labels, not on the input order.
    """
    order = np.argsort(np.asarray([str(lab) for lab in labels], dtype=object), kind="stable")
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((len(order), int(dim)))
    out = np.empty_like(draws)
    out[order] = draws
    return out
