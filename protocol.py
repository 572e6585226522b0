"""The paper's evaluation protocol (Sec. 4.3, 5.3; docs/original.md "Evaluation"), as a library:
evaluate.py, aggregate.py, case_studies.py, external.py and reproduce.py sit on top of it; it
imports nothing above it.

In the order of this file:
  1. the run: config.json -> dataset, split, side information, model (checked against what training
     recorded);
  2. track embedding = mean of the audio module's outputs over the track's non-overlapping 130-frame
     segments
     (embeddings.track_embedding; embeddings.track_embeddings is the batched path that runs);
  3. label embedding = the semantic module's output for the label's side vector;
  4. score = cosine(track, label) (embeddings.cosine_scores); the classification model (Sec. 4.2)
     averages its
     sigmoid outputs instead and knows only the seen labels (retrieval B-X only);
  5. every test setup (Tables 2-4) -> metrics -> results.json (+ label_map.png, scores/*.npz);
  6. several runs: each run's results.json when it is current, else a fresh evaluation
     (gather_runs).
Beyond the paper, the (X+Y) annotation setups also get parts "seen" / "unseen" (metrics over those
label columns) and "harmonic" (their harmonic mean): the generalized zero-shot view of Xian et al.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

import config
import dataset_dir as ds
import embeddings
import metrics
import splits
from fileio import atomic_write, sha256_file, write_json
from preprocess.frontend import N_MELS, SEGMENT_FRAMES
from preprocess.melstore import MelStore

RESULTS_FILE = "results.json"
SCORES_DIR = "scores"
LABEL_MAP_FILE = "label_map.png"
# evaluate.py --external writes it beside results.json (no model.keras)
EXTERNAL_FILE = "external.json"
DEFAULT_BATCH_SIZE = 256  # segments per predict call (130 x 128 float32 each: 256 -> 17 MB)
# what identifies a record
KEY_FIELDS = ("dataset", "model", "side_info", "train", "test", "task", "part")
# the label map writes label names only when there are at most this many labels
LABEL_MAP_NAMES_MAX = 60


class EvaluationError(ValueError):
    """Bad input to the evaluation (run directory, changed data, swapped model); the message says
    what to do."""


# ---- 1. The run ----------------------------------------------------------------------------------
@dataclass
class Run:
    """A run directory and the data it was trained on, as load_run read and checked them."""

    run_dir: Path
    meta: dict  # config.json
    split: dict
    annotations: pd.DataFrame  # track_id,label
    side_info: ds.SideInfo | None  # None: a classification run trained without side information
    # what results computed now come from (stale_results): sha256 of model.keras and config.json,
    # content digests of the data, the mel store's fingerprint
    provenance: dict
    finished: bool  # train_summary.json exists: training has ended

    model_sha256 = property(lambda self: self.provenance["model_sha256"])

    # "embedding" | "classification"
    model_kind = property(lambda self: self.meta["config"]["model"])
    is_embedding = property(lambda self: self.model_kind == "embedding")
    train_setup = property(lambda self: self.meta["config"]["train_setup"])
    dataset_dir = property(lambda self: Path(self.meta["dataset_dir"]))
    dataset = property(lambda self: str(self.meta.get("dataset") or self.dataset_dir.name))
    mels_path = property(lambda self: Path(self.meta["mels_path"]))
    side_info_path = property(
        lambda self: self.meta["side_info_path"] and Path(self.meta["side_info_path"])
    )
    side_info_kind = property(
        lambda self: str(
            self.meta["config"].get("side_info")
            or (self.side_info_path.stem if self.side_info_path else "none")
        )
    )
    seen = property(lambda self: list(self.split["seen"]))
    unseen = property(lambda self: list(self.split["unseen"]))
    labels = property(lambda self: self.seen + self.unseen)  # rows of the label embeddings
    # the classification model's columns
    seen_labels = property(lambda self: list(self.meta["seen_labels"]))

    @cached_property
    def model(self):
        """model.keras, checked against config.json (TensorFlow is imported here, on first use
        only)."""
        return _load_model(self)

    def predict(self, segments: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """(b, 130, 128) segments -> (b, d): the audio module's embeddings (classification: sigmoid
        outputs)."""
        import models

        model = models.get_audio_module(self.model) if self.is_embedding else self.model
        return model.predict(segments, batch_size=batch_size, verbose=0)

    def semantic(self, vectors: np.ndarray) -> np.ndarray:
        """(m, side_dim) side vectors -> (m, 100) label embeddings: the semantic module (paper Sec.
        4.1)."""
        import models

        return np.asarray(
            models.get_semantic_module(self.model).predict(
                np.asarray(vectors, dtype=np.float32), batch_size=1024, verbose=0
            )
        )


_CONFIG_FIELDS = {
    "config": dict,
    "config.model": list(config.MODELS),
    "config.train_setup": list(splits.TRAIN_SETUPS),
    "dataset_dir": str,
    "split_path": str,
    "mels_path": str,
    "side_info_path": (str, type(None)),
    # a type, or a list of the allowed values
    "seen_labels": list,
    "checksums": dict,
    "train": dict,
}


def read_json_object(path: Path) -> dict:
    """The JSON object in the file `path` (train_summary.json, external.json); one EvaluationError
    naming the file otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationError(
            f"{path} is not valid JSON ({exc}); restore it or rewrite it."
        ) from None
    if not isinstance(value, dict):
        raise EvaluationError(f"{path} is not a JSON object; restore it or rewrite it.")
    return value


