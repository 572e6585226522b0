"""The zero-shot data split of Choi et al. (ISMIR 2019), Section 3.2 and Figure 2 (c).

Labels are split into seen (X) and unseen (Y); tracks fall into three groups by the kinds of labels they carry:

    A = >= 1 seen label and no unseen label      (training only ever sees X labels)
    B = >= 1 seen label and >= 1 unseen label
    C = only unseen labels

Training setups combine a group with the seen labels (A-X, B-X, (A+B)-X; each group split 90/10 train/valid);
test setups combine groups with Y or X+Y (annotation), or with Y (retrieval). splits/README.md describes the file
format and the exact, seeded algorithm; `python -m splits.make` is the command line.

Everything is vectorized over integer codes (pandas factorize + numpy bincount): an MSD-sized input (406k tracks,
1,126 labels, about a million positives) is split in seconds without a dense track x label matrix.
No TensorFlow import here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_dir import (
    REPO_ROOT,
    DatasetError,
    annotations_path,
    atomic_write_text,
    read_annotations,
    resolve_dataset_dir,
    splits_dir,
)

# --------------------------------------------------------------------------------------------------------------
# Setups (paper Figure 2 (c)) and the file format
# --------------------------------------------------------------------------------------------------------------
TRAIN_SETUPS = ("A-X", "B-X", "(A+B)-X")
ANNOTATION_TESTS = ("B-Y", "C-Y", "(B+C)-Y", "B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)")
RETRIEVAL_TESTS = ("(B+C)-Y", "(A+B+C)-Y")
TABLE4_TEST = "B-X"
# Every setup evaluated on whole groups (train + valid), in the paper's order, without repeats.
TEST_SETUPS = tuple(dict.fromkeys(ANNOTATION_TESTS + RETRIEVAL_TESTS + (TABLE4_TEST,)))
ALL_SETUPS = tuple(dict.fromkeys(TRAIN_SETUPS + TEST_SETUPS))

GROUPS = ("A", "B", "C")
TRAIN_GROUPS = ("A", "B", "A+B")  # keys of split["train"] and split["valid"]
PARTS = ("train", "valid")
SPLIT_KEYS = ("seed", "unseen_fraction", "valid_fraction", "annotations_sha256", "seen", "unseen",
              "A", "B", "C", "dropped", "train", "valid")
# Which split lists the label letters of a setup name stand for.
LABEL_KEYS = {"X": "seen", "Y": "unseen"}

# One independent numpy Generator per random step: SeedSequence(seed, spawn_key=(stream,)), i.e. the children of
# SeedSequence(seed).spawn(4) in this order. Documented in splits/README.md ("Algorithm").
STREAM_LABELS, STREAM_A, STREAM_B, STREAM_AB = 0, 1, 2, 3
TRAIN_STREAMS = {"A": STREAM_A, "B": STREAM_B, "A+B": STREAM_AB}

SPLIT_FILE_TEMPLATE = "split_seed{seed}.json"
PAPER_STATS_CSV = REPO_ROOT / "reference" / "paper_split_stats.csv"

# Integer group codes used internally (per track).
_A, _B, _C, _DROPPED = 0, 1, 2, 3


class SplitError(DatasetError):
    """The annotations cannot be split as asked, or a split file is malformed; the message says which and why."""


class SplitWarning(UserWarning):
    """The split is usable but some setups will be empty (e.g. no C tracks, no validation tracks)."""


# --------------------------------------------------------------------------------------------------------------
# Encoding annotations as sorted integer codes
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Encoded:
    """Annotations as codes: tracks[i] / labels[j] sorted (code order = string order); pairs sorted and unique."""

    tracks: np.ndarray  # (n_tracks,) object, sorted track ids
    labels: np.ndarray  # (n_labels,) object, sorted labels
    track_codes: np.ndarray  # (n_pairs,) int64, ascending by (track, label)
    label_codes: np.ndarray  # (n_pairs,) int64


def _encode(annotations, source: str) -> _Encoded:
    """Validate a (track_id, label) DataFrame and factorize it into sorted codes (duplicates merged)."""
    if not isinstance(annotations, pd.DataFrame):
        raise SplitError(f"{source}: expected a pandas DataFrame with columns track_id,label, "
                         f"got {type(annotations).__name__}.")
    missing = [c for c in ("track_id", "label") if c not in annotations.columns]
    if missing:
        raise SplitError(f"{source}: lacks column(s) {', '.join(missing)}; expected header track_id,label "
                         f"(found {','.join(map(str, annotations.columns)) or 'no columns'}).")
    if len(annotations) == 0:
        raise SplitError(f"{source}: no annotations (0 rows); expected one row per positive (track_id, label) pair.")
    frame = annotations[["track_id", "label"]]
    null = frame.isna().any(axis=1).to_numpy()
    if null.any():
        raise SplitError(f"{source}: missing track_id or label in data row {int(np.argmax(null)) + 1}.")
    track_ids = frame["track_id"].astype(str)
    labels = frame["label"].astype(str)
    empty = ((track_ids == "") | (labels == "")).to_numpy()
    if empty.any():
        raise SplitError(f"{source}: empty track_id or label in data row {int(np.argmax(empty)) + 1}.")
    track_codes, track_uniques = _sorted_codes(track_ids)
    label_codes, label_uniques = _sorted_codes(labels)
    n_labels = len(label_uniques)
    keys = np.sort(track_codes * n_labels + label_codes)  # (track, label) pairs in (track, label) order
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]  # merge duplicate pairs (np.unique is slower here: it hashes first)
    keys = keys[keep]
    return _Encoded(tracks=track_uniques, labels=label_uniques,
                    track_codes=keys // n_labels, label_codes=keys % n_labels)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n,) int64, uniques (u,) object) with uniques in string order, so that sorted codes map to sorted ids.

    Hash-factorize first (O(n)), then sort only the u distinct strings with Python's sort (its string-specialized
    comparisons beat numpy's object argsort about 3x) and renumber the codes by rank.
    """
    codes, uniques = pd.factorize(values, sort=False)
    ordered = sorted(uniques.tolist())
    rank = pd.Index(ordered, dtype=object).get_indexer(np.asarray(uniques, dtype=object))
    return rank[codes].astype(np.int64), np.asarray(ordered, dtype=object)


