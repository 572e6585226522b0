"""Million Song Dataset + Last.fm tags + GloVe -> the dataset directory of paper Experiment 2.

    python -m preprocess.msd --lastfm-db lastfm_tags.db --genres genres.txt --glove \
        glove.42B.300d.txt \
        --audio DIR --audio-map map.csv --out data/msd [--min-tag-value 50] [--jobs N] [--seed 0]
    (or --lastfm-json DIR [DIR ...], the lastfm_train / lastfm_test JSON folders, instead of
        --lastfm-db)

Formats: docs/formats.md; the tag filter: docs/original.md.
1. Tags are normalized (`normalize_tag`); only those of the genre vocabulary (--genres; the paper
   used the Tagtraum genre ontology) are kept. Positives: pairs whose Last.fm value is >=
   --min-tag-value.
2. GloVe is streamed once (`preprocess.common.read_glove`); tags without a vector are dropped.
3. Audio: --audio-map gives each track's clip; the store reads its first 30 s and drops clips under
   29 s, as in the original. tracks.csv, annotations.csv, side_info/{glove,random}.csv and mels.h5
   then describe the same tracks (a positive and a stored clip each) and labels.
4. summary.json: dataset_dir.summarize + the tag counts of every step + "glove_path" (for
   `evaluate.py --query`).
"""

from __future__ import annotations

import argparse
import contextlib
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
from preprocess.common import (
    CANDIDATES_FILE,
    add_build_flags,
    output_folder,
    print_summary,
    read_glove,
    require_dir,
    run_cli,
    store_tracks,
    write_dataset,
)
from preprocess.side_info import RANDOM_KIND, random_side_info
from preprocess.store import DEFAULT_DTYPE, failures_path

# the marker of the dataset directories this command makes (fileio.claim_folder)
OWNER = "preprocess.msd"
GLOVE_KIND = "glove"
GLOVE_DIM = 300
# A Last.fm value is the tag's weight for the track relative to its strongest tag (0..100). The
# paper does not state its threshold; 50 follows the MSD tagging convention of Choi et al. (ISMIR
# 2016, keunwoochoi/ MSD_split_for_tagging: a tag is valid when its value is > 50): keep tags
# applied at least half as often as the track's top tag. We use >= (51 = Choi's strict > 50 on
# integer values; 0 = every listed pair).
DEFAULT_MIN_TAG_VALUE = 50.0
MSD_MAX_SECONDS = 30.0  # the original loaded the first 30 s of each preview ...
MSD_MIN_SECONDS = 29.0  # ... and dropped clips shorter than 29 s
PAPER_COUNTS = {
    "tracks": 406409,
    "labels": 1126,
    "tags_in_vocabulary": 1800,
    "lastfm_raw_tags": 498035,
}


def normalize_tag(tag: str) -> str:
    """Lowercase and keep only letters and digits ("Hip-Hop", "hip hop" -> "hiphop"; "R&B" -> "rb"),
    after NFKC so that composed and decomposed accents and full-width characters map to one form."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", str(tag)).lower() if ch.isalnum())


def read_vocabulary(path) -> set[str]:
    """Genre vocabulary file -> normalized genres. One genre per line; blank lines and '#' comments
    are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"--genres {path}: file does not exist; give a text file with one genre per line."
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"--genres {path}: not UTF-8 text ({exc}).") from None
    vocabulary = {normalize_tag(line) for line in lines if not line.strip().startswith("#")} - {""}
    if not vocabulary:
        raise DatasetError(
            f"--genres {path}: no genre found (one genre per line; '#' starts a comment line)."
        )
    return vocabulary


@dataclass
class TagCounts:  # how many tags survive each filter step (reported in summary.json)
    raw_tags: int = 0  # distinct raw tag strings in the Last.fm source
    normalized_tags: int = 0  # distinct non-empty normalized forms
    tags_in_vocabulary: int = 0  # normalized forms in the genre vocabulary
    pairs_read: int = 0  # (track, raw tag) pairs of vocabulary tags with value >= threshold
    unreadable_values: int = 0  # JSON pairs whose value is not a number (skipped)
    # JSON files that could not be parsed (skipped)
    unreadable_files: list = field(default_factory=list)

    def count_tags(self, forms: dict, vocabulary: set[str]) -> None:
        """Fill the first three counts from {raw tag: normalized form} of every raw tag seen."""
        normalized = set(forms.values()) - {""}
        self.raw_tags, self.normalized_tags = len(forms), len(normalized)
        self.tags_in_vocabulary = len(normalized & vocabulary)


