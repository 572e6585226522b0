"""Hostile input across the commands (issue 21): a bad KERAS_BACKEND, symbolic link loops, read-only
folders, seeds out of range. Each is one `error: ...` line with exit status 2, and nothing is
written. The per-command cases live beside their command's tests (test_train.py, test_demo.py,
test_splits.py, test_reproduce.py).

Root ignores permission bits (the tests may run as root), so a read-only folder is simulated: every
attempt to create a directory or open a file for writing under it fails with EROFS, as on a
read-only mount.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import flags, make_dataset, run_main

import config as cfg
import dataset_dir as dsio
import evaluate
import fileio
import reproduce
import splits
from demo.__main__ import main as demo_main
from splits import make as make_cli

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("hardening") / "tiny")


def make_read_only(monkeypatch, folder: Path) -> None:
    """Creating a directory or opening a file for writing under `folder` fails with EROFS (os.mkdir,
    os.open: Path.mkdir, tempfile; the builtin open of fileio)."""
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def guarded(real, refuse):
        def call(path, *args, **kwargs):
            if Path(path).is_relative_to(folder) and refuse(*args):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "mkdir", guarded(os.mkdir, lambda *mode: True))
    monkeypatch.setattr(os, "open", guarded(os.open, lambda flags, *mode: flags & writing))
    # fileio's lock file: the builtin open
    modes = guarded(open, lambda mode="r", *rest: any(c in mode for c in "wax+"))
    monkeypatch.setattr(fileio, "open", modes, raising=False)


def loop(tmp_path: Path, name: str = "loop") -> Path:
    """A symbolic link loop: name -> name.other -> name."""
    (tmp_path / f"{name}.other").symlink_to(tmp_path / name)
    (tmp_path / name).symlink_to(tmp_path / f"{name}.other")
    return tmp_path / name


# ---- KERAS_BACKEND -------------------------------------------------------------------------------
MISSING_BACKENDS = [
    b for b, p in cfg.BACKEND_PACKAGES.items() if not importlib.util.find_spec(p[0])
]


@pytest.mark.parametrize("command", ["train.py", "evaluate.py", "reproduce.py"])
@pytest.mark.parametrize("backend", ["tensorfow", *MISSING_BACKENDS[:1]])
def test_a_keras_backend_that_does_not_exist_or_is_not_installed(
    tmp_path, dataset, command, backend
):
    """Keras' own error is a traceback from its import; the commands check the variable first."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO_ROOT)}
    argv = {
        "train.py": ["--dataset", str(dataset), "--run-dir", str(tmp_path / "runs")],
        "evaluate.py": ["--run-dir", str(tmp_path / "runs")],
        "reproduce.py": ["--dataset", str(dataset), "--out", str(tmp_path / "runs")],
    }[command]
    argv += [] if command == "evaluate.py" else ["--epochs", "1", "--batch-size", "8"]
    result = subprocess.run(
        [sys.executable, command, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    problem = "is not installed" if backend in cfg.BACKEND_PACKAGES else "is not a Keras backend"
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: KERAS_BACKEND={backend!r} {problem}")
    assert "tensorflow" in result.stderr and not (tmp_path / "runs").exists()


# ---- symbolic link loops -------------------------------------------------------------------------
def test_symbolic_link_loops_given_as_paths(tmp_path, capsys, dataset):
    """Path.resolve raises RuntimeError on a loop (Python 3.11): it was a traceback everywhere."""
    bad = loop(tmp_path)
    cases = {
        "--run-dir": lambda: run_main(flags(dataset, bad), capsys),
        "--split": lambda: run_main(flags(dataset, tmp_path / "run", "--split", str(bad)), capsys),
        "--out": lambda: (reproduce.main(["--dataset", str(dataset), "--out", str(bad)]), None),
        "--collect": lambda: (evaluate.main(["--collect", str(bad), str(tmp_path)]), None),
        "--compare": lambda: (evaluate.main(["--compare", str(tmp_path), str(bad)]), None),
        "--external": lambda: (evaluate.main(["--external", str(bad), "--dataset", "x"]), None),
    }
    for flag, call in cases.items():
        status, err = call()
        err = err or capsys.readouterr().err
        assert status == 2 and err.startswith(f"error: {flag} {bad}: cannot be resolved"), err
        assert "symbolic link loop" in err and err.count("\n") == 1
    status = evaluate.main(["--run-dir", str(bad)])
    assert status == 2 and capsys.readouterr().err.startswith(f"error: --run-dir {bad}: ")
    status = demo_main(["--out", str(bad), "--tracks", "2", "--no-progress"])
    assert status == 2 and capsys.readouterr().err.startswith(f"error: --out {bad}: ")
    assert not (tmp_path / "run").exists()


def test_symbolic_link_loops_inside_a_dataset(tmp_path, capsys, monkeypatch):
    data = make_dataset(tmp_path / "d")
    shutil.rmtree(dsio.splits_dir(data))
    loop(data, "splits")  # no split yet: it is made in splits/
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert (
        status == 2
        and err.startswith("error: no split of seed 0 in the dataset yet")
        and (f"cannot write into {data / 'splits'}" in err and "--split FILE.json" in err)
    )
    (data / "splits").unlink()
    dsio.mels_path(data).unlink()
    loop(data, "mels.h5")
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and err.startswith(
        f"error: mel store {data / 'mels.h5'}: cannot be resolved"
    )
    monkeypatch.setattr(dsio, "DATA_ROOT", tmp_path / "data")
    (tmp_path / "data").mkdir()
    loop(tmp_path / "data", "demo")  # python train.py: data/demo
    status, err = run_main(["--verbose", "0"], capsys)
    assert status == 2 and err.startswith(f"error: --dataset {tmp_path / 'data' / 'demo'}: ")
    assert not (tmp_path / "run").exists()


# ---- read-only folders ---------------------------------------------------------------------------
def test_read_only_output_folders(tmp_path, capsys, monkeypatch, dataset):
    """A folder the system refuses to write into was a PermissionError/OSError traceback."""
    shelf = tmp_path / "shelf"
    (shelf / "empty").mkdir(parents=True)
    make_read_only(monkeypatch, shelf)
    with pytest.raises(fileio.OutputError, match=f"cannot write into {shelf / 'new'} \\(Read-only"):
        fileio.write_json(shelf / "new" / "x.json", {})
    with pytest.raises(fileio.OutputError, match=f"cannot write into {shelf / 'empty'} \\(Read-"):
        fileio.write_json(shelf / "empty" / "x.json", {})
    with pytest.raises(fileio.OutputError, match=f"cannot write into {shelf / 'empty'} "):
        with fileio.output_lock(shelf / "empty"):
            pass
    for folder in (shelf / "run", shelf / "empty"):
        status, err = run_main(flags(dataset, folder), capsys)
        assert status == 2 and err.startswith(f"error: cannot write into {folder} (Read-only")
    status = demo_main(["--out", str(shelf / "demo"), "--tracks", "2", "--no-progress"])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write into {shelf / 'demo'} (Read-")
    assert sorted(p.name for p in shelf.rglob("*")) == ["empty"]


def test_read_only_dataset_without_a_split(tmp_path, capsys, monkeypatch):
    """The first training run makes the dataset's split: a read-only dataset says so and how to
    make one elsewhere."""
    data = make_dataset(tmp_path / "d")
    shutil.rmtree(dsio.splits_dir(data))
    make_read_only(monkeypatch, data)
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(
        "error: no split of seed 0 in the dataset yet, and none can be made there: cannot write "
        f"into {data / 'splits'} (Read-only file system)"
    )
    assert f"python -m splits.make --dataset {data} --seed 0 --out FILE.json" in err
    assert not dsio.splits_dir(data).exists() and not (tmp_path / "run").exists()
    monkeypatch.undo()
    split = tmp_path / "split.json"
    assert make_cli.main(["--dataset", str(data), "--out", str(split)]) == 0
    assert splits.load_split(split)["seed"] == 0


# ---- seeds ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_bootstrap_seed_out_of_range(tmp_path, capsys, seed):
    status = evaluate.main(
        ["--compare", str(tmp_path / "a"), str(tmp_path / "b")] + ["--bootstrap-seed", seed]
    )
    assert status == 2
    assert (
        capsys.readouterr().err
        == f"error: --bootstrap-seed must be in 0..4294967295, got {seed}.\n"
    )
