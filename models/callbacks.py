"""The training callbacks of the original recipe (docs/original.md, "Training"), and the training
log.

Stock Keras does the recipe: EarlyStopping(val_loss, patience 20), ReduceLROnPlateau(val_loss,
factor 0.2, patience 5, min_lr 1.6e-7) on the optimizer's base rate (`models.DecaySGD` applies the
Keras-2 decay on top, as Keras 2 did), ModelCheckpoint(model.keras: best val_loss, or every epoch so
that the last one stays with --weights last), CSVLogger(log.csv) and TerminateOnNaN. Two small
`LambdaCallback`s add the decayed rate to the log ("lr", beside ReduceLROnPlateau's base
"learning_rate") and a checkpoint every N epochs. The one custom callback is `TrainingBackup`: Keras
keeps the counters of EarlyStopping, ReduceLROnPlateau and ModelCheckpoint in memory only, so it
saves them with the variables after every epoch and restores them on resume.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import zipfile
from pathlib import Path

import keras
import numpy as np

from config import BACKUP_DIR, CHECKPOINT_DIR, LOG_FILE, MODEL_FILE, RunDirError
from fileio import atomic_write, atomic_write_text, write_json

STATE_FILE = "state.json"
WEIGHTS_FILE = "epoch_{:04d}.npz"  # the backup of an epoch's variables


class TrainingBackup(keras.callbacks.Callback):
    """Exact resume after kill -9: put it LAST in the callback list.

    After every epoch the model's and the optimizer's variables (weights, iteration counter, base
    learning rate, momenta) go to folder/epoch_NNNN.npz, then folder/state.json (replaced
    atomically, so a kill at any moment leaves the previous complete backup) records that file, the
    epoch, whether training stopped, and the `COUNTERS` of the stateful callbacks. `on_train_begin`
    restores all of it after the other callbacks have reset themselves; `initial_epoch` tells `fit`
    where to go on.
    """

    COUNTERS = {
        "EarlyStopping": ("best", "wait", "best_epoch", "stopped_epoch"),
        "ReduceLROnPlateau": ("best", "wait", "cooldown_counter"),
        "ModelCheckpoint": ("best",),
    }

    def __init__(self, folder, stateful: list):
        super().__init__()
        self.folder = Path(folder)
        self.stateful = {type(callback).__name__: callback for callback in stateful}
        self.state = self._read_state()

    def _damaged(self, path, problem) -> RunDirError:
        return RunDirError(
            f"the training backup {path} is damaged ({problem}): delete the folder {self.folder} "
            "to "
            "restart this run from its first epoch, or pass a new --run-dir."
        )

    def _read_state(self) -> dict | None:
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            counters = [
                state["callbacks"][name][attr]
                for name in self.stateful
                for attr in self.COUNTERS[name]
            ]
            if not (
                isinstance(state["epoch"], int)
                and isinstance(state["stopped"], bool)
                and all(v is None or isinstance(v, (int, float)) for v in counters)
            ):
                raise ValueError("a value has the wrong type")
            if not (self.folder / state["weights"]).is_file():
                raise ValueError(f"{state['weights']} is missing")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise self._damaged(path, exc) from None
        return state

    @property
    def initial_epoch(self) -> int:
        """0 for a new run, else the epoch after the last one backed up."""
        return 0 if self.state is None else self.state["epoch"] + 1

    @property
    def stopped(self) -> bool:
        """True when early stopping had already ended the backed-up run."""
        return bool(self.state and self.state["stopped"])

    def _variables(self) -> list:
        return list(self.model.weights) + list(self.model.optimizer.variables)

    def on_train_begin(self, logs=None):
        if self.state is None:
            return
        path = self.folder / self.state["weights"]
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise self._damaged(path, exc) from None
        variables = self._variables()  # the optimizer is built: train.build_model builds it
        if [a.shape for a in arrays] != [tuple(v.shape) for v in variables]:
            raise self._damaged(path, "its arrays do not fit this model")
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(array)
        for name, callback in self.stateful.items():
            for attr, value in self.state["callbacks"][name].items():
                setattr(callback, attr, value)

    def on_epoch_end(self, epoch, logs=None):
        name = WEIGHTS_FILE.format(epoch)
        arrays = [keras.ops.convert_to_numpy(v) for v in self._variables()]
        atomic_write(self.folder / name, lambda tmp: np.savez(tmp, *arrays))
        counters = {
            key: {attr: _plain(getattr(callback, attr)) for attr in self.COUNTERS[key]}
            for key, callback in self.stateful.items()
        }
        self.state = {
            "epoch": int(epoch),
            "weights": name,
            "stopped": bool(self.model.stop_training),
            "callbacks": counters,
        }
        write_json(self.folder / STATE_FILE, self.state)
        self._remove_weights(epoch)

    def _remove_weights(self, stop: int) -> None:
        """Delete the weights this backup wrote for the epochs before `stop` (none other)."""
        for old in range(stop):
            (self.folder / WEIGHTS_FILE.format(old)).unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the backup (the run has finished): its own files, then the folder if empty."""
        self._remove_weights(self.initial_epoch)
        (self.folder / STATE_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def _plain(value):
    # numpy scalar -> Python number, for JSON
    return value.item() if hasattr(value, "item") else value


def training_callbacks(model, config, run_dir: Path) -> tuple[list, TrainingBackup]:
    """The callback list of `config` (a config.TrainConfig) and its backup, in the order each
    epoch's logs flow: the "lr" column before the plateau's decision, CSVLogger after the columns
    are in, the backup last. log.csv is cut to the epochs the backup holds (a resumed run trains the
    later ones again)."""
    plateau = keras.callbacks.ReduceLROnPlateau(
        "val_loss",
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        min_lr=config.min_lr,
        verbose=1,
    )
    stopping = keras.callbacks.EarlyStopping("val_loss", patience=config.patience, verbose=1)
    # Not written atomically, but a kill while it writes is undone: the backup still holds the
    # previous epoch, which the rerun trains again and saves.
    best = keras.callbacks.ModelCheckpoint(
        run_dir / MODEL_FILE, monitor="val_loss", save_best_only=config.weights == "best"
    )
    backup = TrainingBackup(run_dir / BACKUP_DIR, [plateau, stopping, best])
    # CSVLogger appends to the epochs backed up
    truncate_log(run_dir / LOG_FILE, backup.initial_epoch)
    decayed_rate = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: logs.update(lr=model.optimizer.current_learning_rate())
    )

    # checkpoints/epoch_NNN.keras (1-based) every N epochs, the last `keep` of those kept
    def checkpoint(epoch, logs):
        every = config.checkpoint_every
        keep = config.keep_checkpoints
        if every and (epoch + 1) % every == 0:
            atomic_write(run_dir / CHECKPOINT_DIR / f"epoch_{epoch + 1:03d}.keras", model.save)
            # the checkpoints this run wrote, oldest first: only those are pruned
            for old in range(every, epoch + 2, every)[:-keep] if keep else ():
                (run_dir / CHECKPOINT_DIR / f"epoch_{old:03d}.keras").unlink(missing_ok=True)

    return [
        keras.callbacks.TerminateOnNaN(raise_error=True),
        decayed_rate,
        plateau,
        stopping,
        best,
        keras.callbacks.LambdaCallback(on_epoch_end=checkpoint),
        keras.callbacks.CSVLogger(str(run_dir / LOG_FILE), append=True),
        backup,
    ], backup


