"""What the dataset adapters (preprocess/fma.py, msd.py, jamendo.py) share: the output folder, the
audio store step, the dataset files and summary they end with, the build flags, the CLI runner, the
summary print, and the one GloVe reader (also used by evaluate's case studies)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import dataset_dir as ds
from dataset_dir import DatasetError
from fileio import OutputError, claim_folder, output_lock
from preprocess.frontend import AudioError
from preprocess.melstore import MelStore
from preprocess.store import DEFAULT_DTYPE, DTYPES, build_store, failures_path

# The tracks handed to the store, kept as the store's selection key; tracks.csv = these minus the
# store's failures.
CANDIDATES_FILE = "candidates.csv"


def require_dir(path, flag: str, what: str) -> Path:  # an input folder given by `flag`
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{flag} {path}: directory does not exist; it must be {what}.")
    return path


@contextlib.contextmanager
def output_folder(out, owner: str):
    """Claim the dataset directory for `owner` (a non-empty folder it did not make is refused,
    untouched) and hold its lock while the build writes (a second build of the same folder is
    refused at once)."""
    out = claim_folder(out, owner, hint="(--out)")
    with output_lock(out, f"{owner} build"):
        yield out


@dataclass
class StoreResult:  # what store_tracks made
    stored: list[str]  # track ids in the store, in store order
    failures: pd.DataFrame  # the store's failure list: track_id,path,reason


def store_tracks(
    out,
    candidates: pd.DataFrame,
    audio_dir,
    jobs: int = 1,
    max_seconds=None,
    min_seconds=None,
    dtype: str = DEFAULT_DTYPE,
    progress: bool = True,
    excerpt: str = "start",
) -> StoreResult:
    """Write <out>/candidates.csv (track_id,path) and build <out>/mels.h5 for exactly these tracks
    (a rerun with the same candidates finds the store done, or resumes it after a crash); excerpt:
    frontend.EXCERPTS."""
    out = Path(out)
    ds.write_tracks(out / CANDIDATES_FILE, candidates)
    build_store(
        audio_dir=audio_dir,
        out=ds.mels_path(out),
        tracks_csv=out / CANDIDATES_FILE,
        jobs=jobs,
        max_seconds=max_seconds,
        min_seconds=min_seconds,
        progress=progress,
        dtype=dtype,
        excerpt=excerpt,
    )
    with MelStore(ds.mels_path(out), in_memory=False) as store:
        stored = list(store.track_ids)
    return StoreResult(
        stored=stored,
        failures=ds.read_csv_columns(
            failures_path(ds.mels_path(out)), ("track_id", "path", "reason"), "audio failures"
        ),
    )


def write_dataset(out, tracks: pd.DataFrame, annotations: pd.DataFrame, vectors: dict, extra):
    """The end of a build: tracks.csv (track_id,path), annotations.csv, side_info/<kind>.csv of
    `vectors` ({kind: (labels, (n_labels, dim) vectors)}; a user's own side_info/<other>.csv is left
    alone) and summary.json with `extra` merged in; returns the summary."""
    ds.write_tracks(ds.tracks_path(out), tracks)
    ds.write_annotations(ds.annotations_path(out), annotations)
    for kind, (labels, matrix) in vectors.items():
        ds.write_side_info(ds.side_info_path(out, kind), labels, matrix)
    return ds.summarize(out, extra=extra)


def add_build_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both adapters share: audio jobs, the random baseline's seed, the store dtype,
    progress bars."""
    parser.add_argument(
        "--jobs", type=int, default=1, help="audio decoding processes (0 = one per CPU core)"
    )
    parser.add_argument(
        "--seed", type=_natural, default=0, help="seed of the random side-information baseline"
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=DEFAULT_DTYPE,
        help="storage type of the log-mel store (preprocess.store)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _natural(text: str) -> int:
    if not text.strip().isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def run_cli(build, args) -> int:
    """Run `build(args)` for main(): an input or output problem -> one `error: ...` line on stderr,
    exit status 2."""
    try:
        build(args)
    except (DatasetError, AudioError, OutputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def print_summary(summary: dict, paper: dict, title: str) -> None:
    """The machine-readable summary (JSON), then human-readable lines with the paper's counts next
    to ours."""
    print(json.dumps(summary, indent=2))
    print(ds.format_summary(summary))
    print(
        f"{title}: ours {summary['tracks']} tracks / {summary['labels']} labels; "
        f"paper {paper['tracks']} tracks / {paper['labels']} labels."
    )


def read_glove(
    path, words, dim: int | None = None, counts: dict | None = None, progress: bool = True
) -> tuple[dict[str, np.ndarray], int]:
    """Stream a GloVe text file -> ({word: (dim,) float64 vector} for those of `words` it has, dim).

    A line is a token and `dim` floats separated by spaces; the token is everything before the last
    `dim` fields (some GloVe files have tokens with spaces); dim=None takes it from the first line.
    Malformed lines (too few fields, an empty token, or for a wanted word a value not finite in
    float32) are skipped; a token's first line wins. Only wanted vectors are kept (not 1.9M). A
    `counts` dict gets "lines" and "malformed" of the whole file; without one, reading stops at the
    last wanted word.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"GloVe file {path} does not exist (e.g. glove.42B.300d.txt, unzipped).")
    wanted = {str(word).encode("utf-8"): str(word) for word in words}
    vectors = {}
    lines = 0
    malformed = 0
    with (
        open(path, "rb") as handle,
        tqdm(
            total=path.stat().st_size,
            desc="GloVe",
            unit="B",
            unit_scale=True,
            disable=not progress,
            mininterval=1.0,
        ) as bar,
    ):
        for line in handle:
            lines += 1
            bar.update(len(line))
            line = line.rstrip(b" \t\r\n")
            spaces = line.count(b" ")
            dim = spaces if dim is None else dim
            # Fast path: with exactly dim spaces the token is the first field; only wanted lines are
            # split fully.
            token = line[: line.find(b" ")] if spaces == dim else line.rsplit(b" ", dim)[0]
            if spaces < dim or dim < 1 or not token:
                malformed += 1
                continue
            word = wanted.get(token)
            if word is None or word in vectors:
                continue
            try:
                vector = np.array([float(x) for x in line.rsplit(b" ", dim)[1:]])
                # NaN, inf or beyond float32: malformed
                ds.check_finite(vector, f"{path}, line {lines}")
            # float() of a non-number, or check_finite's DatasetError (a ValueError)
            except ValueError:
                malformed += 1
                continue
            vectors[word] = vector
            if counts is None and len(vectors) == len(wanted):
                break
    if not dim:
        raise DatasetError(
            f"GloVe file {path}: its first line is not a token followed by numbers; is it GloVe "
            "text?"
        )
    if counts is not None:
        counts.update(lines=lines, malformed=malformed)
    return vectors, dim
