"""Score any model under the paper's zero-shot protocol: its embeddings (or scores) in, Tables
2-3 out.

The exchange format is one .npz of plain arrays (numpy.savez; np.load(path, allow_pickle=False)
reads it):

    track_ids         (n,) str       track ids of the dataset directory (annotations.csv)
    track_embeddings  (n, d) float   the model's audio embedding of each track
    label_names       (m,) str       labels of the dataset directory, spelled as in annotations.csv
    label_embeddings  (m, d) float   the model's text embedding of each label (e.g. of a prompt)
  or, for a model that does not embed tracks and labels into one space, instead of the two
  embedding arrays:
    scores            (n, m) float   relevance of label j to track i, higher = more relevant

Scores from embeddings are cosines (embeddings.cosine_scores), as for our models. Tracks and labels
of the file that the split does not use are ignored.

    python evaluate.py --external clap.npz --dataset demo [--split S.json] [--name clap] \\
        [--out DIR] [--allow-missing]
    python evaluate.py --run-dir runs/X --export-embeddings ours.npz   # our run in this format

A model scored this way saw none of the split's training tracks, so every zero-shot test setup
applies: annotation over Y and X+Y on B, C, B+C and retrieval over Y on B+C, A+B+C (Tables 2-3, with
the (X+Y) GZSL parts). Table 4 (retrieval B-X) compares our two models trained on A-X and is left
out. Its records are protocol.py's, with model = the name, train = "none" and side_info =
"external"; the result folder (default runs/external-<name>) holds results.json and external.json
(what was scored) and no model.keras, which is how evaluate.py --collect tells it from a training
run and reuses its results.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import config
import dataset_dir as ds
import embeddings
import protocol
import splits
from fileio import atomic_write, claim_folder, output_lock, sha256_file, write_json
from preprocess.melstore import MelStore

OWNER = "evaluate.py --external"  # fileio marker of the result folders
# The records' train and side_info of an external model
EXTERNAL_TRAIN = "none"
EXTERNAL_SIDE_INFO = "external"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
ARRAYS = ("track_ids", "track_embeddings", "label_names", "label_embeddings", "scores")
EMBEDDING_ARRAYS = ("track_ids", "track_embeddings", "label_names", "label_embeddings")
SCORE_ARRAYS = ("track_ids", "label_names", "scores")
SHOWN = 5  # missing tracks or labels named in an error message


class ExternalError(protocol.EvaluationError):
    """A bad exchange file or --external / --export-embeddings flag; the message names the file or
    flag."""


# ---- The exchange format -------------------------------------------------------------------------
@dataclass(frozen=True)
class Exchange:
    """A checked exchange file: names, and either both embedding arrays or the scores."""

    source: str
    track_ids: list[str]
    label_names: list[str]
    track_embeddings: np.ndarray | None = None  # (n, d) float
    label_embeddings: np.ndarray | None = None  # (m, d) float
    scores: np.ndarray | None = None  # (n, m) float

    kind = property(lambda self: "embeddings" if self.scores is None else "scores")

    def setup_scores(self, tracks, labels) -> np.ndarray:
        """(len(tracks), len(labels)) scores of a setup: cosine(track, label) embeddings, or the
        given scores."""
        row, col = (
            {name: i for i, name in enumerate(names)}
            for names in (self.track_ids, self.label_names)
        )
        rows, cols = [row[t] for t in tracks], [col[lab] for lab in labels]
        if self.scores is None:
            return embeddings.cosine_scores(
                self.track_embeddings[rows], self.label_embeddings[cols]
            )
        return self.scores[np.ix_(rows, cols)]


def read_exchange(path) -> Exchange:
    """An exchange .npz, read without pickle and checked (check_exchange): ExternalError naming file
    and array."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExternalError(
            f"{path} {'is a folder' if path.is_dir() else 'does not exist'}: pass an .npz file "
            "in the exchange format (external.py)."
        )
    arrays = {}
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ExternalError(
                f"{path} holds a single array; the exchange format is an .npz of named arrays "
                f"(np.savez(path, {'=..., '.join(EMBEDDING_ARRAYS)}=...))."
            )
        with loaded:
            for key in loaded.files:
                try:
                    arrays[key] = loaded[key]
                except ValueError as exc:  # numpy refuses object arrays without pickle
                    if "pickle" not in str(exc):
                        raise
                    raise ExternalError(
                        f"{path}: array {key!r} holds Python objects (needs pickle); save strings "
                        "as np.asarray(values, dtype=str) and numbers as float arrays."
                    ) from None
    except ExternalError:
        raise
    # not an npz, truncated, damaged member: numpy and zipfile raise many types
    except Exception as exc:
        raise ExternalError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); write it with "
            "numpy.savez (external.py describes the format)."
        ) from None
    return check_exchange(arrays, str(path))


