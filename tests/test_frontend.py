"""Tests of the paper's front end (preprocess/frontend.py): decode, log-mel, standardize, tiling.

References come from librosa called directly with the paper's parameters; every audio file is
generated here. The first librosa call of a process imports scipy.signal (~3 s) and, on a fresh
install, lets numba compile librosa's kernels once (~30 s, then cached in site-packages): that
one-time cost is not this test's runtime.
"""

from __future__ import annotations

import re
import warnings
import wave

import numpy as np
import pytest
import soundfile as sf

from preprocess import frontend
from preprocess.frontend import (
    HOP_LENGTH,
    N_MELS,
    SAMPLE_RATE,
    AudioError,
    AudioWarning,
    crop,
    crop_starts,
    file_frames,
    load_audio,
    log_mel,
    segments,
    standardize,
    tile,
)

FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
# Our decode is librosa's decode (same soundfile call), so even lossy codecs agree to float32
# rounding; every wrong formula misses by > 1e-2 (test_tolerance_catches_wrong_formulas).
ATOL = 1e-4
FLOAT16_ATOL = 5e-3  # float16 storage: relative precision 2**-11 on raw and standardized values


def make_signal(sr: int, seconds: float, channels: int, seed: int) -> np.ndarray:
    """(n, channels) float32: a few tones with a slow tremolo plus a little noise (a music-like
    spectrum)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    mono = (
        sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(80, sr / 5, 4)) / 4
    )
    mono = mono * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) + 0.02 * rng.standard_normal(t.size)
    return (
        0.4 * np.stack([np.roll(mono, 37 * c) * (1 - 0.2 * c) for c in range(channels)], axis=1)
    ).astype(np.float32)


def write_audio(path, sr: int, seconds: float, channels: int, seed: int):
    fmt, subtype = FORMATS[path.suffix[1:].lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), make_signal(sr, seconds, channels, seed), sr, format=fmt, subtype=subtype)
    return path


def write_wav_header_rate(path, rate: int, n_samples: int):
    """A valid 16-bit mono WAV whose header claims `rate` Hz (soundfile refuses to write such
    rates)."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.sin(np.arange(n_samples)) * 1e4).astype("<i2").tobytes())
    return path


def truncated_mp3(path, seconds: float = 4.0):
    """An MP3 cut to 40% of its bytes: its (LAME Xing) header still declares the full length."""
    data = write_audio(path, 44100, seconds, 2, seed=8).read_bytes()
    path.write_bytes(data[: int(0.4 * len(data))])
    return path


