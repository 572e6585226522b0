"""Train the deep embedding model (paper Sec. 4.1) or the classification model (Sec. 4.2) on a
dataset directory.

    python train.py                        # demo corpus, (A+B)-X, embedding model, instrument-count
                                           side info
    python train.py --dataset fma --train-setup A --model classification
    python train.py --run-dir runs/x       # rerun after an interruption (kill, crash): resumes at
                                           the next epoch

`run` reads config -> data -> model -> fit -> save, with the original recipe (docs/original.md,
"Training"); bad input is found before TensorFlow starts: one `error: ...` line, exit status 2. A
run directory holds config.json, model.keras (best val_loss, or the last epoch with --weights last),
log.csv, training_curve.png, checkpoints/, backup/ and train_summary.json (at the end). config.json
also records the library versions and whether they match the lock file (requirements-lock.txt).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

import config as cfg
import dataset_dir as dsio
import splits
from config import (
    CONFIG_FILE,
    CURVE_FILE,
    LOG_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    ConfigError,
    RunDirError,
)
from fileio import (
    DISK_FULL,
    OutputError,
    atomic_write,
    cannot_write,
    claim_folder,
    output_lock,
    remove_temporaries,
    resolved,
    sha256_file,
    write_json,
)
from preprocess.frontend import AudioError
from preprocess.melstore import MelStore

PARTS = ("train", "valid")
# the versions the tests pass with
LOCK_FILE = Path(__file__).resolve().parent / "requirements-lock.txt"


class TrainError(ValueError):
    """Bad input found before training; the message names the file or flag and what to do."""


def _listing(items, limit: int = 20) -> str:
    return ", ".join(map(str, items[:limit])) + (
        f" ... ({len(items)} in all)" if len(items) > limit else ""
    )


# ---- data: resolved and checked before the model is built ----------------------------------------
@dataclass
class TrainingData:
    # resolved: canonical setup, side-info kind, epochs, absolute split path and its seed
    config: cfg.TrainConfig
    dataset: str
    dataset_dir: Path
    split_path: Path
    seen_labels: list[str]
    tracks: dict[str, list[str]]  # {"train", "valid"}: the setup's track ids
    # (n, L) uint8 seen labels of those tracks, L = len(seen_labels)
    positives: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]  # (n,) their rows in the mel store
    side_info_path: Path | None
    label_vectors: np.ndarray | None  # (L, side_dim) float32 (embedding model)
    mels_path: Path
    store_facts: dict  # {"mean", "std", "n_tracks"}

    @property
    def side_dim(self) -> int | None:
        return None if self.label_vectors is None else int(self.label_vectors.shape[1])


def prepare(config: cfg.TrainConfig) -> TrainingData:
    """Resolve and check everything a run needs: TrainError, ConfigError, DatasetError, SplitError
    or AudioError."""
    config = cfg.check_config(config)
    dataset_dir = resolve_dataset(config)
    annotations = dsio.read_annotations(dsio.annotations_path(dataset_dir))
    split_path = resolve_split(config, dataset_dir)
    # made from these annotations, however it was given
    split = splits.load_split(split_path, dsio.annotations_path(dataset_dir))
    tracks, seen = setup_tracks(split, config.train_setup, split_path)
    check_full_batch(len(tracks["train"]), config)
    positives = {part: dsio.label_matrix(annotations, tracks[part], seen) for part in PARTS}
    for part in PARTS:
        check_positives(tracks[part], positives[part], part, config)
    # the classification model reads no side information
    kind = resolve_side_info_kind(config, dataset_dir) if config.model == "embedding" else None
    side_path = vectors = None
    if kind is not None:
        side_path = dsio.resolve_side_info(dataset_dir, kind).resolve()
        # the ONE "label has no side vector" check; read_side_info checks finite
        vectors = dsio.side_vectors(
            dsio.read_side_info(side_path), seen, f"side information {side_path}"
        )
    facts, rows = store_rows(
        mels_path := resolved(dsio.mels_path(dataset_dir), "mel store"), tracks
    )
    dataset = dsio.dataset_name(dataset_dir)
    config = dataclasses.replace(
        config,
        side_info=kind,
        epochs=config.resolved_epochs(dataset),
        split=str(split_path),
        split_seed=int(split["seed"]),
    )
    # settings the model does not use are recorded as null
    config = dataclasses.replace(config, **cfg.UNUSED_SETTINGS.get(config.model, {}))
    return TrainingData(
        config,
        dataset,
        dataset_dir,
        split_path,
        list(seen),
        tracks,
        positives,
        rows,
        side_path,
        vectors,
        mels_path,
        facts,
    )


def resolve_dataset(config: cfg.TrainConfig) -> Path:
    """The dataset directory; the demo corpus is built (demo.build.ensure_demo, seed 0) when
    missing or empty, and used as it is when complete (whatever its seed)."""
    dataset_dir = dsio.resolve_dataset_dir(config.dataset)
    if config.dataset == "demo":
        from demo.build import ensure_demo

        if not dsio.mels_path(dataset_dir).is_file():
            print(f"building the demo corpus in {dataset_dir} (once) ...", flush=True)
        ensure_demo(dataset_dir)  # returns at once when the corpus is complete
    if not dataset_dir.is_dir():
        raise TrainError(
            f"dataset directory {dataset_dir} does not exist; build it first (data/README.md)."
        )
    return dataset_dir


def resolve_split(config: cfg.TrainConfig, dataset_dir: Path) -> Path:
    """--split, else the dataset's splits/split_seed<--split-seed>.json (made from annotations.csv
    when missing)."""
    if not config.split:
        return Path(splits.ensure_split(dataset_dir, seed=config.split_seed)).resolve()
    if not (path := resolved(config.split, "--split")).is_file():
        raise TrainError(f"--split {config.split}: no such file.")
    return path


def setup_tracks(split: dict, setup: str, split_path: Path) -> tuple[dict, list[str]]:
    """{"train", "valid"} track ids of the training setup, and its seen labels; each must be
    non-empty."""
    try:
        (train, seen), (valid, _) = (
            splits.setup_tracks_labels(split, setup, part) for part in PARTS
        )
    except ValueError as exc:
        raise TrainError(f"--train-setup {setup}: {exc}") from None
    if not train:
        raise TrainError(
            f"training setup {setup} of split {split_path} has no training tracks (empty group); "
            "choose another --train-setup."
        )
    if not valid:
        raise TrainError(
            f"training setup {setup} of split {split_path} has no validation tracks; val_loss "
            "drives "
            "early stopping and the learning-rate plateau (remake the split with more data)."
        )
    return {"train": list(train), "valid": list(valid)}, list(seen)


def check_full_batch(n_train: int, config: cfg.TrainConfig) -> None:
    """--last-batch drop trains on full batches only: there must be one."""
    if config.last_batch == "drop" and n_train < config.batch_size:
        raise TrainError(
            f"--last-batch drop: the {n_train} training tracks of {config.train_setup} fill no "
            "batch of "
            f"--batch-size {config.batch_size}; pass a smaller --batch-size or --last-batch keep."
        )


def resolve_side_info_kind(config: cfg.TrainConfig, dataset_dir: Path) -> str | None:
    """--side-info, else the first of config.DEFAULT_SIDE_INFO_ORDER the dataset has (None if it has
    none)."""
    available = dsio.available_side_info(dataset_dir)
    kind = config.side_info or next(
        (k for k in cfg.DEFAULT_SIDE_INFO_ORDER if k in available), None
    )
    if kind is None and config.model == "embedding":
        raise TrainError(
            f"dataset {dataset_dir} has none of the default side information "
            f"({', '.join(cfg.DEFAULT_SIDE_INFO_ORDER)}) in {dsio.side_info_dir(dataset_dir)}; "
            "available: "
            f"{', '.join(available) or 'none'}. Pass --side-info KIND."
        )
    return kind


def check_positives(
    tracks: list[str], positives: np.ndarray, part: str, config: cfg.TrainConfig
) -> None:
    """Every sample needs one seen positive and (embedding model) at least N seen negatives."""
    n_positive = positives.sum(axis=1)
    if empty := [t for t, n in zip(tracks, n_positive, strict=True) if n == 0]:
        raise TrainError(
            f"{len(empty)} {part} track(s) have no seen label in the annotations (the split does "
            "not "
            f"match annotations.csv?): {_listing(empty)}. Remake the split."
        )
    short = [
        t
        for t, n in zip(tracks, positives.shape[1] - n_positive, strict=True)
        if n < config.negatives
    ]
    if config.model == "embedding" and short:
        raise TrainError(
            f"--negatives {config.negatives}: {len(short)} {part} track(s) have fewer seen "
            "negative "
            f"labels than that: {_listing(short)}. Use fewer negatives."
        )


def store_rows(mels_path: Path, tracks: dict) -> tuple[dict, dict]:
    """The mel store's statistics and the store rows of the tracks (MelStore checks its front end
    and data)."""
    with MelStore(mels_path, in_memory=False) as store:
        if missing := [t for part in PARTS for t in tracks[part] if t not in store]:
            raise TrainError(
                f"{len(missing)} training/validation track(s) are missing from the mel store "
                f"{mels_path}: {_listing(missing)}. See the store's failure list beside it, fix or "
                "drop "
                "them (annotations.csv) and remake the split."
            )
        facts = {"mean": float(store.mean), "std": float(store.std), "n_tracks": len(store)}
        return facts, {
            part: np.array([store.index(t) for t in tracks[part]], dtype=np.int64) for part in PARTS
        }


# ---- the run directory and config.json -----------------------------------------------------------
def versions() -> dict:
    """Versions of the libraries that shape the result, the Keras backend in use and its own
    version(s)."""
    import importlib

    import keras

    backend = keras.backend.backend()
    found = {"python": platform.python_version(), "keras_backend": backend}
    for package in ("numpy", "keras", "h5py", "librosa"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    # the module's own version: tensorflow-cpu installs tensorflow
    for module in cfg.BACKEND_PACKAGES.get(backend, ()):
        with contextlib.suppress(ImportError, AttributeError):
            found[module] = importlib.import_module(module).__version__
    return found


def lock_check(lock_path: Path = LOCK_FILE) -> dict:
    """Whether the installed packages are the lock file's exact versions: {"lock", "matches",
    "differences"}; the lock's lines whose platform marker does not apply here are not checked,
    packages it lacks are ignored."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not Path(lock_path).is_file():
        return {
            "lock": Path(lock_path).name,
            "matches": False,
            "differences": ["the lock file is missing"],
        }
    differences = []
    for line in Path(lock_path).read_text(encoding="utf-8").splitlines():
        try:
            requirement = Requirement(line.split("#")[0].strip())
        except InvalidRequirement:  # a comment, a blank or an option line (--index-url ...)
            continue
        if requirement.marker and not requirement.marker.evaluate():
            continue
        locked = next((s.version for s in requirement.specifier if s.operator == "=="), None)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != locked:
            differences.append(
                f"{requirement.name}: locked {locked}, installed {installed or 'none'}"
            )
    return {"lock": Path(lock_path).name, "matches": not differences, "differences": differences}


