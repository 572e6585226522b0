"""Million Song Dataset + Last.fm tags + GloVe -> the dataset directory of paper Experiment 2.

    python -m preprocess.msd --lastfm-db lastfm_tags.db --genres genres.txt --glove glove.42B.300d.txt \
        --audio DIR --audio-map map.csv --out data/msd [--min-tag-value 50] [--jobs N] [--seed 0]
    (or --lastfm-json DIR [DIR ...] for the lastfm_train / lastfm_test JSON folders instead of --lastfm-db)

Steps (formats: ../shared/DATASETS.md; the tag filter: ../shared/REFERENCE.md, "Side information"):

1. Tags are normalized (`normalize_tag`: lowercase, keep only letters and digits: "Hip-Hop" and "hip hop" ->
   "hiphop"); raw tags with the same normalized form are merged. Only normalized tags of the genre vocabulary
   (`--genres`, one genre per line, normalized the same way; the paper used the Tagtraum genre ontology) are kept.
2. Positives: (track, tag) pairs whose Last.fm value is >= --min-tag-value (a merged tag is positive when any of
   its raw forms is). Default 50: see DEFAULT_MIN_TAG_VALUE.
3. GloVe is streamed once, line by line, keeping only the vectors of the tags with positives (`read_glove`); tags
   without a vector are dropped. side_info/glove.csv holds the kept tags' 300-d vectors, side_info/random.csv the
   seeded random baseline of the same dimension.
4. Audio: --audio-map (CSV track_id,path; path relative to --audio or absolute) gives each MSD track's clip.
   `preprocess.store.build_store` reads the first 30 s and drops clips shorter than 29 s (failures.csv), as in the
   original. Tracks without positives, without a mapped clip or whose clip failed are excluded; tracks.csv,
   annotations.csv, side_info/*.csv and mels.h5 then describe exactly the same tracks and labels.
5. summary.json: dataset_dir.summarize + the tag counts of every filter step + "glove_path" (absolute,
   for `evaluate.py --query`), printed next to the paper's counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import dataset_dir as ds
from dataset_dir import DatasetError
from preprocess.store import DEFAULT_DTYPE, FAILURES_FILE
from preprocess.fma import CANDIDATES_FILE, add_build_flags, print_summary, run_cli, store_tracks
from preprocess.side_info import RANDOM_KIND, random_side_info

GLOVE_KIND = "glove"
GLOVE_DIM = 300
# A Last.fm value is the tag's weight for the track relative to its strongest tag (0..100; 100 = the strongest).
# Default 50 follows the common MSD auto-tagging convention of Choi et al. (ISMIR 2016; keunwoochoi/
# MSD_split_for_tagging: "I only count tag as valid if the ground truth > 50"): keep the tags that listeners applied
# at least half as often as the track's top tag and drop the long tail of weak, noisy ones. We use >= so that a
# value of exactly 50 counts (use 51 for Choi's strict > 50 on the integer values). The paper does not state its
# threshold. --min-tag-value 0 treats every listed pair as positive.
DEFAULT_MIN_TAG_VALUE = 50.0
MSD_MAX_SECONDS = 30.0  # the original loaded the first 30 s of each preview ...
MSD_MIN_SECONDS = 29.0  # ... and dropped clips shorter than 29 s
PAPER_COUNTS = {"tracks": 406409, "labels": 1126, "tags_in_vocabulary": 1800, "lastfm_raw_tags": 498035}
AUDIO_MAP_COLUMNS = ("track_id", "path")


# --------------------------------------------------------------------------------------------------------------
# Tags and vocabulary
# --------------------------------------------------------------------------------------------------------------
def normalize_tag(tag: str) -> str:
    """Lowercase and keep only letters and digits: "Hip-Hop", "hip hop" -> "hiphop"; "R&B" -> "rb".

    NFKC first, so that composed and decomposed accents ("é") and full-width characters map to one form.
    """
    text = unicodedata.normalize("NFKC", str(tag)).lower()
    return "".join(ch for ch in text if ch.isalnum())


def read_vocabulary(path) -> set[str]:
    """Genre vocabulary file -> normalized genres. One genre per line; blank lines and '#' comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--genres {path}: file does not exist; give a text file with one genre per line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"--genres {path}: not UTF-8 text ({exc}).") from None
    vocabulary = set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        norm = normalize_tag(line)
        if norm:
            vocabulary.add(norm)
    if not vocabulary:
        raise DatasetError(f"--genres {path}: no genre found (one genre per line; '#' starts a comment line).")
    return vocabulary


