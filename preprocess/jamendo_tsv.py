"""MTG-Jamendo metadata readers: the autotagging TSV files, the word-split table of compound tag
names and the official per-track sha256 lists. Used by preprocess/jamendo.py; formats in
docs/formats.md.

A TSV (e.g. autotagging_instrument.tsv) is tab-separated with CRLF (or LF) line ends and the header
TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS. After the five fixed fields a row has one or more
tag fields, each `category---tag` (`genre---rock`, `instrument---piano`, `mood/theme---happy`): rows
differ in length, which is why pandas.read_csv(sep="\\t") cannot read them. Each flag of the adapter
(--genre, --instrument, --moodtheme) takes the files of one category; a file keeps only the tags of
its category (a full autotagging.tsv given to every flag works; the other categories' tags are
counted, not used).

A track listed twice must carry the same data: the fixed fields everywhere, and within one category
the same tags (the train/validation/test files of a split and the full file may be given together).
Otherwise a DatasetError names both lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import dataset_dir as ds
from dataset_dir import DatasetError
from fileio import sha256_file

# flag -> tag prefix
CATEGORIES = {"genre": "genre", "instrument": "instrument", "moodtheme": "mood/theme"}
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
TAG_SEPARATOR = "---"
TRACK_ID = re.compile(r"track_(\d+)")
FORMAT_HINT = (
    "expected TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION and then one tab-separated "
    "category---tag field per tag"
)


@dataclass(frozen=True)
class Row:
    """One TSV row: the fixed fields, the tags of the file's category (names without prefix), and
    where it is."""

    track_id: str
    fixed: tuple  # (ARTIST_ID, ALBUM_ID, PATH, DURATION) as written
    tags: frozenset
    where: str  # "<file>, line <n>"

    @property
    def path(self) -> str:  # the audio file, relative to an MTG-Jamendo audio root ("41/241.mp3")
        return self.fixed[2]


@dataclass
class Metadata:
    """Every track of the given files and, per category (flag name), the tags of each track that has
    some."""

    tracks: dict = field(default_factory=dict)  # track id -> Row (the first that listed it)
    tags: dict = field(default_factory=dict)  # category -> {track id: frozenset of tag names}
    files: dict = field(default_factory=dict)  # category -> [{"path", "sha256", "rows"}]
    # repeated rows merged, tags of other categories not used
    counts: dict = field(default_factory=dict)


def track_number(track_id: str) -> int:
    """'track_0000241' -> 241: the order of tracks everywhere (ids are zero-padded, but not to a
    promised width)."""
    return int(TRACK_ID.fullmatch(track_id).group(1))


def parse_row(fields: list[str], category: str, where: str) -> tuple[Row, int]:
    """The fields of one data line -> (Row with the tags of `category`, number of tags of other
    categories)."""
    if len(fields) < len(HEADER):
        raise DatasetError(
            f"{where}: {len(fields)} field(s); {FORMAT_HINT} (a row needs at least one tag)."
        )
    track_id, artist, album, path, duration = (value.strip() for value in fields[:5])
    if not TRACK_ID.fullmatch(track_id):
        raise DatasetError(
            f"{where}: TRACK_ID {track_id!r} is not of the form track_0000241; {FORMAT_HINT}."
        )
    if not path or path.startswith("/") or ".." in Path(path).parts:
        raise DatasetError(
            f"{where}: PATH {path!r} must be a relative audio path such as 41/241.mp3."
        )
    try:
        seconds = float(duration)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise DatasetError(
            f"{where}: DURATION {duration!r} is not a number of seconds; {FORMAT_HINT}."
        )
    prefix = CATEGORIES[category]
    tags = set()
    others = 0
    for text in fields[5:]:
        kind, separator, name = text.strip().partition(TAG_SEPARATOR)
        if not separator or kind not in CATEGORIES.values() or not name:
            raise DatasetError(
                f"{where}: tag field {text!r} is not category---tag with category one of "
                f"{', '.join(CATEGORIES.values())} (e.g. genre---rock)."
            )
        if kind == prefix:
            tags.add(name)
        else:
            others += 1
    return Row(track_id, (artist, album, path, duration), frozenset(tags), where), others


def read_tsv(path, category: str) -> tuple[list[Row], int]:
    """One MTG-Jamendo TSV -> (its rows with at least one tag of `category`, tags of other
    categories seen)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"--{category} {path}: file does not exist; give MTG-Jamendo's "
            f"autotagging_{category}.tsv (or the train/validation/test files of one split)."
        )
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"--{category} {path}: not UTF-8 text ({exc}).") from None
    header = lines[0].split("\t") if lines else []
    if [name.strip() for name in header] != list(HEADER):
        raise DatasetError(
            f"--{category} {path}, line 1: header {'<TAB>'.join(header)!r} is not "
            f"{'<TAB>'.join(HEADER)}; is this an MTG-Jamendo autotagging TSV?"
        )
    rows = []
    others = 0
    for number, line in enumerate(lines[1:], start=2):
        if line.strip():
            row, other = parse_row(
                line.split("\t"), category, f"--{category} {path}, line {number}"
            )
            others += other
            if row.tags:
                rows.append(row)
    if not rows:
        raise DatasetError(
            f"--{category} {path}: no row has a {CATEGORIES[category]}--- tag; was the file given "
            "to the right flag?"
        )
    return rows, others


