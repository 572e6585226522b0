"""Training callbacks (../shared/REFERENCE.md, "Training") whose state survives `kill -9` and a rerun.

Original callbacks: EarlyStopping(val_loss, patience 20), ReduceLROnPlateau(val_loss, factor 0.2, patience 5,
min_lr 1.6e-7), a checkpoint every 2 epochs and a CSV log. Keras 3 keeps the counters of EarlyStopping and
ReduceLROnPlateau in memory only, and its BackupAndRestore saves the weights but not those counters. Here:

* `ResumableReduceLROnPlateau` / `ResumableEarlyStopping` are the Keras callbacks plus `get_state`/`set_state`.
  The plateau callback assigns the optimizer's *base* learning rate; `models.DecaySGD` applies the Keras-2 decay
  on top, so both effects combine as in Keras 2.
* `BestModelSaver` writes model.keras whenever val_loss improves (atomically: a temp file, then a rename).
* `PeriodicCheckpoint` writes checkpoints/epoch_NNN.keras every N epochs.
* `LearningRateLogger` adds `lr` (the decayed step size in effect at the end of the epoch) to the epoch logs,
  next to Keras' `learning_rate` (the base rate, before this epoch's plateau decision).
* `TrainingBackup` (put it LAST in the callback list) saves, after every epoch, the model and optimizer variables
  (weights, momenta, iteration counter, base learning rate), the early-stopping best weights and the counters of
  the callbacks above into backup/; `on_train_begin` restores all of it after the other callbacks reset
  themselves, and `initial_epoch()` tells `fit` where to continue.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import keras
import numpy as np

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"
BEST_WEIGHTS_FILE = "best_weights.h5"


def _float_or_none(value):
    return None if value is None else float(value)


def atomic_save_model(model: keras.Model, path) -> None:
    """model.save(path) through a sibling temp file and a rename, so `path` is never a partial zip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


def write_weight_list(path, weights) -> None:
    """A list of numpy arrays (model.get_weights() order) -> HDF5 datasets "0", "1", ..."""
    with h5py.File(path, "w") as handle:
        handle.attrs["count"] = len(weights)
        for i, array in enumerate(weights):
            handle.create_dataset(str(i), data=np.asarray(array))


def read_weight_list(path) -> list[np.ndarray]:
    with h5py.File(path, "r") as handle:
        return [handle[str(i)][()] for i in range(int(handle.attrs["count"]))]


