"""Tests of the audio front end and the log-mel store (preprocess/store.py).

Reference values come from librosa called directly with the paper's parameters; every audio file is generated
here (short synthetic signals written as WAV / FLAC / OGG / MP3 at several rates and channel counts).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from preprocess import store as audio
from preprocess.store import (
    HOP_LENGTH,
    N_MELS,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    AudioError,
    MelStore,
    audio_file_frames,
    build_store,
    load_audio,
    log_mel,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}
# Our decode is librosa's decode (same soundfile call), so even lossy codecs agree to float32 rounding; the
# tolerance below is 1e-4 on values of order 1, while every wrong formula misses by > 1e-2 (test_tolerance_...).
ATOL = 1e-4
FLOAT16_ATOL = 5e-3  # float16 storage: relative precision 2**-11 on raw and standardized values


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------
def make_signal(sr: int, seconds: float, channels: int, seed: int) -> np.ndarray:
    """(n, channels) float32: a few tones with a slow tremolo plus a little noise (a music-like spectrum)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    mono = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(80, sr / 5, 4)) / 4
    mono = mono * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) + 0.02 * rng.standard_normal(t.size)
    channels_ = [np.roll(mono, 37 * c) * (1 - 0.2 * c) for c in range(channels)]
    return (0.4 * np.stack(channels_, axis=1)).astype(np.float32)


def write_audio(path: Path, sr: int, seconds: float, channels: int, seed: int) -> Path:
    fmt, subtype = FORMATS[path.suffix[1:].lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), make_signal(sr, seconds, channels, seed), sr, format=fmt, subtype=subtype)
    return path