def read_config(run_dir: Path) -> dict:
    """config.json of a run directory, with the fields evaluation reads; one EvaluationError naming
    what is wrong."""
    path = run_dir / config.CONFIG_FILE
    if not run_dir.is_dir():
        raise EvaluationError(
            f"run directory {run_dir} {'is a file' if run_dir.exists() else 'does not exist'}; "
            "pass a directory written by train.py."
        )
    if not path.is_file():
        raise EvaluationError(
            f"{run_dir} has no {config.CONFIG_FILE}: not a training run directory "
            "(pass a directory written by train.py)."
        )
    try:  # not read_json_object: a non-object is reported by the first field it lacks
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationError(
            f"{path} is not valid JSON ({exc}); restore it or re-train the run."
        ) from None
    for key, expected in _CONFIG_FIELDS.items():
        value = meta
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not (value in expected if isinstance(expected, list) else isinstance(value, expected)):
            raise EvaluationError(
                f"{path} is damaged: {key!r} is {value!r}; restore it or re-train the run."
            )
    if meta["config"]["model"] == "embedding" and not meta["side_info_path"]:
        raise EvaluationError(
            f"{path} is damaged: an embedding run without side_info_path; restore it or re-train."
        )
    return meta


def changes_since_training(run_dir: Path, meta: dict, provenance: dict) -> list[str]:
    """What differs from training, given the run's provenance now (load_run): data whose content
    differs from config.json's checksums (dataset_dir.same_content), a mel store with other
    statistics, and (once the run has finished) a model.keras or config.json other than those
    train_summary.json records."""
    problems = []
    checksums = meta["checksums"]
    summary = run_dir / config.SUMMARY_FILE
    files = {
        "annotations": ds.annotations_path(meta["dataset_dir"]),
        "split": meta["split_path"],
        "side_info": meta["side_info_path"],
    }
    for name, path in ((name, Path(path)) for name, path in files.items() if path):
        if not path.is_file():
            problems.append(f"{name} file {path} does not exist")
        elif not ds.same_content(checksums.get(name), path, provenance[f"{name}_sha256"]):
            problems.append(
                f"{name} file {path} changed since training (its content differs from config.json)"
            )
    try:
        recorded = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
        recorded = {key: recorded.get(key) for key in ("model_sha256", "config_sha256")}
    except (ValueError, UnicodeDecodeError, AttributeError):
        recorded = {}
        problems.append(f"{summary} is damaged")
    if recorded.get("model_sha256") not in (None, provenance["model_sha256"]):
        problems.append(
            f"{config.MODEL_FILE} is not the model this run trained (model_sha256 of {summary})"
        )
    elif recorded.get("config_sha256") not in (None, provenance["config_sha256"]):
        problems.append(
            f"{config.MODEL_FILE} and {summary.name} belong to another {config.CONFIG_FILE} "
            f"(config_sha256 of {summary}): copied from another run, or {config.CONFIG_FILE} "
            "edited after training"
        )
    found = provenance["mels"]
    recorded = checksums.get("mels") or {}
    return problems + [
        f"mel store {meta['mels_path']}: {key} is {found[key]}, config.json recorded "
        f"{recorded[key]} (store rebuilt)"
        for key in ("mean", "std", "n_tracks")
        if key in recorded and not math.isclose(float(recorded[key]), found[key], rel_tol=1e-6)
    ]


