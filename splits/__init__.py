"""The zero-shot data split of Choi et al. (ISMIR 2019), Section 3.2 and Figure 2 (c), seeded:
labels into seen (X) and unseen (Y), tracks into A (seen labels only), B (seen and unseen) and C
(unseen only). Training setups pair a group with X (A-X, B-X, (A+B)-X; 90/10 train/valid); test
setups pair whole groups with Y or X+Y. splits/README.md has the file format; `python -m
splits.make` is the command line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from itertools import compress
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_dir import annotations_path, read_annotations, resolve_dataset_dir, splits_dir
from fileio import OutputError, atomic_write_text, sha256_file, write_json

TRAIN_SETUPS = ("A-X", "B-X", "(A+B)-X")
ANNOTATION_TESTS = ("B-Y", "C-Y", "(B+C)-Y", "B-(X+Y)", "C-(X+Y)", "(B+C)-(X+Y)")
RETRIEVAL_TESTS = ("(B+C)-Y", "(A+B+C)-Y")
TABLE4_TEST = "B-X"
# whole groups
TEST_SETUPS = tuple(dict.fromkeys(ANNOTATION_TESTS + RETRIEVAL_TESTS + (TABLE4_TEST,)))
ALL_SETUPS = tuple(dict.fromkeys(TRAIN_SETUPS + TEST_SETUPS))
GROUPS = ("A", "B", "C")
TRAIN_GROUPS = ("A", "B", "A+B")  # keys of split["train"] and split["valid"]
PARTS = ("train", "valid")
SPLIT_KEYS = (
    "seed",
    "unseen_fraction",
    "valid_fraction",
    "annotations_sha256",
    "seen",
    "unseen",
    "A",
    "B",
    "C",
    "dropped",
    "train",
    "valid",
)
# One numpy Generator per random step: the children of SeedSequence(seed).spawn(4), in this order.
STREAM_LABELS = 0
TRAIN_STREAMS = {"A": 1, "B": 2, "A+B": 3}
PAPER_STATS_CSV = Path(__file__).resolve().parent.parent / "reference" / "paper_split_stats.csv"


class SplitError(ValueError):
    """The annotations cannot be split as asked, or a split file is malformed; the message says
    which and why."""


class SplitWarning(UserWarning):
    """The split is usable but some setups are empty (no C track, or no validation track)."""


# ---- Making a split (paper Sec. 3.2) -------------------------------------------------------------
def make_split(
    annotations: pd.DataFrame,
    seed: int = 0,
    unseen_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    *,
    source: str = "annotations",
) -> dict:
    """Split labels into seen/unseen and tracks into A/B/C with train/valid parts (paper Sec. 3.2),
    seeded.
    annotations: columns track_id, label (one row per positive pair, any order). Returns the JSON
        content (keys SPLIT_KEYS, lists sorted). SplitError when X, Y, A, B or a training part would
            be
        empty; SplitWarning for an empty C or validation part. `source` names the input in messages.
    """
    seed, unseen_fraction, valid_fraction = _check_parameters(seed, unseen_fraction, valid_fraction)
    labels_of = _labels_of_tracks(annotations, source)  # {track: set of its labels}
    where = f"{source} with --seed {seed} and --unseen-fraction {unseen_fraction}"

    # 1. Shuffle the labels: the first 80 % are seen (X), the rest unseen (Y).
    labels = sorted(set().union(*labels_of.values()))
    n_seen = int(len(labels) * (1.0 - unseen_fraction))
    if not 0 < n_seen < len(labels):
        raise SplitError(
            f"{source}: {len(labels)} label(s) with --unseen-fraction {unseen_fraction} leave no "
            + (
                "seen label (X is empty); lower"
                if n_seen == 0
                else "unseen label (Y is empty); raise"
            )
            + " --unseen-fraction or add labels."
        )
    order = _generator(seed, STREAM_LABELS).permutation(len(labels))
    seen = {labels[i] for i in order[:n_seen]}
    unseen = set(labels) - seen

    # 2. Group the tracks by the kinds of labels they have (the original dropped a track with every
    #    seen label).
    groups = {"A": [], "B": [], "C": [], "dropped": []}
    for track in sorted(labels_of):
        mine = labels_of[track]
        if seen <= mine:
            groups["dropped"].append(track)
        elif mine.isdisjoint(unseen):
            groups["A"].append(track)
        elif not mine.isdisjoint(seen):
            groups["B"].append(track)
        else:
            groups["C"].append(track)
    for name in ("A", "B"):
        if not groups[name]:
            raise SplitError(
                f"{where}: group {name} is empty (training needs tracks with seen labels only, A, "
                "and with both kinds, B); try another --seed or --unseen-fraction."
            )
    if not groups["C"]:
        warnings.warn(
            f"{where}: group C (tracks with unseen labels only) is empty; the test setups C-Y and "
            "C-(X+Y) have no tracks.",
            SplitWarning,
            stacklevel=2,
        )

    # 3. Split each of A, B and A+B 90/10 into training and validation tracks, each with its own
    #    shuffle.
    groups["A+B"] = sorted(groups["A"] + groups["B"])
    train, valid = {}, {}
    for name in TRAIN_GROUPS:
        members = groups[name]
        order = _generator(seed, TRAIN_STREAMS[name]).permutation(len(members))
        in_train = np.zeros(len(members), dtype=bool)
        # members stay in sorted order
        in_train[order[: int(len(members) * (1.0 - valid_fraction))]] = True
        train[name] = list(compress(members, in_train))
        valid[name] = list(compress(members, ~in_train))
        if not train[name]:
            raise SplitError(
                f"{where} and --valid-fraction {valid_fraction}: group {name} has {len(members)} "
                "track(s), which leaves no training track; lower --valid-fraction or use more data."
            )
        if not valid[name]:
            warnings.warn(
                f"{where} and --valid-fraction {valid_fraction}: group {name} has no validation "
                "track "
                f"({len(members)} track(s) in all).",
                SplitWarning,
                stacklevel=2,
            )
    return {
        "seed": seed,
        "unseen_fraction": unseen_fraction,
        "valid_fraction": valid_fraction,
        "annotations_sha256": _sha256_of(labels_of),
        "seen": sorted(seen),
        "unseen": sorted(unseen),
        **{g: groups[g] for g in (*GROUPS, "dropped")},
        "train": train,
        "valid": valid,
    }


def make_split_with_statistics(
    annotations: pd.DataFrame,
    seed: int = 0,
    unseen_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    *,
    source: str = "annotations",
) -> tuple[dict, dict]:
    """(make_split(...), split_statistics(...)) of the same annotations."""
    split = make_split(annotations, seed, unseen_fraction, valid_fraction, source=source)
    return split, _statistics(split, _labels_of_tracks(annotations, source))


def _generator(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _check_parameters(seed, unseen_fraction, valid_fraction) -> tuple[int, float, float]:
    rules = [  # (holds, the message when it does not)
        (
            not isinstance(seed, bool) and isinstance(seed, (int, np.integer)) and seed >= 0,
            f"--seed must be a non-negative integer, got {seed!r}.",
        ),
        (
            0.0 < float(unseen_fraction) < 1.0,
            f"--unseen-fraction must be in (0, 1) (paper: 0.2), got {unseen_fraction}.",
        ),
        (
            0.0 <= float(valid_fraction) < 1.0,
            f"--valid-fraction must be in [0, 1) (paper: 0.1), got {valid_fraction}.",
        ),
    ]
    if broken := next((message for holds, message in rules if not holds), None):
        raise SplitError(broken)
    return int(seed), float(unseen_fraction), float(valid_fraction)


def _labels_of_tracks(annotations: pd.DataFrame, source: str) -> dict[str, set[str]]:
    """{track_id: set of labels} of a (track_id, label) DataFrame, or SplitError naming `source`."""
    if missing := [c for c in ("track_id", "label") if c not in annotations.columns]:
        raise SplitError(
            f"{source}: lacks column(s) {', '.join(missing)}; expected header track_id,label "
            f"(found {','.join(map(str, annotations.columns)) or 'no columns'})."
        )
    if len(annotations) == 0:
        raise SplitError(
            f"{source}: no annotations (0 rows); expected one row per positive (track_id, label) "
            "pair."
        )
    frame = annotations[["track_id", "label"]]
    for bad, what in ((frame.isna(), "missing"), (frame.astype(str) == "", "empty")):
        if (rows := np.flatnonzero(bad.to_numpy().any(axis=1))).size:
            raise SplitError(f"{source}: {what} track_id or label in data row {rows[0] + 1}.")
    labels_of: dict[str, set[str]] = {}
    for track, label in zip(
        frame["track_id"].astype(str).tolist(), frame["label"].astype(str).tolist(), strict=True
    ):
        labels_of.setdefault(track, set()).add(label)
    return labels_of


def annotations_sha256(annotations: pd.DataFrame, source: str = "annotations") -> str:
    """Order-independent fingerprint of annotations: SHA-256 of their canonical CSV text
    (splits/README.md), the file `dataset_dir.write_annotations` writes."""
    return _sha256_of(_labels_of_tracks(annotations, source))


def _sha256_of(labels_of: dict[str, set[str]]) -> str:
    def field(text):  # as csv.QUOTE_MINIMAL writes it
        return '"' + text.replace('"', '""') + '"' if re.search(r'[,"\r\n]', text) else text

    quoted = {label: field(label) for label in set().union(*labels_of.values())}
    lines = ["track_id,label\n"]
    for track in sorted(labels_of):
        lines += [field(track) + "," + quoted[label] + "\n" for label in sorted(labels_of[track])]
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def annotations_file_sha256(path) -> str:
    """annotations_sha256 of the annotations file `path`, remembered beside it in
    .<name>.sha256.json under the SHA-256 of the file's bytes: a repeated call costs a read of the
    bytes (~0.05 s at MSD size) instead of the canonical hash (~5 s); a changed file has other bytes
    and is hashed in full. A folder that cannot be written to is hashed every time."""
    path = Path(path)
    remembered = path.with_name(f".{path.name}.sha256.json")
    file_sha256 = sha256_file(path) if path.is_file() else None  # missing: read_annotations says so
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        entry = json.loads(remembered.read_text(encoding="utf-8"))
        if entry["file_sha256"] == file_sha256:
            return str(entry["annotations_sha256"])
    digest = annotations_sha256(read_annotations(path), str(path))
    if sha256_file(path) == file_sha256:  # the bytes hashed are the bytes read
        with contextlib.suppress(OSError):
            write_json(remembered, {"file_sha256": file_sha256, "annotations_sha256": digest})
    return digest


def _check_made_from(
    split: dict, digest: str, where: str, source: str = "the given annotations"
) -> None:
    if digest != split["annotations_sha256"]:
        raise SplitError(
            f"{where} was made from other annotations (sha256 "
            f"{split['annotations_sha256'][:12]}...) "
            f"than {source} (sha256 {digest[:12]}...); remake it with python -m splits.make "
            "(runs trained on the old split would no longer match it)."
        )


# ---- Setups --------------------------------------------------------------------------------------
def parse_setup(name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Setup name or alias -> (canonical name, groups, label letters): 'BC-XY' -> ('(B+C)-(X+Y)',
    ('B', 'C'), ('X', 'Y')); training aliases 'A', 'B', 'AB' / 'A+B'. ValueError listing the valid
    names otherwise."""
    group_text, sep, label_text = str(name).replace(" ", "").upper().partition("-")
    bodies = [re.sub("[()]", "", text) for text in (group_text, label_text if sep else "X")]
    letters = [tuple(sorted(body.split("+") if "+" in body else body)) for body in bodies]
    canonical = "-".join(x[0] if len(x) == 1 else "(" + "+".join(x) + ")" for x in letters if x)
    if canonical not in ALL_SETUPS:
        raise ValueError(
            f"unknown setup {name!r}: valid setups are {', '.join(ALL_SETUPS)} (training: "
            f"{', '.join(TRAIN_SETUPS)}; aliases: A, B, AB for the training setups, and forms "
            "without parentheses such as B+C-Y or BC-XY)."
        )
    return canonical, letters[0], letters[1]