def check_exchange(arrays: dict, source: str) -> Exchange:
    """The exchange format's rules on a dict of arrays: known names only, either both embedding
    arrays or the scores, string ids without repeats, finite float arrays whose shapes match the
    names."""
    if unknown := sorted(set(arrays) - set(ARRAYS)):
        raise ExternalError(
            f"{source}: unknown array(s) {unknown}; the exchange format has {list(ARRAYS)}."
        )
    given_embeddings = sorted({"track_embeddings", "label_embeddings"} & set(arrays))
    if "scores" in arrays and given_embeddings:
        raise ExternalError(
            f"{source}: has both 'scores' and {given_embeddings}; give either the two embedding "
            "arrays or the scores."
        )
    required = SCORE_ARRAYS if "scores" in arrays else EMBEDDING_ARRAYS
    if missing := [key for key in required if key not in arrays]:
        raise ExternalError(
            f"{source}: lacks array(s) {missing}; the exchange format needs "
            f"{list(EMBEDDING_ARRAYS)} or {list(SCORE_ARRAYS)}."
        )
    tracks, labels = (
        _names(arrays[key], f"{source}: array {key!r}") for key in ("track_ids", "label_names")
    )
    if "scores" in arrays:
        scores = _numbers(
            arrays["scores"],
            f"{source}: array 'scores'",
            (len(tracks), len(labels)),
            "(len(track_ids), len(label_names))",
        )
        return Exchange(source, tracks, labels, scores=scores)
    track_emb = _numbers(
        arrays["track_embeddings"],
        f"{source}: array 'track_embeddings'",
        (len(tracks), None),
        "(len(track_ids), d)",
    )
    label_emb = _numbers(
        arrays["label_embeddings"],
        f"{source}: array 'label_embeddings'",
        (len(labels), track_emb.shape[1]),
        "(len(label_names), d of track_embeddings)",
    )
    return Exchange(source, tracks, labels, track_embeddings=track_emb, label_embeddings=label_emb)


def _names(array: np.ndarray, what: str) -> list[str]:
    """A 1-D array of distinct, non-empty strings, as a list."""
    if array.dtype.kind != "U" or array.ndim != 1:
        raise ExternalError(
            f"{what} is {array.ndim}-D {array.dtype}; it must be a 1-D array of strings: "
            "np.asarray(names, dtype=str)."
        )
    names = array.tolist()
    if not names or "" in names:
        raise ExternalError(
            f"{what} is empty or holds an empty string; give one non-empty name per row."
        )
    if len(set(names)) != len(names):
        values, counts = np.unique(array, return_counts=True)
        repeated = values[counts > 1].tolist()
        raise ExternalError(
            f"{what} repeats {len(repeated)} name(s) ({', '.join(repeated[:SHOWN])}); give each "
            "once."
        )
    return names


def _numbers(array: np.ndarray, what: str, shape: tuple, meaning: str) -> np.ndarray:
    """A finite float array of `shape` (None: any size >= 1 on that axis)."""
    if array.dtype.kind != "f":
        raise ExternalError(
            f"{what} has dtype {array.dtype}; it must hold floats (e.g. .astype(np.float32))."
        )
    if (
        array.ndim != len(shape)
        or any(
            want is not None and have != want for have, want in zip(array.shape, shape, strict=True)
        )
        or 0 in array.shape
    ):
        expected = ", ".join("d" if size is None else str(size) for size in shape)
        raise ExternalError(
            f"{what} has shape {array.shape}; it must be {meaning} = ({expected}) with d >= 1."
        )
    bad = ~np.isfinite(array)
    if bad.any():
        raise ExternalError(
            f"{what} has {int(bad.sum())} NaN or infinite value(s), the first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])}; fix the model's outputs."
        )
    return array


def write_exchange(
    path, track_ids, label_names, track_embeddings=None, label_embeddings=None, scores=None
) -> Path:
    """Write an exchange .npz atomically, after the checks read_exchange applies (so it always reads
    back)."""
    arrays = {
        "track_ids": np.asarray(track_ids, dtype=str),
        "label_names": np.asarray(label_names, dtype=str),
    }
    given = {
        "track_embeddings": track_embeddings,
        "label_embeddings": label_embeddings,
        "scores": scores,
    }
    arrays.update({key: np.asarray(value) for key, value in given.items() if value is not None})
    check_exchange(arrays, str(path))
    return atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays))


