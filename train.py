"""Train the deep embedding model (paper Sec. 4.1) or the classification model (Sec. 4.2) on a dataset directory.

    python train.py                        # demo corpus, (A+B)-X, embedding model, instrument-count side info
    python train.py --dataset fma --train-setup A --model classification
    python train.py --run-dir runs/x       # rerun after an interruption (kill, crash): resumes at the next epoch

Steps: resolve the dataset directory (the demo corpus is built when missing), the split (default: the dataset's
seed-0 split, made when missing), the side information and the training/validation tracks of the training setup;
check all of it and stop with one `error: ...` line (exit status 2) before any model is built; then train with the
original recipe (../shared/REFERENCE.md, "Training"): SGD with Nesterov momentum 0.9, lr 0.001, Keras-2 decay 1e-6,
EarlyStopping(val_loss, 20), ReduceLROnPlateau(val_loss, 0.2, 5, min_lr 1.6e-7), a checkpoint every 2 epochs.

The run directory receives config.json (resolved config, paths, checksums, versions), model.keras (best
val_loss), log.csv (one row per epoch: epoch, loss, val_loss, learning_rate = base rate, lr = decayed rate),
training_curve.png, train_summary.json (written when the run finishes), checkpoints/ and, while training, backup/.
Rerunning a finished run directory only prints where it is.

Input pipeline (models/pipeline.py): when the mel store fits in RAM (MelStore's automatic in-memory mode, < 2 GiB
on disk: the demo and most users' data) the batches are drawn by TensorFlow ops alone from a CPU tf.Variable
holding all frames ("tensorflow"); a larger store is read lazily by numpy loader threads ("numpy"). Both are
deterministic in (seed, epoch, step), so a resumed run draws the batches of the uninterrupted one; they draw
different samples for the same seed. config.json ("train": {"input_pipeline"}) and train_summary.json record which.

Several devices: `--strategy mirrored` (tf.distribute.MirroredStrategy over all GPUs of the machine; without GPUs,
over all logical CPU devices) or `--strategy multi-worker` (MultiWorkerMirroredStrategy; the cluster comes from
TF_CONFIG; every worker runs the same command; worker 0 or the chief writes the run directory, the others a scratch
copy in <run dir>/.worker<i>). --batch-size is the global batch, split evenly over the replicas (it must be a
multiple of their number; an epoch's last, partial batch is cut to a multiple). The original hinge loss is the SUM
over the batch: each replica sums over its share, Keras does not rescale a "sum" loss, and the replicas' gradients
are all-reduced by summing, so one step equals one device's step on the whole global batch
(tests/test_train.py::test_mirrored_strategy_on_two_logical_cpus checks it; `--loss-reduction mean` is scaled by
1 / replicas on each replica by Keras, giving the global mean).

TensorFlow is imported only when training starts: `python train.py --help` and `import train` stay fast.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import config as cfg
import dataset_dir as dsio

SUMMARY_FILE = "train_summary.json"
LOG_FILE = "log.csv"
CURVE_FILE = "training_curve.png"
BACKUP_DIR = "backup"
CHECKPOINT_DIR = "checkpoints"
# Config fields that may change between an interrupted run and its resumption (they do not change the result).
RESUMABLE_CHANGES = ("workers", "verbose", "run_dir", "keep_checkpoints")
MAX_LISTED = 20


class TrainError(ValueError):
    """Bad input found before training; the message names the file or flag and what to do."""


def _listing(items, limit: int = MAX_LISTED) -> str:
    items = list(items)
    text = ", ".join(map(str, items[:limit]))
    return text + (f" ... ({len(items)} in all)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------------------------
# Resolution and validation (no TensorFlow)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """Everything a run needs, resolved and checked before the model is built."""

    config: cfg.TrainConfig  # resolved: canonical setup, side-info kind, epochs, absolute split path
    dataset: str
    dataset_dir: Path
    split_path: Path
    seen_labels: list[str]
    train_tracks: list[str]
    valid_tracks: list[str]
    train_positives: np.ndarray  # (n_train, L) uint8, L = len(seen_labels)
    valid_positives: np.ndarray  # (n_valid, L)
    side_info_path: Path | None
    label_vectors: np.ndarray | None  # (L, side_dim) float32 for the embedding model
    mels_path: Path
    store_facts: dict  # {"mean", "std", "n_tracks"}
    train_store_rows: np.ndarray  # (n_train,) store rows
    valid_store_rows: np.ndarray

    @property
    def side_dim(self) -> int | None:
        return None if self.label_vectors is None else int(self.label_vectors.shape[1])


def check_config(config: cfg.TrainConfig) -> cfg.TrainConfig:
    """Numeric sanity of the flags and the canonical training setup; returns a copy with the setup resolved."""
    rules = [
        ("negatives", config.negatives >= 1, "at least 1"), ("batch_size", config.batch_size >= 1, "at least 1"),
        ("lr", config.lr > 0, "positive"), ("lr_decay", config.lr_decay >= 0, ">= 0"),
        ("margin", config.margin >= 0, ">= 0"), ("momentum", 0 <= config.momentum < 1, "in [0, 1)"),
        ("epochs", config.epochs is None or config.epochs >= 1, "at least 1"),
        ("patience", config.patience >= 0, ">= 0"), ("plateau_patience", config.plateau_patience >= 0, ">= 0"),
        ("plateau_factor", 0 < config.plateau_factor < 1, "in (0, 1)"), ("min_lr", config.min_lr >= 0, ">= 0"),
        ("checkpoint_every", config.checkpoint_every >= 0, ">= 0 (0 = no periodic checkpoints)"),
        ("keep_checkpoints", config.keep_checkpoints >= 0, ">= 0 (0 = keep all)"),
        ("workers", config.workers >= 1, "at least 1"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise TrainError(f"--{name.replace('_', '-')} {getattr(config, name)!r} must be {rule}.")
    for name, choices in (("model", cfg.MODELS), ("strategy", cfg.STRATEGIES), ("loss_reduction", cfg.LOSS_REDUCTIONS)):
        if getattr(config, name) not in choices:
            flag = "--" + name.replace("_", "-")
            raise TrainError(f"{flag} {getattr(config, name)!r} is not one of {', '.join(choices)}.")
    try:
        setup = cfg.canonical_setup(config.train_setup)
    except ValueError as exc:
        raise TrainError(f"--train-setup {exc}") from None
    return dataclasses.replace(config, train_setup=setup)


def resolve_dataset(config: cfg.TrainConfig) -> Path:
    """The dataset directory; the demo corpus is built (preprocess.demo.ensure_demo, seed 0) when missing."""
    dataset_dir = dsio.resolve_dataset_dir(config.dataset)
    if config.dataset == "demo":
        from demo.build import ensure_demo

        if not dsio.mels_path(dataset_dir).is_file():
            print(f"building the demo corpus in {dataset_dir} (once) ...", flush=True)
        ensure_demo(dataset_dir, seed=0)  # returns at once when the corpus is complete
    if not dataset_dir.is_dir():
        raise TrainError(f"dataset directory {dataset_dir} does not exist; build it first (data/README.md).")
    return dataset_dir


def resolve_split(config: cfg.TrainConfig, dataset_dir: Path) -> tuple[Path, dict]:
    """--split, else the dataset's splits/split_seed0.json (made from annotations.csv when missing)."""
    import splits

    if config.split:
        path = Path(config.split).expanduser().resolve()
        if not path.is_file():
            raise TrainError(f"--split {config.split}: no such file.")
    else:
        path = Path(splits.ensure_split(dataset_dir, seed=0)).resolve()
    return path, splits.load_split(path)


