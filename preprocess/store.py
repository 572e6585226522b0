"""Audio front end: decode -> log-mel -> one standardized HDF5 store per dataset, and its reader.

The front end (paper Section 3 and the original implementation, ../shared/REFERENCE.md "Audio front end"):

    y   = mono (mean of channels), resampled to 22,050 Hz with soxr "HQ" (what librosa.load does by default)
    S   = |STFT(y)|              n_fft 1024, Hann window of 1024, hop 512, centered (zero padding of n_fft // 2)
    mel = S @ Slaney-mel(128)    librosa.filters.mel(sr=22050, n_fft=1024, n_mels=128): fmin 0, fmax sr/2
    x   = log10(1 + 10 * mel)    (frames, 128) float32

It equals, up to float32 rounding, ``librosa.load(path, sr=22050, mono=True)`` followed by
``np.log10(1 + 10 * librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=512, power=1.0)).T``:
we decode with the same soundfile call librosa makes, downmix and resample the same way, and build the mel basis
with librosa once per process; only the STFT is our own vectorized code (float64 FFT like librosa's).

Store layout (``mels.h5``; training, evaluation and data/README.md rely on it)
-------------------------------------------------------------------------------
    /track_ids   (n,)            UTF-8 strings, in --tracks order (or sorted relative paths when scanning)
    /offsets     (n + 1,)        int64; track i is mel[offsets[i]:offsets[i + 1]] (every track has >= 1 frame)
    /mel         (frames, 128)   standardized log-mel (x - mean) / std, float16 by default (--dtype float32)
    /failures    (f, 3)          UTF-8 [track_id, path, reason]: the same rows as failures.csv
    root attributes
        sample_rate 22050, n_fft 1024, hop_length 512, n_mels 128    (checked by MelStore)
        mean, std       global scalars over every stored log-mel value (float64, streamed: Chan et al.'s
                        pairwise update over per-track statistics, in track order, so the values do not
                        depend on --jobs, on the chunking or on interruptions)
        win_length, window, center, pad_mode, power, fmin, fmax, mel_norm, mel_htk, log_formula, resampler,
        downmix, standardization, segment_frames      (front-end facts; checked by MelStore when present)
        dtype, format, created, source_dir, tracks_csv, build_params (JSON), build_digest, n_tracks,
        n_failed, total_frames, versions (JSON)      (provenance)
    failures.csv  next to the store: track_id,path,reason for every selected file that is not in the store
                  (empty, truncated or non-audio files, undecodable MP3s, files shorter than --min-seconds).
                  One per folder: give each store its own folder.

Why float16 by default: the standardized values lie within a few units of 0, where float16 keeps a relative
precision of 2**-11 (about 5e-4 of a value, i.e. at most ~0.002 std), far below anything a CNN reacts to, while
halving disk and memory: MSD (406k x 30 s clips) is ~130 GB in float16 instead of ~270 GB, and FMA (~19k clips)
~6.5 GB, which fits in RAM. The reader always returns float32. Use --dtype float32 for exact values.

Building: crash safety, idempotency, memory
-------------------------------------------
The selection is cut into fixed chunks of tracks. Worker processes (--jobs, multiprocessing; no TensorFlow)
turn one chunk into one part file ``<out>.work/part-NNNNNN.h5`` (raw, unstandardized log-mel in the store's dtype,
per-track statistics, the chunk's failures), written to a temporary name and renamed when complete, so a part
file either is complete or does not exist. When every part exists, pass 1 combines the per-track statistics
into mean/std (no audio is held in memory), pass 2 streams the parts block by block into ``<out>.tmp`` as
standardized values, failures.csv is written (atomically), ``<out>.tmp`` is fsynced and renamed to ``<out>``,
and the work folder is removed. The output path therefore only ever holds a complete store.

Killing the process at any moment (kill -9) and rerunning the same command reuses the finished parts and
yields the same store as an uninterrupted run (same ids, offsets and values: nothing depends on which run
computed which part). ``<out>.work/manifest.json`` records a digest of the selection (track ids, listed paths,
file sizes) and the options; a rerun with another selection or options discards the old parts. Rerunning a
command whose store is finished (its ``build_digest`` attribute matches) does no work and reports
"already done"; a store built from another selection is rebuilt and replaced only when the new one is complete.
Worker processes die with their parent (Linux), and a lock file refuses a second simultaneous build of the
same output. Against power loss: the final store is fsynced; a part file that cannot be read is recomputed.

Command line (``--help`` for all flags and defaults)::

    python -m preprocess.store --audio-dir DIR --out FILE.h5 [--tracks tracks.csv] [--jobs N]
                               [--max-seconds S] [--min-seconds S] [--dtype float16|float32]

Without --tracks every .mp3/.ogg/.flac/.wav under DIR (recursively, hidden files and folders excluded) is a
track whose id is its path relative to DIR without extension (``sub/song.mp3`` -> ``sub/song``). With --tracks,
a CSV ``track_id,path`` with paths relative to DIR (absolute paths work too).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from preprocess.frontend import (AUDIO_EXTENSIONS, HOP_LENGTH, LOG_FORMULA, N_FFT, N_MELS, OPTIONAL_FRONT_END,
                                 REQUIRED_FRONT_END, RESAMPLER, SAMPLE_RATE, SEGMENT_FRAMES, AudioError, _file_error,
                                 _hann_window, _mel_basis_t, _standardize, load_audio, log_mel)

DTYPES = ("float16", "float32")
DEFAULT_DTYPE = "float16"
MAX_CHUNK_TRACKS = 32  # tracks per part file (at most); smaller for small selections so that --jobs can share
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3  # MelStore(in_memory=None) loads `mel` into RAM below this size
FAILURES_FILE = "failures.csv"
STORE_FORMAT = "zsl-music log-mel store 1"

# Attributes every store must have, with the value this code expects (MelStore refuses anything else).
_MERGE_BLOCK_FRAMES = 1 << 16  # frames per read/write block when merging parts (32 MiB as float32)

# --------------------------------------------------------------------------------------------------------------
# Selecting the tracks
# --------------------------------------------------------------------------------------------------------------
def _is_audio_name(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def scan_audio_dir(audio_dir) -> list[tuple[str, str, str]]:
    """Every audio file under `audio_dir` -> [(track_id, relative path, absolute path)], sorted by relative path.

    The track id is the relative POSIX path without its extension. Hidden files and folders (".name") are
    skipped. Two files with the same id (song.mp3 and song.ogg) are an error: use --tracks to choose.
    """
    root = Path(audio_dir)
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and _is_audio_name(name):
                absolute = Path(folder) / name
                found.append(absolute.relative_to(root).as_posix())
    found.sort()
    tracks, seen = [], {}
    for relative in found:
        track_id = relative.rsplit(".", 1)[0]
        if track_id in seen:
            raise AudioError(
                f"--audio-dir {root}: {seen[track_id]} and {relative} both give track id {track_id!r}; "
                "pass --tracks with a track_id,path CSV to choose the files."
            )
        seen[track_id] = relative
        tracks.append((track_id, relative, str((root / relative).absolute())))
    return tracks


def read_track_list(tracks_csv, audio_dir) -> list[tuple[str, str, str]]:
    """CSV `track_id,path` (extra columns ignored; paths relative to `audio_dir` or absolute), in file order."""
    path = Path(tracks_csv)
    if not path.is_file():
        raise AudioError(f"--tracks {path}: no such file; give a CSV with header track_id,path.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AudioError(f"--tracks {path}: not a readable UTF-8 CSV ({exc}).") from None
    if not rows:
        raise AudioError(f"--tracks {path}: empty file; expected a header track_id,path.")
    header = [cell.strip() for cell in rows[0]]
    if "track_id" not in header or "path" not in header:
        raise AudioError(f"--tracks {path}: header must contain track_id and path (found {','.join(header)}).")
    id_col, path_col = header.index("track_id"), header.index("path")
    tracks, seen = [], set()
    for row_number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= max(id_col, path_col) or not row[id_col] or not row[path_col]:
            raise AudioError(f"--tracks {path}: row {row_number} lacks a track_id or a path.")
        track_id, listed = row[id_col], row[path_col]
        if track_id in seen:
            raise AudioError(f"--tracks {path}: track_id {track_id!r} occurs more than once (row {row_number}).")
        seen.add(track_id)
        absolute = Path(listed) if Path(listed).is_absolute() else Path(audio_dir) / listed
        tracks.append((track_id, listed, str(absolute.absolute())))
    return tracks


def select_tracks(audio_dir, tracks_csv=None) -> list[tuple[str, str, str]]:
    """The build's selection [(track_id, listed path, absolute path)]; clear AudioError when there is none."""
    audio_dir = Path(audio_dir).expanduser()
    if not audio_dir.is_dir():
        raise AudioError(f"--audio-dir {audio_dir}: no such folder; give the folder that holds the audio files.")
    if tracks_csv is not None:
        tracks = read_track_list(Path(tracks_csv).expanduser(), audio_dir)
        if not tracks:
            raise AudioError(f"--tracks {tracks_csv}: lists no tracks.")
    else:
        tracks = scan_audio_dir(audio_dir)
        if not tracks:
            raise AudioError(
                f"--audio-dir {audio_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in it or below."
            )
    return tracks


