"""Keras backends other than TensorFlow (docs/backends.md): JAX (and PyTorch)
train, resume after kill -9 and evaluate a run that TensorFlow then scores with the same metrics; a
model saved under TensorFlow loads under them; the tf.distribute strategies say that they need
TensorFlow; --strategy data-parallel (JAX) trains on two devices and on two processes as on one. A
backend's tests skip when it is not installed (CI installs TensorFlow only); they run in
subprocesses, since a process has one Keras backend."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest
from test_train import (
    PYTHON,
    REPO_ROOT,
    flags,
    free_ports,
    kill_after_two_epochs,
    make_dataset,
    read_csv_rows,
    train_steps,
)

import config as cfg
import protocol

BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(module) is None,
            reason=f"{module} is not installed (docs/backends.md)",
        ),
    )
    for name, module in (("jax", "jax"), ("torch", "torch"))
]
METRICS = ("AUC-i", "MAP-i", "P@1", "P@5", "P@10", "AUC-l", "MAP-l")


# runs a script as `python SCRIPT ARGS...` would, with TensorFlow unimportable: the GPU machines we
# measured on have JAX and PyTorch but no TensorFlow, so nothing outside --strategy may need it
WITHOUT_TENSORFLOW = (
    "import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def environment(backend: str) -> dict:
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")


def run_under(backend: str, *argv, timeout=180) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [PYTHON, "-c", WITHOUT_TENSORFLOW, *argv],
        cwd=REPO_ROOT,
        env=environment(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_trains_resumes_after_kill_9_and_tensorflow_scores_the_run_alike(tmp_path, backend):
    data = make_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    epochs, decay, lr0 = 6, 0.01, 0.05
    command = [
        PYTHON,
        "-c",
        WITHOUT_TENSORFLOW,
        "train.py",
        *flags(data, run_dir, "--epochs", str(epochs), "--lr-decay", str(decay), "--lr", str(lr0)),
    ]
    finished = kill_after_two_epochs(command, environment(backend), run_dir)
    before = read_csv_rows(run_dir / cfg.LOG_FILE)[: finished + 1]

    rerun = run_under(backend, *command[3:])
    assert f"resuming after epoch {finished + 1}" in rerun.stdout
    rows = read_csv_rows(run_dir / cfg.LOG_FILE)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs)) and rows[: finished + 1] == before
    # the decayed rate base / (1 + decay * iterations) at each epoch's end: the iteration counter
    # crossed the kill
    lr = np.array([float(r["lr"]) for r in rows])
    np.testing.assert_allclose(
        lr, lr0 / (1 + decay * train_steps(data) * (np.arange(epochs) + 1)), rtol=1e-5
    )
    meta = json.loads((run_dir / cfg.CONFIG_FILE).read_text())
    assert meta["versions"]["keras_backend"] == backend and meta["versions"][backend]

    run_under(backend, "evaluate.py", "--run-dir", str(run_dir), "--no-progress")
    under_other = json.loads((run_dir / protocol.RESULTS_FILE).read_text())
    # recomputes embeddings
    under_tf, _ = protocol.evaluate_run(run_dir, force=True, progress=False, label_map=False)
    key = lambda r: tuple(r[k] for k in protocol.KEY_FIELDS)  # noqa: E731
    assert sorted(map(key, under_other)) == sorted(map(key, under_tf)) and len(under_tf) >= 10
    tf_by_key = {key(r): r for r in under_tf}
    for record in under_other:
        for metric in METRICS:
            if record.get(metric) is not None:
                assert record[metric] == pytest.approx(tf_by_key[key(record)][metric], abs=1e-4), (
                    key(record),
                    metric,
                )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_worker_processes_train_on_the_batches_of_one_thread(tmp_path, backend):
    """The JAX and PyTorch trainers take a batch from the training iterator to build the loss unless
    train.fit has built it; with a pool of worker processes that shifted every batch by one (other
    losses from --workers 2)."""
    data = make_dataset(tmp_path / "data", n_tracks=36)
    logs = []
    for workers in (1, 2):
        run_dir = tmp_path / f"workers{workers}"
        run_under(
            backend, "train.py", *flags(data, run_dir, "--epochs", "2", "--workers", str(workers))
        )
        logs.append(
            [(row["loss"], row["val_loss"]) for row in read_csv_rows(run_dir / cfg.LOG_FILE)]
        )
    assert len(logs[0]) == 2 and logs[0] == logs[1]


LOAD = """
import os, sys, keras, numpy as np
import models  # registers the custom layers
assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
inputs = dict(np.load(sys.argv[2]))
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model.predict(inputs, verbose=0)))
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_a_model_saved_under_tensorflow_loads_and_predicts_alike_under_another_backend(
    tmp_path, backend
):
    import keras

    import models

    keras.utils.set_random_seed(0)
    model = models.build_embedding_model(12, 2)
    model.compile(
        optimizer=models.DecaySGD(0.01, momentum=0.9, nesterov=True, decay=1e-6),
        loss=models.HingeRankingLoss(0.4, "sum"),
    )
    rng = np.random.default_rng(0)
    inputs = {
        "mel": rng.normal(size=(6, 130, 128)).astype(np.float32),
        "positive": rng.normal(size=(6, 12)).astype(np.float32),
        "negatives": rng.normal(size=(6, 2, 12)).astype(np.float32),
    }
    # trained (batch-norm stats)
    model.fit(inputs, np.tile(np.float32([[1, 0, 0]]), (6, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "inputs.npz", **inputs)
    (tmp_path / "load.py").write_text(LOAD)
    run_under(
        backend,
        str(tmp_path / "load.py"),
        str(tmp_path / "model.keras"),
        str(tmp_path / "inputs.npz"),
        str(tmp_path / "other.npy"),
        timeout=120,
    )
    # (6, 3) cosine relevances
    expected = keras.ops.convert_to_numpy(model.predict(inputs, verbose=0))
    np.testing.assert_allclose(np.load(tmp_path / "other.npy"), expected, atol=1e-5)
    assert np.ptp(expected) > 1e-3  # not a constant output


NEEDS_JAX = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"
)


def losses(run_dir) -> list[tuple[float, float]]:
    return [(float(r["loss"]), float(r["val_loss"])) for r in read_csv_rows(run_dir / cfg.LOG_FILE)]


def summary(run_dir) -> dict:
    return json.loads((run_dir / cfg.SUMMARY_FILE).read_text())


@NEEDS_JAX
@pytest.mark.slow
def test_data_parallel_on_two_devices_trains_as_one_device(tmp_path):
    """--strategy data-parallel (JAX, keras.distribution.DataParallel) on two host devices: every
    global batch of 8 split 4 + 4, the summed loss one global sum: the losses of one device."""
    data = make_dataset(tmp_path / "data", n_tracks=40)  # 32 training, 4 validation tracks
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for strategy in ("default", "data-parallel"):
        done = subprocess.run(
            [PYTHON, "-c", WITHOUT_TENSORFLOW, "train.py"]
            + flags(data, tmp_path / strategy, "--epochs", "2", "--strategy", strategy),
            cwd=REPO_ROOT,
            env=dict(environment("jax"), **two_devices),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert summary(tmp_path / "default")["replicas"] == 1
    assert summary(tmp_path / "data-parallel")["replicas"] == 2
    one, two = losses(tmp_path / "default"), losses(tmp_path / "data-parallel")
    assert len(one) == 2 and one[0][0] > one[1][0]  # trained, and the loss went down
    np.testing.assert_allclose(two, one, rtol=1e-5)


@NEEDS_JAX
@pytest.mark.slow
def test_data_parallel_over_two_processes_trains_as_one_device(tmp_path):
    """Two processes (jax.distributed from KERAS_DISTRIBUTION_*), one device each: each feeds half
    of every global batch; process 0 writes the run directory, process 1 <run dir>/.worker1."""
    data = make_dataset(tmp_path / "data", n_tracks=40)
    run_under("jax", "train.py", *flags(data, tmp_path / "one", "--epochs", "2"), timeout=240)
    cluster = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{free_ports(1)[0]}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
    }
    command = [PYTHON, "-c", WITHOUT_TENSORFLOW, "train.py"] + flags(
        data, tmp_path / "two", "--epochs", "2", "--strategy", "data-parallel"
    )
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(environment("jax"), **cluster, KERAS_DISTRIBUTION_PROCESS_ID=str(index)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    assert summary(tmp_path / "two")["replicas"] == 2
    assert summary(tmp_path / "two" / ".worker1")["replicas"] == 2
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-5)
    assert losses(tmp_path / "two" / ".worker1") == losses(tmp_path / "two")


def test_strategies_say_they_need_tensorflow(tmp_path, monkeypatch, capsys):
    import keras

    import train

    data = make_dataset(tmp_path / "data", n_tracks=24)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for strategy in ("mirrored", "multi-worker"):
        status = train.main(
            flags(data, tmp_path / strategy, "--strategy", strategy, "--epochs", "1")
        )
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(
            f"error: --strategy {strategy} needs the TensorFlow backend; this is jax"
        )
        assert not (tmp_path / strategy / cfg.MODEL_FILE).exists()
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    status = train.main(
        flags(data, tmp_path / "dp", "--strategy", "data-parallel", "--epochs", "1")
    )
    err = capsys.readouterr().err
    assert status == 2 and err == (
        "error: --strategy data-parallel needs the JAX backend; this is tensorflow "
        "(KERAS_BACKEND). Use --strategy default or mirrored.\n"
    )
    assert not (tmp_path / "dp" / cfg.MODEL_FILE).exists()
