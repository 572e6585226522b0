"""MTG-Jamendo -> a dataset directory for either experiment of the paper, on open data.

    python -m preprocess.jamendo --genre autotagging_genre-{train,validation,test}.tsv \
        --instrument autotagging_instrument.tsv [--moodtheme autotagging_moodtheme.tsv] \
        (--audio DIR | --metadata-only) --out data/jamendo [--labels genre|all] [--glove FILE]
            [--jobs N]

Formats: docs/formats.md (the TSVs: preprocess/jamendo_tsv.py); downloads and run times:
    data/README.md.

* `--labels genre` (Experiment 1, default): tracks with a genre tag; labels = the genres. Side
  information `instrument-count`: for each genre one dimension per instrument tag (sorted by name),
  the number of tracks tagged with both, counted over ALL tracks of the given metadata (knowledge
  about labels, not about the audio at hand), then standardized per genre like the FMA vectors
  (side_info.standardize_rows). A genre that cannot be standardized (no co-occurring instrument, or
  the same count for every one) is dropped and reported.
* `--labels all` (Experiment 2): tracks with any tag; labels = every tag name (no category prefix).
  Side information `glove`: the GloVe vector of the name; else, for a compound name of the
  word-split table (jamendo_words.csv, made by us from the tag names), the mean of its words'
  vectors; a tag still without a vector is dropped and listed.
* Both add `random` (seeded normal vectors of the same dimension). Tracks left without a label are
  dropped.
* Audio: PATH under --audio, as `41/241.mp3` (raw_30s/audio) or `41/241.low.mp3`
  (raw_30s/audio-low). Tracks are full songs (median 224 s); the store reads the MIDDLE 30 s
  (--clip-seconds; 0 = the whole track): the paper's inputs are 30 s clips, and a song's middle is
  its body, not the intro or fade-out that its first or last 30 s often are. A missing or
  undecodable file goes to mels.failures.csv with the reason; --sha256 first excludes files whose
  checksum differs (listed in summary.json). Final tracks = the stored ones; labels = those with a
  positive among them. `--metadata-only` writes tracks.csv (PATH as given), annotations, side
  information and summary.json without audio or store (for split statistics; --glove is then
  optional).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import dataset_dir as ds
from dataset_dir import DatasetError
from fileio import sha256_file
from preprocess.common import (
    CANDIDATES_FILE,
    add_build_flags,
    output_folder,
    read_glove,
    require_dir,
    run_cli,
    store_tracks,
    write_dataset,
)
from preprocess.jamendo_tsv import (
    CATEGORIES,
    Metadata,
    read_metadata,
    read_sha256_list,
    read_word_splits,
    track_number,
)
from preprocess.side_info import RANDOM_KIND, random_side_info, standardize_rows, sum_by_label
from preprocess.store import DEFAULT_DTYPE, failures_path

# the marker of the dataset directories this command makes (fileio.claim_folder)
OWNER = "preprocess.jamendo"
LABEL_SETS = ("genre", "all")
INSTRUMENT_KIND = "instrument-count"
GLOVE_KIND = "glove"
GLOVE_DIM = 300
DEFAULT_CLIP_SECONDS = 30.0  # the paper's clips are 30 s
EXCERPT = "middle"  # where the clip is taken in a full song (module docstring)
WORD_SPLITS = Path(__file__).resolve().with_name("jamendo_words.csv")
LOW_QUALITY_SUFFIX = ".low.mp3"  # raw_30s/audio-low names 41/241.mp3 as 41/241.low.mp3


@dataclass
class Labels:
    """The positives of one label set and the side information of its labels (before any audio)."""

    annotations: pd.DataFrame  # track_id,label of the kept labels; every track has >= 1 positive
    vectors: dict  # kind -> (labels, (n_labels, dim) array)
    dropped_labels: dict  # label -> why it was dropped
    counts: dict = field(default_factory=dict)


def tag_pairs(tags: dict) -> pd.DataFrame:
    """{track id: tag names} -> track_id,label rows in track order."""
    return pd.DataFrame(
        [(track, tag) for track in sorted(tags, key=track_number) for tag in sorted(tags[track])],
        columns=["track_id", "label"],
        dtype=str,
    )


def _keep_labels(annotations: pd.DataFrame, labels) -> pd.DataFrame:
    return annotations[annotations["label"].isin(set(labels))].reset_index(drop=True)


# Experiment 1: genres described by their instruments ----------------------------------------------
def instrument_counts(
    genre_pairs: pd.DataFrame, instrument_tags: dict
) -> tuple[list[str], list[str], np.ndarray]:
    """(genres, instruments (sorted), (n_genres, n_instruments) counts): counts[g, i] = number of
    tracks tagged with genre g and instrument i. `instrument_tags`: {track id: instrument names} of
    every track that has some."""
    instruments = sorted(set().union(*instrument_tags.values()))
    column = {name: j for j, name in enumerate(instruments)}
    track_ids = sorted(instrument_tags, key=track_number)
    multi_hot = np.zeros((len(track_ids), len(instruments)))  # (n_tracks, n_instruments) 1 = tagged
    for row, track in enumerate(track_ids):
        multi_hot[row, [column[name] for name in instrument_tags[track]]] = 1.0
    genres, counts = sum_by_label(track_ids, multi_hot, genre_pairs)
    return genres, instruments, counts


def genre_labels(metadata: Metadata, seed: int = 0) -> Labels:
    """Labels = genres; side information = standardized genre x instrument co-occurrence counts +
    random."""
    pairs = tag_pairs(metadata.tags["genre"])
    genres, instruments, counts = instrument_counts(pairs, metadata.tags["instrument"])
    profiles, ok = standardize_rows(counts)
    dropped = {
        g: "no track carries it together with an instrument tag"
        if counts[i].sum() == 0
        else "the same count for every instrument (std 0)"
        for i, g in enumerate(genres)
        if not ok[i]
    }
    kept = [g for g in genres if g not in dropped]
    vectors = {
        INSTRUMENT_KIND: (kept, profiles[ok]),
        RANDOM_KIND: (kept, random_side_info(kept, len(instruments), seed=seed)),
    }
    annotations = _keep_labels(pairs, kept)
    return Labels(
        annotations,
        vectors,
        dropped,
        counts={
            "genre_tracks": len(metadata.tags["genre"]),
            "genres": len(genres),
            "instruments": len(instruments),
            "instrument_tracks": len(metadata.tags["instrument"]),
            "tracks_dropped_without_label": len(metadata.tags["genre"])
            - annotations["track_id"].nunique(),
        },
    )


# Experiment 2: every tag described by word vectors ------------------------------------------------
def tags_of_all_categories(metadata: Metadata) -> dict:
    """{track id: all its tag names}; DatasetError for a name used in two categories (it would merge
    two labels)."""
    category_of: dict[str, str] = {}
    merged: dict[str, set] = {}
    for category, tags in metadata.tags.items():
        for track, names in tags.items():
            for name in names:
                if category_of.setdefault(name, category) != category:
                    raise DatasetError(
                        f"tag {name!r} is both a {CATEGORIES[category_of[name]]} and a "
                        f"{CATEGORIES[category]} tag; --labels all needs distinct names."
                    )
            merged.setdefault(track, set()).update(names)
    return merged


def tag_vector(tag: str, glove: dict, word_splits: dict):
    """The GloVe vector of `tag`; else, when the word-split table lists it, the mean of its words'
    vectors (all needed); else None."""
    if tag in glove:
        return glove[tag]
    words = word_splits.get(tag, [])
    if words and all(word in glove for word in words):
        return np.mean([glove[word] for word in words], axis=0)  # (dim,)
    return None


def all_labels(
    metadata: Metadata,
    glove_path=None,
    word_splits=None,
    dim: int = GLOVE_DIM,
    seed: int = 0,
    progress: bool = True,
) -> Labels:
    """Labels = every tag; side information = GloVe vectors (the compound rule of tag_vector) +
    random. Without glove_path (metadata only) no tag is dropped and only `random` is made."""
    tags = tags_of_all_categories(metadata)
    pairs = tag_pairs(tags)
    names = sorted(pairs["label"].unique())
    word_splits = word_splits or {}
    vectors = {}
    dropped = {}
    counts = {"tracks_with_a_tag": len(tags), "tags": len(names)}
    if glove_path is not None:
        wanted = set(names) | {word for name in names for word in word_splits.get(name, [])}
        glove_counts: dict = {}
        glove, _ = read_glove(glove_path, wanted, dim=dim, counts=glove_counts, progress=progress)
        found = {name: tag_vector(name, glove, word_splits) for name in names}
        dropped = {
            name: "no GloVe vector for the name"
            + (" or all of its words " + " ".join(word_splits[name]) if name in word_splits else "")
            for name, vector in found.items()
            if vector is None
        }
        kept = [name for name in names if name not in dropped]
        vectors[GLOVE_KIND] = (
            kept,
            np.stack([found[name] for name in kept]) if kept else np.zeros((0, dim)),
        )
        counts.update(
            glove_lines=glove_counts["lines"],
            glove_malformed_lines=glove_counts["malformed"],
            tags_from_word_splits={n: word_splits[n] for n in kept if n not in glove},
        )
    kept = [name for name in names if name not in dropped]
    vectors[RANDOM_KIND] = (kept, random_side_info(kept, dim, seed=seed))
    annotations = _keep_labels(pairs, kept)
    counts["tracks_dropped_without_label"] = len(tags) - annotations["track_id"].nunique()
    return Labels(annotations, vectors, dropped, counts)


# Audio --------------------------------------------------------------------------------------------
def audio_file(audio_dir, relative: str) -> Path:
    """The track's file under `audio_dir` in either naming (41/241.mp3, else 41/241.low.mp3); when
    neither exists, the first, which the store then lists as not found."""
    full = Path(audio_dir) / relative
    low = (
        full.with_name(full.name[: -len(full.suffix)] + LOW_QUALITY_SUFFIX) if full.suffix else full
    )
    return full if full.is_file() or not low.is_file() else low


def check_checksums(
    candidates: pd.DataFrame, audio_dir, digests: dict, progress: bool = True
) -> dict:
    """{track id: why} for the existing files of `candidates` (track_id,path) whose sha256 differs
    from, or is missing in, `digests` ({path relative to audio_dir: sha256}). Missing files are left
    to the store."""
    audio_dir = Path(audio_dir).resolve()
    rejected = {}
    for track, path in tqdm(
        list(zip(candidates["track_id"], candidates["path"], strict=True)),
        desc="sha256",
        unit="file",
        disable=not progress,
        mininterval=1.0,
    ):
        path = Path(path)
        if path.is_file():
            relative = path.relative_to(audio_dir).as_posix()
            expected = digests.get(relative)
            if expected is None:
                rejected[track] = f"{relative} is not listed in --sha256"
            elif sha256_file(path) != expected:
                rejected[track] = f"{relative}: sha256 differs from --sha256 (damaged download?)"
    return rejected


# The whole build ----------------------------------------------------------------------------------
# DatasetError naming the first flag that cannot work or does not go with the others
def _check_options(labels, audio, metadata_only, glove, clip_seconds, dim) -> None:
    rules = [  # (holds, the message when it does not)
        (labels in LABEL_SETS, f"--labels {labels!r}: choose one of {', '.join(LABEL_SETS)}."),
        (
            (audio is None) == bool(metadata_only),
            "give exactly one of --audio (the MTG-Jamendo audio folder) and --metadata-only.",
        ),
        (
            labels != "all" or glove is not None or metadata_only,
            "--labels all needs --glove (e.g. glove.42B.300d.txt) for its side information.",
        ),
        (
            labels != "genre" or glove is None,
            "--glove is used by --labels all only; leave it out for --labels genre.",
        ),
        (
            math.isfinite(clip_seconds) and clip_seconds >= 0,
            f"--clip-seconds {clip_seconds}: must be >= 0 seconds (0 = the whole track).",
        ),
        (
            dim >= 1,
            f"--glove-dim {dim}: must be a positive dimension (300 for glove.42B.300d.txt).",
        ),
        (  # checked before the metadata and the store
            glove is None or Path(glove).is_file(),
            f"--glove {glove}: file does not exist (e.g. glove.42B.300d.txt, unzipped).",
        ),
    ]
    if broken := next((message for holds, message in rules if not holds), None):
        raise DatasetError(broken)


def _check_label_set(out: Path, labels: str) -> None:
    """A folder built for the other label set keeps that set's side-information files: refused."""
    try:
        built = json.loads(ds.summary_path(out).read_text(encoding="utf-8")).get("label_set")
    except (OSError, ValueError, AttributeError):
        return
    if built not in (None, labels):
        raise DatasetError(
            f"--out {out} holds a --labels {built} dataset; build --labels {labels} in another "
            "folder."
        )


