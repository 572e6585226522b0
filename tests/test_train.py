"""Tests of train.py and its callbacks (models/callbacks.py); the input pipeline's are in
test_pipeline.py.

Datasets are tiny synthetic dataset directories (data/README.md layout) written in tmp_path: a few
dozen tracks, labels whose mel "signatures" are summed into the tracks' frames (so a model can learn
something), random side vectors, the mel store written with the documented HDF5 layout, and a split
from splits.make_split. Everything that fails before training runs in-process without training;
training runs are marked slow.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

import config as cfg
import dataset_dir as dsio
import splits
import train
from fileio import MARKER_FILE, output_lock, sha256_file
from models.callbacks import STATE_FILE, truncate_log
from models.pipeline import Sampler
from preprocess.frontend import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE
from preprocess.melstore import MelStore

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


# --------------------------------------------------------------------------------------------------
# Fixtures: a synthetic dataset directory
# --------------------------------------------------------------------------------------------------
def write_store(path: Path, track_ids, mels, n_mels: int = N_MELS) -> None:
    """Write a store with the documented layout (track_ids, offsets, mel + front-end attributes)."""
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in mels])]).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "track_ids",
            data=np.array(list(track_ids), dtype=object),
            dtype=h5py.string_dtype("utf-8"),
        )
        handle.create_dataset("offsets", data=offsets)
        handle.create_dataset("mel", data=np.concatenate(mels).astype(np.float32))
        attrs = {
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "n_mels": n_mels,
            "mean": 0.0,
            "std": 1.0,
        }
        for key, value in attrs.items():
            handle.attrs[key] = value


def make_dataset(
    root: Path,
    n_tracks: int = 48,
    n_labels: int = 10,
    side_dim: int = 12,
    seed: int = 0,
    drop_side_labels: int = 0,
) -> Path:
    """A dataset directory with learnable mels; returns it (split at splits/split_seed0.json)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels = [f"g{j:02d}" for j in range(n_labels)]
    track_ids = [str(100 + i) for i in range(n_tracks)]
    signatures = rng.normal(size=(n_labels, N_MELS))
    pairs, mels = [], []
    for i, track in enumerate(track_ids):
        mine = rng.choice(n_labels, size=int(rng.integers(1, 4)), replace=False)
        pairs += [(track, labels[j]) for j in mine]
        # every 7th track is shorter than a crop
        length = 90 if i % 7 == 0 else int(rng.integers(140, 260))
        mels.append(signatures[mine].sum(0) + 0.5 * rng.normal(size=(length, N_MELS)))
    dsio.write_tracks(
        dsio.tracks_path(root),
        pd.DataFrame({"track_id": track_ids, "path": [f"audio/{t}.wav" for t in track_ids]}),
    )
    dsio.write_annotations(
        dsio.annotations_path(root), pd.DataFrame(pairs, columns=["track_id", "label"])
    )
    kept = labels[drop_side_labels:]
    dsio.write_side_info(
        dsio.side_info_path(root, "instrument-count"), kept, rng.normal(size=(len(kept), side_dim))
    )
    write_store(dsio.mels_path(root), track_ids, mels)
    split = splits.make_split(dsio.read_annotations(dsio.annotations_path(root)), seed=0)
    splits.save_split(split, splits.default_split_path(root, 0))
    return root


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


def tiny_config(dataset: Path, run_dir: Path, **overrides) -> cfg.TrainConfig:
    values = dict(
        dataset=str(dataset),
        run_dir=str(run_dir),
        batch_size=8,
        epochs=2,
        lr=0.01,
        verbose=0,
        workers=1,
    )
    values.update(overrides)
    return cfg.TrainConfig(**values)


def flags(dataset: Path, run_dir: Path, *extra) -> list[str]:
    return [
        "--dataset",
        str(dataset),
        "--run-dir",
        str(run_dir),
        "--batch-size",
        "8",
        "--verbose",
        "0",
        *extra,
    ]


def train_steps(dataset: Path, batch_size: int = 8) -> int:
    """Batches per epoch of the default --last-batch drop: floor(n / batch_size)."""
    split = splits.load_split(splits.default_split_path(dataset))
    return len(splits.setup_tracks_labels(split, "(A+B)-X", "train")[0]) // batch_size


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------------
# Bad input: one clear error, exit status 2, before any model is trained
# --------------------------------------------------------------------------------------------------
def run_main(argv, capsys):
    status = train.main(argv)
    return status, capsys.readouterr().err