def resolve_side_info_kind(config: cfg.TrainConfig, dataset_dir: Path) -> str | None:
    """--side-info, else the first of config.DEFAULT_SIDE_INFO_ORDER the dataset has (None if it has none)."""
    if config.side_info:
        return config.side_info
    available = dsio.available_side_info(dataset_dir)
    for kind in cfg.DEFAULT_SIDE_INFO_ORDER:
        if kind in available:
            return kind
    if config.model == "classification":
        return None
    raise TrainError(
        f"dataset {dataset_dir} has none of the default side information ({', '.join(cfg.DEFAULT_SIDE_INFO_ORDER)}) "
        f"in {dsio.side_info_dir(dataset_dir)}; available: "
        f"{', '.join(dsio.available_side_info(dataset_dir)) or 'none'}. "
        "Pass --side-info KIND.")


def setup_tracks(split: dict, setup: str, part: str) -> tuple[list[str], list[str]]:
    import splits

    try:
        return splits.setup_tracks_labels(split, setup, part)
    except ValueError as exc:
        raise TrainError(f"--train-setup {setup}: {exc}") from None


def check_label_vectors(seen: list[str], side_info, side_path: Path) -> np.ndarray:
    """(L, dim) side vectors of the seen labels; labels without a vector are listed in the error."""
    known = set(side_info.labels)
    missing = [label for label in seen if label not in known]
    if missing:
        raise TrainError(
            f"{len(missing)} of {len(seen)} seen (training) label(s) have no side-information vector in "
            f"{side_path}: {_listing(missing)}. Add them to the file or drop them from the annotations and remake "
            "the split.")
    return side_info.lookup(seen).astype(np.float32)


