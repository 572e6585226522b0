"""The log-mel store: a dataset's tracks through the front end into one HDF5 file (``mels.h5``), and
its reader.

    /track_ids    (n,)           UTF-8, in --tracks order (or the sorted relative paths of a
                                 scanned folder)
    /offsets      (n + 1,)       int64; track i is mel[offsets[i]:offsets[i + 1]] (>= 1 frame)
    /mel          (frames, 128)  standardized log-mel (x - mean) / std, float16 by default
                                 (--dtype float32)
    /track_stats  (n, 3)         float64 [count, mean, M2] of each track's raw log-mel; mean and
                                 std combine them
    /failures     (f, 3)         [track_id, path, reason] of the files not stored (also in
                                 failures_path(store))
    /sources      scalar         JSON {absolute path: [size, mtime_ns, ctime_ns, inode, sha256]}
                                 of the listed files: what a rerun compares with
    /warnings     (w, 3)         [track_id, path, warning]: stored, but decoded shorter than their
                                 header says
    attributes    the front end (frontend.FRONT_END), mean, std, dtype and provenance
                  (build_digest, versions...)

float16 keeps ~5e-4 relative precision near 0 and halves disk and RAM; reads return float32.

Crash-safe and idempotent: each chunk of tracks becomes a part file ``<out>.work/<digest>.h5`` named
by a digest of its tracks (id, listed path, sha256 of the file's bytes) and the options, renamed
into place when complete; a rerun reuses the parts that exist; the merge combines the per-track
statistics in track order and renames the finished store over ``out``. So kill -9 and a rerun give
the bit-identical store, whatever --jobs; a finished store of the same digest is "already done". A
file replaced by another (same size or not) changes the digest and is decoded again. A file's
sha256 is read again only when its size, mtime, ctime or inode differ from those /sources recorded
(every write or replacement sets ctime, which no tool can set back).

The builder writes only its own files: the store (over a store of its own, never over another
file), its failure list ``<name>.failures.csv`` (written after the store; over an existing list only
when it is the one the store at ``out`` holds, or, with the store deleted, one in its format naming
only tracks of this build: a user's file of that name is refused) and the ``<out>.work`` folder,
which it removes; a refused build creates nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from stat import S_ISREG

import h5py
import numpy as np
import soundfile
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from fileio import OutputError, atomic_write, atomic_write_text, output_lock, sha256_file
from preprocess.frontend import (
    AUDIO_EXTENSIONS,
    EXCERPTS,
    FRONT_END,
    N_MELS,
    RESAMPLER,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    AudioError,
    AudioWarning,
    check_seconds,
    file_error,
    load_audio,
    log_mel,
    standardize,
)

DTYPES = ("float16", "float32")
DEFAULT_DTYPE = "float16"
STORE_FORMAT = "zsl-music log-mel store 2"
MAX_CHUNK_TRACKS = 32  # tracks per part file (at most): a part is held in memory while it is made


def failures_path(store_path) -> Path:
    """The store's own failure list, next to it: mels.h5 -> mels.failures.csv."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.failures.csv")


# --- The selection: [(track_id, listed path, absolute path)] --------------------------------------
def select_tracks(audio_dir, tracks_csv=None) -> list[tuple[str, str, str]]:
    """The rows of --tracks (paths relative to audio_dir or absolute), or else every audio file
    under audio_dir (hidden ones skipped), sorted, with id = relative path without extension."""
    audio_dir = Path(audio_dir).expanduser()
    if not audio_dir.is_dir():
        raise AudioError(
            f"--audio-dir {audio_dir}: no such folder; give the folder that holds the audio files."
        )
    if tracks_csv is not None:
        from dataset_dir import read_csv_columns  # pandas: not on every import of this module

        rows = read_csv_columns(Path(tracks_csv).expanduser(), ["track_id", "path"], "--tracks")
        ids, paths = rows["track_id"].tolist(), rows["path"].tolist()
        problem = (
            "lists no tracks"
            if not ids
            else "has an empty track_id or path"
            if "" in ids + paths
            else f"repeats track_id {rows['track_id'][rows['track_id'].duplicated()].iloc[0]!r}"
            if len(set(ids)) < len(ids)
            else None
        )
        if problem:
            raise AudioError(f"--tracks {tracks_csv}: {problem}.")
        return [
            (track_id, path, str((audio_dir / path).absolute()))
            for track_id, path in zip(ids, paths, strict=True)
        ]
    found = sorted(
        (Path(folder) / name).relative_to(audio_dir).as_posix()
        for folder, _, names in os.walk(audio_dir)
        if not any(part.startswith(".") for part in Path(folder).relative_to(audio_dir).parts)
        for name in names
        if not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS)
    )
    if not found:
        raise AudioError(
            f"--audio-dir {audio_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in it or "
            "below."
        )
    seen = {}
    for relative in found:
        if (track_id := relative.rsplit(".", 1)[0]) in seen:
            raise AudioError(
                f"--audio-dir {audio_dir}: {seen[track_id]} and {relative} both give track id "
                f"{track_id!r}; pass --tracks with a track_id,path CSV to choose the files."
            )
        seen[track_id] = relative
    return [
        (track_id, relative, str((audio_dir / relative).absolute()))
        for track_id, relative in seen.items()
    ]


