"""Evaluate a trained run on every zero-shot test setup of the paper, print its tables, run its case studies.

    python evaluate.py                                  # the latest run under runs/
    python evaluate.py --run-dir runs/X --save-scores   # + scores/<setup>.npz per test setup
    python evaluate.py --collect runs/A runs/B runs/C   # several runs merged into one set of tables
    python evaluate.py --run-dir runs/X --query guitar --annotate song.mp3 --neighbors lovely

Paper Sec. 4.3 / 5.3 / 6 and ../shared/REFERENCE.md ("Evaluation"):

* track embedding = mean of the audio module's 100-d outputs over the track's non-overlapping 130-frame segments
  (remainder dropped, short tracks tiled); label embedding = semantic-module output for the label's side vector;
  score = cosine(track, label). The classification model (Sec. 4.2, Table 4) averages its sigmoid outputs instead
  and can only score its seen labels, so only the B-X retrieval setup applies to it.
* a run trained on A-X, B-X or (A+B)-X is tested on annotation B-Y, C-Y, (B+C)-Y, B-(X+Y), C-(X+Y), (B+C)-(X+Y)
  (Table 2) and retrieval (B+C)-Y, (A+B+C)-Y (Table 3); a run trained on A-X also on retrieval B-X (Table 4).
* beyond the paper (records with part "seen", "unseen", "harmonic"): for the (X+Y) annotation setups the metrics
  over the seen-label columns only, over the unseen-label columns only, and their harmonic mean (the generalized
  zero-shot view of Xian et al.).

Outputs in the run directory: results.json (list of records, see CONTRACTS), embeddings.h5 (cache, embeddings.py),
label_map.png (2-D PCA of the label embeddings), scores/*.npz with --save-scores. Track embeddings are cached, so
re-scoring a run needs no audio inference (and no TensorFlow when the cache is valid).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import config
import embeddings
import splits
import metrics
from metrics import annotation_metrics, retrieval_metrics
import dataset_dir as ds

__all__ = [
    "annotation_metrics", "retrieval_metrics", "EvaluationError", "Run", "load_run", "setup_plan",
    "setup_members", "track_outputs", "label_embeddings", "setup_scores", "evaluate_run", "collect",
    "gzsl_values", "gzsl_records", "save_scores", "write_label_map", "query", "annotate", "neighbors",
    "glove_vector", "word_vector", "main",
]

RESULTS_FILE = "results.json"
SCORES_DIR = "scores"
LABEL_MAP_FILE = "label_map.png"
FORMATS = ("table", "markdown", "csv", "json")
# Record fields that identify a result (the rest are metric values and counts).
KEY_FIELDS = ("dataset", "model", "side_info", "train", "test", "task", "part")
COUNT_FIELDS = ("evaluated", "skipped")
# (X+Y) annotation setups get the generalized zero-shot view (seen part, unseen part, harmonic mean).
GZSL_TESTS = tuple(t for t in splits.ANNOTATION_TESTS if t.endswith("-(X+Y)"))
# Side-information kinds whose vectors are GloVe word vectors: --query/--neighbors may use any GloVe word.
GLOVE_KINDS = ("glove",)
DEFAULT_TOP = {"query": 5, "annotate": 10, "neighbors": 10}  # paper Tables 5, 6 and 7
LABEL_MAP_ANNOTATE_MAX = 60  # write label names on the map only when there are at most this many labels
GLOVE_CHUNK = 1 << 26  # 64 MB reads when streaming a GloVe file


class EvaluationError(ValueError):
    """Bad input to the evaluation (run directory, changed data, unknown word); the message says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# The run: config.json, model, data, and the checks that the data still matches the training
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything a run directory's config.json points to, loaded and checked."""

    run_dir: Path
    meta: dict  # config.json
    dataset: str
    model_kind: str  # "embedding" | "classification"
    side_info_kind: str
    train_setup: str
    dataset_dir: Path
    split_path: Path
    side_info_path: Path | None  # None: a classification run trained without side information
    mels_path: Path
    split: dict
    annotations: object  # pandas DataFrame track_id,label
    side_info: ds.SideInfo | None
    seen_labels: list[str]  # classification output columns (config.json "seen_labels")
    _model: object = field(default=None, repr=False)

    @property
    def model_path(self) -> Path:
        return self.run_dir / config.MODEL_FILE

    @property
    def seen(self) -> list[str]:
        return list(self.split["seen"])

    @property
    def unseen(self) -> list[str]:
        return list(self.split["unseen"])

    @property
    def is_embedding(self) -> bool:
        return self.model_kind == "embedding"

    def model(self):
        """The Keras model of model.keras (TensorFlow is imported here, on first use only)."""
        if self._model is None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off stderr
            import keras

            import models  # registers the project's serializable layers and losses

            try:
                model = keras.saving.load_model(self.model_path, compile=False)
                kind = models.model_kind(model)
            except Exception as exc:  # Keras raises many types for a corrupt or foreign file
                raise EvaluationError(f"cannot load {self.model_path}: {exc}. Re-train the run (train.py) "
                                      "or restore the file.") from None
            if kind != self.model_kind:
                raise EvaluationError(f"{self.model_path} holds a {kind} model but config.json says "
                                      f"{self.model_kind}; the run directory is inconsistent, re-train it.")
            self._model = model
        return self._model

    def segment_predictor(self):
        """(batch, 130, 128) segments -> (batch, d): the audio module (embedding) or the whole model (sigmoids)."""
        model = self.model()
        if self.is_embedding:
            import models

            model = models.get_audio_module(model)
        return lambda batch: np.asarray(model.predict_on_batch(batch))

    def semantic(self, vectors: np.ndarray) -> np.ndarray:
        """(m, side_dim) side vectors -> (m, 100) label embeddings from the semantic module."""
        if not self.is_embedding:
            raise EvaluationError(f"run {self.run_dir} is a classification model: it has no label embedding "
                                  "space (use a deep embedding run).")
        import models

        module = models.get_semantic_module(self.model())
        return np.asarray(module.predict(np.asarray(vectors, dtype=np.float32), batch_size=1024, verbose=0))

    def label_status(self, word: str) -> str:
        if word in set(self.seen):
            return "seen label"
        if word in set(self.unseen):
            return "unseen label"
        return "outside the label set"


