"""Tests of the log-mel store (preprocess/store.py): builder, crash safety, failure lists, reader
and CLI."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
from test_frontend import (
    ATOL,
    FLOAT16_ATOL,
    librosa_logmel,
    truncated_mp3,
    write_audio,
    write_wav_header_rate,
)

from fileio import OutputError, output_lock
from preprocess import melstore
from preprocess import store as store_module
from preprocess.frontend import (
    HOP_LENGTH,
    N_MELS,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    AudioError,
    crop,
    crop_starts,
    file_frames,
    load_audio,
    log_mel,
)
from preprocess.melstore import MelStore
from preprocess.store import build_store, failures_path, select_tracks

REPO_ROOT = Path(__file__).resolve().parent.parent


def read_failures(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["track_id"]: row for row in csv.DictReader(handle)}


def write_tracks_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("track_id", "path"), *rows])
    return path


def read_store(path: Path) -> dict:
    with h5py.File(path, "r") as store:
        return {
            "track_ids": store["track_ids"].asstr()[...].tolist(),
            "offsets": store["offsets"][...],
            "mel": store["mel"][...],
            "mean": float(store.attrs["mean"]),
            "std": float(store.attrs["std"]),
        }


def work_dir(out: Path) -> Path:
    return out.with_name(out.name + ".work")


def leftovers(out: Path) -> list[str]:
    """Files of ours that a finished build must not leave behind (work folder, temporary files)."""
    return sorted(
        p.name for p in out.parent.iterdir() if p.name.startswith(".") or p.name.endswith(".work")
    )


# --- A small corpus, built once: good files in four formats (one shorter than 130 frames) and four
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
    rows = [
        ("t_mp3", GOOD["t_mp3"][0]),
        ("t_wav", str((audio_dir / GOOD["t_wav"][0]).absolute())),
        ("empty", "bad/empty.mp3"),
        ("t_short", GOOD["t_short"][0]),
        ("garbage", "bad/garbage.ogg"),
        ("t_flac", GOOD["t_flac"][0]),
        ("truncated", "bad/truncated.flac"),
        ("tiny", "bad/tiny.wav"),
        ("t_ogg", GOOD["t_ogg"][0]),
    ]  # deliberately unsorted, with one absolute path
    tracks_csv = write_tracks_csv(root / "tracks.csv", rows)
    out = root / "store" / "nested" / "mels.h5"  # parent folders do not exist yet
    summary = build_store(
        audio_dir,
        out,
        tracks_csv=tracks_csv,
        min_seconds=MIN_SECONDS,
        dtype="float32",
        progress=False,
    )
    return {
        "root": root,
        "audio_dir": audio_dir,
        "tracks_csv": tracks_csv,
        "rows": rows,
        "out": out,
        "summary": summary,
        "good_ids": [r[0] for r in rows if r[0] in GOOD],
    }


def build_corpus_again(corpus, out, **options) -> dict:
    return build_store(
        corpus["audio_dir"],
        out,
        tracks_csv=corpus["tracks_csv"],
        min_seconds=MIN_SECONDS,
        progress=False,
        **options,
    )


# --- Values, standardization, ids, failures -------------------------------------------------------
def test_store_values_equal_librosa_and_are_standardized(corpus):
    store = read_store(corpus["out"])
    assert store["track_ids"] == corpus["good_ids"]  # --tracks order, failures removed
    assert store["mel"].dtype == np.float32 and store["offsets"].dtype == np.int64
    raws = []
    for i, track_id in enumerate(store["track_ids"]):
        reference = librosa_logmel(corpus["audio_dir"] / GOOD[track_id][0])
        stored = store["mel"][store["offsets"][i] : store["offsets"][i + 1]]
        assert stored.shape == reference.shape
        np.testing.assert_allclose(
            stored * store["std"] + store["mean"], reference, rtol=0, atol=ATOL
        )
        raws.append(log_mel(load_audio(corpus["audio_dir"] / GOOD[track_id][0])))
    everything = np.concatenate(raws).astype(np.float64)
    # rel 1e-9: a wrong estimator (ddof=1, float32 accumulation) would be off by > 1e-6
    assert store["mean"] == pytest.approx(everything.mean(), rel=1e-9)
    assert store["std"] == pytest.approx(everything.std(), rel=1e-9)
    np.testing.assert_allclose(
        store["mel"], (np.concatenate(raws) - store["mean"]) / store["std"], atol=1e-6
    )
    assert abs(store["mel"].mean()) < 1e-5 and store["mel"].std() == pytest.approx(1.0, abs=1e-5)


def test_store_attributes_and_summary(corpus):
    summary = corpus["summary"]
    assert (summary["stored"], summary["failed"], summary["skipped"], summary["total"]) == (
        5,
        4,
        0,
        9,
    )
    assert (
        summary["already_done"] is False
        and summary["dtype"] == "float32"
        and summary["warnings"] == []
    )
    with h5py.File(corpus["out"], "r") as store:
        attrs = dict(store.attrs)
        assert store["track_stats"].shape == (5, 3) and store["warnings"].shape == (0, 3)
    assert (attrs["sample_rate"], attrs["n_fft"], attrs["hop_length"], attrs["n_mels"]) == (
        22050,
        1024,
        512,
        128,
    )
    assert attrs["log_formula"] == "log10(1 + 10 * mel)" and attrs["dtype"] == "float32"
    assert (
        attrs["n_tracks"] == 5
        and attrs["n_failed"] == 4
        and attrs["total_frames"] == summary["frames"]
    )
    assert summary["mean"] == attrs["mean"] and summary["std"] == attrs["std"]
    assert leftovers(corpus["out"]) == []  # parts, lock and temporary files are cleaned up
    assert sorted(p.name for p in corpus["out"].parent.iterdir()) == [
        "mels.failures.csv",
        "mels.h5",
    ]


def test_failure_list_names_every_unusable_file_with_its_reason(corpus):
    failures = read_failures(failures_path(corpus["out"]))
    assert failures_path(corpus["out"]) == corpus["out"].with_name("mels.failures.csv")
    assert sorted(failures) == ["empty", "garbage", "tiny", "truncated"]
    assert failures["empty"]["path"] == "bad/empty.mp3"
    assert failures["empty"]["reason"] == "empty file (0 bytes)"
    assert failures["garbage"]["reason"].startswith("cannot decode")
    assert failures["truncated"]["reason"].startswith("cannot decode")
    assert failures["tiny"]["reason"] == f"too short: 0.20 s < --min-seconds {MIN_SECONDS:g}"
    with h5py.File(corpus["out"], "r") as store:  # the same list inside the store
        assert sorted(store["failures"].asstr()[:, 0].tolist()) == sorted(failures)


def test_two_stores_in_one_folder_keep_their_own_failure_lists(corpus, tmp_path):
    """Hardening 3: both stores used to write one shared failures.csv, the second replacing the
    first."""
    build_corpus_again(corpus, tmp_path / "all.h5")
    write_tracks_csv(
        tmp_path / "few.csv", [("garbage", "bad/garbage.ogg"), ("t_ogg", GOOD["t_ogg"][0])]
    )
    build_store(
        corpus["audio_dir"], tmp_path / "few.h5", tracks_csv=tmp_path / "few.csv", progress=False
    )
    assert sorted(read_failures(tmp_path / "all.failures.csv")) == [
        "empty",
        "garbage",
        "tiny",
        "truncated",
    ]
    assert sorted(read_failures(tmp_path / "few.failures.csv")) == ["garbage"]
    assert not (tmp_path / "failures.csv").exists()


def test_float16_store_matches_within_float16_precision(corpus, tmp_path):
    out = tmp_path / "mels16.h5"
    build_corpus_again(corpus, out)  # default dtype
    half, full = read_store(out), read_store(corpus["out"])
    assert half["mel"].dtype == np.float16
    assert half["track_ids"] == full["track_ids"] and np.array_equal(
        half["offsets"], full["offsets"]
    )
    # statistics of the exact values
    assert half["mean"] == full["mean"] and half["std"] == full["std"]
    raw16 = half["mel"].astype(np.float32) * half["std"] + half["mean"]
    np.testing.assert_allclose(
        raw16, full["mel"] * full["std"] + full["mean"], rtol=0, atol=FLOAT16_ATOL
    )


def test_broken_headers_and_truncated_files_are_reported_not_fatal(tmp_path, capsys):
    """Hardening 8 and 9: a 1 Hz header lands in the failure list; a truncated MP3 is stored with a
    warning."""
    audio = tmp_path / "audio"
    write_audio(audio / "good.wav", 22050, 1.0, 1, seed=0)
    write_wav_header_rate(audio / "one_hz.wav", 1, 20_000)  # 40 KB: 4.9 GB at 22,050 Hz
    truncated_mp3(audio / "cut.mp3")
    summary = build_store(audio, tmp_path / "mels.h5")
    assert (summary["stored"], summary["failed"]) == (2, 1)
    failures = read_failures(tmp_path / "mels.failures.csv")
    assert failures["one_hz"]["reason"] == "implausible sample rate 1 Hz in its header"
    [(track_id, path, warning)] = summary["warnings"]
    assert (track_id, path) == ("cut", "cut.mp3") and warning.startswith("decoded 1.")
    assert "warning: cut (cut.mp3): decoded 1." in capsys.readouterr().out
    with h5py.File(tmp_path / "mels.h5", "r") as store:
        assert store["warnings"].asstr()[...].tolist() == [list(summary["warnings"][0])]
    again = build_store(audio, tmp_path / "mels.h5", progress=False)
    assert again["already_done"] and again["warnings"] == summary["warnings"]


def test_track_ids_when_scanning(tmp_path):
    audio_dir = tmp_path / "audio"
    write_audio(audio_dir / "sub" / "song.mp3", 22050, 0.3, 1, 0)
    write_audio(audio_dir / "b.WAV", 22050, 0.3, 1, 1)
    write_audio(audio_dir / "a" / "c.flac", 22050, 0.3, 1, 2)
    (audio_dir / "notes.txt").write_text("not audio")
    write_audio(audio_dir / ".hidden" / "x.wav", 22050, 0.3, 1, 3)
    write_audio(audio_dir / "a" / ".deep" / "y.wav", 22050, 0.3, 1, 3)
    write_audio(audio_dir / ".y.wav", 22050, 0.3, 1, 4)
    tracks = select_tracks(audio_dir)
    assert [t[0] for t in tracks] == ["a/c", "b", "sub/song"]
    assert [t[1] for t in tracks] == ["a/c.flac", "b.WAV", "sub/song.mp3"]
    assert tracks[0][2] == str((audio_dir / "a" / "c.flac").absolute())
    write_audio(audio_dir / "b.ogg", 22050, 0.3, 1, 5)
    with pytest.raises(AudioError, match=r"b\.WAV and b\.ogg both give track id 'b'"):
        select_tracks(audio_dir)


def test_tracks_csv_relative_and_absolute_paths_and_errors(tmp_path):
    from dataset_dir import DatasetError

    absolute = str((tmp_path / "elsewhere" / "x.wav").absolute())
    csv_path = write_tracks_csv(tmp_path / "t.csv", [("z", "sub/a.mp3"), ("y", absolute)])
    tracks = select_tracks(tmp_path, csv_path)
    assert tracks == [
        ("z", "sub/a.mp3", str((tmp_path / "sub" / "a.mp3").absolute())),
        ("y", absolute, absolute),
    ]
    write_tracks_csv(tmp_path / "dup.csv", [("z", "a.mp3"), ("z", "b.mp3")])
    with pytest.raises(AudioError, match=r"dup\.csv: repeats track_id 'z'"):
        select_tracks(tmp_path, tmp_path / "dup.csv")
    write_tracks_csv(tmp_path / "hole.csv", [("z", "a.mp3"), ("w", "")])
    with pytest.raises(AudioError, match=r"hole\.csv: has an empty track_id or path"):
        select_tracks(tmp_path, tmp_path / "hole.csv")
    (tmp_path / "bad.csv").write_text("id,file\n1,a.mp3\n")
    with pytest.raises(
        DatasetError, match=r"--tracks file .*bad\.csv lacks column\(s\) track_id, path"
    ):
        select_tracks(tmp_path, tmp_path / "bad.csv")
    write_tracks_csv(tmp_path / "none.csv", [])
    with pytest.raises(AudioError, match=r"none\.csv: lists no tracks"):
        select_tracks(tmp_path, tmp_path / "none.csv")
    with pytest.raises(DatasetError, match=r"--tracks file .*missing\.csv does not exist"):
        select_tracks(tmp_path, tmp_path / "missing.csv")


def test_nothing_stored_is_an_error_naming_the_first_reasons(tmp_path):
    """No store, so no failure list beside it (a list is written only with its store)."""
    (tmp_path / "audio").mkdir()
    for name in ("a", "b", "c", "d"):
        (tmp_path / "audio" / f"{name}.mp3").write_bytes(b"")
    out = tmp_path / "out" / "mels.h5"
    with pytest.raises(
        AudioError,
        match=r"no track could be stored .* all 4 failed \(a\.mp3: empty file \(0 bytes\); b\.mp3: "
        r"empty file \(0 bytes\); c\.mp3: empty file \(0 bytes\); \.\.\.\)\.$",
    ):
        build_store(tmp_path / "audio", out, progress=False)
    assert not out.exists() and leftovers(out) == [] and not failures_path(out).exists()


# --- Idempotency and crash safety -----------------------------------------------------------------
def test_rerun_of_a_finished_store_is_already_done(corpus, capsys):
    before = corpus["out"].stat().st_mtime_ns
    summary = build_corpus_again(corpus, corpus["out"], dtype="float32", jobs=2)
    assert summary["already_done"] is True
    assert (summary["stored"], summary["failed"], summary["skipped"], summary["computed"]) == (
        5,
        4,
        9,
        0,
    )
    assert corpus["out"].stat().st_mtime_ns == before
    failures_csv = failures_path(corpus["out"])
    expected = failures_csv.read_text()
    failures_csv.unlink()  # a rerun restores it from the store's `failures` dataset
    build_store(
        corpus["audio_dir"],
        corpus["out"],
        tracks_csv=corpus["tracks_csv"],
        min_seconds=MIN_SECONDS,
        dtype="float32",
    )
    assert "already done (5 stored, 4 failed" in capsys.readouterr().out
    assert failures_csv.read_text() == expected and leftovers(corpus["out"]) == []


def test_a_file_that_is_not_our_store_is_never_replaced(corpus, tmp_path):
    """Hardening 1 for --out: the builder replaces only stores it made (their `format` attribute
    says so)."""
    for name, content in (("notes.h5", None), ("text.h5", b"my thesis")):
        target = tmp_path / name
        if content is None:
            with h5py.File(target, "w") as handle:
                handle["data"] = np.arange(3)
        else:
            target.write_bytes(content)
        before = target.read_bytes()
        with pytest.raises(
            OutputError, match=rf"--out .*{name}: exists and is not a log-mel store made by this"
        ):
            build_corpus_again(corpus, target)
        assert target.read_bytes() == before and not failures_path(target).exists()
        assert not work_dir(target).exists()  # issue 21: a refusal creates nothing


def test_a_users_failure_list_is_never_overwritten(corpus, tmp_path):
    """Issue 21: a new store replaced the user's own mels.failures.csv beside it. The list is
    replaced only when it is the one of our store at --out; a refusal creates nothing."""
    out = tmp_path / "mels.h5"
    users = failures_path(out)
    users.write_text("my notes on broken files\n")
    # in our format, but naming a track this build does not have
    users_csv = "track_id,path,reason\nt_wav,a/t_wav.wav,too quiet (my note)\nx,x.wav,my note\n"
    for text in ("my notes on broken files\n", users_csv):
        users.write_text(text)
        with pytest.raises(OutputError, match=r"mels\.failures\.csv: exists and is not a failure"):
            build_corpus_again(corpus, out)
        assert users.read_text() == text
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mels.failures.csv"]
    users.unlink()
    build_corpus_again(corpus, out)
    out.unlink()  # a store deleted to be rebuilt: its list is still ours
    assert build_corpus_again(corpus, out)["failed"] == 4
    write_tracks_csv(tmp_path / "two.csv", [("tiny", "bad/tiny.wav"), ("t_ogg", GOOD["t_ogg"][0])])

    def build_two(**options) -> dict:
        return build_store(
            corpus["audio_dir"], out, tmp_path / "two.csv", progress=False, **options
        )

    # the normal rebuild: our list is replaced
    assert build_two(min_seconds=1)["already_done"] is False
    assert sorted(read_failures(users)) == ["tiny"]
    users.write_text(users.read_text() + "t_wav,a/t_wav.wav,too quiet (my note)\n")
    assert build_two(min_seconds=1)["already_done"]  # nothing to write: the edited list is kept
    with pytest.raises(OutputError, match=r"not a failure list this builder wrote .*edited since"):
        build_two()  # a rebuild would replace it
    assert "my note" in users.read_text() and not work_dir(out).exists()


def test_changed_selection_rebuilds_the_store(corpus, tmp_path):
    out = tmp_path / "mels.h5"
    rows = [r for r in corpus["rows"] if r[0] in GOOD]
    write_tracks_csv(tmp_path / "t.csv", rows)
    build_store(corpus["audio_dir"], out, tracks_csv=tmp_path / "t.csv", progress=False)
    write_tracks_csv(tmp_path / "t.csv", rows[:2])
    summary = build_store(corpus["audio_dir"], out, tracks_csv=tmp_path / "t.csv", progress=False)
    assert summary["already_done"] is False and summary["stored"] == 2
    assert read_store(out)["track_ids"] == [r[0] for r in rows[:2]]


@pytest.fixture()
def same_size(tmp_path) -> dict:
    """Three WAVs of one length (so of one size), their store, and a fourth WAV of that size."""
    audio_dir = tmp_path / "audio"
    for seed, name in enumerate(["a", "b", "c"]):
        write_audio(audio_dir / f"{name}.wav", 22050, 1.0, 1, seed)
    other = write_audio(tmp_path / "other.wav", 22050, 1.0, 1, seed=7)
    assert other.stat().st_size == (audio_dir / "b.wav").stat().st_size
    out = tmp_path / "store" / "mels.h5"
    build_store(audio_dir, out, chunk_tracks=1, progress=False)
    return {"audio_dir": audio_dir, "other": other, "out": out}


def _replace_keeping_mtime(path: Path, source: Path) -> None:
    times = path.stat()
    path.write_bytes(source.read_bytes())
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))  # as `cp -p` or `touch -r` would


def test_a_file_replaced_by_one_of_the_same_size_is_decoded_again(same_size, tmp_path):
    """Issue 21: the rerun compared file sizes only, so the store kept the old file's mel."""
    _replace_keeping_mtime(same_size["audio_dir"] / "b.wav", same_size["other"])
    summary = build_store(same_size["audio_dir"], same_size["out"], progress=False)
    assert summary["already_done"] is False
    with MelStore(same_size["out"]) as store:
        expected = log_mel(load_audio(same_size["other"]))
        np.testing.assert_allclose(
            store.frames("b") * store.std + store.mean, expected, rtol=0, atol=FLOAT16_ATOL
        )