@dataclass
class TagCounts:
    """How many tags survive each filter step (reported in summary.json)."""

    raw_tags: int = 0  # distinct raw tag strings in the Last.fm source
    normalized_tags: int = 0  # distinct non-empty normalized forms
    tags_in_vocabulary: int = 0  # normalized forms in the genre vocabulary
    pairs_read: int = 0  # (track, raw tag) pairs of vocabulary tags with value >= threshold
    unreadable_values: int = 0  # JSON pairs whose value is not a number (skipped)
    unreadable_files: list = field(default_factory=list)  # JSON files that could not be parsed (skipped)


class _TagNormalizer:
    """Normalizes raw tags once each and counts distinct raw and normalized forms."""

    def __init__(self, vocabulary: set[str]):
        self.vocabulary = vocabulary
        self.cache: dict[str, str] = {}
        self.normalized: set[str] = set()

    def __call__(self, raw: str) -> str | None:
        """The normalized tag if it is in the vocabulary, else None."""
        norm = self.cache.get(raw)
        if norm is None:
            norm = normalize_tag(raw)
            self.cache[raw] = norm
            if norm:
                self.normalized.add(norm)
        return norm if norm in self.vocabulary else None

    def fill(self, counts: TagCounts) -> None:
        counts.raw_tags = len(self.cache)
        counts.normalized_tags = len(self.normalized)
        counts.tags_in_vocabulary = len(self.normalized & self.vocabulary)


# --------------------------------------------------------------------------------------------------------------
# Last.fm sources -> positive (track, normalized tag) pairs
# --------------------------------------------------------------------------------------------------------------
def _check_min_value(min_value: float) -> float:
    min_value = float(min_value)
    if not 0 <= min_value <= 100:
        raise DatasetError(f"--min-tag-value {min_value}: must be within 0..100 (Last.fm values are 0..100; a value "
                           "of 100 must always count as positive).")
    return min_value


def lastfm_pairs_sqlite(db_path, vocabulary: set[str], min_value: float, progress: bool = True):
    """Positive pairs from lastfm_tags.db: tables tids(tid), tags(tag), tid_tag(tid, tag, val), where tid_tag.tid
    and tid_tag.tag are ROWIDs of tids and tags.

    The tags table is read first (normalized once per raw tag); the ROWIDs of vocabulary tags go into a temporary
    table, and one streamed join returns only their pairs with val >= min_value.

    Returns (DataFrame track_id,label of distinct pairs, TagCounts).
    """
    db_path = Path(db_path)
    min_value = _check_min_value(min_value)
    if not db_path.is_file():
        raise DatasetError(f"--lastfm-db {db_path}: file does not exist (the Last.fm dataset's lastfm_tags.db).")
    counts = TagCounts()
    normalizer = _TagNormalizer(vocabulary)
    try:
        connection = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatasetError(f"--lastfm-db {db_path}: cannot open ({exc}).") from None
    try:
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise DatasetError(f"--lastfm-db {db_path}: not an SQLite database ({exc}).") from None
        pairs = _sqlite_pairs(connection, db_path, tables, normalizer, counts, min_value, progress)
    except sqlite3.Error as exc:  # e.g. a damaged file found in the middle of the pass
        raise DatasetError(f"--lastfm-db {db_path}: cannot be read ({exc}).") from None
    finally:
        connection.close()
    return _pairs_frame(pairs), counts


