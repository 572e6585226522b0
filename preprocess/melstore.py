"""The reader of the log-mel store (`preprocess/store.py` builds it and documents its layout).

`MelStore` gives a track's standardized frames, the crops a training batch needs and the segments
evaluation averages; every read is float32 (or the stored dtype when asked) and refuses non-finite
values.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import h5py
import numpy as np

from preprocess.frontend import FRONT_END, N_MELS, SEGMENT_FRAMES, AudioError, crop_starts, segments
from preprocess.store import _mean_std, failures_path

_BLOCK = 1 << 17  # values per block of _all_finite
_CHECK_ROWS = 8  # tracks whose data MelStore checks against their statistics when it opens


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable, capped by a container's (cgroup v2) limit."""
    try:
        with open("/proc/meminfo") as handle:
            free = next(
                int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")
            )
    except (OSError, StopIteration):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):  # no cgroup, or "max" (no limit)
        cgroup = Path("/sys/fs/cgroup")
        free = min(
            free,
            int((cgroup / "memory.max").read_text()) - int((cgroup / "memory.current").read_text()),
        )
    return free


def _all_finite(x: np.ndarray) -> bool:
    """np.isfinite(x).all(), fast for float16: numpy's isfinite of float16 costs ~2 ns a value, more
    than reading a batch. A float16 is not finite when its 5 exponent bits are all ones; testing the
    bits in blocks of 2**17 values keeps the temporary in the CPU cache (one batch-sized temporary
    made the test 5x slower)."""
    if x.dtype != np.float16:
        return bool(np.isfinite(x).all())
    bits = x.reshape(-1).view(np.uint16)
    return all(
        int((bits[i : i + _BLOCK] & 0x7FFF).max()) < 0x7C00 for i in range(0, bits.size, _BLOCK)
    )


