"""The reproduction protocol (issue 12): the split seed, the original's training budget (--weights
last), the multi-seed command (reproduce.py), the lock file and what config.json records about the
environment. The pipeline side (--last-batch, --valid-draws) is tested with the sampler in
test_train.py."""

from __future__ import annotations

import dataclasses
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from test_train import flags, make_dataset, read_csv_rows, run_main, tiny_config

import config as cfg
import reproduce
import splits
import train

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("protocol") / "tiny")


def n_train(split_path: Path, setup: str = "(A+B)-X") -> int:
    return len(splits.setup_tracks_labels(splits.load_split(split_path), setup, "train")[0])


# ---- the split seed ------------------------------------------------------------------------------
def test_split_seed_picks_the_split_and_an_explicit_split_wins(dataset, tmp_path):
    data = train.prepare(tiny_config(dataset, tmp_path / "run", split_seed=2))
    # made from annotations.csv
    assert data.split_path == splits.default_split_path(dataset, 2).resolve()
    assert splits.load_split(data.split_path)["seed"] == 2 and data.config.split_seed == 2
    assert data.seen_labels == splits.load_split(data.split_path)["seen"]
    explicit = train.prepare(
        tiny_config(
            dataset,
            tmp_path / "run",
            split_seed=3,
            split=str(splits.default_split_path(dataset, 0)),
        )
    )
    assert explicit.split_path == splits.default_split_path(dataset, 0).resolve()
    assert explicit.config.split_seed == 0  # config.json records the seed of the split used
    assert train.run_record(explicit)["config"]["split_seed"] == 0


def test_protocol_flags_are_checked_before_training(dataset, tmp_path, capsys):
    status, err = run_main(flags(dataset, tmp_path / "run", "--split-seed", "-2"), capsys)
    assert status == 2 and "error: --split-seed -2 must be in 0..4294967295" in err
    status, err = run_main(flags(dataset, tmp_path / "run", "--batch-size", "64"), capsys)
    assert (
        status == 2
        and "--last-batch drop: the 39 training tracks of (A+B)-X fill no batch of --batch-size 64"
        in err
    )
    with pytest.raises(SystemExit):
        train.main(flags(dataset, tmp_path / "run", "--weights", "first"))
    assert "argument --weights: invalid choice: 'first'" in capsys.readouterr().err
    with pytest.raises(
        cfg.ConfigError, match="--valid-draws 'twice': not one of once, every-epoch"
    ):
        cfg.check_config(cfg.TrainConfig(valid_draws="twice"))
    assert not (tmp_path / "run").exists()


# ---- the environment -----------------------------------------------------------------------------
def test_lock_check_compares_the_installed_versions(tmp_path):
    numpy_version = metadata.version("numpy")
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# made by a tool\n--index-url https://example.invalid/simple\n"
        f"numpy=={numpy_version}\n    # via\n    #   keras\nkeras==0.0.1\n"
        "colorama==0.4.6 ; sys_platform == 'never'\nno-such-package-here==1.0\n"
    )
    check = train.lock_check(lock)
    assert check == {
        "lock": "lock.txt",
        "matches": False,
        "differences": [
            f"keras: locked 0.0.1, installed {metadata.version('keras')}",
            "no-such-package-here: locked 1.0, installed none",
        ],
    }
    lock.write_text(f"numpy=={numpy_version}\n")
    assert train.lock_check(lock) == {"lock": "lock.txt", "matches": True, "differences": []}
    assert train.lock_check(tmp_path / "gone.txt")["differences"] == ["the lock file is missing"]


