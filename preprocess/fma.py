"""FMA + OpenMIC-2018 -> the dataset directory of paper Experiment 1 (genres described by instrument vectors).

    python -m preprocess.fma --metadata DIR/fma_metadata --audio DIR/fma_large --openmic DIR/openmic-2018 \
        --out data/fma [--jobs N] [--seed 0]

Steps (file formats: ../shared/DATASETS.md; side information: ../shared/REFERENCE.md, "Side information"):

1. Metadata. `fma_metadata/tracks.csv` (pandas' two-level column header) gives each track's genre ids in
   ('track', 'genres') (a Python-literal list, parsed with `ast.literal_eval`); `genres.csv` maps ids to titles,
   which are our labels. OpenMIC-2018 (`preprocess.openmic.load_openmic`) gives the instrument annotations of 20,000
   FMA tracks, keyed by `sample_key` ("000046_3840" -> track "46").
2. Candidates: FMA tracks that are in OpenMIC with at least one annotated instrument (the paper kept "audio files
   [with] both genre and instrument annotations") and at least one genre. Genres whose instrument vector cannot be
   standardized (std 0, in either flavour) are dropped with their annotations, so that every label has a vector;
   a track left without a genre is dropped too.
3. Audio: `preprocess.store.build_store` decodes `fma_large/<first 3 digits>/<6-digit id>.mp3` of the candidates
   into mels.h5 (files shorter than 3,000 samples are dropped, as in the original). Undecodable files (e.g. the
   known broken ones listed in KNOWN_BROKEN_IDS) end up in failures.csv, never in a crash.
4. Final tracks = the candidates that are in the store (tracks.csv = candidates.csv minus failures.csv, in store
   order). The side information is recomputed from the final tracks (a genre's vector is the sum over its *final*
   tracks) and step 2's drop rule is applied again; tracks.csv, annotations.csv, side_info/*.csv and mels.h5 then
   describe the same tracks, and every label of annotations.csv has a vector in every side_info file.
   The store is keyed by its selection (a different selection means decoding everything again), so it is never
   rebuilt for a smaller set: in the corner case where a genre becomes unstandardizable only because its other
   tracks failed to decode, and a track had no other genre, that track stays in tracks.csv and mels.h5 without
   labels (listed in summary.json as tracks_left_without_genre_after_audio; splits only use labelled tracks).
   With every candidate having an annotated instrument, this needs all its annotations to be exactly 0.5.
5. summary.json (dataset_dir.summarize + what was dropped and why), printed next to the paper's counts.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import dataset_dir as ds
from preprocess.store import DEFAULT_DTYPE, DTYPES, FAILURES_FILE
from dataset_dir import DatasetError
from preprocess.openmic import load_openmic, track_id_from_sample_key
from preprocess.side_info import INSTRUMENT_KINDS, RANDOM_KIND, instrument_side_info, random_side_info

TRACKS_CSV = "tracks.csv"
# The tracks handed to the audio front end (kept: the store is keyed by this selection; tracks.csv = these minus
# failures.csv).
CANDIDATES_FILE = "candidates.csv"
GENRES_CSV = "genres.csv"
GENRES_COLUMN = ("track", "genres")
GENRES_CSV_COLUMNS = ("genre_id", "title")
# The original dropped FMA files with fewer than 3,000 samples (at 22,050 Hz). The store rejects a file when
# samples < min_seconds * 22050; 3000 / 22050 * 22050 rounds to 3000.0000000000005, which would also drop a file
# of exactly 3,000 samples, so we pass the next float below 3000 / 22050 (x * 22050 = 2999.9999999999995).
FMA_MIN_SECONDS = math.nextafter(3000 / 22050, 0.0)
PAPER_COUNTS = {"tracks": 19466, "labels": 157}
# FMA files known to be unreadable or empty: DATASETS.md (099134, 108925, 133297) and the OpenMIC-2018 errata.
# They are not removed up front: the audio front end tries them and lists every one that fails in failures.csv, so
# a repaired copy is used and nothing is dropped silently. summary.json says which of them were stored or failed.
KNOWN_BROKEN_IDS = ("071826", "071827", "087435", "095253", "095259", "095263", "099134", "102144", "108925",
                    "113025", "113604", "133297", "138485")


# --------------------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------------------
def fma_audio_path(audio_dir, track_id) -> Path:
    """FMA's audio layout: track 46 -> <audio_dir>/000/000046.mp3 (6-digit id, folder = its first 3 digits)."""
    padded = f"{int(track_id):06d}"
    return Path(audio_dir) / padded[:3] / f"{padded}.mp3"


