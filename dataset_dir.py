"""The dataset directory data/<name>/ (layout: data/README.md, docs/formats.md), shared by the demo
corpus, FMA, MSD and users' own data: tracks.csv (track_id,path), annotations.csv (track_id,label),
side_info/<kind>.csv (label,v0,...,v{d-1}), mels.h5 (preprocess/store.py), splits/ and summary.json.

Every reader here is the door of its file: it checks shape, ids, duplicates, dimensions and finite
values, and raises one DatasetError naming the file (and line) and what to fix. Plain pandas/numpy,
no TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fileio import atomic_write_text, resolved, sha256_file, write_json

REPO_ROOT = Path(__file__).resolve().parent
DATA_ROOT = REPO_ROOT / "data"
# --dataset names that mean data/<name>; anything else is a path
NAMED_DATASETS = ("demo", "fma", "msd")

TRACKS_FILE = "tracks.csv"
ANNOTATIONS_FILE = "annotations.csv"
MELS_FILE = "mels.h5"
SIDE_INFO_DIR = "side_info"
SPLITS_DIR = "splits"
SUMMARY_FILE = "summary.json"


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and what to do."""


# Locations ----------------------------------------------------------------------------------------
def resolve_dataset_dir(name_or_path: str | os.PathLike, must_exist: bool = False) -> Path:
    """Map a dataset name ("demo", "fma", "msd") to data/<name>; any other value is taken as a
    directory path."""
    text = str(name_or_path)
    if text in NAMED_DATASETS:
        path = DATA_ROOT / text
    else:
        path = Path(text).expanduser()
        if not path.is_dir():
            raise DatasetError(
                f"--dataset {text!r}: not one of {', '.join(NAMED_DATASETS)} and not an existing "
                "directory. Give a dataset name or the path of a dataset directory "
                "(data/README.md)."
            )
    path = resolved(path, "--dataset")
    if must_exist and not path.is_dir():
        raise DatasetError(
            f"dataset directory {path} does not exist; build it first (see data/README.md)."
        )
    return path


def dataset_name(dataset_dir) -> str:
    """The short name used in results: the directory's name ("demo", "fma", "msd", or a user's
    folder name)."""
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
    """Kinds of side information present in the dataset directory (file stems of side_info/*.csv),
    sorted."""
    folder = side_info_dir(dataset_dir)
    return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []


def resolve_side_info(dataset_dir, kind: str) -> Path:
    """The CSV for a side-information kind (or a .csv path), or a clear error listing the kinds this
    dataset has."""
    if Path(kind).suffix == ".csv" and Path(kind).is_file():
        return Path(kind).resolve()
    path = side_info_path(dataset_dir, kind)
    if not path.is_file():
        raise DatasetError(
            f"--side-info {kind!r}: no file {path}. This dataset has: "
            f"{', '.join(available_side_info(dataset_dir)) or 'none'}."
        )
    return path


# Door checks used by every command ----------------------------------------------------------------
def check_finite(array, what: str, dtype=np.float32) -> np.ndarray:
    """`array` cast to `dtype`; DatasetError naming `what` when a value is not finite in `dtype`.

    Checked after the cast, so a number beyond the dtype's range (1e300 in float32) is refused like
    NaN and inf.
    """
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            cast = np.asarray(array).astype(dtype)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{what}: a value is not a number ({exc}).") from None
    bad = ~np.isfinite(cast)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"{what}: {int(bad.sum())} value(s) are NaN, infinite or too large for "
            f"{np.dtype(dtype).name} (the first at index {first}); fix or regenerate it."
        )
    return cast


def side_vectors(side_info: SideInfo, labels, source) -> np.ndarray:
    """(len(labels), dim) float32 side vectors of `labels`; DatasetError listing the labels without
    a vector."""
    labels = [str(label) for label in labels]
    positions = pd.Index(side_info.labels).get_indexer(labels)
    if missing := [label for label, pos in zip(labels, positions, strict=True) if pos < 0]:
        raise DatasetError(
            f"{source}: {len(missing)} label(s) have no side-information vector: "
            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}. Add a row for each "
            "(or rebuild the dataset so that every label has one)."
        )
    return side_info.vectors[positions].astype(np.float32)


