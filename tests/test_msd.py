"""Tests of the MSD + Last.fm + GloVe adapter (preprocess/msd.py) on tiny fixtures in the real
formats (docs/formats.md): an SQLite file with the Last.fm schema (tid_tag joins tids/tags on
ROWID), the equivalent lastfm_train JSON folder, a GloVe text file (300 floats per line, with
malformed and multi-space-token lines), a genre vocabulary, short audio clips and a track_id,path
audio map."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import dataset_dir as ds
from preprocess import msd
from preprocess.common import read_glove
from preprocess.side_info import random_side_info

# Last.fm: MSD track id -> [(raw tag, value)]. With --min-tag-value 50 (the default):
#   TRA: Hip-Hop 100 -> hiphop; Rock 40 is below the threshold; "seen live" is no genre
#   TRB: "hip hop" 60 -> hiphop (merged with Hip-Hop); Rock 10 fails but "rock" 55 passes -> rock;
#   R&B -> rb
#        (in the vocabulary, but its GloVe line is malformed -> dropped)
#   TRC: Classic Rock exactly 50 -> classicrock; Jazz 49.5 fails
#   TRD: jazz, 00s, unicorncore (no GloVe vector) -- but TRD has no entry in the audio map
#   TRE: only R&B -> no positive left; TRF: 00s, clip of 28 s (< 29 s) -> failures.csv
#   TRG: Jazz, broken clip -> failures.csv; TRH: only tags outside the vocabulary
LASTFM = {
    "TRAAAAA128F4": [("Hip-Hop", 100), ("hip hop", 20), ("Rock", 40), ("seen live", 100)],
    "TRBBBBB128F4": [("hip hop", 60), ("Rock", 10), ("rock", 55), ("R&B", 100)],
    "TRCCCCC128F4": [("Classic Rock", 50), ("Jazz", 49.5)],
    "TRDDDDD128F4": [("Jazz", 100), ("Unicorn-core", 100), ("00s", 70)],
    "TREEEEE128F4": [("R&B", 100)],
    "TRFFFFF128F4": [("00s", 80)],
    "TRGGGGG128F4": [("Jazz", 90)],
    "TRHHHHH128F4": [("!!!", 100), ("Drum 'n' Bass", 100)],
}
RAW_TAGS = [
    "Hip-Hop",
    "hip hop",
    "Rock",
    "seen live",
    "rock",
    "R&B",
    "Classic Rock",
    "Jazz",
    "Unicorn-core",
    "00s",
    "!!!",
    "Drum 'n' Bass",
]
VOCABULARY = (
    "# genres made from the Tagtraum ontology\nHip Hop\nrock\n\nclassic "
    "rock\nR&B\njazz\n00s\nunicorncore\n"
    "drum and bass\n"
)
CLIPS = {  # audio map entries: seconds of audio, or "broken"
    "TRAAAAA128F4": 31.0,
    "TRBBBBB128F4": 29.5,
    "TRCCCCC128F4": 30.0,
    "TREEEEE128F4": 30.0,
    "TRFFFFF128F4": 28.0,
    "TRGGGGG128F4": "broken",
    "TRHHHHH128F4": 30.0,
}


def glove_vector(word):
    """A distinct, exactly representable-enough 300-d vector per word."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(word))
    return np.round(np.random.default_rng(seed).standard_normal(300), 6)


def _line(token, values):
    return token + " " + " ".join(f"{v:.6f}" for v in values) + "\n"