def _csv_fields(values: np.ndarray) -> np.ndarray:
    """Strings as csv.QUOTE_MINIMAL writes them: quoted (with "" for ") only when they hold , " CR or LF."""
    out = np.array(values, dtype=object, copy=True)
    joined = "\x00".join(out.tolist())  # one C-speed scan of all characters; per-string work only when needed
    if any(char in joined for char in ',"\r\n'):
        special = pd.Series(out, dtype=object).str.contains(r'[,"\r\n]', regex=True).to_numpy(dtype=bool)
        out[special] = ['"' + v.replace('"', '""') + '"' for v in out[special]]
    return out


def _sha256_of_encoded(enc: _Encoded, chunk: int = 1 << 18) -> str:
    """SHA-256 of the canonical annotations text (see `annotations_sha256`), hashed chunk by chunk."""
    digest = hashlib.sha256(b"track_id,label\n")
    track_text = _csv_fields(enc.tracks)
    label_text = "," + _csv_fields(enc.labels) + "\n"  # u labels: cheap; leaves one string add per pair
    for start in range(0, len(enc.track_codes), chunk):
        stop = start + chunk
        lines = track_text[enc.track_codes[start:stop]] + label_text[enc.label_codes[start:stop]]
        digest.update("".join(lines.tolist()).encode("utf-8"))
    return digest.hexdigest()


def annotations_sha256(annotations: pd.DataFrame, source: str = "annotations") -> str:
    """Order-independent fingerprint of annotations: SHA-256 of their canonical CSV text.

    Canonical text: the header `track_id,label`, then one line per unique (track_id, label) pair, sorted by
    track_id then label (Unicode code point order), fields quoted as Python's csv.QUOTE_MINIMAL does, every line
    ended by "\\n", UTF-8. It equals `sha256sum` of the file `dataset_dir.write_annotations` writes (POSIX).
    """
    return _sha256_of_encoded(_encode(annotations, source))