def check_positives(tracks, positives: np.ndarray, part: str, n_negatives: int, embedding: bool) -> None:
    """Every sample needs one seen positive and (embedding model) at least N seen negatives."""
    n_pos = positives.sum(axis=1)
    empty = [t for t, n in zip(tracks, n_pos) if n == 0]
    if empty:
        raise TrainError(f"{len(empty)} {part} track(s) have no seen label in the annotations (the split does not "
                         f"match annotations.csv?): {_listing(empty)}. Remake the split.")
    if embedding:
        n_neg = positives.shape[1] - n_pos
        short = [t for t, n in zip(tracks, n_neg) if n < n_negatives]
        if short:
            raise TrainError(f"--negatives {n_negatives}: {len(short)} {part} track(s) have fewer seen negative labels "
                             f"than that: {_listing(short)}. Use fewer negatives.")


def check_store(mels_path: Path, train_tracks, valid_tracks) -> tuple[dict, np.ndarray, np.ndarray]:
    """Open the mel store, check its signal constants, and map the tracks to store rows (missing ones listed)."""
    from preprocess.store import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, MelStore

    if not mels_path.is_file():
        raise TrainError(f"no mel store {mels_path}; build it with preprocess/store.py (data/README.md).")
    try:
        with MelStore(mels_path, in_memory=False) as store:
            expected = {"n_mels": N_MELS, "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH}
            for key, value in expected.items():
                have = store.attrs.get(key)
                if have is not None and int(have) != int(value):
                    raise TrainError(f"mel store {mels_path}: dimension mismatch, {key} = {int(have)} but the model "
                                     f"expects {value}; rebuild the store with preprocess/store.py.")
            present = set(store.track_ids)
            missing = [t for t in list(train_tracks) + list(valid_tracks) if t not in present]
            if missing:
                raise TrainError(f"{len(missing)} training/validation track(s) are missing from the mel store "
                                 f"{mels_path}: {_listing(missing)}. See failures.csv beside it, fix or drop them "
                                 "(annotations.csv) and remake the split.")
            facts = {"mean": float(store.mean), "std": float(store.std), "n_tracks": int(len(store))}
            train_rows = np.array([store.index(t) for t in train_tracks], dtype=np.int64)
            valid_rows = np.array([store.index(t) for t in valid_tracks], dtype=np.int64)
    except TrainError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise TrainError(f"cannot read the mel store {mels_path}: {exc}") from None
    return facts, train_rows, valid_rows


def prepare(config: cfg.TrainConfig) -> TrainingData:
    """Resolve and check everything a run needs (exceptions: TrainError / DatasetError with a clear message)."""
    config = check_config(config)
    dataset_dir = resolve_dataset(config)
    dataset = dsio.dataset_name(dataset_dir)
    split_path, split = resolve_split(config, dataset_dir)
    kind = resolve_side_info_kind(config, dataset_dir)
    embedding = config.model == "embedding"

    train_tracks, seen = setup_tracks(split, config.train_setup, "train")
    valid_tracks, _ = setup_tracks(split, config.train_setup, "valid")
    if not train_tracks:
        raise TrainError(f"training setup {config.train_setup} of split {split_path} has no training tracks "
                         "(empty group); choose another --train-setup.")
    if not valid_tracks:
        raise TrainError(f"training setup {config.train_setup} of split {split_path} has no validation tracks; "
                         "val_loss drives early stopping and the learning-rate plateau, so a validation part is "
                         "needed (remake the split with a larger valid_fraction or use more data).")
    if not seen:
        raise TrainError(f"split {split_path} has no seen labels.")

    side_path = vectors = None
    if kind is not None:
        side_path = dsio.resolve_side_info(dataset_dir, kind).resolve()
        side_info = dsio.read_side_info(side_path)
        if embedding:
            vectors = check_label_vectors(seen, side_info, side_path)

    annotations = dsio.read_annotations(dsio.annotations_path(dataset_dir))
    train_pos = dsio.label_matrix(annotations, train_tracks, seen)
    valid_pos = dsio.label_matrix(annotations, valid_tracks, seen)
    check_positives(train_tracks, train_pos, "training", config.negatives, embedding)
    check_positives(valid_tracks, valid_pos, "validation", config.negatives, embedding)

    mels = dsio.mels_path(dataset_dir).resolve()
    facts, train_rows, valid_rows = check_store(mels, train_tracks, valid_tracks)
    resolved = dataclasses.replace(config, side_info=kind, epochs=config.resolved_epochs(dataset),
                                   split=str(split_path))
    return TrainingData(config=resolved, dataset=dataset, dataset_dir=dataset_dir, split_path=split_path,
                        seen_labels=list(seen), train_tracks=list(train_tracks), valid_tracks=list(valid_tracks),
                        train_positives=train_pos, valid_positives=valid_pos, side_info_path=side_path,
                        label_vectors=vectors, mels_path=mels, store_facts=facts, train_store_rows=train_rows,
                        valid_store_rows=valid_rows)


# ---------------------------------------------------------------------------------------------------------------
# Run directory and config.json
# ---------------------------------------------------------------------------------------------------------------
def versions() -> dict:
    """Versions of the libraries that shape the result."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name, packages in (("numpy", ("numpy",)), ("tensorflow", ("tensorflow", "tensorflow-cpu")),
                           ("keras", ("keras",)), ("h5py", ("h5py",)), ("librosa", ("librosa",))):
        for package in packages:
            try:
                found[name] = metadata.version(package)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def run_record(data: TrainingData) -> dict:
    """The content of config.json (CONTRACTS.md)."""
    config = data.config
    return {
        "config": config.to_dict(),
        "dataset": data.dataset,
        "dataset_dir": str(data.dataset_dir),
        "split_path": str(data.split_path),
        "side_info_path": None if data.side_info_path is None else str(data.side_info_path),
        "mels_path": str(data.mels_path),
        "seen_labels": data.seen_labels,
        "checksums": {
            "annotations": dsio.sha256_file(dsio.annotations_path(data.dataset_dir)),
            "split": dsio.sha256_file(data.split_path),
            "side_info": None if data.side_info_path is None else dsio.sha256_file(data.side_info_path),
            "mels": dict(data.store_facts),
        },
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": {"tracks": len(data.train_tracks), "valid_tracks": len(data.valid_tracks),
                  "side_dim": data.side_dim, "n_labels": len(data.seen_labels)},
    }


def choose_run_dir(data: TrainingData) -> Path:
    config = data.config
    if config.run_dir:
        return Path(config.run_dir).expanduser().resolve()
    return cfg.new_run_dir(data.dataset, config.model, config.side_info or "none", config.train_setup).resolve()


def check_same_run(existing: dict, record: dict, run_dir: Path) -> None:
    """An existing run directory may only be resumed with the same configuration and the same data."""
    old_dim, new_dim = existing.get("train", {}).get("side_dim"), record["train"]["side_dim"]
    if old_dim is not None and new_dim is not None and old_dim != new_dim:
        raise TrainError(f"dimension mismatch: run directory {run_dir} was trained with {old_dim}-d side information "
                         f"but --side-info {record['config']['side_info']} has {new_dim}-d vectors. Use the same side "
                         "information to resume it, or pass a new --run-dir.")
    old, new = existing.get("config", {}), record["config"]
    changed = [k for k in sorted(set(old) | set(new)) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]
    old_sums, new_sums = existing.get("checksums", {}), record["checksums"]
    changed += [f"checksum of {k}" for k in sorted(new_sums) if old_sums.get(k) != new_sums.get(k)]
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" if k in new else k for k in changed)
        raise TrainError(f"run directory {run_dir} holds a run with another configuration or other data ({details}). "
                         "Rerun with the same flags to resume it, or pass a new --run-dir.")


def truncate_log(path: Path, first_epoch: int) -> None:
    """Keep only the rows of epochs < first_epoch (an epoch logged but not backed up is trained again)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and int(float(r[header.index("epoch")])) < first_epoch]
    if len(keep) != len(body) or first_epoch == 0:
        dsio.atomic_write_text(path, "" if first_epoch == 0 else _csv_text([header] + keep))