def write_glove(path):
    lines = [
        _line("the", glove_vector("the")),
        _line("hiphop", glove_vector("hiphop")),
        _line("rock", glove_vector("rock")),
        _line("classicrock", glove_vector("classicrock")).replace("\n", " \n"),  # trailing space
        "bad 0.1 0.2\n",  # malformed: too few fields
        _line("hip hop", glove_vector("hip hop")),  # token with a space: parsed, not needed
        "rb " + " ".join(["nan"] * 300) + "\n",  # malformed for a wanted word: non-finite values
        _line("jazz", glove_vector("jazz")),
        _line("00s", glove_vector("00s")),
        "\n",  # malformed: blank
        _line("rock", glove_vector("duplicate")),  # repeated token: the first one wins
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_lastfm_db(path, data=LASTFM):
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE tids (tid TEXT); CREATE TABLE tags (tag TEXT); "
        "CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT);"
    )
    tag_rowid = {}
    for tag in RAW_TAGS:
        tag_rowid[tag] = connection.execute("INSERT INTO tags VALUES (?)", (tag,)).lastrowid
    for tid, pairs in data.items():
        tid_rowid = connection.execute("INSERT INTO tids VALUES (?)", (tid,)).lastrowid
        connection.executemany(
            "INSERT INTO tid_tag VALUES (?, ?, ?)",
            [(tid_rowid, tag_rowid[tag], float(value)) for tag, value in pairs],
        )
    connection.commit()
    connection.close()
    return path


def write_lastfm_json(folder, data=LASTFM):
    for i, (tid, pairs) in enumerate(data.items()):
        path = folder / "lastfm_train" / tid[2] / tid[3] / tid[4] / f"{tid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Values as the JSON files give them: strings for some, numbers for others.
        tags = [[tag, str(value) if i % 2 else value] for tag, value in pairs]
        record = {
            "artist": "A",
            "title": "T",
            "timestamp": "2011-08-02",
            "track_id": tid,
            "similars": [],
            "tags": tags,
        }
        path.write_text(json.dumps(record), encoding="utf-8")
    return folder


def write_audio(folder):
    rows = []
    rng = np.random.default_rng(0)
    for tid, seconds in CLIPS.items():
        relative = f"{tid[2]}/{tid[3]}/{tid}.clip.mp3"
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if seconds == "broken":
            path.write_bytes(b"\xff\xfb" + bytes(100))
        else:
            n = int(seconds * 8000)
            y = 0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / 8000) + 0.01 * rng.standard_normal(n)
            # WAV data, read by content
            sf.write(path, y.astype("float32"), 8000, format="WAV", subtype="PCM_16")
        rows.append((tid, relative))
    return rows


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    write_lastfm_db(root / "lastfm_tags.db")
    write_lastfm_json(root / "lastfm")
    write_glove(root / "glove.txt")
    (root / "genres.txt").write_text(VOCABULARY, encoding="utf-8")
    rows = write_audio(root / "audio")
    pd.DataFrame(rows, columns=["track_id", "path"]).to_csv(root / "map.csv", index=False)
    return root


# --------------------------------------------------------------------------------------------------
# Tags, vocabulary, GloVe
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw_tag, expected",
    [
        ("Hip-Hop", "hiphop"),
        ("hip hop", "hiphop"),
        ("Classic Rock", "classicrock"),
        ("R&B", "rb"),
        ("00s", "00s"),
        ("80's", "80s"),
        ("Drum 'n' Bass", "drumnbass"),
        ("Singer-Songwriter", "singersongwriter"),
        ("Cafe\u0301 Del Mar", "caf\u00e9delmar"),
        ("!!!", ""),
        ("  ", ""),
    ],
)
def test_normalize_tag(raw_tag, expected):
    assert msd.normalize_tag(raw_tag) == expected


def test_read_vocabulary(tmp_path):
    path = tmp_path / "genres.txt"
    path.write_text(VOCABULARY)
    assert msd.read_vocabulary(path) == {
        "hiphop",
        "rock",
        "classicrock",
        "rb",
        "jazz",
        "00s",
        "unicorncore",
        "drumandbass",
    }
    path.write_text("# only a comment\n\n")
    with pytest.raises(ds.DatasetError, match="--genres .* no genre found"):
        msd.read_vocabulary(path)
    with pytest.raises(ds.DatasetError, match="--genres .* does not exist"):
        msd.read_vocabulary(tmp_path / "nope.txt")