# --------------------------------------------------------------------------------------------------------------
# Making a split
# --------------------------------------------------------------------------------------------------------------
def _generator(seed: int, stream: int) -> np.random.Generator:
    """The numpy Generator of one random step: default_rng(SeedSequence(seed, spawn_key=(stream,)))."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _check_parameters(seed, unseen_fraction, valid_fraction) -> tuple[int, float, float]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SplitError(f"--seed must be a non-negative integer, got {seed!r}.")
    try:
        unseen_fraction, valid_fraction = float(unseen_fraction), float(valid_fraction)
    except (TypeError, ValueError):
        raise SplitError(f"--unseen-fraction and --valid-fraction must be numbers, got "
                         f"{unseen_fraction!r} and {valid_fraction!r}.") from None
    if not 0.0 < unseen_fraction < 1.0:
        raise SplitError(f"--unseen-fraction must be in (0, 1) (paper: 0.2), got {unseen_fraction}.")
    if not 0.0 <= valid_fraction < 1.0:
        raise SplitError(f"--valid-fraction must be in [0, 1) (paper: 0.1), got {valid_fraction}.")
    return int(seed), unseen_fraction, valid_fraction


def _split_labels(n_labels: int, seed: int, unseen_fraction: float, source: str) -> np.ndarray:
    """(n_labels,) bool, True for seen labels: shuffle the sorted labels, the first int(n * (1 - f)) are seen."""
    n_seen = int(n_labels * (1.0 - unseen_fraction))
    if n_seen == 0:
        raise SplitError(f"{source}: {n_labels} label(s) with --unseen-fraction {unseen_fraction} leave no seen "
                         f"label (X is empty); lower --unseen-fraction or add labels.")
    if n_seen == n_labels:
        raise SplitError(f"{source}: {n_labels} label(s) with --unseen-fraction {unseen_fraction} leave no unseen "
                         f"label (Y is empty); raise --unseen-fraction or add labels.")
    order = _generator(seed, STREAM_LABELS).permutation(n_labels)
    is_seen = np.zeros(n_labels, dtype=bool)
    is_seen[order[:n_seen]] = True
    return is_seen


def _group_tracks(enc: _Encoded, is_seen: np.ndarray) -> np.ndarray:
    """(n_tracks,) int8 group code per track: A, B, C, or DROPPED (its labels include every seen label).

    Counts of seen / unseen labels per track come from np.bincount over the pair list (no dense matrix).
    """
    n_tracks = len(enc.tracks)
    row_seen = is_seen[enc.label_codes]
    n_seen_labels = np.bincount(enc.track_codes[row_seen], minlength=n_tracks)
    n_unseen_labels = np.bincount(enc.track_codes[~row_seen], minlength=n_tracks)
    group = np.full(n_tracks, _C, dtype=np.int8)  # every listed track has >= 1 label: no seen label means C
    group[(n_seen_labels > 0) & (n_unseen_labels == 0)] = _A
    group[(n_seen_labels > 0) & (n_unseen_labels > 0)] = _B
    # The original dropped tracks whose seen-label row was all ones (scripts/data_split_track.py, "exceptional").
    group[n_seen_labels == int(is_seen.sum())] = _DROPPED
    return group


def _train_valid(members: np.ndarray, seed: int, stream: int, valid_fraction: float):
    """Shuffle the (sorted) member codes with one Generator; first int(n * (1 - valid_fraction)) are training."""
    order = _generator(seed, stream).permutation(len(members))
    n_train = int(len(members) * (1.0 - valid_fraction))
    shuffled = members[order]
    return np.sort(shuffled[:n_train]), np.sort(shuffled[n_train:])


_GROUP_MEANING = {
    "A": "tracks with seen labels only; needed by A-X and (A+B)-X",
    "B": "tracks with both seen and unseen labels; needed by B-X, (A+B)-X and every B test",
}


def _build(enc: _Encoded, seed: int, unseen_fraction: float, valid_fraction: float, source: str):
    """The split dict plus the per-track group codes and the seen-label mask (reused by the statistics)."""
    is_seen = _split_labels(len(enc.labels), seed, unseen_fraction, source)
    group = _group_tracks(enc, is_seen)
    members = {name: np.flatnonzero(group == code) for name, code in
               (("A", _A), ("B", _B), ("C", _C), ("dropped", _DROPPED))}
    where = f"{source} with --seed {seed} and --unseen-fraction {unseen_fraction}"
    for name in ("A", "B"):
        if len(members[name]) == 0:
            raise SplitError(f"{where}: group {name} is empty ({_GROUP_MEANING[name]}); "
                             "try another --seed or --unseen-fraction, or check the annotations.")
    if len(members["C"]) == 0:
        warnings.warn(f"{where}: group C (tracks with unseen labels only) is empty; the test setups C-Y and "
                      "C-(X+Y) have no tracks.", SplitWarning, stacklevel=3)
    members["A+B"] = np.flatnonzero((group == _A) | (group == _B))
    train, valid = {}, {}
    for name in TRAIN_GROUPS:
        train_codes, valid_codes = _train_valid(members[name], seed, TRAIN_STREAMS[name], valid_fraction)
        if len(train_codes) == 0:
            raise SplitError(f"{where} and --valid-fraction {valid_fraction}: group {name} has "
                             f"{len(members[name])} track(s), which leaves no training track; lower "
                             "--valid-fraction or use more data.")
        if len(valid_codes) == 0:
            warnings.warn(f"{where} and --valid-fraction {valid_fraction}: group {name} has no validation "
                          f"track ({len(members[name])} track(s) in all).", SplitWarning, stacklevel=3)
        train[name] = enc.tracks[train_codes].tolist()
        valid[name] = enc.tracks[valid_codes].tolist()
    split = {
        "seed": seed,
        "unseen_fraction": unseen_fraction,
        "valid_fraction": valid_fraction,
        "annotations_sha256": _sha256_of_encoded(enc),
        "seen": enc.labels[is_seen].tolist(),
        "unseen": enc.labels[~is_seen].tolist(),
        "A": enc.tracks[members["A"]].tolist(),
        "B": enc.tracks[members["B"]].tolist(),
        "C": enc.tracks[members["C"]].tolist(),
        "dropped": enc.tracks[members["dropped"]].tolist(),
        "train": train,
        "valid": valid,
    }
    return split, group, is_seen


def make_split(annotations_df: pd.DataFrame, seed: int = 0, unseen_fraction: float = 0.2,
               valid_fraction: float = 0.1, *, source: str = "annotations") -> dict:
    """Split labels into seen/unseen and tracks into A/B/C (+ train/valid) as in paper Sec. 3.2, seeded.

    annotations_df: columns track_id, label (one row per positive pair; any row order; duplicates merged).
    Returns the JSON content (keys SPLIT_KEYS, sorted lists). `source` names the input in error messages.
    Raises SplitError when X, Y, A, B or a training part would be empty; warns (SplitWarning) for an empty C or
    an empty validation part. The algorithm is spelled out in splits/README.md.
    """
    return make_split_with_statistics(annotations_df, seed, unseen_fraction, valid_fraction, source=source)[0]


def make_split_with_statistics(annotations_df: pd.DataFrame, seed: int = 0, unseen_fraction: float = 0.2,
                               valid_fraction: float = 0.1, *, source: str = "annotations") -> tuple[dict, dict]:
    """`make_split` and `split_statistics` in one pass over the annotations: (split, stats)."""
    seed, unseen_fraction, valid_fraction = _check_parameters(seed, unseen_fraction, valid_fraction)
    enc = _encode(annotations_df, source)
    split, group, is_seen = _build(enc, seed, unseen_fraction, valid_fraction, source)
    return split, _statistics(enc, group, is_seen, split)


# --------------------------------------------------------------------------------------------------------------
# Setups
# --------------------------------------------------------------------------------------------------------------
def _parse_letters(text: str, allowed: str, original: str) -> tuple[str, ...]:
    """'(A+B)', 'A+B' or 'AB' -> ('A', 'B'); letters must be distinct and from `allowed`."""
    body = text.replace("(", "").replace(")", "")
    letters = body.split("+") if "+" in body else list(body)
    if not letters or any(len(x) != 1 or x not in allowed for x in letters) or len(set(letters)) != len(letters):
        raise ValueError(_unknown_setup_message(original))
    return tuple(sorted(letters))


def _join(letters: tuple[str, ...]) -> str:
    return letters[0] if len(letters) == 1 else "(" + "+".join(letters) + ")"


def _unknown_setup_message(name) -> str:
    return (f"unknown setup {name!r}: valid setups are {', '.join(ALL_SETUPS)} (training: {', '.join(TRAIN_SETUPS)}; "
            "aliases: A, B, AB for the training setups, and forms without parentheses such as B+C-Y or BC-XY).")


def parse_setup(name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Setup name or alias -> (canonical name, groups, label letters), e.g. 'BC-XY' -> ('(B+C)-(X+Y)', ('B','C'), ('X','Y')).

    A name without '-' is a training alias: 'A' -> 'A-X', 'B' -> 'B-X', 'AB' / 'A+B' -> '(A+B)-X'.
    Raises ValueError listing the valid names for anything that is not one of ALL_SETUPS.
    """
    text = str(name).replace(" ", "").upper()
    group_text, sep, label_text = text.partition("-")
    if not sep:
        label_text = "X"
    if not group_text or not label_text or "-" in label_text:
        raise ValueError(_unknown_setup_message(name))
    groups = _parse_letters(group_text, "ABC", name)
    label_letters = _parse_letters(label_text, "XY", name)
    canonical = f"{_join(groups)}-{_join(label_letters)}"
    if canonical not in ALL_SETUPS:
        raise ValueError(_unknown_setup_message(name))
    return canonical, groups, label_letters


