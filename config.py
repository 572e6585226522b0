"""One configuration for train.py and evaluate.py, and the run directory's file names.

`TrainConfig` holds every training choice; each flag's help says whose its default is: the paper's,
the original code's where the paper is silent, or ours (docs/original.md);
`build_parser` turns it into argparse flags (help from the field metadata), `check_config` refuses
values that cannot work (naming the flag), and config.json's "config" entry is
`TrainConfig.to_dict()`. No TensorFlow here: `--help` must be fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import splits

REPO_ROOT = Path(__file__).resolve().parent
RUNS_ROOT = REPO_ROOT / "runs"
# The files of a run directory
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
# a member train.py adds to model.keras (a zip archive): the run's config.json hash
MODEL_STAMP = "zsl-music-run.json"
SUMMARY_FILE = "train_summary.json"
LOG_FILE = "log.csv"
CURVE_FILE = "training_curve.png"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
RUN_OWNER = "train.py"  # the fileio marker of a run directory

MODELS = ("embedding", "classification")
STRATEGIES = ("default", "mirrored", "multi-worker", "data-parallel")
LOSS_REDUCTIONS = ("sum", "mean")
WEIGHTS = ("best", "last")  # which epoch's weights become model.keras
LAST_BATCH = ("drop", "keep")  # the last, partial training batch of an epoch
VALID_DRAWS = ("once", "every-epoch")  # validation crops and labels
# training flags that change nothing in the trained model: a resumed run may change them, aggregates
# ignore them
NO_EFFECT_FIELDS = ("run_dir", "verbose", "workers", "keep_checkpoints", "in_memory")
# settings a model does not use: config.json records them as null, --collect ignores them
UNUSED_SETTINGS = {
    "classification": dict.fromkeys(("side_info", "loss_reduction", "margin", "negatives"))
}
# where training reads the mel store from (MelStore in_memory)
IN_MEMORY = {"auto": None, "yes": True, "no": False}
# the Keras backends we train with, and the packages each needs (the first is its module)
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and Keras take seeds in 0..2^32-1
# the flags that set the size of a training step (a non-finite loss names those changed)
STEP_FIELDS = ("lr", "lr_decay", "margin", "momentum", "loss_reduction", "batch_size")
# Side information picked when --side-info is not given: the first kind the dataset has, in this
# order.
DEFAULT_SIDE_INFO_ORDER = ("instrument-count", "glove")
# Epochs when --epochs is not given. The paper does not state a number; early stopping (patience 20)
# ends real runs.
DEFAULT_EPOCHS = {"demo": 40}
DEFAULT_EPOCHS_OTHER = 200


class ConfigError(ValueError):
    """A flag value that cannot work; the message names the flag."""


class RunDirError(ValueError):
    """A run directory that cannot be used as it is (a file, a damaged config.json or backup)."""


class SetupError(argparse.ArgumentTypeError, ConfigError):
    """An unknown training setup (argparse prints its message as is)."""


def canonical_setup(name: str) -> str:
    """A training setup in the paper's spelling: 'AB', 'A+B', '(A+B)-X' -> '(A+B)-X' (names live in
    splits/)."""
    try:
        setup = splits.canonical_setup(name)
    except ValueError:
        setup = None
    if setup not in splits.TRAIN_SETUPS:
        raise SetupError(
            f"{name!r} is not one of {', '.join(splits.TRAIN_SETUPS)} (aliases A, B, AB)."
        )
    return setup


def _flag(help_text: str, **extra):
    return {"help": help_text, **extra}


@dataclass
class TrainConfig:
    """Every choice of a training run; defaults: the paper's where it gives a value, else the
    original code's, except --epochs, --weights and --valid-draws (ours; each help names the flag
    that restores the original)."""

    dataset: str = field(
        default="demo",
        metadata=_flag(
            "demo | fma | msd (data/<name>) or a dataset directory (data/README.md); the demo is "
            "built when missing."
        ),
    )
    split: str | None = field(
        default=None,
        metadata=_flag(
            "split JSON (splits/README.md); wins over --split-seed. Default: the dataset's split "
            "of --split-seed."
        ),
    )
    split_seed: int = field(
        default=0,
        metadata=_flag(
            "seed of the default split, the dataset's splits/split_seed<N>.json (made when "
            "missing); config.json "
            "records the seed of the split used."
        ),
    )
    train_setup: str = field(
        default="(A+B)-X",
        metadata=_flag(
            "A-X, B-X or (A+B)-X (aliases A, B, AB); Tables 2-3 use all three, Table 4 A-X.",
            type=canonical_setup,
        ),
    )
    model: str = field(
        default="embedding",
        metadata=_flag(
            "embedding (deep embedding model, paper Sec. 4.1) or classification (Sec. 4.2, Table "
            "4).",
            choices=MODELS,
        ),
    )
    side_info: str | None = field(
        default=None,
        metadata=_flag(
            "a file stem in the dataset's side_info/ (instrument-count, glove...); default: "
            "instrument-count, else glove. Embedding model only (classification: recorded null)."
        ),
    )
    negatives: int = field(
        default=1, metadata=_flag("negative labels per sample (paper: one). Embedding model only.")
    )
    margin: float = field(
        default=0.4,
        metadata=_flag(
            "hinge-loss margin Delta: the paper gives no value; 0.4 is the original code's "
            "default. Embedding model only."
        ),
    )
    loss_reduction: str = field(
        default="sum",
        metadata=_flag(
            "sum (original code: hinge loss summed over the batch; the paper is silent) or mean. "
            "Embedding model only.",
            choices=LOSS_REDUCTIONS,
        ),
    )
    batch_size: int = field(
        default=64, metadata=_flag("batch size (original code: 64; the paper is silent).")
    )
    lr: float = field(default=0.001, metadata=_flag("SGD learning rate (paper: 0.001)."))
    lr_decay: float = field(
        default=1e-6,
        metadata=_flag("Keras-2-style decay: lr_t = lr / (1 + decay * iteration) (paper: 1e-6)."),
    )
    momentum: float = field(default=0.9, metadata=_flag("Nesterov momentum (paper: 0.9)."))
    epochs: int | None = field(
        default=None,
        metadata=_flag(
            f"maximum epochs (early stopping ends a run); ours: {DEFAULT_EPOCHS_OTHER}, by dataset "
            f"{DEFAULT_EPOCHS} (the paper gives none; the original's budget: --epochs 20 "
            "--weights last)."
        ),
    )
    patience: int = field(
        default=20, metadata=_flag("EarlyStopping patience on val_loss (original code: 20).")
    )
    plateau_patience: int = field(
        default=5, metadata=_flag("ReduceLROnPlateau patience (original code: 5).")
    )
    plateau_factor: float = field(
        default=0.2, metadata=_flag("ReduceLROnPlateau factor (original code: 0.2).")
    )
    min_lr: float = field(
        default=1.6e-7, metadata=_flag("ReduceLROnPlateau min_lr (original code: 1.6e-7).")
    )
    checkpoint_every: int = field(
        default=2, metadata=_flag("save a checkpoint every N epochs (original code: 2).")
    )
    weights: str = field(
        default="best",
        metadata=_flag(
            "what becomes model.keras: best (ours: the epoch of the lowest val_loss) or last (the "
            "last epoch trained; the original's budget is --epochs 20 --weights last).",
            choices=WEIGHTS,
        ),
    )
    last_batch: str = field(
        default="drop",
        metadata=_flag(
            "drop: floor(n / batch size) training batches per epoch, the last partial batch left "
            "out (original code); keep: ceil, every track every epoch.",
            choices=LAST_BATCH,
        ),
    )
    valid_draws: str = field(
        default="once",
        metadata=_flag(
            "once: validation crops and labels drawn once, so val_loss compares across epochs "
            "(early stopping and "
            "the best weights read it; ours); every-epoch: new draws every epoch (original code).",
            choices=VALID_DRAWS,
        ),
    )
    seed: int = field(
        default=0,
        metadata=_flag("seed for weights and sampling (the split has its own: --split-seed)."),
    )
    run_dir: str | None = field(
        default=None,
        metadata=_flag(
            "run directory: a new or empty folder (created; default: a new folder under runs/), or "
            "one train.py made, which resumes its interrupted run; other folders are refused."
        ),
    )
    strategy: str = field(
        default="default",
        metadata=_flag(
            "default (one device); TensorFlow: mirrored (several GPUs) or multi-worker (machines, "
            "TF_CONFIG); JAX: data-parallel (every device, hosts via jax.distributed).",
            choices=STRATEGIES,
        ),
    )
    in_memory: str = field(
        default="auto",
        metadata=_flag(
            "auto: hold the mel store in RAM (float16) when it fits in half the memory available, "
            "else read it lazily "
            "from the file; yes / no force either (same batches).",
            choices=tuple(IN_MEMORY),
        ),
    )
    workers: int = field(
        default=1,
        metadata=_flag(
            "1: batches load in one thread beside training (best on few cores); N > 1: in N worker "
            "processes."
        ),
    )
    keep_checkpoints: int = field(
        default=0,
        metadata=_flag(
            "keep only the last N periodic checkpoints (checkpoints/epoch_NNN.keras); 0 keeps all "
            "(original)."
        ),
    )
    verbose: int = field(
        default=1,
        metadata=_flag(
            "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
            choices=(0, 1, 2),
        ),
    )

    def resolved_epochs(self, dataset_name: str) -> int:
        return (
            int(self.epochs)
            if self.epochs is not None
            else DEFAULT_EPOCHS.get(dataset_name, DEFAULT_EPOCHS_OTHER)
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_config(config: TrainConfig) -> TrainConfig:
    """ConfigError naming the first flag whose value cannot work; returns a copy with the setup in
    canonical form."""
    rules = [
        ("negatives", config.negatives >= 1, "at least 1"),
        ("batch_size", config.batch_size >= 1, "at least 1"),
        ("lr", config.lr > 0, "> 0"),
        ("lr_decay", config.lr_decay >= 0, ">= 0"),
        ("margin", config.margin >= 0, ">= 0"),
        ("momentum", 0 <= config.momentum < 1, "in [0, 1)"),
        ("epochs", config.epochs is None or config.epochs >= 1, "at least 1"),
        ("patience", config.patience >= 0, ">= 0"),
        ("plateau_patience", config.plateau_patience >= 0, ">= 0"),
        ("plateau_factor", 0 < config.plateau_factor < 1, "in (0, 1)"),
        ("min_lr", config.min_lr >= 0, ">= 0"),
        ("checkpoint_every", config.checkpoint_every >= 0, ">= 0 (0 = no periodic checkpoints)"),
        ("keep_checkpoints", config.keep_checkpoints >= 0, ">= 0 (0 = keep all)"),
        ("seed", 0 <= config.seed <= MAX_SEED, f"in 0..{MAX_SEED} (numpy's and Keras' seeds)"),
        ("split_seed", 0 <= config.split_seed <= MAX_SEED, f"in 0..{MAX_SEED}"),
        ("workers", config.workers >= 1, "at least 1"),
    ]
    for name, ok, rule in rules:
        value = getattr(config, name)
        if isinstance(value, float) and not math.isfinite(value):
            ok, rule = False, f"a finite number {rule}"
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} {value!r} must be {rule}.")
    for name, choices in (
        ("model", MODELS),
        ("strategy", STRATEGIES),
        ("loss_reduction", LOSS_REDUCTIONS),
        ("weights", WEIGHTS),
        ("last_batch", LAST_BATCH),
        ("valid_draws", VALID_DRAWS),
        ("in_memory", tuple(IN_MEMORY)),
    ):
        if getattr(config, name) not in choices:
            raise ConfigError(
                f"--{name.replace('_', '-')} {getattr(config, name)!r}: not one of "
                f"{', '.join(choices)}"
            )
    try:
        return dataclasses.replace(config, train_setup=canonical_setup(config.train_setup))
    except SetupError as exc:
        raise ConfigError(f"--train-setup {exc}") from None


def check_backend() -> None:
    """ConfigError when KERAS_BACKEND names a backend that does not exist or is not installed;
    call it before Keras is imported (Keras then fails with a traceback)."""
    name = os.environ.get("KERAS_BACKEND")
    installed = [
        b for b, packages in BACKEND_PACKAGES.items() if importlib.util.find_spec(packages[0])
    ]
    if name is not None and name not in installed:
        raise ConfigError(
            f"KERAS_BACKEND={name!r} "
            + (
                "is not installed"
                if name in BACKEND_PACKAGES
                else "is not a Keras backend we run on"
            )
            + f": set it to one of {', '.join(installed)} (installed), or unset it for tensorflow."
        )


def build_parser(skip: tuple[str, ...] = (), **parser_kwargs) -> argparse.ArgumentParser:
    """argparse parser with one --flag per TrainConfig field (underscores become dashes), help from
    metadata; `skip`: fields the caller sets itself (reproduce.py chooses the seeds and run
    directories)."""
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, **parser_kwargs
    )
    for f in (f for f in dataclasses.fields(TrainConfig) if f.name not in skip):
        kwargs = {
            "default": f.default,
            "type": next((t for t in (int, float) if t.__name__ in str(f.type)), str),
        }
        kwargs.update(f.metadata)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def new_run_dir(
    dataset: str, model: str, side_info: str, train_setup: str, root: Path = RUNS_ROOT
) -> Path:
    """runs/<YYYYmmdd-HHMMSS>_<dataset>_<model>_<side_info>_<setup>, made unique with a numeric
    suffix."""
    setup = re.sub(r"[^A-Za-z0-9]+", "", train_setup)  # (A+B)-X -> ABX
    stem = re.sub(
        r"[^A-Za-z0-9_.-]+",
        "-",
        f"{time.strftime('%Y%m%d-%H%M%S')}_{dataset}_{model}_{side_info}_{setup}",
    )
    path = Path(root) / stem
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{stem}_{suffix}"
    return path


def latest_run_dir(root: Path = RUNS_ROOT) -> Path:
    """The most recently modified run directory under `root` that holds a config.json."""
    runs = [p for p in Path(root).glob("*") if (p / CONFIG_FILE).is_file()]
    if not runs:
        raise FileNotFoundError(
            f"no run directory with a {CONFIG_FILE} under {root}; train a model first "
            "(python train.py) or pass --run-dir."
        )
    return max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime)