def _sqlite_pairs(connection, db_path, tables, normalizer, counts, min_value, progress) -> set:
    """The schema checks and the streamed join of lastfm_pairs_sqlite -> set of (track id, normalized tag)."""
    for table, columns in (("tids", ("tid",)), ("tags", ("tag",)), ("tid_tag", ("tid", "tag", "val"))):
        if table not in tables:
            raise DatasetError(f"--lastfm-db {db_path}: table {table!r} is missing (expected the Last.fm schema "
                               "tids(tid), tags(tag), tid_tag(tid, tag, val)).")
        have = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column not in have:
                raise DatasetError(f"--lastfm-db {db_path}: table {table!r} lacks column {column!r}.")
    wanted = []
    for rowid, raw in connection.execute("SELECT ROWID, tag FROM tags"):
        if raw is None:
            continue
        norm = normalizer(str(raw))
        if norm is not None:
            wanted.append((rowid, norm))
    normalizer.fill(counts)
    connection.execute("CREATE TEMP TABLE wanted_tags (id INTEGER PRIMARY KEY, norm TEXT NOT NULL)")
    connection.executemany("INSERT INTO wanted_tags VALUES (?, ?)", wanted)
    cursor = connection.execute(
        "SELECT tids.tid, wanted_tags.norm FROM tid_tag "
        "JOIN wanted_tags ON wanted_tags.id = tid_tag.tag "
        "JOIN tids ON tids.ROWID = tid_tag.tid "
        "WHERE tid_tag.val >= ?", (min_value,))
    pairs = set()
    with tqdm(desc="Last.fm pairs", unit="pair", disable=not progress, mininterval=1.0) as bar:
        while True:
            rows = cursor.fetchmany(50_000)
            if not rows:
                break
            counts.pairs_read += len(rows)
            pairs.update((str(tid), norm) for tid, norm in rows)
            bar.update(len(rows))
    return pairs


def _json_files(folders) -> list[Path]:
    files = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"--lastfm-json {folder}: directory does not exist (the lastfm_train / lastfm_test "
                               "folders of the Last.fm dataset, or their parent).")
        for root, _dirs, names in os.walk(folder):
            files.extend(Path(root) / name for name in names if name.endswith(".json"))
    if not files:
        raise DatasetError(f"--lastfm-json {', '.join(map(str, folders))}: no .json file found.")
    return sorted(set(files))


def lastfm_pairs_json(folders, vocabulary: set[str], min_value: float, progress: bool = True):
    """Positive pairs from the Last.fm JSON folders (lastfm_train/A/A/A/TRAAAAW128F429D538.json: keys
    track_id and tags = [[tag, value], ...], value possibly a string). Same output as lastfm_pairs_sqlite.

    A file that is not valid JSON is skipped and listed; a value that is not a number is skipped and counted.
    """
    min_value = _check_min_value(min_value)
    counts = TagCounts()
    normalizer = _TagNormalizer(vocabulary)
    pairs = set()
    for path in tqdm(_json_files(folders), desc="Last.fm JSON", unit="file", disable=not progress,
                     mininterval=1.0):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            tags = record.get("tags", [])
            track_id = str(record.get("track_id") or path.stem)
            if not isinstance(tags, list):
                raise ValueError("'tags' is not a list")
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            counts.unreadable_files.append(f"{path}: {exc}")
            continue
        for item in tags:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                counts.unreadable_values += 1
                continue
            norm = normalizer(str(item[0]))
            try:
                value = float(item[1])
            except (TypeError, ValueError):
                counts.unreadable_values += 1
                continue
            if not math.isfinite(value):
                counts.unreadable_values += 1
            elif norm is not None and value >= min_value:
                counts.pairs_read += 1
                pairs.add((track_id, norm))
    normalizer.fill(counts)
    return _pairs_frame(pairs), counts