def canonical_setup(name: str) -> str:
    """'AB' -> '(A+B)-X', 'BC-Y' -> '(B+C)-Y'; unknown names raise ValueError listing the valid ones."""
    return parse_setup(name)[0]


def setup_tracks_labels(split: dict, setup: str, part: str | None = None) -> tuple[list[str], list[str]]:
    """(track ids, labels) of a setup: the area of Figure 2 (c) that a model trains or is tested on.

    Training setups (A-X, B-X, (A+B)-X) need part="train" or "valid" (split["train"/"valid"][group]).
    Test setups use whole groups (train + valid), part=None; B-X with part=None is Table 4's test set.
    Tracks are sorted; labels are split["seen"] for X, split["unseen"] for Y, seen + unseen for X+Y.
    An empty group (e.g. C, which may be empty with a warning) gives an empty track list.
    """
    _require_keys(split, "split")
    canonical, groups, label_letters = parse_setup(setup)
    labels = [lab for letter in label_letters for lab in split[LABEL_KEYS[letter]]]
    if part is None:
        if canonical not in TEST_SETUPS:
            raise ValueError(f"training setup {canonical} needs part='train' or 'valid' "
                             f"(test setups, which use whole groups: {', '.join(TEST_SETUPS)}).")
        tracks = sorted(t for g in groups for t in split[g])
        return tracks, labels
    if part not in PARTS:
        raise ValueError(f"part must be None (test setups) or one of {', '.join(PARTS)}, got {part!r}.")
    if canonical not in TRAIN_SETUPS:
        raise ValueError(f"{canonical} is a test setup: it uses whole groups, call it with part=None "
                         f"(training setups with a train/valid part: {', '.join(TRAIN_SETUPS)}).")
    return list(split[part]["+".join(groups)]), labels


