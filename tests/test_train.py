"""Tests of train.py and its input pipeline (models/pipeline.py, models/callbacks.py).

Datasets are tiny synthetic dataset directories (data/README.md layout) written in tmp_path: a few dozen tracks,
labels whose mel "signatures" are summed into the tracks' frames (so a model can learn something), random side
vectors, the mel store written with the documented HDF5 layout, and a split from splits.make_split. Everything
that fails before training runs in-process without TensorFlow; training runs are marked slow.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import config as cfg
import splits
import train
from models.pipeline import BatchSampler, TFBatchSampler, make_samplers, training_dataset, validation_dataset
import dataset_dir as dsio
from preprocess.store import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, SEGMENT_FRAMES, MelStore

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# --------------------------------------------------------------------------------------------------------------
# Fixtures: a synthetic dataset directory
# --------------------------------------------------------------------------------------------------------------
def write_store(path: Path, track_ids, mels, n_mels: int = N_MELS) -> None:
    """Write a store with the documented layout (track_ids, offsets, mel + front-end attributes)."""
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in mels])]).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("track_ids", data=np.array(list(track_ids), dtype=object),
                              dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("offsets", data=offsets)
        handle.create_dataset("mel", data=np.concatenate(mels).astype(np.float32))
        attrs = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": n_mels,
                 "mean": 0.0, "std": 1.0}
        for key, value in attrs.items():
            handle.attrs[key] = value


def make_dataset(root: Path, n_tracks: int = 48, n_labels: int = 10, side_dim: int = 12, seed: int = 0,
                 drop_side_labels: int = 0) -> Path:
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
        length = 90 if i % 7 == 0 else int(rng.integers(140, 260))  # every 7th track is shorter than a crop
        mels.append(signatures[mine].sum(0) + 0.5 * rng.normal(size=(length, N_MELS)))
    dsio.write_tracks(dsio.tracks_path(root), pd.DataFrame({"track_id": track_ids,
                                                            "path": [f"audio/{t}.wav" for t in track_ids]}))
    annotations = pd.DataFrame(pairs, columns=["track_id", "label"])
    dsio.write_annotations(dsio.annotations_path(root), annotations)
    kept = labels[drop_side_labels:]
    dsio.write_side_info(dsio.side_info_path(root, "instrument-count"), kept,
                         rng.normal(size=(len(kept), side_dim)))
    write_store(dsio.mels_path(root), track_ids, mels)
    split = splits.make_split(dsio.read_annotations(dsio.annotations_path(root)), seed=0)
    splits.save_split(split, splits.default_split_path(root, 0))
    return root


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


def tiny_config(dataset: Path, run_dir: Path, **overrides) -> cfg.TrainConfig:
    values = dict(dataset=str(dataset), run_dir=str(run_dir), batch_size=8, epochs=2, lr=0.01, verbose=0,
                  workers=2)
    values.update(overrides)
    return cfg.TrainConfig(**values)


def flags(dataset: Path, run_dir: Path, *extra) -> list[str]:
    return ["--dataset", str(dataset), "--run-dir", str(run_dir), "--batch-size", "8", "--verbose", "0", *extra]


def train_steps(dataset: Path, batch_size: int = 8) -> int:
    split = splits.load_split(splits.default_split_path(dataset))
    return -(-len(splits.setup_tracks_labels(split, "(A+B)-X", "train")[0]) // batch_size)


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------------------------
# The numpy input pipeline (lazy stores)
# --------------------------------------------------------------------------------------------------------------
class IdStore:
    """A MelStore over frames that encode (track, frame): value = 1000 * track + frame (exact in float32)."""

    def __init__(self, tmp: Path, lengths):
        self.path = tmp / "ids.h5"
        mels = [np.repeat((1000.0 * i + np.arange(n))[:, None], N_MELS, axis=1) for i, n in enumerate(lengths)]
        write_store(self.path, [f"t{i}" for i in range(len(lengths))], mels)


def sampler_for(store, positives, n_negatives=2, batch_size=4, seed=3, stream="train", side_dim=5):
    positives = np.asarray(positives, dtype=bool)
    vectors = np.arange(positives.shape[1] * side_dim, dtype=np.float32).reshape(positives.shape[1], side_dim)
    return BatchSampler(store, np.arange(positives.shape[0]), positives, vectors, n_negatives, batch_size, seed,
                        stream, SEGMENT_FRAMES)


@pytest.fixture
def id_store(tmp_path):
    lengths = [200, 131, 90, 400, 130, 60, 250, 300, 150, 75]
    with MelStore(IdStore(tmp_path, lengths).path, in_memory=True) as store:
        rng = np.random.default_rng(0)
        positives = rng.random((len(lengths), 7)) < 0.35
        positives[np.arange(len(lengths)), rng.integers(0, 7, len(lengths))] = True  # >= 1 positive per track
        positives[:, 6] = False  # >= 1 negative
        yield store, positives, lengths


def test_sampler_epoch_is_a_permutation_of_the_tracks(id_store):
    store, positives, lengths = id_store
    sampler = sampler_for(store, positives)
    assert sampler.steps == 3  # ceil(10 / 4): the last batch is partial
    rows = np.concatenate([sampler.draw(5, s)["rows"] for s in range(sampler.steps)])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert not np.array_equal(sampler.order(5), sampler.order(6))  # reshuffled every epoch


def test_sampler_positives_negatives_and_crops(id_store):
    store, positives, lengths = id_store
    sampler = sampler_for(store, positives, n_negatives=2)
    seen_positive = set()
    for epoch in range(30):
        for step in range(sampler.steps):
            choice = sampler.draw(epoch, step)
            mel, pos_vec, neg_vec, target = sampler.batch(epoch, step)
            for b, row in enumerate(choice["rows"]):
                assert positives[row, choice["positive"][b]]  # a real seen positive
                negs = choice["negatives"][b]
                assert len(set(negs.tolist())) == 2  # without replacement
                assert not positives[row, negs].any()  # seen negatives only
                seen_positive.add((row, int(choice["positive"][b])))
                # The crop comes from this track: values 1000 * row + frame, frames consecutive modulo the length.
                frames = mel[b, :, 0]
                assert np.all(frames // 1000 == row)
                index = frames - 1000 * row
                assert np.all(np.diff(index) % lengths[row] == 1 % lengths[row])
                assert np.all(mel[b] == mel[b, :, :1])
                np.testing.assert_array_equal(pos_vec[b], sampler.label_vectors[choice["positive"][b]])
                np.testing.assert_array_equal(neg_vec[b], sampler.label_vectors[negs])
            assert mel.shape == (len(choice["rows"]), SEGMENT_FRAMES, N_MELS) and mel.dtype == np.float32
            np.testing.assert_array_equal(target[:, 0], 1.0)
            np.testing.assert_array_equal(target[:, 1:], 0.0)
    # Uniform draws reach every (track, positive) pair over 30 epochs.
    assert seen_positive == {(r, j) for r, j in zip(*np.nonzero(positives))}


def test_sampler_is_deterministic_per_seed_and_epoch(id_store):
    store, positives, _ = id_store
    one, two = sampler_for(store, positives), sampler_for(store, positives)
    for a, b in zip(one.batch(4, 1), two.batch(4, 1)):
        np.testing.assert_array_equal(a, b)
    # Same batch whatever was drawn before (threads may load batches in any order).
    two.batch(9, 0)
    np.testing.assert_array_equal(one.batch(4, 2)[0], two.batch(4, 2)[0])
    assert not np.array_equal(one.batch(4, 1)[0], one.batch(5, 1)[0])
    other_seed = sampler_for(store, positives, seed=4)
    assert not np.array_equal(one.batch(4, 1)[0], other_seed.batch(4, 1)[0])


def test_validation_stream_is_identical_every_epoch(id_store):
    store, positives, _ = id_store
    valid = sampler_for(store, positives, stream="valid")
    for step in range(valid.steps):
        for a, b in zip(valid.batch(0, step), valid.batch(17, step)):
            np.testing.assert_array_equal(a, b)
    train_stream = sampler_for(store, positives, stream="train")
    assert not np.array_equal(valid.batch(0, 0)[0], train_stream.batch(0, 0)[0])


def test_batches_cut_to_a_multiple_of_the_replicas(id_store):
    store, positives, _ = id_store
    positives = np.concatenate([positives, positives[:1]])  # 11 tracks
    sampler = BatchSampler(store, np.arange(11) % 10, positives, None, 1, 4, 0, "train", SEGMENT_FRAMES, multiple=2)
    sizes = [len(sampler.draw(0, s)["rows"]) for s in range(sampler.steps)]
    assert sizes == [4, 4, 2]  # 11 = 4 + 4 + 3 -> the last batch is cut to 2
    one = BatchSampler(store, np.arange(10), positives[:10], None, 1, 4, 0, "valid", SEGMENT_FRAMES, multiple=4)
    assert one.steps == 2  # 10 = 4 + 4 + 2 -> the last batch would be empty
    with pytest.raises(ValueError, match="batch_size 4 must be a multiple of 3"):
        BatchSampler(store, np.arange(10), positives[:10], None, 1, 4, 0, "train", SEGMENT_FRAMES, multiple=3)


def test_classification_targets_are_multi_hot(id_store):
    store, positives, _ = id_store
    sampler = BatchSampler(store, np.arange(len(positives)), positives, None, 1, 4, 0, "train", SEGMENT_FRAMES)
    mel, target = sampler.batch(2, 1)
    rows = sampler.draw(2, 1)["rows"]
    np.testing.assert_array_equal(target, positives[rows].astype(np.float32))
    assert mel.shape == (len(rows), SEGMENT_FRAMES, N_MELS)


def test_numpy_dataset_matches_sampler_and_epoch_boundaries(id_store):
    store, positives, _ = id_store
    sampler = sampler_for(store, positives)
    batches = list(training_dataset(sampler, 2, 4, workers=2, n_mels=N_MELS).as_numpy_iterator())
    assert len(batches) == 2 * sampler.steps
    for k, (inputs, target) in enumerate(batches):
        mel, pos_vec, neg_vec, expected_target = sampler.batch(2 + k // sampler.steps, k % sampler.steps)
        np.testing.assert_array_equal(inputs["mel"], mel)
        np.testing.assert_array_equal(inputs["positive"], pos_vec)
        np.testing.assert_array_equal(inputs["negatives"], neg_vec)
        np.testing.assert_array_equal(target, expected_target)
    valid = sampler_for(store, positives, stream="valid")
    first = [x["mel"] for x, _ in validation_dataset(valid, 2, N_MELS).as_numpy_iterator()]
    second = [x["mel"] for x, _ in validation_dataset(valid, 1, N_MELS).as_numpy_iterator()]
    assert len(first) == valid.steps and all(np.array_equal(a, b) for a, b in zip(first, second))


# --------------------------------------------------------------------------------------------------------------
# The TensorFlow input pipeline (in-memory stores)
# --------------------------------------------------------------------------------------------------------------
def tf_sampler_for(store, positives, n_negatives=2, batch_size=4, seed=3, stream="train", side_dim=5, multiple=1,
                   embedding=True, indices=None):
    positives = np.asarray(positives, dtype=bool)
    vectors = np.arange(positives.shape[1] * side_dim, dtype=np.float32).reshape(positives.shape[1], side_dim)
    mel, offsets = store.in_memory_arrays()
    indices = np.arange(positives.shape[0]) if indices is None else indices
    return TFBatchSampler(mel, offsets, indices, positives, vectors if embedding else None, n_negatives, batch_size,
                          seed, stream, SEGMENT_FRAMES, multiple=multiple)


def tf_batch(sampler, epoch, step):
    """(draw, batch) of one TensorFlow batch as numpy."""
    draw = {key: value.numpy() for key, value in sampler.draw(epoch, step).items()}
    return draw, [x.numpy() for x in sampler.batch(epoch, step)]


def test_in_memory_arrays(tmp_path):
    lengths = [5, 3, 7]
    path = IdStore(tmp_path, lengths).path
    with MelStore(path, in_memory=True) as store:
        mel, offsets = store.in_memory_arrays()
        assert mel.dtype == np.float32 and mel.shape == (15, N_MELS) and offsets.dtype == np.int64
        np.testing.assert_array_equal(offsets, [0, 5, 8, 15])
        for i in range(3):
            np.testing.assert_array_equal(mel[offsets[i]:offsets[i + 1]], store.frames(i))
        assert not mel.flags.writeable and not offsets.flags.writeable  # the store's own arrays, protected
        with pytest.raises(ValueError, match="read-only"):
            mel[0, 0] = 1.0
    with MelStore(path, in_memory=False) as store, pytest.raises(ValueError, match="read lazily"):
        store.in_memory_arrays()


def test_make_samplers_picks_the_pipeline_by_store_mode(tmp_path):
    path = IdStore(tmp_path, [200, 90, 300]).path
    positives = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]], dtype=bool)
    parts = {"train": (np.arange(3), positives), "valid": (np.array([2, 0]), positives[[2, 0]])}
    common = dict(label_vectors=np.eye(3, dtype=np.float32), n_negatives=1, batch_size=2, seed=0,
                  n_frames=SEGMENT_FRAMES)
    with MelStore(path, in_memory=True) as store:
        samplers = make_samplers(store, parts, **common)
        numpy_samplers = make_samplers(store, parts, pipeline="numpy", **common)
        with pytest.raises(ValueError, match="pipeline must be auto or one of tensorflow, numpy"):
            make_samplers(store, parts, pipeline="torch", **common)
    assert {type(s) for s in samplers.values()} == {TFBatchSampler}
    assert samplers["train"].pipeline == "tensorflow" and samplers["valid"].stream == "valid"
    assert samplers["train"].mel is samplers["valid"].mel  # one copy of the frames for both streams
    assert {type(s) for s in numpy_samplers.values()} == {BatchSampler}
    # The TensorFlow samplers no longer need the store: batches still come after it is closed.
    mel = samplers["valid"].batch(0, 0)[0].numpy()
    assert mel.shape == (2, SEGMENT_FRAMES, N_MELS) and set((mel[:, 0, 0] // 1000).tolist()) == {0.0, 2.0}
    with MelStore(path, in_memory=False) as store:
        assert {type(s) for s in make_samplers(store, parts, **common).values()} == {BatchSampler}
        with pytest.raises(ValueError, match="needs an in-memory store"):
            make_samplers(store, parts, pipeline="tensorflow", **common)


def test_tf_sampler_epoch_is_a_permutation_of_the_tracks(id_store):
    store, positives, lengths = id_store
    sampler = tf_sampler_for(store, positives)
    assert sampler.steps == 3 and list(sampler.batch_sizes()) == [4, 4, 2]
    rows = np.concatenate([sampler.draw(5, s)["rows"].numpy() for s in range(sampler.steps)])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(lengths)))
    np.testing.assert_array_equal(rows, sampler.order(5).numpy())
    assert not np.array_equal(sampler.order(5).numpy(), sampler.order(6).numpy())  # reshuffled every epoch
    with pytest.raises(IndexError, match="step 3 out of range: an epoch has 3 batches"):
        sampler.draw(0, 3)


def test_tf_sampler_positives_negatives_and_crops(id_store):
    store, positives, lengths = id_store
    sampler = tf_sampler_for(store, positives, n_negatives=2)
    seen_positive = set()
    for epoch in range(30):
        for step in range(sampler.steps):
            choice, (mel, pos_vec, neg_vec, target) = tf_batch(sampler, epoch, step)
            assert mel.shape == (len(choice["rows"]), SEGMENT_FRAMES, N_MELS) and mel.dtype == np.float32
            for b, row in enumerate(choice["rows"]):
                assert positives[row, choice["positive"][b]]  # a real seen positive
                negs = choice["negatives"][b]
                assert len(set(negs.tolist())) == 2  # without replacement
                assert not positives[row, negs].any()  # seen negatives only
                seen_positive.add((int(row), int(choice["positive"][b])))
                # The crop comes from this track: values 1000 * row + frame, frames consecutive modulo the length,
                # starting at the drawn start (mod the length).
                frames = mel[b, :, 0]
                assert np.all(frames // 1000 == row)
                index = frames - 1000 * row
                assert index[0] == choice["crop_start"][b] % lengths[row]
                assert np.all(np.diff(index) % lengths[row] == 1 % lengths[row])
                assert np.all(mel[b] == mel[b, :, :1])
                np.testing.assert_array_equal(pos_vec[b], sampler.label_vectors[choice["positive"][b]])
                np.testing.assert_array_equal(neg_vec[b], sampler.label_vectors[negs])
            np.testing.assert_array_equal(target[:, 0], 1.0)
            np.testing.assert_array_equal(target[:, 1:], 0.0)
    assert seen_positive == {(r, j) for r, j in zip(*np.nonzero(positives))}


def test_tf_sampler_is_deterministic_per_seed_epoch_and_step(id_store):
    store, positives, _ = id_store
    one, two = tf_sampler_for(store, positives), tf_sampler_for(store, positives)
    for a, b in zip(tf_batch(one, 4, 1)[1], tf_batch(two, 4, 1)[1]):
        np.testing.assert_array_equal(a, b)
    two.batch(9, 0)  # whatever was drawn before
    np.testing.assert_array_equal(one.batch(4, 2)[0].numpy(), two.batch(4, 2)[0].numpy())
    assert not np.array_equal(one.batch(4, 1)[0].numpy(), one.batch(5, 1)[0].numpy())  # epochs differ
    assert not np.array_equal(one.batch(4, 0)[0].numpy(), one.batch(4, 1)[0].numpy())  # steps differ
    other_seed = tf_sampler_for(store, positives, seed=4)
    assert not np.array_equal(one.batch(4, 1)[0].numpy(), other_seed.batch(4, 1)[0].numpy())


def test_tf_validation_stream_is_identical_every_epoch(id_store):
    store, positives, _ = id_store
    valid = tf_sampler_for(store, positives, stream="valid")
    for step in range(valid.steps):
        for a, b in zip(tf_batch(valid, 0, step)[1], tf_batch(valid, 17, step)[1]):
            np.testing.assert_array_equal(a, b)
    train_stream = tf_sampler_for(store, positives)
    assert not np.array_equal(valid.batch(0, 0)[0].numpy(), train_stream.batch(0, 0)[0].numpy())
    first = [x["mel"] for x, _ in validation_dataset(valid, 2, N_MELS).as_numpy_iterator()]
    second = [x["mel"] for x, _ in validation_dataset(valid, 1, N_MELS).as_numpy_iterator()]
    assert len(first) == valid.steps and all(np.array_equal(a, b) for a, b in zip(first, second))
    np.testing.assert_array_equal(first[1], valid.batch(0, 1)[0].numpy())


def test_tf_batches_cut_to_a_multiple_and_classification_targets(id_store):
    store, positives, _ = id_store
    positives = np.concatenate([positives, positives[:1]])  # 11 tracks
    sampler = tf_sampler_for(store, positives, batch_size=4, multiple=2, embedding=False, indices=np.arange(11) % 10)
    sizes = [len(sampler.draw(0, s)["rows"]) for s in range(sampler.steps)]
    assert sizes == [4, 4, 2]  # 11 = 4 + 4 + 3 -> the last batch is cut to 2
    assert sampler.batch_dim is None  # a partial batch: the batch dimension stays unknown
    for step in range(sampler.steps):
        choice, (mel, target) = tf_batch(sampler, 1, step)
        np.testing.assert_array_equal(target, positives[choice["rows"]].astype(np.float32))
        np.testing.assert_array_equal(choice["is_positive"], positives[choice["rows"]])
        assert mel.shape == (sizes[step], SEGMENT_FRAMES, N_MELS)
    dataset = training_dataset(sampler, 0, 1, 2, N_MELS)
    assert dataset.element_spec[0].shape.as_list() == [None, SEGMENT_FRAMES, N_MELS]
    assert [len(y) for _, y in dataset.as_numpy_iterator()] == [4, 4, 2]
    one = tf_sampler_for(store, positives[:10], batch_size=4, multiple=4, stream="valid")
    assert one.steps == 2 and one.batch_dim == 4  # 10 = 4 + 4 + 2 -> the last batch would be empty
    assert training_dataset(one, 0, 1, 1, N_MELS).element_spec[1].shape.as_list() == [4, 3]
    with pytest.raises(ValueError, match="batch_size 4 must be a multiple of 3"):
        tf_sampler_for(store, positives, batch_size=4, multiple=3)


def test_tf_dataset_matches_sampler_across_epochs_resume_and_workers(id_store, monkeypatch):
    store, positives, _ = id_store
    monkeypatch.setattr(TFBatchSampler, "CHUNK_KEYS", 4 * 8 * 2)  # 2 steps per chunk: 2 chunks per epoch
    sampler = tf_sampler_for(store, positives)
    assert (sampler.chunk_steps, sampler.n_chunks) == (2, 2)
    whole = list(training_dataset(sampler, 0, 4, workers=2, n_mels=N_MELS).as_numpy_iterator())
    assert len(whole) == 4 * sampler.steps
    for k, (inputs, target) in enumerate(whole):
        mel, pos_vec, neg_vec, expected_target = tf_batch(sampler, k // sampler.steps, k % sampler.steps)[1]
        np.testing.assert_array_equal(inputs["mel"], mel)
        np.testing.assert_array_equal(inputs["positive"], pos_vec)
        np.testing.assert_array_equal(inputs["negatives"], neg_vec)
        np.testing.assert_array_equal(target, expected_target)
    # A run resumed at epoch 2 (initial_epoch=2) draws exactly the batches of the uninterrupted run, whatever the
    # number of parallel loads.
    resumed = list(training_dataset(sampler, 2, 4, workers=3, n_mels=N_MELS).as_numpy_iterator())
    assert len(resumed) == 2 * sampler.steps
    for (a, ya), (b, yb) in zip(whole[2 * sampler.steps:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(ya, yb)


def chi_square(counts) -> float:
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_tf_draws_are_uniform(tmp_path):
    """Positive among 3 positives, the 2 negatives among 4 negatives (6 unordered pairs), the crop start among the
    71 starts of a 200-frame track and the 51 starts of a tiled 60-frame track (span 180): chi-square statistics
    below their 0.1 % critical values (2, 5, 70 and 50 degrees of freedom) over 12,000 draws each."""
    n = 600
    with MelStore(IdStore(tmp_path, [200, 60]).path, in_memory=True) as store:
        positives = np.zeros((n, 7), dtype=bool)
        positives[:, [1, 3, 5]] = True
        sampler = tf_sampler_for(store, positives, n_negatives=2, batch_size=n, indices=np.arange(n) % 2)
    draws = [sampler.draw(epoch, 0) for epoch in range(20)]
    rows = np.concatenate([d["rows"].numpy() for d in draws]) % 2
    positive = np.concatenate([d["positive"].numpy() for d in draws])
    negatives = np.sort(np.concatenate([d["negatives"].numpy() for d in draws]), axis=1)
    starts = np.concatenate([d["crop_start"].numpy() for d in draws])
    assert chi_square([np.sum(positive == j) for j in (1, 3, 5)]) < 13.82
    pairs = [(a, b) for a in (0, 2, 4, 6) for b in (0, 2, 4, 6) if a < b]
    assert chi_square([np.sum((negatives[:, 0] == a) & (negatives[:, 1] == b)) for a, b in pairs]) < 20.52
    assert set(np.unique(negatives).tolist()) == {0, 2, 4, 6}
    long, tiled = starts[rows == 0], starts[rows == 1]
    assert long.min() == 0 and long.max() == 70 and tiled.min() == 0 and tiled.max() == 50
    assert chi_square(np.bincount(long, minlength=71)) < 112.3
    assert chi_square(np.bincount(tiled, minlength=51)) < 86.7


# --------------------------------------------------------------------------------------------------------------
# Bad input: one clear error, exit status 2, before any model is built
# --------------------------------------------------------------------------------------------------------------
def run_main(argv, capsys):
    status = train.main(argv)
    return status, capsys.readouterr().err


def test_labels_without_side_vector_are_listed(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", drop_side_labels=3)
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    split = splits.load_split(splits.default_split_path(data))
    missing = sorted(set(split["seen"]) & {"g00", "g01", "g02"})
    assert status == 2 and err.startswith("error: ")
    assert f"{len(missing)} of {len(split['seen'])} seen (training) label(s) have no side-information vector" in err
    for label in missing:
        assert label in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_store_dimension_mismatch(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    with h5py.File(dsio.mels_path(data), "r+") as handle:
        handle.attrs["n_mels"] = 64
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and "n_mels" in err and "128" in err and str(dsio.mels_path(data)) in err


def test_side_dimension_mismatch_on_resume(tmp_path, capsys, dataset_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"config": {}, "train": {"side_dim": 40}, "checksums": {}}
    (run_dir / cfg.CONFIG_FILE).write_text(json.dumps(record))
    status, err = run_main(flags(dataset_dir, run_dir), capsys)
    assert status == 2
    assert "dimension mismatch" in err and "40-d" in err and "12-d" in err


def test_resume_with_other_flags_is_refused(tmp_path, capsys, dataset_dir):
    prepared = train.prepare(tiny_config(dataset_dir, tmp_path / "run"))
    record = train.run_record(prepared)
    (tmp_path / "run").mkdir()
    dsio.write_json(tmp_path / "run" / cfg.CONFIG_FILE, record)
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--epochs", "2", "--lr", "0.5"), capsys)
    assert status == 2 and "lr: 0.01 -> 0.5" in err and "pass a new --run-dir" in err


def test_empty_training_setup(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    path = splits.default_split_path(data)
    split = splits.load_split(path)
    # Move group B out of the split (as if no track had both seen and unseen labels).
    split["dropped"] = sorted(split["dropped"] + split["B"])
    split["B"], split["train"]["B"], split["valid"]["B"] = [], [], []
    split["train"]["A+B"], split["valid"]["A+B"] = split["train"]["A"], split["valid"]["A"]
    splits.save_split(split, tmp_path / "noB.json")
    status, err = run_main(flags(data, tmp_path / "run", "--split", str(tmp_path / "noB.json"),
                                 "--train-setup", "B"), capsys)
    assert status == 2 and "training setup B-X" in err and "no training tracks" in err


def test_unknown_names(tmp_path, capsys, dataset_dir):
    with pytest.raises(SystemExit) as exc:  # argparse: --train-setup is parsed by config.canonical_setup
        train.main(flags(dataset_dir, tmp_path / "run", "--train-setup", "Z-X"))
    assert exc.value.code == 2 and "--train-setup" in capsys.readouterr().err
    with pytest.raises(train.TrainError, match=r"--train-setup 'Z-X' is not one of A-X, B-X, \(A\+B\)-X"):
        train.run(tiny_config(dataset_dir, tmp_path / "run", train_setup="Z-X"))
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--side-info", "glove"), capsys)
    assert status == 2 and "--side-info 'glove'" in err and "instrument-count" in err
    status, err = run_main(flags(tmp_path / "nowhere", tmp_path / "run"), capsys)
    assert status == 2 and "not an existing directory" in err
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--negatives", "0"), capsys)
    assert status == 2 and "--negatives 0 must be at least 1" in err
    status, err = run_main(flags(dataset_dir, tmp_path / "run", "--negatives", "9"), capsys)
    assert status == 2 and "--negatives 9" in err and "fewer seen negative labels" in err


def test_tracks_missing_from_store(tmp_path, capsys):
    data = make_dataset(tmp_path / "d")
    split = splits.load_split(splits.default_split_path(data))
    with MelStore(dsio.mels_path(data), in_memory=True) as store:
        keep = [i for i, t in enumerate(store.track_ids) if t not in split["train"]["A+B"][:3]]
        ids = [store.track_ids[i] for i in keep]
        mels = [store.frames(i) for i in keep]
    write_store(dsio.mels_path(data), ids, mels)
    status, err = run_main(flags(data, tmp_path / "run"), capsys)
    assert status == 2 and "3 training/validation track(s) are missing from the mel store" in err
    for track in split["train"]["A+B"][:3]:
        assert track in err


def test_default_dataset_is_the_demo_built_on_demand(tmp_path, monkeypatch):
    """`python train.py` with no flags: data/demo, built by demo.build.ensure_demo(dir, seed=0) when missing;
    (A+B)-X, embedding model, instrument-count side information, config.DEFAULT_EPOCHS["demo"] epochs."""
    import demo.build

    calls = []

    def fake_ensure_demo(dataset_dir, seed=0):
        calls.append((Path(dataset_dir), seed))
        make_dataset(Path(dataset_dir))
        return Path(dataset_dir)

    monkeypatch.setattr(dsio, "DATA_ROOT", tmp_path / "data")
    monkeypatch.setattr(demo.build, "ensure_demo", fake_ensure_demo)
    data = train.prepare(cfg.TrainConfig())
    demo_dir = (tmp_path / "data" / "demo").resolve()
    assert calls == [(demo_dir, 0)]
    assert data.dataset == "demo" and data.dataset_dir == demo_dir
    assert data.config.train_setup == "(A+B)-X" and data.config.model == "embedding"
    assert data.config.side_info == "instrument-count" and data.config.epochs == cfg.DEFAULT_EPOCHS["demo"]
    assert data.split_path == splits.default_split_path(demo_dir, 0)
    assert data.label_vectors.shape == (len(data.seen_labels), 12)


def test_help_does_not_import_tensorflow():
    code = ("import sys, train; train.build_parser().format_help(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    out = subprocess.run([PYTHON, "train.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "--loss-reduction" in out.stdout and "(default: 0.4)" in out.stdout


def test_log_truncation_drops_epochs_to_redo(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,val_loss\n0,3.0,2.0\n1,2.5,1.9\n2,2.4,1.8\n")
    train.truncate_log(log, 2)
    assert log.read_text() == "epoch,loss,val_loss\n0,3.0,2.0\n1,2.5,1.9\n"
    train.truncate_log(log, 0)
    assert log.read_text() == ""


# --------------------------------------------------------------------------------------------------------------
# Training (slow)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_short_training_run_lowers_the_loss_and_fills_the_run_dir(tmp_path, dataset_dir):
    import keras

    import models

    run_dir = train.run(tiny_config(dataset_dir, tmp_path / "run", epochs=4, lr=0.02, checkpoint_every=2))
    rows = read_csv_rows(run_dir / train.LOG_FILE)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert {"loss", "val_loss", "learning_rate", "lr"} <= set(rows[0])
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]
    assert (run_dir / train.CURVE_FILE).stat().st_size > 1000
    assert sorted(p.name for p in (run_dir / train.CHECKPOINT_DIR).iterdir()) == ["epoch_002.keras", "epoch_004.keras"]
    assert not (run_dir / train.BACKUP_DIR).exists()

    record = json.loads((run_dir / cfg.CONFIG_FILE).read_text())
    split_path = splits.default_split_path(dataset_dir)
    split = splits.load_split(split_path)
    assert record["config"]["train_setup"] == "(A+B)-X" and record["config"]["side_info"] == "instrument-count"
    assert record["config"]["epochs"] == 4 and record["config"]["run_dir"] == str(run_dir)
    assert record["dataset"] == dataset_dir.name and record["dataset_dir"] == str(dataset_dir.resolve())
    assert record["split_path"] == str(split_path.resolve()) and record["seen_labels"] == split["seen"]
    assert record["checksums"]["split"] == dsio.sha256_file(split_path)
    assert record["checksums"]["annotations"] == dsio.sha256_file(dsio.annotations_path(dataset_dir))
    assert record["checksums"]["mels"] == {"mean": 0.0, "std": 1.0, "n_tracks": 48}
    assert {"tensorflow", "keras", "numpy"} <= set(record["versions"])
    assert record["train"]["input_pipeline"] == "tensorflow"  # the store is small: in memory

    summary = json.loads((run_dir / train.SUMMARY_FILE).read_text())
    assert summary["input_pipeline"] == "tensorflow"
    val = [float(r["val_loss"]) for r in rows]
    assert summary["best_epoch"] == int(np.argmin(val)) and summary["epochs_completed"] == 4

    # model.keras is the best-val_loss model and loads without custom_objects.
    model = keras.saving.load_model(run_dir / cfg.MODEL_FILE)
    assert models.get_semantic_module(model).input_shape == (None, 12)
    assert int(model.optimizer.iterations.numpy()) == train_steps(dataset_dir) * (summary["best_epoch"] + 1)

    # Rerunning a finished run directory does nothing.
    assert train.run(tiny_config(dataset_dir, run_dir, epochs=4, lr=0.02, checkpoint_every=2)) == run_dir
    assert len(read_csv_rows(run_dir / train.LOG_FILE)) == 4


@pytest.mark.slow
def test_classification_run(tmp_path, dataset_dir):
    import keras

    run_dir = train.run(tiny_config(dataset_dir, tmp_path / "run", epochs=1, model="classification"))
    model = keras.saving.load_model(run_dir / cfg.MODEL_FILE)
    seen = json.loads((run_dir / cfg.CONFIG_FILE).read_text())["seen_labels"]
    assert model.output_shape == (None, len(seen))
    assert model.get_layer("classifier").activation.__name__ == "sigmoid"


@pytest.mark.slow
def test_lazy_store_trains_with_the_numpy_pipeline(tmp_path, dataset_dir, monkeypatch, capsys):
    """A store above MelStore's in-memory limit is read lazily by the numpy pipeline; train.py says and records it."""
    import preprocess.store

    monkeypatch.setattr(preprocess.store, "IN_MEMORY_LIMIT_BYTES", 0)
    run_dir = train.run(tiny_config(dataset_dir, tmp_path / "run", epochs=1))
    assert "numpy input pipeline" in capsys.readouterr().out
    assert json.loads((run_dir / train.SUMMARY_FILE).read_text())["input_pipeline"] == "numpy"
    assert json.loads((run_dir / cfg.CONFIG_FILE).read_text())["train"]["input_pipeline"] == "numpy"
    assert len(read_csv_rows(run_dir / train.LOG_FILE)) == 1


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path, dataset_dir):
    """kill -9 in the middle of training, rerun the same command: it continues after the last finished epoch,
    with the optimizer's iteration counter (hence the decayed learning rate) and the plateau counters restored."""
    run_dir = tmp_path / "run"
    epochs, decay, lr0, patience = 12, 0.01, 0.05, 2
    command = [PYTHON, "train.py", *flags(dataset_dir, run_dir, "--epochs", str(epochs), "--lr-decay", str(decay),
                                          "--lr", str(lr0), "--plateau-patience", str(patience), "--workers", "1")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = run_dir / train.BACKUP_DIR / "state.json"
    deadline = time.time() + 90
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read()[-2000:]}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = json.loads(state_file.read_text())["epoch"]
    assert finished < epochs - 1 and not (run_dir / train.SUMMARY_FILE).exists()
    before = read_csv_rows(run_dir / train.LOG_FILE)[:finished + 1]

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(resuming after epoch {finished + 1})" in rerun.stdout
    rows = read_csv_rows(run_dir / train.LOG_FILE)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert rows[:finished + 1] == before  # finished epochs were not trained again
    # The base rate follows ReduceLROnPlateau's rule (factor 0.2, min_delta 1e-4) replayed over the whole val_loss
    # column, so the plateau counters crossed the kill intact.
    base, best, wait, expected_base = lr0, np.inf, 0, []
    for val in (float(r["val_loss"]) for r in rows):
        expected_base.append(base)
        if val - 1e-4 < best:
            best, wait = val, 0
        else:
            wait += 1
            if wait >= patience:
                base, wait = max(base * 0.2, 1.6e-7), 0
    base_logged = np.array([float(r["learning_rate"]) for r in rows])
    np.testing.assert_allclose(base_logged, expected_base, rtol=1e-6)
    # The decayed rate at the end of epoch e is base / (1 + decay * iterations): the iteration counter continued.
    steps = train_steps(dataset_dir)
    lr = np.array([float(r["lr"]) for r in rows])
    np.testing.assert_allclose(lr, base_logged / (1 + decay * steps * (np.arange(epochs) + 1)), rtol=1e-5)
    assert json.loads((run_dir / train.SUMMARY_FILE).read_text())["finished"] is True


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import config as cfg, models, train

    # One SGD step on the same global batch: one device vs two replicas (sum and mean reductions).
    rng = np.random.default_rng(0)
    x = {"mel": rng.normal(size=(8, 130, 128)).astype("f4"), "positive": rng.normal(size=(8, 12)).astype("f4"),
         "negatives": rng.normal(size=(8, 1, 12)).astype("f4")}
    y = np.tile(np.array([[1.0, 0.0]], "f4"), (8, 1))
    differences, moved = {}, {}
    for reduction in ("sum", "mean"):
        weights = []
        for strategy in (tf.distribute.get_strategy(), train.make_strategy("mirrored")):
            keras.utils.set_random_seed(1)
            with strategy.scope():
                model = models.build_embedding_model(12, 1)
                model.compile(optimizer=models.DecaySGD(0.05, decay=1e-6),
                              loss=models.HingeRankingLoss(0.4, reduction))
            initial = model.get_weights()
            model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
            weights.append(model.get_weights())
        differences[reduction] = max(float(np.abs(a - b).max()) for a, b in zip(*weights))
        moved[reduction] = max(float(np.abs(a - b).max()) for a, b in zip(initial, weights[0]))
    replicas = train.make_strategy("mirrored").num_replicas_in_sync
    run_dir = train.run(cfg.TrainConfig(dataset=sys.argv[1], run_dir=sys.argv[2], batch_size=8, epochs=1,
                                        verbose=0, strategy="mirrored"))
    summary = json.loads((run_dir / "train_summary.json").read_text())
    print(json.dumps({"replicas": replicas, "differences": differences, "moved": moved, "summary": summary}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, dataset_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([PYTHON, "-c", MIRRORED_SCRIPT, str(dataset_dir), str(tmp_path / "run")], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Same update with the global batch split over two replicas: the summed hinge loss is not divided.
    assert result["differences"]["sum"] < 1e-5 and result["differences"]["mean"] < 1e-5
    assert result["moved"]["sum"] > 1e-3 and result["moved"]["mean"] > 1e-4  # the step did change the weights
    assert result["summary"]["replicas"] == 2 and result["summary"]["epochs_completed"] == 1
    assert result["summary"]["input_pipeline"] == "tensorflow"  # the CPU variable works under MirroredStrategy
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
    """Two worker processes on this machine (TF_CONFIG): one model trained on both, the chief writes the run."""
    run_dir = tmp_path / "run"
    cluster = [f"localhost:{port}" for port in free_ports(2)]
    command = [PYTHON, "train.py", *flags(dataset_dir, run_dir, "--epochs", "1", "--strategy", "multi-worker",
                                          "--workers", "1")]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=150) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / train.SUMMARY_FILE).read_text())
    assert summary["replicas"] == 2 and summary["epochs_completed"] == 1
    assert summary["input_pipeline"] == "tensorflow"  # and under MultiWorkerMirroredStrategy (auto-shard DATA)
    assert (run_dir / cfg.MODEL_FILE).is_file()
    assert (run_dir / ".worker1" / train.SUMMARY_FILE).is_file()  # the other worker wrote a scratch copy
    assert "strategy multi-worker (2 replicas)" in outputs[0][0]