def test_lock_file_pins_every_requirement_within_its_range():
    pins = {}
    for line in (REPO_ROOT / "requirements-lock.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            # exact versions only
            assert [s.operator for s in requirement.specifier] == ["=="], line
            pins[(requirement.name.lower().replace("_", "-"), str(requirement.marker))] = next(
                iter(requirement.specifier)
            ).version
    for name in ("requirements.txt", "requirements-test.txt"):
        for line in (REPO_ROOT / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                requirement = Requirement(line)
                versions = [
                    v for (pinned, _), v in pins.items() if pinned == requirement.name.lower()
                ]
                assert versions and all(requirement.specifier.contains(v) for v in versions), (
                    name,
                    line,
                    versions,
                )


def test_versions_record_the_backend_in_use_and_its_version():
    import keras

    found = train.versions()
    assert found["keras_backend"] == keras.backend.backend() and found["keras"] == keras.__version__
    for module in cfg.BACKEND_PACKAGES[found["keras_backend"]]:
        assert found[module] == __import__(module).__version__


# ---- the original's budget: --weights last -------------------------------------------------------
@pytest.mark.slow
def test_last_weights_equal_the_periodic_checkpoint_of_the_last_epoch(dataset, tmp_path):
    """--weights last --epochs 3 --checkpoint-every 3: model.keras holds the weights of
    checkpoints/epoch_003.keras; trained on split seed 1, floor(n / 8) steps per epoch, new
    validation draws every epoch."""
    import keras

    run_dir = train.run(
        tiny_config(
            dataset,
            tmp_path / "run",
            epochs=3,
            weights="last",
            checkpoint_every=3,
            split_seed=1,
            valid_draws="every-epoch",
        )
    )
    final = keras.saving.load_model(run_dir / cfg.MODEL_FILE)
    checkpoint = keras.saving.load_model(run_dir / cfg.CHECKPOINT_DIR / "epoch_003.keras")
    for a, b in zip(final.get_weights(), checkpoint.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    steps = n_train(splits.default_split_path(dataset, 1)) // 8
    assert int(final.optimizer.iterations.numpy()) == 3 * steps
    summary = json.loads((run_dir / cfg.SUMMARY_FILE).read_text())
    assert (
        summary["weights"] == "last"
        and summary["model_epoch"] == 2
        and summary["steps_per_epoch"] == steps
    )
    record = json.loads((run_dir / cfg.CONFIG_FILE).read_text())
    assert record["config"]["split_seed"] == 1 and record["config"]["valid_draws"] == "every-epoch"
    assert record["split_path"] == str(splits.default_split_path(dataset, 1).resolve())
    assert set(record["environment"]) == {"lock", "matches", "differences"}
    assert record["environment"]["lock"] == "requirements-lock.txt"


# ---- reproduce.py --------------------------------------------------------------------------------
def test_reproduce_plans_one_run_per_kind_and_seed(tmp_path):
    base = cfg.TrainConfig(dataset="demo", epochs=3, split="ignored.json")
    configs = reproduce.plan(base, ["instrument-count", "random"], [4, 7], tmp_path)
    assert [(c.side_info, c.seed, c.split_seed, c.split) for c in configs] == [
        ("instrument-count", 4, 4, None),
        ("instrument-count", 7, 7, None),
        ("random", 4, 4, None),
        ("random", 7, 7, None),
    ]
    assert configs[3].run_dir == str(tmp_path / "random" / "seed7") and {
        c.epochs for c in configs
    } == {3}


def test_reproduce_plans_an_lr_grid_and_a_fixed_split(tmp_path):
    base = cfg.TrainConfig(dataset="demo", model="classification")
    configs = reproduce.plan(base, [None], [0, 1], tmp_path, (0.001, 0.064), split_seed=3)
    assert [(c.lr, c.seed, c.split_seed) for c in configs] == [
        (0.001, 0, 3),
        (0.001, 1, 3),
        (0.064, 0, 3),
        (0.064, 1, 3),
    ]
    assert configs[2].run_dir == str(tmp_path / "default" / "lr0.064" / "seed0")
    # one lr: today's layout, the lr of the flags
    (one,) = reproduce.plan(dataclasses.replace(base, lr=0.01), ["random"], [2], tmp_path, (0.01,))
    assert (one.lr, one.split_seed, one.run_dir) == (0.01, 2, str(tmp_path / "random" / "seed2"))


@pytest.mark.parametrize(
    "lrs, message",
    [
        (
            ["0.01", "0.01"],
            "--lr 0.01 0.01: give distinct values (one lr, or a grid of two or more)",
        ),
        (["0.01", "-1"], "--lr -1.0 must be > 0"),
        (["nan", "0.01"], "--lr nan must be a finite number > 0"),
        (["0.01", "inf"], "--lr inf must be a finite number > 0"),
    ],
)
def test_reproduce_refuses_bad_lr_grids(dataset, tmp_path, capsys, lrs, message):
    out = tmp_path / "runs"
    argv = ["--dataset", str(dataset), "--out", str(out), "--batch-size", "8", "--lr", *lrs]
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and not out.exists()


def test_reproduce_refuses_bad_flags_before_training(dataset, tmp_path, capsys):
    out = tmp_path / "runs"
    common = ["--dataset", str(dataset), "--out", str(out), "--batch-size", "8"]
    assert reproduce.main([*common, "--seeds", "1", "1"]) == 2
    assert "error: --seeds 1 1: give distinct seeds in 0..4294967295." in capsys.readouterr().err
    for seeds in (["-1"], ["0", str(2**32)]):  # numpy and Keras take seeds in 0..2^32-1
        assert reproduce.main([*common, "--seeds", *seeds]) == 2
        assert capsys.readouterr().err == (
            f"error: --seeds {' '.join(seeds)}: give distinct seeds in 0..4294967295.\n"
        )
    (tmp_path / "file").write_text("mine")
    assert reproduce.main([*common[:2], "--out", str(tmp_path / "file"), "--seeds", "0"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --out {tmp_path / 'file'} is a file: pass a folder for the runs.\n"
    )
    assert (tmp_path / "file").read_text() == "mine"
    assert (
        reproduce.main([*common, "--seeds", "0", "1", "--side-info", "instrument-count", "glove"])
        == 2
    )
    assert "--side-info 'glove'" in capsys.readouterr().err
    # batch 64 > 39 tracks
    assert reproduce.main(["--dataset", str(dataset), "--out", str(out)]) == 2
    assert "--last-batch drop" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_reproduce_trains_every_seed_then_prints_the_aggregate(dataset, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = [
        "--dataset",
        str(dataset),
        "--out",
        str(out),
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--verbose",
        "0",
        "--lr",
        "0.01",
        "--format",
        "json",
    ]
    # the default kinds: the paper's that the dataset has (instrument-count)
    assert reproduce.main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    runs = [out / "instrument-count" / f"seed{s}" for s in (0, 1)]
    for seed, run_dir in enumerate(runs):
        config = json.loads((run_dir / cfg.CONFIG_FILE).read_text())["config"]
        assert (config["seed"], config["split_seed"], config["epochs"]) == (seed, seed, 1)
    retrieval = next(r for r in records if r["test"] == "(B+C)-Y" and r["task"] == "retrieval")
    assert retrieval["n_runs"] == 2 and sorted(map(Path, retrieval["runs"])) == runs
    values = [
        next(
            r["AUC-l"]
            for r in json.loads((d / "results.json").read_text())
            if r["test"] == "(B+C)-Y" and r["task"] == "retrieval"
        )
        for d in runs
    ]
    assert retrieval["mean"]["AUC-l"] == pytest.approx(np.mean(values), abs=1e-12)
    logs = [read_csv_rows(d / cfg.LOG_FILE) for d in runs]
    # the results page, with the scores its per-label AUC reads; a rerun replaces it
    page = (out / reproduce.REPORT_FILE).read_text(encoding="utf-8")
    assert "Table 3. Zero-shot retrieval" in page and all((d / "scores").is_dir() for d in runs)
    assert "instrument-count/seed1" in page
    assert reproduce.main(argv) == 0  # rerun: both runs have finished, nothing is trained again
    err = capsys.readouterr().err
    assert err.count("has already finished") == 2 and f"wrote {out / 'report.html'}" in err
    assert [read_csv_rows(d / cfg.LOG_FILE) for d in runs] == logs


@pytest.mark.slow
def test_reproduce_lr_grid_selects_on_the_runs_train_summary(dataset, tmp_path, capsys):
    """A classification grid (2 lrs x 2 seeds, one epoch each): every aggregated record carries the
    lr with the lowest mean best val_loss of its runs' train_summary.json, and whether each run beat
    the per-label prior."""
    out = tmp_path / "runs"
    argv = ["--dataset", str(dataset), "--out", str(out), "--model", "classification"]
    argv += ["--train-setup", "A-X", "--seeds", "0", "1", "--lr", "0.01", "0.1", "--epochs", "1"]
    argv += ["--batch-size", "4", "--verbose", "0", "--format", "json"]
    assert reproduce.main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    summaries = {
        (lr, seed): json.loads(
            (out / "default" / f"lr{lr}" / f"seed{seed}" / cfg.SUMMARY_FILE).read_text()
        )
        for lr in (0.01, 0.1)
        for seed in (0, 1)
    }
    losses = {
        lr: np.mean([summaries[lr, s]["best_val_loss"] for s in (0, 1)]) for lr in (0.01, 0.1)
    }
    assert {r["lr"] for r in records} == {0.01, 0.1} and {r["side_info"] for r in records} == {None}
    for record in records:
        assert record["lr_selection"] == {
            "chosen": min(losses, key=losses.get),
            "by": "val_loss",
            "candidates": {str(lr): pytest.approx(loss) for lr, loss in losses.items()},
        }
        assert record["beats_prior"] == [
            summaries[record["lr"], s]["best_val_loss"]
            < summaries[record["lr"], s]["prior_val_loss"]
            for s in (0, 1)
        ]