def _fingerprints(tracks, known: dict) -> dict[str, list]:
    """{absolute path: [size, mtime_ns, ctime_ns, inode, sha256]} of the listed regular files. The
    sha256 is taken from `known` (an earlier store's /sources) when the rest is equal, else read."""
    found = {}
    for _, _, absolute in tracks:
        # files that are not there, not regular or not readable fail in the decoder, with a reason
        with contextlib.suppress(OSError):
            stat = os.stat(absolute)
            if not S_ISREG(stat.st_mode):
                continue
            key = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
            old = known.get(absolute, [])
            found[absolute] = key + [old[-1] if old[:-1] == key else sha256_file(absolute)]
    return found


def _digest(tracks, sources: dict, options: dict) -> str:
    """SHA-256 of the front end, the options and every (track_id, listed path, sha256 of the file's
    bytes or None for a file that is not there)."""
    digest = hashlib.sha256(
        json.dumps([STORE_FORMAT, FRONT_END, RESAMPLER, options], sort_keys=True).encode()
    )
    for track_id, listed, absolute in tracks:
        content = sources.get(absolute, [None])[-1]
        digest.update(json.dumps([track_id, listed, content]).encode() + b"\n")
    return digest.hexdigest()


# --- Workers: one chunk of tracks -> one part file ------------------------------------------------
def _track_stats(x: np.ndarray) -> list[float]:
    """[count, mean, sum of squared deviations] of one track's float32 values, in float64."""
    values = x.reshape(-1).astype(np.float64)
    return [float(values.size), float(values.mean()), float(np.sum((values - values.mean()) ** 2))]


def _mean_std(track_stats: np.ndarray) -> tuple[float, float]:
    """Mean and std of all values from (n, 3) rows [count, mean, M2] (the parallel-axis
    combination)."""
    count, means, m2 = track_stats.T
    mean = float(np.dot(count, means) / count.sum())
    return mean, math.sqrt((m2.sum() + np.dot(count, (means - mean) ** 2)) / count.sum())


def _fsync(path: Path) -> None:
    """On disk before the rename: after a power loss, the old file or the whole new one is there."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _build_part(task: tuple) -> tuple[int, float]:
    """Decode one chunk into its part file (raw log-mel in the store dtype); returns (tracks,
    seconds of audio)."""
    part, chunk, options = task
    mels = []
    index = {"track_ids": [], "stats": [], "failures": [], "warnings": []}
    seconds = 0.0
    for track_id, listed, absolute in chunk:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AudioWarning)
                y = load_audio(absolute, options["max_seconds"], options.get("excerpt", "start"))
            if options["min_seconds"] and y.size < options["min_seconds"] * SAMPLE_RATE:
                raise file_error(
                    absolute,
                    f"too short: {y.size / SAMPLE_RATE:.2f} s < --min-seconds "
                    f"{options['min_seconds']:g}",
                )
        except AudioError as exc:
            index["failures"].append([track_id, listed, exc.reason])
            continue
        x = log_mel(y)
        mels.append(x.astype(options["dtype"]))
        index["track_ids"].append(track_id)
        index["stats"].append(_track_stats(x))  # of the exact float32 values
        index["warnings"] += [
            [track_id, listed, str(w.message)] for w in caught if w.category is AudioWarning
        ]
        seconds += y.size / SAMPLE_RATE

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle["mel"] = (
                np.concatenate(mels) if mels else np.zeros((0, N_MELS), options["dtype"])
            )
            # floats exact in JSON
            handle.attrs["index"] = json.dumps({**index, "lengths": [len(x) for x in mels]})
        _fsync(tmp)

    atomic_write(part, write)
    return len(chunk), seconds


def _worker_init(parent_pid: int) -> None:
    """Die with the parent (kill -9 leaves no orphan writers); one BLAS thread (the parallelism is
    --jobs)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)
    threadpool_limits(limits=1)