def _pairs_frame(pairs) -> pd.DataFrame:
    frame = pd.DataFrame(sorted(pairs), columns=["track_id", "label"], dtype=str)
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# GloVe
# --------------------------------------------------------------------------------------------------------------
@dataclass
class GloveResult:
    vectors: dict  # word -> (dim,) float64
    lines: int
    malformed: int
    path: Path


def read_glove(path, words, dim: int = GLOVE_DIM, progress: bool = True) -> GloveResult:
    """Stream a GloVe text file and keep only the vectors of `words` (never loads the whole file).

    Each line is a token and `dim` space-separated floats; the token is everything before the last `dim` fields
    (some GloVe files have tokens containing spaces). Malformed lines (fewer than dim + 1 fields, an empty token,
    or, for a wanted word, a non-numeric or non-finite value) are skipped and counted. The first occurrence of a
    token wins.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--glove {path}: file does not exist (e.g. glove.42B.300d.txt, unzipped).")
    wanted = {str(w).encode("utf-8"): str(w) for w in words}
    vectors: dict[str, np.ndarray] = {}
    malformed = lines = 0
    pending = 0
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, desc="GloVe", unit="B", unit_scale=True,
                                          disable=not progress, mininterval=1.0) as bar:
        for line in handle:
            lines += 1
            pending += len(line)
            if pending >= 1 << 24:
                bar.update(pending)
                pending = 0
            line = line.rstrip(b" \t\r\n")
            spaces = line.count(b" ")
            if spaces < dim:
                malformed += 1
                continue
            # Fast path: exactly dim spaces -> the token is the first field; else split off the last dim fields.
            token = line[:line.index(b" ")] if spaces == dim else line.rsplit(b" ", dim)[0]
            if not token:
                malformed += 1
                continue
            word = wanted.get(token)
            if word is None or word in vectors:
                continue
            try:
                values = np.array([float(x) for x in line.rsplit(b" ", dim)[1:]], dtype=np.float64)
            except ValueError:
                malformed += 1
                continue
            if not np.isfinite(values).all():
                malformed += 1
                continue
            vectors[word] = values
        bar.update(pending)
    return GloveResult(vectors=vectors, lines=lines, malformed=malformed, path=path.resolve())


# --------------------------------------------------------------------------------------------------------------
# Audio map
# --------------------------------------------------------------------------------------------------------------
def read_audio_map(path, audio_dir) -> dict[str, str]:
    """--audio-map CSV track_id,path -> {MSD track id: absolute audio path} (relative paths are under --audio)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--audio-map {path}: file does not exist; give a CSV with header track_id,path.")
    frame = ds.read_csv_columns(path, AUDIO_MAP_COLUMNS, "--audio-map")
    frame = frame[(frame["track_id"].str.strip() != "") & (frame["path"].str.strip() != "")]
    duplicated = frame["track_id"][frame["track_id"].duplicated()]
    if len(duplicated):
        raise DatasetError(f"--audio-map {path}: track_id {duplicated.iloc[0]!r} occurs more than once.")
    audio_dir = Path(audio_dir).resolve()
    return {str(t).strip(): str(audio_dir / p.strip()) for t, p in zip(frame["track_id"], frame["path"])}


# --------------------------------------------------------------------------------------------------------------
# The whole build
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Labels:
    """Positive pairs of the tags that have a GloVe vector, and the counts of every filter step."""

    annotations: pd.DataFrame  # track_id,label (normalized tag)
    glove: dict  # tag -> (dim,) vector
    counts: dict