def load_run(run_dir) -> Run:
    """A run directory (config.json, model.keras) and its data, which must be what the run was
    trained on (changes_since_training), with a model made for this config.json (model_stamp):
    scores on other data or from another run's model would be silently wrong."""
    run_dir = Path(run_dir).expanduser().resolve()
    meta = read_config(run_dir)
    model_path = run_dir / config.MODEL_FILE
    if not model_path.is_file():
        raise EvaluationError(
            f"{run_dir} has no {config.MODEL_FILE}: training has not saved a model yet "
            f"(let it finish, or resume it with train.py --run-dir {run_dir})."
        )
    stamp = model_stamp(model_path)
    annotations = ds.read_annotations(ds.annotations_path(meta["dataset_dir"]))
    side_info = ds.read_side_info(meta["side_info_path"]) if meta["side_info_path"] else None
    split_path = Path(meta["split_path"])
    # AudioError naming it when it is missing or damaged
    with MelStore(Path(meta["mels_path"]), in_memory=False) as store:
        mels = embeddings.store_fingerprint(store, meta["mels_path"])
    provenance = {
        "model_sha256": sha256_file(model_path),
        "config_sha256": sha256_file(run_dir / config.CONFIG_FILE),
        "annotations_sha256": splits.annotations_file_sha256(
            ds.annotations_path(meta["dataset_dir"])
        ),
        "split_sha256": sha256_file(split_path) if split_path.is_file() else None,
        "side_info_sha256": side_info and ds.side_info_sha256(side_info),
        "mels": mels,
    }
    problems = changes_since_training(run_dir, meta, provenance)
    if stamp.get("config_sha256") not in (None, provenance["config_sha256"]):
        problems.append(
            f"{config.MODEL_FILE} was trained for another {config.CONFIG_FILE} (its "
            f"{config.MODEL_STAMP}): copied from another run, or {config.CONFIG_FILE} edited"
        )
    if problems:
        raise EvaluationError(
            f"run {run_dir} no longer matches its data: "
            + "; ".join(problems)
            + ". Restore what the run was trained on, or re-train."
        )
    # the split must be made from these annotations
    split = splits.load_split(split_path, ds.annotations_path(meta["dataset_dir"]))
    if meta["config"]["model"] == "classification" and sorted(meta["seen_labels"]) != sorted(
        split["seen"]
    ):
        raise EvaluationError(
            f"{run_dir / config.CONFIG_FILE}: seen_labels differ from the split's seen labels."
        )
    return Run(
        run_dir,
        meta,
        split,
        annotations,
        side_info,
        provenance,
        finished=(run_dir / config.SUMMARY_FILE).is_file(),
    )


def model_stamp(path: Path) -> dict:
    """The stamp train.py adds to a finished run's model.keras ({"config_sha256"}; {} for a model
    saved during training or before stamps), after checking the zip archive whole: a torn or
    damaged file is an EvaluationError saying so (Keras would call it "not found")."""
    try:
        with zipfile.ZipFile(path) as archive:
            if (member := archive.testzip()) is not None:
                raise zipfile.BadZipFile(f"member {member} fails its CRC check")
            stamp = (
                json.loads(archive.read(config.MODEL_STAMP))
                if config.MODEL_STAMP in archive.namelist()
                else {}
            )
    except Exception as exc:  # zipfile raises many types for a truncated or damaged archive
        raise EvaluationError(
            f"{path} is damaged or unreadable ({exc}): not a complete .keras archive (a torn copy, "
            "or a crash while it was written). Restore it from a copy of the run; an unfinished "
            f"run rewrites it when resumed (train.py --run-dir {path.parent}); else re-train."
        ) from None
    return stamp if isinstance(stamp, dict) else {}