def canonical_setup(name: str) -> str:
    """'AB' -> '(A+B)-X', 'BC-Y' -> '(B+C)-Y'; unknown names raise ValueError listing the valid
    ones."""
    return parse_setup(name)[0]


def setup_tracks_labels(
    split: dict, setup: str, part: str | None = None
) -> tuple[list[str], list[str]]:
    """(sorted track ids, labels) of a setup (an area of Figure 2 (c)): training setups need
    part="train" or "valid", test setups use whole groups (part=None). Labels: seen for X, unseen
    for Y, seen + unseen for X+Y."""
    canonical, groups, label_letters = parse_setup(setup)
    labels = [
        label for letter in label_letters for label in split["seen" if letter == "X" else "unseen"]
    ]
    if part is None and canonical in TEST_SETUPS:
        return sorted(t for g in groups for t in split[g]), labels
    if part in PARTS and canonical in TRAIN_SETUPS:
        return list(split[part]["+".join(groups)]), labels
    raise ValueError(
        f"setup {canonical} with part={part!r}: training setups ({', '.join(TRAIN_SETUPS)}) take "
        f"part='train' or 'valid', test setups ({', '.join(TEST_SETUPS)}) part=None (whole groups)."
    )


# ---- Statistics (Table 1 + label cardinality per area) -------------------------------------------
def split_statistics(split: dict, annotations: pd.DataFrame, source: str = "annotations") -> dict:
    """Table 1 counts of a split made from `annotations` (checked) and, per setup area: tracks,
    labels, positives, label_cardinality (positives / tracks, area's labels only: paper Sec. 6.1),
    labels_without_positives."""
    labels_of = _labels_of_tracks(annotations, source)
    _check_made_from(split, _sha256_of(labels_of), "this split", source)
    if {t for key in ("A", "B", "C", "dropped") for t in split[key]} != labels_of.keys():
        raise SplitError(
            f"split groups A, B, C and dropped do not list exactly the tracks of {source}."
        )
    return _statistics(split, labels_of)