def _require(meta: dict, path: Path, *keys: str):
    value = meta
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise EvaluationError(f"{path} lacks {'.'.join(keys)!r}; it was not written by this project's "
                                  "train.py (re-train the run).")
        value = value[key]
    return value


def check_inputs(meta: dict, config_path: Path) -> list[str]:
    """The files config.json points to, compared with the checksums recorded at training time.

    Returns a list of problems (empty when everything matches): a missing file, or an annotations / split /
    side-information file whose sha256 differs, or a mel store whose mean, std or track count differ.
    """
    from preprocess.store import MelStore

    checksums = _require(meta, config_path, "checksums")
    problems = []
    files = {
        "annotations": ds.annotations_path(_require(meta, config_path, "dataset_dir")),
        "split": Path(_require(meta, config_path, "split_path")),
    }
    if meta.get("side_info_path"):  # None for a classification run trained without side information
        files["side_info"] = Path(meta["side_info_path"])
    for name, path in files.items():
        if not path.is_file():
            problems.append(f"{name} file {path} does not exist")
        elif checksums.get(name) and ds.sha256_file(path) != checksums[name]:
            problems.append(f"{name} file {path} changed since training (sha256 differs from config.json)")
    mels = Path(_require(meta, config_path, "mels_path"))
    recorded = checksums.get("mels", {})
    if not mels.is_file():
        problems.append(f"mel store {mels} does not exist")
    elif recorded:
        with MelStore(mels, in_memory=False) as store:
            found = {"mean": float(store.mean), "std": float(store.std), "n_tracks": len(store)}
        for key, value in found.items():
            if key in recorded and not math.isclose(float(recorded[key]), value, rel_tol=1e-6, abs_tol=1e-9):
                problems.append(f"mel store {mels}: {key} is {value}, config.json recorded {recorded[key]} "
                                "(the store was rebuilt)")
    return problems