def librosa_logmel(path, max_seconds=None, y=None) -> np.ndarray:
    """The reference: librosa.load + melspectrogram(power=1) + log10(1 + 10 mel), transposed."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if y is None:
            y = librosa.load(str(path), sr=22050, mono=True, duration=max_seconds)[0]
        mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=512, power=1.0)
    return np.log10(1 + 10 * mel).T


# --- Values equal librosa -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ext, sr, channels",
    [
        ("wav", 22050, 1),
        ("wav", 44100, 2),
        ("flac", 16000, 2),
        ("flac", 44100, 1),
        ("ogg", 44100, 2),
        ("ogg", 22050, 1),
        ("mp3", 44100, 2),
        ("mp3", 16000, 1),
        ("mp3", 22050, 2),
    ],
)
def test_log_mel_equals_librosa(tmp_path, ext, sr, channels):
    path = write_audio(tmp_path / f"x.{ext}", sr, 1.3, channels, seed=sr + channels)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    ours, reference = log_mel(y), librosa_logmel(path)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    assert ours.shape == reference.shape == (1 + len(y) // HOP_LENGTH, N_MELS)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=ATOL)
    assert reference.max() > 0.1  # the signal is not silence: the comparison means something


def test_load_audio_length_resampling_and_max_seconds(tmp_path):
    import librosa

    path = write_audio(tmp_path / "x.flac", 44100, 2.0, 2, seed=3)
    y = load_audio(path)
    assert len(y) == int(np.ceil(2.0 * 44100 * SAMPLE_RATE / 44100))
    # the same decode, bit for bit
    np.testing.assert_array_equal(y, librosa.load(str(path), sr=22050, mono=True)[0])
    mono = write_audio(tmp_path / "m.ogg", 16000, 1.0, 1, seed=6)
    np.testing.assert_array_equal(load_audio(mono), librosa.load(str(mono), sr=22050, mono=True)[0])
    three = tmp_path / "three.wav"
    sf.write(str(three), make_signal(44100, 0.5, 3, seed=7), 44100)
    np.testing.assert_array_equal(
        load_audio(three), librosa.load(str(three), sr=22050, mono=True)[0]
    )
    head = load_audio(path, max_seconds=0.7)
    assert len(head) == int(np.ceil(int(0.7 * 44100) * SAMPLE_RATE / 44100))
    np.testing.assert_allclose(
        log_mel(head), librosa_logmel(path, max_seconds=0.7), rtol=0, atol=ATOL
    )


@pytest.mark.filterwarnings("ignore:n_fft=1024 is too large")
def test_log_mel_of_a_signal_shorter_than_one_window():
    y = make_signal(22050, 0.005, 1, seed=4)[:, 0]  # 110 samples < n_fft / 2
    assert log_mel(y).shape == (1, N_MELS)
    np.testing.assert_allclose(log_mel(y), librosa_logmel(None, y=y), rtol=0, atol=ATOL)


def test_tolerance_catches_wrong_formulas(tmp_path):
    """Each plausible mistake moves the values by far more than ATOL (and more than the float16
    tolerance)."""
    import librosa

    path = write_audio(tmp_path / "x.ogg", 44100, 1.3, 2, seed=5)
    y = librosa.load(str(path), sr=22050)[0]
    ours = log_mel(load_audio(path))
    common = dict(y=y, sr=22050, n_fft=1024, hop_length=512)
    mel = librosa.feature.melspectrogram
    wrong = {
        "power=2": np.log10(1 + 10 * mel(**common, power=2.0)).T,
        "natural log": np.log(1 + 10 * mel(**common, power=1.0)).T,
        "missing x10": np.log10(1 + mel(**common, power=1.0)).T,
        "htk mel": np.log10(1 + 10 * mel(**common, power=1.0, htk=True)).T,
        "no norm": np.log10(1 + 10 * mel(**common, power=1.0, norm=None)).T,
        "n_fft 2048": np.log10(1 + 10 * mel(**{**common, "n_fft": 2048}, power=1.0)).T,
    }
    for name, values in wrong.items():
        assert values.shape == ours.shape
        assert np.abs(values - ours).max() > 10 * FLOAT16_ATOL, name
    # an uncentered STFT: the frame count
    assert len(mel(**common, power=1.0, center=False).T) != len(ours)


# --- Bad files and options ------------------------------------------------------------------------
def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nothing\.wav: file not found"):
        load_audio(tmp_path / "nothing.wav")
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.mp3: empty file"):
        load_audio(tmp_path / "empty.mp3")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(AudioError, match=r"text\.wav: cannot decode") as info:
        load_audio(tmp_path / "text.wav")
    assert info.value.reason.startswith("cannot decode") and info.value.path.endswith("text.wav")


def test_a_text_file_named_mp3_is_not_called_a_pipe(tmp_path):
    """Issue 21: libsndfile's MP3 reader said "not a regular file (possibly a pipe?)" of a text
    file."""
    (tmp_path / "notes.mp3").write_text("my notes, not audio\n" * 20)
    with pytest.raises(AudioError) as info:
        load_audio(tmp_path / "notes.mp3")
    assert str(info.value) == (
        f"{tmp_path / 'notes.mp3'}: cannot decode: not readable audio (LibsndfileError: Format not "
        "recognised.)"
    )


@pytest.mark.parametrize("value", [1e30, -1001.0, np.inf, np.nan])
def test_absurd_sample_values_are_refused(tmp_path, value):
    """Issue 21: a float WAV holding 1e30 decoded without a word (and moved a store's mean/std);
    NaN or 1e30 in one channel of two must not hide in the downmix either."""
    signal = make_signal(22050, 0.5, 2, seed=4)  # (n, 2)
    signal[100:110, 1] = value
    path = tmp_path / "loud.wav"
    sf.write(str(path), signal, 22050, subtype="FLOAT")
    finite = f"reach {abs(value):.3g}, over 1000 times full scale (1.0)"
    size = finite if np.isfinite(value) else "are not finite"
    with pytest.raises(AudioError, match=re.escape(f"loud.wav: decoded samples {size}:")) as info:
        load_audio(path)
    assert info.value.reason.endswith(": a corrupt or wrongly scaled file")
    with pytest.raises(AudioError, match=r"loud\.wav: decoded samples"):  # --annotate's path
        file_frames(path, 0.0, 1.0)
    signal[100:110, 1] = 999.0  # loud, but below the bound: decoded as it is
    sf.write(str(path), signal, 22050, subtype="FLOAT")
    assert load_audio(path).max() == pytest.approx((999.0 + signal[100:110, 0].max()) / 2, rel=1e-3)


@pytest.mark.parametrize("seconds", [-5.0, 0.0, float("inf"), float("nan")])
def test_max_seconds_must_be_positive(tmp_path, seconds):
    """Hardening 8: a negative duration used to read the whole file (int(-5 * rate) = -1 frames =
    all)."""
    path = write_audio(tmp_path / "x.wav", 22050, 0.5, 1, seed=1)
    with pytest.raises(AudioError, match=r"max_seconds .*must be a number of seconds > 0"):
        load_audio(path, max_seconds=seconds)
    with pytest.raises(AudioError, match=r"max_seconds"):
        file_frames(path, 0.0, 1.0, max_seconds=seconds)


@pytest.mark.parametrize("rate", [1, 999, 2_000_000])
def test_implausible_sample_rates_are_refused_before_resampling(tmp_path, rate):
    """Hardening 9: a 1 Hz header made the resampler allocate 22,050x the file (a MemoryError for 40
    KB)."""
    path = write_wav_header_rate(tmp_path / "x.wav", rate, 200)
    with pytest.raises(AudioError, match=rf"x\.wav: implausible sample rate {rate} Hz") as info:
        load_audio(path)
    assert info.value.reason == f"implausible sample rate {rate} Hz in its header"


def test_decoded_length_is_bounded_before_resampling(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "x.wav", 8000, 2.0, 1, seed=2)
    monkeypatch.setattr(frontend, "MAX_DURATION_S", 1)
    with pytest.raises(
        AudioError, match=r"x\.wav: 2 s of audio is longer than the 1 s decoded at once: pass --max"
    ):
        load_audio(path)
    # the bound applies to what is read
    assert len(load_audio(path, max_seconds=0.5)) == int(0.5 * 22050)


def test_a_truncated_mp3_warns(tmp_path):
    """Hardening 8: a truncated MP3 decodes shorter than its header says; say so instead of staying
    silent."""
    path = truncated_mp3(tmp_path / "cut.mp3")
    with pytest.warns(AudioWarning, match=r"decoded 1\.\d\d s of the 4\.00 s its header declares"):
        y = load_audio(path)
    assert 1.0 < len(y) / SAMPLE_RATE < 2.0  # used as decoded, like librosa
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file and a cut read give no warning
        load_audio(write_audio(tmp_path / "whole.mp3", 44100, 1.0, 2, seed=8))
        load_audio(path.with_name("whole.mp3"), max_seconds=0.5)


# --- Standardization and tiling -------------------------------------------------------------------
def test_standardize_and_file_frames(tmp_path):
    x = np.array([[1.0, 3.0]], dtype=np.float64)
    z = standardize(x, 1.0, 2.0)
    assert z.dtype == np.float32 and z.tolist() == [[0.0, 1.0]]
    path = write_audio(tmp_path / "x.ogg", 44100, 1.0, 2, seed=3)
    expected = (log_mel(load_audio(path, 0.5)) - np.float32(0.3)) / np.float32(0.7)
    np.testing.assert_array_equal(file_frames(path, 0.3, 0.7, max_seconds=0.5), expected)


def test_tile_crop_and_segments_by_hand():
    track = np.arange(5)[:, None] * np.ones((1, 2))  # (5, 2): frame t holds t
    assert tile(track, 12)[:, 0].tolist() == [0, 1, 2, 3, 4] * 3  # ceil(12 / 5) = 3 copies
    assert tile(track, 5) is track and tile(track, 3) is track  # long enough: unchanged
    assert (
        crop_starts(5, 12) == 15 - 12 + 1
        and crop_starts(130, 130) == 1
        and crop_starts(200, 130) == 71
    )
    assert crop_starts(np.array([5, 200]), 12).tolist() == [4, 189]
    assert crop(track, 3, 12)[:, 0].tolist() == [3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert crop(track, 1, 3)[:, 0].tolist() == [1, 2, 3]
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="out of range"):
            crop(track, bad, 12)
    long = np.arange(11)[:, None]
    # remainder 8..10 dropped
    assert segments(long, 4)[..., 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # tiled to one segment
    assert segments(track, 12)[..., 0].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]]
    assert segments(np.arange(9)[:, None], 5).shape == (1, 5, 1)  # 9 frames: one segment, 4 dropped