def test_unchanged_files_are_not_read_again(same_size, monkeypatch):
    """The sha256 of a file is read again only when its size, times or inode changed; a touched
    file of the same bytes keeps the store "already done"."""
    hashed = []
    real = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert build_store(same_size["audio_dir"], same_size["out"], progress=False)["already_done"]
    assert hashed == []
    os.utime(same_size["audio_dir"] / "c.wav")
    assert build_store(same_size["audio_dir"], same_size["out"], progress=False)["already_done"]
    assert [Path(p).name for p in hashed] == ["c.wav"]


def test_a_resumed_build_decodes_only_the_files_that_changed(same_size, tmp_path, monkeypatch):
    """After a crash, the parts of unchanged files are kept and the part of a replaced file (same
    size, same mtime) is decoded again; the result is the store of a fresh build."""
    out = tmp_path / "resumed" / "mels.h5"

    def crash(*args):
        raise KeyboardInterrupt  # stands in for kill -9 after every part was written

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_merge", crash)
        with pytest.raises(KeyboardInterrupt):
            build_store(same_size["audio_dir"], out, chunk_tracks=1, progress=False)
    assert len(list(work_dir(out).glob("[0-9a-f]*.h5"))) == 3
    _replace_keeping_mtime(same_size["audio_dir"] / "b.wav", same_size["other"])
    summary = build_store(same_size["audio_dir"], out, chunk_tracks=1, progress=False)
    assert (summary["computed"], summary["skipped"]) == (1, 2)
    fresh = tmp_path / "fresh" / "mels.h5"
    build_store(same_size["audio_dir"], fresh, chunk_tracks=1, progress=False)
    resumed, reference = read_store(out), read_store(fresh)
    assert np.array_equal(resumed["mel"], reference["mel"])
    assert (resumed["mean"], resumed["std"]) == (reference["mean"], reference["std"])
    assert leftovers(out) == []  # the stale part of the old b.wav is gone too