def run_record(data: TrainingData) -> dict:
    """The content of config.json (evaluate.py rebuilds the run from it)."""
    side = data.side_info_path
    return {
        "config": data.config.to_dict(),
        "dataset": data.dataset,
        "dataset_dir": str(data.dataset_dir),
        "split_path": str(data.split_path),
        "side_info_path": side and str(side),
        "mels_path": str(data.mels_path),
        "seen_labels": data.seen_labels,
        # annotations and side information by content (reordered rows are the same data)
        "checksums": {
            "annotations": splits.annotations_file_sha256(dsio.annotations_path(data.dataset_dir)),
            "split": sha256_file(data.split_path),
            "side_info": side and dsio.side_info_sha256(dsio.read_side_info(side)),
            "mels": dict(data.store_facts),
        },
        "versions": versions(),
        "environment": lock_check(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": {
            "tracks": len(data.tracks["train"]),
            "valid_tracks": len(data.tracks["valid"]),
            "side_dim": data.side_dim,
            "n_labels": len(data.seen_labels),
        },
    }


def choose_run_dir(data: TrainingData) -> Path:
    config = data.config
    run_dir = (
        resolved(config.run_dir, "--run-dir")
        if config.run_dir
        else cfg.new_run_dir(
            data.dataset, config.model, config.side_info or "none", config.train_setup
        ).resolve()
    )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(
            f"--run-dir {run_dir} is a file, not a folder: pass a new folder or a run directory."
        )
    return run_dir