def test_labels_without_side_vector_are_listed(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", drop_side_labels=3)
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    split = splits.load_split(splits.default_split_path(data))
    missing = sorted(set(split["seen"]) & {"g00", "g01", "g02"})
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert f"{len(missing)} label(s) have no side-information vector" in err
    assert str(dsio.side_info_path(data, "instrument-count")) in err and all(
        label in err for label in missing
    )
    assert not (tmp_path / "run").exists()  # nothing written


def test_store_dimension_mismatch(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    with h5py.File(dsio.mels_path(data), "r+") as handle:
        handle.attrs["n_mels"] = 64
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and "n_mels" in err and "128" in err and str(dsio.mels_path(data)) in err


def write_record(dataset: Path, run_dir: Path, **config) -> dict:
    record = train.run_record(train.prepare(tiny_config(dataset, run_dir, **config)))
    run_dir.mkdir()
    (run_dir / cfg.CONFIG_FILE).write_text(json.dumps(record))
    return record


def test_other_side_information_on_resume_is_refused(tmp_path, capsys, dataset_dir):
    record = write_record(dataset_dir, tmp_path / "run")
    # trained with another side_info file (e.g. 40-d, not 12-d)
    record["checksums"]["side_info"] = "0" * 64
    (tmp_path / "run" / cfg.CONFIG_FILE).write_text(json.dumps(record))
    status, err = run_main(
        flags(dataset_dir, tmp_path / "run", "--epochs", "2", "--lr", "0.01"), capsys
    )
    assert (
        status == 2
        and "holds a run with another configuration or other data (checksum of side_info)" in err
    )


def test_resume_with_other_flags_is_refused(tmp_path, capsys, dataset_dir):
    write_record(dataset_dir, tmp_path / "run")
    status, err = run_main(
        flags(dataset_dir, tmp_path / "run", "--epochs", "2", "--lr", "0.5"), capsys
    )
    assert status == 2 and "lr: 0.01 -> 0.5" in err and "pass a new --run-dir" in err
    (tmp_path / "run" / cfg.CONFIG_FILE).write_text("{not json")
    status, err = run_main(flags(dataset_dir, tmp_path / "run"), capsys)
    assert status == 2 and f"{tmp_path / 'run' / cfg.CONFIG_FILE} is damaged" in err


def test_classification_run_records_unused_settings_as_null(tmp_path, dataset_dir):
    unused = cfg.UNUSED_SETTINGS["classification"]
    data = train.prepare(
        tiny_config(dataset_dir, tmp_path / "run", model="classification", loss_reduction="mean")
    )
    record = train.run_record(data)
    assert {key: record["config"][key] for key in unused} == dict.fromkeys(unused)
    assert record["side_info_path"] is None and record["checksums"]["side_info"] is None
    embedding = train.run_record(train.prepare(tiny_config(dataset_dir, tmp_path / "emb")))
    assert (embedding["config"]["side_info"], embedding["config"]["loss_reduction"]) == (
        "instrument-count",
        "sum",
    )
    # a classification run written before (unused settings recorded) still resumes
    old = tmp_path / "old"
    old.mkdir()
    recorded = {"side_info": "instrument-count", "loss_reduction": "sum", "margin": 0.4}
    (old / cfg.CONFIG_FILE).write_text(
        json.dumps(
            {
                **record,
                "config": {**record["config"], **recorded, "negatives": 1},
                "checksums": {**record["checksums"], "side_info": "0" * 64},
            }
        )
    )
    train.check_same_run(old, record)
    with pytest.raises(train.TrainError, match=r"lr: 0.01 -> 0.5"):
        train.check_same_run(old, {**record, "config": {**record["config"], "lr": 0.5}})


def test_prior_val_loss_is_the_cross_entropy_of_the_label_frequencies():
    rng = np.random.default_rng(0)
    positives = {
        "train": (rng.uniform(size=(50, 6)) < 0.3).astype(np.uint8),
        "valid": (rng.uniform(size=(9, 6)) < 0.3).astype(np.uint8),
    }
    positives["train"][0] = 1  # every label has a training positive: no clipping at 0
    prior = positives["train"].mean(axis=0)  # (6,)
    truth = positives["valid"]
    expected = -np.mean(truth * np.log(prior) + (1 - truth) * np.log(1 - prior))
    assert train.prior_val_loss(positives) == pytest.approx(expected, rel=1e-5)


def test_empty_training_setup(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    split = splits.load_split(splits.default_split_path(data))
    # Move group B out of the split (as if no track had both seen and unseen labels).
    split["dropped"] = sorted(split["dropped"] + split["B"])
    split["B"], split["train"]["B"], split["valid"]["B"] = [], [], []
    split["train"]["A+B"], split["valid"]["A+B"] = split["train"]["A"], split["valid"]["A"]
    splits.save_split(split, tmp_path / "noB.json")
    status, err = run_main(
        flags(data, tmp_path / "run", "--split", str(tmp_path / "noB.json"), "--train-setup", "B"),
        capsys,
    )
    assert status == 2 and "training setup B-X" in err and "no training tracks" in err


def test_unknown_names_and_bad_numbers(tmp_path, capsys, dataset_dir):
    # argparse: --train-setup is parsed by config.canonical_setup
    with pytest.raises(SystemExit) as exc:
        train.main(flags(dataset_dir, tmp_path / "run", "--train-setup", "Z-X"))
    assert exc.value.code == 2 and "--train-setup" in capsys.readouterr().err
    with pytest.raises(
        cfg.ConfigError, match=r"--train-setup 'Z-X' is not one of A-X, B-X, \(A\+B\)-X"
    ):
        train.run(tiny_config(dataset_dir, tmp_path / "run", train_setup="Z-X"))
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--side-info", "glove"), capsys)
    assert status == 2 and "--side-info 'glove'" in err and "instrument-count" in err
    status, err = run_main(flags(tmp_path / "nowhere", tmp_path / "run"), capsys)
    assert status == 2 and "not an existing directory" in err
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--negatives", "0"), capsys)
    assert status == 2 and "--negatives 0 must be at least 1" in err
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--negatives", "9"), capsys)
    assert status == 2 and "--negatives 9" in err and "fewer seen negative labels" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flag", ["--lr", "--lr-decay", "--margin", "--momentum", "--min-lr", "--plateau-factor"]
)
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_float_flags_must_be_finite(tmp_path, capsys, dataset_dir, flag, value):
    status, err = run_main(flags(dataset_dir, tmp_path / "run", flag, value), capsys)
    assert status == 2 and f"error: {flag} {float(value)!r} must be a finite number" in err


@pytest.mark.parametrize("flag", ["--seed", "--split-seed"])
@pytest.mark.parametrize("value", ["-1", str(2**32)])
def test_seeds_outside_numpys_range_are_refused_before_anything_is_made(
    tmp_path, capsys, dataset_dir, flag, value
):
    """numpy's and Keras' seeds are 0..2^32-1: a seed of 2^32 was a traceback from inside Keras,
    after the run folder had been made."""
    status, err = run_main(
        flags(dataset_dir, tmp_path / "run", flag, value, "--epochs", "1"), capsys
    )
    assert status == 2 and err == f"error: {flag} {value} must be in 0..4294967295" + (
        " (numpy's and Keras' seeds).\n" if flag == "--seed" else ".\n"
    )
    assert not (tmp_path / "run").exists()
    assert not splits.default_split_path(dataset_dir, int(value)).exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path, capsys, dataset_dir):
    (tmp_path / "run").write_text("mine")
    status, err = run_main(flags(dataset_dir, tmp_path / "run"), capsys)
    assert status == 2 and f"error: --run-dir {tmp_path / 'run'} is a file, not a folder" in err
    assert (tmp_path / "run").read_text() == "mine"


USER_FOLDERS = {
    "notes": {"notes.txt": "my notes", "backup/thesis.tex": "my backup"},
    "run-like": {
        "log.csv": "my log",
        "model.keras": "my model",
        "checkpoints/epoch_002.keras": "x",
    },
    "home": {".bashrc": "alias ll='ls -l'", "Documents/cv.txt": "me"},
    "git checkout": {".git/HEAD": "ref: refs/heads/main", "README.md": "# mine", "src/a.py": ""},
    "a project": {"config.json": '{"name": "mine"}', "data.csv": "a,b\n"},  # not a run's config
}


@pytest.mark.parametrize("kind", USER_FOLDERS)
def test_a_folder_of_the_users_is_refused_as_run_dir_untouched(tmp_path, capsys, dataset_dir, kind):
    """Training ran in a user's folder, then deleted its backup/ and overwrote log.csv and
    model.keras: --run-dir takes a new or empty folder, or one train.py made (its marker)."""
    folder = tmp_path / "mine"
    for rel, text in USER_FOLDERS[kind].items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    status, err = run_main(flags(dataset_dir, folder, "--epochs", "1"), capsys)
    assert status == 2 and err.count("\n") == 1 and str(folder) in err
    assert "was not made by `train.py`" in err or "is damaged or not a run's" in err
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_backup_removal_deletes_only_the_backups_own_files(tmp_path):
    """The finished run removed backup/ whole, with whatever else was in it."""
    from models.callbacks import TrainingBackup

    folder = tmp_path / cfg.BACKUP_DIR
    folder.mkdir()
    state = {"epoch": 3, "weights": "epoch_0003.npz", "stopped": False, "callbacks": {}}
    (folder / STATE_FILE).write_text(json.dumps(state))
    # epoch 2's weights: a kill came between the new state and their removal
    for name in ("epoch_0002.npz", "epoch_0003.npz", "thesis.tex", "epoch_final.npz"):
        (folder / name).write_text("x")
    TrainingBackup(folder, []).remove()
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_final.npz", "thesis.tex"]
    (folder / "thesis.tex").unlink()
    (folder / "epoch_final.npz").unlink()
    (folder / STATE_FILE).write_text(json.dumps(state))
    (folder / "epoch_0003.npz").write_text("x")
    TrainingBackup(folder, []).remove()
    assert not folder.exists()  # empty: removed


def test_keep_checkpoints_prunes_only_this_runs_checkpoints(tmp_path, dataset_dir):
    """--keep-checkpoints deleted every checkpoints/epoch_*.keras but the last N, a user's too."""
    from models.callbacks import training_callbacks

    class Model:  # what the checkpoint callback uses of a Keras model
        def save(self, path):
            Path(path).write_bytes(b"weights")

    run_dir = tmp_path / "run"
    (run_dir / cfg.CHECKPOINT_DIR).mkdir(parents=True)
    mine = ["epoch_final.keras", "epoch_best_of_mine.keras", "mine.keras"]
    for name in mine:
        (run_dir / cfg.CHECKPOINT_DIR / name).write_text("my model")
    config = tiny_config(dataset_dir, run_dir, checkpoint_every=2, keep_checkpoints=2)
    callbacks, _ = training_callbacks(Model(), config, run_dir)
    (checkpoint,) = [
        c for c in callbacks if getattr(c.on_epoch_end, "__name__", "") == "checkpoint"
    ]
    for epoch in range(8):
        checkpoint.on_epoch_end(epoch, {})
    assert sorted(p.name for p in (run_dir / cfg.CHECKPOINT_DIR).iterdir()) == sorted(
        ["epoch_006.keras", "epoch_008.keras", *mine]
    )


def test_a_rerun_removes_stale_temporaries_of_its_own_only(
    tmp_path, capsys, dataset_dir, monkeypatch
):
    """A kill leaves atomic_write's temporaries (0 bytes when it came early); the rerun removes them
    from the run directory, its backup/ and checkpoints/, and nothing else."""
    run_dir = tmp_path / "run"
    write_record(dataset_dir, run_dir, epochs=1)
    stale = [
        ".model.k2x_9ab1.tmp.keras",
        "backup/.state.a1b2c3d4.tmp.json",
        "checkpoints/.epoch_002.zz99aa11.tmp.keras",
        ".log.q1w2e3r4.tmp.csv",
    ]
    kept = ["notes.tmp", ".hidden.tmp.txt.bak", "backup/.cache.tmp"]
    for rel in stale + kept:
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_bytes(b"")

    def stop(*args):  # the run stops right after the cleaning
        raise RuntimeError("stop here")

    monkeypatch.setattr(train, "build_model", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        train.run(tiny_config(dataset_dir, run_dir, epochs=1))
    assert [rel for rel in stale + kept if (run_dir / rel).exists()] == kept


def test_non_finite_loss_names_the_step_flags_that_differ_from_their_defaults(dataset_dir):
    """The message blamed --lr even when --margin (or --lr-decay) had made the loss overflow."""

    class Model:  # model.fit meets a non-finite loss (keras.callbacks.TerminateOnNaN)
        def test_on_batch(self, *batch):
            pass

        def fit(self, *args, **kwargs):
            raise RuntimeError("NaN or Inf loss encountered at batch 0.")

    batches = {"valid": [((), ())], "train": SimpleNamespace(sampler=SimpleNamespace(steps=1))}
    cases = {
        "margin": (
            {"margin": 1e38, "lr_decay": 0.5},
            "the flags that set the step and differ from their defaults: --lr-decay 0.5 (default "
            "1e-06), --margin 1e+38 (default 0.4); retrain closer to the defaults, in a new "
            "--run-dir.",
        ),
        "none": (
            {},
            "none of the flags that set the step (--lr, --lr-decay, --margin, --momentum, "
            "--loss-reduction, --batch-size) differ from their defaults; check the data",
        ),
    }
    for overrides, message in cases.values():
        config = cfg.TrainConfig(dataset=str(dataset_dir), **overrides)
        with pytest.raises(train.TrainError) as caught:
            train.fit(Model(), batches, [], 0, config)
        assert message in str(caught.value) and "--lr 0.001" not in str(caught.value)


def test_side_information_beyond_float32_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    path = dsio.side_info_path(data, "instrument-count")
    lines = path.read_text().splitlines()
    # v0 of the first label
    lines[1] = ",".join([lines[1].split(",")[0], "1e300", *lines[1].split(",")[2:]])
    path.write_text("\n".join(lines) + "\n")
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and str(path) in err and "too large for float32" in err


def test_explicit_split_is_checked_against_the_annotations(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    split_copy = tmp_path / "split.json"
    split_copy.write_text(splits.default_split_path(data).read_text())
    with open(dsio.annotations_path(data), "a") as handle:
        # one more annotated track: the split was made from other annotations
        handle.write("999,g00\n")
    status, err = run_main(flags(data, tmp_path / "run", "--split", str(split_copy)), capsys)
    assert status == 2 and str(split_copy) in err and "splits.make" in err


def test_second_training_on_one_run_dir_is_refused_at_once(tmp_path, capsys, dataset_dir):
    with output_lock(tmp_path / "run", "training run"):  # another train.py holds the run directory
        status, err = run_main(flags(dataset_dir, tmp_path / "run"), capsys)
    assert status == 2 and f"another training run is writing {tmp_path / 'run'}" in err
    # nothing but the lock and the marker of a run directory
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", MARKER_FILE]


def test_damaged_backup_state_names_the_file(tmp_path, capsys, dataset_dir):
    write_record(dataset_dir, tmp_path / "run")
    (tmp_path / "run" / cfg.BACKUP_DIR).mkdir()
    state = tmp_path / "run" / cfg.BACKUP_DIR / STATE_FILE
    for text in (
        "{torn",
        json.dumps({"epoch": "three", "weights": "x.npz", "stopped": False, "callbacks": {}}),
    ):
        state.write_text(text)
        status, err = run_main(
            flags(dataset_dir, tmp_path / "run", "--epochs", "2", "--lr", "0.01"), capsys
        )
        assert (
            status == 2
            and f"the training backup {state} is damaged" in err
            and "delete the folder" in err
        )


def test_default_dataset_is_the_demo_built_on_demand(tmp_path, monkeypatch):
    """`python train.py` with no flags: data/demo, built by demo.build.ensure_demo(dir) when
    missing (seed 0; a complete corpus of any seed is used as it is: test_demo.py); (A+B)-X,
    embedding model, instrument-count side information, config.DEFAULT_EPOCHS["demo"] epochs."""
    import demo.build

    calls = []

    def fake_ensure_demo(dataset_dir):
        calls.append(Path(dataset_dir))
        make_dataset(Path(dataset_dir))
        return Path(dataset_dir)

    monkeypatch.setattr(dsio, "DATA_ROOT", tmp_path / "data")
    monkeypatch.setattr(demo.build, "ensure_demo", fake_ensure_demo)
    # the 39 training tracks here fill no batch of 64
    data = train.prepare(cfg.TrainConfig(batch_size=8))
    demo_dir = (tmp_path / "data" / "demo").resolve()
    assert calls == [demo_dir]
    assert data.dataset == "demo" and data.dataset_dir == demo_dir
    assert data.config.train_setup == "(A+B)-X" and data.config.model == "embedding"
    assert (
        data.config.side_info == "instrument-count"
        and data.config.epochs == cfg.DEFAULT_EPOCHS["demo"]
    )
    assert data.split_path == splits.default_split_path(demo_dir, 0)
    assert data.label_vectors.shape == (len(data.seen_labels), 12)


def test_tracks_missing_from_store(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    split = splits.load_split(splits.default_split_path(data))
    with MelStore(dsio.mels_path(data), in_memory=True) as store:
        keep = [i for i, t in enumerate(store.track_ids) if t not in split["train"]["A+B"][:3]]
        ids, mels = [store.track_ids[i] for i in keep], [store.frames(i) for i in keep]
    write_store(dsio.mels_path(data), ids, mels)
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and "3 training/validation track(s) are missing from the mel store" in err
    assert all(track in err for track in split["train"]["A+B"][:3])


def test_help_does_not_import_tensorflow():
    code = "import sys, train; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False False"
    out = subprocess.run(
        [PYTHON, "train.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert "--loss-reduction" in out.stdout and "(default: 0.4)" in out.stdout


def test_log_truncation_drops_epochs_to_redo_and_repairs_a_torn_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,val_loss\n0,3.0,2.0\n1,2.5,1.9\n2,2.4,1.8\n")
    truncate_log(log, 2)
    assert log.read_text() == "epoch,loss,val_loss\n0,3.0,2.0\n1,2.5,1.9\n"
    truncate_log(log, 0)
    assert log.read_text() == ""
    # Two writers (before the lock existed): two headers, interleaved and torn rows.
    log.write_text(
        "epoch,loss,val_loss\n0,3.0,2.0\nepoch,loss,val_loss\n0,3.1,2.1\n1,2.5,1.9\n1,2.6\nx,1,2\n"
    )
    truncate_log(log, 5)
    assert log.read_text() == "epoch,loss,val_loss\n0,3.1,2.1\n1,2.5,1.9\n"


# --------------------------------------------------------------------------------------------------
# Training (slow)
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_short_training_run_lowers_the_loss_and_fills_the_run_dir(tmp_path, dataset_dir):
    import keras

    import models

    run_dir = train.run(
        tiny_config(dataset_dir, tmp_path / "run", epochs=4, lr=0.02, checkpoint_every=2)
    )
    rows = read_csv_rows(run_dir / cfg.LOG_FILE)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert list(rows[0]) == ["epoch", "learning_rate", "loss", "lr", "val_loss"]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]
    assert (run_dir / cfg.CURVE_FILE).stat().st_size > 1000
    assert sorted(p.name for p in (run_dir / cfg.CHECKPOINT_DIR).iterdir()) == [
        "epoch_002.keras",
        "epoch_004.keras",
    ]
    assert not (run_dir / cfg.BACKUP_DIR).exists()
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # no temporaries left

    record = json.loads((run_dir / cfg.CONFIG_FILE).read_text())
    split_path = splits.default_split_path(dataset_dir)
    split = splits.load_split(split_path)
    assert (
        record["config"]["train_setup"] == "(A+B)-X"
        and record["config"]["side_info"] == "instrument-count"
    )
    assert record["config"]["epochs"] == 4 and record["config"]["run_dir"] == str(run_dir)
    assert record["dataset"] == dataset_dir.name and record["dataset_dir"] == str(
        dataset_dir.resolve()
    )
    assert (
        record["split_path"] == str(split_path.resolve()) and record["seen_labels"] == split["seen"]
    )
    assert record["checksums"]["split"] == sha256_file(split_path)
    assert record["checksums"]["annotations"] == sha256_file(dsio.annotations_path(dataset_dir))
    assert record["checksums"]["mels"] == {"mean": 0.0, "std": 1.0, "n_tracks": 48}
    assert {"tensorflow", "keras", "numpy", "keras_backend"} <= set(record["versions"])
    assert record["train"] == {
        "tracks": len(split["train"]["A+B"]),
        "valid_tracks": len(split["valid"]["A+B"]),
        "side_dim": 12,
        "n_labels": len(split["seen"]),
        "input_pipeline": "numpy-in-memory",
    }

    summary = json.loads((run_dir / cfg.SUMMARY_FILE).read_text())
    assert summary["input_pipeline"] == "numpy-in-memory" and summary["replicas"] == 1
    assert summary["model_sha256"] == sha256_file(run_dir / cfg.MODEL_FILE)
    val = [float(r["val_loss"]) for r in rows]
    assert summary["best_epoch"] == int(np.argmin(val)) and summary["epochs_completed"] == 4
    assert summary["weights"] == "best" and summary["model_epoch"] == summary["best_epoch"]
    assert summary["best_val_loss"] == pytest.approx(min(val))

    # model.keras is the best-val_loss model and loads without custom_objects.
    model = keras.saving.load_model(run_dir / cfg.MODEL_FILE)
    assert models.get_semantic_module(model).input_shape == (None, 12)
    assert int(model.optimizer.iterations.numpy()) == train_steps(dataset_dir) * (
        summary["best_epoch"] + 1
    )

    # Rerunning a finished run directory does nothing.
    assert (
        train.run(tiny_config(dataset_dir, run_dir, epochs=4, lr=0.02, checkpoint_every=2))
        == run_dir
    )
    assert len(read_csv_rows(run_dir / cfg.LOG_FILE)) == 4


@pytest.mark.slow
def test_classification_run_from_a_lazily_read_store(tmp_path, dataset_dir, monkeypatch, capsys):
    """A store too large for the memory available is read lazily; the same pipeline says and records
    it."""
    import keras

    import preprocess.melstore

    monkeypatch.setattr(preprocess.melstore, "available_memory", lambda: 0)
    run_dir = train.run(
        tiny_config(dataset_dir, tmp_path / "run", epochs=1, model="classification")
    )
    assert "numpy-lazy input pipeline" in capsys.readouterr().out
    assert json.loads((run_dir / cfg.SUMMARY_FILE).read_text())["input_pipeline"] == "numpy-lazy"
    record = json.loads((run_dir / cfg.CONFIG_FILE).read_text())
    assert record["train"]["input_pipeline"] == "numpy-lazy" and record["train"]["side_dim"] is None
    assert record["config"]["side_info"] is None and record["config"]["loss_reduction"] is None
    config = tiny_config(dataset_dir, tmp_path / "run", epochs=1, model="classification")
    summary = json.loads((run_dir / cfg.SUMMARY_FILE).read_text())
    assert summary["prior_val_loss"] == train.prior_val_loss(train.prepare(config).positives)
    model = keras.saving.load_model(run_dir / cfg.MODEL_FILE)
    assert (
        model.output_shape
        == (None, len(record["seen_labels"]))
        == (None, record["train"]["n_labels"])
    )
    assert model.get_layer("classifier").activation.__name__ == "sigmoid"
    # --in-memory yes forces RAM (and says so); the batches, hence the losses, are the same
    forced = train.run(
        tiny_config(
            dataset_dir, tmp_path / "forced", epochs=1, model="classification", in_memory="yes"
        )
    )
    out = capsys.readouterr().out
    assert (
        "numpy-in-memory input pipeline (0.00 GB store, 0.0 GB memory available: as asked)" in out
    )
    lazy_loss, ram_loss = (
        float(read_csv_rows(folder / cfg.LOG_FILE)[0]["loss"]) for folder in (run_dir, forced)
    )
    assert ram_loss == pytest.approx(lazy_loss, rel=1e-5)


@pytest.mark.slow
def test_non_finite_loss_stops_training_with_its_likely_cause(tmp_path, capsys, dataset_dir):
    status, err = run_main(
        flags(dataset_dir, tmp_path / "run", "--epochs", "2", "--lr", "1e30", "--workers", "1"),
        capsys,
    )
    assert status == 2 and "first non-finite loss" in err and "--lr 1e+30" in err
    assert not (tmp_path / "run" / cfg.SUMMARY_FILE).exists()


@pytest.mark.slow
def test_disk_full_while_training_is_one_line_and_the_rerun_resumes(
    tmp_path, capsys, dataset_dir, monkeypatch
):
    """ENOSPC from a file Keras writes itself (model.keras, every epoch with --weights last) in
    epoch 2 was a traceback: now one line, and the rerun goes on after epoch 1 (backed up)."""
    import keras

    real_save = keras.Model.save
    saves = []

    def save(model, *args, **kwargs):
        saves.append(args)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    run_dir = tmp_path / "run"
    argv = flags(dataset_dir, run_dir, "--epochs", "3", "--lr", "0.01", "--weights", "last")
    argv += ["--checkpoint-every", "0"]
    status, err = run_main(argv, capsys)
    assert status == 2 and err == (
        "error: no space left on the device writing the run directory: free some space and "
        "rerun; what was finished is kept and the rerun goes on from it.\n"
    )
    monkeypatch.setattr(keras.Model, "save", real_save)
    assert train.main(argv) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in read_csv_rows(run_dir / cfg.LOG_FILE)] == [0, 1, 2]
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_damaged_store_met_while_training_is_one_clear_error(tmp_path, capsys):
    """NaN frames in a track that MelStore's check on open does not sample, first read by batch 3 of
    epoch 1 (inside TensorFlow's input pipeline): train.py names the store in one line."""
    data = make_dataset(tmp_path / "d")
    prepared = train.prepare(tiny_config(data, tmp_path / "run"))
    with MelStore(dsio.mels_path(data)) as store:
        rows = prepared.rows["train"]
        order = Sampler(prepared.positives["train"], store.lengths[rows], 1, 8, 0, "train").order(0)
    # MelStore's sample of 8 tracks
    checked_on_open = set(np.linspace(0, 47, 8).astype(int).tolist())
    row = next(int(rows[i]) for i in order[16:] if int(rows[i]) not in checked_on_open)
    with h5py.File(dsio.mels_path(data), "r+") as handle:
        start, stop = handle["offsets"][row : row + 2]
        handle["mel"][start:stop] = np.nan
    status = train.main(flags(data, tmp_path / "run", "--epochs", "1", "--lr", "0.01"))
    out, err = capsys.readouterr()
    assert "steps per epoch" in out  # training had started
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(
        f"error: {dsio.mels_path(data)}: non-finite values in track(s) ['{100 + row}']"
    )


def kill_after_two_epochs(
    command: list[str], env: dict, run_dir: Path, timeout: float = 120
) -> int:
    """Start a training command, kill -9 it once its backup holds epoch >= 1; returns the last
    backed-up epoch."""
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state_file, deadline = run_dir / cfg.BACKUP_DIR / STATE_FILE, time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, (
        f"training ended before it could be killed: {process.stderr.read()[-2000:]}"
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return json.loads(state_file.read_text())["epoch"]


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path, dataset_dir):
    """kill -9 in the middle of training, rerun the same command: it continues after the last
    finished epoch, with the optimizer's iteration counter (hence the decayed learning rate) and the
    plateau counters restored, and validates on the draws of each epoch (--valid-draws every-epoch)
    as the uninterrupted run does."""
    run_dir = tmp_path / "run"
    epochs, decay, lr0, patience = 12, 0.01, 0.05, 2
    command = [
        PYTHON,
        "train.py",
        *flags(
            dataset_dir,
            run_dir,
            "--epochs",
            str(epochs),
            "--lr-decay",
            str(decay),
            "--lr",
            str(lr0),
            "--plateau-patience",
            str(patience),
            "--workers",
            "1",
            "--valid-draws",
            "every-epoch",
        ),
    ]
    finished = kill_after_two_epochs(command, ENV, run_dir)
    assert finished < epochs - 1 and not (run_dir / cfg.SUMMARY_FILE).exists()
    before = read_csv_rows(run_dir / cfg.LOG_FILE)[: finished + 1]

    rerun = subprocess.run(
        command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming after epoch {finished + 1}" in rerun.stdout
    rows = read_csv_rows(run_dir / cfg.LOG_FILE)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert rows[: finished + 1] == before  # finished epochs were not trained again
    # The base rate follows ReduceLROnPlateau's rule (factor 0.2; an improvement is val_loss +
    # min_delta 1e-4 < best) replayed over the whole val_loss column, so the plateau counters
    # crossed the kill intact.
    base, best, wait, expected_base = lr0, np.inf, 0, []
    for val in (float(r["val_loss"]) for r in rows):
        expected_base.append(base)
        if val + 1e-4 < best:
            best, wait = val, 0
        else:
            wait += 1
            if wait >= patience:
                base, wait = max(base * 0.2, 1.6e-7), 0
    base_logged = np.array([float(r["learning_rate"]) for r in rows])
    np.testing.assert_allclose(base_logged, expected_base, rtol=1e-6)
    # The decayed rate at the end of epoch e is base / (1 + decay * iterations): the iteration
    # counter continued.
    steps = train_steps(dataset_dir)
    lr = np.array([float(r["lr"]) for r in rows])
    np.testing.assert_allclose(
        lr, base_logged / (1 + decay * steps * (np.arange(epochs) + 1)), rtol=1e-5
    )
    summary = json.loads((run_dir / cfg.SUMMARY_FILE).read_text())
    assert summary["finished"] is True and summary["model_sha256"] == sha256_file(
        run_dir / cfg.MODEL_FILE
    )
    # The resumed run drew the batches of the uninterrupted one: an uninterrupted run logs the same
    # losses.
    whole = train.run(
        tiny_config(
            dataset_dir,
            tmp_path / "whole",
            epochs=epochs,
            lr_decay=decay,
            lr=lr0,
            plateau_patience=patience,
            valid_draws="every-epoch",
        )
    )
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(
            [float(r[column]) for r in read_csv_rows(whole / cfg.LOG_FILE)],
            [float(r[column]) for r in rows],
            rtol=1e-4,
        )


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import config as cfg, models, train
    from models import distribute

    # One SGD step on the same global batch: one device vs two replicas (sum and mean reductions).
    rng = np.random.default_rng(0)
    x = {"mel": rng.normal(size=(8, 130, 128)).astype("f4"),
         "positive": rng.normal(size=(8, 12)).astype("f4"),
         "negatives": rng.normal(size=(8, 1, 12)).astype("f4")}
    y = np.tile(np.array([[1.0, 0.0]], "f4"), (8, 1))
    differences, moved = {}, {}
    for reduction in ("sum", "mean"):
        weights = []
        for strategy in (None, distribute.make_strategy("mirrored")):
            keras.utils.set_random_seed(1)
            with distribute.scope(strategy):
                model = models.build_embedding_model(12, 1)
                model.compile(optimizer=models.DecaySGD(0.05, decay=1e-6),
                              loss=models.HingeRankingLoss(0.4, reduction))
            initial = model.get_weights()
            model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
            weights.append(model.get_weights())
        differences[reduction] = max(float(np.abs(a - b).max()) for a, b in zip(*weights))
        moved[reduction] = max(float(np.abs(a - b).max()) for a, b in zip(initial, weights[0]))
    replicas = distribute.replicas(distribute.make_strategy("mirrored"))
    run_dir = train.run(cfg.TrainConfig(dataset=sys.argv[1], run_dir=sys.argv[2], batch_size=8,
                                        epochs=1, verbose=0, strategy="mirrored"))
    summary = json.loads((run_dir / "train_summary.json").read_text())
    print(json.dumps({"replicas": replicas, "differences": differences, "moved": moved,
                      "summary": summary}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, dataset_dir):
    out = subprocess.run(
        [PYTHON, "-c", MIRRORED_SCRIPT, str(dataset_dir), str(tmp_path / "run")],
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Same update with the global batch split over two replicas: the summed hinge loss is not
    # divided.
    assert result["differences"]["sum"] < 1e-5 and result["differences"]["mean"] < 1e-5
    # the step did change the weights
    assert result["moved"]["sum"] > 1e-3 and result["moved"]["mean"] > 1e-4
    assert result["summary"]["replicas"] == 2 and result["summary"]["epochs_completed"] == 1
    assert result["summary"]["input_pipeline"] == "numpy-in-memory"
    assert (tmp_path / "run" / cfg.MODEL_FILE).is_file()


def free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_multi_worker_strategy_with_two_local_workers(tmp_path, dataset_dir):
    """Two worker processes on this machine (TF_CONFIG): one model trained on both, the chief writes
    the run."""
    run_dir = tmp_path / "run"
    cluster = [f"localhost:{port}" for port in free_ports(2)]
    command = [
        PYTHON,
        "train.py",
        *flags(dataset_dir, run_dir, "--epochs", "1", "--strategy", "multi-worker"),
    ]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=dict(ENV, TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=150) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / cfg.SUMMARY_FILE).read_text())
    assert summary["replicas"] == 2 and summary["epochs_completed"] == 1
    assert (run_dir / cfg.MODEL_FILE).is_file()
    # the other worker wrote a scratch copy
    assert (run_dir / ".worker1" / cfg.SUMMARY_FILE).is_file()
    assert "2 replica(s)" in outputs[0][0]