def _csv_text(rows) -> str:
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def read_log(path: Path) -> dict[str, list[float]]:
    """log.csv -> {column: values}."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0]) if rows else []
    return {key: [float(r[key]) if r[key] not in ("", None) else math.nan for r in rows] for key in columns}


def plot_training_curve(log_path: Path, out_path: Path, title: str) -> None:
    """loss / val_loss and the learning rates per epoch (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_log(log_path)
    if not log.get("epoch"):
        return
    epochs = [e + 1 for e in log["epoch"]]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key in ("loss", "val_loss"):
        if key in log:
            ax_loss.plot(epochs, log[key], marker=".", label=key)
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.set_title(title)
    for key, label in (("learning_rate", "base learning rate"), ("lr", "decayed learning rate")):
        if key in log:
            ax_lr.plot(epochs, log[key], marker=".", label=label)
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Model, strategy, callbacks (TensorFlow)
# ---------------------------------------------------------------------------------------------------------------
def make_strategy(name: str):
    """tf.distribute strategy: default (one device), mirrored (all GPUs; without GPUs, all logical CPU devices),
    multi-worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainError(f"--strategy {name!r} is not one of {', '.join(cfg.STRATEGIES)}.")


def worker_role(strategy) -> tuple[bool, int]:
    """(is_chief, task_id): only the chief writes the run directory of a multi-worker run."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)), task_id


def multi_worker_fixes(model, strategy) -> None:
    """Work around two Keras 3 (TF backend) failures under MultiWorkerMirroredStrategy with several workers
    (tensorflow/tensorflow#72388: "tf.distribute and keras 3 incompatibility"); only used for --strategy
    multi-worker.

    1. Before `fit`, Keras reduces the first batch with `strategy.reduce("MEAN", batch)` only to learn the input
       shapes; MultiWorkerMirroredStrategy's reduce does not accept a nested batch such as (inputs, target)
       (TensorFlow's Strategy.reduce does not support nested values yet). The model gets the first local
       replica's shard of the batch instead (the shapes are what matter).
    2. After each step Keras averages the logged metrics over the workers with `strategy.reduce("MEAN", v,
       axis=0)`, which fails on scalars ("Invalid reduction dimension 0 for input with 0 dimensions"): scalars
       are averaged over the replicas with axis=None instead. Gradients are not affected by either fix.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica
    if not getattr(original_reduce, "zsl_multi_worker_fix", False):
        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
                def mean(value):
                    axis = 0 if value.shape.rank else None
                    return strategy.reduce("MEAN", value, axis=axis)

                return tree.map_structure(mean, values)
            return original_reduce(values, strategy, reduction)

        reduce_per_replica.zsl_multi_worker_fix = True
        tf_trainer.reduce_per_replica = reduce_per_replica

    original = model._maybe_symbolic_build

    def local_shard(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local_shard, next(batches))
                break
        return original(iterator=None, data_batch=data_batch)

    model._maybe_symbolic_build = build


def build_model(data: TrainingData):
    """The embedding or classification model of the config, compiled with the original optimizer and loss."""
    import keras

    import models

    config = data.config
    if config.model == "embedding":
        model = models.build_embedding_model(data.side_dim, config.negatives)
        loss = models.HingeRankingLoss(config.margin, config.loss_reduction)
    else:
        model = models.build_classification_model(len(data.seen_labels))
        loss = keras.losses.BinaryCrossentropy()
    optimizer = models.DecaySGD(learning_rate=config.lr, momentum=config.momentum, nesterov=True,
                                decay=config.lr_decay)
    model.compile(optimizer=optimizer, loss=loss)
    # Build the optimizer's variables now (Keras would at the first step) so that a backup can be restored into
    # them before training starts.
    optimizer.build(model.trainable_variables)
    return model


def make_callbacks(config: cfg.TrainConfig, run_dir: Path) -> tuple[list, object]:
    """The callback list (order matters: loggers before CSVLogger, TrainingBackup last) and the backup."""
    import keras

    from models.callbacks import (BestModelSaver, LearningRateLogger, PeriodicCheckpoint, ResumableEarlyStopping,
                                  ResumableReduceLROnPlateau, TrainingBackup)

    plateau = ResumableReduceLROnPlateau(monitor="val_loss", factor=config.plateau_factor,
                                         patience=config.plateau_patience, min_lr=config.min_lr, verbose=1)
    stopping = ResumableEarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True,
                                      verbose=1)
    best = BestModelSaver(run_dir / cfg.MODEL_FILE, monitor="val_loss")
    backup = TrainingBackup(run_dir / BACKUP_DIR, {"plateau": plateau, "early_stopping": stopping, "best_model": best},
                            early_stopping=stopping)
    callbacks = [LearningRateLogger(), plateau, stopping, best,
                 PeriodicCheckpoint(run_dir / CHECKPOINT_DIR, config.checkpoint_every, config.keep_checkpoints),
                 keras.callbacks.CSVLogger(str(run_dir / LOG_FILE), append=True), backup]
    return callbacks, backup


# ---------------------------------------------------------------------------------------------------------------
# run / main
# ---------------------------------------------------------------------------------------------------------------
def _print_plan(data: TrainingData, run_dir: Path, steps: int, first_epoch: int, replicas: int,
                pipeline: str) -> None:
    config = data.config
    side = f"{config.side_info} ({data.side_dim}-d)" if data.side_dim else (config.side_info or "none")
    print(f"dataset {data.dataset} ({data.dataset_dir}), split {data.split_path.name}, setup {config.train_setup}")
    print(f"model {config.model}, side information {side}, {len(data.seen_labels)} seen labels")
    print(f"{len(data.train_tracks)} training / {len(data.valid_tracks)} validation tracks, batch {config.batch_size}, "
          f"{steps} steps per epoch, epochs {first_epoch + 1}..{config.epochs}, strategy {config.strategy} "
          f"({replicas} replica{'s' if replicas > 1 else ''}), {pipeline} input pipeline")
    print(f"run directory {run_dir}" + (f" (resuming after epoch {first_epoch})" if first_epoch else ""), flush=True)


def open_samplers(data: TrainingData, replicas: int) -> tuple[dict, object]:
    """The training and validation samplers ({"train", "valid"}) and the store they read, or None.

    models.pipeline.make_samplers picks the input pipeline: "tensorflow" when the mel store fits in RAM
    (MelStore's automatic in-memory mode, < 2 GiB), "numpy" for a lazily read store (kept open: close it after
    training). The TensorFlow samplers hold the frames in a CPU tf.Variable, so the store (and its numpy copy of
    the frames) is closed and released here: one copy of the frames in RAM during training.
    """
    from models.pipeline import make_samplers
    from preprocess.store import SEGMENT_FRAMES, MelStore

    config = data.config
    store = MelStore(data.mels_path)
    try:
        samplers = make_samplers(
            store, {"train": (data.train_store_rows, data.train_positives),
                    "valid": (data.valid_store_rows, data.valid_positives)},
            data.label_vectors if config.model == "embedding" else None, n_negatives=config.negatives,
            batch_size=config.batch_size, seed=config.seed, n_frames=SEGMENT_FRAMES, multiple=replicas)
    except BaseException:
        store.close()
        raise
    if samplers["train"].pipeline == "tensorflow":
        store.close()
        return samplers, None
    return samplers, store


def finish_run(run_dir: Path, data: TrainingData, backup, seconds: float, summary_extra: dict) -> dict:
    """Training curve, train_summary.json, backup removed."""
    log_path = run_dir / LOG_FILE
    log = read_log(log_path) if log_path.is_file() else {}
    summary = {"finished": True, "epochs_completed": len(log.get("epoch", [])), "train_seconds": round(seconds, 1)}
    if log.get("val_loss"):
        best = int(np.nanargmin(log["val_loss"]))
        summary.update({"best_epoch": int(log["epoch"][best]), "best_val_loss": log["val_loss"][best],
                        "final_loss": log["loss"][-1] if log.get("loss") else None})
    summary.update(summary_extra)
    if log.get("epoch"):
        config = data.config
        plot_training_curve(log_path, run_dir / CURVE_FILE,
                            f"{data.dataset} {config.model} {config.side_info or ''} {config.train_setup}")
    dsio.write_json(run_dir / SUMMARY_FILE, summary)
    backup.remove()
    return summary


def run(config: cfg.TrainConfig) -> Path:
    """Train one model as configured; returns the run directory. Raises TrainError/DatasetError on bad input."""
    data = prepare(config)  # everything checked before TensorFlow is even imported
    config = data.config
    run_dir = choose_run_dir(data)
    record = run_record(data)
    config_path = run_dir / cfg.CONFIG_FILE
    if config_path.is_file():
        check_same_run(cfg.read_run_config(run_dir), record, run_dir)
        if (run_dir / SUMMARY_FILE).is_file():
            print(f"run {run_dir} has already finished (see {SUMMARY_FILE}); nothing to do.")
            return run_dir

    import keras

    from models.pipeline import training_dataset, validation_dataset
    from preprocess.store import N_MELS

    strategy = make_strategy(config.strategy)  # first TensorFlow call (multi-worker needs that)
    replicas = int(strategy.num_replicas_in_sync)
    if config.batch_size % replicas:
        raise TrainError(f"--batch-size {config.batch_size} must be a multiple of the {replicas} replicas of "
                         f"--strategy {config.strategy} (each replica gets an equal share of the global batch).")
    if len(data.valid_tracks) < replicas:
        raise TrainError(f"{len(data.valid_tracks)} validation track(s) cannot be shared by {replicas} replicas.")
    is_chief, task_id = worker_role(strategy)
    if not is_chief:  # other workers of a multi-worker run write a scratch copy
        run_dir = run_dir / f".worker{task_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record["config"]["run_dir"] = str(run_dir)
    data.config = config = dataclasses.replace(config, run_dir=str(run_dir))

    samplers, store = open_samplers(data, replicas)  # outside the strategy scope (a CPU variable, not mirrored)
    try:
        pipeline = samplers["train"].pipeline
        record["train"]["input_pipeline"] = pipeline
        if config_path.is_file() and is_chief:
            recorded = cfg.read_run_config(run_dir).get("train", {}).get("input_pipeline", pipeline)
            if recorded != pipeline:
                print(f"warning: run {run_dir} was started with the {recorded} input pipeline and resumes with the "
                      f"{pipeline} one (the mel store's size or dtype changed?): the remaining epochs draw other "
                      "batches than the uninterrupted run would have.", file=sys.stderr)
        if not config_path.is_file() or not is_chief:
            dsio.write_json(run_dir / cfg.CONFIG_FILE, record)

        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = build_model(data)
        if config.strategy == "multi-worker":
            multi_worker_fixes(model, strategy)
        callbacks, backup = make_callbacks(config, run_dir)
        first_epoch = backup.initial_epoch()
        truncate_log(run_dir / LOG_FILE, first_epoch)

        start = time.time()
        train_sampler, valid_sampler = samplers["train"], samplers["valid"]
        _print_plan(data, run_dir, train_sampler.steps, first_epoch, replicas, pipeline)
        last_epoch = config.epochs
        if first_epoch < last_epoch and not backup.stopped():
            model.fit(training_dataset(train_sampler, first_epoch, last_epoch, config.workers, N_MELS),
                      validation_data=validation_dataset(valid_sampler, config.workers, N_MELS),
                      steps_per_epoch=train_sampler.steps, initial_epoch=first_epoch, epochs=last_epoch,
                      callbacks=callbacks, verbose=config.verbose, shuffle=False)
    finally:
        if store is not None:
            store.close()
    summary = finish_run(run_dir, data, backup, time.time() - start,
                         {"steps_per_epoch": train_sampler.steps, "replicas": replicas, "input_pipeline": pipeline})
    if summary.get("best_epoch") is not None:
        print(f"best val_loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch'] + 1}; "
              f"{summary['epochs_completed']} epochs in {summary['train_seconds']} s")
    print(f"model: {run_dir / cfg.MODEL_FILE}\nlog: {run_dir / LOG_FILE}\nrun directory: {run_dir}")
    return run_dir


def build_parser():
    return cfg.build_parser(description=__doc__.split("\n\n")[0],
                            epilog="Defaults reproduce the paper's recipe (../shared/REFERENCE.md).")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = cfg.config_from_args(args)
    try:
        run(config)
    except (TrainError, dsio.DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