def test_a_file_of_absurd_samples_fails_alone(tmp_path):
    """Issue 21: a float WAV holding 1e30 was stored and moved mean/std so far that every normal
    track was squashed. It goes to the failure list; the others are stored as without it."""
    audio_dir = tmp_path / "audio"
    write_audio(audio_dir / "good.wav", 22050, 1.0, 1, seed=0)
    write_audio(audio_dir / "fine.ogg", 22050, 1.0, 1, seed=1)
    build_store(audio_dir, tmp_path / "clean.h5", progress=False)
    loud = np.full((22050, 1), 1e30, np.float32)
    soundfile.write(str(audio_dir / "loud.wav"), loud, 22050, subtype="FLOAT")
    summary = build_store(audio_dir, tmp_path / "mels.h5", progress=False)
    assert (summary["stored"], summary["failed"]) == (2, 1)
    reason = read_failures(tmp_path / "mels.failures.csv")["loud"]["reason"]
    assert reason == (
        "decoded samples reach 1e+30, over 1000 times full scale (1.0): a corrupt or wrongly "
        "scaled file"
    )
    clean = read_store(tmp_path / "clean.h5")
    assert (summary["mean"], summary["std"]) == (clean["mean"], clean["std"])


KILLED_BUILD = textwrap.dedent("""
    import sys, time
    import preprocess.store as S
    point = sys.argv[3]
    original_part, original_standardize = S._build_part, S.standardize

    def slow_part(task):  # the real work, then a pause: the test kills the build between parts
        result = original_part(task)
        time.sleep(0.4 if point == "parts" else 0.0)
        return result

    # a pause inside the merge: the test kills while the store is being written
    def slow_standardize(*args):
        time.sleep(0.3 if point == "merge" else 0.0)
        return original_standardize(*args)

    S._build_part, S.standardize = slow_part, slow_standardize
    S.build_store(sys.argv[1], sys.argv[2], jobs=int(sys.argv[4]), chunk_tracks=1, progress=False)
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
    """Run build_store in a subprocess, SIGKILL it at `point`; returns the pids of its workers at
    that moment."""
    script = tmp_path / "killed_build.py"
    script.write_text(KILLED_BUILD)
    process = subprocess.Popen(
        [sys.executable, str(script), str(audio_dir), str(out), point, str(jobs)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready = (
                any(work_dir(out).glob("[0-9a-f]*.h5"))
                if point == "parts"
                # the store under its temporary name
                else any(out.parent.glob(".mels.*.tmp.h5"))
            )
            if ready or process.poll() is not None:
                break
            time.sleep(0.01)
        assert process.poll() is None, (
            f"the build ended before the kill: {process.stdout.read().decode()}"
        )
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
    """Six tracks (copies of the corpus files) and one broken file, plus an uninterrupted reference
    build."""
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
    done_before = len(list(work_dir(out).glob("[0-9a-f]*.h5")))
    assert done_before >= 1

    # the same
    summary = build_store(crash_corpus["audio_dir"], out, jobs=jobs, chunk_tracks=1, progress=False)
    assert summary["skipped"] >= done_before and summary["skipped"] + summary["computed"] == 7
    if point == "merge":
        assert summary["computed"] == 0  # every part was finished before the kill
    assert (summary["stored"], summary["failed"]) == (6, 1)
    resumed, reference = read_store(out), read_store(crash_corpus["reference"])
    assert resumed["track_ids"] == reference["track_ids"]
    assert np.array_equal(resumed["offsets"], reference["offsets"])
    # bit for bit, whatever the chunking and jobs
    assert np.array_equal(resumed["mel"], reference["mel"])
    assert (resumed["mean"], resumed["std"]) == (reference["mean"], reference["std"])
    assert failures_path(out).read_text() == failures_path(crash_corpus["reference"]).read_text()
    assert leftovers(out) == []  # no part, lock or temporary store of the killed run is left


def _die(task):
    """Stands in for _build_part in a forked worker: the process ends abruptly (like a decoder
    crash)."""
    os._exit(3)


def test_a_dying_worker_is_a_clear_error_not_a_hang(crash_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_build_part", _die)
    with pytest.raises(AudioError, match=r"a worker process died .* rerun the same command"):
        build_store(
            crash_corpus["audio_dir"], tmp_path / "mels.h5", jobs=2, chunk_tracks=1, progress=False
        )
    assert not (tmp_path / "mels.h5").exists()


def test_a_second_simultaneous_build_is_refused(crash_corpus, tmp_path):
    out = tmp_path / "mels.h5"
    with output_lock(work_dir(out)):
        with pytest.raises(
            OutputError, match=r"another build of this store is writing .*mels\.h5\.work"
        ):
            build_store(crash_corpus["audio_dir"], out, progress=False)


# --- The reader -----------------------------------------------------------------------------------
def _copy_with(source: Path, target: Path, attrs=None, mel=None) -> Path:
    """A copy of a store with attributes changed (None deletes one) and mel rows overwritten {row:
    value}."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as store:
        for name, value in (attrs or {}).items():
            if value is None:
                del store.attrs[name]
            else:
                store.attrs[name] = value
        for row, value in (mel or {}).items():
            store["mel"][row] = value
    return target


def test_reader_refuses_another_front_end(corpus, tmp_path):
    bad = _copy_with(corpus["out"], tmp_path / "bad.h5", {"n_fft": 2048})
    with pytest.raises(
        AudioError, match=r"bad\.h5: attribute n_fft=2048 but this code's front end uses n_fft=1024"
    ):
        MelStore(bad)
    with pytest.raises(AudioError, match=r"power\.h5: attribute power=2\.0"):
        MelStore(_copy_with(corpus["out"], tmp_path / "power.h5", {"power": 2.0}))
    with pytest.raises(AudioError, match=r"nomean\.h5: attribute 'mean' is missing; rebuild it"):
        MelStore(_copy_with(corpus["out"], tmp_path / "nomean.h5", {"mean": None}))
    with pytest.raises(AudioError, match=r"absent\.h5: no such log-mel store"):
        MelStore(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(AudioError, match=r"text\.h5: not a readable HDF5 store"):
        MelStore(tmp_path / "text.h5")


def test_reader_checks_mean_and_std_against_the_data(corpus, tmp_path):
    """Hardening 8: a store whose mean/std attributes were altered used to be read as is."""
    with h5py.File(corpus["out"], "r") as store:
        mean, std = float(store.attrs["mean"]), float(store.attrs["std"])
    with pytest.raises(
        AudioError, match=r"mean\.h5: attributes mean=.* differ from its per-track statistics"
    ):
        MelStore(_copy_with(corpus["out"], tmp_path / "mean.h5", {"mean": mean + 0.01}))
    with pytest.raises(
        AudioError, match=r"std\.h5: attributes .*std=.* differ .*: the store was altered; rebuild"
    ):
        MelStore(_copy_with(corpus["out"], tmp_path / "std.h5", {"std": std * 1.01}))
    shifted = _copy_with(corpus["out"], tmp_path / "shifted.h5")
    # data and statistics disagree: the sample check sees it
    with h5py.File(shifted, "r+") as store:
        store["mel"][:40] += 0.5
    with pytest.raises(
        AudioError, match=r"shifted\.h5: track 't_mp3' has mean .* but its statistics say"
    ):
        MelStore(shifted)


def test_non_finite_mel_values_never_reach_a_caller(corpus, tmp_path, monkeypatch):
    """Hardening 5 for mel bytes: NaN used to load silently (and train to `loss: nan`)."""
    with MelStore(corpus["out"]) as store:
        last = int(store._offsets[-2])  # first frame of the last track
    with pytest.raises(
        AudioError, match=r"sampled\.h5: non-finite values in track\(s\) \['t_mp3'\]"
    ):
        # checked on open
        MelStore(_copy_with(corpus["out"], tmp_path / "sampled.h5", mel={3: np.nan}))
    monkeypatch.setattr(melstore, "_CHECK_ROWS", 1)  # open-time sample: track 0 only
    # float16: its own finite test of the exponent bits
    build_corpus_again(corpus, tmp_path / "half.h5")
    damaged = _copy_with(corpus["out"], tmp_path / "damaged.h5", mel={last + 2: np.inf})
    half = _copy_with(tmp_path / "half.h5", tmp_path / "damaged16.h5", mel={last + 2: np.nan})
    for path, in_memory in ((damaged, True), (damaged, False), (half, True)):
        with MelStore(path, in_memory=in_memory) as store:
            store.crops([0], [0], SEGMENT_FRAMES)  # other tracks read fine
            with pytest.raises(
                AudioError,
                match=r"non-finite values in track\(s\) \['t_ogg'\]: the store is damaged; rebuild "
                r"it",
            ):
                store.crops([0, len(store) - 1], [0, 0], SEGMENT_FRAMES)
            with pytest.raises(AudioError, match=r"damaged(16)?\.h5: non-finite"):
                store.frames(len(store) - 1)


def test_fast_finite_test_equals_numpy_on_every_float16():
    """The exponent-bit test of float16 reads agrees with np.isfinite on all 65,536 bit patterns,
    one at a time."""
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    expected = np.isfinite(every.astype(np.float32))
    # +-inf and the NaNs: exponent 11111, any of 2**10 mantissas
    assert expected.sum() == 2**16 - 2 * 2**10
    fine = np.zeros(300, np.float16)
    found = [
        melstore._all_finite(np.concatenate([fine, every[i : i + 1], fine])) for i in range(2**16)
    ]
    assert found == expected.tolist()
    assert melstore._all_finite(np.float32([1.0, 3e38])) and not melstore._all_finite(
        np.float32([1.0, np.nan])
    )
    # blocks of the flattened array, boundaries included
    long = np.zeros((3, melstore._BLOCK + 5), np.float16)
    for position in (0, melstore._BLOCK - 1, melstore._BLOCK, long.size - 1):
        damaged = long.copy()
        damaged.reshape(-1)[position] = -np.inf
        assert melstore._all_finite(long) and not melstore._all_finite(damaged)


def test_reader_lookups(corpus):
    raw = read_store(corpus["out"])
    with MelStore(corpus["out"]) as store:
        assert store.in_memory is True  # small store: in RAM
        assert store.track_ids == corpus["good_ids"] and len(store) == 5
        assert "t_ogg" in store and "empty" not in store
        assert store.index("t_ogg") == corpus["good_ids"].index("t_ogg")
        with pytest.raises(
            KeyError, match=r"track 'empty' is not in .*mels\.h5 .*mels\.failures\.csv"
        ):
            store.index("empty")
        assert (
            store.lengths.dtype == np.int64
            and store.lengths.tolist() == np.diff(raw["offsets"]).tolist()
        )
        i = store.index("t_mp3")
        frames = store.frames(i)
        assert frames.dtype == np.float32 and frames.shape == (store.lengths[i], N_MELS)
        assert np.array_equal(frames, raw["mel"][raw["offsets"][i] : raw["offsets"][i + 1]])
        assert np.array_equal(store.frames("t_mp3"), frames)
        assert (store.mean, store.std) == (raw["mean"], raw["std"])


def test_in_memory_follows_the_memory_available(corpus, tmp_path, monkeypatch):
    out = tmp_path / "mels16.h5"
    build_corpus_again(corpus, out)  # float16
    size = read_store(out)["mel"].nbytes
    monkeypatch.setattr(melstore, "available_memory", lambda: 2 * size)
    with MelStore(out) as store:
        assert store.in_memory and store._mel.dtype == np.float16 and type(store._mel) is np.ndarray
        assert store.crops([0], [0], 10).dtype == np.float32 and "fits" in store.in_memory_reason
        # the stored dtype, for a model that casts it
        half = store.crops([0, 1], [3, 0], 10, dtype=None)
        assert half.dtype == np.float16 and np.array_equal(half, store.crops([0, 1], [3, 0], 10))
    monkeypatch.setattr(melstore, "available_memory", lambda: 2 * size - 1)
    with MelStore(out) as store, MelStore(out, in_memory=True) as forced:
        assert (
            not store.in_memory
            and isinstance(store._mel, np.memmap)
            and "too large" in store.in_memory_reason
        )
        assert forced.in_memory and forced.in_memory_reason.endswith("as asked")
        rows, starts = [0, 3, 3], [5, 0, 44]
        assert np.array_equal(
            store.crops(rows, starts, SEGMENT_FRAMES), forced.crops(rows, starts, SEGMENT_FRAMES)
        )
    assert melstore.available_memory() > 0


@pytest.mark.parametrize("in_memory", [True, False])
def test_crops_are_frontend_crops(corpus, in_memory):
    with MelStore(corpus["out"], in_memory=in_memory) as store:
        assert store.in_memory is in_memory
        rng = np.random.default_rng(7)
        rows = rng.integers(0, len(store), 40)
        short = store.index("t_short")
        assert store.lengths[short] < SEGMENT_FRAMES < store.lengths.max()
        rows[:2] = short
        starts = rng.integers(0, crop_starts(store.lengths[rows], SEGMENT_FRAMES))
        # the first and the last tiled start
        starts[:2] = [0, 3 * store.lengths[short] - SEGMENT_FRAMES]
        crops = store.crops(rows, starts, SEGMENT_FRAMES)
        assert crops.shape == (40, SEGMENT_FRAMES, N_MELS) and crops.dtype == np.float32
        for crop_, row, start in zip(crops, rows, starts, strict=True):
            assert np.array_equal(crop_, crop(store.frames(row), start, SEGMENT_FRAMES))
        for bad in (-1, 3 * store.lengths[short] - SEGMENT_FRAMES + 1):
            with pytest.raises(ValueError, match="out of range"):
                store.crops([short], [bad], SEGMENT_FRAMES)
        assert store.crops([], [], SEGMENT_FRAMES).shape == (0, SEGMENT_FRAMES, N_MELS)


def test_segments(corpus):
    with MelStore(corpus["out"], in_memory=False) as store:
        long_track = store.frames("t_mp3")
        segments = store.segments(store.index("t_mp3"))
        k = len(long_track) // SEGMENT_FRAMES
        assert segments.shape == (k, SEGMENT_FRAMES, N_MELS) and k >= 1
        assert np.array_equal(segments.reshape(-1, N_MELS), long_track[: k * SEGMENT_FRAMES])
        short = store.frames("t_short")
        one = store.segments(store.index("t_short"))
        assert one.shape == (1, SEGMENT_FRAMES, N_MELS)
        assert np.array_equal(one[0], np.concatenate([short] * 3)[:SEGMENT_FRAMES])


def test_file_frames_standardizes_a_new_file_like_the_store(corpus):
    path = corpus["audio_dir"] / GOOD["t_ogg"][0]
    with MelStore(corpus["out"]) as store:
        expected = store.frames("t_ogg")
        np.testing.assert_allclose(
            file_frames(path, store.mean, store.std), expected, rtol=0, atol=1e-5
        )
        head = file_frames(path, store.mean, store.std, max_seconds=1.0)
    assert head.dtype == np.float32 and head.shape == (
        1 + int(1.0 * SAMPLE_RATE) // HOP_LENGTH,
        N_MELS,
    )
    np.testing.assert_allclose(head[:-2], expected[: len(head) - 2], rtol=0, atol=1e-5)


def test_a_hand_written_store_without_statistics_opens(tmp_path):
    """Stores written by other tools (the documented layout without track_stats) get the finite
    check only."""
    path = tmp_path / "hand.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "track_ids", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype()
        )
        handle["offsets"] = np.array([0, 3, 5])
        handle["mel"] = np.arange(5 * N_MELS, dtype=np.float32).reshape(5, N_MELS)
        handle.attrs.update(
            {
                "sample_rate": 22050,
                "n_fft": 1024,
                "hop_length": 512,
                "n_mels": 128,
                "mean": 0.0,
                "std": 1.0,
            }
        )
    with MelStore(path, in_memory=False) as store:
        assert store.lengths.tolist() == [3, 2] and store.frames(1)[0, 0] == 3 * N_MELS
        assert store.crops([0], [2], 4)[0, :, 0].tolist() == [2 * N_MELS, 0, N_MELS, 2 * N_MELS]


# --- Command line ---------------------------------------------------------------------------------
def test_cli_errors_exit_2_with_one_message(tmp_path, capsys):
    def error(*argv) -> str:
        assert (
            store_module.main(
                ["--audio-dir", str(tmp_path), "--out", str(tmp_path / "m.h5"), *argv]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
        return err

    assert (
        store_module.main(
            ["--audio-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "m.h5")]
        )
        == 2
    )
    assert "missing: no such folder" in capsys.readouterr().err
    assert "no audio files" in error()
    (tmp_path / "t.csv").write_text("id;file\n")
    assert "lacks column(s) track_id, path" in error("--tracks", str(tmp_path / "t.csv"))
    assert "--min-seconds 5.0 > --max-seconds 3.0" in error(
        "--min-seconds", "5", "--max-seconds", "3"
    )
    for flag, value in (("--max-seconds", "-5"), ("--max-seconds", "inf"), ("--min-seconds", "-1")):
        # hardening 8
        assert f"{flag} {float(value)}: must be a number of seconds" in error(flag, value)
    assert "--jobs -2: must be >= 1" in error("--jobs", "-2")
    assert "--chunk-tracks 0: must be >= 1" in error("--chunk-tracks", "0")
    with pytest.raises(SystemExit) as info:
        store_module.main(["--help"])
    assert info.value.code == 0 and "--max-seconds" in capsys.readouterr().out


def test_cli_builds_a_scanned_folder(tmp_path, capsys):
    write_audio(tmp_path / "audio" / "sub" / "song.mp3", 44100, 0.5, 2, 0)
    write_audio(tmp_path / "audio" / "a.wav", 16000, 0.5, 1, 1)
    out = tmp_path / "new" / "mels.h5"
    assert (
        store_module.main(
            [
                "--audio-dir",
                str(tmp_path / "audio"),
                "--out",
                str(out),
                "--jobs",
                "2",
                "--json",
                "--max-seconds",
                "0.4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "2 stored, 0 failed" in printed and '"stored": 2' in printed
    with MelStore(out) as store:
        assert store.track_ids == ["a", "sub/song"]
        assert (
            store.lengths[0]
            == 1 + int(np.ceil(int(0.4 * 16000) * SAMPLE_RATE / 16000)) // HOP_LENGTH
        )
    assert read_failures(out.with_name("mels.failures.csv")) == {}


def test_import_is_light():
    code = (
        "import sys, preprocess.store; "
        "heavy = [m for m in ('tensorflow', 'keras', 'librosa', 'pandas') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