def tag_annotations(vocabulary: set[str], glove_path, min_value: float, lastfm_db=None, lastfm_json=None,
                    dim: int = GLOVE_DIM, progress: bool = True) -> Labels:
    """Steps 1-3 of the module docstring (no audio): positives of vocabulary tags that have a GloVe vector."""
    if (lastfm_db is None) == (not lastfm_json):
        raise DatasetError("give exactly one of --lastfm-db (lastfm_tags.db) and --lastfm-json (JSON folders).")
    glove_path = Path(glove_path)
    if not glove_path.is_file():  # checked before the long Last.fm pass
        raise DatasetError(f"--glove {glove_path}: file does not exist (e.g. glove.42B.300d.txt, unzipped).")
    if lastfm_db is not None:
        pairs, tag_counts = lastfm_pairs_sqlite(lastfm_db, vocabulary, min_value, progress=progress)
    else:
        pairs, tag_counts = lastfm_pairs_json(lastfm_json, vocabulary, min_value, progress=progress)
    glove = read_glove(glove_path, set(pairs["label"]), dim=dim, progress=progress)
    annotations = pairs[pairs["label"].isin(set(glove.vectors))].reset_index(drop=True)
    counts = {
        "vocabulary_genres": len(vocabulary),
        "lastfm_raw_tags": tag_counts.raw_tags,
        "lastfm_normalized_tags": tag_counts.normalized_tags,
        "tags_in_vocabulary": tag_counts.tags_in_vocabulary,
        "tags_in_vocabulary_with_positives": int(pairs["label"].nunique()),
        "tags_with_glove": len(glove.vectors),
        "glove_lines": glove.lines,
        "glove_malformed_lines": glove.malformed,
        "lastfm_pairs_read": tag_counts.pairs_read,
        "lastfm_unreadable_values": tag_counts.unreadable_values,
        "lastfm_unreadable_files": tag_counts.unreadable_files[:20],
        "lastfm_unreadable_files_count": len(tag_counts.unreadable_files),
        "tracks_with_positives": int(annotations["track_id"].nunique()),
    }
    return Labels(annotations=annotations, glove=glove.vectors, counts=counts)