class LearningRateLogger(keras.callbacks.Callback):
    """logs["lr"] = base learning rate / (1 + decay * iterations) at the end of the epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        if hasattr(optimizer, "current_learning_rate"):
            logs["lr"] = optimizer.current_learning_rate()
        else:
            logs["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """keras.callbacks.ReduceLROnPlateau with its counters exposed for backup/restore."""

    def get_state(self) -> dict:
        return {"best": _float_or_none(self.best), "wait": int(self.wait),
                "cooldown_counter": int(self.cooldown_counter)}

    def set_state(self, state: dict) -> None:
        self.best = state["best"]
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """keras.callbacks.EarlyStopping with its counters exposed (best weights are saved by TrainingBackup)."""

    def get_state(self) -> dict:
        return {"best": _float_or_none(self.best), "wait": int(self.wait), "best_epoch": int(self.best_epoch),
                "stopped_epoch": int(self.stopped_epoch)}

    def set_state(self, state: dict) -> None:
        self.best = state["best"]
        self.wait = int(state["wait"])
        self.best_epoch = int(state["best_epoch"])
        self.stopped_epoch = int(state["stopped_epoch"])


class BestModelSaver(keras.callbacks.Callback):
    """Save the whole model to `path` each time `monitor` improves (strictly lower; EarlyStopping's criterion)."""

    def __init__(self, path, monitor: str = "val_loss"):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best = None
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or not np.isfinite(current):
            return
        if self.best is None or current < self.best:
            self.best, self.best_epoch = float(current), int(epoch)
            atomic_save_model(self.model, self.path)

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Save the model to folder/epoch_NNN.keras (1-based epoch) every `every` epochs; keep the last `keep`
    (0 = all)."""

    def __init__(self, folder, every: int = 2, keep: int = 0):
        super().__init__()
        self.folder = Path(folder)
        self.every = int(every)
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
        if self.every <= 0 or (epoch + 1) % self.every:
            return
        atomic_save_model(self.model, self.folder / f"epoch_{epoch + 1:03d}.keras")
        if self.keep > 0:
            for old in sorted(self.folder.glob("epoch_*.keras"))[:-self.keep]:
                old.unlink(missing_ok=True)


class TrainingBackup(keras.callbacks.Callback):
    """Fault tolerance: resume an interrupted `fit` at the epoch after the last finished one.

    Layout: folder/state.json -> {"epoch": last finished epoch (0-based), "dir": "epoch_NNNN", "stopped": bool,
    "callbacks": {name: state}}, folder/epoch_NNNN/{model.weights.h5, best_weights.h5}. An epoch's files are
    written into a temp folder, renamed, and only then does state.json (replaced atomically) point to them, so a
    kill at any moment leaves the previous complete backup in place.

    Args:
        folder: backup folder (created).
        stateful: {name: callback with get_state()/set_state()} to save and restore.
        early_stopping: the EarlyStopping callback whose best weights are saved (or None).
    """

    def __init__(self, folder, stateful: dict, early_stopping=None):
        super().__init__()
        self.folder = Path(folder)
        self.stateful = dict(stateful)
        self.early_stopping = early_stopping
        self._restored = None

    def read_state(self) -> dict | None:
        """The saved state, or None when there is no complete backup."""
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        state = json.loads(path.read_text(encoding="utf-8"))
        if not (self.folder / state["dir"] / WEIGHTS_FILE).is_file():
            return None
        return state

    def initial_epoch(self) -> int:
        """The epoch to start from: 0 for a fresh run, last finished epoch + 1 after an interruption."""
        state = self.read_state()
        return 0 if state is None else int(state["epoch"]) + 1

    def stopped(self) -> bool:
        """True when the backed-up run had already been stopped by early stopping."""
        state = self.read_state()
        return bool(state and state.get("stopped"))

    def on_train_begin(self, logs=None):
        state = self.read_state()
        self._restored = state
        if state is None:
            return
        folder = self.folder / state["dir"]
        optimizer = self.model.optimizer
        if not optimizer.built:  # Keras builds it lazily at the first step; the saved momenta need it now
            strategy = getattr(self.model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                optimizer.build(self.model.trainable_variables)
        self.model.load_weights(folder / WEIGHTS_FILE)  # model + optimizer variables (iterations, base lr, momenta)
        iterations = int(keras.ops.convert_to_numpy(optimizer.iterations))
        if "iterations" in state and iterations != state["iterations"]:
            raise RuntimeError(f"backup {folder}: the optimizer state was not restored (iterations {iterations}, "
                               f"saved {state['iterations']}); delete {self.folder} to restart from scratch.")
        for name, callback in self.stateful.items():
            if name in state["callbacks"]:
                callback.set_state(state["callbacks"][name])
        best = folder / BEST_WEIGHTS_FILE
        if self.early_stopping is not None and best.is_file():
            self.early_stopping.best_weights = read_weight_list(best)

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch:04d}"
        tmp = self.folder / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.model.save_weights(tmp / WEIGHTS_FILE)
        best = getattr(self.early_stopping, "best_weights", None)
        if best is not None:
            write_weight_list(tmp / BEST_WEIGHTS_FILE, best)
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        state = {"epoch": int(epoch), "dir": name, "stopped": bool(self.model.stop_training), "iterations": iterations,
                 "callbacks": {key: cb.get_state() for key, cb in self.stateful.items()},
                 "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
        state_tmp = self.folder / f".{STATE_FILE}.partial"
        state_tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(state_tmp, self.folder / STATE_FILE)
        for old in self.folder.glob("epoch_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def remove(self) -> None:
        """Delete the backup (after a finished run)."""
        shutil.rmtree(self.folder, ignore_errors=True)