def read_metadata(files: dict) -> Metadata:
    """{category: [TSV paths]} -> Metadata of all of them (module docstring: the repeated-track
    rule)."""
    metadata = Metadata(counts={"repeated_rows_merged": 0, "tags_of_other_categories_not_used": 0})
    for category, paths in files.items():
        if category not in CATEGORIES:
            raise ValueError(
                f"unknown MTG-Jamendo category {category!r}; choose one of {', '.join(CATEGORIES)}"
            )
        seen: dict[str, Row] = {}
        metadata.files[category] = []
        for path in paths:
            rows, others = read_tsv(path, category)
            metadata.counts["tags_of_other_categories_not_used"] += others
            metadata.files[category].append(
                {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "rows": len(rows)}
            )
            for row in rows:
                first = seen.setdefault(row.track_id, row)
                if first is not row and (first.fixed, first.tags) != (row.fixed, row.tags):
                    raise DatasetError(
                        f"track {row.track_id} is listed twice with different data: {first.where} "
                        f"and {row.where}; keep one of the two rows."
                    )
                metadata.counts["repeated_rows_merged"] += first is not row
                known = metadata.tracks.setdefault(row.track_id, row)
                if known.fixed != row.fixed:
                    raise DatasetError(
                        f"track {row.track_id} has different ARTIST_ID, ALBUM_ID, PATH or DURATION "
                        f"in {known.where} and {row.where}; are the files of one MTG-Jamendo "
                        "release?"
                    )
        metadata.tags[category] = {track: row.tags for track, row in seen.items()}
    return metadata


def read_word_splits(path) -> dict[str, list[str]]:
    """The word-split table (CSV tag,words; words split by spaces) -> {compound tag: [words]}."""
    frame = ds.read_csv_columns(path, ("tag", "words"), "word-split table")
    splits = {}
    for number, (tag, words) in enumerate(zip(frame["tag"], frame["words"], strict=True), start=2):
        if not tag.strip() or not words.split() or tag.strip() in splits:
            raise DatasetError(
                f"word-split table {path}, row {number}: needs a tag, seen once, and its words "
                f"separated by spaces (found {tag!r}, {words!r})."
            )
        splits[tag.strip()] = words.split()
    return splits


def read_sha256_list(path) -> dict[str, str]:
    """MTG-Jamendo's *_sha256_tracks.txt ('<64 hex digits> <relative path>' per line) -> {path:
    digest}."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"--sha256 {path}: file does not exist (e.g. raw_30s_audio_sha256_tracks.txt of the "
            "MTG-Jamendo repository's data/download/)."
        )
    digests = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            digest, _, relative = line.strip().partition(" ")
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest) or not relative.strip():
                raise DatasetError(
                    f"--sha256 {path}, line {number}: expected '<sha256> <path>', found {line!r}."
                )
            digests[relative.strip()] = digest.lower()
    return digests