# Last.fm sources -> positive (track, normalized tag) pairs ----------------------------------------
def _check_min_value(min_value: float) -> float:
    if not 0 <= float(min_value) <= 100:
        raise DatasetError(
            f"--min-tag-value {float(min_value)}: must be within 0..100, the range of Last.fm "
            "values."
        )
    return float(min_value)


def lastfm_pairs_sqlite(db_path, vocabulary: set[str], min_value: float, progress: bool = True):
    """Positive pairs from lastfm_tags.db (tids(tid), tags(tag), tid_tag(tid, tag, val) with
    tid_tag.tid, .tag the ROWIDs of tids, tags) -> (DataFrame track_id,label of distinct pairs,
    TagCounts)."""
    db_path = Path(db_path)
    min_value = _check_min_value(min_value)
    if not db_path.is_file():
        raise DatasetError(
            f"--lastfm-db {db_path}: file does not exist (the Last.fm dataset's lastfm_tags.db)."
        )
    counts = TagCounts()
    try:
        with contextlib.closing(
            sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
        ) as connection:
            pairs = _sqlite_pairs(connection, vocabulary, counts, min_value, progress)
    # not SQLite, another schema ("no such table: tid_tag"), or damaged mid-pass
    except sqlite3.Error as exc:
        raise DatasetError(
            f"--lastfm-db {db_path}: not a readable Last.fm tags database with tables tids(tid), "
            f"tags(tag), tid_tag(tid, tag, val) ({exc})."
        ) from None
    return _pairs_frame(pairs), counts


def _sqlite_pairs(connection, vocabulary, counts, min_value, progress) -> set:
    """Normalize each raw tag once; the ROWIDs of vocabulary tags go into a temporary table, and one
    streamed join returns their pairs with val >= min_value -> set of (track id, normalized tag)."""
    tags = [
        (rowid, str(raw))
        for rowid, raw in connection.execute("SELECT ROWID, tag FROM tags")
        if raw is not None
    ]
    forms = {raw: normalize_tag(raw) for _, raw in tags}
    counts.count_tags(forms, vocabulary)
    connection.execute("CREATE TEMP TABLE wanted_tags (id INTEGER PRIMARY KEY, norm TEXT NOT NULL)")
    connection.executemany(
        "INSERT INTO wanted_tags VALUES (?, ?)",
        [(rowid, forms[raw]) for rowid, raw in tags if forms[raw] in vocabulary],
    )
    cursor = connection.execute(
        "SELECT tids.tid, wanted_tags.norm FROM tid_tag "
        "JOIN wanted_tags ON wanted_tags.id = tid_tag.tag "
        "JOIN tids ON tids.ROWID = tid_tag.tid WHERE tid_tag.val >= ?",
        (min_value,),
    )
    pairs = set()
    with tqdm(desc="Last.fm pairs", unit="pair", disable=not progress, mininterval=1.0) as bar:
        while rows := cursor.fetchmany(50_000):
            counts.pairs_read += len(rows)
            pairs.update((str(tid), norm) for tid, norm in rows)
            bar.update(len(rows))
    return pairs


def _json_files(folders) -> list[Path]:
    files = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise DatasetError(
                f"--lastfm-json {folder}: directory does not exist (the lastfm_train / lastfm_test "
                "folders of the Last.fm dataset, or their parent)."
            )
        for root, _dirs, names in os.walk(folder):
            files.extend(Path(root) / name for name in names if name.endswith(".json"))
    if not files:
        raise DatasetError(f"--lastfm-json {', '.join(map(str, folders))}: no .json file found.")
    return sorted(set(files))


def lastfm_pairs_json(folders, vocabulary: set[str], min_value: float, progress: bool = True):
    """Positive pairs from the Last.fm JSON folders (lastfm_train/A/A/A/TRAAAAW128F429D538.json:
    track_id, tags = [[tag, value], ...], value possibly a string); same output as
    lastfm_pairs_sqlite. A file that is not valid JSON is skipped and listed; a value that is not a
    finite number is skipped and counted."""
    min_value = _check_min_value(min_value)
    counts = TagCounts()
    forms = {}
    pairs = set()
    for path in tqdm(
        _json_files(folders),
        desc="Last.fm JSON",
        unit="file",
        disable=not progress,
        mininterval=1.0,
    ):
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
            raw = str(item[0])
            if raw not in forms:
                forms[raw] = normalize_tag(raw)
            try:
                value = float(item[1])
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                counts.unreadable_values += 1
            elif forms[raw] in vocabulary and value >= min_value:
                counts.pairs_read += 1
                pairs.add((track_id, forms[raw]))
    counts.count_tags(forms, vocabulary)
    return _pairs_frame(pairs), counts