def _statistics(split: dict, labels_of: dict[str, set[str]]) -> dict:
    kinds = {"X": set(split["seen"]), "Y": set(split["unseen"])}
    # positive pairs of the tracks of group g with labels of kind x, and those labels
    count, carried = {}, {}
    for g in GROUPS:
        for x, labels in kinds.items():
            inside = [labels_of[track] & labels for track in split[g]]
            count[g, x] = sum(map(len, inside))
            carried[g, x] = set().union(*inside)
    areas = {}
    for setup in ALL_SETUPS:
        _, groups, letters = parse_setup(setup)
        labels = set().union(*(kinds[x] for x in letters))
        tracks = sum(len(split[g]) for g in groups)
        positives = sum(count[g, x] for g in groups for x in letters)
        present = set().union(*(carried[g, x] for g in groups for x in letters))
        areas[setup] = {
            "tracks": tracks,
            "labels": len(labels),
            "positives": positives,
            "label_cardinality": round(positives / tracks, 6) if tracks else None,
            "labels_without_positives": len(labels - present),
        }
    instances = {g: len(split[g]) for g in GROUPS}
    return {
        **{key: split[key] for key in SPLIT_KEYS[:4]},
        "labels": {
            "X": len(kinds["X"]),
            "Y": len(kinds["Y"]),
            "total": len(kinds["X"]) + len(kinds["Y"]),
        },
        "instances": {
            **instances,
            "total": sum(instances.values()),
            "dropped": len(split["dropped"]),
        },
        "train": {g: len(split["train"][g]) for g in TRAIN_GROUPS},
        "valid": {g: len(split["valid"][g]) for g in TRAIN_GROUPS},
        "areas": areas,
    }