def load_run(run_dir, check: bool = True) -> Run:
    """Read a run directory (config.json + model.keras) and the data it was trained on.

    With `check`, the annotations, split, side information and mel store must still match the checksums recorded
    in config.json; otherwise EvaluationError lists every difference (scores on changed data would be silently
    wrong).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    config_path = run_dir / config.CONFIG_FILE
    if not run_dir.is_dir():
        raise EvaluationError(f"run directory {run_dir} does not exist; pass a directory written by train.py.")
    if not config_path.is_file():
        raise EvaluationError(f"{run_dir} has no {config.CONFIG_FILE}: not a training run directory "
                              "(pass a directory written by train.py).")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{config_path} is not valid JSON ({exc}); re-train the run.") from None
    if not (run_dir / config.MODEL_FILE).is_file():
        raise EvaluationError(f"{run_dir} has no {config.MODEL_FILE}: training has not saved a model yet "
                              f"(let it finish, or resume it with train.py --run-dir {run_dir}).")
    train_config = _require(meta, config_path, "config")
    model_kind = _require(meta, config_path, "config", "model")
    if model_kind not in config.MODELS:
        raise EvaluationError(f"{config_path}: unknown model {model_kind!r}; expected one of {config.MODELS}.")
    if check:
        problems = check_inputs(meta, config_path)
        if problems:
            raise EvaluationError(f"run {run_dir} no longer matches its data: " + "; ".join(problems)
                                  + ". Restore the data the run was trained on, or re-train.")
    split_path = Path(_require(meta, config_path, "split_path"))
    try:
        split = splits.load_split(split_path)
    except (ValueError, KeyError, OSError) as exc:
        raise EvaluationError(f"split file {split_path}: {exc}") from None
    try:
        train_setup = config.canonical_setup(_require(meta, config_path, "config", "train_setup"))
    except ValueError as exc:
        raise EvaluationError(f"{config_path}: {exc}") from None
    side_info_path = Path(meta["side_info_path"]) if meta.get("side_info_path") else None
    if model_kind == "embedding" and side_info_path is None:
        raise EvaluationError(f"{config_path}: an embedding run needs side_info_path; re-train the run.")
    side_kind = train_config.get("side_info") or (side_info_path.stem if side_info_path else "none")
    dataset_dir = Path(_require(meta, config_path, "dataset_dir"))
    seen_labels = list(meta.get("seen_labels") or split["seen"])
    if model_kind == "classification" and sorted(seen_labels) != sorted(split["seen"]):
        raise EvaluationError(f"{config_path}: seen_labels differ from the split's seen labels ({split_path}).")
    return Run(
        run_dir=run_dir, meta=meta, dataset=str(meta.get("dataset") or ds.dataset_name(dataset_dir)),
        model_kind=model_kind, side_info_kind=str(side_kind),
        train_setup=train_setup,
        dataset_dir=dataset_dir, split_path=split_path, side_info_path=side_info_path,
        mels_path=Path(_require(meta, config_path, "mels_path")), split=split,
        annotations=ds.read_annotations(ds.annotations_path(dataset_dir)),
        side_info=ds.read_side_info(side_info_path) if side_info_path else None, seen_labels=seen_labels,
    )


# ---------------------------------------------------------------------------------------------------------------
# Test setups
# ---------------------------------------------------------------------------------------------------------------
def setup_plan(model_kind: str, train_setup: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(test setup, task) pairs for a run, and notes on the setups left out.

    Table 4 (retrieval on B-X) is defined for training on A-X only: in B-X and (A+B)-X runs B's tracks were
    training data. The classification model has outputs for the seen labels (X) only, so of all setups it can only
    be tested on B-X.
    """
    notes = []
    table4 = [(splits.TABLE4_TEST, "retrieval")] if train_setup == "A-X" else []
    if train_setup != "A-X":
        notes.append(f"retrieval {splits.TABLE4_TEST} (Table 4) is evaluated for runs trained on A-X only "
                     f"(this run trained on {train_setup}, whose training tracks include B).")
    if model_kind == "classification":
        notes.append("the classification model scores only its seen labels (X): the zero-shot setups "
                     f"({', '.join(splits.ANNOTATION_TESTS)}; retrieval {', '.join(splits.RETRIEVAL_TESTS)}) "
                     "do not apply to it.")
        return table4, notes
    plan = [(t, "annotation") for t in splits.ANNOTATION_TESTS] + [(t, "retrieval") for t in splits.RETRIEVAL_TESTS]
    return plan + table4, notes


def setup_members(split: dict, test: str, available=None) -> tuple[list[str], list[str], int]:
    """Tracks and labels of a test setup (whole groups, splits.setup_tracks_labels), restricted to tracks with audio.

    Returns (track_ids, labels, number of the setup's tracks left out because `available` lacks them).
    """
    tracks, labels = splits.setup_tracks_labels(split, test)
    tracks = [str(t) for t in tracks]
    if available is None:
        return tracks, list(labels), 0
    kept = [t for t in tracks if t in available]
    return kept, list(labels), len(tracks) - len(kept)


# ---------------------------------------------------------------------------------------------------------------
# Model outputs (cached) and scores
# ---------------------------------------------------------------------------------------------------------------
def _fingerprint(run: Run) -> dict:
    from preprocess.store import SEGMENT_FRAMES

    return {
        "model": run.model_kind,
        "model_sha256": ds.sha256_file(run.model_path),
        "side_info_sha256": ds.sha256_file(run.side_info_path) if run.is_embedding else None,
        "store": embeddings.store_fingerprint(run.mels_path),
        "segment_frames": int(SEGMENT_FRAMES),
    }