def _load_model(run: Run):
    """model.keras, which must have the kind, input shapes and output size of config.json (a model
    from another run, or another side-information dimension, would give a traceback or mislabelled
    results)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import models  # registers the project's layers and losses with Keras

    path = run.run_dir / config.MODEL_FILE
    try:
        model = keras.saving.load_model(path, compile=False)
        kind = models.model_kind(model)
    except Exception as exc:  # Keras raises many types for a corrupt or foreign file
        raise EvaluationError(
            f"cannot load {path}: {exc}. Re-train the run or restore the file."
        ) from None
    want = {"kind": run.model_kind, "segments": (None, SEGMENT_FRAMES, N_MELS)}
    found = {"kind": kind, "segments": tuple(models.get_audio_module(model).input_shape)}
    if kind == run.model_kind == "embedding":
        want["side information"] = (None, run.meta["train"].get("side_dim"))
        found["side information"] = tuple(models.get_semantic_module(model).input_shape)
    elif kind == run.model_kind:
        want["labels"] = (None, run.meta["train"].get("n_labels"))
        found["labels"] = tuple(model.output_shape)
    if wrong := [
        f"{key} {found[key]} (config.json: {want[key]})" for key in want if found[key] != want[key]
    ]:
        raise EvaluationError(
            f"run {run.run_dir}: {path.name} does not fit the run's config.json: "
            f"{'; '.join(wrong)}. It comes from another run; restore it or re-train."
        )
    return model


# ---- 2.-4. Track and label embeddings, scores ----------------------------------------------------
def label_embeddings(run: Run, labels) -> np.ndarray:
    """(len(labels), 100): the semantic module of each label's side vector."""
    return run.semantic(ds.side_vectors(run.side_info, list(labels), str(run.side_info_path)))