def paper_statistics(dataset: str) -> dict | None:
    """Paper Table 1 row for 'fma' or 'msd' (reference/paper_split_stats.csv), or None for other
    datasets."""
    row = (
        pd.read_csv(PAPER_STATS_CSV, index_col="dataset").astype(int).to_dict("index").get(dataset)
    )
    return row and {
        "labels": {
            "X": row["seen_labels_X"],
            "Y": row["unseen_labels_Y"],
            "total": row["labels_total"],
        },
        "instances": {"A": row["A"], "B": row["B"], "C": row["C"], "total": row["instances_total"]},
    }


def format_statistics(stats: dict, paper: dict | None = None) -> str:
    """`split_statistics` as text: Table 1 (next to the paper's row when given), train/valid sizes,
    the areas."""

    def table1_row(labels, instances):
        return {
            "X": labels["X"],
            "Y": labels["Y"],
            "labels": labels["total"],
            **{g: instances[g] for g in GROUPS},
            "tracks": instances["total"],
            "dropped": instances.get("dropped", "-"),
        }

    rows = {
        name: table1_row(r["labels"], r["instances"])
        for name, r in (("ours", stats), ("paper", paper))
        if r
    }
    areas = pd.DataFrame.from_dict(stats["areas"], orient="index")
    areas["label_cardinality"] = [
        f"{c:.3f}" if c is not None else "-" for c in areas["label_cardinality"]
    ]
    return "\n".join(
        [
            f"split seed {stats['seed']} (unseen fraction {stats['unseen_fraction']}, valid "
            "fraction "
            f"{stats['valid_fraction']}), annotations sha256 {stats['annotations_sha256'][:12]}...",
            pd.DataFrame.from_dict(rows, orient="index").rename_axis(columns="Table 1").to_string(),
            "train / valid: "
            + ", ".join(f"{g} {stats['train'][g]} / {stats['valid'][g]}" for g in TRAIN_GROUPS),
            areas.rename_axis(columns="area").to_string(),
        ]
    )


