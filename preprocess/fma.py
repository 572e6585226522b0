"""FMA + OpenMIC-2018 -> the dataset directory of paper Experiment 1 (genres described by instrument
vectors).

    python -m preprocess.fma --metadata DIR/fma_metadata --audio DIR/fma_large --openmic \
        DIR/openmic-2018 \
        --out data/fma [--jobs N] [--seed 0]

Formats: docs/formats.md; the instrument vectors: docs/original.md and preprocess/side_info.py.

1. Metadata: ('track', 'genres') of fma_metadata/tracks.csv (two-level header; Python-literal lists
   read with ast.literal_eval) and genres.csv's titles, which are our labels; OpenMIC-2018
   instrument annotations keyed by sample_key ("000046_3840" -> track "46").
2. Candidates: tracks in OpenMIC with >= 1 annotated instrument and >= 1 known genre ("audio files
   [with] both genre and instrument annotations"). A genre whose instrument vector cannot be
   standardized (std 0, in either flavour) is dropped with its annotations; a track left without a
   genre is dropped.
3. Audio: the store decodes <first 3 digits>/<6-digit id>.mp3 of the candidates into mels.h5 (files
   under 3,000 samples are dropped, as in the original); undecodable files go to the store's failure
   list, never a crash.
4. Final tracks = the stored candidates. The side information is computed again from them and step
   2's rule applied again. The store is never rebuilt for a smaller set, so a track whose only genre
   is dropped only now stays in tracks.csv and mels.h5 without labels (summary.json:
   tracks_left_without_genre_after_audio).
5. summary.json: dataset_dir.summarize + what was dropped and why, printed next to the paper's
   counts.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
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
    require_dir,
    run_cli,
    store_tracks,
    write_dataset,
)
from preprocess.openmic import load_openmic, track_id_from_sample_key
from preprocess.side_info import (
    INSTRUMENT_KINDS,
    RANDOM_KIND,
    instrument_side_info,
    random_side_info,
)
from preprocess.store import DEFAULT_DTYPE, failures_path

# the marker of the dataset directories this command makes (fileio.claim_folder)
OWNER = "preprocess.fma"
GENRES_COLUMN = ("track", "genres")
# The original dropped files with fewer than 3,000 samples. The store drops samples < min_seconds *
# 22050, and 3000 / 22050 * 22050 = 3000.0000000000005 would drop exactly 3,000 too: pass the next
# float below.
FMA_MIN_SECONDS = math.nextafter(3000 / 22050, 0.0)
PAPER_COUNTS = {"tracks": 19466, "labels": 157}
# FMA files known to be unreadable or empty (FMA's own list and the OpenMIC-2018 errata). Not
# removed up front: the store tries them, so a repaired copy is used; summary.json says which were
# stored or failed.
KNOWN_BROKEN_IDS = (
    "071826",
    "071827",
    "087435",
    "095253",
    "095259",
    "095263",
    "099134",
    "102144",
    "108925",
    "113025",
    "113604",
    "133297",
    "138485",
)


def fma_audio_path(audio_dir, track_id) -> Path:
    """FMA's audio layout: track 46 -> <audio_dir>/000/000046.mp3 (6-digit id, folder = its first 3
    digits)."""
    padded = f"{int(track_id):06d}"
    return Path(audio_dir) / padded[:3] / f"{padded}.mp3"


# FMA metadata -------------------------------------------------------------------------------------
def read_genre_titles(metadata_dir) -> dict[int, str]:
    """fma_metadata/genres.csv (genre_id,#tracks,parent,title,top_level) -> {genre id: title}."""
    path = Path(metadata_dir) / "genres.csv"
    frame = ds.read_csv_columns(path, ("genre_id", "title"), "FMA genres")
    titles: dict[int, str] = {}
    for genre_id, title in zip(frame["genre_id"], frame["title"], strict=True):
        if not genre_id.strip().isdecimal() or not title.strip():
            raise DatasetError(
                f"FMA genres file {path}: genre {genre_id!r} needs an integer id and a title."
            )
        titles[int(genre_id)] = title.strip()
    return titles


def parse_genre_list(text: str, track_id: str, path) -> list[int]:
    """'[76, 103]' -> [76, 103]; '[]' or '' -> []. A Python literal, read with ast.literal_eval
    (never eval)."""
    text = str(text).strip()
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(type(v) is int for v in value):
        raise DatasetError(
            f"FMA tracks file {path}: track {track_id} has genres {text!r}, expected a list of "
            "integer genre ids such as [76, 103]."
        )
    return list(value)


def read_track_genres(metadata_dir, progress: bool = True) -> dict[str, list[int]]:
    """fma_metadata/tracks.csv -> {track id ("46"): [genre ids]} from its ('track', 'genres')
    column.

    pandas wrote the file from two-level columns: read it with index_col=0, header=[0, 1] (pandas
    recognizes the optional third header row that names the index).
    """
    path = Path(metadata_dir) / "tracks.csv"
    if not path.is_file():
        raise DatasetError(
            f"FMA tracks file {path} does not exist; --metadata must be the fma_metadata folder."
        )
    try:
        frame = pd.read_csv(path, index_col=0, header=[0, 1], dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(
            f"FMA tracks file {path} is not readable as a two-level-header CSV: {exc}"
        ) from None
    if GENRES_COLUMN not in frame.columns:
        raise DatasetError(
            f"FMA tracks file {path} lacks column {GENRES_COLUMN} (the two header rows must name "
            "'track' and 'genres'); is this FMA's fma_metadata/tracks.csv?"
        )
    genres: dict[str, list[int]] = {}
    for raw_id, text in tqdm(
        zip(frame.index, frame[GENRES_COLUMN], strict=True),
        total=len(frame),
        desc="FMA genres",
        disable=not progress,
        mininterval=1.0,
    ):
        if not str(raw_id).strip().isdecimal():
            raise DatasetError(f"FMA tracks file {path}: track id {raw_id!r} is not an integer.")
        track_id = str(int(raw_id))
        if track_id in genres:
            raise DatasetError(
                f"FMA tracks file {path}: track id {track_id} occurs more than once."
            )
        genres[track_id] = parse_genre_list(text, track_id, path)
    return genres


# OpenMIC instrument annotations, one row per FMA track --------------------------------------------
@dataclass
class InstrumentTable:
    track_ids: list[str]
    y_true: np.ndarray  # (n, K) float32 likelihoods
    y_mask: np.ndarray  # (n, K) bool, True where annotated
    instruments: list[str]
    # OpenMIC clips dropped because an earlier clip of the same FMA track was kept
    duplicates: int = 0

    def subset(self, track_ids) -> InstrumentTable:
        # callers pass only tracks of the table
        index = pd.Index(self.track_ids).get_indexer(list(track_ids))
        return InstrumentTable(
            [self.track_ids[i] for i in index],
            self.y_true[index],
            self.y_mask[index],
            self.instruments,
            self.duplicates,
        )


def instrument_table(openmic_dir) -> InstrumentTable:
    """load_openmic -> one row per FMA track (a repeated track keeps its first clip in sample_key
    order)."""
    data = load_openmic(openmic_dir)
    track_ids = [track_id_from_sample_key(key) for key in data.sample_keys]
    first = ~pd.Index(track_ids).duplicated(keep="first")
    return InstrumentTable(
        [t for t, keep in zip(track_ids, first, strict=True) if keep],
        data.y_true[first],
        data.y_mask[first],
        list(data.instruments),
        duplicates=int((~first).sum()),
    )


# Selection and side information (no audio: testable on its own) -----------------------------------
@dataclass
class Selection:
    track_ids: list[str]  # candidates, sorted by integer id
    annotations: pd.DataFrame  # their positive (track_id, genre title) pairs
    counts: dict = field(default_factory=dict)


def select_tracks(
    track_genres: dict[str, list[int]], titles: dict[int, str], table: InstrumentTable
) -> Selection:
    """FMA tracks in OpenMIC with >= 1 annotated instrument and >= 1 known genre, with their genre
    titles.

    Genre ids that genres.csv does not list are ignored and counted; two ids with one title become
    one label.
    """
    annotated = {t for t, mask in zip(table.track_ids, table.y_mask, strict=True) if mask.any()}
    in_openmic = [t for t in table.track_ids if t in track_genres]
    candidates = sorted((t for t in in_openmic if t in annotated), key=int)
    annotations = pd.DataFrame(
        [
            (t, label)
            for t in candidates
            for label in sorted({titles[g] for g in track_genres[t] if g in titles})
        ],
        columns=["track_id", "label"],
        dtype=str,
    )
    track_ids = list(dict.fromkeys(annotations["track_id"]))
    counts = {
        "fma_tracks": len(track_genres),
        "openmic_tracks": len(table.track_ids),
        "openmic_duplicate_clips": table.duplicates,
        "openmic_tracks_not_in_fma": len(table.track_ids) - len(in_openmic),
        "openmic_tracks_without_instrument_annotation": sum(
            1 for t in in_openmic if t not in annotated
        ),
        "tracks_without_genre": len(candidates) - len(track_ids),
        "unknown_genre_ids": sorted(
            {g for t in candidates for g in track_genres[t] if g not in titles}
        ),
        "candidates": len(track_ids),
    }
    return Selection(track_ids=track_ids, annotations=annotations, counts=counts)


@dataclass
class SideInfoResult:
    """Side information of a final track set: every label of `annotations` has a vector in every
    kind."""

    track_ids: list[str]
    annotations: pd.DataFrame
    vectors: dict  # kind -> (labels, (n_labels, dim) array)
    dropped_labels: dict  # label -> kinds in which it could not be standardized
    dropped_tracks: list[str]  # tracks left without any label


def genre_side_info(
    track_ids, annotations: pd.DataFrame, table: InstrumentTable, seed: int = 0
) -> SideInfoResult:
    """Both instrument flavours + the random baseline for the given tracks.

    A genre that cannot be standardized in either flavour is dropped from every kind and from the
    annotations, then tracks left without a genre. Such a track adds to no kept genre's sum, so one
    pass is the fixed point.
    """
    track_ids = [str(t) for t in track_ids]
    annotations = annotations[annotations["track_id"].isin(set(track_ids))].reset_index(drop=True)
    rows = table.subset(track_ids)
    computed, dropped = {}, {}
    for kind, flavour in INSTRUMENT_KINDS.items():
        labels, vectors, bad = instrument_side_info(
            rows.track_ids, rows.y_true, rows.y_mask, annotations, flavour
        )
        computed[kind] = (labels, vectors)
        for label in bad:
            dropped.setdefault(label, []).append(kind)
    kept = annotations[~annotations["label"].isin(set(dropped))].reset_index(drop=True)
    vectors = {  # each kind's rows of the kept genres
        kind: (
            [label for label in labels if label not in dropped],
            matrix[[i for i, label in enumerate(labels) if label not in dropped]],
        )
        for kind, (labels, matrix) in computed.items()
    }
    labels = sorted(kept["label"].unique())
    vectors[RANDOM_KIND] = (labels, random_side_info(labels, 2 * len(table.instruments), seed=seed))
    kept_tracks = set(kept["track_id"])
    return SideInfoResult(
        track_ids=[t for t in track_ids if t in kept_tracks],
        annotations=kept,
        vectors=vectors,
        dropped_labels=dict(sorted(dropped.items())),
        dropped_tracks=[t for t in track_ids if t not in kept_tracks],
    )


def tracks_frame(track_ids, audio_dir) -> pd.DataFrame:
    """tracks.csv rows: absolute audio paths in FMA's layout."""
    audio_dir = Path(audio_dir).resolve()
    return pd.DataFrame(
        {
            "track_id": list(track_ids),
            "path": [str(fma_audio_path(audio_dir, t)) for t in track_ids],
        },
        dtype=str,
    )


# The whole build ----------------------------------------------------------------------------------
def build_fma(
    metadata,
    audio,
    openmic_dir,
    out,
    jobs: int = 1,
    seed: int = 0,
    dtype: str = DEFAULT_DTYPE,
    progress: bool = True,
) -> dict:
    """Build the FMA dataset directory `out` (module docstring); returns the summary (also in
    summary.json)."""
    metadata = require_dir(
        metadata, "--metadata", "FMA's fma_metadata folder (tracks.csv, genres.csv)"
    )
    audio = require_dir(audio, "--audio", "FMA's fma_large folder (000/000002.mp3, ...)")
    openmic_dir = require_dir(
        openmic_dir, "--openmic", "the openmic-2018 folder (openmic-2018.npz, class-map.json)"
    )
    titles = read_genre_titles(metadata)
    track_genres = read_track_genres(metadata, progress=progress)
    table = instrument_table(openmic_dir)
    selection = select_tracks(track_genres, titles, table)
    if not selection.track_ids:
        raise DatasetError(
            f"no FMA track of {metadata / 'tracks.csv'} is in {openmic_dir} with an instrument "
            "annotation and a genre; check that --metadata and --openmic belong together."
        )
    # Before the audio: drop the genres that cannot be standardized, so that no audio is decoded for
    # them.
    before = genre_side_info(selection.track_ids, selection.annotations, table, seed=seed)
    if not before.track_ids:
        raise DatasetError(
            f"none of the {len(selection.track_ids)} candidate tracks keeps a genre whose "
            "instrument "
            f"vector can be standardized (dropped: {', '.join(before.dropped_labels)})."
        )
    with output_folder(out, OWNER) as out:
        store = store_tracks(
            out,
            tracks_frame(before.track_ids, audio),
            audio,
            jobs=jobs,
            min_seconds=FMA_MIN_SECONDS,
            dtype=dtype,
            progress=progress,
        )
        # After the audio: the final tracks are those in the store; their side information is
        # computed again.
        after = genre_side_info(store.stored, before.annotations, table, seed=seed)
        failed = set(store.failures["track_id"])
        stored = set(store.stored)
        known = {padded: str(int(padded)) for padded in KNOWN_BROKEN_IDS}
        return write_dataset(
            out,
            tracks_frame(store.stored, audio),
            after.annotations,
            after.vectors,
            {
                "source": "FMA (fma_metadata, fma_large) + OpenMIC-2018 instrument annotations",
                "paper": PAPER_COUNTS,
                "selection": selection.counts,
                "genres_in_genres_csv": len(titles),
                "genres_without_candidate_track": sorted(
                    set(titles.values()) - set(selection.annotations["label"])
                ),
                "dropped_genres": {
                    "before_audio": before.dropped_labels,
                    "after_audio": after.dropped_labels,
                },
                "tracks_dropped_without_genre": len(before.dropped_tracks),
                "tracks_left_without_genre_after_audio": after.dropped_tracks,
                "genres_lost_with_failed_audio": sorted(
                    set(before.annotations["label"])
                    - set(after.annotations["label"])
                    - set(after.dropped_labels)
                ),
                "audio": {
                    "candidates": len(before.track_ids),
                    "stored": len(store.stored),
                    "failed": len(store.failures),
                    "failures_csv": failures_path(ds.mels_path(out)).name,
                    "candidates_csv": CANDIDATES_FILE,
                    "min_seconds": FMA_MIN_SECONDS,
                    "dtype": dtype,
                },
                "known_broken": {
                    "failed": sorted(p for p, t in known.items() if t in failed),
                    "stored": sorted(p for p, t in known.items() if t in stored),
                    "not_selected": sorted(p for p, t in known.items() if t not in failed | stored),
                },
                "seed": seed,
                "inputs": {
                    "metadata": str(metadata.resolve()),
                    "audio": str(audio.resolve()),
                    "openmic": str(openmic_dir.resolve()),
                },
            },
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.fma",
        description="Build the FMA + OpenMIC-2018 dataset directory (paper Experiment 1): "
        "tracks.csv, "
        "annotations.csv (genre titles), "
        "side_info/{instrument-count,instrument-confidence,random}.csv, "
        "mels.h5 + mels.failures.csv, summary.json. Idempotent: rerun the same command to resume "
        "or "
        "check. Layout and downloads: data/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--metadata", required=True, help="FMA's fma_metadata folder (tracks.csv, genres.csv)"
    )
    parser.add_argument(
        "--audio", required=True, help="FMA's fma_large folder (<3 digits>/<6-digit id>.mp3)"
    )
    parser.add_argument(
        "--openmic",
        required=True,
        help="the openmic-2018 folder (openmic-2018.npz, class-map.json, partitions/)",
    )
    parser.add_argument(
        "--out", default=str(ds.DATA_ROOT / "fma"), help="dataset directory to write"
    )
    add_build_flags(parser)
    return parser


def main(argv=None) -> int:
    def build(a):
        summary = build_fma(
            a.metadata,
            a.audio,
            a.openmic,
            a.out,
            jobs=a.jobs,
            seed=a.seed,
            dtype=a.dtype,
            progress=not a.no_progress,
        )
        print_summary(summary, PAPER_COUNTS, "FMA + OpenMIC")

    return run_cli(build, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