# --------------------------------------------------------------------------------------------------------------
# Statistics (Table 1 + label cardinality per area)
# --------------------------------------------------------------------------------------------------------------
def _statistics(enc: _Encoded, group: np.ndarray, is_seen: np.ndarray, split: dict) -> dict:
    """Table 1 counts and, per setup area, tracks / labels / positives / cardinality / labels without positives.

    Cardinality of an area = (positive pairs inside the area) / (tracks of the area): only the area's labels
    count (paper Sec. 6.1 quotes it for B-Y and C-Y). Vectorized: bincounts over pairs by (group, kind).
    """
    n_labels = len(enc.labels)
    row_group = group[enc.track_codes].astype(np.int64)
    row_kind = np.where(is_seen[enc.label_codes], 0, 1)  # 0 = seen (X), 1 = unseen (Y)
    kept = row_group != _DROPPED
    positives = np.bincount(row_group[kept] * 2 + row_kind[kept], minlength=6).reshape(3, 2)
    present = np.bincount(row_group[kept] * n_labels + enc.label_codes[kept], minlength=3 * n_labels)
    present = present.reshape(3, n_labels) > 0  # present[g, l]: label l has a positive track in group g
    group_sizes = np.bincount(group.astype(np.int64), minlength=4)
    kind_masks = {"X": is_seen, "Y": ~is_seen}
    areas = {}
    for setup in ALL_SETUPS:
        _, groups, letters = parse_setup(setup)
        g_index = [GROUPS.index(g) for g in groups]
        label_mask = np.logical_or.reduce([kind_masks[x] for x in letters])
        n_tracks = int(group_sizes[g_index].sum())
        n_pos = int(sum(positives[g, 0 if x == "X" else 1] for g in g_index for x in letters))
        with_positive = int((present[g_index].any(axis=0) & label_mask).sum())
        areas[setup] = {
            "tracks": n_tracks,
            "labels": int(label_mask.sum()),
            "positives": n_pos,
            "label_cardinality": round(n_pos / n_tracks, 6) if n_tracks else None,
            "labels_without_positives": int(label_mask.sum()) - with_positive,
        }
    n_seen = int(is_seen.sum())
    return {
        "seed": split["seed"],
        "unseen_fraction": split["unseen_fraction"],
        "valid_fraction": split["valid_fraction"],
        "annotations_sha256": split["annotations_sha256"],
        "labels": {"X": n_seen, "Y": n_labels - n_seen, "total": n_labels},
        "instances": {"A": int(group_sizes[_A]), "B": int(group_sizes[_B]), "C": int(group_sizes[_C]),
                      "total": int(group_sizes[:3].sum()), "dropped": int(group_sizes[_DROPPED])},
        "train": {g: len(split["train"][g]) for g in TRAIN_GROUPS},
        "valid": {g: len(split["valid"][g]) for g in TRAIN_GROUPS},
        "areas": areas,
    }