# ---- log.csv -------------------------------------------------------------------------------------
def truncate_log(path: Path, first_epoch: int) -> None:
    """Keep the rows of the epochs before `first_epoch` (later ones are trained again), one per
    epoch, in order.

    Rows that do not parse (a second header, a torn line) are dropped, so a damaged log never blocks
    a resume.
    """
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = list(csv.reader(handle))
    header = rows[0] if rows else []
    kept = {}
    for row in rows[1:] if "epoch" in header else []:
        try:
            epoch = int(float(row[header.index("epoch")]))
        except (ValueError, IndexError):
            continue
        if len(row) == len(header) and 0 <= epoch < first_epoch:
            kept[epoch] = row
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(
        [header, *(kept[e] for e in sorted(kept))] if kept else []
    )
    atomic_write_text(path, text.getvalue())


def read_log(path: Path) -> dict[str, list[float]]:
    """log.csv -> {column: values} (an empty cell is NaN)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key] or math.nan) for row in rows] for key in (rows[0] if rows else [])}


def plot_training_curve(log_path: Path, out_path: Path, title: str) -> None:
    """training_curve.png: loss and val_loss, and the base and decayed learning rates, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_log(log_path)
    epochs = [e + 1 for e in log.get("epoch", [])]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for ax, columns in (
        (ax_loss, {"loss": "loss", "val_loss": "val_loss"}),
        (ax_lr, {"learning_rate": "base learning rate", "lr": "decayed learning rate"}),
    ):
        for key, label in columns.items():
            if key in log:
                ax.plot(epochs, log[key], marker=".", label=label)
        ax.legend()
    ax_loss.set(ylabel="loss", title=title)
    ax_lr.set(ylabel="learning rate", xlabel="epoch", yscale="log")
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
