"""Tests of the MTG-Jamendo adapter (preprocess/jamendo.py, jamendo_tsv.py, jamendo_stats.py) on the
committed excerpt of the real metadata (tests/data/jamendo/: 210 tracks, CRLF, variable TAGS fields)
with tiny generated audio under both namings (41/241.mp3 and 41/241.low.mp3), a broken file and
missing files, and a fake GloVe file."""

import hashlib
import json
import statistics
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import dataset_dir as ds
import splits
from dataset_dir import DatasetError
from preprocess import jamendo, jamendo_stats
from preprocess.frontend import AudioError, load_audio
from preprocess.jamendo_tsv import read_metadata, read_tsv, read_word_splits
from preprocess.store import build_store

REPO = Path(__file__).resolve().parent.parent
EXCERPT = Path(__file__).resolve().parent / "data" / "jamendo"
GENRE = sorted(str(p) for p in EXCERPT.glob("autotagging_genre-*.tsv"))
INSTRUMENT = [str(EXCERPT / "autotagging_instrument.tsv")]
MOODTHEME = [str(EXCERPT / "autotagging_moodtheme.tsv")]
SOURCES = ["--genre", *GENRE, "--instrument", *INSTRUMENT, "--moodtheme", *MOODTHEME]
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
DIM = 8  # of the fake GloVe vectors


def hand_tags(paths) -> dict:
    """{track id: set of tag names}: an independent plain-Python reading of the TSV files."""
    tags = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines()[1:]:
            fields = line.split("\t")
            tags.setdefault(fields[0], set()).update(field.split("---")[1] for field in fields[5:])
    return tags


def hand_paths() -> dict:
    return {
        line.split("\t")[0]: line.split("\t")[3]
        for path in GENRE + INSTRUMENT + MOODTHEME
        for line in Path(path).read_text(encoding="utf-8").splitlines()[1:]
    }


def word_vector(word):
    return np.round(
        np.random.default_rng(sum(map(ord, word)) * 31 + len(word)).standard_normal(DIM), 6
    )


def write_glove(path, words):
    path.write_text(
        "".join(f"{w} " + " ".join(f"{v:.6f}" for v in word_vector(w)) + "\n" for w in words)
    )
    return path


