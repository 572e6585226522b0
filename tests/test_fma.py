"""Tests of the FMA + OpenMIC-2018 adapter (preprocess/fma.py) on tiny fixtures in the real formats
(docs/formats.md): FMA's tracks.csv with pandas' two-level column header, genres.csv, an
OpenMIC-2018 folder, and short audio files in FMA's fma_large layout (one real MP3, WAV data for
exact sample counts, one broken file, one missing file)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import dataset_dir as ds
from fileio import MARKER_FILE
from preprocess import fma, openmic
from preprocess.side_info import random_side_info
from preprocess.store import failures_path

INSTRUMENTS = [
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
SLOT = {name: i for i, name in enumerate(INSTRUMENTS)}  # present slot; absent slot = 20 + index
GENRES_CSV = """genre_id,#tracks,parent,title,top_level
1,8693,38,Avant-Garde,38
12,32923,0,Rock,12
15,34413,0,Electronic,15
17,12706,0,Folk,17
21,8389,0,Hip-Hop,21
38,38154,0,Experimental,38
"""
# FMA id -> (genres literal, OpenMIC annotations {instrument: Y_true} (masked-in) or None (not in
# OpenMIC),
#            audio: "mp3" | samples of WAV data | "broken" | None (no file))
TRACKS = {
    2: ("[21]", {"bass": 0.9, "drums": 0.2}, "mp3"),
    3: ("[21, 12]", {"guitar": 1.0, "voice": 0.5}, 22050),
    5: ("[12]", {"guitar": 0.75}, 22050),
    10: ("[]", {"piano": 0.9}, 22050),  # no genre
    20: ("[999]", {"piano": 0.9}, 22050),  # only a genre id that genres.csv does not know
    46: ("[15]", {}, 22050),  # in OpenMIC but nothing annotated (mask all False)
    134: ("[17]", None, 22050),  # not in OpenMIC
    # Avant-Garde: confidence vector all zero -> dropped before the audio
    140: ("[1]", {"voice": 0.5}, 22050),
    200: ("[12, 38]", {"synthesizer": 0.6}, None),  # audio file missing
    # Experimental: after 200 fails, confidence all zero -> dropped
    300: ("[38]", {"organ": 0.5}, 22050),
    400: ("[15]", {"bass": 0.8}, 2999),  # < 3,000 samples: dropped like the original
    500: ("[15]", {"drums": 0.9}, 3000),  # exactly 3,000 samples: kept
    71826: ("[12, 17]", {"piano": 0.0}, "broken"),  # a known broken FMA file
}
OPENMIC_ONLY = "999999_0"  # an OpenMIC clip whose track is not in tracks.csv


def write_tracks_csv(path, rows: dict, index_name="track_id"):
    """tracks.csv as FMA wrote it: pandas to_csv of a frame with two-level columns (and a named
    index)."""
    columns = pd.MultiIndex.from_tuples(
        [
            ("album", "title"),
            ("set", "split"),
            ("set", "subset"),
            ("track", "genre_top"),
            ("track", "genres"),
            ("track", "genres_all"),
            ("track", "title"),
        ]
    )
    data = [
        [f"Album {t}", "training", "large", "", genres, genres, f'Song, "{t}"\nsecond line']
        for t, genres in rows.items()
    ]
    frame = pd.DataFrame(data, index=pd.Index(list(rows), name=index_name), columns=columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)


def write_openmic_folder(folder, tracks=TRACKS, extra_key=OPENMIC_ONLY):
    keys, y_true, y_mask = [], [], []
    for track_id, (_genres, notes, _audio) in tracks.items():
        if notes is None:
            continue
        keys.append(f"{track_id:06d}_{(track_id * 10) % 7000}")
        row, mask = np.full(20, 0.5), np.zeros(20, bool)
        for name, value in notes.items():
            row[SLOT[name]], mask[SLOT[name]] = value, True
        y_true.append(row)
        y_mask.append(mask)
    keys.append(extra_key)
    y_true.append(np.full(20, 0.5))
    y_mask.append(np.eye(20, dtype=bool)[0])
    openmic.write_openmic(folder, keys, np.array(y_true), np.array(y_mask), INSTRUMENTS)
    return keys


def write_audio(audio_dir, tracks=TRACKS):
    rng = np.random.default_rng(0)
    for track_id, (_genres, _notes, kind) in tracks.items():
        path = fma.fma_audio_path(audio_dir, track_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind is None:
            continue
        if kind == "broken":
            path.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(200))
            continue
        n = 22050 if kind == "mp3" else kind
        y = (
            0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 22050) + 0.01 * rng.standard_normal(n)
        ).astype("float32")
        if kind == "mp3":
            sf.write(path, y, 22050, format="MP3")
        # WAV data under the .mp3 name: decoders read it by content, and its sample count is exact
        else:
            sf.write(path, y, 22050, format="WAV", subtype="PCM_16")


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    write_tracks_csv(
        root / "fma_metadata" / "tracks.csv", {t: g for t, (g, _n, _a) in TRACKS.items()}
    )
    (root / "fma_metadata" / "genres.csv").write_text(GENRES_CSV)
    write_openmic_folder(root / "openmic-2018")
    write_audio(root / "fma_large")
    return root


def spike(slot):
    """Standardized vector of a 40-d sum with one non-zero entry: mean v/40, std v*sqrt(39)/40 ->
    sqrt(39) at the slot and -1/sqrt(39) elsewhere (whatever the value v)."""
    out = np.full(40, -1 / math.sqrt(39))
    out[slot] = math.sqrt(39)
    return out


def standardized(entries: dict):
    """Hand-built 40-d sum -> (x - mean) / population std."""
    x = np.zeros(40)
    for slot, value in entries.items():
        x[slot] = value
    return (x - x.mean()) / x.std()


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------
def test_audio_path_layout(tmp_path):
    assert fma.fma_audio_path(tmp_path, "46") == tmp_path / "000" / "000046.mp3"
    assert fma.fma_audio_path(tmp_path, 155310) == tmp_path / "155" / "155310.mp3"


@pytest.mark.parametrize("index_name", ["track_id", None])
def test_read_track_genres_two_level_header(tmp_path, index_name):
    write_tracks_csv(
        tmp_path / "tracks.csv", {2: "[21]", 3: "[76, 103]", 5: "[]", 10: ""}, index_name
    )
    lines = (tmp_path / "tracks.csv").read_text().splitlines()
    assert lines[0].startswith(",album,set,set,track")
    assert (lines[2] == "track_id,,,,,,,") == (index_name is not None)
    genres = fma.read_track_genres(tmp_path, progress=False)
    assert genres == {"2": [21], "3": [76, 103], "5": [], "10": []}


def test_parse_genre_list_never_evaluates_code(tmp_path):
    assert fma.parse_genre_list(" [1, 2] ", "7", "x") == [1, 2]
    for bad in ("__import__('os').getcwd()", "[1, 'a']", "{1: 2}", "[True]", "[1.5]"):
        with pytest.raises(
            ds.DatasetError, match=r"track 7 has genres .* expected a list of integer genre ids"
        ):
            fma.parse_genre_list(bad, "7", tmp_path / "tracks.csv")


def test_read_genre_titles_and_errors(tmp_path):
    (tmp_path / "genres.csv").write_text(GENRES_CSV)
    assert fma.read_genre_titles(tmp_path)[21] == "Hip-Hop"
    assert len(fma.read_genre_titles(tmp_path)) == 6
    (tmp_path / "genres.csv").write_text("genre_id,#tracks,parent,name\n1,2,0,Rock\n")
    with pytest.raises(ds.DatasetError, match="genres.csv lacks column.*title"):
        fma.read_genre_titles(tmp_path)
    (tmp_path / "genres.csv").unlink()
    with pytest.raises(ds.DatasetError, match="genres.csv does not exist"):
        fma.read_genre_titles(tmp_path)


def test_tracks_csv_errors(tmp_path):
    with pytest.raises(ds.DatasetError, match="tracks.csv does not exist"):
        fma.read_track_genres(tmp_path, progress=False)
    columns = pd.MultiIndex.from_tuples([("track", "title"), ("track", "genres_all")])
    pd.DataFrame([["a", "[1]"]], index=pd.Index([2], name="track_id"), columns=columns).to_csv(
        tmp_path / "tracks.csv"
    )
    with pytest.raises(ds.DatasetError, match=r"lacks column \('track', 'genres'\)"):
        fma.read_track_genres(tmp_path, progress=False)
    write_tracks_csv(tmp_path / "tracks.csv", {2: "[21", 3: "[1]"})
    with pytest.raises(ds.DatasetError, match="track 2 has genres '\\[21'"):
        fma.read_track_genres(tmp_path, progress=False)


def test_selection_and_side_info_without_audio(raw):
    titles = fma.read_genre_titles(raw / "fma_metadata")
    genres = fma.read_track_genres(raw / "fma_metadata", progress=False)
    table = fma.instrument_table(raw / "openmic-2018")
    selection = fma.select_tracks(genres, titles, table)
    assert selection.track_ids == ["2", "3", "5", "140", "200", "300", "400", "500", "71826"]
    assert selection.counts == {
        "fma_tracks": 13,
        "openmic_tracks": 13,
        "openmic_duplicate_clips": 0,
        "openmic_tracks_not_in_fma": 1,
        "openmic_tracks_without_instrument_annotation": 1,
        "tracks_without_genre": 2,
        "unknown_genre_ids": [999],
        "candidates": 9,
    }
    result = fma.genre_side_info(selection.track_ids, selection.annotations, table, seed=0)
    assert result.dropped_labels == {"Avant-Garde": ["instrument-confidence"]}
    assert result.dropped_tracks == ["140"]
    labels, count = result.vectors["instrument-count"]
    assert labels == ["Electronic", "Experimental", "Folk", "Hip-Hop", "Rock"]
    # Rock = tracks 3 + 5 + 200 + 71826: guitar present twice, voice absent, synthesizer present,
    # piano absent.
    rock = {SLOT["guitar"]: 2, 20 + SLOT["voice"]: 1, SLOT["synthesizer"]: 1, 20 + SLOT["piano"]: 1}
    np.testing.assert_allclose(count[4], standardized(rock), rtol=1e-12)
    labels, confidence = result.vectors["instrument-confidence"]
    # Experimental = 200 (synthesizer 0.6 -> 0.1) + 300 (organ at exactly 0.5 -> 0): one spike.
    np.testing.assert_allclose(
        confidence[labels.index("Experimental")], spike(SLOT["synthesizer"]), rtol=1e-6
    )


def test_object_array_sample_key_via_partitions(raw, tmp_path):
    """The published npz stores sample_key as an object array: the keys come from partitions/
    instead."""
    source = openmic.load_openmic(raw / "openmic-2018")
    folder = tmp_path / "openmic-object"
    folder.mkdir()
    (folder / "class-map.json").write_text((raw / "openmic-2018" / "class-map.json").read_text())
    np.savez(
        folder / "openmic-2018.npz",
        Y_true=source.y_true,
        Y_mask=source.y_mask,
        sample_key=np.array(source.sample_keys.tolist(), dtype=object),
    )
    (folder / "partitions").mkdir()
    keys = source.sample_keys.tolist()
    (folder / "partitions" / "split01_train.csv").write_text("\n".join(keys[::2]) + "\n")
    (folder / "partitions" / "split01_test.csv").write_text("\n".join(keys[1::2]) + "\n")
    a = fma.instrument_table(raw / "openmic-2018")
    b = fma.instrument_table(folder)
    assert a.track_ids == b.track_ids
    np.testing.assert_array_equal(a.y_true, b.y_true)
    np.testing.assert_array_equal(a.y_mask, b.y_mask)


def test_duplicate_openmic_clips_keep_the_first(tmp_path):
    openmic.write_openmic(
        tmp_path,
        ["000002_0", "000002_5000", "000003_0"],
        np.array([[0.9, 0.5], [0.1, 0.5], [0.5, 0.2]]),
        np.array([[True, False], [True, False], [False, True]]),
        ["bass", "drums"],
    )
    table = fma.instrument_table(tmp_path)
    assert table.track_ids == ["2", "3"] and table.duplicates == 1
    np.testing.assert_allclose(table.y_true[0], [0.9, 0.5], rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# End to end (with the audio front end)
# --------------------------------------------------------------------------------------------------
def test_build_end_to_end(raw, tmp_path, capsys):
    out = tmp_path / "data" / "fma"
    argv = [
        "--metadata",
        str(raw / "fma_metadata"),
        "--audio",
        str(raw / "fma_large"),
        "--openmic",
        str(raw / "openmic-2018"),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert fma.main(argv) == 0
    printed = capsys.readouterr().out
    assert "paper 19466 tracks / 157 labels" in printed

    tracks = ds.read_tracks(out / "tracks.csv")
    assert tracks["track_id"].tolist() == ["2", "3", "5", "300", "500"]
    assert tracks["path"].tolist() == [
        str(fma.fma_audio_path((raw / "fma_large").resolve(), t)) for t in tracks["track_id"]
    ]
    from preprocess.melstore import MelStore

    with MelStore(out / "mels.h5", in_memory=True) as store:
        # store and tracks.csv: the same tracks
        assert store.track_ids == tracks["track_id"].tolist()
        assert store.lengths[store.index("500")] == 1 + 3000 // 512
    # the store's own list (hardening 3)
    assert failures_path(out / "mels.h5") == out / "mels.failures.csv"
    failures = pd.read_csv(out / "mels.failures.csv", dtype=str)
    reasons = dict(zip(failures["track_id"], failures["reason"], strict=True))
    assert sorted(reasons) == ["200", "400", "71826"]
    assert "not found" in reasons["200"] and "too short" in reasons["400"]
    assert ds.read_tracks(out / "candidates.csv")["track_id"].tolist() == [
        "2",
        "3",
        "5",
        "200",
        "300",
        "400",
        "500",
        "71826",
    ]

    annotations = ds.read_annotations(out / "annotations.csv")
    assert annotations.values.tolist() == [
        ["2", "Hip-Hop"],
        ["3", "Hip-Hop"],
        ["3", "Rock"],
        ["5", "Rock"],
        ["500", "Electronic"],
    ]

    # Side information from the final tracks only (hand-computed sums, then per-row
    # standardization).
    count = ds.read_side_info(out / "side_info" / "instrument-count.csv")
    assert count.labels == ["Electronic", "Hip-Hop", "Rock"] and count.dim == 40
    # tracks 2 + 3
    hiphop = {SLOT["bass"]: 1, 20 + SLOT["drums"]: 1, SLOT["guitar"]: 1, 20 + SLOT["voice"]: 1}
    # Four ones among 40: mean 0.1, std 0.3 -> 3 at the ones, -1/3 elsewhere.
    expected = np.full(40, -1 / 3)
    expected[list(hiphop)] = 3.0
    np.testing.assert_allclose(count.lookup(["Hip-Hop"])[0], expected, rtol=1e-6)
    np.testing.assert_allclose(
        count.lookup(["Rock"])[0],
        standardized({SLOT["guitar"]: 2, 20 + SLOT["voice"]: 1}),
        rtol=1e-6,
    )
    np.testing.assert_allclose(count.lookup(["Electronic"])[0], spike(SLOT["drums"]), rtol=1e-6)
    confidence = ds.read_side_info(out / "side_info" / "instrument-confidence.csv")
    np.testing.assert_allclose(
        confidence.lookup(["Hip-Hop"])[0],
        standardized({SLOT["bass"]: 0.4, 20 + SLOT["drums"]: 0.3, SLOT["guitar"]: 0.5}),
        rtol=1e-5,
    )
    np.testing.assert_allclose(confidence.lookup(["Rock"])[0], spike(SLOT["guitar"]), rtol=1e-5)
    random = ds.read_side_info(out / "side_info" / "random.csv")
    np.testing.assert_allclose(
        random.vectors, random_side_info(random.labels, 40, seed=0), rtol=1e-6
    )

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracks"] == 5 and summary["labels"] == 3 and summary["positives"] == 5
    assert summary["paper"] == {"tracks": 19466, "labels": 157}
    assert summary["dropped_genres"] == {
        "before_audio": {"Avant-Garde": ["instrument-confidence"]},
        "after_audio": {"Experimental": ["instrument-confidence"]},
    }
    assert summary["tracks_dropped_without_genre"] == 1
    # in tracks.csv and mels.h5, unlabelled
    assert summary["tracks_left_without_genre_after_audio"] == ["300"]
    assert summary["genres_lost_with_failed_audio"] == ["Folk"]
    assert (
        summary["known_broken"]["failed"] == ["071826"] and summary["known_broken"]["stored"] == []
    )
    assert summary["audio"]["candidates"] == 8 and summary["audio"]["failed"] == 3
    assert summary["audio"]["failures_csv"] == "mels.failures.csv"
    assert json.loads((out / MARKER_FILE).read_text())["owner"] == "preprocess.fma"
    assert summary["genres_without_candidate_track"] == []

    # Rerun: the store is found done (not rewritten); every file is identical.
    before = {
        p.name: p.read_bytes()
        for p in list(out.glob("*.csv")) + list((out / "side_info").glob("*.csv"))
    }
    before["summary.json"] = (out / "summary.json").read_bytes()
    mtime = (out / "mels.h5").stat().st_mtime_ns
    assert fma.main(argv) == 0
    after = {
        p.name: p.read_bytes()
        for p in list(out.glob("*.csv")) + list((out / "side_info").glob("*.csv"))
    }
    after["summary.json"] = (out / "summary.json").read_bytes()
    assert after == before
    assert (out / "mels.h5").stat().st_mtime_ns == mtime


def test_cli_errors_are_one_line(raw, tmp_path, capsys):
    base = [
        "--audio",
        str(raw / "fma_large"),
        "--openmic",
        str(raw / "openmic-2018"),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert fma.main(["--metadata", str(tmp_path / "nowhere")] + base) == 2
    assert "error: --metadata" in capsys.readouterr().err
    (raw / "openmic-2018" / "openmic-2018.npz").unlink()
    assert fma.main(["--metadata", str(raw / "fma_metadata")] + base) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ")
        and "openmic-2018.npz do not exist" in err
        and "Traceback" not in err
    )


def test_no_candidate_is_a_clear_error(tmp_path):
    write_tracks_csv(tmp_path / "meta" / "tracks.csv", {7: "[12]"})
    (tmp_path / "meta" / "genres.csv").write_text(GENRES_CSV)
    write_openmic_folder(tmp_path / "om", tracks={8: ("[12]", {"bass": 0.9}, None)})
    (tmp_path / "audio").mkdir()
    with pytest.raises(
        ds.DatasetError, match="no FMA track .* is in .* with an instrument annotation"
    ):
        fma.build_fma(
            tmp_path / "meta", tmp_path / "audio", tmp_path / "om", tmp_path / "out", progress=False
        )


def test_refuses_a_folder_it_did_not_make(raw, tmp_path, capsys):
    """Hardening 1: a non-empty --out without the adapter's marker is the user's: refused, nothing
    touched."""
    out = tmp_path / "mine"
    (out / "audio").mkdir(parents=True)
    (out / "tracks.csv").write_text("my own file")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    argv = [
        "--metadata",
        str(raw / "fma_metadata"),
        "--audio",
        str(raw / "fma_large"),
        "--openmic",
        str(raw / "openmic-2018"),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert fma.main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {out} is not empty and was not made by `preprocess.fma`")
        and "(--out)" in err
    )
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / "tracks.csv").read_text() == "my own file"


def test_negative_seed_is_refused_by_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        fma.main(["--metadata", "m", "--audio", "a", "--openmic", "o", "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "argument --seed: '-1' is not a non-negative integer" in capsys.readouterr().err