# CSV files ----------------------------------------------------------------------------------------
def read_csv_columns(path, required, what: str) -> pd.DataFrame:
    """A CSV as strings (every row as wide as the header) with the `required` columns, or one
    DatasetError.

    The csv module, not pandas, reads it: pandas silently shifts a row with one extra field into the
    index and fills missing fields, where we want the file and line named. Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file {path} does not exist.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header = next((row for row in reader if row), None)
            rows = [row for row in reader if row]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"{what} file {path} is not a readable UTF-8 CSV ({exc}); fix the file."
        ) from None
    if header is None:
        raise DatasetError(f"{what} file {path} is empty; expected a header {','.join(required)}.")
    if missing := [c for c in required if c not in header]:
        raise DatasetError(
            f"{what} file {path} lacks column(s) {', '.join(missing)}; expected header "
            f"{','.join(required)} (found {','.join(header)})."
        )
    if len(set(header)) != len(header):
        raise DatasetError(f"{what} file {path}: header {','.join(header)} repeats a column name.")
    for position, row in enumerate(rows):
        if len(row) != len(header):
            raise DatasetError(
                f"{what} file {path}, line {_line_number(path, position)}: {len(row)} field(s) "
                f"where the header has {len(header)} ({','.join(header)}); fix that row "
                "(quote a value that contains a comma)."
            )
    return pd.DataFrame(rows, columns=header, dtype=str)


def _line_number(path, position: int) -> int:
    """The file line on which data row `position` (0-based, after the header, blank lines skipped)
    ends."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        ends = (reader.line_num for row in reader if row)
        return next(itertools.islice(ends, position + 1, None))


def _refuse_rows(path, what: str, frame: pd.DataFrame, bad: pd.Series, problem: str) -> None:
    """DatasetError naming the line of the first row where `bad` holds; `problem` is formatted with
    its fields."""
    if bad.any():
        position = int(np.argmax(bad.to_numpy()))
        raise DatasetError(
            f"{what} file {path}, line {_line_number(path, position)}: "
            + problem.format(**frame.iloc[position])
            + "."
        )


def read_tracks(path) -> pd.DataFrame:
    """tracks.csv -> DataFrame of strings track_id, path (non-empty, unique track ids, file order
    kept)."""
    frame = read_csv_columns(path, ("track_id", "path"), "tracks")[["track_id", "path"]]
    _refuse_rows(
        path,
        "tracks",
        frame,
        (frame["track_id"] == "") | (frame["path"] == ""),
        "empty track_id or path",
    )
    _refuse_rows(
        path,
        "tracks",
        frame,
        frame["track_id"].duplicated(),
        "track_id {track_id!r} occurs more than once; keep one row per track",
    )
    return frame


def write_tracks(path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame[["track_id", "path"]].to_csv(index=False))


def read_annotations(path) -> pd.DataFrame:
    """annotations.csv -> DataFrame of strings track_id, label (non-empty); repeated pairs are
    merged."""
    frame = read_csv_columns(path, ("track_id", "label"), "annotations")[["track_id", "label"]]
    _refuse_rows(
        path,
        "annotations",
        frame,
        (frame["track_id"] == "") | (frame["label"] == ""),
        "empty track_id or label",
    )
    return frame.drop_duplicates().reset_index(drop=True)


def write_annotations(path, frame: pd.DataFrame) -> None:
    """Write annotations sorted by (track_id, label) so that the file is deterministic."""
    atomic_write_text(
        path,
        frame[["track_id", "label"]]
        .astype(str)
        .drop_duplicates()
        .sort_values(["track_id", "label"])
        .to_csv(index=False),
    )


def label_matrix(annotations: pd.DataFrame, track_ids, labels) -> np.ndarray:
    """(len(track_ids), len(labels)) uint8: [i, j] = 1 when (track_ids[i], labels[j]) is annotated
    (others ignored)."""
    rows = pd.Index([str(t) for t in track_ids]).get_indexer(annotations["track_id"].astype(str))
    cols = pd.Index([str(lab) for lab in labels]).get_indexer(annotations["label"].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    matrix = np.zeros((len(track_ids), len(labels)), dtype=np.uint8)
    matrix[rows[keep], cols[keep]] = 1
    return matrix


# side_info/<kind>.csv -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SideInfo:
    """Side-information vectors: labels[i] is described by vectors[i]; `source` names the file."""

    labels: list[str]
    vectors: np.ndarray  # (n_labels, dim) float32
    source: str = "side information"

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, labels) -> np.ndarray:  # = side_vectors(self, labels, self.source)
        return side_vectors(self, labels, self.source)