def split_statistics(split: dict, annotations: pd.DataFrame, source: str = "annotations") -> dict:
    """Table 1 statistics of a split and the label cardinality of every setup area (see `_statistics`).

    `annotations` must be the ones the split was made from (checked through annotations_sha256).
    Returns {"seed", "unseen_fraction", "valid_fraction", "annotations_sha256", "labels": {X, Y, total},
    "instances": {A, B, C, total, dropped}, "train": {A, B, A+B}, "valid": {...}, "areas": {setup: {tracks,
    labels, positives, label_cardinality, labels_without_positives}}}.
    """
    _require_keys(split, "split")
    enc = _encode(annotations, source)
    digest = _sha256_of_encoded(enc)
    if digest != split["annotations_sha256"]:
        raise SplitError(f"{source} (sha256 {digest[:12]}...) are not the annotations this split was made from "
                         f"(sha256 {split['annotations_sha256'][:12]}...); remake the split (python -m splits.make).")
    track_index = pd.Index(enc.tracks)
    group = np.full(len(enc.tracks), -1, dtype=np.int8)
    for code, key in ((_A, "A"), (_B, "B"), (_C, "C"), (_DROPPED, "dropped")):
        positions = track_index.get_indexer(split[key])
        if (positions < 0).any():
            raise SplitError(f"split group {key} lists tracks that are not in {source}.")
        group[positions] = code
    if (group < 0).any():
        raise SplitError(f"{source}: track {enc.tracks[np.argmax(group < 0)]!r} is in no group of the split.")
    seen_positions = pd.Index(enc.labels).get_indexer(split["seen"])
    if (seen_positions < 0).any():
        raise SplitError(f"split lists seen labels that are not in {source}.")
    is_seen = np.zeros(len(enc.labels), dtype=bool)
    is_seen[seen_positions] = True
    return _statistics(enc, group, is_seen, split)