def test_read_glove_streams_and_counts_malformed(tmp_path):
    path = write_glove(tmp_path / "glove.txt")
    counts = {}
    vectors, dim = read_glove(
        path,
        {"hiphop", "rock", "classicrock", "rb", "jazz", "unicorncore"},
        dim=300,
        counts=counts,
        progress=False,
    )
    assert sorted(vectors) == ["classicrock", "hiphop", "jazz", "rock"] and dim == 300
    # "bad 0.1 0.2", the non-finite "rb" line, the blank line
    assert counts == {"lines": 11, "malformed": 3}
    # the first "rock" line
    np.testing.assert_allclose(vectors["rock"], glove_vector("rock"), atol=1e-9)
    np.testing.assert_allclose(vectors["classicrock"], glove_vector("classicrock"), atol=1e-9)
    # A token containing spaces is everything before the last 300 fields; dim=None reads it from the
    # first line.
    spaced, dim = read_glove(path, {"hip hop"}, progress=False)
    assert dim == 300
    np.testing.assert_allclose(spaced["hip hop"], glove_vector("hip hop"), atol=1e-9)
    # Another dimension: every 300-float line has too many fields for dim 299 -> token "the 0.1..."
    # is not wanted.
    assert read_glove(path, {"rock"}, dim=299, progress=False) == ({}, 299)
    with pytest.raises(ds.DatasetError, match="GloVe file .* does not exist"):
        read_glove(tmp_path / "missing.txt", {"rock"}, progress=False)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ds.DatasetError, match="is it GloVe text"):
        read_glove(tmp_path / "empty.txt", {"rock"}, progress=False)


