"""Audio front end (paper Sec. 3.1): decode, resample to 22,050 Hz mono, log-mel. Moved from audio.py."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------------------------
# The front end (defined ONLY here; every other module imports these)
# --------------------------------------------------------------------------------------------------------------
SAMPLE_RATE = 22050
N_FFT = 1024
HOP_LENGTH = 512
N_MELS = 128
SEGMENT_FRAMES = 130  # ~3 s: the audio module's input length (paper Section 4)

RESAMPLER = "soxr_hq"  # librosa.load's default res_type
LOG_FORMULA = "log10(1 + 10 * mel)"
AUDIO_EXTENSIONS = (".mp3", ".ogg", ".flac", ".wav")

REQUIRED_FRONT_END = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS}
# Further facts of the front end, written by build_store and checked by MelStore when a store has them.
OPTIONAL_FRONT_END = {
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


_STFT_BLOCK_FRAMES = 512  # frames per FFT block: bounds the float64 temporaries for long files


class AudioError(ValueError):
    """A file cannot be used (message names the file and the reason), or a store / selection is unusable.

    `path` and `reason` hold the two parts separately (failures.csv writes them as columns).
    """

    def __init__(self, message: str, path=None, reason: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = reason if reason is not None else message


def _file_error(path, reason: str) -> AudioError:
    return AudioError(f"{path}: {reason}", path=path, reason=reason)


# --------------------------------------------------------------------------------------------------------------
# Decoding and log-mel
# --------------------------------------------------------------------------------------------------------------
def load_audio(path, max_seconds: float | None = None) -> np.ndarray:
    """Decode `path` to mono float32 at 22,050 Hz, exactly like ``librosa.load(path, sr=22050, duration=...)``.

    Reads only the first `max_seconds` (int(max_seconds * native rate) samples, as librosa does), averages the
    channels, resamples with soxr HQ and fixes the length to ceil(n * 22050 / native rate).
    Returns (n,) float32. Raises AudioError (file and reason) for missing, empty or undecodable files.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise _file_error(path, "file not found")
    if path.stat().st_size == 0:
        raise _file_error(path, "empty file (0 bytes)")
    try:
        with soundfile.SoundFile(str(path)) as handle:
            native_rate = handle.samplerate
            n_read = -1 if max_seconds is None else int(max_seconds * native_rate)
            # The same call as librosa's __soundfile_load: (n,) or (n, channels) -> (channels, n).
            y = handle.read(frames=n_read, dtype="float32", always_2d=False).T
    except Exception as exc:  # libsndfile/mpg123 raise several types for broken files; all mean "cannot decode"
        message = " ".join(str(exc).split()).replace(f"Error opening {str(path)!r}: ", "")
        raise _file_error(path, f"cannot decode ({type(exc).__name__}: {message})") from None
    if y.ndim > 1 and y.shape[0] == 2:
        # librosa.to_mono is np.mean(y, axis=0); on this (2, n) strided view numpy reduces each pair in a slow
        # inner loop (~17 ms per 30 s clip). For two channels (left + right) / 2 is bit-identical (one float32
        # addition, then an exact halving) and ~15x faster.
        y = (y[0] + y[1]) / np.float32(2)
    elif y.ndim > 1:
        y = np.mean(y, axis=0)  # librosa.to_mono (other channel counts: numpy's own summation order)
    if y.size == 0:
        raise _file_error(path, "no audio samples")
    if not np.isfinite(y).all():
        raise _file_error(path, "decoded samples are not finite")
    return _resample(y, native_rate)


def _resample(y: np.ndarray, native_rate: int) -> np.ndarray:
    """librosa.resample(y, orig_sr=native_rate, target_sr=22050, res_type="soxr_hq") with fix=True."""
    if native_rate == SAMPLE_RATE:
        return np.ascontiguousarray(y, dtype=np.float32)
    import soxr

    n_out = int(np.ceil(y.shape[-1] * float(SAMPLE_RATE) / native_rate))
    y_hat = soxr.resample(y, native_rate, SAMPLE_RATE, quality=RESAMPLER)
    if y_hat.shape[-1] > n_out:
        y_hat = y_hat[:n_out]
    elif y_hat.shape[-1] < n_out:
        y_hat = np.pad(y_hat, (0, n_out - y_hat.shape[-1]))
    return np.ascontiguousarray(y_hat, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _mel_basis_t() -> np.ndarray:
    """(513, 128) float32 transposed Slaney mel filterbank, built by librosa once per process."""
    import librosa.filters

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=None, htk=False,
                                norm="slaney", dtype=np.float32)
    return np.ascontiguousarray(basis.T)


@functools.lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
    """(1024,) float64 periodic Hann window (scipy.signal.get_window('hann', 1024, fftbins=True), as librosa)."""
    import scipy.signal

    return np.asarray(scipy.signal.get_window("hann", N_FFT, fftbins=True), dtype=np.float64)


def log_mel(y: np.ndarray) -> np.ndarray:
    """(n,) mono 22,050 Hz signal -> (1 + n // 512, 128) float32 log10(1 + 10 * mel-magnitude).

    Centered STFT: the signal is zero-padded by n_fft // 2 on both sides and frame t covers
    padded[512 t : 512 t + 1024]. Like librosa, the windowed frames are transformed in float64 and the
    magnitude is kept in float32; the FFT runs in blocks of frames to bound the temporaries.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"log_mel expects a non-empty 1-D signal, got shape {y.shape}")
    padded = np.pad(y, N_FFT // 2, mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]  # (n_frames, 1024) view
    window, basis_t = _hann_window(), _mel_basis_t()
    out = np.empty((frames.shape[0], N_MELS), dtype=np.float32)
    for start in range(0, frames.shape[0], _STFT_BLOCK_FRAMES):
        block = frames[start:start + _STFT_BLOCK_FRAMES]
        magnitude = np.abs(np.fft.rfft(block * window, axis=-1)).astype(np.float32)  # (b, 513), power 1
        np.matmul(magnitude, basis_t, out=out[start:start + len(block)])  # (b, 128) mel magnitude
    np.log10(1 + 10 * out, out=out)
    return out


def _standardize(logmel, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std in float32: the one formula used for the store and for new files."""
    return (np.asarray(logmel, dtype=np.float32) - np.float32(mean)) / np.float32(std)