# ---- Files ---------------------------------------------------------------------------------------
def format_split(split: dict) -> str:
    """The split file text: json.dumps(split, indent=2) + "\\n", keys in SPLIT_KEYS then
    TRAIN_GROUPS order."""
    ordered = {key: split[key] for key in SPLIT_KEYS}
    ordered.update({part: {g: split[part][g] for g in TRAIN_GROUPS} for part in PARTS})
    return json.dumps(ordered, indent=2) + "\n"


def validate_split(split, source: str = "split") -> dict:
    """Check a split's structure: exact keys, types, sorted lists, X/Y and A/B/C/dropped disjoint,
    train/valid partitioning each of A, B and A+B = A + B. Returns the split; raises SplitError
    naming `source`."""
    keys = f"a split file has exactly the keys {', '.join(SPLIT_KEYS)} (splits/README.md)"
    if not isinstance(split, dict):
        raise SplitError(f"{source}: expected a JSON object; {keys}.")
    if set(split) != set(SPLIT_KEYS):
        raise SplitError(
            f"{source}: missing key(s) "
            f"{', '.join(k for k in SPLIT_KEYS if k not in split) or '-'}, "
            f"unexpected key(s) {', '.join(sorted(set(split) - set(SPLIT_KEYS))) or '-'}; {keys}."
        )
    if any(
        not isinstance(split[part], dict) or set(split[part]) != set(TRAIN_GROUPS) for part in PARTS
    ):
        raise SplitError(
            f"{source}: train and valid must be objects with the keys {', '.join(TRAIN_GROUPS)}."
        )
    if type(split["seed"]) is not int or split["seed"] < 0:
        raise SplitError(f"{source}: seed must be a non-negative integer, got {split['seed']!r}.")
    for key in ("unseen_fraction", "valid_fraction"):
        if type(split[key]) not in (int, float) or not 0 <= split[key] < 1:
            raise SplitError(f"{source}: {key} must be a number in [0, 1), got {split[key]!r}.")
    if not re.fullmatch("[0-9a-f]{64}", str(split["annotations_sha256"])):
        raise SplitError(f"{source}: annotations_sha256 must be 64 lowercase hex digits.")
    members = {
        key: _id_set(split[key], key, source) for key in ("seen", "unseen", *GROUPS, "dropped")
    }
    if members["seen"] & members["unseen"]:
        raise SplitError(f"{source}: seen and unseen labels overlap.")
    groups = [members[g] for g in (*GROUPS, "dropped")]
    if len(set().union(*groups)) != sum(map(len, groups)):
        raise SplitError(f"{source}: groups A, B, C and dropped must be disjoint.")
    members["A+B"] = members["A"] | members["B"]
    for g in TRAIN_GROUPS:
        train, valid = (_id_set(split[part][g], f"{part}[{g!r}]", source) for part in PARTS)
        if train & valid or (train | valid) != members[g]:
            raise SplitError(f"{source}: train[{g!r}] and valid[{g!r}] must partition group {g}.")
    return split


