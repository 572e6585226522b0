"""Track-level model outputs for evaluation: segment batching, averaging, cosine scores and the per-run cache.

Paper Sec. 4.3 / ../shared/REFERENCE.md ("Evaluation"): a track's mel (frames, 128) is cut into non-overlapping
130-frame segments (remainder dropped, tracks shorter than 130 frames tiled into one segment), every segment goes
through the audio module, and the track embedding is the mean of the segment embeddings. For the classification
model (paper Sec. 4.2, Table 4) the same average is taken over the segments' sigmoid outputs.

The cache (`<run_dir>/embeddings.h5`) keeps these averages so that re-scoring a run needs no audio inference:

    tracks/ids          (n,) UTF-8       track ids, in the row order of tracks/outputs
    tracks/outputs      (n, d) float32   mean segment output per track (d = 100, or the seen labels for the
                                         classification model)
    labels/names        (m,) UTF-8       side-information labels           (embedding model only)
    labels/embeddings   (m, 100) float32 semantic-module output per label (embedding model only)
    attrs: fingerprint  JSON text: sha256 of model.keras and side-information file, the store's size, mean, std,
                        n_tracks, total frames and a digest of its track ids, offsets and first/last mel rows,
                        the segment length. A cache whose fingerprint differs is stale and recomputed whole.

No TensorFlow here: the model is passed in as a `predict(batch) -> array` callable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

CACHE_FILE = "embeddings.h5"
DEFAULT_BATCH_SIZE = 256  # segments per predict call (130 x 128 float32 each: 256 -> 17 MB)

Predict = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------------------------
# Segments and batched averaging
# ---------------------------------------------------------------------------------------------------------------
def frames_to_segments(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """(n, n_mels) standardized frames -> (k, n_frames, n_mels) non-overlapping segments.

    k = n // n_frames and the remainder is dropped; a track shorter than n_frames is tiled (repeated from its start)
    into one segment, as MelStore.segments does for stored tracks (the original's evaluation, REFERENCE.md).
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise ValueError(f"expected (frames, mels) with at least one frame, got shape {frames.shape}")
    n = frames.shape[0]
    if n < n_frames:
        reps = -(-n_frames // n)  # ceil
        return np.tile(frames, (reps, 1))[:n_frames][None]
    k = n // n_frames
    return frames[: k * n_frames].reshape(k, n_frames, frames.shape[1])


def batched_segment_means(predict: Predict, segment_arrays: Iterable[np.ndarray], n_items: int,
                          batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
                          desc: str = "segments") -> np.ndarray:
    """Mean model output over each item's segments, with many segments (of several items) per predict call.

    Args:
        predict: maps a (batch_size, frames, mels) float32 batch to (batch_size, d) outputs. Every call gets exactly
            `batch_size` segments (the last batch is zero-padded, padding rows discarded) so that a compiled
            predict function is traced once.
        segment_arrays: yields, per item, a (k_i, frames, mels) array with k_i >= 1.
        n_items: number of items yielded (for the progress bar and the output size).

    Returns:
        (n_items, d) float32: row i = mean over its k_i segment outputs (accumulated in float64).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    sums: np.ndarray | None = None
    counts = np.zeros(n_items, dtype=np.int64)
    buffer: np.ndarray | None = None
    owners = np.empty(batch_size, dtype=np.int64)
    fill = 0

    def flush() -> None:
        nonlocal sums, fill
        out = np.asarray(predict(buffer), dtype=np.float64)[:fill]  # (fill, d)
        if sums is None:
            sums = np.zeros((n_items, out.shape[1]), dtype=np.float64)
        np.add.at(sums, owners[:fill], out)
        counts[:] += np.bincount(owners[:fill], minlength=n_items)
        fill = 0

    seen_items = 0
    with tqdm(total=n_items, desc=desc, unit="track", disable=not progress, leave=False) as bar:
        for item, segments in enumerate(segment_arrays):
            segments = np.asarray(segments, dtype=np.float32)
            if segments.ndim != 3 or segments.shape[0] == 0:
                raise ValueError(f"item {item}: expected (k >= 1, frames, mels) segments, got {segments.shape}")
            if buffer is None:
                buffer = np.zeros((batch_size,) + segments.shape[1:], dtype=np.float32)
            pos = 0
            while pos < len(segments):
                take = min(batch_size - fill, len(segments) - pos)
                buffer[fill:fill + take] = segments[pos:pos + take]
                owners[fill:fill + take] = item
                fill += take
                pos += take
                if fill == batch_size:
                    flush()
            seen_items += 1
            bar.update(1)
        if fill:
            buffer[fill:] = 0.0
            flush()
    if seen_items != n_items:
        raise ValueError(f"expected {n_items} items of segments, got {seen_items}")
    if sums is None:
        raise ValueError("no segments to embed")
    return (sums / counts[:, None]).astype(np.float32)


def store_segments(store, indices: Iterable[int], n_frames: int) -> Iterator[np.ndarray]:
    """Yield store.segments(i, n_frames) for each store index (the generator feeding batched_segment_means)."""
    for index in indices:
        yield store.segments(int(index), n_frames=n_frames)


# ---------------------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------------------
def l2_normalize(matrix: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (rows of norm < eps are left as zeros rather than producing NaN)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, eps)


def cosine_scores(track_embeddings: np.ndarray, label_embeddings: np.ndarray) -> np.ndarray:
    """(n_tracks, d), (n_labels, d) -> (n_tracks, n_labels) float32 cosine similarities (the paper's relevance)."""
    return (l2_normalize(track_embeddings) @ l2_normalize(label_embeddings).T).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------
def store_fingerprint(mels_path) -> dict:
    """Cheap identity of an HDF5 mel store (documented layout: track_ids, offsets, mel; attrs mean, std).

    Hashing a store of hundreds of GB is too slow, so this digests its track ids, offsets and the first and last
    64 mel rows, plus its size, mean, std and counts: any rebuild that changes what a track id maps to changes
    at least one of these in practice.
    """
    import h5py

    path = Path(mels_path)
    with h5py.File(path, "r") as handle:
        ids = handle["track_ids"].asstr()[...]
        offsets = np.asarray(handle["offsets"][...], dtype=np.int64)
        mel = handle["mel"]
        head = np.asarray(mel[:64], dtype=np.float32)
        tail = np.asarray(mel[max(0, mel.shape[0] - 64):], dtype=np.float32)
        digest = hashlib.sha256()
        digest.update("\n".join(map(str, ids)).encode("utf-8"))
        digest.update(offsets.tobytes())
        digest.update(head.tobytes())
        digest.update(tail.tobytes())
        return {
            "size": path.stat().st_size,
            "n_tracks": int(len(ids)),
            "total_frames": int(mel.shape[0]),
            "mean": float(handle.attrs["mean"]),
            "std": float(handle.attrs["std"]),
            "digest": digest.hexdigest(),
        }


def read_cache(path, fingerprint: dict) -> dict | None:
    """The cache's arrays when its fingerprint equals `fingerprint`; None when missing, unreadable or stale.

    Returns {"track_ids": list[str], "outputs": (n, d) float32, "label_names": list[str] | None,
    "label_embeddings": (m, d) float32 | None}.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            stored = json.loads(handle.attrs.get("fingerprint", "{}"))
            if stored != json.loads(json.dumps(fingerprint)):
                return None
            out = {
                "track_ids": [str(t) for t in handle["tracks/ids"].asstr()[...]],
                "outputs": np.asarray(handle["tracks/outputs"][...], dtype=np.float32),
                "label_names": None,
                "label_embeddings": None,
            }
            if "labels" in handle:
                out["label_names"] = [str(t) for t in handle["labels/names"].asstr()[...]]
                out["label_embeddings"] = np.asarray(handle["labels/embeddings"][...], dtype=np.float32)
            return out
    except (OSError, KeyError, ValueError):
        # A truncated or foreign file is treated as no cache: it is rewritten below.
        return None


def write_cache(path, fingerprint: dict, track_ids, outputs: np.ndarray, label_names=None,
                label_embeddings: np.ndarray | None = None) -> None:
    """Write the cache atomically (temp file in the same folder, then rename), so a crash never leaves half a file."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    strings = h5py.string_dtype("utf-8")
    try:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
            handle.create_dataset("tracks/ids", data=np.asarray([str(t) for t in track_ids], dtype=object),
                                  dtype=strings)
            handle.create_dataset("tracks/outputs", data=np.asarray(outputs, dtype=np.float32))
            if label_names is not None:
                handle.create_dataset("labels/names", data=np.asarray([str(t) for t in label_names], dtype=object),
                                      dtype=strings)
                handle.create_dataset("labels/embeddings", data=np.asarray(label_embeddings, dtype=np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_outputs(path, fingerprint: dict, track_ids, compute_tracks: Callable[[list[str]], np.ndarray],
                   label_names=None, compute_labels: Callable[[], np.ndarray] | None = None,
                   force: bool = False) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Track outputs (and label embeddings) for `track_ids`, computing only what the cache lacks.

    Args:
        compute_tracks: ids -> (len(ids), d) outputs, called once with the ids missing from a valid cache (all of
            them when the cache is missing, stale or `force`).
        label_names, compute_labels: when given, () -> (len(label_names), d) label embeddings, called unless a
            valid cache holds exactly these labels.

    Returns:
        ((len(track_ids), d) outputs in the order of `track_ids`, label embeddings or None,
         {"cached_tracks": n reused, "computed_tracks": n computed, "labels_cached": bool}).
    """
    track_ids = [str(t) for t in track_ids]
    cache = None if force else read_cache(path, fingerprint)
    known: dict[str, int] = {}
    outputs = np.zeros((0, 0), dtype=np.float32)
    if cache is not None:
        known = {t: i for i, t in enumerate(cache["track_ids"])}
        outputs = cache["outputs"]
    wanted = list(dict.fromkeys(track_ids))
    missing = [t for t in wanted if t not in known]
    cached_labels = cache is not None and label_names is not None and cache["label_names"] == list(label_names)
    label_embeddings = cache["label_embeddings"] if cached_labels else None

    changed = False
    if missing:
        new = np.asarray(compute_tracks(missing), dtype=np.float32)
        if new.shape[0] != len(missing):
            raise ValueError(f"compute_tracks returned {new.shape[0]} rows for {len(missing)} tracks")
        start = len(known)
        outputs = new if not known else np.concatenate([outputs, new], axis=0)
        known.update({t: start + i for i, t in enumerate(missing)})
        changed = True
    if label_names is not None and label_embeddings is None:
        if compute_labels is None:
            raise ValueError("label_names given without compute_labels")
        label_embeddings = np.asarray(compute_labels(), dtype=np.float32)
        changed = True
    if changed:
        order = sorted(known, key=known.get)
        write_cache(path, fingerprint, order, outputs,
                    label_names if label_names is not None else (cache or {}).get("label_names"),
                    label_embeddings if label_names is not None else (cache or {}).get("label_embeddings"))
    rows = np.asarray([known[t] for t in track_ids], dtype=np.int64)
    info = {"cached_tracks": len(wanted) - len(missing), "computed_tracks": len(missing),
            "labels_cached": bool(cached_labels)}
    return outputs[rows] if len(rows) else outputs[:0], label_embeddings, info
