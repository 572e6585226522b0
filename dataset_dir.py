"""The dataset directory: one layout shared by the demo corpus, FMA, MSD and users' own data.

    data/<name>/
        tracks.csv           track_id,path        audio file per track (path absolute, or relative to the
                                                  dataset directory)
        annotations.csv      track_id,label       one row per positive (track, label) pair
        side_info/<kind>.csv label,v0,...,v{d-1}  one side-information vector per label
        mels.h5              standardized log-mel store of the tracks (preprocess/store.py)
        splits/              zero-shot split files (splits/)
        summary.json         counts written by `summarize`

Everything here is plain pandas/numpy (no TensorFlow), so that every stage and the tests can use it cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fileio import atomic_write_text, sha256_file, write_json  # noqa: F401  (used here and by callers)

REPO_ROOT = Path(__file__).resolve().parent
DATA_ROOT = REPO_ROOT / "data"
# Names that resolve to data/<name>; anything else given as --dataset must be a directory path.
NAMED_DATASETS = ("demo", "fma", "msd")

TRACKS_FILE = "tracks.csv"
ANNOTATIONS_FILE = "annotations.csv"
MELS_FILE = "mels.h5"
SIDE_INFO_DIR = "side_info"
SPLITS_DIR = "splits"
SUMMARY_FILE = "summary.json"


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and what to do."""


# --------------------------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------------------------
def resolve_dataset_dir(name_or_path: str | os.PathLike, must_exist: bool = False) -> Path:
    """Map a dataset name ("demo", "fma", "msd") to data/<name>; any other value is taken as a directory path."""
    text = str(name_or_path)
    if text in NAMED_DATASETS:
        path = DATA_ROOT / text
    else:
        path = Path(text).expanduser()
        if not path.is_dir():
            raise DatasetError(
                f"--dataset {text!r}: not one of {', '.join(NAMED_DATASETS)} and not an existing directory. "
                "Give a dataset name or the path of a dataset directory (layout: data/README.md)."
            )
    path = path.resolve()
    if must_exist and not path.is_dir():
        raise DatasetError(f"dataset directory {path} does not exist; build it first (see data/README.md).")
    return path


def dataset_name(dataset_dir: str | os.PathLike) -> str:
    """The short name used in results: the directory's name ("demo", "fma", "msd", or a user's folder name)."""
    return Path(dataset_dir).resolve().name


def tracks_path(dataset_dir) -> Path:
    return Path(dataset_dir) / TRACKS_FILE


def annotations_path(dataset_dir) -> Path:
    return Path(dataset_dir) / ANNOTATIONS_FILE


def mels_path(dataset_dir) -> Path:
    return Path(dataset_dir) / MELS_FILE


def side_info_dir(dataset_dir) -> Path:
    return Path(dataset_dir) / SIDE_INFO_DIR


def side_info_path(dataset_dir, kind: str) -> Path:
    return side_info_dir(dataset_dir) / f"{kind}.csv"


def splits_dir(dataset_dir) -> Path:
    return Path(dataset_dir) / SPLITS_DIR


def summary_path(dataset_dir) -> Path:
    return Path(dataset_dir) / SUMMARY_FILE


def available_side_info(dataset_dir) -> list[str]:
    """Kinds of side information present in the dataset directory (file stems of side_info/*.csv), sorted."""
    folder = side_info_dir(dataset_dir)
    return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []


def resolve_side_info(dataset_dir, kind: str) -> Path:
    """The CSV for a side-information kind, or a clear error listing the kinds this dataset has."""
    candidate = Path(kind)
    if candidate.suffix == ".csv" and candidate.is_file():
        return candidate.resolve()
    path = side_info_path(dataset_dir, kind)
    if not path.is_file():
        have = available_side_info(dataset_dir)
        raise DatasetError(
            f"--side-info {kind!r}: no file {path}. This dataset has: {', '.join(have) if have else 'none'}."
        )
    return path