def build_msd(genres, glove, audio, audio_map, out, lastfm_db=None, lastfm_json=None,
              min_tag_value: float = DEFAULT_MIN_TAG_VALUE, jobs: int = 1, seed: int = 0, dim: int = GLOVE_DIM,
              dtype: str = DEFAULT_DTYPE, progress: bool = True) -> dict:
    """Build the MSD dataset directory `out` (module docstring). Returns the summary (also in summary.json)."""
    min_tag_value = _check_min_value(min_tag_value)
    audio = Path(audio).expanduser()
    if not audio.is_dir():
        raise DatasetError(f"--audio {audio}: directory does not exist; it must hold the MSD audio clips.")
    vocabulary = read_vocabulary(genres)
    clips = read_audio_map(audio_map, audio)  # cheap checks first: the Last.fm and GloVe passes take minutes
    labels = tag_annotations(vocabulary, glove, min_tag_value, lastfm_db=lastfm_db, lastfm_json=lastfm_json,
                             dim=dim, progress=progress)
    with_positives = sorted(set(labels.annotations["track_id"]))
    candidates = [t for t in with_positives if t in clips]
    if not candidates:
        raise DatasetError(f"none of the {len(with_positives)} tracks with positive tags is listed in --audio-map "
                           f"{audio_map}; check that its track_id column holds MSD track ids (TR...).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = store_tracks(out, pd.DataFrame({"track_id": candidates, "path": [clips[t] for t in candidates]}),
                         audio, jobs=jobs, max_seconds=MSD_MAX_SECONDS, min_seconds=MSD_MIN_SECONDS, dtype=dtype,
                         progress=progress)

    # Final tracks = stored clips (each has >= 1 positive); labels = tags with >= 1 positive among them.
    stored = set(store.stored)
    annotations = labels.annotations[labels.annotations["track_id"].isin(stored)]
    tags = sorted(annotations["label"].unique())
    ds.write_tracks(ds.tracks_path(out), pd.DataFrame({"track_id": store.stored,
                                                       "path": [clips[t] for t in store.stored]}))
    ds.write_annotations(ds.annotations_path(out), annotations)
    ds.write_side_info(ds.side_info_path(out, GLOVE_KIND), tags, np.stack([labels.glove[t] for t in tags]))
    ds.write_side_info(ds.side_info_path(out, RANDOM_KIND), tags, random_side_info(tags, dim, seed=seed))

    extra = {
        "source": "Million Song Dataset + Last.fm tags + GloVe",
        "paper": PAPER_COUNTS,
        "glove_path": str(Path(glove).resolve()),
        "min_tag_value": min_tag_value,
        "tags": labels.counts,
        "tracks_without_audio_map_entry": len(with_positives) - len(candidates),
        "tags_lost_without_audio": sorted(set(labels.annotations["label"]) - set(tags)),
        "audio": {
            "candidates": len(candidates),
            "stored": len(store.stored),
            "failed": len(store.failures),
            "failures_csv": FAILURES_FILE,
            "candidates_csv": CANDIDATES_FILE,
            "max_seconds": MSD_MAX_SECONDS,
            "min_seconds": MSD_MIN_SECONDS,
            "dtype": dtype,
        },
        "seed": seed,
        "inputs": {
            "lastfm": str(Path(lastfm_db).resolve()) if lastfm_db is not None
            else [str(Path(p).resolve()) for p in lastfm_json],
            "genres": str(Path(genres).resolve()),
            "audio": str(audio.resolve()),
            "audio_map": str(Path(audio_map).resolve()),
        },
    }
    return ds.summarize(out, extra=extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.msd",
        description="Build the MSD + Last.fm + GloVe dataset directory (paper Experiment 2): tracks.csv, "
                    "annotations.csv (normalized Last.fm genre tags), side_info/{glove,random}.csv, mels.h5 + "
                    "failures.csv, summary.json. Idempotent: rerun the same command to resume or check. "
                    "Layout and downloads: data/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lastfm-db", help="the Last.fm dataset's SQLite file lastfm_tags.db")
    source.add_argument("--lastfm-json", nargs="+", metavar="DIR",
                        help="instead of --lastfm-db: the lastfm_train and/or lastfm_test JSON folders (or their "
                             "parent); every *.json below them is read")
    parser.add_argument("--genres", required=True,
                        help="genre vocabulary: text file, one genre per line ('#' comment lines and blank lines "
                             "ignored), e.g. made from the Tagtraum genre ontology; normalized like the tags")
    parser.add_argument("--glove", required=True, help="GloVe text file, e.g. glove.42B.300d.txt (streamed)")
    parser.add_argument("--audio", required=True, help="folder of the MSD audio clips")
    parser.add_argument("--audio-map", required=True,
                        help="CSV track_id,path: MSD track id -> clip (path relative to --audio, or absolute)")
    parser.add_argument("--out", default=str(ds.DATA_ROOT / "msd"), help="dataset directory to write")
    parser.add_argument("--min-tag-value", type=float, default=DEFAULT_MIN_TAG_VALUE,
                        help="a (track, tag) pair is positive when its Last.fm value (0..100, 100 = the track's "
                             "strongest tag) is >= this. The default follows the MSD tagging convention of Choi "
                             "et al. 2016 (a tag counts above ~50: at least half as strong as the track's top "
                             "tag; the paper does not state its threshold). 0 = every listed pair")
    parser.add_argument("--glove-dim", type=int, default=GLOVE_DIM, help="dimension of the GloVe vectors")
    add_build_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def build(a):
        summary = build_msd(a.genres, a.glove, a.audio, a.audio_map, a.out, lastfm_db=a.lastfm_db,
                            lastfm_json=a.lastfm_json, min_tag_value=a.min_tag_value, jobs=a.jobs, seed=a.seed,
                            dim=a.glove_dim, dtype=a.dtype, progress=not a.no_progress)
        print_summary(summary, PAPER_COUNTS, "MSD + Last.fm")

    return run_cli(build, args)


if __name__ == "__main__":
    sys.exit(main())
