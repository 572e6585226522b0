"""Tests of the zero-shot split scheme (splits/): paper Sec. 3.2, Figure 2 (c)."""

import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataset_dir as ds
import fileio
import splits
from splits import make as make_cli

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------
# Helpers: data and an independent, plain-Python re-derivation of splits/README.md "Algorithm"
# --------------------------------------------------------------------------------------------------
def frame(pairs):
    return pd.DataFrame(pairs, columns=["track_id", "label"])


def quiet_split(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", splits.SplitWarning)
        return splits.make_split(*args, **kwargs)


def generator(seed, stream):
    """README: stream k uses numpy.random.default_rng(numpy.random.SeedSequence(seed,
    spawn_key=(k,)))."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def reference_split(pairs, seed, unseen_fraction, valid_fraction):
    """The README's algorithm with Python sets and loops. Returns (split without sha, None) or
    (None, reason)."""
    labels_of = {}
    for track, label in pairs:
        labels_of.setdefault(track, set()).add(label)
    labels = sorted({label for _, label in pairs})
    n_seen = int(len(labels) * (1 - unseen_fraction))
    if n_seen == 0:
        return None, "no seen label"
    if n_seen == len(labels):
        return None, "no unseen label"
    order = generator(seed, 0).permutation(len(labels))
    seen = {labels[i] for i in order[:n_seen]}
    unseen = set(labels) - seen
    groups = {"A": [], "B": [], "C": [], "dropped": []}
    for track in sorted(labels_of):
        mine = labels_of[track]
        if seen <= mine:
            groups["dropped"].append(track)
        elif mine & seen and mine & unseen:
            groups["B"].append(track)
        elif mine & seen:
            groups["A"].append(track)
        else:
            groups["C"].append(track)
    for name in ("A", "B"):
        if not groups[name]:
            return None, f"group {name} is empty"
    groups["A+B"] = sorted(groups["A"] + groups["B"])
    train, valid = {}, {}
    for name, stream in (("A", 1), ("B", 2), ("A+B", 3)):
        members = groups[name]
        order = generator(seed, stream).permutation(len(members))
        n_train = int(len(members) * (1 - valid_fraction))
        if n_train == 0:
            return None, f"group {name} has"
        train[name] = sorted(members[i] for i in order[:n_train])
        valid[name] = sorted(members[i] for i in order[n_train:])
    split = {
        "seed": seed,
        "unseen_fraction": float(unseen_fraction),
        "valid_fraction": float(valid_fraction),
        "seen": sorted(seen),
        "unseen": sorted(unseen),
        "A": groups["A"],
        "B": groups["B"],
        "C": groups["C"],
        "dropped": groups["dropped"],
        "train": train,
        "valid": valid,
    }
    return split, None


def canonical_sha(pairs):
    """sha256 of 'track_id,label' + sorted unique pairs (plain ids: no CSV quoting needed)."""
    lines = ["track_id,label"] + [f"{t},{lab}" for t, lab in sorted(set(pairs))]
    return hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()


def check_invariants(split, pairs):
    """Properties of every split, checked from the pairs with sets (no library code)."""
    labels_of = {}
    for track, label in pairs:
        labels_of.setdefault(track, set()).add(label)
    seen, unseen = set(split["seen"]), set(split["unseen"])
    # X, Y disjoint and complete
    assert not seen & unseen and seen | unseen == {label for _, label in pairs}
    groups = {g: set(split[g]) for g in ("A", "B", "C", "dropped")}
    assert sum(map(len, groups.values())) == len(labels_of)  # disjoint ...
    # ... and complete over the labelled tracks
    assert set().union(*groups.values()) == set(labels_of)
    for track in groups["A"]:
        assert labels_of[track] & seen and not labels_of[track] & unseen
    for track in groups["B"]:
        assert labels_of[track] & seen and labels_of[track] & unseen
    for track in groups["C"]:
        assert not labels_of[track] & seen
    for track in groups["dropped"]:
        assert seen <= labels_of[track]
    groups["A+B"] = groups["A"] | groups["B"]
    for g in ("A", "B", "A+B"):
        train, valid = set(split["train"][g]), set(split["valid"][g])
        assert not train & valid and train | valid == groups[g]
        assert len(train) == int(len(groups[g]) * (1 - split["valid_fraction"]))
    for key in ("seen", "unseen", "A", "B", "C", "dropped"):
        assert split[key] == sorted(split[key])
    assert list(split) == list(splits.SPLIT_KEYS)


# A hand-built example. With seed 0 the label shuffle (stream 0) is permutation [0, 3, 2, 1, 4] of
# the sorted labels blues, country, jazz, pop, rock; int(5 * 0.8) = 4 seen, so rock is the only
# unseen label.
HAND_PAIRS = [
    ("t01", "blues"),
    ("t02", "jazz"),
    ("t02", "pop"),
    ("t03", "country"),
    ("t04", "pop"),
    ("t04", "rock"),
    ("t05", "blues"),
    ("t05", "rock"),
    ("t06", "rock"),
    ("t07", "rock"),
    ("t07", "rock"),  # a repeated row counts once
    # every seen label: dropped
    ("t08", "blues"),
    ("t08", "country"),
    ("t08", "jazz"),
    ("t08", "pop"),
    # dropped too
    ("t09", "blues"),
    ("t09", "country"),
    ("t09", "jazz"),
    ("t09", "pop"),
    ("t09", "rock"),
    ("t10", "jazz"),
    ("t11", "country"),
    ("t11", "jazz"),
    ("t11", "rock"),
]


# --------------------------------------------------------------------------------------------------
# Exact numbers on the hand-built example
# --------------------------------------------------------------------------------------------------
def test_hand_built_example_groups_and_sizes():
    assert generator(0, 0).permutation(5).tolist() == [0, 3, 2, 1, 4]
    split = splits.make_split(frame(HAND_PAIRS), seed=0, valid_fraction=0.5)
    assert split["seen"] == ["blues", "country", "jazz", "pop"]
    assert split["unseen"] == ["rock"]
    assert split["A"] == ["t01", "t02", "t03", "t10"]
    assert split["B"] == ["t04", "t05", "t11"]
    assert split["C"] == ["t06", "t07"]
    assert split["dropped"] == ["t08", "t09"]
    # int(4 * 0.5) = 2, int(3 * 0.5) = 1, int(7 * 0.5) = 3 training tracks
    assert [len(split["train"][g]) for g in ("A", "B", "A+B")] == [2, 1, 3]
    assert [len(split["valid"][g]) for g in ("A", "B", "A+B")] == [2, 2, 4]
    reference, reason = reference_split(HAND_PAIRS, 0, 0.2, 0.5)
    assert reason is None
    assert {k: v for k, v in split.items() if k != "annotations_sha256"} == reference
    assert split["annotations_sha256"] == canonical_sha(HAND_PAIRS)


def test_hand_built_example_statistics():
    split, stats = splits.make_split_with_statistics(frame(HAND_PAIRS), seed=0, valid_fraction=0.5)
    assert stats["labels"] == {"X": 4, "Y": 1, "total": 5}
    assert stats["instances"] == {"A": 4, "B": 3, "C": 2, "total": 9, "dropped": 2}
    assert stats["train"] == {"A": 2, "B": 1, "A+B": 3}
    areas = stats["areas"]
    assert list(areas) == list(splits.ALL_SETUPS)
    # (tracks, labels, positives, labels without a positive track), counted by hand from HAND_PAIRS
    expected = {
        "A-X": (4, 4, 5, 0),  # t01 1 + t02 2 + t03 1 + t10 1
        "B-X": (3, 4, 4, 0),  # t04 pop, t05 blues, t11 country + jazz
        "(A+B)-X": (7, 4, 9, 0),
        "B-Y": (3, 1, 3, 0),
        "C-Y": (2, 1, 2, 0),
        "(B+C)-Y": (5, 1, 5, 0),
        "B-(X+Y)": (3, 5, 7, 0),
        "C-(X+Y)": (2, 5, 2, 4),  # C has no seen label at all
        "(B+C)-(X+Y)": (5, 5, 9, 0),
        "(A+B+C)-Y": (9, 1, 5, 0),
    }
    for setup, (tracks, labels, positives, without) in expected.items():
        area = areas[setup]
        assert (
            area["tracks"],
            area["labels"],
            area["positives"],
            area["labels_without_positives"],
        ) == (tracks, labels, positives, without), setup
        assert area["label_cardinality"] == pytest.approx(positives / tracks, abs=1e-6)
    assert splits.split_statistics(split, frame(HAND_PAIRS)) == stats
    text = splits.format_statistics(stats)
    assert "B-(X+Y)" in text and "2.333" in text


def test_canonical_hash_is_the_written_annotations_file(tmp_path):
    pairs = [("2", "b"), ("10", "a"), ("2", "a"), ("2", "b")]
    # string order: "10" < "2"
    expected = hashlib.sha256(b"track_id,label\n10,a\n2,a\n2,b\n").hexdigest()
    assert splits.annotations_sha256(frame(pairs)) == expected
    odd = frame([("id,1", 'say "hi"'), ("plain", "x y"), ("line\nbreak", "z"), ("plain", "a,b")])
    ds.write_annotations(tmp_path / "annotations.csv", odd)
    assert splits.annotations_sha256(odd) == fileio.sha256_file(tmp_path / "annotations.csv")
    assert splits.annotations_sha256(odd.iloc[::-1]) == splits.annotations_sha256(odd)


# --------------------------------------------------------------------------------------------------
# The same files as the integer-encoded implementation this module replaced (the demo's numbers
# depend on them)
# --------------------------------------------------------------------------------------------------
def golden_annotations():
    """~700 random pairs whose ids and labels need CSV quoting (comma, quote, LF, CR), are non-ASCII
    or sort as strings ("10" < "9")."""
    rng = np.random.default_rng(2019)
    names = [
        "rock",
        "pop",
        "jazz, vocal",
        'say "hi"',
        "électro",
        "hip hop",
        "a\nb",
        "x\ry",
        "ambient",
        "Zeuhl",
        "10s",
    ]
    labels = names + [f"tag{k:02d}" for k in range(30)]
    tracks = [f"TR{k:05d}" for k in range(300)] + ["id,1", "9", "10", "é"]
    pairs = [
        (t, labels[int(k)])
        for t in tracks
        for k in rng.choice(len(labels), size=1 + rng.poisson(1.2))
    ]
    return frame(pairs)


# sha256 of the split file and of its .stats.json for seeds 0-4, as written by the previous,
# integer-encoded implementation (splits/__init__.py at commit 51c0045e9e2e).
GOLDEN = {
    0: (
        "f8b09b3c338dea44fe96b97e958fac584f66f3ca36311b6362b59a5e8707da84",
        "b301aa597cefdc2414d494fcec70e96452abe6ae980f9c433d9d07f50342f143",
    ),
    1: (
        "0f9b973d0a46ddd9b99f4c4f65aaf070cef05d61f2d5b88c7065b97d9c2780d3",
        "9d3f3e84d9578a5a0583f500ceb5a64fbaf32973e5f0b250914b81e1eccbe6cb",
    ),
    2: (
        "e83f9003b2b92a963e53cb799260aa45d2a940069b49de7f6e51c90acf186a89",
        "c063c0bb2c19eb94e2def2e1fbdcdd9b6df190dbce8a62dd20bb2a11b569ddef",
    ),
    3: (
        "ee9c3431f4101403e5701a9320220432d4fa41265698ec594804c4963405f20f",
        "9f8023d99e9c51e311cd7c43ca65f46d235477048b081da037b3c5e129e7659d",
    ),
    4: (
        "a4eea0213db67fcf67ba1d27032b78b9265706d616d6920e805dda9fbde85374",
        "1c2111e6121b4def42f15ecf9bdf35c978fea14db3524e9dd4fdb8f00a3ed645",
    ),
}


@pytest.mark.parametrize("seed", sorted(GOLDEN))
def test_split_files_are_byte_identical_to_the_previous_implementation(tmp_path, seed):
    split, stats = splits.make_split_with_statistics(golden_annotations(), seed)
    splits.save_split(split, tmp_path / "split.json")
    splits.save_statistics(stats, splits.stats_path(tmp_path / "split.json"))
    digests = tuple(
        fileio.sha256_file(path)
        for path in (tmp_path / "split.json", tmp_path / "split.stats.json")
    )
    assert digests == GOLDEN[seed]


# --------------------------------------------------------------------------------------------------
# Properties on random multi-label data
# --------------------------------------------------------------------------------------------------
@st.composite
def annotations(draw):
    n_labels = draw(st.integers(2, 12))
    tracks = draw(
        st.lists(
            st.sets(st.integers(0, n_labels - 1), min_size=1, max_size=n_labels),
            min_size=1,
            max_size=40,
        )
    )
    # Numeric-looking ids exercise string order ("10" < "9"); label names are arbitrary short
    # strings.
    pairs = [(str(3 * j + 1), f"L{i}") for j, labels in enumerate(tracks) for i in sorted(labels)]
    return pairs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=annotations(),
    seed=st.integers(0, 2**32),
    unseen_fraction=st.sampled_from([0.2, 0.3, 0.5, 0.7]),
    valid_fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
    row_seed=st.integers(0, 1000),
)
def test_split_properties(pairs, seed, unseen_fraction, valid_fraction, row_seed):
    reference, reason = reference_split(pairs, seed, unseen_fraction, valid_fraction)
    if reason is not None:
        with pytest.raises(splits.SplitError, match=re.escape(reason)):
            quiet_split(frame(pairs), seed, unseen_fraction, valid_fraction)
        return
    split = quiet_split(frame(pairs), seed, unseen_fraction, valid_fraction)
    check_invariants(split, pairs)
    assert {k: v for k, v in split.items() if k != "annotations_sha256"} == reference
    assert split["annotations_sha256"] == canonical_sha(pairs)
    # Row order and repeated rows do not matter: same dict, same file text.
    shuffled = frame(pairs + pairs[:3]).sample(frac=1.0, random_state=row_seed)
    again = quiet_split(shuffled, seed, unseen_fraction, valid_fraction)
    assert again == split
    assert (
        splits.format_split(again)
        == splits.format_split(split)
        == json.dumps(split, indent=2) + "\n"
    )
    assert splits.validate_split(split) is split


def test_other_seeds_give_other_splits():
    rng = np.random.default_rng(7)
    pairs = [
        (f"t{j:03d}", f"g{k:02d}")
        for j in range(300)
        for k in rng.choice(30, size=rng.integers(1, 4), replace=False)
    ]
    made = [quiet_split(frame(pairs), seed=s) for s in range(5)]
    for s, split in enumerate(made):
        check_invariants(split, pairs)
        assert split["seed"] == s
    assert len({tuple(m["seen"]) for m in made}) == 5
    assert len({tuple(m["train"]["A+B"]) for m in made}) == 5
    # Same seed again: the same split.
    assert quiet_split(frame(pairs), seed=3) == made[3]


def test_independent_train_valid_shuffles():
    """A, B and A+B use three different generators: A+B's training part is not A's plus B's."""
    rng = np.random.default_rng(3)
    pairs = [
        (f"t{j:03d}", f"g{k:02d}")
        for j in range(400)
        for k in rng.choice(20, size=rng.integers(1, 4), replace=False)
    ]
    split = quiet_split(frame(pairs), seed=0)
    assert set(split["train"]["A+B"]) != set(split["train"]["A"]) | set(split["train"]["B"])


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def test_file_is_byte_identical_and_is_plain_json(tmp_path):
    split = splits.make_split(frame(HAND_PAIRS), seed=0)
    shuffled = splits.make_split(frame(HAND_PAIRS[::-1]), seed=0)
    splits.save_split(split, tmp_path / "a.json")
    splits.save_split(shuffled, tmp_path / "b.json")
    data = (tmp_path / "a.json").read_bytes()
    assert data == (tmp_path / "b.json").read_bytes()
    assert data.decode("utf-8") == json.dumps(split, indent=2) + "\n"
    assert splits.load_split(tmp_path / "a.json") == split
    other = splits.make_split(frame(HAND_PAIRS), seed=2)
    assert other["unseen"] == ["jazz"]  # stream-0 permutation for seed 2 ends with index 2 (jazz)
    splits.save_split(other, tmp_path / "c.json")
    assert (tmp_path / "c.json").read_bytes() != data


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("seen"), "missing key.*seen"),
        (lambda s: s.update(extra=1), "unexpected key.*extra"),
        (lambda s: s.update(seed=-1), "seed must be a non-negative integer"),
        (lambda s: s.update(annotations_sha256="xyz"), "64 lowercase hex"),
        (lambda s: s.update(A=list(reversed(s["A"]))), "A must be sorted"),
        (lambda s: s.update(C=s["C"] + ["t99"] + s["A"][:1]), "must be sorted|disjoint"),
        (
            lambda s: s.update(C=sorted(s["C"] + s["A"][:1])),
            "groups A, B, C and dropped must be disjoint",
        ),
        (
            lambda s: s.update(unseen=sorted(s["unseen"] + s["seen"][-1:])),
            "seen and unseen labels overlap",
        ),
        (lambda s: s["valid"]["B"].clear(), r"train\['B'\] and valid\['B'\] must partition"),
        (
            lambda s: s["train"].pop("A+B"),
            "train and valid must be objects with the keys A, B, A\\+B",
        ),
        (
            lambda s: s["valid"].update(C=[]),
            "train and valid must be objects with the keys A, B, A\\+B",
        ),
        (lambda s: s.update(valid_fraction=True), "valid_fraction must be a number in"),
        (lambda s: s.update(B=[1, 2]), "B must be a list of strings"),
    ],
)
def test_load_split_rejects_malformed_files(tmp_path, mutate, message):
    split = splits.make_split(frame(HAND_PAIRS), seed=0)
    mutate(split)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(split), encoding="utf-8")
    with pytest.raises(splits.SplitError, match=message) as info:
        splits.load_split(path)
    assert str(path) in str(info.value)