def _pairs_frame(pairs) -> pd.DataFrame:
    return pd.DataFrame(sorted(pairs), columns=["track_id", "label"], dtype=str)


def read_audio_map(path, audio_dir) -> dict[str, str]:
    """--audio-map CSV track_id,path -> {MSD track id: absolute path} (relative to --audio); skips
    empty rows."""
    frame = ds.read_csv_columns(path, ("track_id", "path"), "--audio-map")
    frame = frame[(frame["track_id"].str.strip() != "") & (frame["path"].str.strip() != "")]
    duplicated = frame["track_id"][frame["track_id"].duplicated()]
    if len(duplicated):
        raise DatasetError(
            f"--audio-map {path}: track_id {duplicated.iloc[0]!r} occurs more than once."
        )
    audio_dir = Path(audio_dir).resolve()
    return {
        t.strip(): str(audio_dir / p.strip())
        for t, p in zip(frame["track_id"], frame["path"], strict=True)
    }


# The whole build ----------------------------------------------------------------------------------
@dataclass
# positive pairs of the tags that have a GloVe vector, and the counts of every filter step
class Labels:
    annotations: pd.DataFrame  # track_id,label (normalized tag)
    glove: dict  # tag -> (dim,) vector
    counts: dict


def tag_annotations(
    vocabulary: set[str],
    glove_path,
    min_value: float,
    lastfm_db=None,
    lastfm_json=None,
    dim: int = GLOVE_DIM,
    progress: bool = True,
) -> Labels:
    """Steps 1-3 of the module docstring (no audio): positives of vocabulary tags that have a GloVe
    vector."""
    if (lastfm_db is None) == (not lastfm_json):
        raise DatasetError(
            "give exactly one of --lastfm-db (lastfm_tags.db) and --lastfm-json (JSON folders)."
        )
    if not Path(glove_path).is_file():  # checked before the long Last.fm pass
        raise DatasetError(
            f"--glove {glove_path}: file does not exist (e.g. glove.42B.300d.txt, unzipped)."
        )
    if lastfm_db is not None:
        pairs, tag_counts = lastfm_pairs_sqlite(lastfm_db, vocabulary, min_value, progress=progress)
    else:
        pairs, tag_counts = lastfm_pairs_json(lastfm_json, vocabulary, min_value, progress=progress)
    glove_counts: dict = {}
    glove, _ = read_glove(
        glove_path, set(pairs["label"]), dim=dim, counts=glove_counts, progress=progress
    )
    annotations = pairs[pairs["label"].isin(set(glove))].reset_index(drop=True)
    counts = {
        "vocabulary_genres": len(vocabulary),
        "lastfm_raw_tags": tag_counts.raw_tags,
        "lastfm_normalized_tags": tag_counts.normalized_tags,
        "tags_in_vocabulary": tag_counts.tags_in_vocabulary,
        "tags_in_vocabulary_with_positives": int(pairs["label"].nunique()),
        "tags_with_glove": len(glove),
        "glove_lines": glove_counts["lines"],
        "glove_malformed_lines": glove_counts["malformed"],
        "lastfm_pairs_read": tag_counts.pairs_read,
        "lastfm_unreadable_values": tag_counts.unreadable_values,
        "lastfm_unreadable_files": tag_counts.unreadable_files[:20],
        "lastfm_unreadable_files_count": len(tag_counts.unreadable_files),
        "tracks_with_positives": int(annotations["track_id"].nunique()),
    }
    return Labels(annotations=annotations, glove=glove, counts=counts)