def librosa_logmel(path, max_seconds=None, y=None) -> np.ndarray:
    """The brief's reference: librosa.load + melspectrogram(power=1) + log10(1 + 10 mel), transposed."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if y is None:
            y = librosa.load(str(path), sr=22050, mono=True, duration=max_seconds)[0]
        mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=512, power=1.0)
    return np.log10(1 + 10 * mel).T


def read_failures(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {row["track_id"]: row for row in rows}


def write_tracks_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track_id", "path"])
        writer.writerows(rows)
    return path


def read_store(path: Path) -> dict:
    with h5py.File(path, "r") as store:
        return {"track_ids": store["track_ids"].asstr()[...].tolist(), "offsets": store["offsets"][...],
                "mel": store["mel"][...], "mean": float(store.attrs["mean"]), "std": float(store.attrs["std"])}


# --------------------------------------------------------------------------------------------------------------
# A small corpus, built once: good files in four formats (one shorter than 130 frames) and four bad ones
# --------------------------------------------------------------------------------------------------------------
GOOD = {  # track id -> (file, native rate, seconds, channels)
    "t_wav": ("a/t_wav.wav", 44100, 3.2, 2),
    "t_flac": ("a/t_flac.flac", 16000, 2.0, 1),
    "t_ogg": ("b/t_ogg.ogg", 44100, 2.5, 2),
    "t_mp3": ("b/t_mp3.mp3", 22050, 3.5, 2),
    "t_short": ("t_short.wav", 22050, 1.0, 1),  # 44 frames: tiled by the reader
}
MIN_SECONDS = 0.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    audio_dir = root / "audio"
    for seed, (relative, sr, seconds, channels) in enumerate(GOOD.values()):
        write_audio(audio_dir / relative, sr, seconds, channels, seed)
    (audio_dir / "bad").mkdir()
    (audio_dir / "bad" / "empty.mp3").write_bytes(b"")
    (audio_dir / "bad" / "garbage.ogg").write_bytes(np.random.default_rng(1).bytes(5000))
    flac = write_audio(root / "whole.flac", 44100, 1.0, 1, 9).read_bytes()
    (audio_dir / "bad" / "truncated.flac").write_bytes(flac[:60])
    write_audio(audio_dir / "bad" / "tiny.wav", 22050, 0.2, 1, 10)
    rows = [("t_mp3", GOOD["t_mp3"][0]), ("t_wav", str((audio_dir / GOOD["t_wav"][0]).absolute())),
            ("empty", "bad/empty.mp3"), ("t_short", GOOD["t_short"][0]), ("garbage", "bad/garbage.ogg"),
            ("t_flac", GOOD["t_flac"][0]), ("truncated", "bad/truncated.flac"), ("tiny", "bad/tiny.wav"),
            ("t_ogg", GOOD["t_ogg"][0])]  # deliberately unsorted, with one absolute path
    tracks_csv = write_tracks_csv(root / "tracks.csv", rows)
    out = root / "store" / "nested" / "mels.h5"  # parent folders do not exist yet
    summary = build_store(audio_dir, out, tracks_csv=tracks_csv, min_seconds=MIN_SECONDS, dtype="float32",
                          progress=False)
    return {"root": root, "audio_dir": audio_dir, "tracks_csv": tracks_csv, "rows": rows, "out": out,
            "summary": summary, "good_ids": [r[0] for r in rows if r[0] in GOOD]}


# --------------------------------------------------------------------------------------------------------------
# Values equal librosa
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ext, sr, channels",
    [("wav", 22050, 1), ("wav", 44100, 2), ("flac", 16000, 2), ("flac", 44100, 1), ("ogg", 44100, 2),
     ("ogg", 22050, 1), ("mp3", 44100, 2), ("mp3", 16000, 1), ("mp3", 22050, 2)],
)
def test_log_mel_equals_librosa(tmp_path, ext, sr, channels):
    path = write_audio(tmp_path / f"x.{ext}", sr, 1.3, channels, seed=sr + channels)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    ours, reference = log_mel(y), librosa_logmel(path)
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape == (1 + len(y) // HOP_LENGTH, N_MELS)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=ATOL)
    assert reference.max() > 0.1  # the signal is not silence: the comparison means something


def test_load_audio_length_resampling_and_max_seconds(tmp_path):
    import librosa

    path = write_audio(tmp_path / "x.flac", 44100, 2.0, 2, seed=3)
    y = load_audio(path)
    assert len(y) == int(np.ceil(2.0 * 44100 * SAMPLE_RATE / 44100))
    np.testing.assert_array_equal(y, librosa.load(str(path), sr=22050, mono=True)[0])  # the same decode, bit for bit
    mono = write_audio(tmp_path / "m.ogg", 16000, 1.0, 1, seed=6)
    np.testing.assert_array_equal(load_audio(mono), librosa.load(str(mono), sr=22050, mono=True)[0])
    head = load_audio(path, max_seconds=0.7)
    assert len(head) == int(np.ceil(int(0.7 * 44100) * SAMPLE_RATE / 44100))
    np.testing.assert_allclose(log_mel(head), librosa_logmel(path, max_seconds=0.7), rtol=0, atol=ATOL)


def test_log_mel_of_a_signal_shorter_than_one_window():
    y = make_signal(22050, 0.005, 1, seed=4)[:, 0]  # 110 samples < n_fft / 2
    ours = log_mel(y)
    assert ours.shape == (1, N_MELS)
    np.testing.assert_allclose(ours, librosa_logmel(None, y=y), rtol=0, atol=ATOL)


def test_tolerance_catches_wrong_formulas(tmp_path):
    """Each plausible mistake moves the values by far more than ATOL (and more than the float16 tolerance)."""
    import librosa

    path = write_audio(tmp_path / "x.ogg", 44100, 1.3, 2, seed=5)
    y = librosa.load(str(path), sr=22050)[0]
    ours = log_mel(load_audio(path))
    common = dict(y=y, sr=22050, n_fft=1024, hop_length=512)
    wrong = {
        "power=2": np.log10(1 + 10 * librosa.feature.melspectrogram(**common, power=2.0)).T,
        "natural log": np.log(1 + 10 * librosa.feature.melspectrogram(**common, power=1.0)).T,
        "missing x10": np.log10(1 + librosa.feature.melspectrogram(**common, power=1.0)).T,
        "htk mel": np.log10(1 + 10 * librosa.feature.melspectrogram(**common, power=1.0, htk=True)).T,
        "no norm": np.log10(1 + 10 * librosa.feature.melspectrogram(**common, power=1.0, norm=None)).T,
        "n_fft 2048": np.log10(1 + 10 * librosa.feature.melspectrogram(**{**common, "n_fft": 2048}, power=1.0)).T,
    }
    for name, values in wrong.items():
        assert values.shape == ours.shape
        error = np.abs(values - ours).max()
        assert error > 10 * FLOAT16_ATOL, f"{name} differs by only {error}"
    # An uncentered STFT gives the same frames shifted by one, minus the edges: the frame count catches it.
    uncentered = librosa.feature.melspectrogram(**common, power=1.0, center=False).T
    assert len(uncentered) != len(ours)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nothing\.wav: file not found"):
        load_audio(tmp_path / "nothing.wav")
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.mp3: empty file"):
        load_audio(tmp_path / "empty.mp3")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(AudioError, match=r"text\.wav: cannot decode") as info:
        load_audio(tmp_path / "text.wav")
    assert info.value.reason.startswith("cannot decode")


# --------------------------------------------------------------------------------------------------------------
# The store: values, standardization, ids, failures
# --------------------------------------------------------------------------------------------------------------
def test_store_values_equal_librosa_and_are_standardized(corpus):
    store = read_store(corpus["out"])
    assert store["track_ids"] == corpus["good_ids"]  # --tracks order, failures removed
    assert store["mel"].dtype == np.float32 and store["offsets"].dtype == np.int64
    raws = []
    for i, track_id in enumerate(store["track_ids"]):
        reference = librosa_logmel(corpus["audio_dir"] / GOOD[track_id][0])
        stored = store["mel"][store["offsets"][i]:store["offsets"][i + 1]]
        assert stored.shape == reference.shape
        np.testing.assert_allclose(stored * store["std"] + store["mean"], reference, rtol=0, atol=ATOL)
        raws.append(log_mel(load_audio(corpus["audio_dir"] / GOOD[track_id][0])))
    everything = np.concatenate(raws).astype(np.float64)
    # rel 1e-9: float32 matmul rounding differs with the BLAS thread count (builds use one thread); a wrong
    # estimator (ddof=1, float32 accumulation) would be off by > 1e-6.
    assert store["mean"] == pytest.approx(everything.mean(), rel=1e-9)
    assert store["std"] == pytest.approx(everything.std(), rel=1e-9)
    np.testing.assert_allclose(store["mel"], (np.concatenate(raws) - store["mean"]) / store["std"], atol=1e-6)
    assert abs(store["mel"].mean()) < 1e-5 and store["mel"].std() == pytest.approx(1.0, abs=1e-5)


def test_store_attributes_and_summary(corpus):
    summary = corpus["summary"]
    assert (summary["stored"], summary["failed"], summary["skipped"], summary["total"]) == (5, 4, 0, 9)
    assert summary["already_done"] is False and summary["dtype"] == "float32"
    with h5py.File(corpus["out"], "r") as store:
        attrs = dict(store.attrs)
    assert (attrs["sample_rate"], attrs["n_fft"], attrs["hop_length"], attrs["n_mels"]) == (22050, 1024, 512, 128)
    assert attrs["log_formula"] == "log10(1 + 10 * mel)" and attrs["dtype"] == "float32"
    assert attrs["n_tracks"] == 5 and attrs["n_failed"] == 4
    assert summary["mean"] == attrs["mean"] and summary["std"] == attrs["std"]
    assert not audio._work_dir(corpus["out"]).exists()  # parts are cleaned up
    assert not corpus["out"].with_name("mels.h5.tmp").exists()


def test_failures_csv_lists_every_unusable_file_with_its_reason(corpus):
    failures = read_failures(corpus["out"].parent / "failures.csv")
    assert sorted(failures) == ["empty", "garbage", "tiny", "truncated"]
    assert failures["empty"]["path"] == "bad/empty.mp3"
    assert failures["empty"]["reason"] == "empty file (0 bytes)"
    assert failures["garbage"]["reason"].startswith("cannot decode")
    assert failures["truncated"]["reason"].startswith("cannot decode")
    assert failures["tiny"]["reason"] == f"too short: 0.20 s < --min-seconds {MIN_SECONDS:g}"


def test_float16_store_matches_within_float16_precision(corpus, tmp_path):
    out = tmp_path / "mels16.h5"
    build_store(corpus["audio_dir"], out, tracks_csv=corpus["tracks_csv"], min_seconds=MIN_SECONDS,
                progress=False)  # default dtype
    half, full = read_store(out), read_store(corpus["out"])
    assert half["mel"].dtype == np.float16
    assert half["track_ids"] == full["track_ids"] and np.array_equal(half["offsets"], full["offsets"])
    assert half["mean"] == full["mean"] and half["std"] == full["std"]  # statistics of the exact values
    raw16 = half["mel"].astype(np.float32) * half["std"] + half["mean"]
    np.testing.assert_allclose(raw16, full["mel"] * full["std"] + full["mean"], rtol=0, atol=FLOAT16_ATOL)


def test_track_ids_when_scanning(tmp_path):
    audio_dir = tmp_path / "audio"
    write_audio(audio_dir / "sub" / "song.mp3", 22050, 0.3, 1, 0)
    write_audio(audio_dir / "b.WAV", 22050, 0.3, 1, 1)
    write_audio(audio_dir / "a" / "c.flac", 22050, 0.3, 1, 2)
    (audio_dir / "notes.txt").write_text("not audio")
    write_audio(audio_dir / ".hidden" / "x.wav", 22050, 0.3, 1, 3)
    write_audio(audio_dir / ".y.wav", 22050, 0.3, 1, 4)
    tracks = audio.select_tracks(audio_dir)
    assert [t[0] for t in tracks] == ["a/c", "b", "sub/song"]
    assert [t[1] for t in tracks] == ["a/c.flac", "b.WAV", "sub/song.mp3"]
    write_audio(audio_dir / "b.ogg", 22050, 0.3, 1, 5)
    with pytest.raises(AudioError, match=r"b\.WAV and b\.ogg both give track id 'b'"):
        audio.select_tracks(audio_dir)


def test_tracks_csv_relative_and_absolute_paths_and_errors(tmp_path):
    absolute = str((tmp_path / "elsewhere" / "x.wav").absolute())
    csv_path = write_tracks_csv(tmp_path / "t.csv", [("z", "sub/a.mp3"), ("y", absolute)])
    tracks = audio.select_tracks(tmp_path, csv_path)
    assert tracks == [("z", "sub/a.mp3", str((tmp_path / "sub" / "a.mp3").absolute())), ("y", absolute, absolute)]
    write_tracks_csv(tmp_path / "dup.csv", [("z", "a.mp3"), ("z", "b.mp3")])
    with pytest.raises(AudioError, match=r"dup\.csv: track_id 'z' occurs more than once"):
        audio.select_tracks(tmp_path, tmp_path / "dup.csv")
    (tmp_path / "bad.csv").write_text("id,file\n1,a.mp3\n")
    with pytest.raises(AudioError, match=r"bad\.csv: header must contain track_id and path"):
        audio.select_tracks(tmp_path, tmp_path / "bad.csv")
    write_tracks_csv(tmp_path / "none.csv", [])
    with pytest.raises(AudioError, match=r"lists no tracks"):
        audio.select_tracks(tmp_path, tmp_path / "none.csv")
    with pytest.raises(AudioError, match=r"--tracks .*missing\.csv: no such file"):
        audio.select_tracks(tmp_path, tmp_path / "missing.csv")


def test_nothing_stored_is_an_error_with_failures_csv(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "e.mp3").write_bytes(b"")
    out = tmp_path / "out" / "mels.h5"
    with pytest.raises(AudioError, match=r"no track could be stored .* all 1 failed"):
        build_store(tmp_path / "audio", out, progress=False)
    assert not out.exists() and not audio._work_dir(out).exists()
    assert list(read_failures(out.parent / "failures.csv")) == ["e"]


# --------------------------------------------------------------------------------------------------------------
# Idempotency and crash safety
# --------------------------------------------------------------------------------------------------------------
def test_rerun_of_a_finished_store_is_already_done(corpus, capsys):
    before = corpus["out"].stat().st_mtime_ns
    summary = build_store(corpus["audio_dir"], corpus["out"], tracks_csv=corpus["tracks_csv"],
                          min_seconds=MIN_SECONDS, dtype="float32", jobs=2)
    assert summary["already_done"] is True
    assert (summary["stored"], summary["failed"], summary["skipped"], summary["computed"]) == (5, 4, 9, 0)
    assert corpus["out"].stat().st_mtime_ns == before
    assert "already done" in capsys.readouterr().out
    failures_csv = corpus["out"].parent / "failures.csv"
    expected = failures_csv.read_text()
    failures_csv.unlink()  # a rerun restores it from the store's `failures` dataset
    build_store(corpus["audio_dir"], corpus["out"], tracks_csv=corpus["tracks_csv"], min_seconds=MIN_SECONDS,
                dtype="float32", progress=False)
    assert failures_csv.read_text() == expected


def test_changed_selection_rebuilds_the_store(corpus, tmp_path):
    out = tmp_path / "mels.h5"
    rows = [r for r in corpus["rows"] if r[0] in GOOD]
    write_tracks_csv(tmp_path / "t.csv", rows)
    build_store(corpus["audio_dir"], out, tracks_csv=tmp_path / "t.csv", progress=False)
    write_tracks_csv(tmp_path / "t.csv", rows[:2])
    summary = build_store(corpus["audio_dir"], out, tracks_csv=tmp_path / "t.csv", progress=False)
    assert summary["already_done"] is False and summary["stored"] == 2
    assert read_store(out)["track_ids"] == [r[0] for r in rows[:2]]


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    import preprocess.store as A
    point = sys.argv[3]
    original_chunk, original_standardize = A._process_chunk, A._standardize

    def slow_chunk(task):  # the real work, then a pause: the test kills the build between parts
        result = original_chunk(task)
        time.sleep(0.4 if point == "parts" else 0.0)
        return result

    def slow_standardize(*args):  # pause inside the merge: the test kills while <out>.tmp is being written
        time.sleep(0.3 if point == "merge" else 0.0)
        return original_standardize(*args)

    A._process_chunk, A._standardize = slow_chunk, slow_standardize
    A.build_store(sys.argv[1], sys.argv[2], jobs=int(sys.argv[4]), chunk_tracks=1, progress=False)
""")


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill_midway(audio_dir: Path, out: Path, point: str, jobs: int, tmp_path: Path) -> list[int]:
    """Run build_store in a subprocess, SIGKILL it at `point`; returns the pids of its workers at that moment."""
    script = tmp_path / "killed_build.py"
    script.write_text(KILLED_BUILD)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, str(script), str(audio_dir), str(out), point, str(jobs)],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    work, tmp_store = audio._work_dir(out), out.with_name(out.name + ".tmp")
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready = any(work.glob("part-*.h5")) if point == "parts" else tmp_store.exists()
            if ready or process.poll() is not None:
                break
            time.sleep(0.01)
        assert process.poll() is None, f"the build ended before the kill: {process.stdout.read().decode()}"
        workers = _children(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return workers


@pytest.fixture(scope="module")
def crash_corpus(corpus, tmp_path_factory) -> dict:
    """Six tracks (copies of the corpus files) and one broken file, plus an uninterrupted reference build."""
    root = tmp_path_factory.mktemp("crash")
    audio_dir = root / "audio"
    audio_dir.mkdir()
    for k, track_id in enumerate(["t_wav", "t_ogg", "t_mp3", "t_short", "t_flac", "t_wav"]):
        source = corpus["audio_dir"] / GOOD[track_id][0]
        shutil.copy(source, audio_dir / f"{k}_{source.name}")
    (audio_dir / "9_broken.mp3").write_bytes(b"")
    reference = root / "reference" / "mels.h5"
    build_store(audio_dir, reference, jobs=1, progress=False)  # automatic chunking
    return {"audio_dir": audio_dir, "reference": reference}


@pytest.mark.parametrize("point, jobs", [("parts", 2), ("merge", 1)])
def test_kill_and_rerun_gives_the_uninterrupted_store(crash_corpus, tmp_path, point, jobs):
    out = tmp_path / "out" / "mels.h5"
    workers = _kill_midway(crash_corpus["audio_dir"], out, point, jobs, tmp_path)
    assert not out.exists()  # the output path never holds a partial store
    assert workers if jobs > 1 else not workers
    time.sleep(0.3)
    assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the killed build"
    done_before = len(list(audio._work_dir(out).glob("part-*.h5")))
    assert done_before >= 1

    summary = build_store(crash_corpus["audio_dir"], out, jobs=jobs, progress=False)
    assert summary["skipped"] >= done_before and summary["skipped"] + summary["computed"] == 7
    if point == "merge":
        assert summary["computed"] == 0  # every part was finished before the kill
    assert (summary["stored"], summary["failed"]) == (6, 1)
    resumed, reference = read_store(out), read_store(crash_corpus["reference"])
    assert resumed["track_ids"] == reference["track_ids"]
    assert np.array_equal(resumed["offsets"], reference["offsets"])
    assert np.array_equal(resumed["mel"], reference["mel"])  # bit for bit, whatever the chunking and jobs
    assert (resumed["mean"], resumed["std"]) == (reference["mean"], reference["std"])
    assert (out.parent / "failures.csv").read_text() == (
        crash_corpus["reference"].parent / "failures.csv").read_text()
    assert not audio._work_dir(out).exists()


def _die(task):
    """Stands in for _process_chunk in a forked worker: the process ends abruptly (like a decoder crash)."""
    os._exit(3)


def test_a_dying_worker_is_a_clear_error_not_a_hang(crash_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "_process_chunk", _die)
    with pytest.raises(AudioError, match=r"a worker process died .* rerun the same command"):
        build_store(crash_corpus["audio_dir"], tmp_path / "mels.h5", jobs=2, chunk_tracks=1, progress=False)
    assert not (tmp_path / "mels.h5").exists()


def test_a_second_simultaneous_build_is_refused(crash_corpus, tmp_path):
    out = tmp_path / "mels.h5"
    with audio._build_lock(audio._work_dir(out)):
        with pytest.raises(AudioError, match=r"another build of this store is running"):
            build_store(crash_corpus["audio_dir"], out, progress=False)


# --------------------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------------------
def _copy_with_attr(source: Path, target: Path, **changes) -> Path:
    shutil.copy(source, target)
    with h5py.File(target, "r+") as store:
        for name, value in changes.items():
            if value is None:
                del store.attrs[name]
            else:
                store.attrs[name] = value
    return target


def test_reader_refuses_another_front_end(corpus, tmp_path):
    bad = _copy_with_attr(corpus["out"], tmp_path / "bad.h5", n_fft=2048)
    with pytest.raises(AudioError, match=r"bad\.h5: attribute n_fft=2048 but this code's front end uses n_fft=1024"):
        MelStore(bad)
    power = _copy_with_attr(corpus["out"], tmp_path / "power.h5", power=2.0)
    with pytest.raises(AudioError, match=r"power\.h5: attribute power=2\.0"):
        MelStore(power)
    missing = _copy_with_attr(corpus["out"], tmp_path / "nomean.h5", mean=None)
    with pytest.raises(AudioError, match=r"nomean\.h5: attribute 'mean' is missing"):
        MelStore(missing)
    with pytest.raises(AudioError, match=r"absent\.h5: no such log-mel store"):
        MelStore(tmp_path / "absent.h5")


def test_reader_lookups(corpus):
    raw = read_store(corpus["out"])
    with MelStore(corpus["out"]) as store:
        assert store.in_memory is True  # small store: loaded (auto)
        assert store.track_ids == corpus["good_ids"] and len(store) == 5
        assert "t_ogg" in store and "empty" not in store
        assert store.index("t_ogg") == corpus["good_ids"].index("t_ogg")
        with pytest.raises(KeyError, match=r"track 'empty' is not in .*mels\.h5"):
            store.index("empty")
        i = store.index("t_mp3")
        frames = store.frames("t_mp3")
        assert frames.dtype == np.float32 and frames.shape == (store.n_frames(i), N_MELS)
        assert np.array_equal(frames, raw["mel"][raw["offsets"][i]:raw["offsets"][i + 1]])
        assert (store.mean, store.std) == (raw["mean"], raw["std"])
        np.testing.assert_allclose(store.standardize(np.ones((2, N_MELS))), (1 - raw["mean"]) / raw["std"],
                                   rtol=1e-6)


def _crop_start(track: np.ndarray, crop: np.ndarray) -> int:
    """The start s with track[s : s + len(crop)] == crop (the track already tiled if needed), or -1."""
    for start in range(len(track) - len(crop) + 1):
        if np.array_equal(track[start:start + len(crop)], crop):
            return start
    return -1


@pytest.mark.parametrize("in_memory", [True, False])
def test_random_crops_cut_and_tile_deterministically(corpus, in_memory):
    with MelStore(corpus["out"], in_memory=in_memory) as store:
        long_i, short_i = store.index("t_mp3"), store.index("t_short")
        assert store.n_frames(short_i) < SEGMENT_FRAMES < store.n_frames(long_i)
        crops = store.random_crops([long_i, "t_short", short_i, long_i], np.random.default_rng(7))
        assert crops.shape == (4, SEGMENT_FRAMES, N_MELS) and crops.dtype == np.float32
        long_track, short_track = store.frames(long_i), store.frames(short_i)
        tiled = np.tile(short_track, (-(-SEGMENT_FRAMES // len(short_track)), 1))
        assert len(tiled) >= SEGMENT_FRAMES
        for crop, track in zip(crops, [long_track, tiled, tiled, long_track]):
            assert _crop_start(track, crop) >= 0
        again = store.random_crops([long_i, "t_short", short_i, long_i], np.random.default_rng(7))
        assert np.array_equal(crops, again)
        single = store.random_crop(long_i, np.random.default_rng(7))
        assert np.array_equal(single, crops[0])
        starts = {_crop_start(long_track, store.random_crop(long_i, np.random.default_rng(s))) for s in range(12)}
        assert len(starts) > 3 and min(starts) >= 0  # uniform starts, not a fixed position
    with MelStore(corpus["out"], in_memory=not in_memory) as other, \
            MelStore(corpus["out"], in_memory=in_memory) as same:
        assert other.in_memory is (not in_memory)
        assert np.array_equal(other.random_crops([long_i, short_i], np.random.default_rng(3)),
                              same.random_crops([long_i, short_i], np.random.default_rng(3)))


def test_segments(corpus):
    with MelStore(corpus["out"], in_memory=False) as store:
        long_track = store.frames("t_mp3")
        segments = store.segments("t_mp3")
        k = len(long_track) // SEGMENT_FRAMES
        assert segments.shape == (k, SEGMENT_FRAMES, N_MELS) and k >= 1
        assert np.array_equal(segments.reshape(-1, N_MELS), long_track[:k * SEGMENT_FRAMES])
        short = store.frames("t_short")
        one = store.segments("t_short")
        assert one.shape == (1, SEGMENT_FRAMES, N_MELS)
        assert np.array_equal(one[0], np.concatenate([short] * 3)[:SEGMENT_FRAMES])


def test_audio_file_frames_standardizes_a_new_file_like_the_store(corpus):
    path = corpus["audio_dir"] / GOOD["t_ogg"][0]
    with MelStore(corpus["out"]) as store:
        expected = store.frames("t_ogg")
        np.testing.assert_allclose(audio_file_frames(path, store), expected, rtol=0, atol=1e-5)
    from_path = audio_file_frames(path, corpus["out"], max_seconds=1.0)
    assert from_path.dtype == np.float32 and from_path.shape == (1 + int(1.0 * SAMPLE_RATE) // HOP_LENGTH, N_MELS)
    np.testing.assert_allclose(from_path[:-2], expected[:len(from_path) - 2], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def test_cli_errors_exit_2_with_one_message(tmp_path, capsys):
    assert audio.main(["--audio-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --audio-dir") and "missing: no such folder" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert audio.main(["--audio-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "m.h5")]) == 2
    assert "no audio files" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("id;file\n")
    assert audio.main(["--audio-dir", str(tmp_path), "--out", str(tmp_path / "m.h5"), "--tracks",
                       str(tmp_path / "t.csv")]) == 2
    assert "header must contain track_id and path" in capsys.readouterr().err
    assert audio.main(["--audio-dir", str(tmp_path), "--out", str(tmp_path / "m.h5"), "--min-seconds", "5",
                       "--max-seconds", "3"]) == 2
    assert "--min-seconds 5.0 > --max-seconds 3.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        audio.main(["--help"])
    assert info.value.code == 0 and "--max-seconds" in capsys.readouterr().out


def test_cli_builds_a_scanned_folder(tmp_path, capsys):
    write_audio(tmp_path / "audio" / "sub" / "song.mp3", 44100, 0.5, 2, 0)
    write_audio(tmp_path / "audio" / "a.wav", 16000, 0.5, 1, 1)
    out = tmp_path / "new" / "mels.h5"
    code = audio.main(["--audio-dir", str(tmp_path / "audio"), "--out", str(out), "--jobs", "2", "--json",
                       "--max-seconds", "0.4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 stored, 0 failed" in printed and '"stored": 2' in printed
    with MelStore(out) as store:
        assert store.track_ids == ["a", "sub/song"]
        assert store.n_frames(0) == 1 + int(np.ceil(int(0.4 * 16000) * SAMPLE_RATE / 16000)) // HOP_LENGTH
    assert read_failures(out.parent / "failures.csv") == {}


def test_import_is_light():
    code = ("import sys, preprocess.store; "
            "heavy = [m for m in ('tensorflow', 'keras', 'librosa', 'pandas') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