def paper_statistics(dataset: str) -> dict | None:
    """Paper Table 1 row for 'fma' or 'msd' (reference/paper_split_stats.csv), or None for other datasets."""
    if not PAPER_STATS_CSV.is_file():
        return None
    with open(PAPER_STATS_CSV, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["dataset"] == dataset:
                return {"labels": {"X": int(row["seen_labels_X"]), "Y": int(row["unseen_labels_Y"]),
                                   "total": int(row["labels_total"])},
                        "instances": {"A": int(row["A"]), "B": int(row["B"]), "C": int(row["C"]),
                                      "total": int(row["instances_total"])}}
    return None


def format_statistics(stats: dict, paper: dict | None = None) -> str:
    """A small human-readable table of `split_statistics` output (with the paper's Table 1 row when given)."""
    lab, ins = stats["labels"], stats["instances"]
    lines = [
        f"split seed {stats['seed']} (unseen fraction {stats['unseen_fraction']}, "
        f"valid fraction {stats['valid_fraction']}), annotations sha256 {stats['annotations_sha256'][:12]}...",
        f"{'Table 1':<10}{'X':>8}{'Y':>8}{'labels':>8}{'A':>10}{'B':>10}{'C':>10}{'total':>10}{'dropped':>9}",
        f"{'ours':<10}{lab['X']:>8}{lab['Y']:>8}{lab['total']:>8}{ins['A']:>10}{ins['B']:>10}{ins['C']:>10}"
        f"{ins['total']:>10}{ins['dropped']:>9}",
    ]
    if paper:
        pl, pi = paper["labels"], paper["instances"]
        lines.append(f"{'paper':<10}{pl['X']:>8}{pl['Y']:>8}{pl['total']:>8}{pi['A']:>10}{pi['B']:>10}{pi['C']:>10}"
                     f"{pi['total']:>10}")
    lines.append("train / valid: " + ", ".join(
        f"{g} {stats['train'][g]} / {stats['valid'][g]}" for g in TRAIN_GROUPS))
    lines.append(f"{'area':<14}{'tracks':>9}{'labels':>8}{'positives':>11}{'cardinality':>13}"
                 f"{'labels w/o positives':>22}")
    for setup, area in stats["areas"].items():
        card = "-" if area["label_cardinality"] is None else f"{area['label_cardinality']:.3f}"
        lines.append(f"{setup:<14}{area['tracks']:>9}{area['labels']:>8}{area['positives']:>11}{card:>13}"
                     f"{area['labels_without_positives']:>22}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------
def _json_list(items: list, indent: int) -> str:
    """A list of strings exactly as json.dumps(..., indent=2) prints it at this depth, via the C encoder (fast)."""
    if not items:
        return "[]"
    pad = "\n" + " " * (indent + 2)
    body = json.JSONEncoder(separators=("," + pad, ": ")).encode(list(items))[1:-1]
    return "[" + pad + body + "\n" + " " * indent + "]"


def format_split(split: dict) -> str:
    """The split file text: identical to json.dumps(split, indent=2) + "\\n" with keys in SPLIT_KEYS order."""
    entries = []
    for key in SPLIT_KEYS:
        value = split[key]
        if key in PARTS:
            inner = ",\n".join(f"    {json.dumps(g)}: {_json_list(value[g], 4)}" for g in TRAIN_GROUPS)
            text = "{\n" + inner + "\n  }"
        elif isinstance(value, list):
            text = _json_list(value, 2)
        else:
            text = json.dumps(value)
        entries.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(entries) + "\n}\n"


def _require_keys(split, source: str) -> None:
    if not isinstance(split, dict):
        raise SplitError(f"{source}: expected a JSON object with keys {', '.join(SPLIT_KEYS)}, "
                         f"got {type(split).__name__}.")
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise SplitError(f"{source}: missing key(s) {', '.join(missing)}; a split file has keys "
                         f"{', '.join(SPLIT_KEYS)} (splits/README.md).")
    for part in PARTS:
        if not isinstance(split[part], dict) or any(g not in split[part] for g in TRAIN_GROUPS):
            raise SplitError(f"{source}: {part!r} must be an object with keys {', '.join(TRAIN_GROUPS)}.")


def _id_set(value, where: str, source: str) -> set:
    """The set of a sorted, repeat-free list of strings (SplitError otherwise)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SplitError(f"{source}: {where} must be a list of strings.")
    members = set(value)
    # sorted() of an already sorted list is one linear pass (timsort), far cheaper than a Python-level loop.
    if len(members) != len(value) or sorted(value) != value:
        raise SplitError(f"{source}: {where} must be sorted without repeats.")
    return members


def validate_split(split, source: str = "split") -> dict:
    """Check a split's structure: exact keys, types, sorted lists, X/Y and A/B/C/dropped disjoint, and
    train/valid partitioning each of A, B and A+B = A + B. Returns the split; raises SplitError naming `source`."""
    _require_keys(split, source)
    extra = sorted(set(split) - set(SPLIT_KEYS))
    if extra:
        raise SplitError(f"{source}: unexpected key(s) {', '.join(extra)}; a split file has exactly the keys "
                         f"{', '.join(SPLIT_KEYS)}.")
    seed = split["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SplitError(f"{source}: seed must be a non-negative integer, got {seed!r}.")
    for key in ("unseen_fraction", "valid_fraction"):
        value = split[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise SplitError(f"{source}: {key} must be a number in [0, 1), got {value!r}.")
    digest = split["annotations_sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise SplitError(f"{source}: annotations_sha256 must be 64 lowercase hex digits.")
    members = {key: _id_set(split[key], key, source) for key in ("seen", "unseen", "A", "B", "C", "dropped")}
    if members["seen"] & members["unseen"]:
        raise SplitError(f"{source}: seen and unseen labels overlap.")
    groups = [members[g] for g in ("A", "B", "C", "dropped")]
    if sum(map(len, groups)) != len(set().union(*groups)):
        raise SplitError(f"{source}: groups A, B, C and dropped must be disjoint.")
    members["A+B"] = members["A"] | members["B"]
    for part in PARTS:
        extra_groups = sorted(set(split[part]) - set(TRAIN_GROUPS))
        if extra_groups:
            raise SplitError(f"{source}: {part} has unexpected key(s) {', '.join(extra_groups)}.")
    for g in TRAIN_GROUPS:
        train = _id_set(split["train"][g], f"train[{g!r}]", source)
        valid = _id_set(split["valid"][g], f"valid[{g!r}]", source)
        if train & valid or (train | valid) != members[g]:
            raise SplitError(f"{source}: train[{g!r}] and valid[{g!r}] must partition group {g}.")
    return split


def save_split(split: dict, path) -> Path:
    """Validate and write a split atomically (fixed formatting: same split -> byte-identical file)."""
    path = Path(path)
    validate_split(split, f"split for {path}")
    atomic_write_text(path, format_split(split))
    return path


def load_split(path) -> dict:
    """Read and validate a split file; a malformed file raises SplitError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split file {path} does not exist; make it with python -m splits.make (splits/README.md).")
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SplitError(f"split file {path} is not valid JSON: {exc}") from None
    return validate_split(split, f"split file {path}")


def stats_path(split_path) -> Path:
    """The statistics file beside a split: split_seed0.json -> split_seed0.stats.json."""
    split_path = Path(split_path)
    stem = split_path.name[:-5] if split_path.name.endswith(".json") else split_path.name
    return split_path.with_name(stem + ".stats.json")


def save_statistics(stats: dict, path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(stats, indent=2) + "\n")
    return path


def default_split_path(dataset_dir, seed: int = 0) -> Path:
    """<dataset_dir>/splits/split_seed{seed}.json (no resolution of dataset names here)."""
    return splits_dir(dataset_dir) / SPLIT_FILE_TEMPLATE.format(seed=int(seed))


def ensure_split(dataset_dir, seed: int = 0) -> Path:
    """The dataset's default split for `seed`, made (with its .stats.json) from annotations.csv when missing.

    An existing file is validated and checked against the current annotations (annotations_sha256); a stale file
    raises SplitError rather than being silently replaced, since runs trained on it would no longer match.
    """
    dataset_dir = resolve_dataset_dir(dataset_dir, must_exist=True)
    path = default_split_path(dataset_dir, seed)
    source = str(annotations_path(dataset_dir))
    annotations = read_annotations(annotations_path(dataset_dir))
    if path.is_file():
        split = load_split(path)
        digest = annotations_sha256(annotations, source)
        if split["seed"] != seed:
            raise SplitError(f"split file {path} holds seed {split['seed']}, not {seed}; remake it with "
                             f"python -m splits.make --dataset {dataset_dir} --seed {seed}.")
        if digest != split["annotations_sha256"]:
            raise SplitError(f"split file {path} was made from other annotations than {source}; remake it with "
                             f"python -m splits.make --dataset {dataset_dir} --seed {seed} "
                             "(runs trained on the old split will no longer match it).")
        return path
    split, stats = make_split_with_statistics(annotations, seed, source=source)
    save_split(split, path)
    save_statistics(stats, stats_path(path))
    return path


__all__ = [
    "TRAIN_SETUPS", "ANNOTATION_TESTS", "RETRIEVAL_TESTS", "TABLE4_TEST", "TEST_SETUPS", "ALL_SETUPS", "GROUPS",
    "TRAIN_GROUPS", "PARTS", "SPLIT_KEYS", "SplitError", "SplitWarning", "annotations_sha256", "make_split",
    "make_split_with_statistics", "parse_setup", "canonical_setup", "setup_tracks_labels", "split_statistics",
    "paper_statistics", "format_statistics", "format_split", "validate_split", "save_split", "load_split",
    "stats_path", "save_statistics", "default_split_path", "ensure_split",
]