def test_read_glove_refuses_values_beyond_float32_and_stops_early(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("big 1e300 2\nbig 1 2\nsmall 3 4\nsmall 5 6\nx 1\n")
    counts = {}
    vectors, dim = read_glove(path, {"big", "small"}, counts=counts, progress=False)
    # 1e300 is inf in float32; "x 1" is too short
    assert dim == 2 and counts == {"lines": 5, "malformed": 2}
    assert vectors["big"].tolist() == [1.0, 2.0] and vectors["small"].tolist() == [3.0, 4.0]
    # without counts, reading stops once every wanted word is found
    path.write_text("small 3 4\nbroken\n")
    assert read_glove(path, {"small"}, progress=False)[0]["small"].tolist() == [3.0, 4.0]


# --------------------------------------------------------------------------------------------------
# Last.fm sources
# --------------------------------------------------------------------------------------------------
EXPECTED_PAIRS_50 = [  # vocabulary tags with value >= 50, before the GloVe filter
    ("TRAAAAA128F4", "hiphop"),
    ("TRBBBBB128F4", "hiphop"),
    ("TRBBBBB128F4", "rb"),
    ("TRBBBBB128F4", "rock"),
    ("TRCCCCC128F4", "classicrock"),
    ("TRDDDDD128F4", "00s"),
    ("TRDDDDD128F4", "jazz"),
    ("TRDDDDD128F4", "unicorncore"),
    ("TREEEEE128F4", "rb"),
    ("TRFFFFF128F4", "00s"),
    ("TRGGGGG128F4", "jazz"),
]


def test_sqlite_and_json_give_the_same_positives(raw):
    vocabulary = msd.read_vocabulary(raw / "genres.txt")
    pairs, counts = msd.lastfm_pairs_sqlite(raw / "lastfm_tags.db", vocabulary, 50, progress=False)
    assert [tuple(r) for r in pairs.values.tolist()] == EXPECTED_PAIRS_50
    assert (counts.raw_tags, counts.normalized_tags, counts.tags_in_vocabulary) == (12, 9, 7)
    # raw pairs passing; no two raw forms of one track pass together at 50
    assert counts.pairs_read == 11
    from_json, json_counts = msd.lastfm_pairs_json([raw / "lastfm"], vocabulary, 50, progress=False)
    pd.testing.assert_frame_equal(from_json, pairs)
    assert (json_counts.raw_tags, json_counts.normalized_tags, json_counts.tags_in_vocabulary) == (
        12,
        9,
        7,
    )


def test_threshold_zero_and_hundred(raw):
    vocabulary = msd.read_vocabulary(raw / "genres.txt")
    everything, counts = msd.lastfm_pairs_sqlite(
        raw / "lastfm_tags.db", vocabulary, 0, progress=False
    )
    assert ("TRAAAAA128F4", "rock") in [tuple(r) for r in everything.values.tolist()]  # Rock 40
    assert ("TRCCCCC128F4", "jazz") in [tuple(r) for r in everything.values.tolist()]  # Jazz 49.5
    # 15 raw vocabulary pairs; TRA's Hip-Hop + "hip hop" and TRB's Rock + "rock" merge -> 13
    # positives.
    assert counts.pairs_read == 15
    assert len(everything) == 13
    only_top, _ = msd.lastfm_pairs_sqlite(raw / "lastfm_tags.db", vocabulary, 100, progress=False)
    assert [tuple(r) for r in only_top.values.tolist()] == [
        ("TRAAAAA128F4", "hiphop"),
        ("TRBBBBB128F4", "rb"),
        ("TRDDDDD128F4", "jazz"),
        ("TRDDDDD128F4", "unicorncore"),
        ("TREEEEE128F4", "rb"),
    ]
    for bad in (-1, 100.5):
        with pytest.raises(ds.DatasetError, match="--min-tag-value .* must be within 0..100"):
            msd.lastfm_pairs_sqlite(raw / "lastfm_tags.db", vocabulary, bad, progress=False)


def test_sqlite_schema_errors(tmp_path):
    path = tmp_path / "db.sqlite"
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE tids (tid TEXT); CREATE TABLE tags (tag TEXT);")
    connection.close()
    with pytest.raises(
        ds.DatasetError, match=r"not a readable Last.fm tags database .*\(no such table: tid_tag\)"
    ):
        msd.lastfm_pairs_sqlite(path, {"rock"}, 50, progress=False)
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE tid_tag (tid INT, tag INT, value FLOAT);")
    connection.close()
    with pytest.raises(
        ds.DatasetError, match="tid_tag.tid, tag, val. .no such column: tid_tag.val"
    ):
        msd.lastfm_pairs_sqlite(path, {"rock"}, 50, progress=False)
    (tmp_path / "text.db").write_text("not a database " * 100)
    with pytest.raises(
        ds.DatasetError, match="not a readable Last.fm tags database .*file is not a database"
    ):
        msd.lastfm_pairs_sqlite(tmp_path / "text.db", {"rock"}, 50, progress=False)
    with pytest.raises(ds.DatasetError, match="--lastfm-db .* does not exist"):
        msd.lastfm_pairs_sqlite(tmp_path / "missing.db", {"rock"}, 50, progress=False)


def test_json_skips_unreadable_files_and_values(tmp_path):
    write_lastfm_json(tmp_path, {"TRAAAAA128F4": [("Rock", 100), ("Jazz", "lots")]})
    (tmp_path / "lastfm_train" / "broken.json").write_text("{not json")
    pairs, counts = msd.lastfm_pairs_json([tmp_path], {"rock", "jazz"}, 50, progress=False)
    assert pairs.values.tolist() == [["TRAAAAA128F4", "rock"]]
    assert counts.unreadable_values == 1
    assert len(counts.unreadable_files) == 1 and "broken.json" in counts.unreadable_files[0]
    with pytest.raises(ds.DatasetError, match="--lastfm-json .* does not exist"):
        msd.lastfm_pairs_json([tmp_path / "nope"], {"rock"}, 50, progress=False)


def test_audio_map_errors(tmp_path):
    (tmp_path / "map.csv").write_text("track_id,file\nTRA,a.mp3\n")
    with pytest.raises(ds.DatasetError, match="--audio-map .* lacks column.*path"):
        msd.read_audio_map(tmp_path / "map.csv", tmp_path)
    (tmp_path / "map.csv").write_text("track_id,path\nTRA,a.mp3\nTRA,b.mp3\n")
    with pytest.raises(ds.DatasetError, match="track_id 'TRA' occurs more than once"):
        msd.read_audio_map(tmp_path / "map.csv", tmp_path)
    (tmp_path / "map.csv").write_text("track_id,path\nTRA,a/b.mp3\nTRB,/abs/c.mp3\n")
    assert msd.read_audio_map(tmp_path / "map.csv", tmp_path) == {
        "TRA": str(tmp_path.resolve() / "a/b.mp3"),
        "TRB": "/abs/c.mp3",
    }
    with pytest.raises(ds.DatasetError, match="--audio-map .* does not exist"):
        msd.read_audio_map(tmp_path / "none.csv", tmp_path)


def test_tag_annotations_applies_glove_filter_and_needs_one_source(raw):
    vocabulary = msd.read_vocabulary(raw / "genres.txt")
    labels = msd.tag_annotations(
        vocabulary, raw / "glove.txt", 50, lastfm_db=raw / "lastfm_tags.db", progress=False
    )
    assert sorted(set(labels.annotations["label"])) == [
        "00s",
        "classicrock",
        "hiphop",
        "jazz",
        "rock",
    ]
    assert labels.counts["tags_in_vocabulary_with_positives"] == 7
    # rb (malformed GloVe line) and unicorncore (absent) dropped
    assert labels.counts["tags_with_glove"] == 5
    assert labels.counts["glove_malformed_lines"] == 3
    assert labels.counts["tracks_with_positives"] == 6  # TRE had only rb
    with pytest.raises(ds.DatasetError, match="exactly one of --lastfm-db"):
        msd.tag_annotations(vocabulary, raw / "glove.txt", 50, progress=False)
    with pytest.raises(ds.DatasetError, match="exactly one of --lastfm-db"):
        msd.tag_annotations(
            vocabulary,
            raw / "glove.txt",
            50,
            lastfm_db=raw / "lastfm_tags.db",
            lastfm_json=[raw / "lastfm"],
            progress=False,
        )


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["db", "json"])
def test_build_end_to_end(raw, tmp_path, capsys, source):
    out = tmp_path / "data" / "msd"
    lastfm = (
        ["--lastfm-db", str(raw / "lastfm_tags.db")]
        if source == "db"
        else ["--lastfm-json", str(raw / "lastfm")]
    )
    argv = lastfm + [
        "--genres",
        str(raw / "genres.txt"),
        "--glove",
        str(raw / "glove.txt"),
        "--audio",
        str(raw / "audio"),
        "--audio-map",
        str(raw / "map.csv"),
        "--out",
        str(out),
        "--no-progress",
        "--seed",
        "3",
    ]
    assert msd.main(argv) == 0
    assert "paper 406409 tracks / 1126 labels" in capsys.readouterr().out

    tracks = ds.read_tracks(out / "tracks.csv")
    assert tracks["track_id"].tolist() == ["TRAAAAA128F4", "TRBBBBB128F4", "TRCCCCC128F4"]
    assert tracks["path"].iloc[0] == str(
        (raw / "audio").resolve() / "A" / "A" / "TRAAAAA128F4.clip.mp3"
    )
    from preprocess.melstore import MelStore

    with MelStore(out / "mels.h5", in_memory=True) as store:
        assert store.track_ids == tracks["track_id"].tolist()
        # 31 s clip: its first 30 s
        assert store.lengths[store.index("TRAAAAA128F4")] == 1 + (30 * 22050) // 512
        assert store.lengths[store.index("TRBBBBB128F4")] == 1 + int(29.5 * 22050) // 512
    failures = pd.read_csv(out / "mels.failures.csv", dtype=str)
    assert sorted(failures["track_id"]) == ["TRFFFFF128F4", "TRGGGGG128F4"]
    assert "too short" in failures.set_index("track_id").loc["TRFFFFF128F4", "reason"]

    annotations = ds.read_annotations(out / "annotations.csv")
    assert annotations.values.tolist() == [
        ["TRAAAAA128F4", "hiphop"],
        ["TRBBBBB128F4", "hiphop"],
        ["TRBBBBB128F4", "rock"],
        ["TRCCCCC128F4", "classicrock"],
    ]
    glove = ds.read_side_info(out / "side_info" / "glove.csv")
    assert glove.labels == ["classicrock", "hiphop", "rock"] and glove.dim == 300
    for tag in glove.labels:
        np.testing.assert_allclose(glove.lookup([tag])[0], glove_vector(tag), rtol=1e-6, atol=1e-6)
    random = ds.read_side_info(out / "side_info" / "random.csv")
    assert random.labels == glove.labels and random.dim == 300
    np.testing.assert_allclose(
        random.vectors, random_side_info(glove.labels, 300, seed=3), rtol=1e-6
    )

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracks"] == 3 and summary["labels"] == 3 and summary["positives"] == 4
    assert summary["glove_path"] == str((raw / "glove.txt").resolve())
    assert summary["min_tag_value"] == 50.0
    tags = summary["tags"]
    assert (
        tags["lastfm_raw_tags"],
        tags["lastfm_normalized_tags"],
        tags["tags_in_vocabulary"],
        tags["tags_with_glove"],
        tags["glove_malformed_lines"],
    ) == (12, 9, 7, 5, 3)
    assert summary["tracks_without_audio_map_entry"] == 1  # TRD
    assert summary["tags_lost_without_audio"] == ["00s", "jazz"]
    assert summary["audio"]["candidates"] == 5 and summary["audio"]["failed"] == 2
    assert summary["audio"]["failures_csv"] == "mels.failures.csv"

    # Rerun: nothing changes, the store is not rewritten.
    mtime = (out / "mels.h5").stat().st_mtime_ns
    files = {p: p.read_bytes() for p in sorted(out.rglob("*.csv")) + [out / "summary.json"]}
    assert msd.main(argv) == 0
    assert (out / "mels.h5").stat().st_mtime_ns == mtime
    assert {p: p.read_bytes() for p in files} == files