def check_same_run(run_dir: Path, record: dict) -> None:
    """An existing run directory may only be resumed with the same configuration and data."""
    try:
        existing = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        old, old_sums = dict(existing["config"]), dict(existing["checksums"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunDirError(
            f"{run_dir / CONFIG_FILE} is damaged or not a run's ({exc}): restore it, or pass a new "
            "--run-dir."
        ) from None
    # other side information: its kind or checksum differs
    new, new_sums = record["config"], record["checksums"]
    # a run from before settings the model does not use were recorded as null
    ignored = {*cfg.NO_EFFECT_FIELDS, *cfg.UNUSED_SETTINGS.get(new["model"], {})}
    changed = [
        k for k in sorted(set(old) | set(new)) if k not in ignored and old.get(k) != new.get(k)
    ]
    # a run trained before content digests recorded the files' bytes: the same bytes are the same
    files = {
        "annotations": dsio.annotations_path(record["dataset_dir"]),
        "side_info": record["side_info_path"],
    }
    changed += [
        f"checksum of {k}"
        for k in sorted(new_sums)
        if k not in ignored
        and old_sums.get(k) != new_sums.get(k)
        and not (files.get(k) and dsio.same_content(old_sums.get(k), files[k], new_sums[k]))
    ]
    if changed:
        details = "; ".join(
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}" if k in new else k for k in changed
        )
        raise TrainError(
            f"run directory {run_dir} holds a run with another configuration or other data "
            f"({details}). "
            "Rerun with the same flags to resume it, or pass a new --run-dir."
        )


# ---- model, fit, save ----------------------------------------------------------------------------
def run(config: cfg.TrainConfig) -> Path:
    """Train one model as configured; returns the run directory (errors: see `prepare`, and
    RunDirError)."""
    data = prepare(config)  # everything checked before TensorFlow starts
    config = data.config
    record = run_record(data)
    run_dir = choose_run_dir(data)
    if (run_dir / CONFIG_FILE).is_file():
        # this very run (marked, or made before the markers); any other config.json is refused
        check_same_run(run_dir, record)
        if (run_dir / SUMMARY_FILE).is_file():
            print(f"run {run_dir} has already finished (see {SUMMARY_FILE}); nothing to do.")
            return run_dir
    else:  # a folder of the user's is refused untouched
        claim_folder(run_dir, cfg.RUN_OWNER, hint="--run-dir takes a run directory of train.py.")
    from models import distribute, pipeline
    from models.callbacks import training_callbacks

    # the other workers of a multi-worker run: a copy
    run_dir = distribute.output_dir(run_dir, config.strategy)
    with output_lock(run_dir, "training run"):
        remove_temporaries(run_dir, run_dir / cfg.BACKUP_DIR, run_dir / cfg.CHECKPOINT_DIR)
        # the first TensorFlow call (multi-worker needs that)
        strategy = distribute.make_strategy(config.strategy)
        replicas = distribute.replicas(strategy)
        model = build_model(data, strategy)
        # log.csv cut to the epochs backed up
        callbacks, backup = training_callbacks(model, config, run_dir)
        first_epoch = backup.initial_epoch
        with MelStore(data.mels_path, in_memory=cfg.IN_MEMORY[config.in_memory]) as store:
            batches = pipeline.training_batches(
                store,
                {part: (data.rows[part], data.positives[part]) for part in PARTS},
                data.label_vectors,
                config.negatives or 0,  # None: the classification model draws none
                config.batch_size,
                config.seed,
                first_epoch,
                config.workers,
                replicas,
                config.last_batch,
                config.valid_draws,
                distribute.process_part(config.strategy),
            )
            loader = record["train"]["input_pipeline"] = pipeline.input_pipeline(store)
            if not (run_dir / CONFIG_FILE).is_file():
                write_json(
                    run_dir / CONFIG_FILE,
                    {**record, "config": {**record["config"], "run_dir": str(run_dir)}},
                )
            steps = batches["train"].sampler.steps
            print(
                f"{run_dir}: {steps} steps per epoch, {replicas} replica(s), {loader} input "
                "pipeline "
                f"({store.in_memory_reason})"
                + (f", resuming after epoch {first_epoch}" if first_epoch else "")
            )
            start = time.time()
            if first_epoch < config.epochs and not backup.stopped:
                with distribute.scope(strategy):  # the JAX trainer reads the distribution in fit
                    fit(model, batches, callbacks, first_epoch, config)
        summary = finish_run(
            run_dir,
            data,
            backup,
            time.time() - start,
            {"steps_per_epoch": steps, "replicas": replicas, "input_pipeline": loader},
        )
    print(
        f"best val_loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch'] + 1}; "
        f"{run_dir / MODEL_FILE}: "
        f"the weights of epoch {summary['model_epoch'] + 1} (--weights {config.weights})"
    )
    return run_dir


def build_model(data: TrainingData, strategy):
    """The embedding or classification model, compiled with the original optimizer and loss."""
    import keras

    import models
    from models.distribute import multi_worker_fixes, scope

    config = data.config
    # a run trained in this process before (reproduce.py) leaves no state behind
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    with scope(strategy):
        if config.model == "embedding":
            model = models.build_embedding_model(data.side_dim, config.negatives)
            loss = models.HingeRankingLoss(config.margin, config.loss_reduction)
        else:
            model = models.build_classification_model(len(data.seen_labels))
            loss = keras.losses.BinaryCrossentropy()
        optimizer = models.DecaySGD(
            config.lr, momentum=config.momentum, nesterov=True, decay=config.lr_decay
        )
        model.compile(optimizer=optimizer, loss=loss)
        # now, not at the first step: a resumed run restores into it
        optimizer.build(model.trainable_variables)
    if config.strategy == "multi-worker":
        multi_worker_fixes(model, strategy)
    return model


def fit(model, batches: dict, callbacks: list, first_epoch: int, config: cfg.TrainConfig) -> None:
    """model.fit on the batches; a non-finite loss or a damaged store ends training with one clear
    error."""
    if follow := getattr(batches["valid"], "follow_epochs", None):  # --valid-draws every-epoch
        callbacks = [follow(), *callbacks]
    try:
        # Build the loss and metrics on a validation batch first: the JAX and PyTorch trainers
        # otherwise take one batch from the training iterator to build them, and with --workers > 1
        # (a worker pool that goes on with the next index) every later batch would shift by one,
        # away from (seed, epoch, step).
        model.test_on_batch(*batches["valid"][0])
        model.fit(
            batches["train"],
            validation_data=batches["valid"],
            steps_per_epoch=batches["train"].sampler.steps,
            initial_epoch=first_epoch,
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,
        )
    except RuntimeError as exc:  # from keras.callbacks.TerminateOnNaN(raise_error=True)
        if "NaN or Inf loss" not in str(exc):
            raise
        default = cfg.TrainConfig()
        changed = [
            f"--{name.replace('_', '-')} {getattr(config, name)!r} "
            f"(default {getattr(default, name)!r})"
            for name in cfg.STEP_FIELDS
            if getattr(config, name) != getattr(default, name)
        ]
        cause = (
            f"the flags that set the step and differ from their defaults: {', '.join(changed)}; "
            "retrain closer to the defaults"
            if changed
            else "none of the flags that set the step (--"
            + ", --".join(cfg.STEP_FIELDS).replace("_", "-")
            + ") differ from their defaults; check the data (mel store, side information) and "
            "retrain"
        )
        raise TrainError(
            f"training stopped at the first non-finite loss ({exc}) Likely cause: {cause}, in a "
            "new --run-dir."
        ) from None
    # TensorFlow wraps a loader's error: MelStore refuses a track's non-finite frames
    except Exception as exc:
        if not (cause := re.search(r"AudioError: ([^\n]+)", str(exc))):
            raise
        raise AudioError(cause.group(1)) from None


def prior_val_loss(positives: dict[str, np.ndarray]) -> float:
    """The validation loss of the per-label prior: each seen label's frequency in the training
    tracks as the prediction for every validation track, under the classification model's loss
    (Keras' binary cross-entropy, mean over labels and tracks; its val_loss also holds the L2
    weight penalty). A classifier that does not get below it has learned no more than how common
    each label is."""
    import keras

    truth = positives["valid"].astype(np.float32)  # (n, L) multi-hot
    prior = np.broadcast_to(
        positives["train"].mean(axis=0, dtype=np.float32), truth.shape
    )  # (n, L)
    return float(keras.losses.BinaryCrossentropy()(truth, prior))


def finish_run(run_dir: Path, data: TrainingData, backup, seconds: float, extra: dict) -> dict:
    """training_curve.png, train_summary.json (with the sha256 of the final model.keras), backup
    removed."""
    from models.callbacks import plot_training_curve, read_log

    log = read_log(run_dir / LOG_FILE)
    best = int(np.nanargmin(log["val_loss"]))
    # the epoch model.keras holds
    kept = best if data.config.weights == "best" else len(log["epoch"]) - 1
    # bind the run's parts: the summary names config.json and the model, the model config.json
    config_sha256 = sha256_file(run_dir / CONFIG_FILE)
    stamp_model(run_dir / MODEL_FILE, config_sha256)
    summary = {
        "finished": True,
        "epochs_completed": len(log["epoch"]),
        "train_seconds": round(seconds, 1),
        "best_epoch": int(log["epoch"][best]),
        "best_val_loss": log["val_loss"][best],
        "weights": data.config.weights,
        "model_epoch": int(log["epoch"][kept]),
        "final_loss": log["loss"][-1],
        **extra,
        "config_sha256": config_sha256,
        "model_sha256": sha256_file(run_dir / MODEL_FILE),
        # the classification model's yardstick (the embedding model has no such prior)
        **(
            {"prior_val_loss": prior_val_loss(data.positives)}
            if data.config.model == "classification"
            else {}
        ),
    }
    plot_training_curve(
        run_dir / LOG_FILE,
        run_dir / CURVE_FILE,
        f"{data.dataset} {data.config.model} {data.config.side_info or ''} "
        f"{data.config.train_setup}",
    )
    write_json(run_dir / SUMMARY_FILE, summary)
    backup.remove()
    return summary


def stamp_model(path: Path, config_sha256: str) -> None:
    """Add config.MODEL_STAMP ({"config_sha256"}) to model.keras, a zip archive whose other members
    Keras reads by name (it ignores ours): the model then names the config.json it was trained
    for, and protocol.load_run refuses it in another run. Atomic; kept when already there."""

    def write(tmp: Path) -> None:
        shutil.copyfile(path, tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            if cfg.MODEL_STAMP not in archive.namelist():
                archive.writestr(cfg.MODEL_STAMP, json.dumps({"config_sha256": config_sha256}))

    atomic_write(path, write)


def main(argv=None) -> int:
    args = cfg.build_parser(
        description=__doc__.split("\n\n")[0], epilog="Defaults: the paper's recipe."
    ).parse_args(argv)
    try:
        cfg.check_backend()  # before Keras is imported
        run(cfg.config_from_args(args))
    except (
        TrainError,
        ConfigError,
        RunDirError,
        dsio.DatasetError,
        splits.SplitError,
        AudioError,
        OutputError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file Keras writes itself (model.keras, log.csv) on a full disk
        if exc.errno not in DISK_FULL:
            raise
        print(f"error: {cannot_write(exc.filename or 'the run directory', exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