def _file_facts(path) -> dict:
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


def _store_audio(out, track_ids, relative, audio, digests, clip_seconds, jobs, dtype, progress):
    """The tracks' audio (checked against `digests` when given) into <out>/mels.h5 -> (stored track
    ids, {track id: absolute path}, the audio facts of summary.json)."""
    candidates = pd.DataFrame(
        {"track_id": track_ids, "path": [str(audio_file(audio.resolve(), p)) for p in relative]},
        dtype=str,
    )
    rejected = (
        {} if digests is None else check_checksums(candidates, audio, digests, progress=progress)
    )
    candidates = candidates[~candidates["track_id"].isin(set(rejected))]
    store = store_tracks(
        out,
        candidates,
        audio,
        jobs=jobs,
        max_seconds=clip_seconds or None,
        dtype=dtype,
        progress=progress,
        excerpt=EXCERPT,
    )
    facts = {
        "candidates": len(candidates),
        "stored": len(store.stored),
        "failed": len(store.failures),
        "failures_csv": failures_path(ds.mels_path(out)).name,
        "candidates_csv": CANDIDATES_FILE,
        "clip_seconds": clip_seconds or None,
        "excerpt": EXCERPT if clip_seconds else "whole track",
        "dtype": dtype,
        "sha256_rejected": rejected,
    }
    return store.stored, dict(zip(candidates["track_id"], candidates["path"], strict=True)), facts