# --------------------------------------------------------------------------------------------------------------
# Small I/O helpers
# --------------------------------------------------------------------------------------------------------------
def read_csv_columns(path, required, what: str) -> pd.DataFrame:
    """A CSV as strings (no NaN conversion) with the `required` columns, or one DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file {path} does not exist.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{what} file {path} is empty; expected a header {','.join(required)}.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what} file {path} is not a readable CSV: {exc}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{what} file {path} lacks column(s) {', '.join(missing)}; "
            f"expected header {','.join(required)} (found {','.join(map(str, frame.columns))})."
        )
    return frame


# --------------------------------------------------------------------------------------------------------------
# tracks.csv and annotations.csv
# --------------------------------------------------------------------------------------------------------------
def read_tracks(path) -> pd.DataFrame:
    """tracks.csv -> DataFrame with string columns track_id, path (unique track ids, file order kept)."""
    frame = read_csv_columns(path, ("track_id", "path"), "tracks")[["track_id", "path"]]
    duplicated = frame["track_id"][frame["track_id"].duplicated()]
    if len(duplicated):
        raise DatasetError(f"tracks file {path}: track_id {duplicated.iloc[0]!r} occurs more than once.")
    if (frame["track_id"] == "").any():
        raise DatasetError(f"tracks file {path}: empty track_id on row {int(np.argmax(frame['track_id'] == '')) + 2}.")
    return frame.reset_index(drop=True)


def write_tracks(path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame[["track_id", "path"]].to_csv(index=False))


def read_annotations(path) -> pd.DataFrame:
    """annotations.csv -> DataFrame with string columns track_id, label; duplicate pairs are merged."""
    frame = read_csv_columns(path, ("track_id", "label"), "annotations")[["track_id", "label"]]
    empty = (frame["track_id"] == "") | (frame["label"] == "")
    if empty.any():
        raise DatasetError(f"annotations file {path}: empty track_id or label on row {int(np.argmax(empty)) + 2}.")
    return frame.drop_duplicates().reset_index(drop=True)


def write_annotations(path, frame: pd.DataFrame) -> None:
    """Write annotations sorted by (track_id, label) so that the file is deterministic."""
    out = frame[["track_id", "label"]].astype(str).drop_duplicates().sort_values(["track_id", "label"])
    atomic_write_text(path, out.to_csv(index=False))


def label_matrix(annotations: pd.DataFrame, track_ids, labels) -> np.ndarray:
    """Binary (len(track_ids), len(labels)) matrix: entry [i, j] is 1 when (track_ids[i], labels[j]) is annotated.

    Pairs whose track or label is not in the given lists are ignored. Vectorized (no per-track loop).
    """
    track_index = pd.Index(pd.Series(list(track_ids), dtype=str))
    label_index = pd.Index(pd.Series(list(labels), dtype=str))
    rows = track_index.get_indexer(annotations["track_id"].astype(str))
    cols = label_index.get_indexer(annotations["label"].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    matrix = np.zeros((len(track_index), len(label_index)), dtype=np.uint8)
    matrix[rows[keep], cols[keep]] = 1
    return matrix


# --------------------------------------------------------------------------------------------------------------
# side_info/<kind>.csv
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SideInfo:
    """Side-information vectors: labels[i] is described by vectors[i]."""

    labels: list[str]
    vectors: np.ndarray  # (n_labels, dim) float32

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, labels) -> np.ndarray:
        """(len(labels), dim) vectors of the given labels; raises DatasetError naming the labels without a vector."""
        index = pd.Index(self.labels)
        positions = index.get_indexer(list(labels))
        if (positions < 0).any():
            missing = [lab for lab, pos in zip(labels, positions) if pos < 0]
            raise DatasetError(
                f"{len(missing)} label(s) have no side-information vector: {', '.join(missing[:20])}"
                + (" ..." if len(missing) > 20 else "")
            )
        return self.vectors[positions]


def read_side_info(path) -> SideInfo:
    """side_info CSV (header label,v0,...,v{d-1}) -> SideInfo. Non-finite values and duplicate labels are errors."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"side-information file {path} does not exist.")
    try:
        frame = pd.read_csv(path, dtype={"label": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"side-information file {path} is empty; expected header label,v0,...") from None
    expected = ["label"] + [f"v{i}" for i in range(frame.shape[1] - 1)]
    if list(frame.columns) != expected or frame.shape[1] < 2:
        raise DatasetError(
            f"side-information file {path}: header must be label,v0,...,v{{d-1}}; found {','.join(frame.columns[:5])}..."
        )
    if frame["label"].duplicated().any():
        raise DatasetError(f"side-information file {path}: label {frame['label'][frame['label'].duplicated()].iloc[0]!r} repeats.")
    try:
        vectors = frame.iloc[:, 1:].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"side-information file {path}: non-numeric value ({exc}).") from None
    if not np.isfinite(vectors).all():
        raise DatasetError(f"side-information file {path}: NaN or infinite values.")
    return SideInfo(labels=frame["label"].astype(str).tolist(), vectors=vectors.astype(np.float32))


def write_side_info(path, labels, vectors) -> None:
    """Write side information (one row per label, rows sorted by label) with full float precision."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = [str(lab) for lab in labels]
    if vectors.ndim != 2 or vectors.shape[0] != len(labels):
        raise ValueError(f"side information: {len(labels)} labels but vectors of shape {vectors.shape}")
    frame = pd.DataFrame(vectors, columns=[f"v{i}" for i in range(vectors.shape[1])])
    frame.insert(0, "label", labels)
    frame = frame.sort_values("label", kind="stable")
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.10g"))


# --------------------------------------------------------------------------------------------------------------
# summary.json
# --------------------------------------------------------------------------------------------------------------
def summarize(dataset_dir, extra: dict | None = None, write: bool = True) -> dict:
    """Counts of a dataset directory (tracks, labels, positives, label cardinality, side information, store).

    Written to summary.json (with `extra` merged in, e.g. what an adapter dropped) and returned.
    """
    dataset_dir = Path(dataset_dir)
    tracks = read_tracks(tracks_path(dataset_dir))
    annotations = read_annotations(annotations_path(dataset_dir))
    annotated = annotations[annotations["track_id"].isin(tracks["track_id"])]
    per_track = annotated.groupby("track_id").size()
    summary = {
        "dataset": dataset_name(dataset_dir),
        "tracks": int(len(tracks)),
        "tracks_with_labels": int(per_track.size),
        "labels": int(annotated["label"].nunique()),
        "positives": int(len(annotated)),
        "label_cardinality": round(float(per_track.mean()), 4) if per_track.size else 0.0,
        "side_info": {},
        "mels": MELS_FILE if mels_path(dataset_dir).is_file() else None,
    }
    for kind in available_side_info(dataset_dir):
        info = read_side_info(side_info_path(dataset_dir, kind))
        summary["side_info"][kind] = {"labels": len(info.labels), "dim": info.dim}
    if extra:
        summary.update(extra)
    if write:
        write_json(summary_path(dataset_dir), summary)
    return summary


def format_summary(summary: dict) -> str:
    """A few human-readable lines for the end of a build command."""
    lines = [
        f"dataset {summary['dataset']}: {summary['tracks']} tracks ({summary['tracks_with_labels']} labelled), "
        f"{summary['labels']} labels, {summary['positives']} positives, label cardinality {summary['label_cardinality']}"
    ]
    for kind, facts in summary.get("side_info", {}).items():
        lines.append(f"  side_info/{kind}.csv: {facts['labels']} labels x {facts['dim']} dims")
    return "\n".join(lines)