def embed(
    run: Run,
    store,
    track_ids,
    force: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Track embeddings of `track_ids`, label embeddings of run.labels (None: classification model)
    and the cache info: from embeddings.h5 when it was made from this model and data, so after
    _load_model's checks. A read-only run directory gets no cache written."""

    def compute_tracks(ids: list[str]) -> np.ndarray:
        return embeddings.track_embeddings(
            lambda segments: run.predict(segments, batch_size),
            store,
            [store.index(t) for t in ids],
            8 * batch_size,
            progress,
        )

    made_from = {
        "model_sha256": run.model_sha256,
        "side_info_sha256": run.provenance["side_info_sha256"],
        # as _load_model checks
        "shapes": [run.meta["train"].get(k) for k in ("side_dim", "n_labels")],
        "store": run.provenance["mels"],
    }
    return embeddings.cached_embeddings(
        run.run_dir / embeddings.CACHE_FILE,
        made_from,
        track_ids,
        compute_tracks,
        run.labels if run.is_embedding else None,
        lambda: label_embeddings(run, run.labels),
        force=force,
        write=os.access(run.run_dir, os.W_OK),  # a read-only (archived, shared) run: no cache
    )


def setup_scores(run: Run, tracks: np.ndarray, label_emb: np.ndarray | None, labels) -> np.ndarray:
    """(n, len(labels)) scores: cosine(track, label), label_emb rows in run.labels order; for the
    classification model, the averaged sigmoid output of each label's column (config.json
    seen_labels order)."""
    # the rows of label_emb, the classifier's columns
    names = run.labels if run.is_embedding else run.seen_labels
    columns = [names.index(lab) for lab in labels]
    return (
        embeddings.cosine_scores(tracks, label_emb[columns])
        if run.is_embedding
        else np.float32(tracks[:, columns])
    )


# ---- 5. Test setups, metrics, results ------------------------------------------------------------
def setup_plan(model_kind: str, train_setup: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(test setup, task) pairs of a run, and notes on the setups left out: Table 4 (retrieval B-X)
    needs training on A-X (else B's tracks were training data); the classification model has only
    the seen labels (X)."""
    table4 = [(splits.TABLE4_TEST, "retrieval")] if train_setup == "A-X" else []
    notes = (
        []
        if table4
        else [
            f"retrieval {splits.TABLE4_TEST} (Table 4) is evaluated for runs trained on A-X "
            f"only (this run trained on {train_setup}, whose training tracks include B)."
        ]
    )
    if model_kind == "classification":
        return table4, notes + [
            "the classification model scores only its seen labels (X): the zero-shot setups "
            f"({', '.join(splits.ANNOTATION_TESTS + splits.RETRIEVAL_TESTS)}) do not apply."
        ]
    return [(t, "annotation") for t in splits.ANNOTATION_TESTS] + [
        (t, "retrieval") for t in splits.RETRIEVAL_TESTS
    ] + table4, notes


def setup_members(split: dict, test: str, available=None) -> tuple[list[str], list[str], int]:
    """Tracks and labels of a test setup (splits.setup_tracks_labels), the tracks restricted to
    `available` (those with a mel). Returns (track ids, labels, number of the setup's tracks left
    out)."""
    tracks, labels = splits.setup_tracks_labels(split, test)
    kept = [str(t) for t in tracks if available is None or str(t) in available]
    return kept, list(labels), len(tracks) - len(kept)


def make_record(run: Run, test: str, task: str, part: str, values: dict) -> dict:
    """A results.json record: the setup's key fields, then the metrics (None: an undefined mean)."""

    def clean(v):
        return (
            int(v) if isinstance(v, (int, np.integer)) else float(v) if math.isfinite(v) else None
        )

    return {
        "dataset": run.dataset,
        "model": run.model_kind,
        # null: the classification model reads no side information
        "side_info": None if run.model_kind == "classification" else run.side_info_kind,
        "train": run.train_setup,
        "test": test,
        "task": task,
        "part": part,
        **{key: clean(value) for key, value in values.items()},
    }


def setup_values(
    test: str, task: str, scores: np.ndarray, truth: np.ndarray, seen_mask: np.ndarray
) -> dict:
    """{part: metrics} of one test setup and task: part "all" (the paper's numbers), plus for the
    (X+Y) annotation setups the GZSL parts of gzsl_values. seen_mask: (m,) which label columns are
    seen labels."""
    metric = metrics.annotation_metrics if task == "annotation" else metrics.retrieval_metrics
    parts = {"all": metric(scores, truth)}
    if task == "annotation" and test.endswith("-(X+Y)"):  # the GZSL view
        parts.update(gzsl_values(scores, truth, seen_mask))
    return parts


def gzsl_values(scores: np.ndarray, labels: np.ndarray, seen_mask: np.ndarray) -> dict[str, dict]:
    """Generalized zero-shot view of an (X+Y) annotation setup: annotation metrics over the
    seen-label columns ("seen"), over the unseen-label columns ("unseen"), and per metric their
    harmonic mean ("harmonic", whose "evaluated" counts the tracks evaluated in both parts)."""
    seen = np.asarray(seen_mask, dtype=bool)
    parts = {
        "seen": metrics.annotation_metrics(scores[:, seen], labels[:, seen]),
        "unseen": metrics.annotation_metrics(scores[:, ~seen], labels[:, ~seen]),
    }
    both = metrics.defined_rows(labels[:, seen]) & metrics.defined_rows(labels[:, ~seen])
    parts["harmonic"] = {
        key: metrics.harmonic_mean(value, parts["unseen"][key])
        for key, value in parts["seen"].items()
        if key not in ("evaluated", "skipped")
    }
    parts["harmonic"].update(evaluated=int(both.sum()), skipped=int((~both).sum()))
    return parts


def save_scores(run_dir: Path, test: str, scores, labels, track_ids, label_names) -> Path:
    """scores/<setup>.npz ('(B+C)-(X+Y)' -> BC-XY.npz) of plain arrays: np.load(path,
    allow_pickle=False) reads it."""
    name = test.replace("(", "").replace(")", "").replace("+", "")
    return atomic_write(
        Path(run_dir) / SCORES_DIR / f"{name}.npz",
        lambda tmp: np.savez_compressed(
            tmp,
            scores=np.float32(scores),
            labels=np.uint8(labels),
            track_ids=np.asarray(track_ids, dtype=str),
            label_names=np.asarray(label_names, dtype=str),
            test=np.asarray(test, dtype=str),
        ),
    )


def evaluate_run(
    run_dir,
    save: bool = False,
    force: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    label_map: bool = True,
) -> tuple[list[dict], list[str]]:
    """Evaluate one run (a directory, or the Run load_run made of it) on every test setup that
    applies; write results.json (and scores/*.npz with `save`) unless the run directory is read-only
    (an archived or shared run: then nothing is written into it). Returns (records, notes): per
    (test, task) part "all" (the paper's numbers), plus the (X+Y) GZSL parts; every record says
    whether training had finished and what it was computed from (Run.provenance)."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    writable = os.access(run.run_dir, os.W_OK)
    if save and not writable:
        raise EvaluationError(
            f"run directory {run.run_dir} is read-only: --save-scores cannot write {SCORES_DIR}/ "
            "into it. Evaluate a writable copy of the run."
        )
    plan, notes = setup_plan(run.model_kind, run.train_setup)
    if not plan:
        raise EvaluationError(
            f"run {run.run_dir}: no test setup applies to a classification model trained on "
            f"{run.train_setup} (its setup, {splits.TABLE4_TEST} of Table 4, needs A-X)."
        )
    with MelStore(run.mels_path, in_memory=False) as store:
        members = {test: setup_members(run.split, test, set(store.track_ids)) for test, _ in plan}
        needed = list(dict.fromkeys(t for tracks, _, _ in members.values() for t in tracks))
        if not needed:
            raise EvaluationError(
                f"no test track has a mel spectrogram in {run.mels_path}; rebuild the store."
            )
        track_emb, label_emb, info = embed(run, store, needed, force, batch_size, progress)
    if not run.finished:
        notes.append(
            f"training has not finished (no {config.SUMMARY_FILE}: still running, or interrupted):"
            f" these are the results of the {config.MODEL_FILE} saved so far (records: "
            '"finished": false).'
        )
    if left_out := ", ".join(f"{test}: {n}" for test, (_, _, n) in members.items() if n):
        notes.append(
            f"tracks without a mel spectrogram in {run.mels_path} (failed decodes?) are left out: "
            f"{left_out}"
        )
    notes.append(
        f"track embeddings: {info['cached_tracks']} from {embeddings.CACHE_FILE}, "
        f"{info['computed_tracks']}"
        f" computed{' (the cache did not match this run: replaced)' if info['rejected'] else ''}."
    )
    row = {t: i for i, t in enumerate(needed)}
    identity = {"finished": run.finished, "provenance": run.provenance}
    records = []
    for test, (tracks, labels, _) in members.items():
        scores = setup_scores(run, track_emb[[row[t] for t in tracks]], label_emb, labels)  # (n, m)
        truth = ds.label_matrix(run.annotations, tracks, labels)  # (n, m) 0/1
        if save:
            notes.append(f"wrote {save_scores(run.run_dir, test, scores, truth, tracks, labels)}")
        for task in [task for t, task in plan if t == test]:
            records += [
                {**make_record(run, test, task, part, values), **identity}
                for part, values in setup_values(
                    test, task, scores, truth, np.isin(labels, run.seen)
                ).items()
            ]
    if not writable:
        return records, notes + [
            f"run directory {run.run_dir} is read-only (an archived or shared run): "
            f"{RESULTS_FILE}, {embeddings.CACHE_FILE} and {LABEL_MAP_FILE} are not written; the "
            "results are only printed."
        ]
    if label_map and run.is_embedding:
        notes.append(f"wrote {write_label_map(run, label_emb, run.run_dir / LABEL_MAP_FILE)}")
    write_json(run.run_dir / RESULTS_FILE, records)
    return records, notes + [f"wrote {run.run_dir / RESULTS_FILE} ({len(records)} records)"]


def write_label_map(run, label_emb: np.ndarray, path: Path) -> Path:
    """PNG of the label embeddings (rows in run.labels order: seen, then unseen) on their first two
    principal components. Rows are L2-normalized first: scores are cosines, so only directions
    matter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = embeddings.unit_rows(label_emb)  # (m, 100)
    centered = unit - unit.mean(axis=0)
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    coords = np.zeros((len(unit), 2))
    # (m, 2); fewer components for tiny label sets
    coords[:, : min(2, len(vt))] = centered @ vt[:2].T
    explained = np.zeros(2)
    explained[: min(2, len(singular))] = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
    n_seen = len(run.seen)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.scatter(coords[:n_seen, 0], coords[:n_seen, 1], s=14, c="tab:blue", label=f"seen ({n_seen})")
    ax.scatter(
        coords[n_seen:, 0],
        coords[n_seen:, 1],
        s=22,
        c="tab:orange",
        marker="^",
        label=f"unseen ({len(unit) - n_seen})",
    )
    if len(unit) <= LABEL_MAP_NAMES_MAX:
        for (x, y), name in zip(coords, run.labels, strict=True):
            ax.annotate(name, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set(
        xlabel=f"PC1 ({explained[0]:.0%} of variance)",
        ylabel=f"PC2 ({explained[1]:.0%} of variance)",
        title=f"Label embeddings (unit length, PCA): {run.dataset}, {run.side_info_kind}, "
        f"trained on {run.train_setup}",
    )
    ax.legend(loc="best")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return path


# ---- 6. Several runs -----------------------------------------------------------------------------
def is_external(run_dir) -> bool:
    """An external model's result folder (evaluate.py --external): results.json and external.json,
    no model."""
    run_dir = Path(run_dir)
    return (
        (run_dir / EXTERNAL_FILE).is_file()
        and (run_dir / RESULTS_FILE).is_file()
        and not (run_dir / config.MODEL_FILE).exists()
    )


def read_results(path: Path) -> list[dict]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        records = None
    if isinstance(records, list) and all(
        isinstance(r, dict) and set(KEY_FIELDS) <= set(r) for r in records
    ):
        return records
    raise EvaluationError(f"{path} is not a list of result records; rerun with --force.")


def stale_results(run: Run, records: list[dict] | None) -> str | None:
    """Why `records` (the run's results.json; None: there is none) do not describe the run as it is
    now, or None when every record was computed from this model.keras, config.json and data
    (Run.provenance: sha256 and content digests, not file times) at this stage of training
    ("finished")."""
    if records is None:
        return f"no {RESULTS_FILE} yet"
    if not records or not all(isinstance(r.get("provenance"), dict) for r in records):
        return f"{RESULTS_FILE} does not record what it was computed from (an older version)"
    differ = {
        key
        for r in records
        for key, value in run.provenance.items()
        if r["provenance"].get(key) != value
    }
    differ.update({"finished"} if any(r.get("finished") != run.finished for r in records) else ())
    return (
        f"{RESULTS_FILE} is out of date (its {', '.join(sorted(differ))} differ from the run's now)"
        if differ
        else None
    )


def external_changes(run_dir: Path) -> list[str]:
    """Notes on an external model's result folder whose split or annotations changed since it was
    scored (external.json); it is never re-evaluated here (its embeddings file may be gone)."""
    try:
        meta = json.loads((run_dir / EXTERNAL_FILE).read_text(encoding="utf-8"))
        files = {
            "split": (Path(meta["split"]["path"]), meta["split"]["sha256"]),
            "annotations": (ds.annotations_path(meta["dataset_dir"]), meta["annotations_sha256"]),
        }
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return [f"{run_dir}: {EXTERNAL_FILE} is damaged: whether its data is current is unknown."]
    changed = [
        f"{name} file {path}"
        for name, (path, recorded) in files.items()
        if not path.is_file()
        or not ds.same_content(
            recorded,
            path,
            splits.annotations_file_sha256(path) if name == "annotations" else None,
        )
    ]
    return [
        f"{run_dir}: the {' and '.join(changed)} changed (or went) since this external model was "
        "scored: its results describe the old data; score it again (evaluate.py --external)."
    ] * bool(changed)


def gather_runs(
    run_dirs, force: bool = False, **evaluate_kwargs
) -> tuple[dict[Path, list[dict]], list[str]]:
    """{run directory: its records}: a run's results.json when it describes the run as it is now
    (stale_results: the same model.keras, config.json, data and stage of training, by content) and
    has scores/ if asked for, unless `force`; a fresh evaluation otherwise. An external model's
    result folder (evaluate.py --external: external.json, no model.keras) is never evaluated here;
    a note says when its split or annotations changed since (external_changes)."""
    per_run = {}
    notes = []
    for run_dir in (Path(p).expanduser().resolve() for p in run_dirs):
        results = run_dir / RESULTS_FILE
        if is_external(run_dir):
            per_run[run_dir] = records = read_results(results)
            notes += [
                f"{run_dir}: reusing {RESULTS_FILE} ({len(records)} records; an external model's "
                "results, never re-evaluated)",
                *external_changes(run_dir),
            ]
            continue
        run = load_run(run_dir)
        records = read_results(results) if results.is_file() and not force else None
        why = "--force" if force else stale_results(run, records)
        if why is None and evaluate_kwargs.get("save") and not (run_dir / SCORES_DIR).is_dir():
            why = f"no {SCORES_DIR}/ for --save-scores"
        if why is None:
            per_run[run_dir] = records
            notes.append(
                f"{run_dir}: reusing {RESULTS_FILE} ({len(records)} records, computed from this "
                "model.keras, config.json and data; --force re-evaluates)"
            )
        else:
            per_run[run_dir], run_notes = evaluate_run(run, force=force, **evaluate_kwargs)
            notes += [f"{run_dir}: evaluating: {why}"] + [f"{run_dir}: {n}" for n in run_notes]
    return per_run, notes