# the set of a sorted, repeat-free list of strings
def _id_set(value, where: str, source: str) -> set:
    if not isinstance(value, list) or not set(map(type, value)) <= {str}:
        raise SplitError(f"{source}: {where} must be a list of strings.")
    if len(set(value)) != len(value) or sorted(value) != value:
        raise SplitError(f"{source}: {where} must be sorted without repeats.")
    return set(value)


def save_split(split: dict, path) -> Path:
    """Validate and write a split atomically (fixed format: same split -> byte-identical file)."""
    validate_split(split, f"split for {path}")
    return atomic_write_text(Path(path), format_split(split))


def load_split(path, annotations: pd.DataFrame | str | Path | None = None) -> dict:
    """Read and validate a split file (SplitError naming it). With `annotations` (a DataFrame, or
    the path of an annotations file: its digest is remembered, annotations_file_sha256), also check
    that the split was made from them (its annotations_sha256): a split made before the annotations
    changed is never used silently."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(
            f"split file {path} does not exist; make it with python -m splits.make "
            "(splits/README.md)."
        )
    try:
        split = validate_split(json.loads(path.read_text(encoding="utf-8")), f"split file {path}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SplitError(f"split file {path} is not valid JSON: {exc}") from None
    if isinstance(annotations, pd.DataFrame):
        _check_made_from(split, annotations_sha256(annotations), f"split file {path}")
    elif annotations is not None:
        _check_made_from(
            split, annotations_file_sha256(annotations), f"split file {path}", str(annotations)
        )
    return split


def stats_path(split_path) -> Path:
    """The statistics file beside a split: split_seed0.json -> split_seed0.stats.json."""
    return Path(split_path).with_name(Path(split_path).name.removesuffix(".json") + ".stats.json")


def save_statistics(stats: dict, path) -> Path:
    return write_json(path, stats)


def default_split_path(dataset_dir, seed: int = 0) -> Path:
    """<dataset_dir>/splits/split_seed{seed}.json (no resolution of dataset names here)."""
    return splits_dir(dataset_dir) / f"split_seed{int(seed)}.json"


def ensure_split(dataset_dir, seed: int = 0) -> Path:
    """The dataset's default split for `seed`, made (with its .stats.json) from annotations.csv when
    missing. A file of another seed or made from other annotations raises SplitError: runs trained
    on it would not match."""
    dataset_dir = resolve_dataset_dir(dataset_dir, must_exist=True)
    path = default_split_path(dataset_dir, seed)
    source = str(annotations_path(dataset_dir))
    if not path.is_file():
        split, stats = make_split_with_statistics(read_annotations(source), seed, source=source)
        try:
            save_split(split, path)
            save_statistics(stats, stats_path(path))
        except OutputError as exc:  # a read-only dataset (an archive, a shared folder)
            raise SplitError(
                f"no split of seed {seed} in the dataset yet, and none can be made there: {exc} "
                f"For example: python -m splits.make --dataset {dataset_dir} --seed {seed} --out "
                "FILE.json, then pass --split FILE.json."
            ) from None
        return path
    split = load_split(path)
    if split["seed"] != seed:
        raise SplitError(
            f"split file {path} holds seed {split['seed']}, not {seed}; remake it with "
            f"python -m splits.make --dataset {dataset_dir} --seed {seed}."
        )
    _check_made_from(split, annotations_file_sha256(source), f"split file {path}", source)
    return path