def test_cli_errors(raw, tmp_path, capsys):
    base = [
        "--lastfm-db",
        str(raw / "lastfm_tags.db"),
        "--genres",
        str(raw / "genres.txt"),
        "--audio",
        str(raw / "audio"),
        "--audio-map",
        str(raw / "map.csv"),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert msd.main(base + ["--glove", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --glove") and "Traceback" not in err
    assert msd.main(base + ["--glove", str(raw / "glove.txt"), "--min-tag-value", "101"]) == 2
    assert "--min-tag-value 101.0: must be within 0..100" in capsys.readouterr().err
    (raw / "map.csv").write_text("track_id,path\nTRZZZ,x.mp3\n")
    assert msd.main(base + ["--glove", str(raw / "glove.txt")]) == 2
    assert "is listed in --audio-map" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: the two Last.fm sources are exclusive
        msd.main(base + ["--glove", str(raw / "glove.txt"), "--lastfm-json", str(raw / "lastfm")])
    assert exit_info.value.code == 2


def test_refuses_a_folder_it_did_not_make(raw, tmp_path, capsys):
    """Hardening 1: the user's non-empty folder is refused before anything is written into it."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    argv = [
        "--lastfm-db",
        str(raw / "lastfm_tags.db"),
        "--genres",
        str(raw / "genres.txt"),
        "--glove",
        str(raw / "glove.txt"),
        "--audio",
        str(raw / "audio"),
        "--audio-map",
        str(raw / "map.csv"),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert msd.main(argv) == 2
    assert "was not made by `preprocess.msd`" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["todo.txt"] and (
        out / "todo.txt"
    ).read_text() == "keep me"


def test_second_build_of_the_same_folder_is_refused(raw, tmp_path, capsys):
    from fileio import claim_folder, output_lock

    out = claim_folder(tmp_path / "msd", "preprocess.msd")
    argv = [
        "--lastfm-db",
        str(raw / "lastfm_tags.db"),
        "--genres",
        str(raw / "genres.txt"),
        "--glove",
        str(raw / "glove.txt"),
        "--audio",
        str(raw / "audio"),
        "--audio-map",
        str(raw / "map.csv"),
        "--out",
        str(out),
        "--no-progress",
    ]
    with output_lock(out, "preprocess.msd build"):  # a build in progress
        assert msd.main(argv) == 2
    assert "another preprocess.msd build is writing" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".zsl-music.json"]