# ---- Scoring -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExternalModel:
    """What protocol.make_record reads of a run, for a model that was not trained here."""

    dataset: str
    model_kind: str  # the user's name of the model: the records' "model"
    side_info_kind: str = EXTERNAL_SIDE_INFO
    train_setup: str = EXTERNAL_TRAIN


def zero_shot_plan() -> list[tuple[str, str]]:
    """(test setup, task) pairs of a model that saw no training split: protocol.setup_plan's
    zero-shot setups (Tables 2-3); Table 4 (B-X) compares our embedding and classification models
    trained on A-X."""
    return protocol.setup_plan("embedding", EXTERNAL_TRAIN)[0]


def missing_members(exchange: Exchange, split: dict) -> dict[str, list[str]]:
    """The tracks (groups A, B, C) and labels (X, Y) of the test setups that the exchange file
    lacks."""
    tracks = dict.fromkeys(
        t for test, _ in zero_shot_plan() for t in splits.setup_tracks_labels(split, test)[0]
    )
    have_tracks = set(exchange.track_ids)
    have_labels = set(exchange.label_names)
    return {
        "tracks": [t for t in tracks if t not in have_tracks],
        "labels": [lab for lab in split["seen"] + split["unseen"] if lab not in have_labels],
    }


def missing_message(source: str, missing: dict, split: dict) -> str:
    """The error for a file that lacks tracks or labels of the split: the first few of each and the
    counts."""
    total = {
        "tracks": sum(len(split[g]) for g in splits.GROUPS),
        "labels": len(split["seen"] + split["unseen"]),
    }
    parts = [
        f"{len(names)} of the split's {total[kind]} {kind} ({', '.join(names[:SHOWN])}"
        f"{', ...' if len(names) > SHOWN else ''})"
        for kind, names in missing.items()
        if names
    ]
    return (
        f"{source} lacks {' and '.join(parts)}: give embeddings (or scores) for every track and "
        "label of the "
        "split, or pass --allow-missing to score each setup on what the file has (the records then "
        "count what "
        "was left out)."
    )


def score_exchange(
    exchange: Exchange,
    split: dict,
    annotations,
    model: ExternalModel,
    allow_missing: bool = False,
    save_to=None,
) -> tuple[list[dict], list[str]]:
    """Records of every test setup of zero_shot_plan (evaluate_run's records, part "all" plus the
    (X+Y) GZSL parts), scores/<setup>.npz in `save_to` if given. With allow_missing, each setup
    keeps the tracks and labels the file has, and every record counts what its setup lost
    (missing_tracks, missing_labels)."""
    missing = missing_members(exchange, split)
    notes = []
    restricted = any(missing.values())
    if restricted and not allow_missing:
        raise ExternalError(missing_message(exchange.source, missing, split))
    have_tracks = set(exchange.track_ids)
    have_labels = set(exchange.label_names)
    plan = zero_shot_plan()
    records = []
    for test in dict.fromkeys(test for test, _ in plan):
        tracks, all_labels, tracks_left_out = protocol.setup_members(split, test, have_tracks)
        labels = [lab for lab in all_labels if lab in have_labels]
        scores = exchange.setup_scores(tracks, labels)  # (n, m)
        truth = ds.label_matrix(annotations, tracks, labels)  # (n, m) 0/1
        if save_to is not None:
            notes.append(
                f"wrote {protocol.save_scores(save_to, test, scores, truth, tracks, labels)}"
            )
        lost = (
            {"missing_tracks": tracks_left_out, "missing_labels": len(all_labels) - len(labels)}
            if restricted
            else {}
        )
        for task in [task for t, task in plan if t == test]:
            parts = protocol.setup_values(test, task, scores, truth, np.isin(labels, split["seen"]))
            records += [
                {**protocol.make_record(model, test, task, part, values), **lost}
                for part, values in parts.items()
            ]
    if restricted:
        notes.append(
            f"--allow-missing: {len(missing['tracks'])} track(s) and {len(missing['labels'])} "
            "label(s) "
            "of the split are not in the file; each setup is scored without them (the records' "
            "missing_tracks, missing_labels)."
        )
    return records, notes


