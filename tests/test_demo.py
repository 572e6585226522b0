"""Tests of the synthetic demo corpus (demo/build.py, python -m demo) and its synthesizer
(demo/synth.py).

A tiny corpus (36 tracks x 2.5 s) is built once per module in a temporary folder; the default
configuration is checked through its plans and tables (cheap) rather than by rendering 1,200 tracks.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.stats import binom

from dataset_dir import read_annotations, read_side_info, read_tracks
from demo import build as demo
from demo import synth
from demo.__main__ import main as demo_main
from fileio import MARKER_FILE, OutputError, output_lock
from preprocess.frontend import SAMPLE_RATE, log_mel
from preprocess.melstore import MelStore
from preprocess.openmic import load_openmic, track_id_from_sample_key
from preprocess.side_info import instrument_side_info, random_side_info
from preprocess.store import failures_path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = {"tracks": 36, "seconds": 2.5}
# OpenMIC-2018's class map (docs/formats.md), in index order.
OPENMIC_CLASSES = [
    "accordion",
    "banjo",
    "bass",
    "cello",
    "clarinet",
    "cymbals",
    "drums",
    "flute",
    "guitar",
    "mallet_percussion",
    "mandolin",
    "organ",
    "piano",
    "saxophone",
    "synthesizer",
    "trombone",
    "trumpet",
    "ukulele",
    "violin",
    "voice",
]
CSV_OUTPUTS = [
    "tracks.csv",
    "annotations.csv",
    "genres.csv",
    "demo_truth.csv",
    "side_info/instrument-count.csv",
    "side_info/instrument-confidence.csv",
    "side_info/random.csv",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    summary = demo.build_demo(out, seed=0, jobs=1, progress=False, **TINY)
    assert summary["build"]["rendered"] == TINY["tracks"]
    return out


@pytest.fixture(scope="module")
def tiny_twin(tmp_path_factory) -> Path:
    """The same corpus built again elsewhere with 2 worker processes."""
    out = tmp_path_factory.mktemp("demo_twin") / "demo"
    demo.build_demo(out, seed=0, jobs=2, progress=False, **TINY)
    return out


def _samples(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="int16")
    assert rate == SAMPLE_RATE
    return data


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------
def test_layout_and_audio_format(tiny):
    for name in CSV_OUTPUTS + [
        "mels.h5",
        "summary.json",
        "openmic/openmic-2018.npz",
        "openmic/class-map.json",
        MARKER_FILE,
    ]:
        assert (tiny / name).is_file(), name
    assert not (tiny / demo.BUILD_MARKER).exists()  # removed once the build is complete
    assert json.loads((tiny / MARKER_FILE).read_text())["owner"] == "demo"
    tracks = read_tracks(tiny / "tracks.csv")
    assert tracks["track_id"].tolist() == [str(i) for i in range(1, 37)]
    assert tracks["path"].iloc[0] == "audio/000/000001.flac"
    assert all(re.fullmatch(r"audio/\d{3}/\d{6}\.flac", p) for p in tracks["path"])
    for track_id, rel in zip(tracks["track_id"], tracks["path"], strict=True):
        info = sf.info(tiny / rel)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            SAMPLE_RATE,
            1,
            "FLAC",
            "PCM_16",
        )
        assert info.frames == int(round(2.5 * SAMPLE_RATE))
        assert (
            rel.endswith(f"{int(track_id):06d}.flac")
            and rel.split("/")[1] == f"{int(track_id):06d}"[:3]
        )
    genres = pd.read_csv(tiny / "genres.csv")
    assert list(genres.columns) == ["genre_id", "#tracks", "parent", "title", "top_level"]
    summary = json.loads((tiny / "summary.json").read_text())
    assert summary["demo"] == {
        "version": demo.DEMO_VERSION,
        "seed": 0,
        "tracks": 36,
        "seconds": 2.5,
    }
    assert summary["tracks"] == 36 and summary["mels"] == "mels.h5"
    assert summary["dropped_genres"] == {"instrument-count": [], "instrument-confidence": []}
    assert summary["side_info"]["instrument-count"]["dim"] == 40
    with MelStore(tiny / "mels.h5") as store:
        assert store.track_ids == tracks["track_id"].tolist()
        assert store.lengths.tolist() == [1 + int(round(2.5 * SAMPLE_RATE)) // 512] * 36
    assert failures_path(tiny / "mels.h5").read_text().strip() == "track_id,path,reason"


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files_and_samples(tiny, tiny_twin):
    for name in CSV_OUTPUTS:
        assert (tiny / name).read_bytes() == (tiny_twin / name).read_bytes(), name
    for rel in read_tracks(tiny / "tracks.csv")["path"]:
        np.testing.assert_array_equal(_samples(tiny / rel), _samples(tiny_twin / rel))
        assert (tiny / rel).read_bytes() == (tiny_twin / rel).read_bytes()
    a, b = load_openmic(tiny / "openmic"), load_openmic(tiny_twin / "openmic")
    np.testing.assert_array_equal(a.y_true, b.y_true)
    np.testing.assert_array_equal(a.y_mask, b.y_mask)


def test_different_seed_gives_a_different_corpus(tiny, tmp_path):
    other = tmp_path / "seed1"
    demo.build_demo(other, seed=1, jobs=1, progress=False, mels=False, **TINY)
    assert (tiny / "annotations.csv").read_bytes() != (other / "annotations.csv").read_bytes()
    assert (tiny / "side_info/instrument-count.csv").read_bytes() != (
        other / "side_info/instrument-count.csv"
    ).read_bytes()
    rel = "audio/000/000001.flac"
    assert not np.array_equal(_samples(tiny / rel), _samples(other / rel))


def test_rendering_is_deterministic_and_cache_independent():
    arrangement = demo.make_plans(3, 2.0, seed=4)[2].arrangement
    first = synth.render_track(arrangement)
    synth.note_sample.cache_clear()
    second = synth.render_track(arrangement)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.shape == (int(2.0 * SAMPLE_RATE),)


# --------------------------------------------------------------------------------------------------
# Default configuration: instruments, genres, hierarchy, labels
# --------------------------------------------------------------------------------------------------
def test_instruments_are_the_openmic_classes():
    assert list(synth.INSTRUMENTS) == list(synth.VOICES) == OPENMIC_CLASSES
    assert {name for name, voice in synth.VOICES.items() if voice.pitch_range is None} == {
        "drums",
        "cymbals",
    }
    # every voice names a family of sounds and a role that exist
    for voice in synth.VOICES.values():
        assert voice.sound in synth._SOUNDS and callable(getattr(synth.Score, voice.role))


def test_genre_table_is_a_valid_hierarchy():
    specs = demo.GENRE_SPECS
    tops = {s.title for s in specs if s.parent is None}
    # known instruments, core and optional apart, traits in range, parents at the top level
    for s in specs:
        assert set(s.core.split()) | set(s.optional.split()) <= set(OPENMIC_CLASSES), s.title
        assert not set(s.core.split()) & set(s.optional.split()), s.title
        assert s.meter in (3, 4) and s.density in (0, 1, 2) and s.register in (-1, 0, 1), s.title
        assert s.parent is None or s.parent in tops, s.title
    assert len(specs) >= 30
    tops = [s.title for s in specs if s.parent is None]
    assert len(tops) == 8
    for top in tops:
        assert sum(s.parent == top for s in specs) >= 4
    table = demo.genres_table([])
    ids = set(table["genre_id"])
    assert len(ids) == len(table) and table["title"].is_unique
    roots = table[table["parent"] == 0]
    assert (roots["top_level"] == roots["genre_id"]).all()
    children = table[table["parent"] != 0]
    assert children["parent"].isin(roots["genre_id"]).all()
    # two levels: the parent is the top level
    assert (children["top_level"] == children["parent"]).all()
    assert all(re.fullmatch(r"[A-Z][A-Za-z&\- ]+", title) for title in table["title"])


def test_profiles_separate_siblings_and_share_instruments():
    specs = demo.GENRE_SPECS
    profiles = {s.title: demo.genre_profile(s) for s in specs}
    for a in specs:
        for b in specs:
            if a.title < b.title and a.parent is not None and a.parent == b.parent:
                # siblings differ in at least two instruments' presence (about one core instrument
                # each way)
                assert np.abs(profiles[a.title] - profiles[b.title]).sum() >= 2 * (
                    demo.CORE_P - demo.OPTIONAL_P
                )
    core_counts = {name: sum(name in s.core.split() for s in specs) for name in synth.INSTRUMENTS}
    # every instrument defines more than one genre
    assert min(core_counts.values()) >= 2, core_counts
    # each genre is a subset of >= 2 core instruments, never one instrument on its own
    assert all(len(s.core.split()) >= 2 for s in specs)


@pytest.fixture(scope="module")
def default_plans():
    return demo.make_plans(demo.DEFAULT_TRACKS, demo.DEFAULT_SECONDS, seed=0)


@pytest.fixture(scope="module")
def default_side_info(default_plans):
    """The default corpus' instrument-count vectors, computed without rendering audio: (labels, unit
    rows)."""
    present = np.stack([p.present for p in default_plans])
    y_true, y_mask = demo.make_annotations(present, seed=0)
    annotations = pd.DataFrame(
        [(p.track_id, g) for p in default_plans for g in p.genres], columns=["track_id", "label"]
    )
    labels, vectors, dropped = instrument_side_info(
        [p.track_id for p in default_plans], y_true, y_mask, annotations
    )
    assert dropped == []
    return labels, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_default_plans_labels_and_balance(default_plans):
    plans = default_plans
    specs = {s.title: s for s in demo.GENRE_SPECS}
    sizes = [len(p.genres) for p in plans]
    assert min(sizes) >= 1 and max(sizes) <= 3
    assert 1.15 <= np.mean(sizes) <= 1.4  # FMA-like label cardinality
    for p in plans:
        primary = specs[p.genres[0]]
        assert len(set(p.genres)) == len(p.genres)
        # the parent of the primary, or a sub-genre of another top-level genre
        for extra in p.genres[1:]:
            assert extra == primary.parent or (specs[extra].parent not in (None, primary.parent))
        assert p.present.sum() >= demo.MIN_INSTRUMENTS
        assert set(p.arrangement.instruments) == {
            n for n, on in zip(synth.INSTRUMENTS, p.present, strict=True) if on
        }
    counts = pd.Series([g for p in plans for g in p.genres]).value_counts()
    assert set(counts.index) == set(specs) and counts.min() >= 25


def test_genre_side_vectors_separate_siblings(default_side_info):
    labels, unit = default_side_info
    parent = {s.title: s.parent for s in demo.GENRE_SPECS}
    cosine = unit @ unit.T
    for i, a in enumerate(labels):
        for j, b in enumerate(labels[:i]):
            if parent[a] == b or parent[b] == a:
                # a top-level genre's tracks include its sub-genres' tracks: close by construction
                continue
            limit = 0.8 if parent[a] is not None and parent[a] == parent[b] else 0.7
            assert cosine[i, j] < limit, (a, b, cosine[i, j])


def test_every_unseen_genre_has_positives_in_b_and_c(default_plans):
    import splits

    annotations = pd.DataFrame(
        [(p.track_id, g) for p in default_plans for g in p.genres], columns=["track_id", "label"]
    )
    positives = annotations.groupby("label")["track_id"].apply(set)
    for seed in range(5):
        split = splits.make_split(annotations, seed=seed)
        assert len(split["unseen"]) == len(demo.GENRE_SPECS) - int(len(demo.GENRE_SPECS) * 0.8)
        for label in split["unseen"]:
            assert positives[label] & set(split["B"]), (seed, label)
            assert positives[label] & set(split["C"]), (seed, label)


# --------------------------------------------------------------------------------------------------
# Annotations in OpenMIC-2018's form and the side information built from them
# --------------------------------------------------------------------------------------------------
def test_annotations_follow_openmic_conventions(tiny):
    openmic = load_openmic(tiny / "openmic")
    assert openmic.instruments == OPENMIC_CLASSES
    assert list(openmic.sample_keys) == sorted(f"{i:06d}_0" for i in range(1, 37))
    y_true, y_mask = openmic.y_true, openmic.y_mask
    assert y_true.shape == y_mask.shape == (36, 20)
    assert ((y_true >= 0) & (y_true <= 1)).all()
    assert (y_true[~y_mask] == 0.5).all() and (y_true[y_mask] != 0.5).all()
    per_track = y_mask.sum(axis=1)
    assert per_track.min() >= 3 and per_track.max() <= 8  # sparse, like OpenMIC
    fractions = {round(k / n, 6) for n in demo.RATERS for k in range(n + 1)}
    assert {round(float(v), 6) for v in y_true[y_mask]} <= fractions
    truth = pd.read_csv(tiny / "demo_truth.csv", dtype=str).set_index("track_id")
    present = np.array(
        [
            [
                name in truth.loc[track_id_from_sample_key(k), "instruments"].split(";")
                for name in OPENMIC_CLASSES
            ]
            for k in openmic.sample_keys
        ]
    )
    agree = ((y_true > 0.5) == present)[y_mask]
    assert agree.mean() >= 0.9  # a little crowd noise, never more


def test_crowd_noise_rate_matches_the_rater_model():
    present = np.random.default_rng(0).random((20000, 20)) < 0.3
    y_true, y_mask = demo.make_annotations(present, seed=3)
    wrong = ((y_true > 0.5) != present)[y_mask].mean()
    # expected: majority of n raters wrong, each wrong with probability 1 - q, q ~ U(0.85, 0.97), n
    # in {3, 5}
    q = np.linspace(*demo.RATER_ACCURACY, 2001)
    expected = np.mean([binom.sf(n // 2, n, 1 - q).mean() for n in demo.RATERS])
    assert expected == pytest.approx(0.0157, abs=0.002)
    assert wrong == pytest.approx(expected, abs=0.003)
    # present instruments are asked about PRESENT_WEIGHT times as often as absent ones (weighted
    # draw)
    assert y_mask[present].mean() > 1.8 * y_mask[~present].mean()


def test_side_info_is_recomputed_from_the_written_npz(tiny):
    openmic = load_openmic(tiny / "openmic")
    track_ids = [track_id_from_sample_key(k) for k in openmic.sample_keys]
    annotations = read_annotations(tiny / "annotations.csv")
    for kind, flavour in (("instrument-count", "count"), ("instrument-confidence", "confidence")):
        labels, vectors, dropped = instrument_side_info(
            track_ids, openmic.y_true, openmic.y_mask, annotations, flavour
        )
        written = read_side_info(tiny / "side_info" / f"{kind}.csv")
        assert written.labels == labels and dropped == []
        np.testing.assert_allclose(written.vectors, vectors, rtol=1e-6, atol=1e-7)
        # each row standardized
        np.testing.assert_allclose(written.vectors.mean(axis=1), 0, atol=1e-6)
    random = read_side_info(tiny / "side_info" / "random.csv")
    assert random.labels == labels
    np.testing.assert_allclose(
        random.vectors, random_side_info(labels, 40, seed=0), rtol=1e-6, atol=1e-7
    )
    assert set(labels) == set(annotations["label"])


# --------------------------------------------------------------------------------------------------
# Instruments are audible, and where they should be
# --------------------------------------------------------------------------------------------------
def _solo(name: str, seconds: float = 3.0, **traits) -> np.ndarray:
    base = dict(
        tempo=120.0,
        meter=4,
        swing=0.0,
        density=1,
        register=0,
        key=0,
        mode="major",
        progression=(0, 4, 5, 3),
        seed=(0, 1),
        seconds=seconds,
        start_beat=0.0,
    )
    base.update(traits)
    return synth.render_track(synth.Arrangement(instruments=(name,), gains_db=(0.0,), **base))


def test_drums_and_flute_differ_in_the_log_mel_as_expected():
    # independent band centres
    centres = librosa.mel_frequencies(n_mels=128, fmin=0.0, fmax=SAMPLE_RATE / 2)
    drums, flute = log_mel(_solo("drums")), log_mel(_solo("flute"))
    assert drums.shape == flute.shape == (130, 128)  # 3 s = one 130-frame crop

    def band_share(logmel, low, high):
        energy = (10.0**logmel - 1.0) / 10.0  # back to mel magnitude
        band = (centres >= low) & (centres < high)
        return energy[:, band].sum() / energy.sum()

    assert band_share(drums, 0, 200) > 0.3  # the kick
    assert band_share(flute, 0, 200) < 0.01  # the flute's lowest note is 523 Hz
    # hi-hats vs breath noise
    assert band_share(drums, 6000, 11025) > 5 * band_share(flute, 6000, 11025)
    peak_hz = centres[np.argmax(flute, axis=1)]
    assert 480 <= np.median(peak_hz) <= 2300  # the flute's fundamental range (MIDI 72-96)

    # percussive: the drums' frame energy jumps more from frame to frame than the flute's
    def flux(x):
        return np.abs(np.diff(x.sum(axis=1))).mean() / x.sum(axis=1).mean()

    assert flux(drums) > 2 * flux(flute)


@pytest.mark.parametrize("name", [n for n in OPENMIC_CLASSES if n not in ("drums", "cymbals")])
def test_note_samples_have_the_right_pitch(name):
    low, high = synth.VOICES[name].pitch_range
    for midi in (low, (low + high) // 2, high):
        note = synth.note_sample(name, midi).astype(np.float64)
        assert note.shape == (int(synth.NOTE_SECONDS * SAMPLE_RATE),) and np.isfinite(note).all()
        assert np.abs(note).max() == pytest.approx(1.0)
        # the organ's 16' sub-octave
        expected = 440.0 * 2 ** ((midi - 69) / 12) / (2 if name == "organ" else 1)
        # YIN searches within +-0.85 octave of the expected pitch (no octave errors), 0.1-0.6 s
        # after the onset
        f0 = np.median(
            librosa.yin(
                note[2205:13230],
                fmin=expected / 1.8,
                fmax=expected * 1.8,
                sr=SAMPLE_RATE,
                frame_length=2048,
            )
        )
        assert f0 == pytest.approx(expected, rel=0.03), (name, midi, f0)


@pytest.mark.parametrize("name", OPENMIC_CLASSES)
def test_every_instrument_plays_through_the_whole_clip(name):
    for traits in (
        {"density": 0, "meter": 3, "tempo": 62.0},
        {"density": 2, "meter": 4, "tempo": 200.0},
    ):
        audio = _solo(name, seconds=7.0, **traits)
        windows = audio[: 7 * SAMPLE_RATE].reshape(7, SAMPLE_RATE)  # 1-s windows
        rms = np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1))
        assert rms.min() > 0.2 * rms.mean(), (name, traits, rms.round(3))


def test_adding_an_instrument_changes_its_band():
    centres = librosa.mel_frequencies(n_mels=128, fmin=0.0, fmax=SAMPLE_RATE / 2)
    base = dict(
        tempo=100.0,
        meter=4,
        swing=0.0,
        density=1,
        register=0,
        key=0,
        mode="major",
        progression=(0, 3, 4, 0),
        seed=(5, 5),
        seconds=3.0,
    )
    without = synth.render_track(
        synth.Arrangement(instruments=("bass", "piano"), gains_db=(0.0, 0.0), **base)
    )
    with_drums = synth.render_track(
        synth.Arrangement(instruments=("bass", "drums", "piano"), gains_db=(0.0,) * 3, **base)
    )
    high = centres > 7000
    assert log_mel(with_drums)[:, high].mean() > 3 * log_mel(without)[:, high].mean()


# --------------------------------------------------------------------------------------------------
# No label leak
# --------------------------------------------------------------------------------------------------
def test_duration_and_loudness_do_not_depend_on_genre(tiny):
    tracks = read_tracks(tiny / "tracks.csv")
    truth = pd.read_csv(tiny / "demo_truth.csv", dtype=str).set_index("track_id")
    lengths, rms = [], []
    for rel in tracks["path"]:
        audio = _samples(tiny / rel).astype(np.float64) / 32768.0
        lengths.append(len(audio))
        rms.append(np.sqrt((audio**2).mean()))
    assert len(set(lengths)) == 1
    rms = np.array(rms)
    # loudness: MASTER_RMS with a genre-independent +-1 dB draw (soft clipping only lowers rare
    # peaks)
    assert (rms > synth.MASTER_RMS * 10 ** (-1.2 / 20)).all() and (
        rms < synth.MASTER_RMS * 10 ** (1.05 / 20)
    ).all()
    primary = truth.loc[tracks["track_id"], "genre_titles"].str.split(";").str[0].to_numpy()
    by_genre = pd.Series(rms).groupby(primary).mean()
    assert by_genre.max() / by_genre.min() < 10 ** (2.2 / 20)


def test_traits_are_shared_between_genres_not_markers():
    specs = demo.GENRE_SPECS
    for trait in ("density", "swing", "meter", "register"):
        counts = pd.Series([getattr(s, trait) for s in specs]).value_counts()
        # no value of a trait belongs to one genre
        assert counts.min() >= 2, (trait, counts.to_dict())
    for a in specs:  # every tempo range overlaps another genre's
        assert any(
            b is not a and a.tempo[0] < b.tempo[1] and b.tempo[0] < a.tempo[1] for b in specs
        ), a.title
    combos = {tuple(sorted(s.core.split())) for s in specs}
    assert len(combos) == len(specs)  # genres differ by instruments, not only by a rhythm trait


def test_genre_independent_draws_are_independent_of_genre(default_plans):
    plans = default_plans
    parent = {s.title: s.parent for s in demo.GENRE_SPECS}
    frame = pd.DataFrame(
        {
            "top": [parent[p.genres[0]] or p.genres[0] for p in plans],
            "key": [p.arrangement.key for p in plans],
            "minor": [p.arrangement.mode == "minor" for p in plans],
            "gain": [p.arrangement.master_gain_db for p in plans],
            "start": [p.arrangement.start_beat / p.arrangement.meter for p in plans],
            "seconds": [p.arrangement.seconds for p in plans],
        }
    )
    assert frame["seconds"].nunique() == 1
    groups = frame.groupby("top")
    assert groups["minor"].mean().between(0.35, 0.65).all()
    assert groups["gain"].mean().abs().max() < 0.2  # U(-1, 1) dB: family means near 0
    assert groups["start"].mean().between(0.4, 0.6).all()
    assert groups["key"].nunique().min() >= 10


# --------------------------------------------------------------------------------------------------
# Idempotency, resume, rebuild, ensure_demo
# --------------------------------------------------------------------------------------------------
def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_finished_corpus_is_reused_untouched(tiny):
    before = _snapshot(tiny)
    summary = demo.build_demo(tiny, seed=0, jobs=1, progress=False, **TINY)
    assert summary["demo"]["tracks"] == 36 and "build" not in summary
    assert _snapshot(tiny) == before
    assert demo.ensure_demo(tiny, seed=0) == tiny.resolve()
    assert _snapshot(tiny) == before


def test_killed_build_resumes_to_the_same_corpus(tiny, tmp_path):
    out = tmp_path / "resume"
    # stops before the store, like a kill
    demo.build_demo(out, seed=0, jobs=1, progress=False, mels=False, **TINY)
    assert (out / demo.BUILD_MARKER).is_file()
    for rel in ("audio/000/000003.flac", "audio/000/000030.flac", "side_info/random.csv"):
        (out / rel).unlink()
    # atomic writes killed mid-way
    (out / "audio/000/.000007.x1y2.tmp.flac").write_bytes(b"partial")
    (out / ".tracks.x1y2.tmp.csv").write_text("track_id,pa")
    # what train.py calls: resumes with the corpus' own size
    assert demo.ensure_demo(out, seed=0) == out.resolve()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["demo"] == {
        "version": demo.DEMO_VERSION,
        "seed": 0,
        "tracks": 36,
        "seconds": 2.5,
    }
    assert not list(out.rglob("*.tmp.*")) and not (out / demo.BUILD_MARKER).exists()
    for name in CSV_OUTPUTS:
        assert (out / name).read_bytes() == (tiny / name).read_bytes(), name
    for rel in ("audio/000/000030.flac", "audio/000/000031.flac"):
        assert (out / rel).read_bytes() == (tiny / rel).read_bytes()
    summary = demo.build_demo(out, seed=0, jobs=1, progress=False, force=True, mels=False, **TINY)
    assert (summary["build"]["state"], summary["build"]["rendered"]) == ("fresh", 36)


def test_resume_renders_only_the_missing_audio(tmp_path):
    out = tmp_path / "resume"
    demo.build_demo(out, seed=0, tracks=6, seconds=1.0, jobs=1, progress=False, mels=False)
    (out / "audio/000/000002.flac").unlink()
    summary = demo.build_demo(
        out, seed=0, tracks=6, seconds=1.0, jobs=1, progress=False, mels=False
    )
    assert summary["build"]["state"] == "resume"
    assert (summary["build"]["rendered"], summary["build"]["reused"]) == (1, 5)


def test_other_parameters_need_force_which_deletes_only_what_the_demo_wrote(tmp_path, capsys):
    """Another seed replaced a corpus without --force, and --force deleted splits/ (a user's split
    file in it), side_info/ and audio/ whole."""
    out = tmp_path / "rebuild"
    demo.build_demo(out, seed=0, tracks=12, seconds=1.0, jobs=1, progress=False, mels=False)
    mine = {
        "splits/split_seed0.json": "{}",  # made from the old annotations, maybe by the user
        "splits/mine.json": "{}",
        "notes.txt": "mine",
        "side_info/glove.csv": "label,v0\n",
        "audio/000/my_song.flac": "x",
        "openmic/README.txt": "x",
    }
    for rel, text in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    before = _snapshot(out)
    for options in ({"seed": 1, "tracks": 12}, {"seed": 0, "tracks": 8}):
        with pytest.raises(
            demo.DemoError, match=r"seed 0, tracks 12, seconds 1\.0, not .* --force"
        ):
            demo.build_demo(out, seconds=1.0, jobs=1, progress=False, mels=False, **options)
        assert _snapshot(out) == before
    assert demo_main(["--out", str(out), "--seed", "1", "--tracks", "12", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} holds a demo corpus of version") and err.count("\n") == 1
    assert _snapshot(out) == before
    summary = demo.build_demo(
        out, seed=1, tracks=8, seconds=1.0, jobs=1, progress=False, mels=False, force=True
    )
    assert summary["build"]["state"] == "fresh"
    assert sorted(p.name for p in out.rglob("*.flac")) == [
        *(f"{i:06d}.flac" for i in range(1, 9)),
        "my_song.flac",
    ]
    assert all((out / rel).read_text() == text for rel, text in mine.items())
    assert len(read_tracks(out / "tracks.csv")) == 8
    assert json.loads((out / demo.BUILD_MARKER).read_text())["seed"] == 1


def test_refuses_a_folder_it_did_not_make_and_touches_nothing(tmp_path):
    """Hardening 1: the old code deleted audio/, splits/, side_info/, mels.h5 of a folder without
    tracks.csv."""
    user = tmp_path / "user"
    files = {
        "audio/000/000001.flac": b"my audio",
        "splits/split_seed0.json": b"{}",
        "side_info/mine.csv": b"a,b\n",
        "mels.h5": b"my store",
        "notes.txt": b"mine",
    }
    for rel, data in files.items():
        (user / rel).parent.mkdir(parents=True, exist_ok=True)
        (user / rel).write_bytes(data)
    before = _snapshot(user)
    for call in (
        lambda: demo.build_demo(user, seed=0, tracks=4, seconds=1.0, jobs=1, progress=False),
        lambda: demo.build_demo(
            user, seed=0, tracks=4, seconds=1.0, jobs=1, progress=False, force=True
        ),
        lambda: demo.ensure_demo(user, seed=0),
    ):
        with pytest.raises(
            OutputError, match=f"{re.escape(str(user))} is not empty and was not made by `demo`"
        ):
            call()
    assert _snapshot(user) == before and all(
        (user / rel).read_bytes() == data for rel, data in files.items()
    )
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "tracks.csv").write_text("track_id,path\n1,a.mp3\n")  # another dataset
    with pytest.raises(OutputError, match="not made by `demo`"):
        demo.build_demo(tmp_path / "dataset", seed=0, tracks=4, seconds=1.0, jobs=1, progress=False)
    assert (tmp_path / "dataset" / "tracks.csv").read_text() == "track_id,path\n1,a.mp3\n"


def test_a_second_build_of_the_same_folder_is_refused_at_once(tmp_path):
    out = tmp_path / "busy"
    with output_lock(out, "demo build"):  # as another `python -m demo --out busy` holds it
        with pytest.raises(
            OutputError, match=f"another demo build is writing {re.escape(str(out))}"
        ):
            demo.build_demo(out, seed=0, tracks=4, seconds=1.0, jobs=1, progress=False, mels=False)
    assert sorted(p.name for p in out.iterdir()) == [".lock", MARKER_FILE]


def test_ensure_demo_completes_a_corpus_with_its_own_size(tmp_path):
    out = tmp_path / "ensure"
    demo.build_demo(out, seed=0, tracks=6, seconds=1.0, jobs=1, progress=False)
    (out / "mels.h5").unlink()
    flac = out / "audio/000/000001.flac"
    stamp = flac.stat().st_mtime_ns
    assert demo.ensure_demo(out, seed=0) == out.resolve()
    # audio kept, store rebuilt
    assert (out / "mels.h5").is_file() and flac.stat().st_mtime_ns == stamp
    assert json.loads((out / "summary.json").read_text())["demo"]["tracks"] == 6


def test_ensure_demo_never_builds_over_an_existing_corpus(tmp_path):
    """Plain train.py rebuilt data/demo with seed 0 over a corpus the user built with another seed,
    deleting it and splits/: a complete corpus is used as it is, an interrupted one is finished
    with its own parameters, and one it cannot finish so is refused untouched."""
    out = tmp_path / "seed3"
    demo.build_demo(out, seed=3, tracks=6, seconds=1.0, jobs=1, progress=False)
    (out / "splits").mkdir()
    (out / "splits" / "split_seed0.json").write_text("{}")
    before = _snapshot(out)
    assert demo.ensure_demo(out, tracks=6, seconds=1.0, jobs=1, progress=False) == out.resolve()
    assert _snapshot(out) == before
    # interrupted (no mel store yet): finished with its own seed
    unfinished = tmp_path / "unfinished"
    demo.build_demo(unfinished, seed=3, tracks=6, seconds=1.0, jobs=1, progress=False, mels=False)
    demo.ensure_demo(unfinished, tracks=6, seconds=1.0, jobs=1, progress=False)
    summary = json.loads((unfinished / "summary.json").read_text())
    assert summary["demo"]["seed"] == 3 and (unfinished / "mels.h5").is_file()
    for rel in ("demo_truth.csv", "annotations.csv", "audio/000/000004.flac"):
        assert (unfinished / rel).read_bytes() == (out / rel).read_bytes()
    # an interrupted build of an older version cannot be finished: refused, untouched
    old = tmp_path / "old"
    demo.build_demo(old, seed=0, tracks=6, seconds=1.0, jobs=1, progress=False, mels=False)
    marker = json.loads((old / demo.BUILD_MARKER).read_text())
    (old / demo.BUILD_MARKER).write_text(json.dumps({**marker, "version": demo.DEMO_VERSION - 1}))
    before = _snapshot(old)
    with pytest.raises(demo.DemoError, match=f"python -m demo --out {re.escape(str(old))} --force"):
        demo.ensure_demo(old, tracks=6, seconds=1.0, jobs=1, progress=False, mels=False)
    assert _snapshot(old) == before


def test_disk_full_during_the_build_is_one_line_and_the_rerun_goes_on(
    tmp_path, capsys, monkeypatch
):
    """ENOSPC while writing the audio was a traceback; the finished tracks stay and are reused."""
    real_write = sf.write
    writes = []

    def write(*args, **kwargs):
        writes.append(args[0])
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(sf, "write", write)
    out = tmp_path / "full"
    argv = ["--out", str(out), "--tracks", "6", "--seconds", "1", "--jobs", "1", "--no-progress"]
    assert demo_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the device writing ") and err.count("\n") == 1
    assert len(list(out.rglob("*.flac"))) == 3 and not list(out.rglob(".*.tmp*"))
    monkeypatch.setattr(sf, "write", real_write)
    assert demo_main(argv) == 0
    assert "3 rendered, 3 reused" in capsys.readouterr().out


def test_bad_sizes_raise_clear_errors(tmp_path):
    for flags, message in (
        ({"tracks": 0}, "--tracks 0"),
        ({"seconds": 100}, "--seconds 100"),
        ({"seed": -1}, "--seed -1"),
    ):
        with pytest.raises(demo.DemoError, match=message):
            demo.build_demo(tmp_path / "x", **flags)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _cli(*args, cwd=REPO_ROOT):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--out",
        "--seed",
        "--tracks",
        "--seconds",
        "--jobs",
        "--force",
        "--no-progress",
        f"default: {demo.DEFAULT_TRACKS}",
        f"default: {demo.DEFAULT_SECONDS}",
    ):
        assert text in out
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--bogus"])
    assert (
        exit_info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--tracks", "many"])
    assert exit_info.value.code == 2 and "--tracks: invalid int value" in capsys.readouterr().err
    assert demo_main(["--tracks", "0", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: --tracks 0")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "tracks.csv").write_text("track_id,path\n")
    assert demo_main(["--out", str(tmp_path / "user")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {tmp_path / 'user'} is not empty and was not made by `demo`")
        and "--out" in err
    )
    (tmp_path / "file").write_text("x")
    assert demo_main(["--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'file'} is a file, not a folder")


def test_cli_builds_a_tiny_corpus(tmp_path):
    result = _cli(
        "--out",
        str(tmp_path / "cli"),
        "--tracks",
        "5",
        "--seconds",
        "1",
        "--jobs",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "5 tracks" in result.stdout
        and "genres dropped from instrument side information: none" in result.stdout
    )
    assert "built in" in result.stdout and "5 rendered, 0 reused" in result.stdout
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["tracks"] == 5 and last["dataset"] == "cli"
    assert (tmp_path / "cli" / "mels.h5").is_file()


def test_importing_demo_does_not_import_tensorflow():
    code = "import sys, demo.build, demo.__main__; print('tensorflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False", result.stderr