def track_outputs(run: Run, track_ids, force: bool = False, batch_size: int = embeddings.DEFAULT_BATCH_SIZE,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Mean segment outputs of the given tracks, plus the embeddings of every side-information label.

    Returns ((n, d) track outputs in the order of `track_ids`, (len(run.side_info.labels), 100) label embeddings
    (None for the classification model), cache info). Only tracks missing from `<run_dir>/embeddings.h5` are
    embedded; a cache made with another model.keras, side information or store is recomputed.
    """
    from preprocess.store import SEGMENT_FRAMES, MelStore

    def compute_tracks(ids: list[str]) -> np.ndarray:
        predict = run.segment_predictor()
        with MelStore(run.mels_path) as store:
            index = np.asarray([store.index(t) for t in ids], dtype=np.int64)
            order = np.argsort(index, kind="stable")  # read the store in file order
            means = embeddings.batched_segment_means(
                predict, embeddings.store_segments(store, index[order], SEGMENT_FRAMES), len(ids),
                batch_size=batch_size, progress=progress, desc=f"embedding {len(ids)} tracks")
        out = np.empty_like(means)
        out[order] = means
        return out

    label_names = run.side_info.labels if run.is_embedding else None
    return embeddings.cached_outputs(
        run.run_dir / embeddings.CACHE_FILE, _fingerprint(run), track_ids, compute_tracks,
        label_names=label_names, compute_labels=(lambda: run.semantic(run.side_info.vectors)) if run.is_embedding
        else None, force=force)


def label_embeddings(run: Run, all_label_embeddings: np.ndarray, labels) -> np.ndarray:
    """Rows of the cached side-information label embeddings for `labels` (in that order)."""
    position = {lab: i for i, lab in enumerate(run.side_info.labels)}
    missing = [lab for lab in labels if lab not in position]
    if missing:
        raise EvaluationError(f"{len(missing)} label(s) have no vector in {run.side_info_path}: "
                              f"{', '.join(missing[:10])}")
    return all_label_embeddings[[position[lab] for lab in labels]]


def setup_scores(run: Run, outputs: np.ndarray, all_label_embeddings: np.ndarray | None, labels) -> np.ndarray:
    """(n_tracks, len(labels)) float32 scores: cosine(track, label) for the embedding model, the averaged sigmoid
    output of each label's column (config.json seen_labels order) for the classification model."""
    labels = list(labels)
    if run.is_embedding:
        return embeddings.cosine_scores(outputs, label_embeddings(run, all_label_embeddings, labels))
    column = {lab: i for i, lab in enumerate(run.seen_labels)}
    outside = [lab for lab in labels if lab not in column]
    if outside:
        raise EvaluationError(f"the classification model has no output for {len(outside)} label(s) "
                              f"({', '.join(outside[:10])}): it scores only its seen labels.")
    return np.asarray(outputs[:, [column[lab] for lab in labels]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------
def _clean(value):
    """JSON-safe metric value: float, int for counts, None for an undefined (NaN) mean."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def make_record(run: Run, test: str, task: str, part: str, values: dict) -> dict:
    record = {"dataset": run.dataset, "model": run.model_kind, "side_info": run.side_info_kind,
              "train": run.train_setup, "test": test, "task": task, "part": part}
    record.update({k: _clean(v) for k, v in values.items()})
    return record


def gzsl_values(scores: np.ndarray, labels: np.ndarray, seen_mask: np.ndarray) -> dict[str, dict]:
    """Generalized zero-shot view of an (X+Y) annotation setup (beyond the paper).

    "seen": annotation metrics over the seen-label columns only; "unseen": over the unseen-label columns only;
    "harmonic": per metric, the harmonic mean 2*s*u/(s+u) of the two, with "evaluated" = tracks evaluated in both
    parts and "skipped" = the other tracks.
    """
    seen_mask = np.asarray(seen_mask, dtype=bool)
    parts = {"seen": annotation_metrics(scores[:, seen_mask], labels[:, seen_mask]),
             "unseen": annotation_metrics(scores[:, ~seen_mask], labels[:, ~seen_mask])}
    both = metrics.defined_rows(labels[:, seen_mask]) & metrics.defined_rows(labels[:, ~seen_mask])
    harmonic = {k: metrics.harmonic_mean(parts["seen"][k], parts["unseen"][k])
                for k in parts["seen"] if k not in COUNT_FIELDS}
    harmonic.update({"evaluated": int(both.sum()), "skipped": int(len(both) - both.sum())})
    parts["harmonic"] = harmonic
    return parts


def gzsl_records(run: Run, test: str, scores: np.ndarray, labels: np.ndarray, label_names) -> list[dict]:
    seen = set(run.seen)
    mask = np.asarray([lab in seen for lab in label_names], dtype=bool)
    return [make_record(run, test, "annotation", part, values)
            for part, values in gzsl_values(scores, labels, mask).items()]


def _slug(test: str) -> str:
    """File-name form of a setup: '(B+C)-(X+Y)' -> 'BC-XY'."""
    return test.replace("(", "").replace(")", "").replace("+", "")


def save_scores(run_dir: Path, test: str, scores, labels, track_ids, label_names) -> Path:
    """scores/<setup>.npz with plain (non-object) arrays: np.load(path, allow_pickle=False) reads it back."""
    path = Path(run_dir) / SCORES_DIR / f"{_slug(test)}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, scores=np.asarray(scores, dtype=np.float32), labels=np.asarray(labels, dtype=np.uint8),
        track_ids=np.asarray([str(t) for t in track_ids], dtype=str),
        label_names=np.asarray([str(lab) for lab in label_names], dtype=str), test=np.asarray(test, dtype=str))
    return path


def write_label_map(run: Run, all_label_embeddings: np.ndarray, path: Path) -> Path:
    """PNG of the seen and unseen label embeddings projected on their first two principal components.

    Rows are L2-normalized first (scores are cosines, so only directions matter); PCA via numpy SVD of the
    centered matrix.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = run.seen + run.unseen
    vectors = embeddings.l2_normalize(label_embeddings(run, all_label_embeddings, names))
    centered = vectors - vectors.mean(axis=0)
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    coords = np.zeros((len(names), 2))
    coords[:, :min(2, len(vt))] = centered @ vt[:2].T  # (n_labels, 2); fewer components for tiny label sets
    explained = np.zeros(2)
    explained[:min(2, len(singular))] = singular[:2] ** 2 / max(float((singular ** 2).sum()), 1e-12)
    n_seen = len(run.seen)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.scatter(coords[:n_seen, 0], coords[:n_seen, 1], s=14, c="tab:blue", label=f"seen ({n_seen})")
    ax.scatter(coords[n_seen:, 0], coords[n_seen:, 1], s=22, c="tab:orange", marker="^",
               label=f"unseen ({len(names) - n_seen})")
    if len(names) <= LABEL_MAP_ANNOTATE_MAX:
        for (x, y), name in zip(coords, names):
            ax.annotate(name, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.set_title(f"Label embeddings (unit length, PCA): {run.dataset}, {run.side_info_kind}, "
                 f"trained on {run.train_setup}")
    ax.legend(loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _store_track_ids(run: Run) -> set[str]:
    from preprocess.store import MelStore

    with MelStore(run.mels_path, in_memory=False) as store:
        return set(map(str, store.track_ids))


def evaluate_run(run_dir, save: bool = False, force: bool = False, batch_size: int = embeddings.DEFAULT_BATCH_SIZE,
                 progress: bool = True, label_map: bool = True) -> tuple[list[dict], list[str]]:
    """Evaluate one run on every applicable setup and write <run_dir>/results.json.

    Returns (records, notes). Records: one per (test, task) with part "all" (the paper's numbers), plus the
    seen/unseen/harmonic records of the (X+Y) annotation setups. With `save`, scores/<setup>.npz per test setup.
    """
    run = load_run(run_dir)
    plan, notes = setup_plan(run.model_kind, run.train_setup)
    if not plan:
        raise EvaluationError(f"run {run.run_dir}: no test setup applies to a {run.model_kind} model trained on "
                              f"{run.train_setup} (the classification model is tested on {splits.TABLE4_TEST}, "
                              "Table 4, which needs training on A-X).")
    available = _store_track_ids(run)
    members, left_out = {}, {}
    for test in dict.fromkeys(t for t, _ in plan):
        tracks, labels, missing = setup_members(run.split, test, available)
        members[test] = (tracks, labels)
        if missing:
            left_out[test] = missing
    if left_out:
        absent = sorted({t for test in left_out for t in splits.setup_tracks_labels(run.split, test)[0]} - available)
        per_setup = ", ".join(f"{test}: {n}" for test, n in left_out.items())
        notes.append(f"{len(absent)} track(s) of the split have no mel spectrogram in {run.mels_path} (failed "
                     f"decodes?) and are left out of the test setups ({per_setup}): "
                     f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}")
    needed = list(dict.fromkeys(t for tracks, _ in members.values() for t in tracks))
    outputs, all_labels, info = track_outputs(run, needed, force=force, batch_size=batch_size, progress=progress)
    notes.append(f"track outputs: {info['cached_tracks']} from {embeddings.CACHE_FILE}, "
                 f"{info['computed_tracks']} computed.")
    row = {t: i for i, t in enumerate(needed)}

    records = []
    for test, (tracks, labels) in members.items():
        scores = setup_scores(run, outputs[[row[t] for t in tracks]], all_labels, labels)
        truth = ds.label_matrix(run.annotations, tracks, labels)
        if save:
            notes.append(f"wrote {save_scores(run.run_dir, test, scores, truth, tracks, labels)}")
        for task in [task for t, task in plan if t == test]:
            metric = annotation_metrics if task == "annotation" else retrieval_metrics
            records.append(make_record(run, test, task, "all", metric(scores, truth)))
            if task == "annotation" and test in GZSL_TESTS:
                records.extend(gzsl_records(run, test, scores, truth, labels))
    if label_map and run.is_embedding:
        notes.append(f"wrote {write_label_map(run, all_labels, run.run_dir / LABEL_MAP_FILE)}")
    ds.write_json(run.run_dir / RESULTS_FILE, records)
    notes.append(f"wrote {run.run_dir / RESULTS_FILE} ({len(records)} records)")
    return records, notes


def read_results(run_dir) -> list[dict]:
    path = Path(run_dir) / RESULTS_FILE
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path} is not valid JSON ({exc}); rerun with --force.") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and set(KEY_FIELDS) <= set(r) for r in records):
        raise EvaluationError(f"{path} is not a list of result records; rerun with --force.")
    return records


def reusable_results(run_dir: Path, save: bool = False) -> bool:
    """Whether a run's results.json can stand for a new evaluation: it exists, is newer than model.keras (a resumed
    training replaces the model) and, when scores are asked for, scores/ exists too."""
    results, model = run_dir / RESULTS_FILE, run_dir / config.MODEL_FILE
    if not (results.is_file() and model.is_file() and (run_dir / config.CONFIG_FILE).is_file()):
        return False
    if results.stat().st_mtime < model.stat().st_mtime:
        return False
    return not save or (run_dir / SCORES_DIR).is_dir()


def collect(run_dirs, force: bool = False, **evaluate_kwargs) -> tuple[list[dict], list[str]]:
    """Records of several runs: results.json where reusable (unless `force`), a fresh evaluation otherwise.

    When two runs give a record with the same key (dataset, model, side_info, train, test, task, part), e.g. two
    seeds of one setup, the records of those runs get a "run" field (the run directory's name) so that the tables
    show them side by side instead of mixing them up.
    """
    per_run, notes = [], []
    for run_dir in run_dirs:
        run_dir = Path(run_dir).expanduser().resolve()
        if not force and reusable_results(run_dir, evaluate_kwargs.get("save", False)):
            records = read_results(run_dir)
            notes.append(f"{run_dir}: reusing {RESULTS_FILE} ({len(records)} records; --force re-evaluates)")
        else:
            records, run_notes = evaluate_run(run_dir, force=force, **evaluate_kwargs)
            notes.extend(f"{run_dir}: {note}" for note in run_notes)
        per_run.append((run_dir, records))
    owners: dict[tuple, set] = {}
    for run_dir, records in per_run:
        for record in records:
            owners.setdefault(tuple(record.get(k) for k in KEY_FIELDS), set()).add(run_dir)
    shared = {run_dir for runs in owners.values() if len(runs) > 1 for run_dir in runs}
    if shared:
        notes.append(f"{len(shared)} runs give results for the same setups; their records are told apart by a "
                     f"'run' field: {', '.join(sorted(p.name for p in shared))}.")
    merged = []
    for run_dir, records in per_run:
        for record in records:
            merged.append({**record, "run": run_dir.name} if run_dir in shared else dict(record))
    return merged, notes


# ---------------------------------------------------------------------------------------------------------------
# Case studies (paper Tables 5-7)
# ---------------------------------------------------------------------------------------------------------------
def _parse_glove_line(line: bytes, word: bytes, dim: int) -> np.ndarray | None:
    """The vector of a GloVe text line when its token is `word` (token = all but the last `dim` fields).

    Parsed like preprocess.msd.read_glove, which wrote the side-information file: trailing blanks stripped, a line
    with too few fields or a non-numeric / non-finite value is malformed and skipped (DATASETS.md).
    """
    fields = line.rstrip(b" \t\r").split(b" ")
    if len(fields) < dim + 1 or b" ".join(fields[:-dim]) != word:
        return None
    try:
        vector = np.asarray([float(x) for x in fields[-dim:]], dtype=np.float64)
    except ValueError:
        return None
    return vector.astype(np.float32) if np.isfinite(vector).all() else None


def glove_vector(glove_path, word: str, dim: int, progress: bool = True) -> np.ndarray | None:
    """Stream a GloVe text file (token then `dim` floats per line) for one word; None when it is not there.

    The file (5 GB for Common Crawl 42B) is read in 64 MB chunks and searched with bytes.find for "\\n<word> ",
    so only candidate lines are parsed. Tokens are matched exactly (the 42B file is lowercase).
    """
    from tqdm.auto import tqdm

    path = Path(glove_path)
    key = word.encode("utf-8")
    needle = b"\n" + key + b" "
    size = path.stat().st_size
    carry = b"\n"  # a virtual newline before the first line so that it is found like the others
    with open(path, "rb") as handle, tqdm(total=size, unit="B", unit_scale=True, disable=not progress,
                                          desc=f"searching {path.name}", leave=False) as bar:
        while True:
            chunk = handle.read(GLOVE_CHUNK)
            final = not chunk
            buffer = carry + (chunk if chunk else b"\n")
            start = 0
            while (pos := buffer.find(needle, start)) >= 0:
                end = buffer.find(b"\n", pos + 1)
                if end < 0:
                    break  # the line continues in the next chunk; it stays in `carry`
                vector = _parse_glove_line(buffer[pos + 1:end], key, dim)
                if vector is not None:
                    return vector
                start = pos + 1
            if final:
                return None
            carry = buffer[buffer.rfind(b"\n"):]
            bar.update(len(chunk))


def _glove_path(run: Run) -> Path:
    summary_file = ds.summary_path(run.dataset_dir)
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    if not summary.get("glove_path"):
        raise EvaluationError(f"{summary_file} records no glove_path, so words outside {run.side_info_path} have "
                              "no vector (the MSD adapter records the GloVe file it used).")
    path = Path(summary["glove_path"])
    if not path.is_file():
        raise EvaluationError(f"the GloVe file {path} recorded in {summary_file} is gone; restore it (or query a "
                              f"label of {run.side_info_path}).")
    return path


def word_vector(run: Run, word: str, progress: bool = True) -> tuple[np.ndarray, str]:
    """Side-information vector of a word: its row in the run's side-information file, else (GloVe side
    information only) its vector in the GloVe file recorded in summary.json. Returns (vector, source)."""
    if word in run.side_info.labels:
        return run.side_info.lookup([word])[0], str(run.side_info_path)
    if run.side_info_kind not in GLOVE_KINDS:
        raise EvaluationError(f"{word!r} has no side-information vector: it is not a label of "
                              f"{run.side_info_path} ({len(run.side_info.labels)} labels), and only GloVe side "
                              "information can describe other words.")
    path = _glove_path(run)
    vector = glove_vector(path, word, run.side_info.dim, progress=progress)
    if vector is None:
        hint = f" (GloVe tokens are matched exactly; try {word.lower()!r})" if word != word.lower() else ""
        raise EvaluationError(f"{word!r} has no vector: not a label of {run.side_info_path} and not a word of "
                              f"{path}{hint}.")
    return vector, str(path)


def _all_split_tracks(run: Run) -> list[str]:
    tracks, _, _ = setup_members(run.split, "(A+B+C)-Y", _store_track_ids(run))
    return tracks


def query(run: Run, word: str, top: int = DEFAULT_TOP["query"], progress: bool = True,
          batch_size: int = embeddings.DEFAULT_BATCH_SIZE) -> dict:
    """Top tracks for a word (paper Table 5): cosine between the word's label embedding and every track of the
    split (A+B+C, the tracks with audio), with each track's ground-truth labels and audio path."""
    status = run.label_status(word)
    tracks = _all_split_tracks(run)
    if run.is_embedding:
        vector, source = word_vector(run, word, progress=progress)
        outputs, _, _ = track_outputs(run, tracks, batch_size=batch_size, progress=progress)
        scores = embeddings.cosine_scores(outputs, run.semantic(vector[None]))[:, 0]
    else:
        if word not in run.seen_labels:
            raise EvaluationError(f"{word!r} is not one of the {len(run.seen_labels)} seen labels that the "
                                  f"classification model {run.run_dir} scores.")
        source = "classification output"
        outputs, _, _ = track_outputs(run, tracks, batch_size=batch_size, progress=progress)
        scores = setup_scores(run, outputs, None, [word])[:, 0]
    best = np.argsort(-scores, kind="stable")[:top]
    top_ids = [tracks[i] for i in best]
    found = run.annotations[run.annotations["track_id"].isin(top_ids)]  # only the top tracks (MSD: 1M pairs)
    truth = {t: sorted(found["label"][found["track_id"] == t]) for t in top_ids}
    paths = ds.read_tracks(ds.tracks_path(run.dataset_dir)).set_index("track_id")["path"].to_dict()
    rows = [{"rank": r + 1, "track_id": t, "score": float(scores[i]), "labels": truth[t], "path": paths.get(t, "")}
            for r, (i, t) in enumerate(zip(best, top_ids))]
    return {"query": word, "status": status, "vector_from": source, "n_tracks": len(tracks), "tracks": rows}


def annotate(run: Run, audio_path, top: int = DEFAULT_TOP["annotate"], max_seconds: float | None = None,
             progress: bool = True, batch_size: int = embeddings.DEFAULT_BATCH_SIZE) -> dict:
    """Top labels for any audio file (paper Table 6): the store's front end (mean/std), segments averaged, scored
    against the split's seen + unseen labels (the seen labels only for the classification model)."""
    from preprocess.store import SEGMENT_FRAMES, AudioError, MelStore, audio_file_frames

    audio_path = Path(audio_path)
    try:
        with MelStore(run.mels_path, in_memory=False) as store:
            frames = audio_file_frames(audio_path, store, max_seconds=max_seconds)
    except AudioError as exc:
        raise EvaluationError(f"--annotate {audio_path}: {exc}") from None
    segments = embeddings.frames_to_segments(frames, SEGMENT_FRAMES)
    output = embeddings.batched_segment_means(run.segment_predictor(), [segments], 1, batch_size=batch_size,
                                              progress=progress, desc="embedding the file")
    labels = run.seen + run.unseen if run.is_embedding else list(run.seen_labels)
    if run.is_embedding:
        scores = embeddings.cosine_scores(output, run.semantic(run.side_info.lookup(labels)))[0]
    else:
        scores = setup_scores(run, output, None, labels)[0]
    unseen = set(run.unseen)
    best = np.argsort(-scores, kind="stable")[:top]
    rows = [{"rank": r + 1, "label": labels[i], "score": float(scores[i]), "unseen": labels[i] in unseen}
            for r, i in enumerate(best)]
    return {"file": str(audio_path), "segments": int(len(segments)), "labels": rows}


def _nearest(query_vector: np.ndarray, vectors: np.ndarray, names: list[str], exclude: str, top: int,
             unseen: set) -> list[dict]:
    sims = embeddings.cosine_scores(query_vector[None], vectors)[0]
    order = [i for i in np.argsort(-sims, kind="stable") if names[i] != exclude][:top]
    return [{"rank": r + 1, "label": names[i], "cosine": float(sims[i]), "unseen": names[i] in unseen}
            for r, i in enumerate(order)]


def neighbors(run: Run, word: str, top: int = DEFAULT_TOP["neighbors"], progress: bool = True) -> dict:
    """Nearest labels of a word (paper Table 7) among the split's labels: by cosine in the raw side-information
    space and in the trained embedding space (semantic-module outputs). The word itself is left out."""
    if not run.is_embedding:
        raise EvaluationError(f"--neighbors needs a deep embedding run; {run.run_dir} is a classification model.")
    vector, source = word_vector(run, word, progress=progress)
    names = run.seen + run.unseen
    raw = run.side_info.lookup(names)
    unseen = set(run.unseen)
    embedded = run.semantic(np.concatenate([raw, vector[None]], axis=0))  # one predict call for all
    return {"query": word, "status": run.label_status(word), "vector_from": source,
            "side_information": _nearest(vector, raw, names, word, top, unseen),
            "embedding": _nearest(embedded[-1], embedded[:-1], names, word, top, unseen)}


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------
def _render_rows(title: str, columns: list[str], rows: list[list], fmt: str) -> str:
    """A small table in the chosen text format (table | markdown | csv)."""
    text = [[str(c) for c in row] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(text)
        return f"# {title}\n{out.getvalue()}"
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in text]
        return "\n".join(lines) + "\n"
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in text]
    return "\n".join(lines) + "\n"


def _mark(label: str, unseen: bool) -> str:
    return f"{label} (unseen)" if unseen else label


def render_case_study(kind: str, result: dict, fmt: str) -> str:
    if kind == "query":
        title = (f"Top {len(result['tracks'])} of {result['n_tracks']} tracks for {result['query']!r} "
                 f"({result['status']}; vector from {result['vector_from']})")
        rows = [[r["rank"], r["track_id"], f"{r['score']:.4f}", ", ".join(r["labels"]), r["path"]]
                for r in result["tracks"]]
        return _render_rows(title, ["rank", "track_id", "score", "labels", "path"], rows, fmt)
    if kind == "annotate":
        title = f"Top {len(result['labels'])} labels for {result['file']} ({result['segments']} segments)"
        rows = [[r["rank"], _mark(r["label"], r["unseen"]), f"{r['score']:.4f}"] for r in result["labels"]]
        return _render_rows(title, ["rank", "label", "score"], rows, fmt)
    title = (f"Nearest labels to {result['query']!r} ({result['status']}; vector from {result['vector_from']}): "
             "general (side-information) space vs zero-shot embedding space")
    rows = [[a["rank"], _mark(a["label"], a["unseen"]), f"{a['cosine']:.4f}", _mark(b["label"], b["unseen"]),
             f"{b['cosine']:.4f}"] for a, b in zip(result["side_information"], result["embedding"])]
    return _render_rows(title, ["rank", "side information", "cosine", "embedding", "cosine"], rows, fmt)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate trained zero-shot runs (paper Tables 2-4, plus a generalized zero-shot view) and "
                    "run the case studies (Tables 5-7). Writes <run_dir>/results.json, embeddings.h5 (cache) and "
                    "label_map.png; prints the tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-dir", default=None,
                       help="run directory written by train.py. Default: the most recent run under runs/.")
    where.add_argument("--collect", nargs="+", metavar="RUN_DIR", default=None,
                       help="several run directories (training setups, models, side information) merged into one "
                            "set of tables; runs with a results.json are reused unless --force.")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format of tables and case studies.")
    parser.add_argument("--save-scores", action="store_true",
                        help="also write <run_dir>/scores/<setup>.npz (scores, labels, track_ids, label_names, test).")
    parser.add_argument("--force", action="store_true",
                        help="re-evaluate runs that have a results.json (--collect) and recompute the embedding cache.")
    parser.add_argument("--query", metavar="WORD", default=None,
                        help="case study (Table 5): top tracks for a word with a side-information vector "
                             "(with GloVe side information: any word of the GloVe file).")
    parser.add_argument("--annotate", metavar="AUDIO_FILE", default=None,
                        help="case study (Table 6): top labels for an audio file, unseen labels marked.")
    parser.add_argument("--neighbors", metavar="WORD", default=None,
                        help="case study (Table 7): nearest labels in the side-information vs the embedding space.")
    parser.add_argument("--top", type=int, default=None,
                        help="results per case study. Default: 5 for --query, 10 for --annotate and --neighbors.")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="--annotate: read at most this many seconds of the file (MSD used 30). Default: all.")
    parser.add_argument("--batch-size", type=int, default=embeddings.DEFAULT_BATCH_SIZE,
                        help="segments per inference call.")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars.")
    return parser


def _case_studies(args, progress: bool) -> str:
    run = load_run(args.run_dir or config.latest_run_dir())
    results = {}
    if args.query is not None:
        results["query"] = query(run, args.query, top=args.top or DEFAULT_TOP["query"], progress=progress,
                                 batch_size=args.batch_size)
    if args.annotate is not None:
        results["annotate"] = annotate(run, args.annotate, top=args.top or DEFAULT_TOP["annotate"],
                                       max_seconds=args.max_seconds, progress=progress, batch_size=args.batch_size)
    if args.neighbors is not None:
        results["neighbors"] = neighbors(run, args.neighbors, top=args.top or DEFAULT_TOP["neighbors"],
                                         progress=progress)
    if args.format == "json":
        return json.dumps(results, indent=2) + "\n"
    return "\n".join(render_case_study(kind, result, args.format) for kind, result in results.items())


def main(argv=None) -> int:
    from preprocess.store import AudioError

    parser = build_parser()
    args = parser.parse_args(argv)
    progress = not args.no_progress
    case_study = any(v is not None for v in (args.query, args.annotate, args.neighbors))
    try:
        if args.top is not None and args.top < 1:
            raise EvaluationError(f"--top must be >= 1, got {args.top}.")
        if args.batch_size < 1:
            raise EvaluationError(f"--batch-size must be >= 1, got {args.batch_size}.")
        if case_study:
            if args.collect:
                raise EvaluationError("--query/--annotate/--neighbors work on one run: use --run-dir, not --collect.")
            sys.stdout.write(_case_studies(args, progress))
            return 0
        import tables

        kwargs = {"save": args.save_scores, "batch_size": args.batch_size, "progress": progress}
        if args.collect:
            records, notes = collect(args.collect, force=args.force, **kwargs)
        else:
            records, notes = evaluate_run(args.run_dir or config.latest_run_dir(), force=args.force, **kwargs)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        text = tables.render_tables(records, fmt=args.format)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    except (EvaluationError, ds.DatasetError, AudioError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
