"""Paper Sec. 4.3 and 5: a track's embedding and its score for a label, then the plumbing that runs
them.

    track_embedding(predict, segments)   the mean of the model's outputs over a track's
                                         non-overlapping
                                         130-frame segments (MelStore.segments): the definition
    cosine_scores(tracks, labels)        cosine(track, label) of every pair: the paper's relevance
                                         score
    track_embeddings(predict, store, ..) the batched path that evaluation runs: track_embedding of
        many tracks
                                         in few predict calls (tests/test_evaluate.py: equal to the
                                             definition)

The cache, <run_dir>/embeddings.h5, keeps track and label embeddings between evaluations, so that
re-scoring a run needs no audio inference (and no TensorFlow):

    track_ids      (n,) UTF-8        track ids, in the row order of `tracks`
    tracks         (n, d) float32    track embeddings (the classification model: its averaged
                                     sigmoid outputs)
    label_names    (m,) UTF-8        labels, in the row order of `labels` (embedding model only)
    labels         (m, 100) float32  label embeddings (embedding model only)
    attrs fingerprint  JSON: what the embeddings were computed from (model.keras, side information,
                       the model's
                       shapes, the mel store, the segment length). Another fingerprint: stale,
                           recomputed whole.
    attrs checksum     sha256 of the four arrays: a damaged or hand-edited cache (ids permuted, rows
                       changed) fails
                       it, as does one with non-finite values, and is recomputed whole.

No TensorFlow here: protocol.py passes the model as a `predict(segments)` function.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fileio import atomic_write
from preprocess.frontend import N_MELS, SEGMENT_FRAMES

CACHE_FILE = "embeddings.h5"


def track_embedding(predict, segments: np.ndarray) -> np.ndarray:
    """(k, 130, 128) segments of one track (MelStore.segments) -> (d,): the mean of the model's
    outputs over the segments, the track embedding of paper Sec. 4.3."""
    return np.asarray(predict(segments), dtype=np.float64).mean(axis=0)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of (n, d) `x` divided by its L2 norm (float64; a zero row stays zero). Each row is
    first divided by its largest |value|, which changes no direction: the norm of finite rows with
    huge values (1e200) would otherwise overflow to inf and make them zero."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.maximum(np.abs(x).max(axis=1, keepdims=True), np.finfo(np.float64).tiny)  # (n, d)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_scores(tracks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, d) track and (m, d) label embeddings -> (n, m) float32 cosines, the paper's relevance
    score."""
    return (unit_rows(tracks) @ unit_rows(labels).T).astype(np.float32)