def _build_digest(tracks, params: dict) -> str:
    """SHA-256 over the options, the front end and every (track_id, listed path, file size) of the selection."""
    digest = hashlib.sha256()
    head = {"format": STORE_FORMAT, "front_end": {**REQUIRED_FRONT_END, **OPTIONAL_FRONT_END},
            "resampler": RESAMPLER, **params}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for track_id, listed, absolute in tracks:
        try:
            size = os.stat(absolute).st_size
        except OSError:
            size = -1
        digest.update(json.dumps([track_id, listed, size]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Workers: one chunk of tracks -> one part file
# --------------------------------------------------------------------------------------------------------------
def _chunk_tracks_for(n_tracks: int, jobs: int) -> int:
    """Tracks per part: at most MAX_CHUNK_TRACKS, and small enough to give each job ~16 parts, so that the last
    parts to finish leave the other workers idle only briefly (a part costs ~1 ms, a track ~35 ms)."""
    return max(1, min(MAX_CHUNK_TRACKS, math.ceil(n_tracks / (16 * max(jobs, 1)))))


def _part_path(work: Path, chunk: int) -> Path:
    return work / f"part-{chunk:06d}.h5"


def _track_stats(x: np.ndarray) -> tuple[float, float, float]:
    """(count, mean, sum of squared deviations) of one track's values, in float64."""
    values = x.reshape(-1)
    mean = float(values.mean(dtype=np.float64))
    deviation = values.astype(np.float64) - mean
    return float(values.size), mean, float(np.dot(deviation, deviation))


def _combine_stats(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """Chan, Golub & LeVeque's pairwise update of (count, mean, M2)."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    if n == 0:
        return 0.0, 0.0, 0.0
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def _string_dataset(group, name: str, values, columns: int | None = None) -> None:
    """UTF-8 string dataset: (n,) from a list of strings, or (n, columns) from a list of rows."""
    import h5py

    array = np.empty((len(values), columns) if columns else (len(values),), dtype=object)
    if len(values):
        array[...] = [list(row) for row in values] if columns else list(values)
    group.create_dataset(name, data=array, dtype=h5py.string_dtype("utf-8"))


def _read_rows(dataset) -> list[tuple[str, ...]]:
    return [tuple(row) for row in dataset.asstr()[...].tolist()]


def _process_chunk(task: dict) -> dict:
    """Decode and transform one chunk of tracks into its part file (temporary name, then rename).

    Part layout: track_ids (m,), offsets (m + 1,), mel (frames, 128) raw log-mel in the store dtype,
    track_stats (m, 3) float64 [count, mean, M2] of the exact float32 values, failures (f, 3) UTF-8
    [track_id, path, reason]; attrs chunk, digest, n_listed, audio_seconds, complete.
    """
    import h5py

    work, chunk = Path(task["work"]), task["chunk"]
    final = _part_path(work, chunk)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    min_samples = 0 if task["min_seconds"] is None else task["min_seconds"] * SAMPLE_RATE
    ids, offsets, stats, failures, audio_seconds = [], [0], [], [], 0.0
    with h5py.File(tmp, "w") as part:
        mel = part.create_dataset("mel", shape=(0, N_MELS), maxshape=(None, N_MELS), dtype=task["dtype"],
                                  chunks=(2048, N_MELS))
        for track_id, listed, absolute in task["tracks"]:
            try:
                y = load_audio(absolute, task["max_seconds"])
                if y.size < min_samples:
                    raise _file_error(absolute, f"too short: {y.size / SAMPLE_RATE:.2f} s < --min-seconds "
                                                f"{task['min_seconds']:g}")
                x = log_mel(y)
            except AudioError as exc:
                failures.append((track_id, listed, exc.reason))
                continue
            mel.resize(offsets[-1] + len(x), axis=0)
            mel[offsets[-1]:] = x.astype(task["dtype"])
            ids.append(track_id)
            offsets.append(offsets[-1] + len(x))
            stats.append(_track_stats(x))
            audio_seconds += y.size / SAMPLE_RATE
        _string_dataset(part, "track_ids", ids)
        part.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64))
        part.create_dataset("track_stats", data=np.asarray(stats, dtype=np.float64).reshape(-1, 3))
        _string_dataset(part, "failures", failures, columns=3)
        part.attrs.update({"chunk": chunk, "digest": task["digest"], "n_listed": len(task["tracks"]),
                           "audio_seconds": audio_seconds, "complete": True})
    os.replace(tmp, final)
    return {"chunk": chunk, "tracks": len(task["tracks"]), "stored": len(ids), "failed": len(failures),
            "audio_seconds": audio_seconds}


def _limit_threads():
    """Keep BLAS/OpenMP single-threaded inside workers (the parallelism is --jobs processes)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


_WORKER_THREAD_LIMIT = None


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: die with the parent (so kill -9 leaves no orphan writers), one BLAS thread."""
    global _WORKER_THREAD_LIMIT
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
    _WORKER_THREAD_LIMIT = _limit_threads()
    _WORKER_THREAD_LIMIT.__enter__()


def _pool_context():
    """fork when it is safe (fast start; workers inherit the mel basis), spawn when TensorFlow is loaded."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


# --------------------------------------------------------------------------------------------------------------
# The work folder: manifest, parts, lock
# --------------------------------------------------------------------------------------------------------------
def _work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".work")


def _is_ours(name: str) -> bool:
    return (name in ("manifest.json", "lock") or name.startswith(".manifest.json.tmp-")
            or (name.startswith("part-") and ".h5" in name))


def _remove_parts(work: Path, keep_lock: bool = True) -> None:
    """Delete our files in the work folder (never anything else)."""
    if not work.is_dir():
        return
    for entry in work.iterdir():
        if _is_ours(entry.name) and not (keep_lock and entry.name == "lock"):
            entry.unlink(missing_ok=True)


def _remove_work_dir(work: Path) -> None:
    _remove_parts(work, keep_lock=False)
    with contextlib.suppress(OSError):
        work.rmdir()  # left in place when someone put other files there


@contextlib.contextmanager
def _build_lock(work: Path):
    """Exclusive lock on <out>.work/lock for the duration of a build (released by the OS if the process dies)."""
    work.mkdir(parents=True, exist_ok=True)
    handle = open(work / "lock", "a+")
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass  # no flock on this platform: single-builder use assumed
        except OSError:
            raise AudioError(f"{work}: another build of this store is running (lock held); wait for it.") from None
        yield
    finally:
        handle.close()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _prepare_manifest(work: Path, digest: str, chunk_tracks: int) -> int:
    """Reuse the work folder when its manifest matches this build (returns its chunk size); otherwise reset it."""
    manifest = work / "manifest.json"
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text())
            if content.get("digest") == digest and int(content.get("chunk_tracks", 0)) >= 1:
                return int(content["chunk_tracks"])
        except (OSError, ValueError):
            pass
    _remove_parts(work)  # parts of another selection / other options, or an unreadable manifest
    _atomic_write_bytes(manifest, json.dumps({"digest": digest, "chunk_tracks": chunk_tracks}).encode())
    return chunk_tracks


def _part_is_done(path: Path, chunk: int, digest: str, n_listed: int) -> bool:
    """A finished, readable part of this build; anything else (stale temp, unreadable file) is removed."""
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as part:
            attrs = part.attrs
            ok = (bool(attrs.get("complete", False)) and int(attrs["chunk"]) == chunk
                  and str(attrs["digest"]) == digest and int(attrs["n_listed"]) == n_listed)
    except (OSError, KeyError, ValueError):
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
    return ok


# --------------------------------------------------------------------------------------------------------------
# Merging the parts into the store
# --------------------------------------------------------------------------------------------------------------
def _read_index(parts: list[Path]) -> tuple[list, list, list, tuple]:
    """Pass 1: ids, per-part frame counts, failures and the global (count, mean, M2), without reading audio."""
    import h5py

    ids, lengths, failures, total = [], [], [], (0.0, 0.0, 0.0)
    for path in parts:
        with h5py.File(path, "r") as part:
            ids.extend(part["track_ids"].asstr()[...].tolist())
            offsets = part["offsets"][...]
            lengths.append(np.diff(offsets))
            for stats in part["track_stats"][...]:
                total = _combine_stats(total, tuple(float(v) for v in stats))
            failures.extend(_read_rows(part["failures"]))
    return ids, lengths, failures, total


def _write_failures(path: Path, failures) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["track_id", "path", "reason"])
    writer.writerows(failures)
    _atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def _fsync_path(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _versions() -> dict:
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for package in ("numpy", "scipy", "soundfile", "soxr", "librosa", "h5py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    with contextlib.suppress(ImportError, AttributeError):
        import soundfile

        found["libsndfile"] = soundfile.__libsndfile_version__
    return found


def _merge(out: Path, parts: list[Path], info: dict, progress: bool) -> dict:
    """Pass 1 (statistics) and pass 2 (standardized, block-wise copy) -> <out>.tmp -> fsync -> rename to out."""
    import h5py
    from tqdm import tqdm

    ids, lengths, failures, (count, mean, m2) = _read_index(parts)
    failures_csv = out.parent / FAILURES_FILE
    for stale in out.parent.glob(f".{FAILURES_FILE}.tmp-*"):  # left by a run killed while writing it
        stale.unlink(missing_ok=True)
    if not ids:
        _write_failures(failures_csv, failures)
        raise AudioError(f"no track could be stored in {out}: all {len(failures)} failed (see {failures_csv}).")
    std = math.sqrt(m2 / count)
    if not (std > 0 and math.isfinite(std) and math.isfinite(mean)):
        raise AudioError(f"{out}: the log-mel values have std {std} (mean {mean}); cannot standardize "
                         "(are all files silent?).")
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    total_frames = int(offsets[-1])
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with h5py.File(tmp, "w") as store:
        _string_dataset(store, "track_ids", ids)
        store.create_dataset("offsets", data=offsets)
        _string_dataset(store, "failures", failures, columns=3)
        mel = store.create_dataset("mel", shape=(total_frames, N_MELS), dtype=info["dtype"])  # contiguous
        position = 0
        with tqdm(total=total_frames, desc="standardize", unit="frame", unit_scale=True,
                  disable=not progress) as bar:
            for path in parts:
                with h5py.File(path, "r") as part:
                    raw = part["mel"]
                    for start in range(0, raw.shape[0], _MERGE_BLOCK_FRAMES):
                        block = _standardize(raw[start:start + _MERGE_BLOCK_FRAMES], mean, std)
                        mel[position:position + len(block)] = block.astype(info["dtype"])
                        position += len(block)
                        bar.update(len(block))
        store.attrs.update(REQUIRED_FRONT_END)
        store.attrs.update(OPTIONAL_FRONT_END)
        store.attrs.update({
            "mean": mean,
            "std": std,
            "resampler": RESAMPLER,
            "downmix": "mean of channels",
            "standardization": "(x - mean) / std over all stored values",
            "segment_frames": SEGMENT_FRAMES,
            "dtype": info["dtype"],
            "format": STORE_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_dir": info["source_dir"],
            "tracks_csv": info["tracks_csv"],
            "build_params": json.dumps(info["params"], sort_keys=True),
            "build_digest": info["digest"],
            "n_tracks": len(ids),
            "n_failed": len(failures),
            "total_frames": total_frames,
            "versions": json.dumps(_versions(), sort_keys=True),
        })
    _fsync_path(tmp)
    _write_failures(failures_csv, failures)  # before the rename: a finished store always has its failures.csv
    os.replace(tmp, out)
    _fsync_path(out.parent)
    return {"stored": len(ids), "failed": len(failures), "frames": total_frames, "mean": mean, "std": std}


# --------------------------------------------------------------------------------------------------------------
# build_store
# --------------------------------------------------------------------------------------------------------------
def _finished_digest(out: Path) -> str | None:
    """The build_digest of a finished store at `out`, or None (missing, unreadable or not ours)."""
    import h5py

    if not out.is_file():
        return None
    try:
        with h5py.File(out, "r") as store:
            return str(store.attrs["build_digest"])
    except (OSError, KeyError):
        return None


def _check_options(jobs, max_seconds, min_seconds, dtype, chunk_tracks) -> int:
    """Validate the build options (AudioError naming the flag); returns the number of jobs to use."""
    if chunk_tracks is not None and chunk_tracks < 1:
        raise AudioError(f"--chunk-tracks {chunk_tracks}: must be >= 1.")
    if dtype not in DTYPES:
        raise AudioError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    if max_seconds is not None and not max_seconds > 0:
        raise AudioError(f"--max-seconds {max_seconds}: must be > 0 (or left out to read whole files).")
    if min_seconds is not None and not min_seconds >= 0:
        raise AudioError(f"--min-seconds {min_seconds}: must be >= 0.")
    if max_seconds is not None and min_seconds is not None and min_seconds > max_seconds:
        raise AudioError(f"--min-seconds {min_seconds} > --max-seconds {max_seconds}: every file would be rejected.")
    if jobs is None or jobs == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if jobs < 0:
        raise AudioError(f"--jobs {jobs}: must be >= 1 (0 = one per CPU core).")
    return int(jobs)


def _summary_line(summary: dict) -> str:
    if summary["already_done"]:
        return (f"{summary['out']}: already done ({summary['stored']} stored, {summary['failed']} failed, "
                f"see {summary['failures_csv']}); nothing to do.")
    return (f"{summary['out']}: {summary['stored']} stored, {summary['failed']} failed (see "
            f"{summary['failures_csv']}), {summary['skipped']} already done by an earlier run; "
            f"{summary['frames']} frames, mean {summary['mean']:.4f}, std {summary['std']:.4f}, "
            f"{summary['audio_seconds']:.0f} s of audio in {summary['seconds']:.1f} s.")


def build_store(audio_dir, out, tracks_csv=None, jobs=1, max_seconds=None, min_seconds=None, progress=True,
                dtype=DEFAULT_DTYPE, chunk_tracks=None) -> dict:
    """Build (or finish, or confirm) the standardized log-mel store `out` and failures.csv beside it.

    audio_dir: folder of the audio files; tracks_csv: optional CSV track_id,path (paths relative to audio_dir);
    jobs: worker processes (0/None = one per core); max_seconds: decode only the start of each file;
    min_seconds: files shorter than this (after max_seconds) go to failures.csv; dtype: "float16" | "float32";
    chunk_tracks: tracks per part file (default: automatic; a resumed build keeps its first value);
    progress: tqdm bars and a printed summary line.

    Returns {"stored", "failed", "skipped" (tracks done by an earlier run), "computed" (decoded now), "total",
    "frames", "mean", "std", "dtype", "already_done", "audio_seconds" (decoded now), "seconds", "out",
    "failures_csv"}. Raises AudioError for a missing folder, an empty selection, a bad --tracks CSV, bad options,
    or when no track at all could be stored.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    jobs = _check_options(jobs, max_seconds, min_seconds, dtype, chunk_tracks)
    tracks = select_tracks(audio_dir, tracks_csv)
    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise AudioError(f"--out {out}: is a folder; give the path of the .h5 file to write.")
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"max_seconds": max_seconds, "min_seconds": min_seconds, "dtype": dtype}
    digest = _build_digest(tracks, params)
    work = _work_dir(out)
    summary = {"out": str(out), "failures_csv": str(out.parent / FAILURES_FILE), "total": len(tracks),
               "dtype": dtype, "computed": 0, "audio_seconds": 0.0}

    if _finished_digest(out) == digest:
        _remove_work_dir(work)  # left over when a run died between the final rename and the clean-up
        import h5py

        with h5py.File(out, "r") as store:
            attrs = store.attrs
            summary.update({"stored": int(attrs["n_tracks"]), "failed": int(attrs["n_failed"]),
                            "skipped": len(tracks), "frames": int(attrs["total_frames"]),
                            "mean": float(attrs["mean"]), "std": float(attrs["std"]), "already_done": True})
            if not Path(summary["failures_csv"]).is_file():  # deleted since: restore it from the store
                _write_failures(Path(summary["failures_csv"]), _read_rows(store["failures"]))
        summary["seconds"] = time.perf_counter() - started
        if progress:
            print(_summary_line(summary))
        return summary

    if progress and out.is_file():
        print(f"{out} exists but was built from another selection or other options; rebuilding it "
              "(the old file stays in place until the new one is complete).")
    merge_error = None
    with _build_lock(work):
        for entry in work.iterdir():  # temporary parts of a killed run
            if ".tmp-" in entry.name and entry.name.startswith("part-"):
                entry.unlink(missing_ok=True)
        size = _prepare_manifest(work, digest, chunk_tracks or _chunk_tracks_for(len(tracks), jobs))
        chunks = [tracks[i:i + size] for i in range(0, len(tracks), size)]
        parts = [_part_path(work, k) for k in range(len(chunks))]
        pending = [k for k in range(len(chunks)) if not _part_is_done(parts[k], k, digest, len(chunks[k]))]
        skipped = len(tracks) - sum(len(chunks[k]) for k in pending)
        tasks = [{"work": str(work), "chunk": k, "tracks": chunks[k], "digest": digest, "dtype": dtype,
                  "max_seconds": max_seconds, "min_seconds": min_seconds} for k in pending]
        with tqdm(total=len(tracks), initial=skipped, desc="log-mel", unit="track", disable=not progress) as bar:
            for result in _run_tasks(tasks, jobs):
                bar.update(result["tracks"])
                summary["audio_seconds"] += result["audio_seconds"]
        summary["computed"] = len(tracks) - skipped
        info = {"dtype": dtype, "params": params, "digest": digest, "source_dir": str(Path(audio_dir).absolute()),
                "tracks_csv": "" if tracks_csv is None else str(Path(tracks_csv).absolute())}
        try:
            summary.update(_merge(out, parts, info, progress))
        except AudioError as exc:
            merge_error = exc  # nothing usable: no parts are kept for a store that cannot exist
        _remove_parts(work)
    _remove_work_dir(work)
    if merge_error is not None:
        raise merge_error
    summary.update({"skipped": skipped, "already_done": False, "seconds": time.perf_counter() - started})
    if progress:
        print(_summary_line(summary))
    return summary


def _run_tasks(tasks: list[dict], jobs: int):
    """Yield each chunk's result: in this process for one job, else from a pool of `jobs` processes."""
    if not tasks:
        return
    _mel_basis_t(), _hann_window()  # built once here, inherited by forked workers
    with contextlib.suppress(ImportError):
        import threadpoolctl  # noqa: F401  (imported once here rather than in every forked worker)
    if jobs <= 1 or len(tasks) == 1:
        with _limit_threads():
            for task in tasks:
                yield _process_chunk(task)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # ProcessPoolExecutor rather than multiprocessing.Pool: a worker that dies raises BrokenProcessPool here
    # instead of being restarted forever. At most 2 tasks per worker are in flight, so that memory stays small
    # for any number of chunks; finished parts are kept whatever happens next.
    workers = min(jobs, len(tasks))
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_worker_init,
                                   initargs=(os.getpid(),))
    try:
        queue, running = iter(tasks), set()
        while True:
            for task in queue:
                running.add(executor.submit(_process_chunk, task))
                if len(running) >= 2 * workers:
                    break
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BrokenProcessPool as exc:
        raise AudioError(f"a worker process died ({exc}); finished parts are kept: rerun the same command "
                         "(with --jobs 1 to see the error of the file that makes it fail).") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------------------
def _python_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(found, expected) -> bool:
    if isinstance(expected, bool) or isinstance(expected, str):
        return found == expected
    try:
        return math.isclose(float(found), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


class MelStore:
    """Read a log-mel store: a track's standardized frames, random 130-frame crops, evaluation segments.

    MelStore(path, in_memory=None): None loads the whole `mel` array into RAM (as float32) when it is smaller
    than 2 GiB on disk (then the file is closed), True always, False reads lazily from HDF5 (open one MelStore
    per process).
    Checks the front-end attributes against this code's constants and the layout; raises AudioError naming
    the file and the attribute otherwise. Use as a context manager (or call close()).
    """

    def __init__(self, path, in_memory: bool | None = None):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise AudioError(f"{self.path}: no such log-mel store; build it with "
                             f"`python -m preprocess.store --audio-dir DIR --out {self.path}`.")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise AudioError(f"{self.path}: not a readable HDF5 store ({exc}); rebuild it.") from None
        try:
            self._open(in_memory)
        except BaseException:
            self.close()
            raise

    def _open(self, in_memory: bool | None) -> None:
        handle = self._file
        self.attrs = {key: _python_value(value) for key, value in handle.attrs.items()}
        self._check_attrs()
        for name in ("track_ids", "offsets", "mel"):
            if name not in handle:
                raise AudioError(f"{self.path}: dataset {name!r} is missing; not a log-mel store, rebuild it.")
        mel = handle["mel"]
        if mel.ndim != 2 or mel.shape[1] != N_MELS:
            raise AudioError(f"{self.path}: dataset 'mel' has shape {mel.shape}, expected (frames, {N_MELS}).")
        self.track_ids = [str(t) for t in handle["track_ids"].asstr()[...].tolist()]
        self._offsets = np.asarray(handle["offsets"][...], dtype=np.int64)
        n = len(self.track_ids)
        if self._offsets.shape != (n + 1,) or self._offsets[0] != 0 or self._offsets[-1] != mel.shape[0]:
            raise AudioError(f"{self.path}: 'offsets' (shape {self._offsets.shape}) does not match {n} tracks and "
                             f"{mel.shape[0]} frames; the store is damaged, rebuild it.")
        if n and (np.diff(self._offsets) <= 0).any():
            bad = int(np.argmax(np.diff(self._offsets) <= 0))
            raise AudioError(f"{self.path}: track {self.track_ids[bad]!r} has no frames; rebuild the store.")
        self._index = {track_id: i for i, track_id in enumerate(self.track_ids)}
        if len(self._index) != n:
            raise AudioError(f"{self.path}: 'track_ids' has duplicates; rebuild the store.")
        self.mean, self.std = float(self.attrs["mean"]), float(self.attrs["std"])
        size = mel.shape[0] * mel.shape[1] * mel.dtype.itemsize
        self.in_memory = bool(size < IN_MEMORY_LIMIT_BYTES if in_memory is None else in_memory)
        if self.in_memory:
            # Converted once here: a float16 -> float32 cast per training batch costs more than the gather itself.
            self._mel = mel[...].astype(np.float32, copy=False)
            self._file.close()
            self._file = None
        else:
            self._mel = mel

    def _check_attrs(self) -> None:
        for name in ("mean", "std"):
            if name not in self.attrs:
                raise AudioError(f"{self.path}: attribute {name!r} is missing; rebuild the store.")
        if not (math.isfinite(float(self.attrs["mean"])) and float(self.attrs["std"]) > 0):
            raise AudioError(f"{self.path}: attributes mean={self.attrs['mean']} std={self.attrs['std']} are not "
                             "usable (std must be > 0); rebuild the store.")
        for name, expected in REQUIRED_FRONT_END.items():
            if name not in self.attrs:
                raise AudioError(f"{self.path}: attribute {name!r} is missing; this code expects {name}={expected}.")
        for name, expected in {**REQUIRED_FRONT_END, **OPTIONAL_FRONT_END}.items():
            if name in self.attrs and not _same(self.attrs[name], expected):
                raise AudioError(
                    f"{self.path}: attribute {name}={self.attrs[name]!r} but this code's front end uses "
                    f"{name}={expected!r}; rebuild the store with `python -m preprocess.store`."
                )

    # -- container protocol -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.track_ids)

    def __contains__(self, track_id) -> bool:
        return track_id in self._index

    def __enter__(self) -> "MelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MelStore({str(self.path)!r}, tracks={len(self)}, frames={int(self._offsets[-1])}, "
                f"in_memory={getattr(self, 'in_memory', None)})")

    def close(self) -> None:
        handle = getattr(self, "_file", None)
        if handle is not None:
            handle.close()
            self._file = None

    # -- lookups -------------------------------------------------------------------------------------------------
    def index(self, track_id: str) -> int:
        """Row of `track_id`; KeyError naming the store when it is not there."""
        try:
            return self._index[track_id]
        except KeyError:
            raise KeyError(f"track {track_id!r} is not in {self.path} ({len(self)} tracks); it may have failed "
                           f"to decode (see {self.path.parent / FAILURES_FILE}).") from None

    def _row(self, i) -> int:
        if isinstance(i, str):
            return self.index(i)
        row = int(i)
        if not 0 <= row < len(self):
            raise IndexError(f"track index {row} out of range for {self.path} ({len(self)} tracks).")
        return row

    def n_frames(self, i) -> int:
        """Number of frames of track `i` (index or track id)."""
        row = self._row(i)
        return int(self._offsets[row + 1] - self._offsets[row])

    def frames(self, i) -> np.ndarray:
        """(n, 128) float32 standardized frames of track `i` (index or track id); a copy."""
        row = self._row(i)
        return np.array(self._mel[self._offsets[row]:self._offsets[row + 1]], dtype=np.float32)

    def in_memory_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(mel (total_frames, 128) float32, offsets (n + 1,) int64) of an in-memory store, without a copy.

        Track i's standardized frames are mel[offsets[i]:offsets[i + 1]]. Both arrays are read-only views of the
        store's own arrays (the TensorFlow training pipeline copies `mel` into a tf.Variable). ValueError for a
        store opened lazily (in_memory False), whose frames are not in RAM.
        """
        if not self.in_memory:
            raise ValueError(f"{self.path} is read lazily (in_memory=False); open it with MelStore(path, "
                             "in_memory=True) to get its arrays.")
        mel, offsets = self._mel.view(), self._offsets.view()
        mel.flags.writeable = offsets.flags.writeable = False
        return mel, offsets

    def standardize(self, logmel) -> np.ndarray:
        """(logmel - mean) / std with this store's statistics, float32."""
        return _standardize(logmel, self.mean, self.std)

    # -- training crops and evaluation segments -----------------------------------------------------------------
    def random_crop(self, i, rng, n_frames: int = SEGMENT_FRAMES) -> np.ndarray:
        """(n_frames, 128) float32 crop of track `i` at a uniform random start (short tracks are tiled first)."""
        return self.random_crops([i], rng, n_frames)[0]

    def random_crops(self, indices, rng, n_frames: int = SEGMENT_FRAMES) -> np.ndarray:
        """(b, n_frames, 128) float32 random crops, one per entry of `indices` (ints or track ids).

        A track of length L >= n_frames is cropped at a start drawn uniformly from [0, L - n_frames]; a shorter
        track is tiled to ceil(n_frames / L) * L frames and cropped the same way (frame t of the crop is frame
        (start + t) mod L of the track). One vectorized draw from `rng` (a numpy Generator) per call; in memory,
        one fancy-indexing gather.
        """
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        rows = np.fromiter((self._row(i) for i in indices), dtype=np.int64)
        starts, lengths = self._offsets[rows], self._offsets[rows + 1] - self._offsets[rows]
        spans = np.where(lengths >= n_frames, lengths, -(-n_frames // lengths) * lengths)  # tiled length
        first = rng.integers(0, spans - n_frames + 1) if len(rows) else np.zeros(0, dtype=np.int64)
        within = (first[:, None] + np.arange(n_frames)[None, :]) % lengths[:, None]  # (b, n_frames)
        if self.in_memory:
            return self._mel[starts[:, None] + within]  # (b, n_frames, 128) float32, a fresh array
        out = np.empty((len(rows), n_frames, N_MELS), dtype=np.float32)
        for b, (start, length, offset) in enumerate(zip(starts, lengths, first)):
            if length >= n_frames:  # one contiguous HDF5 read
                out[b] = self._mel[start + offset:start + offset + n_frames]
            else:
                out[b] = self._mel[start:start + length][within[b]]
        return out

    def segments(self, i, n_frames: int = SEGMENT_FRAMES) -> np.ndarray:
        """(k, n_frames, 128) float32 non-overlapping segments of track `i`, k = L // n_frames (remainder
        dropped); a track shorter than n_frames is tiled to exactly one segment (paper's evaluation)."""
        x = self.frames(i)
        if len(x) < n_frames:
            return np.tile(x, (-(-n_frames // len(x)), 1))[None, :n_frames]
        k = len(x) // n_frames
        return x[:k * n_frames].reshape(k, n_frames, N_MELS)


def audio_file_frames(path, store, max_seconds: float | None = None) -> np.ndarray:
    """A new audio file -> (n, 128) float32 frames standardized with `store`'s mean/std (MelStore or path)."""
    if isinstance(store, MelStore):
        mean, std = store.mean, store.std
    else:
        with MelStore(store, in_memory=False) as opened:
            mean, std = opened.mean, opened.std
    return _standardize(log_mel(load_audio(path, max_seconds)), mean, std)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: ...)" only for real defaults (the help text explains what None / a flag means)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.store",
        description="Decode audio files into one standardized log-mel HDF5 store (22,050 Hz mono, n_fft 1024, "
                    "hop 512, 128 Slaney mels, log10(1 + 10 mel)) plus failures.csv next to it. Idempotent and "
                    "crash-safe: rerun the same command after an interruption to finish the store.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--audio-dir", required=True, help="folder of the audio files (.mp3 .ogg .flac .wav)")
    parser.add_argument("--out", required=True, help="store to write (e.g. data/fma/mels.h5); folder is created")
    parser.add_argument("--tracks", default=None,
                        help="CSV track_id,path (paths relative to --audio-dir or absolute); default: every audio "
                             "file under --audio-dir, id = relative path without extension")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (0 = one per CPU core)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="decode only the first S seconds of each file (MSD: 30); default: whole files")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="files shorter than S seconds (after --max-seconds) go to failures.csv (MSD: 29)")
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                        help="storage type of the standardized values (float16 halves disk and RAM)")
    parser.add_argument("--chunk-tracks", type=int, default=None,
                        help=f"tracks per crash-safe part file (default: automatic, at most {MAX_CHUNK_TRACKS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars and no summary line")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = build_store(args.audio_dir, args.out, tracks_csv=args.tracks, jobs=args.jobs,
                              max_seconds=args.max_seconds, min_seconds=args.min_seconds,
                              progress=not args.no_progress, dtype=args.dtype, chunk_tracks=args.chunk_tracks)
    except (AudioError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