def build_msd(
    genres,
    glove,
    audio,
    audio_map,
    out,
    lastfm_db=None,
    lastfm_json=None,
    min_tag_value: float = DEFAULT_MIN_TAG_VALUE,
    jobs: int = 1,
    seed: int = 0,
    dim: int = GLOVE_DIM,
    dtype: str = DEFAULT_DTYPE,
    progress: bool = True,
) -> dict:
    """Build the MSD dataset directory `out` (module docstring); returns the summary (also in
    summary.json)."""
    min_tag_value = _check_min_value(min_tag_value)
    if dim < 1:
        raise DatasetError(
            f"--glove-dim {dim}: must be a positive dimension (300 for glove.42B.300d.txt)."
        )
    audio = require_dir(audio, "--audio", "the folder of the MSD audio clips")
    vocabulary = read_vocabulary(genres)
    # cheap checks first: the Last.fm and GloVe passes take minutes
    clips = read_audio_map(audio_map, audio)
    with output_folder(out, OWNER) as out:
        labels = tag_annotations(
            vocabulary,
            glove,
            min_tag_value,
            lastfm_db=lastfm_db,
            lastfm_json=lastfm_json,
            dim=dim,
            progress=progress,
        )
        with_positives = sorted(set(labels.annotations["track_id"]))
        candidates = [t for t in with_positives if t in clips]
        if not candidates:
            raise DatasetError(
                f"none of the {len(with_positives)} tracks with positive tags is listed in "
                f"--audio-map {audio_map}; check that its track_id column holds MSD ids (TR...)."
            )
        store = store_tracks(
            out,
            pd.DataFrame({"track_id": candidates, "path": [clips[t] for t in candidates]}),
            audio,
            jobs=jobs,
            max_seconds=MSD_MAX_SECONDS,
            min_seconds=MSD_MIN_SECONDS,
            dtype=dtype,
            progress=progress,
        )
        # Final tracks = stored clips (each has >= 1 positive); labels = tags with >= 1 positive
        # among them.
        annotations = labels.annotations[labels.annotations["track_id"].isin(set(store.stored))]
        tags = sorted(annotations["label"].unique())
        return write_dataset(
            out,
            pd.DataFrame({"track_id": store.stored, "path": [clips[t] for t in store.stored]}),
            annotations,
            {
                GLOVE_KIND: (tags, np.stack([labels.glove[t] for t in tags])),
                RANDOM_KIND: (tags, random_side_info(tags, dim, seed=seed)),
            },
            {
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
                    "failures_csv": failures_path(ds.mels_path(out)).name,
                    "candidates_csv": CANDIDATES_FILE,
                    "max_seconds": MSD_MAX_SECONDS,
                    "min_seconds": MSD_MIN_SECONDS,
                    "dtype": dtype,
                },
                "seed": seed,
                "inputs": {
                    "lastfm": str(Path(lastfm_db).resolve())
                    if lastfm_db is not None
                    else [str(Path(p).resolve()) for p in lastfm_json],
                    "genres": str(Path(genres).resolve()),
                    "audio": str(audio.resolve()),
                    "audio_map": str(Path(audio_map).resolve()),
                },
            },
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.msd",
        description="Build the MSD + Last.fm + GloVe dataset directory (paper Experiment 2; layout "
        "and downloads: "
        "data/README.md). Idempotent: rerun the same command to resume or check.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lastfm-db", help="the Last.fm dataset's SQLite file lastfm_tags.db")
    source.add_argument(
        "--lastfm-json",
        nargs="+",
        metavar="DIR",
        help="instead of --lastfm-db: the lastfm_train and/or lastfm_test JSON folders (or parent)",
    )
    parser.add_argument(
        "--genres",
        required=True,
        help="genre vocabulary: one genre per line ('#' comments), e.g. the Tagtraum ontology",
    )
    parser.add_argument(
        "--glove", required=True, help="GloVe text file, e.g. glove.42B.300d.txt (streamed)"
    )
    parser.add_argument("--audio", required=True, help="folder of the MSD audio clips")
    parser.add_argument(
        "--audio-map",
        required=True,
        help="CSV track_id,path: MSD track id -> clip (path relative to --audio, or absolute)",
    )
    parser.add_argument(
        "--out", default=str(ds.DATA_ROOT / "msd"), help="dataset directory to write"
    )
    parser.add_argument(
        "--min-tag-value",
        type=float,
        default=DEFAULT_MIN_TAG_VALUE,
        help="a (track, tag) pair is positive when its Last.fm value (0..100, 100 = the track's "
        "strongest tag) is >= this (default: Choi et al. 2016's MSD convention; 0 = all)",
    )
    parser.add_argument(
        "--glove-dim", type=int, default=GLOVE_DIM, help="dimension of the GloVe vectors"
    )
    add_build_flags(parser)
    return parser


def main(argv=None) -> int:
    def build(a):
        summary = build_msd(
            a.genres,
            a.glove,
            a.audio,
            a.audio_map,
            a.out,
            lastfm_db=a.lastfm_db,
            lastfm_json=a.lastfm_json,
            min_tag_value=a.min_tag_value,
            jobs=a.jobs,
            seed=a.seed,
            dim=a.glove_dim,
            dtype=a.dtype,
            progress=not a.no_progress,
        )
        print_summary(summary, PAPER_COUNTS, "MSD + Last.fm")

    return run_cli(build, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