def _require_dir(path, flag: str, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{flag} {path}: directory does not exist; it must be {what}.")
    return path


# --------------------------------------------------------------------------------------------------------------
# FMA metadata
# --------------------------------------------------------------------------------------------------------------
def read_genre_titles(metadata_dir) -> dict[int, str]:
    """fma_metadata/genres.csv (header genre_id,#tracks,parent,title,top_level) -> {genre id: title}."""
    path = Path(metadata_dir) / GENRES_CSV
    if not path.is_file():
        raise DatasetError(f"FMA genres file {path} does not exist; --metadata must be the fma_metadata folder.")
    frame = ds.read_csv_columns(path, GENRES_CSV_COLUMNS, "FMA genres")
    titles: dict[int, str] = {}
    for genre_id, title in zip(frame["genre_id"], frame["title"]):
        try:
            titles[int(genre_id)] = title.strip()
        except ValueError:
            raise DatasetError(f"FMA genres file {path}: genre_id {genre_id!r} is not an integer.") from None
        if not titles[int(genre_id)]:
            raise DatasetError(f"FMA genres file {path}: genre {genre_id} has an empty title.")
    return titles


def parse_genre_list(text: str, track_id: str, path) -> list[int]:
    """'[76, 103]' -> [76, 103]; '[]' or '' -> []. Python literal, parsed with ast.literal_eval (never eval)."""
    text = str(text).strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise DatasetError(f"FMA tracks file {path}: track {track_id} has genres {text!r}, expected a list of "
                           "integer genre ids such as [76, 103].")
    return [int(v) for v in value]


def read_track_genres(metadata_dir, progress: bool = True) -> dict[str, list[int]]:
    """fma_metadata/tracks.csv -> {track id ("46"): [genre ids]} from the ('track', 'genres') column.

    The file was written by pandas from a frame with two-level columns, so it is read with index_col=0 and
    header=[0, 1]; pandas recognizes the optional third row that names the index ("track_id,,,...").
    """
    path = Path(metadata_dir) / TRACKS_CSV
    if not path.is_file():
        raise DatasetError(f"FMA tracks file {path} does not exist; --metadata must be the fma_metadata folder.")
    try:
        frame = pd.read_csv(path, index_col=0, header=[0, 1], dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"FMA tracks file {path} is not readable as a two-level-header CSV: {exc}") from None
    if GENRES_COLUMN not in frame.columns:
        raise DatasetError(f"FMA tracks file {path} lacks column {GENRES_COLUMN} (the two header rows must name "
                           "'track' and 'genres'); is this FMA's fma_metadata/tracks.csv?")
    genres: dict[str, list[int]] = {}
    column = frame[GENRES_COLUMN]
    for raw_id, text in tqdm(zip(frame.index, column), total=len(column), desc="FMA genres", unit="track",
                             disable=not progress, mininterval=1.0):
        try:
            track_id = str(int(str(raw_id).strip()))
        except ValueError:
            raise DatasetError(f"FMA tracks file {path}: track id {raw_id!r} is not an integer.") from None
        if track_id in genres:
            raise DatasetError(f"FMA tracks file {path}: track id {track_id} occurs more than once.")
        genres[track_id] = parse_genre_list(text, track_id, path)
    return genres


# --------------------------------------------------------------------------------------------------------------
# OpenMIC instrument annotations per FMA track
# --------------------------------------------------------------------------------------------------------------
@dataclass
class InstrumentTable:
    """OpenMIC rows keyed by FMA track id (one row per track)."""

    track_ids: list[str]
    y_true: np.ndarray  # (n, K) float32
    y_mask: np.ndarray  # (n, K) bool
    instruments: list[str]
    duplicates: int = 0  # OpenMIC clips dropped because an earlier clip of the same FMA track was kept

    def subset(self, track_ids) -> "InstrumentTable":
        index = pd.Index(self.track_ids).get_indexer(list(track_ids))
        if (index < 0).any():
            raise KeyError("track without OpenMIC annotations")
        return InstrumentTable([self.track_ids[i] for i in index], self.y_true[index], self.y_mask[index],
                               self.instruments, self.duplicates)


def instrument_table(openmic_dir) -> InstrumentTable:
    """load_openmic -> one row per FMA track (OpenMIC has one clip per track; a repeated track keeps its first
    clip in sample_key order and is counted in `duplicates`)."""
    data = load_openmic(openmic_dir)
    track_ids = [track_id_from_sample_key(key) for key in data.sample_keys]
    first = ~pd.Index(track_ids).duplicated(keep="first")
    return InstrumentTable(
        track_ids=[t for t, keep in zip(track_ids, first) if keep],
        y_true=data.y_true[first],
        y_mask=data.y_mask[first],
        instruments=list(data.instruments),
        duplicates=int((~first).sum()),
    )


# --------------------------------------------------------------------------------------------------------------
# Selection and side information (no audio involved: testable on its own)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Selection:
    """Candidate tracks (sorted by integer id), their positive (track, genre title) pairs, and the counts."""

    track_ids: list[str]
    annotations: pd.DataFrame  # track_id,label
    counts: dict = field(default_factory=dict)


def select_tracks(track_genres: dict[str, list[int]], titles: dict[int, str], table: InstrumentTable) -> Selection:
    """FMA tracks in OpenMIC with >= 1 annotated instrument and >= 1 known genre, with their genre titles.

    Genre ids that genres.csv does not list are ignored and counted. Two ids with the same title become one label.
    """
    annotated = set(t for t, mask in zip(table.track_ids, table.y_mask) if mask.any())
    in_openmic = [t for t in table.track_ids if t in track_genres]
    unknown_ids: set[int] = set()
    pairs = []
    no_genre = 0
    for track_id in sorted((t for t in in_openmic if t in annotated), key=int):
        labels = set()
        for genre_id in track_genres[track_id]:
            if genre_id in titles:
                labels.add(titles[genre_id])
            else:
                unknown_ids.add(genre_id)
        if not labels:
            no_genre += 1
        pairs.extend((track_id, label) for label in sorted(labels))
    annotations = pd.DataFrame(pairs, columns=["track_id", "label"], dtype=str)
    track_ids = list(dict.fromkeys(annotations["track_id"]))
    counts = {
        "fma_tracks": len(track_genres),
        "openmic_tracks": len(table.track_ids),
        "openmic_duplicate_clips": table.duplicates,
        "openmic_tracks_not_in_fma": len(table.track_ids) - len(in_openmic),
        "openmic_tracks_without_instrument_annotation": sum(1 for t in in_openmic if t not in annotated),
        "tracks_without_genre": no_genre,
        "unknown_genre_ids": sorted(unknown_ids),
        "candidates": len(track_ids),
    }
    return Selection(track_ids=track_ids, annotations=annotations, counts=counts)


@dataclass
class SideInfoResult:
    """Side information of a final track set: every label of `annotations` has a vector in every kind."""

    track_ids: list[str]
    annotations: pd.DataFrame
    vectors: dict  # kind -> (labels, (n_labels, dim) array)
    dropped_labels: dict  # label -> list of kinds in which it could not be standardized
    dropped_tracks: list[str]  # tracks left without any label


def genre_side_info(track_ids, annotations: pd.DataFrame, table: InstrumentTable, seed: int = 0) -> SideInfoResult:
    """Instrument side information (both flavours) + the random baseline for the given tracks.

    A genre that cannot be standardized in either flavour is dropped from every kind and from the annotations;
    tracks left without a genre are dropped. Removing such a track changes no kept genre's sum (it has no kept
    genre), so one pass reaches the fixed point.
    """
    track_ids = [str(t) for t in track_ids]
    annotations = annotations[annotations["track_id"].isin(set(track_ids))].reset_index(drop=True)
    rows = table.subset(track_ids)
    computed = {}
    dropped: dict[str, list[str]] = {}
    for kind, flavour in INSTRUMENT_KINDS.items():
        labels, vectors, bad = instrument_side_info(rows.track_ids, rows.y_true, rows.y_mask, annotations, flavour)
        computed[kind] = (labels, vectors)
        for label in bad:
            dropped.setdefault(label, []).append(kind)
    kept = annotations[~annotations["label"].isin(set(dropped))].reset_index(drop=True)
    kept_tracks = set(kept["track_id"])
    final_tracks = [t for t in track_ids if t in kept_tracks]
    vectors = {}
    for kind, (labels, matrix) in computed.items():
        keep = [i for i, label in enumerate(labels) if label not in dropped]
        vectors[kind] = ([labels[i] for i in keep], matrix[keep])
    labels = sorted(kept["label"].unique())
    dim = 2 * len(table.instruments)
    vectors[RANDOM_KIND] = (labels, random_side_info(labels, dim, seed=seed))
    return SideInfoResult(
        track_ids=final_tracks,
        annotations=kept,
        vectors=vectors,
        dropped_labels={label: kinds for label, kinds in sorted(dropped.items())},
        dropped_tracks=[t for t in track_ids if t not in kept_tracks],
    )


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------
def tracks_frame(track_ids, audio_dir) -> pd.DataFrame:
    """tracks.csv rows: absolute audio paths in FMA's layout."""
    audio_dir = Path(audio_dir).resolve()
    return pd.DataFrame({"track_id": list(track_ids),
                         "path": [str(fma_audio_path(audio_dir, t)) for t in track_ids]}, dtype=str)


def write_side_info_files(out, vectors: dict) -> None:
    """side_info/<kind>.csv for every kind (other files in side_info/, e.g. a user's own kind, are left alone)."""
    for kind, (labels, matrix) in vectors.items():
        ds.write_side_info(ds.side_info_path(out, kind), labels, matrix)


def write_dataset_files(out, tracks: pd.DataFrame, result: SideInfoResult) -> None:
    """tracks.csv, annotations.csv and side_info/*.csv (each written atomically)."""
    ds.write_tracks(ds.tracks_path(out), tracks)
    ds.write_annotations(ds.annotations_path(out), result.annotations)
    write_side_info_files(out, result.vectors)


# --------------------------------------------------------------------------------------------------------------
# The audio store (shared with preprocess.msd)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class StoreResult:
    stored: list[str]  # track ids in the store, in store order
    failures: pd.DataFrame  # failures.csv: track_id,path,reason
    summary: dict  # build_store's return value


def store_tracks(out, candidates: pd.DataFrame, audio_dir, jobs: int = 1, max_seconds=None, min_seconds=None,
                 dtype: str = DEFAULT_DTYPE, progress: bool = True) -> StoreResult:
    """Write candidates.csv (track_id,path) and build <out>/mels.h5 (+ failures.csv) for exactly these tracks.

    The store is keyed by a digest of its selection: rerunning with the same candidates finds it done (or resumes
    it after a crash), so the candidate list is kept as its own file and never replaced by the final tracks.csv.
    """
    from preprocess.store import MelStore, build_store

    out = Path(out)
    candidates_csv = out / CANDIDATES_FILE
    ds.write_tracks(candidates_csv, candidates)
    summary = build_store(audio_dir=audio_dir, out=ds.mels_path(out), tracks_csv=candidates_csv, jobs=jobs,
                          max_seconds=max_seconds, min_seconds=min_seconds, progress=progress, dtype=dtype)
    with MelStore(ds.mels_path(out), in_memory=False) as store:
        stored = list(store.track_ids)
    failures_csv = out / FAILURES_FILE
    if failures_csv.is_file():
        failures = pd.read_csv(failures_csv, dtype=str, keep_default_na=False)
    else:
        failures = pd.DataFrame(columns=["track_id", "path", "reason"], dtype=str)
    return StoreResult(stored=stored, failures=failures, summary=summary)


def add_build_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both adapters share: audio jobs, the random baseline's seed, the store dtype, progress bars."""
    parser.add_argument("--jobs", type=int, default=1, help="audio decoding processes (0 = one per CPU core)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random side-information baseline")
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                        help="storage type of the log-mel store (preprocess.store)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_cli(build, args, errors=()) -> int:
    """Run a build function for main(): clear input problems -> `error: ...` on stderr and exit status 2."""
    from preprocess.store import AudioError

    try:
        build(args)
    except (DatasetError, AudioError, OSError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def print_summary(summary: dict, paper: dict, title: str) -> None:
    """The machine-readable summary (JSON), then human-readable lines with the paper's counts next to ours."""
    print(json.dumps(summary, indent=2))
    print(ds.format_summary(summary))
    print(f"{title}: ours {summary['tracks']} tracks / {summary['labels']} labels; "
          f"paper {paper['tracks']} tracks / {paper['labels']} labels.")


# --------------------------------------------------------------------------------------------------------------
# The whole build
# --------------------------------------------------------------------------------------------------------------
def build_fma(metadata, audio, openmic_dir, out, jobs: int = 1, seed: int = 0, dtype: str = DEFAULT_DTYPE,
              progress: bool = True) -> dict:
    """Build the FMA dataset directory `out` (see the module docstring for the order of the steps).

    Returns the summary (also written to <out>/summary.json).
    """
    metadata = _require_dir(metadata, "--metadata", "FMA's fma_metadata folder (tracks.csv, genres.csv)")
    audio = _require_dir(audio, "--audio", "FMA's fma_large folder (000/000002.mp3, ...)")
    openmic_dir = _require_dir(openmic_dir, "--openmic", "the openmic-2018 folder (openmic-2018.npz, class-map.json)")
    out = Path(out)
    titles = read_genre_titles(metadata)
    track_genres = read_track_genres(metadata, progress=progress)
    table = instrument_table(openmic_dir)
    selection = select_tracks(track_genres, titles, table)
    if not selection.track_ids:
        raise DatasetError(f"no FMA track of {metadata / TRACKS_CSV} is in {openmic_dir} with an instrument "
                           "annotation and a genre; check that --metadata and --openmic belong together.")

    # Before the audio: drop genres that cannot be standardized, so that no audio is decoded for their tracks.
    before = genre_side_info(selection.track_ids, selection.annotations, table, seed=seed)
    if not before.track_ids:
        raise DatasetError(f"none of the {len(selection.track_ids)} candidate tracks keeps a genre whose instrument "
                           f"vector can be standardized (dropped: {', '.join(before.dropped_labels)}).")
    out.mkdir(parents=True, exist_ok=True)
    store = store_tracks(out, tracks_frame(before.track_ids, audio), audio, jobs=jobs, min_seconds=FMA_MIN_SECONDS,
                         dtype=dtype, progress=progress)

    # After the audio: the final tracks are those in the store; the side information is computed from them.
    after = genre_side_info(store.stored, before.annotations, table, seed=seed)
    write_dataset_files(out, tracks_frame(store.stored, audio), after)

    labelled = set(after.annotations["label"])
    failed_ids, stored_ids = set(store.failures["track_id"]), set(store.stored)
    known = {padded: str(int(padded)) for padded in KNOWN_BROKEN_IDS}
    extra = {
        "source": "FMA (fma_metadata, fma_large) + OpenMIC-2018 instrument annotations",
        "paper": PAPER_COUNTS,
        "selection": selection.counts,
        "genres_in_genres_csv": len(titles),
        "genres_without_candidate_track": sorted(set(titles.values()) - set(selection.annotations["label"])),
        "dropped_genres": {
            "before_audio": before.dropped_labels,
            "after_audio": after.dropped_labels,
        },
        "tracks_dropped_without_genre": len(before.dropped_tracks),
        "tracks_left_without_genre_after_audio": after.dropped_tracks,
        "genres_lost_with_failed_audio": sorted(set(before.annotations["label"]) - labelled
                                               - set(after.dropped_labels)),
        "audio": {
            "candidates": len(before.track_ids),
            "stored": len(store.stored),
            "failed": len(store.failures),
            "failures_csv": FAILURES_FILE,
            "candidates_csv": CANDIDATES_FILE,
            "min_seconds": FMA_MIN_SECONDS,
            "dtype": dtype,
        },
        "known_broken": {
            "failed": sorted(p for p, t in known.items() if t in failed_ids),
            "stored": sorted(p for p, t in known.items() if t in stored_ids),
            "not_selected": sorted(p for p, t in known.items() if t not in failed_ids and t not in stored_ids),
        },
        "seed": seed,
        "inputs": {"metadata": str(metadata.resolve()), "audio": str(audio.resolve()),
                   "openmic": str(openmic_dir.resolve())},
    }
    return ds.summarize(out, extra=extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.fma",
        description="Build the FMA + OpenMIC-2018 dataset directory (paper Experiment 1): tracks.csv, "
                    "annotations.csv (genre titles), side_info/{instrument-count,instrument-confidence,random}.csv, "
                    "mels.h5 + failures.csv, summary.json. Idempotent: rerun the same command to resume or check. "
                    "Layout and downloads: data/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--metadata", required=True, help="FMA's fma_metadata folder (tracks.csv, genres.csv)")
    parser.add_argument("--audio", required=True, help="FMA's fma_large folder (<3 digits>/<6-digit id>.mp3)")
    parser.add_argument("--openmic", required=True,
                        help="the openmic-2018 folder (openmic-2018.npz, class-map.json, partitions/)")
    parser.add_argument("--out", default=str(ds.DATA_ROOT / "fma"), help="dataset directory to write")
    add_build_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def build(a):
        summary = build_fma(a.metadata, a.audio, a.openmic, a.out, jobs=a.jobs, seed=a.seed, dtype=a.dtype,
                            progress=not a.no_progress)
        print_summary(summary, PAPER_COUNTS, "FMA + OpenMIC")

    return run_cli(build, args)


if __name__ == "__main__":
    sys.exit(main())