def build_jamendo(
    genre,
    instrument,
    out,
    moodtheme=(),
    audio=None,
    labels: str = "genre",
    glove=None,
    word_splits=WORD_SPLITS,
    clip_seconds: float = DEFAULT_CLIP_SECONDS,
    sha256=None,
    metadata_only: bool = False,
    jobs: int = 1,
    seed: int = 0,
    dim: int = GLOVE_DIM,
    dtype: str = DEFAULT_DTYPE,
    progress: bool = True,
) -> dict:
    """Build the MTG-Jamendo dataset directory `out` (module docstring); returns the summary (also
    summary.json)."""
    _check_options(labels, audio, metadata_only, glove, clip_seconds, dim)
    audio = (
        None
        if metadata_only
        else require_dir(
            audio, "--audio", "the MTG-Jamendo audio folder (41/241.mp3 or 41/241.low.mp3 below it)"
        )
    )
    _check_label_set(Path(out), labels)
    digests = read_sha256_list(sha256) if sha256 is not None and not metadata_only else None
    metadata = read_metadata(
        {"genre": genre, "instrument": instrument, "moodtheme": list(moodtheme)}
    )
    if labels == "genre":
        chosen = genre_labels(metadata, seed=seed)
    else:
        chosen = all_labels(
            metadata, glove, read_word_splits(word_splits), dim=dim, seed=seed, progress=progress
        )
    if chosen.annotations.empty:
        first, why = next(iter(chosen.dropped_labels.items()))
        raise DatasetError(
            f"no label is left for --labels {labels}: all {len(chosen.dropped_labels)} were "
            "dropped "
            f"(e.g. {first}: {why})."
        )
    track_ids = list(dict.fromkeys(chosen.annotations["track_id"]))
    relative = [metadata.tracks[t].path for t in track_ids]
    with output_folder(out, OWNER) as out:
        if metadata_only:
            stored = track_ids
            paths = dict(zip(track_ids, relative, strict=True))
            audio_facts = {"metadata_only": True}
        else:
            stored, paths, audio_facts = _store_audio(
                out,
                track_ids,
                relative,
                audio,
                digests,
                clip_seconds,
                jobs=jobs,
                dtype=dtype,
                progress=progress,
            )
        annotations = chosen.annotations[chosen.annotations["track_id"].isin(set(stored))]
        final = sorted(annotations["label"].unique())
        inputs = {
            **{category: metadata.files[category] for category in CATEGORIES},
            "audio": None if audio is None else str(audio.resolve()),
            "word_splits": _file_facts(word_splits) if labels == "all" else None,
            "sha256_list": None if digests is None else _file_facts(sha256),
        }
        return write_dataset(
            out,
            pd.DataFrame({"track_id": stored, "path": [paths[t] for t in stored]}),
            annotations,
            {  # the rows of the labels that kept a positive
                kind: (final, matrix[pd.Index(names).get_indexer(final)])
                for kind, (names, matrix) in chosen.vectors.items()
            },
            {
                "source": "MTG-Jamendo (Bogdanov et al. 2019): autotagging TSV metadata, CC "
                "BY-NC-SA 4.0",
                "label_set": labels,
                "metadata": {
                    "tracks": len(metadata.tracks),
                    **{f"{c}_tracks": len(t) for c, t in metadata.tags.items()},
                    **metadata.counts,
                },
                "selection": chosen.counts,
                "dropped_labels": chosen.dropped_labels,
                "candidates": len(track_ids),
                "labels_lost_with_audio": sorted(set(chosen.annotations["label"]) - set(final)),
                "tracks_per_label": {
                    k: int(v) for k, v in annotations.groupby("label").size().items()
                },
                "audio": audio_facts,
                **({"glove_path": str(Path(glove).resolve())} if glove is not None else {}),
                "seed": seed,
                "inputs": inputs,
            },
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.jamendo",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Build an MTG-Jamendo dataset directory: --labels genre (Experiment 1: genres "
        "described by "
        "instrument co-occurrence) or --labels all (Experiment 2: every tag described by GloVe). "
        "Idempotent: rerun the same command to resume or check. Downloads: data/README.md.",
    )
    parser.add_argument(
        "--genre",
        nargs="+",
        required=True,
        metavar="TSV",
        help="autotagging_genre.tsv, or the train/validation/test files of one split",
    )
    parser.add_argument(
        "--instrument",
        nargs="+",
        required=True,
        metavar="TSV",
        help="autotagging_instrument.tsv "
        "(or one split's files): the genre side information, and labels with --labels all",
    )
    parser.add_argument(
        "--moodtheme",
        nargs="+",
        default=[],
        metavar="TSV",
        help="autotagging_moodtheme.tsv (or one split's files): labels with --labels all",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--audio",
        help="MTG-Jamendo audio root: raw_30s/audio (41/241.mp3) or audio-low (41/241.low.mp3)",
    )
    source.add_argument(
        "--metadata-only",
        action="store_true",
        help="no audio: write tracks.csv (TSV paths), annotations, side information, summary.json",
    )
    parser.add_argument(
        "--out", default=str(ds.DATA_ROOT / "jamendo"), help="dataset directory to write"
    )
    parser.add_argument(
        "--labels",
        choices=LABEL_SETS,
        default="genre",
        help="genre: Experiment 1; all: Experiment 2",
    )
    parser.add_argument("--glove", help="GloVe text file, e.g. glove.42B.300d.txt (--labels all)")
    parser.add_argument(
        "--glove-dim", type=int, default=GLOVE_DIM, help="dimension of the GloVe vectors"
    )
    parser.add_argument(
        "--word-splits",
        default=str(WORD_SPLITS),
        help="CSV tag,words: the words of compound tag names (--labels all)",
    )
    parser.add_argument(
        "--clip-seconds",
        type=float,
        default=DEFAULT_CLIP_SECONDS,
        help="seconds read from the middle of each track (0 = the whole track)",
    )
    parser.add_argument(
        "--sha256", help="MTG-Jamendo's <dataset>_<type>_sha256_tracks.txt: check each file first"
    )
    add_build_flags(parser)
    return parser


def main(argv=None) -> int:
    def build(a):
        summary = build_jamendo(
            a.genre,
            a.instrument,
            a.out,
            moodtheme=a.moodtheme,
            audio=a.audio,
            labels=a.labels,
            glove=a.glove,
            word_splits=a.word_splits,
            clip_seconds=a.clip_seconds,
            sha256=a.sha256,
            metadata_only=a.metadata_only,
            jobs=a.jobs,
            seed=a.seed,
            dim=a.glove_dim,
            dtype=a.dtype,
            progress=not a.no_progress,
        )
        print(json.dumps(summary, indent=2))
        print(ds.format_summary(summary))
        dropped = summary["dropped_labels"]
        print(
            f"MTG-Jamendo --labels {summary['label_set']}: {len(dropped)} label(s) dropped"
            + (f" ({', '.join(dropped)})" if dropped else "")
            + f"; {summary['audio'].get('failed', 0)} audio "
            "file(s) failed (mels.failures.csv)."
        )

    return run_cli(build, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