def tone(seconds, seed):
    t = np.arange(int(22050 * seconds)) / 22050
    rng = np.random.default_rng(seed)
    return (
        0.3 * np.sin(2 * np.pi * (200 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    ).astype(np.float32)


def write_audio(root: Path, relative: str, seed: int, low: bool = False) -> Path:
    path = root / (relative[:-4] + ".low.mp3" if low else relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(2.0, seed), 22050, format="MP3")
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Genre tracks (id order): 6 as .mp3, 4 as .low.mp3, 1 broken, the other 159 missing."""
    root = tmp_path_factory.mktemp("jamendo_audio")
    genre_ids = sorted(hand_tags(GENRE), key=lambda t: int(t[6:]))
    paths = hand_paths()
    full = [write_audio(root, paths[t], i) for i, t in enumerate(genre_ids[:6])]
    low = [write_audio(root, paths[t], i, low=True) for i, t in enumerate(genre_ids[6:10])]
    broken = root / paths[genre_ids[10]]
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"ID3 this is not an mp3 stream at all" * 10)
    return {"root": root, "ids": genre_ids, "full": full, "low": low, "broken": genre_ids[10]}


@pytest.fixture(scope="module")
def genre_meta(tmp_path_factory):
    out = tmp_path_factory.mktemp("meta") / "genre"
    summary = jamendo.build_jamendo(
        GENRE, INSTRUMENT, out, moodtheme=MOODTHEME, metadata_only=True, progress=False
    )
    return out, summary


# TSV parsing --------------------------------------------------------------------------------------
def test_variable_tags_field_is_parsed():
    rows, others = read_tsv(INSTRUMENT[0], "instrument")
    assert len(rows) == 140 and others == 0
    row = next(r for r in rows if r.track_id == "track_0173505")
    assert row.tags == {
        "acousticguitar",
        "bass",
        "electricpiano",
        "guitar",
        "keyboard",
        "pipeorgan",
    }
    assert (
        row.fixed == ("artist_340578", "album_028297", "05/173505.mp3", "125.9")
        and row.path == "05/173505.mp3"
    )
    assert {r.track_id: set(r.tags) for r in rows} == hand_tags(INSTRUMENT)


def test_metadata_of_the_excerpt():
    metadata = read_metadata({"genre": GENRE, "instrument": INSTRUMENT, "moodtheme": MOODTHEME})
    assert len(metadata.tracks) == 210
    assert {c: len(t) for c, t in metadata.tags.items()} == {
        "genre": 170,
        "instrument": 140,
        "moodtheme": 100,
    }
    assert metadata.counts == {"repeated_rows_merged": 0, "tags_of_other_categories_not_used": 0}
    assert {t: set(v) for t, v in metadata.tags["genre"].items()} == hand_tags(GENRE)
    assert [f["rows"] for f in metadata.files["genre"]] == [41, 100, 29]  # test, train, validation
    # The same file twice (or a split's files with the full file): repeated identical rows are
    # merged.
    again = read_metadata({"genre": GENRE + GENRE[1:2], "instrument": INSTRUMENT})
    assert (
        again.counts["repeated_rows_merged"] == 100
        and again.tags["genre"] == metadata.tags["genre"]
    )


def test_a_full_autotagging_file_gives_each_flag_its_category(tmp_path):
    lines = [
        HEADER,
        "track_0000001\tartist_1\talbum_1\t01/1.mp3\t200.5\tgenre---rock\tinstrument---piano\t"
        "mood/theme---happy\r\n",
        "track_0000002\tartist_1\talbum_1\t02/2.mp3\t99\tmood/theme---sad\r\n",
    ]
    (tmp_path / "all.tsv").write_text("".join(lines), newline="")
    metadata = read_metadata(
        {c: [tmp_path / "all.tsv"] for c in ("genre", "instrument", "moodtheme")}
    )
    assert metadata.tags == {
        "genre": {"track_0000001": {"rock"}},
        "instrument": {"track_0000001": {"piano"}},
        "moodtheme": {"track_0000001": {"happy"}, "track_0000002": {"sad"}},
    }
    assert metadata.counts["tags_of_other_categories_not_used"] == 3 + 3 + 2  # per flag: the others


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "track_0000001\tartist_1\talbum_1\t01/1.mp3\t200\r\n",
            r"line 3: 5 field\(s\); expected TRACK_ID",
        ),
        (
            "241\tartist_1\talbum_1\t41/241.mp3\t200\tgenre---rock\r\n",
            r"line 3: TRACK_ID '241' is not of the form",
        ),
        (
            "track_0000001\tartist_1\talbum_1\t01/1.mp3\tlong\tgenre---rock\r\n",
            r"line 3: DURATION 'long' is not",
        ),
        (
            "track_0000001\tartist_1\talbum_1\t/abs/1.mp3\t200\tgenre---rock\r\n",
            r"line 3: PATH '/abs/1.mp3' must be",
        ),
        (
            "track_0000001\tartist_1\talbum_1\t01/1.mp3\t200\tgenre:rock\r\n",
            r"line 3: tag field 'genre:rock' is not",
        ),
        (
            "track_0000001\tartist_1\talbum_1\t01/1.mp3\t200\tstyle---rock\r\n",
            r"line 3: tag field 'style---rock'",
        ),
        (
            "track_0000001\tartist_1\talbum_1\t01/1.mp3\t200\tgenre---\r\n",
            r"line 3: tag field 'genre---' is not",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, line, message):
    good = "track_0000009\tartist_1\talbum_1\t09/9.mp3\t120.0\tgenre---pop\r\n"
    (tmp_path / "g.tsv").write_text(HEADER + good + line, newline="")
    with pytest.raises(DatasetError, match=rf"--genre {tmp_path / 'g.tsv'}, {message}"):
        read_tsv(tmp_path / "g.tsv", "genre")


def test_header_and_missing_file_errors(tmp_path):
    (tmp_path / "g.tsv").write_text("track_id,path\r\n", newline="")
    with pytest.raises(
        DatasetError, match=r"line 1: header 'track_id,path' is not TRACK_ID<TAB>ARTIST_ID"
    ):
        read_tsv(tmp_path / "g.tsv", "genre")
    with pytest.raises(
        DatasetError,
        match=r"--instrument .*nope.tsv: file does not exist; give MTG-Jamendo's "
        r"autotagging_instrument.tsv",
    ):
        read_tsv(tmp_path / "nope.tsv", "instrument")
    (tmp_path / "m.tsv").write_text(
        HEADER + "track_0000001\ta\tb\t01/1.mp3\t1\tgenre---rock\r\n", newline=""
    )
    with pytest.raises(
        DatasetError, match=r"no row has a mood/theme--- tag; was the file given to the right flag"
    ):
        read_tsv(tmp_path / "m.tsv", "moodtheme")


def test_a_track_listed_twice_with_different_data_names_both_lines(tmp_path):
    row = "track_0000007\tartist_1\talbum_1\t07/7.mp3\t100.0\t{}\r\n"
    (tmp_path / "a.tsv").write_text(HEADER + row.format("genre---rock"), newline="")
    (tmp_path / "b.tsv").write_text(HEADER + row.format("genre---pop"), newline="")
    with pytest.raises(
        DatasetError,
        match=rf"track_0000007 is listed twice with different data: --genre "
        rf"{tmp_path / 'a.tsv'}, line 2 and --genre {tmp_path / 'b.tsv'}, line 2",
    ):
        read_metadata({"genre": [tmp_path / "a.tsv", tmp_path / "b.tsv"]})
    (tmp_path / "i.tsv").write_text(
        HEADER + row.replace("07/7.mp3", "07/8.mp3").format("instrument---piano"), newline=""
    )
    with pytest.raises(
        DatasetError,
        match=r"track_0000007 has different ARTIST_ID, ALBUM_ID, PATH or DURATION in "
        r"--genre .*a.tsv, line 2 and --instrument .*i.tsv, line 2",
    ):
        read_metadata({"genre": [tmp_path / "a.tsv"], "instrument": [tmp_path / "i.tsv"]})


# Side information ---------------------------------------------------------------------------------
def test_instrument_side_info_equals_a_hand_computation(genre_meta):
    out, summary = genre_meta
    genres, instruments = hand_tags(GENRE), hand_tags(INSTRUMENT)
    names = sorted(set().union(*instruments.values()))
    side = ds.read_side_info(ds.side_info_path(out, "instrument-count"))
    assert side.dim == len(names) == 39
    for genre in ("rock", "electronic", "pop", "ambient", "jazz"):
        counts = [
            sum(1 for t, g in genres.items() if genre in g and name in instruments.get(t, ()))
            for name in names
        ]  # tracks tagged with both, over every track of the metadata
        mean, std = statistics.fmean(counts), statistics.pstdev(counts)
        np.testing.assert_allclose(
            side.lookup([genre])[0], [(c - mean) / std for c in counts], rtol=1e-6
        )
    # Genres of the excerpt that no instrument-tagged track carries cannot be described: dropped and
    # reported.
    lonely = sorted(
        g
        for g in set().union(*genres.values())
        if not any(g in tags and t in instruments for t, tags in genres.items())
    )
    assert lonely == ["dub", "idm", "postrock", "rnb"]
    assert summary["dropped_labels"] == {
        g: "no track carries it together with an instrument tag" for g in lonely
    }
    assert sorted(side.labels) == sorted(set().union(*genres.values()) - set(lonely))
    random = ds.read_side_info(ds.side_info_path(out, "random"))
    assert random.labels == side.labels and random.dim == 39


def test_metadata_only_summary_and_tracks(genre_meta):
    out, summary = genre_meta
    genres = hand_tags(GENRE)
    kept = {t for t, g in genres.items() if g - {"dub", "idm", "postrock", "rnb"}}
    tracks = ds.read_tracks(ds.tracks_path(out))
    assert (
        set(tracks["track_id"]) == kept
        and summary["tracks"] == len(kept)
        and summary["mels"] is None
    )
    assert (
        dict(zip(tracks["track_id"], tracks["path"], strict=True))["track_0000948"] == "48/948.mp3"
    )
    assert summary["selection"]["tracks_dropped_without_label"] == len(genres) - len(kept)
    annotations = ds.read_annotations(ds.annotations_path(out))
    assert summary["tracks_per_label"] == annotations.groupby("label").size().to_dict()
    assert summary["metadata"]["tracks"] == 210 and summary["label_set"] == "genre"
    digest = hashlib.sha256(Path(INSTRUMENT[0]).read_bytes()).hexdigest()
    assert summary["inputs"]["instrument"] == [
        {"path": INSTRUMENT[0], "sha256": digest, "rows": 140}
    ]


def test_glove_compound_rule():
    glove = {
        "electric": np.array([1.0, 2.0]),
        "guitar": np.array([3.0, 0.0]),
        "rock": np.array([5.0, 5.0]),
        "hardrock": np.array([9.0, 9.0]),
    }
    splits_ = {
        "electricguitar": ["electric", "guitar"],
        "hardrock": ["hard", "rock"],
        "poprock": ["pop", "rock"],
    }
    np.testing.assert_array_equal(jamendo.tag_vector("rock", glove, splits_), [5.0, 5.0])
    # the mean
    np.testing.assert_array_equal(jamendo.tag_vector("electricguitar", glove, splits_), [2.0, 1.0])
    # the name first
    np.testing.assert_array_equal(jamendo.tag_vector("hardrock", glove, splits_), [9.0, 9.0])
    assert jamendo.tag_vector("poprock", glove, splits_) is None  # "pop" has no vector
    assert jamendo.tag_vector("unicorncore", glove, splits_) is None


def test_word_split_table_is_well_formed():
    table = read_word_splits(jamendo.WORD_SPLITS)
    assert len(table) == 40 and table["electricguitar"] == ["electric", "guitar"]
    # "n" and "r n b" stand for "and" / "rhythm and blues"
    abbreviated = {"drumnbass", "rnb", "rocknroll"}
    assert all("".join(words) == tag for tag, words in table.items() if tag not in abbreviated)
    assert all(word.isalpha() and word.islower() for words in table.values() for word in words)


def test_all_labels_with_glove(tmp_path):
    tags = set().union(*hand_tags(GENRE + INSTRUMENT + MOODTHEME).values())
    table = read_word_splits(jamendo.WORD_SPLITS)
    words = {w for t in tags for w in table.get(t, [])} | (tags - set(table))
    words -= {"idm", "acoustic"}  # no vector: idm, and every compound with "acoustic"
    glove = write_glove(tmp_path / "glove.txt", sorted(words | {"electricguitar"}))
    out = tmp_path / "all"
    summary = jamendo.build_jamendo(
        GENRE,
        INSTRUMENT,
        out,
        moodtheme=MOODTHEME,
        labels="all",
        glove=glove,
        dim=DIM,
        metadata_only=True,
        progress=False,
    )
    expected_dropped = sorted(t for t in tags if t == "idm" or "acoustic" in table.get(t, []))
    assert (
        sorted(summary["dropped_labels"])
        == expected_dropped
        == ["acousticbassguitar", "acousticguitar", "idm"]
    )
    side = ds.read_side_info(ds.side_info_path(out, "glove"))
    assert sorted(side.labels) == sorted(tags - set(expected_dropped))
    np.testing.assert_allclose(
        side.lookup(["electricguitar"])[0], word_vector("electricguitar"), atol=1e-6
    )
    np.testing.assert_allclose(
        side.lookup(["singersongwriter"])[0],
        (word_vector("singer") + word_vector("songwriter")) / 2,
        atol=1e-6,
    )
    np.testing.assert_allclose(side.lookup(["happy"])[0], word_vector("happy"), atol=1e-6)
    assert "electricguitar" not in summary["selection"]["tags_from_word_splits"]
    assert summary["selection"]["tags_from_word_splits"]["singersongwriter"] == [
        "singer",
        "songwriter",
    ]
    assert summary["tracks"] == 210 and summary["glove_path"] == str(glove.resolve())


def test_a_tag_name_in_two_categories_is_refused(tmp_path):
    (tmp_path / "g.tsv").write_text(
        HEADER + "track_0000001\ta\tb\t01/1.mp3\t1\tgenre---orchestral\r\n", newline=""
    )
    (tmp_path / "i.tsv").write_text(
        HEADER + "track_0000002\ta\tb\t02/2.mp3\t1\tinstrument---orchestral\r\n", newline=""
    )
    with pytest.raises(DatasetError, match="tag 'orchestral' is both a genre and a instrument tag"):
        jamendo.build_jamendo(
            [tmp_path / "g.tsv"],
            [tmp_path / "i.tsv"],
            tmp_path / "out",
            labels="all",
            metadata_only=True,
            progress=False,
        )


# Audio --------------------------------------------------------------------------------------------
def test_middle_excerpt_of_load_audio(tmp_path):
    y = tone(3.0, 1)
    sf.write(tmp_path / "a.wav", y, 22050, subtype="FLOAT")
    start = (y.size - 22050) // 2
    np.testing.assert_array_equal(
        load_audio(tmp_path / "a.wav", 1.0, excerpt="middle"), y[start : start + 22050]
    )
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav", 1.0), y[:22050])
    # shorter: all of it
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav", 9.0, excerpt="middle"), y)
    with pytest.raises(AudioError, match="excerpt 'end': choose one of start, middle"):
        load_audio(tmp_path / "a.wav", 1.0, excerpt="end")
    # The default leaves the store's options (and so the digests of stores built before) unchanged.
    build_store(tmp_path, tmp_path / "s.h5", progress=False)
    with h5py.File(tmp_path / "s.h5", "r") as store:
        assert json.loads(store.attrs["build_params"]) == {
            "max_seconds": None,
            "min_seconds": None,
            "dtype": "float16",
        }


def test_both_namings_missing_and_broken_audio(audio, genre_meta, tmp_path):
    out = tmp_path / "jamendo"
    summary = jamendo.build_jamendo(
        GENRE, INSTRUMENT, out, moodtheme=MOODTHEME, audio=audio["root"], progress=False
    )
    tracks = ds.read_tracks(ds.tracks_path(out))
    assert list(tracks["track_id"]) == audio["ids"][:10]  # decodable, in track order
    assert sorted(tracks["path"]) == sorted(str(p.resolve()) for p in audio["full"] + audio["low"])
    failures = ds.read_csv_columns(
        out / "mels.failures.csv", ("track_id", "path", "reason"), "failures"
    )
    reasons = dict(zip(failures["track_id"], failures["reason"], strict=True))
    kept = summary["candidates"]
    assert len(reasons) == kept - 10 and "cannot decode" in reasons.pop(audio["broken"])
    assert set(reasons.values()) == {"file not found"}
    assert summary["audio"]["excerpt"] == "middle" and summary["audio"]["clip_seconds"] == 30.0
    with h5py.File(out / "mels.h5", "r") as store:
        assert json.loads(store.attrs["build_params"])["excerpt"] == "middle"
    # The side information counts every track of the metadata, whatever audio is present.
    final = sorted(ds.read_annotations(ds.annotations_path(out))["label"].unique())
    side = ds.read_side_info(ds.side_info_path(out, "instrument-count"))
    everything = ds.read_side_info(ds.side_info_path(genre_meta[0], "instrument-count"))
    assert side.labels == final and len(final) < len(everything.labels)
    np.testing.assert_array_equal(side.vectors, everything.lookup(final))
    assert summary["labels_lost_with_audio"] == sorted(set(everything.labels) - set(final))
    # A rerun finds the store done; another label set in this folder is refused.
    assert (
        jamendo.build_jamendo(GENRE, INSTRUMENT, out, audio=audio["root"], progress=False)["tracks"]
        == 10
    )
    with pytest.raises(
        DatasetError, match="holds a --labels genre dataset; build --labels all in another folder"
    ):
        jamendo.build_jamendo(
            GENRE,
            INSTRUMENT,
            out,
            audio=audio["root"],
            labels="all",
            glove=INSTRUMENT[0],
            progress=False,
        )


def test_sha256_list_excludes_damaged_and_unlisted_files(audio, tmp_path):
    root = audio["root"]
    listed = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in audio["full"][1:] + audio["low"]
    }
    listed[audio["full"][1]] = "0" * 64  # damaged
    (tmp_path / "sha.txt").write_text(
        "".join(f"{d} {p.relative_to(root).as_posix()}\n" for p, d in listed.items())
    )
    summary = jamendo.build_jamendo(
        GENRE, INSTRUMENT, tmp_path / "out", audio=root, sha256=tmp_path / "sha.txt", progress=False
    )
    rejected = summary["audio"]["sha256_rejected"]
    first, second = (audio["ids"][i] for i in (0, 1))
    assert rejected[first].endswith("is not listed in --sha256")
    assert rejected[second].endswith("sha256 differs from --sha256 (damaged download?)")
    assert audio["broken"] in rejected and summary["tracks"] == 8


def test_cli_errors(audio, tmp_path, capsys):
    base = [
        "--genre",
        *GENRE,
        "--instrument",
        *INSTRUMENT,
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert jamendo.main(base + ["--audio", str(audio["root"]), "--labels", "all"]) == 2
    assert (
        capsys.readouterr().err
        == "error: --labels all needs --glove (e.g. glove.42B.300d.txt) for its side "
        "information.\n"
    )
    assert jamendo.main(base + ["--audio", str(tmp_path / "none")]) == 2
    assert "error: --audio " in capsys.readouterr().err
    assert jamendo.main(base + ["--metadata-only", "--clip-seconds", "-1"]) == 2
    assert "--clip-seconds -1.0: must be >= 0 seconds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        jamendo.main(base + ["--metadata-only", "--audio", str(audio["root"])])


# Split statistics ---------------------------------------------------------------------------------
def test_split_stats_row_matches_splits(genre_meta, tmp_path):
    out, _ = genre_meta
    assert (
        jamendo_stats.main(
            ["--dataset", str(out), "--name", "jamendo-genre", "--out", str(tmp_path / "s.csv")]
        )
        == 0
    )
    row = pd.read_csv(tmp_path / "s.csv").iloc[0].to_dict()
    _, stats = splits.make_split_with_statistics(ds.read_annotations(ds.annotations_path(out)), 0)
    assert (
        row["dataset"] == "jamendo-genre"
        and row["labels_total"] == 66 == row["seen_labels_X"] + row["unseen_labels_Y"]
    )
    assert [row[g] for g in "ABC"] == [stats["instances"][g] for g in "ABC"]
    assert (
        row["instances_total"] == 170 and row["annotations_sha256"] == stats["annotations_sha256"]
    )
    paper_columns = list(pd.read_csv(REPO / "reference" / "paper_split_stats.csv").columns)
    assert list(row)[: len(paper_columns)] == paper_columns


@pytest.mark.slow
def test_end_to_end_train_and_evaluate(tmp_path):
    """The first 60 genre tracks get audio; the dataset trains for one epoch and evaluates,
    unchanged commands."""
    paths = hand_paths()
    for i, track in enumerate(sorted(hand_tags(GENRE))[:60]):
        write_audio(tmp_path / "audio", paths[track], i % 50, low=bool(i % 2))
    data, run_dir = tmp_path / "jamendo", tmp_path / "run"
    assert (
        jamendo.main(
            SOURCES[:-2]
            + [
                "--audio",
                str(tmp_path / "audio"),
                "--out",
                str(data),
                "--no-progress",
                "--jobs",
                "2",
            ]
        )
        == 0
    )
    import evaluate
    import train

    assert (
        train.main(
            [
                "--dataset",
                str(data),
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--verbose",
                "0",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    assert evaluate.main(["--run-dir", str(run_dir), "--no-progress"]) == 0
    assert json.loads((data / "summary.json").read_text())["tracks"] == 60
    records = json.loads((run_dir / "results.json").read_text())
    retrieval = [r for r in records if r["test"] == "(B+C)-Y" and r["task"] == "retrieval"]
    assert len(retrieval) == 1 and 0 <= retrieval[0]["AUC-l"] <= 1