class MelStore:
    """Read a log-mel store: a track's standardized frames, crops for training, segments for
    evaluation.

    in_memory=None keeps the store in RAM when it fits in half the memory available (True/False
    force it), in its stored dtype; otherwise the file is memory-mapped (read lazily, page-cached by
    the OS, safe in forked workers). Reads return float32 and refuse non-finite values. Opening
    checks the front-end attributes, the layout, and mean/std against the data's statistics and a
    sample of tracks: AudioError naming the store otherwise.
    """

    def __init__(self, path, in_memory: bool | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioError(
                f"{self.path}: no such log-mel store; build it with "
                f"`python -m preprocess.store --audio-dir DIR --out {self.path}`."
            )
        try:
            with h5py.File(self.path, "r") as handle:
                self._open(handle, in_memory)
        except OSError as exc:
            raise self._error(f"not a readable HDF5 store ({exc})") from None
        self._check_sample()

    def _error(self, problem: str) -> AudioError:
        return AudioError(f"{self.path}: {problem}; rebuild it with `python -m preprocess.store`.")

    def _open(self, handle, in_memory) -> None:
        self.attrs = {
            key: value.decode()
            if isinstance(value, bytes)
            else value.item()
            if isinstance(value, np.generic)
            else value
            for key, value in handle.attrs.items()
        }
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "mean", "std"):
            if name not in self.attrs:
                raise self._error(f"attribute {name!r} is missing")
        for name, expected in FRONT_END.items():
            found = self.attrs.get(name, expected)
            if not (
                found == expected
                if isinstance(expected, (bool, str))
                else math.isclose(found, expected)
            ):
                raise self._error(
                    f"attribute {name}={found!r} but this code's front end uses {name}={expected!r}"
                )
        self.mean, self.std = float(self.attrs["mean"]), float(self.attrs["std"])
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise self._error(
                f"attributes mean={self.mean} std={self.std} are not usable (std must be > 0)"
            )
        if not {"track_ids", "offsets", "mel"} <= set(handle):
            raise self._error("it lacks one of the datasets track_ids, offsets, mel")
        mel = handle["mel"]
        self.track_ids = handle["track_ids"].asstr()[...].tolist()
        self._offsets = handle["offsets"][...].astype(np.int64)
        self.lengths = np.diff(self._offsets)  # (n,) frames per track
        self._index = {track_id: row for row, track_id in enumerate(self.track_ids)}
        if (
            mel.ndim != 2
            or mel.shape[1] != N_MELS
            or self._offsets.shape != (len(self.track_ids) + 1,)
            or self._offsets[0] != 0
            or self._offsets[-1] != len(mel)
            or (self.lengths <= 0).any()
            or len(self._index) != len(self.track_ids)
        ):
            raise self._error(
                f"offsets {self._offsets.shape} and mel {mel.shape} do not make "
                f"{len(self.track_ids)} distinct tracks of >= 1 frame"
            )
        # None: not ours
        self._track_stats = handle["track_stats"][...] if "track_stats" in handle else None
        size = mel.size * mel.dtype.itemsize
        free = available_memory()
        self.in_memory = size <= free / 2 if in_memory is None else bool(in_memory)
        self.in_memory_reason = (
            f"{size / 1e9:.2f} GB store, {free / 1e9:.1f} GB memory available: "
            + ("as asked" if in_memory is not None else "fits" if self.in_memory else "too large")
        )
        if mel.id.get_offset() is None:  # a chunked or compressed layout cannot be memory-mapped
            self._mel = mel[...]
            self.in_memory = True
        else:
            self._mel = np.memmap(
                self.path, mel.dtype, "r", offset=mel.id.get_offset(), shape=mel.shape
            )
            self._mel = np.array(self._mel) if self.in_memory else self._mel
        # held in RAM: checked once here (~0.1 ns a value), not at every read (it was 30-40% of the
        # work of a training batch)
        self._all_checked = self.in_memory and _all_finite(self._mel)

    def _check_sample(self) -> None:
        """mean/std against the per-track statistics, and a few tracks' data against theirs (and
        finite)."""
        stats = self._track_stats
        if stats is not None and not all(
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            for a, b in zip(_mean_std(stats), (self.mean, self.std), strict=True)
        ):
            raise self._error(
                f"attributes mean={self.mean} std={self.std} differ from its per-track statistics "
                f"(mean, std {_mean_std(stats)}): the store was altered"
            )
        for row in np.linspace(0, len(self) - 1, min(len(self), _CHECK_ROWS)).astype(int):
            # frames checks finite
            found = float(self.frames(row).mean(dtype=np.float64)) * self.std + self.mean
            # float16: ~1e-3 * std
            if stats is not None and abs(found - stats[row, 1]) > 0.01 * self.std:
                raise self._error(
                    f"track {self.track_ids[row]!r} has mean {found:.4f} but its statistics say "
                    f"{stats[row, 1]:.4f}: the store was altered"
                )

    def __len__(self) -> int:
        return len(self.track_ids)

    def __contains__(self, track_id) -> bool:
        return track_id in self._index

    def __enter__(self) -> MelStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._mel = None

    def index(self, track_id: str) -> int:
        """Row of `track_id`; KeyError naming the store when it is not there."""
        if track_id not in self._index:
            raise KeyError(
                f"track {track_id!r} is not in {self.path} ({len(self)} tracks); it may have "
                "failed to "
                f"decode (see {failures_path(self.path)})."
            )
        return self._index[track_id]

    def _finite(self, x: np.ndarray, rows) -> np.ndarray:
        """x (b, ..., 128) holds track rows[i] in x[i]; AudioError naming the tracks with a
        non-finite value."""
        if self._all_checked or _all_finite(x):
            return x
        # (b,) the damaged tracks
        bad = ~np.isfinite(x.astype(np.float32)).all(axis=tuple(range(1, x.ndim)))
        names = sorted({self.track_ids[row] for row in np.asarray(rows)[bad]})
        raise self._error(f"non-finite values in track(s) {names[:5]}: the store is damaged")

    def frames(self, row) -> np.ndarray:
        """(L, 128) float32 standardized frames of track `row` (a row or a track id)."""
        row = self.index(row) if isinstance(row, str) else int(row)
        return self._finite(self._mel[None, self._offsets[row] : self._offsets[row + 1]], [row])[
            0
        ].astype(np.float32)

    def crops(self, rows, starts, n_frames: int, dtype=np.float32) -> np.ndarray:
        """(b, n_frames, 128) float32; crop i = frontend.crop(frames(rows[i]), starts[i], n_frames).

        dtype=None keeps the stored dtype: casting float16 costs numpy ~3 ms per 64 crops, a model
        casts faster."""
        rows, starts = np.asarray(rows, dtype=np.int64), np.asarray(starts, dtype=np.int64)
        lengths = self.lengths[rows]
        if ((starts < 0) | (starts >= crop_starts(lengths, n_frames))).any():
            raise ValueError(f"crop starts {starts} out of range for tracks of {lengths} frames")
        out = np.empty((len(rows), n_frames, N_MELS), dtype=self._mel.dtype)  # (b, n, 128)
        for i, (first, start, length) in enumerate(
            zip(self._offsets[rows], starts, lengths, strict=True)
        ):
            if start + n_frames <= length:  # one slice: 10x faster than an index into a memmap
                out[i] = self._mel[first + start : first + start + n_frames]
            else:  # frame t is frame (start + t) mod L of the track: the tiled track, cut at start
                out[i] = self._mel[first + (start + np.arange(n_frames)) % length]
        return self._finite(out, rows).astype(dtype or out.dtype, copy=False)

    def segments(self, row, n_frames: int = SEGMENT_FRAMES) -> np.ndarray:
        """(k, n_frames, 128) float32 evaluation segments of track `row` (frontend.segments)."""
        return segments(self.frames(row), n_frames)