def track_embeddings(predict, store, rows, budget: int, progress: bool = True) -> np.ndarray:
    """(len(rows), d) float64: track_embedding(predict, store.segments(row)) of each store row, with
    the segments of several tracks (about `budget`) in one predict call and the store read in file
    order (a test shows both are equal). A thread reads the next call's segments while the model
    runs: reading and casting the float16 store took a fifth of the time otherwise."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    rows = np.asarray(rows, dtype=np.int64)
    # (n,) segments: sizes the calls
    counts = np.maximum(np.asarray(store.lengths)[rows] // SEGMENT_FRAMES, 1)
    order = np.argsort(rows, kind="stable")
    chunks = np.split(order, np.flatnonzero(np.diff(np.cumsum(counts[order]) // budget)) + 1)

    def read(chunk) -> np.ndarray:  # (sum k_i, 130, 128), filled track by track
        segments = np.empty((counts[chunk].sum(), SEGMENT_FRAMES, N_MELS), dtype=np.float32)
        for i, start in zip(chunk, np.cumsum(counts[chunk]) - counts[chunk], strict=True):
            segments[start : start + counts[i]] = store.segments(int(rows[i]), SEGMENT_FRAMES)
        return segments

    out = None
    with (
        ThreadPoolExecutor(1) as reader,
        tqdm(
            total=len(rows),
            desc=f"embedding {len(rows)} tracks",
            unit="track",
            disable=not progress,
        ) as bar,
    ):
        ahead = reader.submit(read, chunks[0])
        for k, chunk in enumerate(chunks):
            segments = ahead.result()
            ahead = reader.submit(read, chunks[k + 1]) if k + 1 < len(chunks) else None
            outputs = np.asarray(predict(segments), dtype=np.float64)  # (sum k_i, d)
            out = np.empty((len(rows), outputs.shape[1])) if out is None else out
            starts = np.cumsum(counts[chunk]) - counts[chunk]
            out[chunk] = np.add.reduceat(outputs, starts, axis=0) / counts[chunk][:, None]  # means
            bar.update(len(chunk))
    return out


def store_fingerprint(store, path) -> dict:
    """Cheap identity of the MelStore `store` opened from `path`: its size, statistics, and a digest
    of its ids, track lengths and first and last tracks' frames (hashing a store of hundreds of GB
    would take too long)."""
    digest = hashlib.sha256("\n".join(store.track_ids).encode("utf-8"))
    digest.update(np.asarray(store.lengths, dtype="<i8").tobytes())
    if len(store):
        for row in (0, len(store) - 1):
            digest.update(np.asarray(store.frames(row), dtype="<f4").tobytes())
    return {
        "size": Path(path).stat().st_size,
        "n_tracks": len(store),
        "mean": float(store.mean),
        "std": float(store.std),
        "digest": digest.hexdigest(),
        "segment_frames": SEGMENT_FRAMES,
    }


def _checksum(track_ids, tracks, label_names, labels) -> str:
    digest = hashlib.sha256()
    for names, values in (
        (track_ids, tracks),
        (label_names or [], labels if labels is not None else []),
    ):
        digest.update(json.dumps(list(names)).encode("utf-8"))
        digest.update(np.asarray(values, dtype="<f4").tobytes())
    return digest.hexdigest()


def read_cache(path, fingerprint: dict) -> dict | None:
    """The cache's content when it was made from `fingerprint` and is intact; None when missing,
    stale or damaged.

    Returns {"track_ids": list[str], "tracks": (n, d) float32, "label_names": list[str] | None,
    "labels": (m, d) float32 | None}.
    """
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if json.loads(handle.attrs["fingerprint"]) != json.loads(json.dumps(fingerprint)):
                return None
            cache = {
                "track_ids": list(handle["track_ids"].asstr()[...]),
                "tracks": np.asarray(handle["tracks"][...], dtype=np.float32),
                "label_names": None,
                "labels": None,
            }
            if "labels" in handle:
                cache["label_names"] = list(handle["label_names"].asstr()[...])
                cache["labels"] = np.asarray(handle["labels"][...], dtype=np.float32)
            checksum = str(handle.attrs["checksum"])
    # missing, truncated, foreign or older layout: no cache
    except (OSError, KeyError, ValueError, TypeError):
        return None
    arrays = [a for a in (cache["tracks"], cache["labels"]) if a is not None]
    if (
        checksum != _checksum(**cache)
        or len(set(cache["track_ids"])) != len(cache["tracks"])
        or not all(np.isfinite(a).all() for a in arrays)
    ):
        return None
    return cache


def write_cache(path, fingerprint: dict, track_ids, tracks, label_names=None, labels=None) -> None:
    """Write the cache atomically (fileio.atomic_write: a crash never leaves half a file)."""
    import h5py

    strings = h5py.string_dtype("utf-8")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
            handle.attrs["checksum"] = _checksum(track_ids, tracks, label_names, labels)
            handle.create_dataset(
                "track_ids", data=np.asarray(track_ids, dtype=object), dtype=strings
            )
            handle.create_dataset("tracks", data=np.asarray(tracks, dtype=np.float32))
            if label_names is not None:
                handle.create_dataset(
                    "label_names", data=np.asarray(label_names, dtype=object), dtype=strings
                )
                handle.create_dataset("labels", data=np.asarray(labels, dtype=np.float32))

    atomic_write(path, write)


def cached_embeddings(
    path,
    fingerprint: dict,
    track_ids,
    compute_tracks,
    label_names=None,
    compute_labels=None,
    force: bool = False,
    write: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Track embeddings of `track_ids` (and label embeddings of `label_names`), computing only what
    the cache lacks.

    Args:
        compute_tracks: ids -> (len(ids), d) embeddings; called with the ids a valid cache lacks
            (all of them when
            the cache is missing, stale, damaged or `force`).
        label_names, compute_labels: when given, () -> (len(label_names), d), called unless a valid
        cache holds
            exactly these labels.
        write: False leaves the cache file as it is (a read-only run directory).

    Returns:
        ((len(track_ids), d) in the order of `track_ids`, label embeddings or None,
         {"cached_tracks": n reused, "computed_tracks": n computed, "labels_cached": bool,
             "rejected": bool}),
        "rejected": a cache file existed but did not match (stale or damaged) and was recomputed.
    """
    track_ids = [str(t) for t in track_ids]
    label_names = None if label_names is None else [str(name) for name in label_names]
    cache = None if force else read_cache(path, fingerprint)
    rejected = cache is None and not force and Path(path).is_file()
    known = {} if cache is None else {t: i for i, t in enumerate(cache["track_ids"])}
    tracks = None if cache is None else cache["tracks"]
    missing = [t for t in dict.fromkeys(track_ids) if t not in known]
    labels_cached = (
        cache is not None and label_names is not None and cache["label_names"] == label_names
    )
    labels = cache["labels"] if labels_cached else None

    if missing:
        new = np.asarray(compute_tracks(missing), dtype=np.float32)  # (len(missing), d)
        known.update({t: len(known) + i for i, t in enumerate(missing)})
        tracks = new if tracks is None else np.concatenate([tracks, new])
    if label_names is not None and not labels_cached:
        labels = np.asarray(compute_labels(), dtype=np.float32)  # (len(label_names), d)
    if write and (missing or (label_names is not None and not labels_cached)):
        write_cache(path, fingerprint, list(known), tracks, label_names, labels)
    return (
        tracks[[known[t] for t in track_ids]],
        labels,
        {
            "cached_tracks": len(set(track_ids)) - len(missing),
            "computed_tracks": len(missing),
            "labels_cached": bool(labels_cached),
            "rejected": rejected,
        },
    )