def test_load_split_checks_the_annotations_it_was_made_from(tmp_path):
    """Hardening 4: a split given explicitly (train/evaluate --split FILE) is checked against the
    annotations too."""
    path = splits.save_split(splits.make_split(frame(HAND_PAIRS), seed=0), tmp_path / "split.json")
    # row order does not matter
    assert splits.load_split(path, frame(HAND_PAIRS[::-1]))["unseen"] == ["rock"]
    changed = frame(HAND_PAIRS + [("t12", "blues")])
    with pytest.raises(
        splits.SplitError,
        match=rf"split file {re.escape(str(path))} was made from other "
        r"annotations .*remake it with python -m splits.make",
    ):
        splits.load_split(path, changed)
    assert splits.load_split(path)["seed"] == 0  # without annotations: structure only


def test_annotations_digest_is_remembered_and_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    """load_split(path, annotations file) hashes the annotations once; later loads read the digest
    remembered beside the file, keyed by the file's bytes: a file edited in place, same size and
    same mtime, is hashed again and refused."""
    csv_path = tmp_path / "annotations.csv"
    ds.write_annotations(csv_path, frame(HAND_PAIRS))
    path = splits.save_split(splits.make_split(frame(HAND_PAIRS), seed=0), tmp_path / "split.json")
    hashed = []
    full_hash = splits.annotations_sha256
    monkeypatch.setattr(
        splits, "annotations_sha256", lambda *args: hashed.append(1) or full_hash(*args)
    )
    for _ in range(3):
        assert splits.load_split(path, csv_path)["unseen"] == ["rock"]
    assert len(hashed) == 1
    remembered = json.loads((tmp_path / ".annotations.csv.sha256.json").read_text())
    assert remembered == {
        "file_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "annotations_sha256": full_hash(frame(HAND_PAIRS)),
    }
    stat = csv_path.stat()
    text = csv_path.read_text()
    assert "t06,rock" in text
    csv_path.write_text(text.replace("t06,rock", "t06,jazz"))  # as long, same mtime
    os.utime(csv_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert csv_path.stat().st_size == stat.st_size
    with pytest.raises(splits.SplitError, match=r"was made from other annotations .* than .*csv"):
        splits.load_split(path, csv_path)
    assert len(hashed) == 2
    # a damaged entry is hashed anew; a folder that cannot be written to is hashed every time
    csv_path.write_text(text)
    (tmp_path / ".annotations.csv.sha256.json").write_text("{")
    assert splits.load_split(path, csv_path)["seed"] == 0 and len(hashed) == 3
    assert splits.load_split(path, csv_path)["seed"] == 0 and len(hashed) == 3
    (tmp_path / ".annotations.csv.sha256.json").unlink()

    def read_only(*args):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(splits, "write_json", read_only)
    for expected in (4, 5):
        assert splits.load_split(path, csv_path)["seed"] == 0 and len(hashed) == expected
    assert not (tmp_path / ".annotations.csv.sha256.json").exists()
    with pytest.raises(ds.DatasetError, match="annotations"):
        splits.load_split(path, tmp_path / "missing.csv")


def test_split_error_is_a_value_error_of_its_own():
    assert issubclass(splits.SplitError, ValueError) and not issubclass(
        splits.SplitError, ds.DatasetError
    )


def test_load_split_not_json_or_missing(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(splits.SplitError, match="broken.json is not valid JSON"):
        splits.load_split(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(splits.SplitError, match="expected a JSON object"):
        splits.load_split(path)
    with pytest.raises(splits.SplitError, match="does not exist"):
        splits.load_split(tmp_path / "missing.json")


def test_paths_and_ensure_split(tmp_path):
    assert splits.default_split_path(tmp_path, 3) == tmp_path / "splits" / "split_seed3.json"
    assert (
        splits.stats_path(tmp_path / "x" / "split_seed0.json")
        == tmp_path / "x" / "split_seed0.stats.json"
    )
    ds.write_annotations(tmp_path / "annotations.csv", frame(HAND_PAIRS))
    path = splits.ensure_split(tmp_path, seed=0)
    assert path == tmp_path.resolve() / "splits" / "split_seed0.json"
    first = path.read_bytes()
    stats = json.loads(splits.stats_path(path).read_text(encoding="utf-8"))
    assert stats["instances"]["dropped"] == 2
    os.utime(path, (1, 1))
    assert splits.ensure_split(tmp_path, seed=0) == path  # present and current: kept as is
    assert path.stat().st_mtime == 1 and path.read_bytes() == first
    ds.write_annotations(tmp_path / "annotations.csv", frame(HAND_PAIRS + [("t12", "blues")]))
    with pytest.raises(splits.SplitError, match="made from other annotations"):
        splits.ensure_split(tmp_path, seed=0)
    with pytest.raises(splits.SplitError, match="this split was made from other annotations"):
        splits.split_statistics(splits.load_split(path), frame(HAND_PAIRS[:-1]))
    moved = splits.load_split(path)
    moved["C"] = moved["C"][:1]  # same annotations hash, but a track is in no group
    with pytest.raises(splits.SplitError, match="do not list exactly the tracks"):
        splits.split_statistics(moved, frame(HAND_PAIRS))


def test_paper_statistics_reference():
    assert splits.paper_statistics("fma") == {
        "labels": {"X": 125, "Y": 32, "total": 157},
        "instances": {"A": 11606, "B": 6935, "C": 925, "total": 19466},
    }
    assert splits.paper_statistics("msd")["instances"]["total"] == 199385 + 188967 + 18057
    assert splits.paper_statistics("demo") is None


# --------------------------------------------------------------------------------------------------
# Setups
# --------------------------------------------------------------------------------------------------
HAND_SPLIT = {
    "seed": 0,
    "unseen_fraction": 0.2,
    "valid_fraction": 0.1,
    "annotations_sha256": "0" * 64,
    "seen": ["a", "b"],
    "unseen": ["c"],
    "A": ["t1", "t2"],
    "B": ["t3", "t5"],
    "C": ["t4"],
    "dropped": [],
    "train": {"A": ["t1"], "B": ["t5"], "A+B": ["t1", "t2", "t5"]},
    "valid": {"A": ["t2"], "B": ["t3"], "A+B": ["t3"]},
}


@pytest.mark.parametrize(
    "setup, tracks, labels",
    [
        ("B-Y", ["t3", "t5"], ["c"]),
        ("C-Y", ["t4"], ["c"]),
        ("(B+C)-Y", ["t3", "t4", "t5"], ["c"]),
        ("B-(X+Y)", ["t3", "t5"], ["a", "b", "c"]),
        ("C-(X+Y)", ["t4"], ["a", "b", "c"]),
        ("(B+C)-(X+Y)", ["t3", "t4", "t5"], ["a", "b", "c"]),
        ("(A+B+C)-Y", ["t1", "t2", "t3", "t4", "t5"], ["c"]),
        ("B-X", ["t3", "t5"], ["a", "b"]),
        ("BC-XY", ["t3", "t4", "t5"], ["a", "b", "c"]),  # aliases
        ("b+c-y", ["t3", "t4", "t5"], ["c"]),
        ("ABC-Y", ["t1", "t2", "t3", "t4", "t5"], ["c"]),
    ],
)
def test_test_setups_use_whole_groups(setup, tracks, labels):
    assert splits.setup_tracks_labels(HAND_SPLIT, setup) == (tracks, labels)


@pytest.mark.parametrize(
    "setup, part, tracks",
    [
        ("A-X", "train", ["t1"]),
        ("A-X", "valid", ["t2"]),
        ("B-X", "train", ["t5"]),
        ("B-X", "valid", ["t3"]),
        ("(A+B)-X", "train", ["t1", "t2", "t5"]),
        ("(A+B)-X", "valid", ["t3"]),
        ("AB", "train", ["t1", "t2", "t5"]),
        ("A+B", "valid", ["t3"]),
        ("(A + B) - X", "valid", ["t3"]),
        ("A", "train", ["t1"]),
        ("B", "valid", ["t3"]),
    ],
)
def test_training_setups_use_parts(setup, part, tracks):
    assert splits.setup_tracks_labels(HAND_SPLIT, setup, part) == (tracks, ["a", "b"])


def test_setup_names_and_errors():
    assert splits.TRAIN_SETUPS == ("A-X", "B-X", "(A+B)-X")
    assert splits.ANNOTATION_TESTS == ("B-Y", "C-Y", "(B+C)-Y", "B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)")
    assert splits.RETRIEVAL_TESTS == ("(B+C)-Y", "(A+B+C)-Y") and splits.TABLE4_TEST == "B-X"
    for name in splits.ALL_SETUPS:
        assert splits.canonical_setup(name) == name
    for bad in ("C-X", "A-Y", "D-X", "A-B", "AA-X", "", "B-X-Y", "C"):
        with pytest.raises(
            ValueError, match=r"unknown setup .*valid setups are A-X, B-X, \(A\+B\)-X"
        ):
            splits.setup_tracks_labels(HAND_SPLIT, bad)
    for setup, part in (("A-X", None), ("B-Y", "train"), ("B-X", "test")):
        with pytest.raises(
            ValueError,
            match=rf"setup .* with part={part!r}: training setups \(A-X, B-X, "
            r"\(A\+B\)-X\) take part='train' or 'valid', test setups .* part=None",
        ):
            splits.setup_tracks_labels(HAND_SPLIT, setup, part)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
def test_bad_annotations():
    with pytest.raises(splits.SplitError, match="lacks column.*label"):
        splits.make_split(pd.DataFrame({"track_id": ["1"], "tag": ["x"]}))
    with pytest.raises(splits.SplitError, match=r"no annotations \(0 rows\)"):
        splits.make_split(frame([]))
    with pytest.raises(splits.SplitError, match="empty track_id or label in data row 2"):
        splits.make_split(frame([("1", "a"), ("", "b")]))
    with pytest.raises(splits.SplitError, match="missing track_id or label in data row 1"):
        splits.make_split(frame([("1", None)]))
    with pytest.raises(splits.SplitError, match="--seed must be a non-negative integer"):
        splits.make_split(frame(HAND_PAIRS), seed=-1)
    with pytest.raises(splits.SplitError, match=r"--unseen-fraction must be in \(0, 1\)"):
        splits.make_split(frame(HAND_PAIRS), unseen_fraction=1.0)
    with pytest.raises(splits.SplitError, match=r"--valid-fraction must be in \[0, 1\)"):
        splits.make_split(frame(HAND_PAIRS), valid_fraction=1.0)


def test_empty_label_sets():
    two = frame([("1", "a"), ("2", "b"), ("3", "a"), ("3", "b")])
    with pytest.raises(splits.SplitError, match=r"leave no seen label \(X is empty\)"):
        splits.make_split(two, unseen_fraction=0.6)  # int(2 * 0.4) = 0
    with pytest.raises(splits.SplitError, match=r"leave no unseen label \(Y is empty\)"):
        splits.make_split(two, unseen_fraction=1e-17)  # 1 - 1e-17 == 1.0 in floating point


def test_empty_groups_and_parts():
    # Seed 0 makes rock unseen (see HAND_PAIRS); blues, country, jazz, pop are seen.
    only_b_and_c = frame(
        [
            ("1", "blues"),
            ("1", "rock"),
            ("2", "jazz"),
            ("2", "rock"),
            ("3", "rock"),
            ("4", "pop"),
            ("4", "rock"),
            ("5", "country"),
            ("5", "rock"),
        ]
    )
    with pytest.raises(
        splits.SplitError, match=r"--seed 0 .*group A is empty \(training needs tracks with seen"
    ):
        splits.make_split(only_b_and_c, source="my.csv")
    no_b = frame([("1", "blues"), ("2", "jazz"), ("3", "rock"), ("4", "pop"), ("5", "country")])
    with pytest.raises(splits.SplitError, match="my.csv with --seed 0 .*group B is empty"):
        splits.make_split(no_b, source="my.csv")
    no_c = frame([p for p in HAND_PAIRS if p[0] not in ("t06", "t07")])
    with pytest.warns(splits.SplitWarning, match="group C .* is empty"):
        split = splits.make_split(no_c)
    assert split["C"] == [] and splits.setup_tracks_labels(split, "C-Y") == ([], ["rock"])
    one_b = frame([p for p in HAND_PAIRS if p[0] not in ("t04", "t05")])
    with pytest.raises(
        splits.SplitError, match=r"group B has 1 track\(s\), which leaves no training track"
    ):
        splits.make_split(one_b)
    with pytest.warns(splits.SplitWarning, match="no validation track"):
        splits.make_split(frame(HAND_PAIRS), valid_fraction=0.0)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def test_cli_end_to_end(tmp_path, capsys):
    csv_path = tmp_path / "ann.csv"
    frame(HAND_PAIRS).to_csv(csv_path, index=False)
    out = tmp_path / "out" / "split.json"
    argv = ["--annotations", str(csv_path), "--out", str(out), "--valid-fraction", "0.5"]
    assert make_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and f"wrote {out}" in printed
    split = splits.load_split(out)
    assert split["B"] == ["t04", "t05", "t11"] and split["valid_fraction"] == 0.5
    stats = json.loads((tmp_path / "out" / "split.stats.json").read_text(encoding="utf-8"))
    assert stats["instances"] == {"A": 4, "B": 3, "C": 2, "total": 9, "dropped": 2}
    first = out.read_bytes()
    assert make_cli.main(argv) == 0
    assert out.read_bytes() == first

    dataset_dir = tmp_path / "mydata"
    ds.write_annotations(dataset_dir / "annotations.csv", frame(HAND_PAIRS))
    assert make_cli.main(["--dataset", str(dataset_dir), "--seed", "2"]) == 0
    assert splits.load_split(dataset_dir / "splits" / "split_seed2.json")["unseen"] == ["jazz"]
    assert (dataset_dir / "splits" / "split_seed2.stats.json").is_file()


def test_cli_refuses_to_overwrite_another_split(tmp_path, capsys):
    """splits.make overwrote a split file (and its statistics) made with other parameters: the runs
    trained on it could no longer load it. Another split is refused (naming what differs); the same
    split may be written again. The file records every parameter that made it."""
    csv_path = tmp_path / "ann.csv"
    frame(HAND_PAIRS).to_csv(csv_path, index=False)
    out = tmp_path / "split.json"
    base = ["--annotations", str(csv_path), "--out", str(out), "--valid-fraction", "0.5"]
    assert make_cli.main(base) == 0
    capsys.readouterr()
    written = {path: path.read_bytes() for path in (out, splits.stats_path(out))}
    split = splits.load_split(out)
    assert (split["seed"], split["unseen_fraction"], split["valid_fraction"]) == (0, 0.2, 0.5)
    for extra, differ in (
        (["--seed", "2"], "--seed 0 (asked: 2)"),
        (["--unseen-fraction", "0.3"], "--unseen-fraction 0.2 (asked: 0.3)"),
        (
            ["--valid-fraction", "0.25", "--seed", "2"],
            "--seed 0 (asked: 2); --valid-fraction 0.5 (asked: 0.25)",
        ),
    ):
        assert make_cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: {out} holds another split ({differ}): refusing to overwrite it, since the "
            "runs trained on it would no longer load. Pass --out NEW.json.\n"
        )
        assert {path: path.read_bytes() for path in written} == written
    frame(HAND_PAIRS[:-1]).to_csv(csv_path, index=False)  # other annotations
    assert make_cli.main(base) == 2
    assert "the annotations it was made from" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in written} == written
    (tmp_path / "notes.json").write_text("my notes")
    assert make_cli.main([*base[:2], "--out", str(tmp_path / "notes.json")]) == 2
    assert "exists and is not a split file" in capsys.readouterr().err
    assert (tmp_path / "notes.json").read_text() == "my notes"


def test_cli_bad_input_exits_2(tmp_path, capsys):
    cases = {
        "cols.csv": ("track_id,tag\n1,a\n", "lacks column"),
        "empty.csv": ("", "is empty"),
        "header_only.csv": ("track_id,label\n", r"no annotations \(0 rows\)"),
        "no_b.csv": (
            "track_id,label\n1,blues\n2,jazz\n3,rock\n4,pop\n5,country\n",
            "group B is empty",
        ),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert make_cli.main(["--annotations", str(path), "--out", str(tmp_path / "s.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and name in err
        assert re.search(message, err), err
    assert not (tmp_path / "s.json").exists()
    assert make_cli.main(["--annotations", str(tmp_path / "cols.csv")]) == 2
    assert "--out is required" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    frame(HAND_PAIRS).to_csv(good, index=False)
    for flag, value, message in (
        ("--seed", "-1", "--seed must be a non-negative integer, got -1"),
        ("--unseen-fraction", "nan", r"--unseen-fraction must be in \(0, 1\)"),
        ("--valid-fraction", "inf", r"--valid-fraction must be in \[0, 1\)"),
    ):
        assert (
            make_cli.main(
                ["--annotations", str(good), "--out", str(tmp_path / "s.json"), flag, value]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("error: ") and re.search(message, err) and "Traceback" not in err, err
    assert make_cli.main(["--dataset", str(tmp_path / "nope")]) == 2
    assert make_cli.main(["--annotations", str(tmp_path / "missing.csv"), "--out", "x.json"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        make_cli.main([])
    assert info.value.code == 2


def test_module_entry_point_without_tensorflow(tmp_path):
    """`python -m splits.make` runs from any directory, and `import splits` does not import
    TensorFlow."""
    csv_path = tmp_path / "ann.csv"
    frame(HAND_PAIRS).to_csv(csv_path, index=False)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = (
        "import sys, splits, splits.make; assert 'tensorflow' not in sys.modules; "
        "sys.exit(splits.make.main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--annotations",
            str(csv_path),
            "--out",
            str(tmp_path / "s.json"),
            "--unseen-fraction",
            "0.7",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    # int(5 * 0.3) = 1 seen label: every B/A track is dropped
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "group A is empty" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "splits.make", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert (
        result.returncode == 0
        and "--unseen-fraction" in result.stdout
        and "default: 0.2" in result.stdout
    )
