"""The paper's audio front end (Sec. 3.1): mono 22,050 Hz audio -> log-mel frames -> standardized 3
s inputs.

    y   = librosa.load(path, sr=22050, mono=True)     channel mean, resampled with soxr "HQ"
    mel = |STFT(y)| @ Slaney-mel(128)                  n_fft 1024, Hann window, hop 512, centered
                                                       (zero padding)
    x   = log10(1 + 10 * mel)                          (frames, 128) float32
    z   = (x - mean) / std                             mean and std over a whole dataset's store

The audio module reads 130-frame (~3 s) crops of z; `tile`, `crop` and `segments` are the one
definition of how a track becomes such inputs (a track shorter than 130 frames is repeated).
docs/original.md gives the sources.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
N_FFT = 1024
HOP_LENGTH = 512
N_MELS = 128
SEGMENT_FRAMES = 130  # ~3 s: the audio module's input length (paper Sec. 4)

RESAMPLER = "soxr_hq"  # librosa.load's default res_type
LOG_FORMULA = "log10(1 + 10 * mel)"
AUDIO_EXTENSIONS = (".mp3", ".ogg", ".flac", ".wav")
# Headers outside these rates are broken: a 1 Hz header would make the resampler allocate 22,050x
# the file.
MIN_RATE = 1_000
MAX_RATE = 1_000_000
# Largest |sample| accepted after decoding. Full scale is 1.0: lossy decoders overshoot it by a few
# dB and float masters keep at most tens of dB of headroom, so 1,000 (+60 dBFS) is beyond anything
# recorded at a plausible level. Larger values are a corrupt or wrongly scaled file (e.g. float WAV
# samples written in 16-bit scale, up to 32,768): their log-mel would sit >= 3 above every other
# track's and move the store's mean and std for all of them.
MAX_ABS_SAMPLE = 1000.0
# longest audio decoded at once (about 1.3 GB at 22,050 Hz); use max_seconds beyond it
MAX_DURATION_S = 4 * 3600
# Where the max_seconds excerpt of a longer file is taken: its first seconds (the default, as
# librosa.load with a duration) or its middle, from frame (frames - wanted) // 2 on (full songs:
# MTG-Jamendo, preprocess/jamendo.py).
EXCERPTS = ("start", "middle")
_PIPE_GUESS = "File does not exist or is not a regular file (possibly a pipe?)."

# Written into every store and checked when one is opened (the first four are required).
FRONT_END = {
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "n_mels": N_MELS,
    "win_length": N_FFT,
    "window": "hann",
    "center": True,
    "pad_mode": "constant",
    "power": 1.0,
    "fmin": 0.0,
    "fmax": SAMPLE_RATE / 2,
    "mel_norm": "slaney",
    "mel_htk": False,
    "log_formula": LOG_FORMULA,
}


class AudioError(ValueError):
    """A file that cannot be used, or an unusable store or option. `path` and `reason` are kept
    apart for the store's failure list."""

    def __init__(self, message: str, path=None, reason: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = message if reason is None else reason


class AudioWarning(UserWarning):
    """A file that decoded, but not as its header says (e.g. a truncated MP3): the store builder
    records it."""


def file_error(path, reason: str) -> AudioError:
    return AudioError(f"{path}: {reason}", path=path, reason=reason)


def check_seconds(name: str, seconds, allow_zero: bool = False) -> None:
    """A duration (max_seconds, --min-seconds) is None or a finite number of seconds > 0 (>= 0 if
    allow_zero)."""
    if seconds is not None and not (
        math.isfinite(seconds) and (seconds > 0 or allow_zero and seconds == 0)
    ):
        raise AudioError(
            f"{name} {seconds}: must be a number of seconds {'>=' if allow_zero else '>'} 0 (or "
            "left "
            "out)."
        )


# --- Decoding -------------------------------------------------------------------------------------
def load_audio(path, max_seconds: float | None = None, excerpt: str = "start") -> np.ndarray:
    """(n,) float32 mono at 22,050 Hz, equal to ``librosa.load(path, sr=22050,
    duration=max_seconds)[0]`` (excerpt "middle": the max_seconds that start at frame (frames -
    wanted) // 2, in the file's own rate).

    AudioError names the file for a missing, empty, undecodable or implausible file. A file that
    decodes shorter than its header declares gives an AudioWarning (the store records it) and is
    used as decoded, like librosa.
    """
    import soundfile

    check_seconds("max_seconds", max_seconds)
    if excerpt not in EXCERPTS:
        raise AudioError(f"excerpt {excerpt!r}: choose one of {', '.join(EXCERPTS)}.")
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "file not found")
    if path.stat().st_size == 0:
        raise file_error(path, "empty file (0 bytes)")
    try:
        with soundfile.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            declared = handle.frames
            if not MIN_RATE <= rate <= MAX_RATE:
                raise file_error(path, f"implausible sample rate {rate} Hz in its header")
            wanted = declared if max_seconds is None else min(declared, int(max_seconds * rate))
            if wanted / rate > MAX_DURATION_S:
                raise file_error(
                    path,
                    f"{wanted / rate:.0f} s of audio is longer than the {MAX_DURATION_S} s "
                    "decoded at once: pass --max-seconds",
                )
            if excerpt == "middle":
                handle.seek((declared - wanted) // 2)
            # (channels, n), as librosa reads
            y = handle.read(frames=wanted, dtype="float32", always_2d=True).T
    except AudioError:
        raise
    except Exception as exc:  # libsndfile and mpg123 raise several types for broken files
        # libsndfile's MP3 reader guesses "possibly a pipe" for any bytes it cannot parse; the path
        # is a regular file (checked above)
        message = (
            " ".join(str(exc).split())
            .replace(f"Error opening {str(path)!r}: ", "")
            .replace(_PIPE_GUESS, "Format not recognised.")
        )
        raise file_error(
            path, f"cannot decode: not readable audio ({type(exc).__name__}: {message})"
        ) from None
    if y.shape[1] == 0:
        raise file_error(path, "no audio samples")
    peak = float(np.abs(y).max())  # of every channel before the downmix; NaN if any sample is
    if not peak <= MAX_ABS_SAMPLE:
        size = (
            f"reach {peak:.3g}, over {MAX_ABS_SAMPLE:g} times full scale (1.0)"
            if math.isfinite(peak)
            else "are not finite"
        )
        raise file_error(path, f"decoded samples {size}: a corrupt or wrongly scaled file")
    if wanted - y.shape[1] > rate // 10:
        warnings.warn(
            AudioWarning(
                f"decoded {y.shape[1] / rate:.2f} s of the {wanted / rate:.2f} s its header "
                "declares (truncated file?)"
            ),
            stacklevel=2,
        )
    # librosa.to_mono is np.mean(y, axis=0); for two channels (y[0] + y[1]) / 2 is bit-identical,
    # 15x faster
    y = (y[0] + y[1]) / np.float32(2) if len(y) == 2 else np.mean(y, axis=0)
    return _resample(y, rate)


def _resample(y: np.ndarray, rate: int) -> np.ndarray:
    """librosa.resample(y, orig_sr=rate, target_sr=22050, res_type="soxr_hq", fix=True)."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(y, dtype=np.float32)
    import soxr

    n_out = math.ceil(len(y) * (SAMPLE_RATE / rate))  # librosa's rounding
    y = soxr.resample(y, rate, SAMPLE_RATE, quality=RESAMPLER)[:n_out]
    return np.pad(y, (0, n_out - len(y))).astype(np.float32)


# --- Log-mel and standardization ------------------------------------------------------------------
def log_mel(y: np.ndarray) -> np.ndarray:
    """(n,) mono 22,050 Hz signal -> (1 + n // 512, 128) float32 log10(1 + 10 * mel-magnitude)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32),
        sr=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        window="hann",
        center=True,
        pad_mode="constant",
        # (128, frames)
        power=1.0,
        n_mels=N_MELS,
        htk=False,
        norm="slaney",
    )
    return np.ascontiguousarray(np.log10(1 + 10 * mel).T)


def standardize(logmel, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std in float32: the one formula for the store and for new files."""
    return (np.asarray(logmel, dtype=np.float32) - np.float32(mean)) / np.float32(std)


def file_frames(path, mean: float, std: float, max_seconds: float | None = None) -> np.ndarray:
    """A new audio file -> (n, 128) float32 frames standardized with a store's mean/std."""
    return standardize(log_mel(load_audio(path, max_seconds)), mean, std)


# --- Tiling: how a track of L frames becomes n_frames-long inputs ---------------------------------
def tile(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """(L, ...) -> (ceil(n_frames / L) * L, ...): a track shorter than n_frames repeated; longer
    ones unchanged."""
    repeats = -(-n_frames // len(frames))
    return np.concatenate([frames] * repeats) if repeats > 1 else frames


def crop_starts(length, n_frames: int):
    """Number of valid starts of an n_frames crop of a track of `length` frames (int or array),
    after tiling."""
    return np.maximum(length, -(-n_frames // length) * length) - n_frames + 1


def crop(frames: np.ndarray, start: int, n_frames: int) -> np.ndarray:
    """(n_frames, ...) = tile(frames, n_frames)[start:start + n_frames], for 0 <= start <
    crop_starts."""
    if not 0 <= start < crop_starts(len(frames), n_frames):
        raise ValueError(
            f"crop start {start} out of range for {len(frames)} frames and n_frames {n_frames}"
        )
    return tile(frames, n_frames)[start : start + n_frames]


def segments(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """(k, n_frames, ...) non-overlapping segments, remainder dropped; a short track is tiled to one
    segment."""
    tiled = tile(frames, n_frames)
    k = len(tiled) // n_frames
    return tiled[: k * n_frames].reshape(k, n_frames, *frames.shape[1:])