def read_side_info(path) -> SideInfo:
    """side_info CSV (header label,v0,...,v{d-1}, d >= 1) -> SideInfo with unique labels and
    float32-finite values."""
    what = "side-information"
    frame = read_csv_columns(path, ("label", "v0"), what)
    if frame.shape[1] < 2 or list(frame.columns) != ["label"] + [
        f"v{i}" for i in range(frame.shape[1] - 1)
    ]:
        raise DatasetError(
            f"{what} file {path}: header must be label,v0,...,v{{d-1}} in that order; found "
            f"{','.join(frame.columns[:5])}{',...' if frame.shape[1] > 5 else ''}."
        )
    _refuse_rows(path, what, frame, frame["label"] == "", "empty label")
    _refuse_rows(
        path,
        what,
        frame,
        frame["label"].duplicated(),
        "label {label!r} repeats; keep one vector per label",
    )
    return SideInfo(
        labels=frame["label"].tolist(),
        vectors=check_finite(frame.iloc[:, 1:].to_numpy(), f"{what} file {path}"),  # (n, dim)
        source=str(path),
    )


def side_info_sha256(info: SideInfo) -> str:
    """Order-independent fingerprint of side information: SHA-256 of its label -> vector rows sorted
    by label (the labels as JSON, then the float32 vectors, little-endian). Rows reordered, or the
    same float32 values spelled otherwise, give the same digest; any other change gives another."""
    order = sorted(range(len(info.labels)), key=info.labels.__getitem__)
    digest = hashlib.sha256(json.dumps([info.labels[i] for i in order]).encode("utf-8"))
    digest.update(np.ascontiguousarray(info.vectors[order], dtype="<f4").tobytes())  # (n, dim)
    return digest.hexdigest()


def same_content(recorded: str | None, path, content_sha256: str | None) -> bool:
    """Whether a dataset file still holds what a run recorded of it (config.json "checksums"): its
    content digest (annotations: splits.annotations_sha256; side information: side_info_sha256),
    or, as runs trained before content digests recorded, the SHA-256 of the file's bytes. Nothing
    recorded: nothing to compare."""
    return not recorded or recorded == content_sha256 or recorded == sha256_file(path)


def write_side_info(path, labels, vectors) -> None:
    """Write side information (a row per label, rows sorted by label) with full float precision."""
    labels = [str(label) for label in labels]
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(labels):
        raise DatasetError(f"{path}: {len(labels)} labels but vectors of shape {vectors.shape}.")
    # never write what read_side_info would refuse
    check_finite(vectors, f"side information for {path}")
    frame = pd.DataFrame(vectors, columns=[f"v{i}" for i in range(vectors.shape[1])])
    frame.insert(0, "label", labels)
    atomic_write_text(
        path, frame.sort_values("label", kind="stable").to_csv(index=False, float_format="%.10g")
    )


# summary.json -------------------------------------------------------------------------------------
def summarize(dataset_dir, extra: dict | None = None, write: bool = True) -> dict:
    """Counts of a dataset directory (tracks, labels, positives, label cardinality, side
    information, store), with `extra` merged in (e.g. what an adapter dropped); written to
    summary.json and returned."""
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
    summary.update(extra or {})
    if write:
        write_json(summary_path(dataset_dir), summary)
    return summary


def format_summary(summary: dict) -> str:
    """A few human-readable lines for the end of a build command."""
    lines = [
        f"dataset {summary['dataset']}: {summary['tracks']} tracks "
        f"({summary['tracks_with_labels']} labelled), "
        f"{summary['labels']} labels, {summary['positives']} positives, label cardinality "
        f"{summary['label_cardinality']}"
    ]
    lines += [
        f"  side_info/{kind}.csv: {facts['labels']} labels x {facts['dim']} dims"
        for kind, facts in summary.get("side_info", {}).items()
    ]
    return "\n".join(lines)
