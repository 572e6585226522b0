"""One configuration for train.py and evaluate.py.

`TrainConfig` holds every training choice with the paper's default (../shared/REFERENCE.md); `build_parser` turns
it into argparse flags (help text from the field metadata), `TrainConfig.to_dict/from_dict` go to and from the
"config" entry of the run directory's config.json, and the registries below feed argparse
`choices` so an unknown name fails with the list of valid ones. No TensorFlow import here: `--help` must be fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
RUNS_ROOT = REPO_ROOT / "runs"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"

# ---------------------------------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------------------------------
MODELS = ("embedding", "classification")
STRATEGIES = ("default", "mirrored", "multi-worker")
LOSS_REDUCTIONS = ("sum", "mean")
# Side information picked when --side-info is not given: the first kind the dataset has, in this order.
DEFAULT_SIDE_INFO_ORDER = ("instrument-count", "glove")
# Epochs when --epochs is not given. The paper does not state a number; early stopping (patience 20) ends real runs.
DEFAULT_EPOCHS = {"demo": 40}
DEFAULT_EPOCHS_OTHER = 200


class SetupError(argparse.ArgumentTypeError, ValueError):
    """An unknown training setup (argparse prints its message as is; callers may catch ValueError)."""


def canonical_setup(name: str) -> str:
    """A training setup in the paper's spelling: 'AB', 'A+B', '(A+B)-X' -> '(A+B)-X' (names live in splits/).

    Raises ValueError (argparse turns it into a usage error) for test setups and unknown names.
    """
    import splits

    try:
        setup = splits.canonical_setup(name)
    except ValueError:
        setup = None
    if setup not in splits.TRAIN_SETUPS:
        raise SetupError(f"{name!r} is not one of {', '.join(splits.TRAIN_SETUPS)} (aliases A, B, AB).")
    return setup


def _flag(help_text: str, **extra):
    return {"help": help_text, **extra}


@dataclass
class TrainConfig:
    """Every choice of a training run; defaults reproduce the paper."""

    dataset: str = field(default="demo", metadata=_flag(
        "demo | fma | msd (data/<name>) or the path of a dataset directory (data/README.md). The demo corpus is "
        "built automatically when missing."))
    split: str | None = field(default=None, metadata=_flag(
        "split JSON (splits/README.md). Default: the dataset's splits/split_seed0.json, created if missing."))
    train_setup: str = field(default="(A+B)-X", metadata=_flag(
        "training setup: A-X, B-X or (A+B)-X (aliases A, B, AB). Paper default for Tables 2-3: all three; "
        "Table 4 uses A-X.", type=canonical_setup))
    model: str = field(default="embedding", metadata=_flag(
        "embedding (deep embedding model, paper Sec. 4.1) or classification (paper Sec. 4.2, Table 4).",
        choices=MODELS))
    side_info: str | None = field(default=None, metadata=_flag(
        "side information: instrument-count | instrument-confidence | glove | random | any file stem in the "
        "dataset's side_info/. Default: instrument-count, else glove."))
    negatives: int = field(default=1, metadata=_flag("negative labels per sample (paper: 1)."))
    margin: float = field(default=0.4, metadata=_flag("hinge-loss margin Delta (paper: 0.4)."))
    loss_reduction: str = field(default="sum", metadata=_flag(
        "sum (original: hinge loss summed over the batch) or mean.", choices=LOSS_REDUCTIONS))
    batch_size: int = field(default=64, metadata=_flag("batch size (original: 64)."))
    lr: float = field(default=0.001, metadata=_flag("SGD learning rate (paper: 0.001)."))
    lr_decay: float = field(default=1e-6, metadata=_flag(
        "Keras-2-style decay: lr_t = lr / (1 + decay * iteration) (paper: 1e-6)."))
    momentum: float = field(default=0.9, metadata=_flag("Nesterov momentum (paper: 0.9)."))
    epochs: int | None = field(default=None, metadata=_flag(
        f"maximum epochs (paper: not stated; early stopping ends the run). Default: "
        f"{DEFAULT_EPOCHS_OTHER}, {DEFAULT_EPOCHS['demo']} on the demo corpus."))
    patience: int = field(default=20, metadata=_flag("EarlyStopping patience on val_loss (original: 20)."))
    plateau_patience: int = field(default=5, metadata=_flag("ReduceLROnPlateau patience (original: 5)."))
    plateau_factor: float = field(default=0.2, metadata=_flag("ReduceLROnPlateau factor (original: 0.2)."))
    min_lr: float = field(default=1.6e-7, metadata=_flag("ReduceLROnPlateau min_lr (original: 1.6e-7)."))
    checkpoint_every: int = field(default=2, metadata=_flag("save a checkpoint every N epochs (original: 2)."))
    seed: int = field(default=0, metadata=_flag("seed for weights and sampling. The default split is always split_seed0.json (the paper has one split); "
        "make others with python -m splits.make --seed N and pass --split."))
    run_dir: str | None = field(default=None, metadata=_flag(
        "run directory (created). Default: a new folder under runs/. Rerunning with an existing run directory "
        "resumes an interrupted run."))
    strategy: str = field(default="default", metadata=_flag(
        "default (one device), mirrored (tf.distribute.MirroredStrategy, several GPUs) or multi-worker "
        "(MultiWorkerMirroredStrategy via TF_CONFIG, several machines).", choices=STRATEGIES))
    workers: int = field(default=2, metadata=_flag("parallel data-loading workers."))
    keep_checkpoints: int = field(default=0, metadata=_flag(
        "keep only the last N periodic checkpoints (checkpoints/epoch_NNN.keras); 0 keeps all (original)."))
    verbose: int = field(default=1, metadata=_flag(
        "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.", choices=(0, 1, 2)))

    # ---- derived values ----------------------------------------------------------------------------------------
    def resolved_epochs(self, dataset_name: str) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        return DEFAULT_EPOCHS.get(dataset_name, DEFAULT_EPOCHS_OTHER)

    # ---- persistence -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def build_parser(cls=TrainConfig, **parser_kwargs) -> argparse.ArgumentParser:
    """argparse parser with one --flag per dataclass field (underscores become dashes), help from metadata."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **parser_kwargs)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kwargs = {"default": f.default, "help": meta.pop("help", "")}
        if "type" not in meta:
            base = f.type if isinstance(f.type, type) else str(f.type)
            text = str(base)
            if "int" in text:
                kwargs["type"] = int
            elif "float" in text:
                kwargs["type"] = float
            else:
                kwargs["type"] = str
        kwargs.update(meta)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace, cls=TrainConfig):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


# ---------------------------------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------------------------------
def new_run_dir(dataset: str, model: str, side_info: str, train_setup: str, root: Path = RUNS_ROOT) -> Path:
    """runs/<YYYYmmdd-HHMMSS>_<dataset>_<model>_<side_info>_<setup>, made unique with a numeric suffix."""
    setup = re.sub(r"[^A-Za-z0-9]+", "", train_setup)  # (A+B)-X -> ABX
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}_{dataset}_{model}_{side_info}_{setup}"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)
    path = Path(root) / stem
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{stem}_{suffix}"
    return path


def latest_run_dir(root: Path = RUNS_ROOT) -> Path:
    """The most recently modified run directory under `root` that holds a config.json."""
    root = Path(root)
    runs = [p for p in root.glob("*") if (p / CONFIG_FILE).is_file()] if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no run directory with a {CONFIG_FILE} under {root}; train a model first "
                                "(python train.py) or pass --run-dir.")
    return max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime)


def read_run_config(run_dir) -> dict:
    """The run's config.json as a dict (keys: "config" = TrainConfig fields, plus resolved paths/checksums)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a training run directory.")
    return json.loads(path.read_text(encoding="utf-8"))
