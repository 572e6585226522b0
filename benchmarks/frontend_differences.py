"""How far two undocumented front-end choices move the log-mel (docs/original.md, "Audio
front end").

    python benchmarks/frontend_differences.py      # resampy needed for kaiser_best (else skipped)

On the clips the front-end tests write (tests/test_frontend.py: make_signal, write_audio; the same
formats, rates, channels, lengths and seeds), it compares our log-mel, log10(1 + 10 * mel), with
  * STFT padding "reflect" (librosa 0.6, the original's) instead of our "constant" (zeros),
  * resampling with "kaiser_best" (resampy, librosa 0.6's default, the original's) instead of our
    "soxr_hq" (librosa >= 0.10's default),
and prints, per clip, the largest |difference| over all frames and bands, the frames where it
exceeds 1e-3, and the largest difference on the other frames.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import librosa
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_frontend import write_audio  # noqa: E402

from preprocess.frontend import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, load_audio, log_mel  # noqa: E402

# (extension, sample rate, channels, seconds, seed): test_log_mel_equals_librosa's clips, then
# test_load_audio_length_resampling_and_max_seconds' two
CLIPS = [
    *[
        (ext, sr, channels, 1.3, sr + channels)
        for ext, sr, channels in [
            ("wav", 22050, 1),
            ("wav", 44100, 2),
            ("flac", 16000, 2),
            ("flac", 44100, 1),
            ("ogg", 44100, 2),
            ("ogg", 22050, 1),
            ("mp3", 44100, 2),
            ("mp3", 16000, 1),
            ("mp3", 22050, 2),
        ]
    ],
    ("flac", 44100, 2, 2.0, 3),
    ("ogg", 16000, 1, 1.0, 6),
]
SHOWN = 1e-3  # frames whose largest |difference| exceeds this are listed


def log_mel_padded(y: np.ndarray, pad_mode: str) -> np.ndarray:
    """Our log_mel with another STFT padding: (frames, 128)."""
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        pad_mode=pad_mode,
        power=1.0,
        n_mels=N_MELS,
    )
    return np.log10(1 + 10 * mel).T


def describe(ours: np.ndarray, other: np.ndarray, below_hz: float = SAMPLE_RATE) -> str:
    """Largest |difference| (its frame and mel band's centre), the frames above SHOWN, the largest
    difference on the other frames, the median over frames of each frame's largest, and the largest
    in the bands whose centre lies below `below_hz`."""
    diff = np.abs(ours - other)  # (frames, 128)
    frame, band = np.unravel_index(diff.argmax(), diff.shape)
    centres = librosa.mel_frequencies(N_MELS + 2, fmax=SAMPLE_RATE / 2)[1:-1]  # (128,) Hz
    per_frame = diff.max(axis=1)  # (frames,)
    above = np.flatnonzero(per_frame > SHOWN)
    rest = np.delete(per_frame, above)
    shown = "all" if len(above) == len(per_frame) else above.tolist()
    return (
        f"max {diff.max():.4f} (frame {frame}, band {band}: {centres[band]:.0f} Hz); frames > "
        f"{SHOWN:g}: {shown} of {len(per_frame)}; others max {rest.max() if rest.size else 0:.1e}; "
        f"median frame max {np.median(per_frame):.4f}"
        + (
            f"; below {below_hz:.0f} Hz max {diff[:, centres < below_hz].max():.4f}"
            if below_hz < SAMPLE_RATE
            else ""
        )
    )


def main() -> None:
    try:
        import resampy  # noqa: F401
    except ImportError:
        resampy = None
        print("resampy is not installed: kaiser_best is skipped (pip install resampy)")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ext, sr, channels, seconds, seed in CLIPS:
            path = write_audio(
                Path(folder) / f"{sr}_{channels}_{seed}.{ext}", sr, seconds, channels, seed
            )
            y = load_audio(path)  # soxr_hq
            ours = log_mel(y)
            print(
                f"{path.name} ({sr} Hz, {channels} ch, {seconds} s; log-mel std {ours.std():.3f}, "
                f"max {ours.max():.2f})"
            )
            print(f"  reflect padding:      {describe(ours, log_mel_padded(y, 'reflect'))}")
            if resampy is not None and sr != SAMPLE_RATE:
                kaiser = librosa.load(str(path), sr=SAMPLE_RATE, mono=True, res_type="kaiser_best")[
                    0
                ]
                # 90% of the lower Nyquist frequency: below the resamplers' transition bands
                below = 0.9 * min(sr, SAMPLE_RATE) / 2
                print(f"  kaiser_best resampler: {describe(ours, log_mel(kaiser), below)}")


if __name__ == "__main__":
    main()