def evaluate_external(
    path,
    dataset,
    split_path=None,
    name=None,
    out=None,
    allow_missing: bool = False,
    save: bool = False,
) -> tuple[list[dict], list[str]]:
    """Score an exchange file on the dataset's split; write results.json and external.json to the
    result folder (default runs/external-<name>, name default: the file's stem). Returns (records,
    notes)."""
    path = Path(path).expanduser().resolve()
    exchange = read_exchange(path)
    name = check_name(name or path.stem)
    dataset_dir = ds.resolve_dataset_dir(dataset, must_exist=True)
    split_path = Path(split_path or splits.default_split_path(dataset_dir)).expanduser().resolve()
    annotations = ds.read_annotations(ds.annotations_path(dataset_dir))
    # checked against these annotations (their digest remembered beside the file)
    split = splits.load_split(split_path, ds.annotations_path(dataset_dir))
    model = ExternalModel(ds.dataset_name(dataset_dir), name)
    missing = missing_members(exchange, split)
    if any(missing.values()) and not allow_missing:  # refused before the result folder is made
        raise ExternalError(missing_message(exchange.source, missing, split))
    out = Path(out or config.RUNS_ROOT / f"external-{name}").expanduser().resolve()
    claim_folder(out, OWNER, hint="Pass another --out.")
    with output_lock(out, "external evaluation"):
        records, notes = score_exchange(
            exchange, split, annotations, model, allow_missing, out if save else None
        )
        ignored = {
            "tracks": len(set(exchange.track_ids) - {t for g in splits.GROUPS for t in split[g]}),
            "labels": len(set(exchange.label_names) - set(split["seen"] + split["unseen"])),
        }
        write_json(
            out / protocol.EXTERNAL_FILE,
            {
                "name": name,
                "kind": exchange.kind,
                "dataset": model.dataset,
                "dataset_dir": str(dataset_dir),
                "source": {"path": str(path), "sha256": sha256_file(path)},
                "split": {"path": str(split_path), "sha256": sha256_file(split_path)},
                # by content, as config.json's (protocol.external_changes compares it)
                "annotations_sha256": split["annotations_sha256"],  # load_split checked it
                "file": {
                    "tracks": len(exchange.track_ids),
                    "labels": len(exchange.label_names),
                    "dim": None
                    if exchange.track_embeddings is None
                    else int(exchange.track_embeddings.shape[1]),
                },
                "ignored": ignored,
                "allow_missing": allow_missing,
                "missing": missing,
            },
        )
        write_json(out / protocol.RESULTS_FILE, records)
    if any(ignored.values()):
        notes.append(
            f"{ignored['tracks']} track(s) and {ignored['labels']} label(s) of the file are not in "
            "the split "
            "(e.g. dropped tracks): ignored."
        )
    return records, notes + [
        f"wrote {out / protocol.RESULTS_FILE} ({len(records)} records) and "
        f"{out / protocol.EXTERNAL_FILE}"
    ]


def check_name(name: str) -> str:
    """The model's name in records and folder names: short, plain characters, not one of our model
    kinds."""
    if not NAME_PATTERN.match(name) or name in config.MODELS:
        raise ExternalError(
            f"--name {name!r} (default: the file's name): use 1-64 letters, digits, '.', '_', '+' "
            f"or '-' (starting with a letter or digit), other than our model kinds "
            f"{', '.join(config.MODELS)}."
        )
    return name


# ---- Our run in the exchange format --------------------------------------------------------------
def export_embeddings(
    run_dir,
    path,
    force: bool = False,
    batch_size: int = protocol.DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> dict:
    """Write a run's track embeddings (every track of groups A, B, C with a mel: the cached means of
    segment embeddings, protocol.embed) and label embeddings (the split's labels) as an exchange
    file. Refuses to overwrite a file. Returns a summary {"path", "tracks", "labels", "dim",
    "left_out"}."""
    path = Path(path).expanduser().resolve()
    if path.suffix != ".npz" or path.exists():
        raise ExternalError(
            f"--export-embeddings {path}: "
            + (
                "exists; remove it or choose another path (an export never overwrites a file)."
                if path.suffix == ".npz"
                else "must end with .npz."
            )
        )
    run = protocol.load_run(run_dir)
    if not run.is_embedding:
        raise ExternalError(
            f"run {run.run_dir} is a classification model: it has no label embeddings to export."
        )
    with MelStore(run.mels_path, in_memory=False) as store:
        stored = set(store.track_ids)
        wanted = [t for g in splits.GROUPS for t in run.split[g]]
        # the run's evaluation leaves the others out too
        tracks = [t for t in wanted if t in stored]
        track_emb, label_emb, _ = protocol.embed(run, store, tracks, force, batch_size, progress)
    write_exchange(path, tracks, run.labels, track_emb, label_emb)
    return {
        "path": str(path),
        "tracks": len(tracks),
        "labels": len(run.labels),
        "dim": int(track_emb.shape[1]),
        "left_out": len(wanted) - len(tracks),
    }