def _run_parts(tasks: list[tuple], jobs: int):
    """Yield each task's (tracks, seconds): in this process for one job, else from `jobs` worker
    processes."""
    import librosa.feature  # noqa: F401  (imported once here: forked workers inherit it)

    if jobs <= 1 or len(tasks) <= 1:
        with threadpool_limits(limits=1):
            yield from map(_build_part, tasks)
        return
    # else unsafe
    fork = "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules
    executor = ProcessPoolExecutor(
        min(jobs, len(tasks)),
        multiprocessing.get_context("fork" if fork else "spawn"),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    try:
        yield from (
            future.result()
            for future in as_completed([executor.submit(_build_part, t) for t in tasks])
        )
    except BrokenProcessPool as exc:  # a worker died (multiprocessing.Pool would hang instead)
        raise AudioError(
            f"a worker process died ({exc}); finished parts are kept: rerun the same command "
            "(with --jobs 1 to see the error of the file that makes it fail)."
        ) from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# --- Merging the parts into the store -------------------------------------------------------------
def _failures_text(failures) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([("track_id", "path", "reason"), *failures])
    return text.getvalue()


def _rows(dataset) -> list[tuple]:
    return [tuple(row) for row in dataset.asstr()[...].tolist()]


def _merge(out: Path, parts: list[Path], info: dict, progress: bool) -> dict:
    """Combine the statistics, then write the standardized store (temporary name, fsync, rename over
    `out`)."""
    index = {"track_ids": [], "lengths": [], "stats": [], "failures": [], "warnings": []}
    for part in parts:
        with h5py.File(part, "r") as handle:
            for key, values in json.loads(handle.attrs["index"]).items():
                index[key] += values
    ids = index["track_ids"]
    failures = index["failures"]
    notes = [tuple(row) for row in index["warnings"]]
    if not ids:  # no store, so no failure list: the first reasons are in the message
        examples = "; ".join(f"{listed}: {reason}" for _, listed, reason in failures[:3])
        raise AudioError(
            f"no track could be stored in {out}: all {len(failures)} failed ({examples}"
            f"{'; ...' if len(failures) > 3 else ''})."
        )
    stats = np.asarray(index["stats"], dtype=np.float64)
    mean, std = _mean_std(stats)
    if not (std > 0 and math.isfinite(std) and math.isfinite(mean)):
        raise AudioError(
            f"{out}: the log-mel values have std {std} (mean {mean}); cannot standardize (are all "
            "files silent?)."
        )
    offsets = np.concatenate([[0], np.cumsum(index["lengths"])]).astype(np.int64)
    dtype = info["options"]["dtype"]
    versions = {
        "python": sys.version.split()[0],
        "libsndfile": soundfile.__libsndfile_version__,
        **{
            name: metadata.version(name)
            for name in ("numpy", "scipy", "soundfile", "soxr", "librosa", "h5py")
        },
    }

    def write(tmp: Path) -> None:
        strings = h5py.string_dtype()
        with (
            h5py.File(tmp, "w") as store,
            tqdm(
                total=int(offsets[-1]),
                desc="standardize",
                unit="frame",
                unit_scale=True,
                disable=not progress,
            ) as bar,
        ):
            store.create_dataset("track_ids", data=np.array(ids, dtype=object), dtype=strings)
            store.create_dataset(
                "failures", data=np.array(failures, dtype=object).reshape(-1, 3), dtype=strings
            )
            store.create_dataset(
                "warnings", data=np.array(notes, dtype=object).reshape(-1, 3), dtype=strings
            )
            store["sources"] = json.dumps(info["sources"], sort_keys=True)
            store["offsets"], store["track_stats"] = offsets, stats
            # contiguous
            mel = store.create_dataset("mel", shape=(offsets[-1], N_MELS), dtype=dtype)
            position = 0
            for part in parts:
                # one part at a time: at most MAX_CHUNK_TRACKS tracks
                with h5py.File(part, "r") as handle:
                    block = standardize(handle["mel"][...], mean, std).astype(dtype)
                mel[position : position + len(block)] = block
                position += len(block)
                bar.update(len(block))
            store.attrs.update(
                {
                    **FRONT_END,
                    "mean": mean,
                    "std": std,
                    "resampler": RESAMPLER,
                    "downmix": "mean of channels",
                    "standardization": "(x - mean) / std over all stored values",
                    "segment_frames": SEGMENT_FRAMES,
                    "dtype": dtype,
                    "format": STORE_FORMAT,
                    "created": datetime.now(UTC).isoformat("T", "seconds"),
                    "source_dir": info["source_dir"],
                    "tracks_csv": info["tracks_csv"],
                    "build_digest": info["digest"],
                    "build_params": json.dumps(info["options"], sort_keys=True),
                    "n_tracks": len(ids),
                    "n_failed": len(failures),
                    "total_frames": offsets[-1],
                    "versions": json.dumps(versions),
                }
            )
        _fsync(tmp)
        # the old list goes before the new store comes: a list beside a store is always its own
        failures_path(out).unlink(missing_ok=True)

    atomic_write(out, write)
    atomic_write_text(failures_path(out), _failures_text(failures))
    return {
        "stored": len(ids),
        "failed": len(failures),
        "warnings": notes,
        "frames": int(offsets[-1]),
        "mean": mean,
        "std": std,
    }


# --- build_store ----------------------------------------------------------------------------------
def _check_options(jobs, max_seconds, min_seconds, dtype, chunk_tracks, excerpt) -> int:
    """AudioError naming the flag for a bad option; returns the number of worker processes."""
    check_seconds("--max-seconds", max_seconds)
    check_seconds("--min-seconds", min_seconds, allow_zero=True)
    rules = [  # (holds, the message when it does not)
        (
            chunk_tracks is None or chunk_tracks >= 1,
            f"--chunk-tracks {chunk_tracks}: must be >= 1.",
        ),
        (dtype in DTYPES, f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}."),
        (
            None in (max_seconds, min_seconds) or min_seconds <= max_seconds,
            f"--min-seconds {min_seconds} > --max-seconds {max_seconds}: every file would be "
            "rejected.",
        ),
        (jobs is None or jobs >= 0, f"--jobs {jobs}: must be >= 1 (0 = one per CPU core)."),
        (excerpt in EXCERPTS, f"excerpt {excerpt!r}: choose one of {', '.join(EXCERPTS)}."),
    ]
    if broken := next((message for holds, message in rules if not holds), None):
        raise AudioError(broken)
    return (
        int(jobs)
        if jobs
        else len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )


def _previous(out: Path) -> dict:
    """What our store at `out` records: its failure rows, and for stores with /sources the digest,
    the fingerprints and the summary; {} when there is none. OutputError for a file at `out` that is
    not one of our stores: it is the user's, never replaced."""
    if not out.exists():
        return {}
    with contextlib.suppress(OSError), h5py.File(out, "r") as store:
        attrs = store.attrs
        if str(attrs.get("format", "")).startswith("zsl-music log-mel store"):
            found = {"failures": _rows(store["failures"]) if "failures" in store else []}
            if "sources" in store:  # else built before content digests: rebuilt
                found["digest"] = attrs["build_digest"]
                found["sources"] = json.loads(store["sources"][()])
                found["summary"] = {
                    "stored": int(attrs["n_tracks"]),
                    "failed": int(attrs["n_failed"]),
                    "mean": float(attrs["mean"]),
                    "std": float(attrs["std"]),
                    "frames": int(attrs["total_frames"]),
                    "warnings": _rows(store["warnings"]),
                }
            return found
    raise OutputError(
        f"--out {out}: exists and is not a log-mel store made by this project: refusing to replace "
        "it; choose another path."
    )


def _written_here(path: Path, previous: dict, tracks) -> bool:
    """Whether the failure list at `path` is one this builder wrote: the list of our store at --out,
    or, with no store there (deleted to be rebuilt), a list in its format naming tracks of this
    build only."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if previous:
        return text == _failures_text(previous["failures"])
    selection = {(track_id, listed) for track_id, listed, _ in tracks}
    with contextlib.suppress(csv.Error):
        rows = list(csv.reader(io.StringIO(text)))
        return rows[:1] == [["track_id", "path", "reason"]] and all(
            len(row) == 3 and tuple(row[:2]) in selection for row in rows[1:]
        )
    return False


def _check_failure_list(out: Path, previous: dict, tracks) -> None:
    """OutputError when <name>.failures.csv exists and is not one this builder wrote (a user's file,
    or one edited since): a build would replace it, so it is refused, untouched."""
    path = failures_path(out)
    if path.exists() and not (path.is_file() and _written_here(path, previous, tracks)):
        raise OutputError(
            f"{path}: exists and is not a failure list this builder wrote for {out.name} (another "
            "file, or edited since): refusing to replace it; move it away or choose another --out."
        )


def _remove_work_dir(work: Path, out: Path) -> None:
    """Delete our files only (parts, temporary files of killed runs, the lock), then the folder if
    empty."""
    parts = [
        path
        for path in work.iterdir()
        if re.fullmatch(r"\.?[0-9a-f]{64}(\.\w{8}\.tmp)?\.h5", path.name)
    ]
    # atomic_write's temp names
    for path in [
        *parts,
        *out.parent.glob(f".{out.stem}.????????.tmp{out.suffix}"),
        *out.parent.glob(f".{failures_path(out).stem}.????????.tmp.csv"),
        work / ".lock",
    ]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        work.rmdir()  # kept when someone put other files there


def build_store(
    audio_dir,
    out,
    tracks_csv=None,
    jobs=1,
    max_seconds=None,
    min_seconds=None,
    progress=True,
    dtype=DEFAULT_DTYPE,
    chunk_tracks=None,
    excerpt="start",
) -> dict:
    """Build (or finish, or confirm) the standardized log-mel store `out` and its failure list
    beside it.

    Options as the command line's (chunk_tracks: a rerun reuses parts only with the same value;
    excerpt: where a max_seconds excerpt is taken, frontend.EXCERPTS). Returns {"stored", "failed",
    "warnings" [(track_id, path, warning)], "skipped" (done by an earlier run), "computed", "total",
    "frames", "mean", "std", "dtype", "already_done", "audio_seconds", "seconds", "out",
    "failures_csv"}.
    """
    started = time.perf_counter()
    jobs = _check_options(jobs, max_seconds, min_seconds, dtype, chunk_tracks, excerpt)
    tracks = select_tracks(audio_dir, tracks_csv)
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise AudioError(f"--out {out}: is a folder; give the path of the .h5 file to write.")
    options = {"max_seconds": max_seconds, "min_seconds": min_seconds, "dtype": dtype}
    # only then in the digest: stores built before this option stay "already done"
    if excerpt != "start":
        options["excerpt"] = excerpt
    previous = _previous(out)  # refusals come before anything is created
    sources = _fingerprints(tracks, previous.get("sources", {}))
    digest = _digest(tracks, sources, options)
    if previous.get("digest") != digest:
        _check_failure_list(out, previous, tracks)
    work = out.with_name(out.name + ".work")
    summary = {
        "out": str(out),
        "failures_csv": str(failures_path(out)),
        "total": len(tracks),
        "dtype": dtype,
        "computed": 0,
        "skipped": len(tracks),
        "audio_seconds": 0.0,
        "already_done": True,
    }
    with output_lock(work, "build of this store"):
        if previous.get("digest") == digest:
            summary.update(previous["summary"])
            if not failures_path(out).exists():  # deleted since: restored from the store
                atomic_write_text(failures_path(out), _failures_text(previous["failures"]))
        else:
            if progress and out.is_file():
                print(
                    f"{out} was built from other files, another selection or other options: "
                    "rebuilding it (the old file stays in place until the new one is complete)."
                )
            size = chunk_tracks or max(1, min(MAX_CHUNK_TRACKS, math.ceil(len(tracks) / 64)))
            chunks = [tracks[i : i + size] for i in range(0, len(tracks), size)]
            parts = [work / f"{_digest(chunk, sources, options)}.h5" for chunk in chunks]
            tasks = [
                (part, chunk, options)
                for part, chunk in zip(parts, chunks, strict=True)
                if not part.is_file()
            ]
            summary.update(computed=sum(len(chunk) for _, chunk, _ in tasks), already_done=False)
            summary["skipped"] -= summary["computed"]
            with tqdm(
                total=len(tracks),
                initial=summary["skipped"],
                desc="log-mel",
                unit="track",
                disable=not progress,
            ) as bar:
                for n_tracks, seconds in _run_parts(tasks, jobs):
                    summary["audio_seconds"] += seconds
                    bar.update(n_tracks)
            info = {
                "options": options,
                "digest": digest,
                "sources": sources,
                "source_dir": str(Path(audio_dir).absolute()),
                "tracks_csv": "" if tracks_csv is None else str(Path(tracks_csv).absolute()),
            }
            try:
                summary.update(_merge(out, parts, info, progress))
            except AudioError:
                # nothing usable: no parts are kept for a store that cannot exist
                _remove_work_dir(work, out)
                raise
        _remove_work_dir(work, out)
    summary["seconds"] = time.perf_counter() - started
    if progress:
        counts = (
            f"{summary['stored']} stored, {summary['failed']} failed (see "
            f"{summary['failures_csv']})"
        )
        print(
            f"{out}: already done ({counts}); nothing to do."
            if summary["already_done"]
            else f"{out}: {counts}, {summary['skipped']} already done by an earlier run; "
            f"{summary['frames']} frames, "
            f"mean {summary['mean']:.4f}, std {summary['std']:.4f}, {summary['audio_seconds']:.0f} "
            "s of audio in "
            f"{summary['seconds']:.1f} s.",
            *(f"warning: {t} ({p}): {note}" for t, p, note in summary["warnings"]),
            sep="\n",
        )
    return summary


# --- Command line ---------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.store",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Decode audio files into one standardized log-mel HDF5 store and its failure "
        "list "
        "<store>.failures.csv. Idempotent and crash-safe: rerun the same command to finish the "
        "store.",
    )
    add = parser.add_argument
    add("--audio-dir", required=True, help="folder of the audio files (.mp3 .ogg .flac .wav)")
    add(
        "--out", required=True, help="store to write (e.g. data/fma/mels.h5); its folder is created"
    )
    add(
        "--tracks",
        help="CSV track_id,path (paths relative to --audio-dir or absolute); default: every audio "
        "file "
        "under --audio-dir, id = relative path without extension",
    )
    add("--jobs", type=int, default=1, help="worker processes (0 = one per CPU core)")
    add("--max-seconds", type=float, help="decode only the first S seconds of each file (MSD: 30)")
    add(
        "--min-seconds",
        type=float,
        help="files shorter than S seconds (after --max-seconds) fail (MSD: 29)",
    )
    add(
        "--dtype",
        choices=DTYPES,
        default=DEFAULT_DTYPE,
        help="storage type (float16 halves disk and RAM)",
    )
    add(
        "--chunk-tracks",
        type=int,
        help=f"tracks per crash-safe part file (default: automatic, <= {MAX_CHUNK_TRACKS})",
    )
    add("--no-progress", action="store_true", help="no progress bars and no summary line")
    add("--json", action="store_true", help="also print the summary as one JSON line")
    args = parser.parse_args(argv)
    from dataset_dir import DatasetError  # pandas: only here

    try:
        summary = build_store(
            args.audio_dir,
            args.out,
            tracks_csv=args.tracks,
            jobs=args.jobs,
            max_seconds=args.max_seconds,
            min_seconds=args.min_seconds,
            progress=not args.no_progress,
            dtype=args.dtype,
            chunk_tracks=args.chunk_tracks,
        )
    except (AudioError, DatasetError, OutputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
