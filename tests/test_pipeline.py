"""Tests of the input pipeline (models/pipeline.py): what a batch holds, draws as a function of
(seed, stream, epoch, step), the same batches from RAM or the file and from worker processes, and
the original's protocol options. Stores are tiny HDF5 files whose frames encode (track, frame), so
that every crop can be checked value by value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train import write_store

import config as cfg
from models.pipeline import (
    Batches,
    RedrawnValidation,
    Sampler,
    input_pipeline,
    loader_options,
    training_batches,
)
from preprocess.frontend import N_MELS, SEGMENT_FRAMES, crop, crop_starts
from preprocess.melstore import MelStore

LENGTHS = [200, 131, 90, 400, 130, 60, 250, 300, 150, 75]


def id_store_path(tmp: Path, lengths) -> Path:
    """A store whose frames encode (track, frame): 1000 * track + frame (exact in float32)."""
    path = tmp / "ids.h5"
    mels = [
        np.repeat((1000.0 * i + np.arange(n))[:, None], N_MELS, axis=1)
        for i, n in enumerate(lengths)
    ]
    write_store(path, [f"t{i}" for i in range(len(lengths))], mels)
    return path


def sampler_for(
    positives,
    lengths=LENGTHS,
    n_negatives=2,
    batch_size=4,
    seed=3,
    stream="train",
    multiple=1,
    **more,
):
    return Sampler(
        positives, lengths, n_negatives, batch_size, seed, stream, multiple=multiple, **more
    )


def vectors_for(n_labels: int, side_dim: int = 5) -> np.ndarray:
    return np.arange(n_labels * side_dim, dtype=np.float32).reshape(n_labels, side_dim)


@pytest.fixture
def id_store(tmp_path):
    rng = np.random.default_rng(0)
    positives = rng.random((len(LENGTHS), 7)) < 0.35
    # >= 1 positive per track
    positives[np.arange(len(LENGTHS)), rng.integers(0, 7, len(LENGTHS))] = True
    positives[:, 6] = False  # >= 2 negatives
    positives[:, 5] = False
    with MelStore(id_store_path(tmp_path, LENGTHS), in_memory=True) as store:
        yield store, positives


def test_sampler_epoch_is_a_permutation_of_the_tracks(id_store):
    _, positives = id_store
    sampler = sampler_for(positives)
    assert sampler.steps == 3  # ceil(10 / 4): the last batch is partial
    tracks = np.concatenate([sampler.draw(5, s).tracks for s in range(sampler.steps)])
    np.testing.assert_array_equal(tracks, sampler.order(5))
    assert sorted(tracks.tolist()) == list(range(len(LENGTHS)))
    assert not np.array_equal(sampler.order(5), sampler.order(6))  # reshuffled every epoch
    with pytest.raises(IndexError, match="step 3 out of range: an epoch has 3 batches"):
        sampler.draw(0, 3)


def test_batches_hold_what_the_docstring_says(id_store):
    """Crop of the drawn track at the drawn start (tiled when short), a seen positive, N distinct
    seen negatives, their side vectors, target [1, 0, ...]; over 30 epochs every (track, positive)
    pair is drawn."""
    store, positives = id_store
    sampler, vectors = sampler_for(positives), vectors_for(7)
    batches = Batches(store, np.arange(len(LENGTHS)), sampler, vectors, first_epoch=0)
    seen_positive = set()
    for epoch in range(30):
        for step in range(sampler.steps):
            draw = sampler.draw(epoch, step)
            inputs, target = batches[epoch * sampler.steps + step]
            assert inputs["mel"].shape == (len(draw.tracks), SEGMENT_FRAMES, N_MELS)
            assert inputs["mel"].dtype == np.float32
            for b, track in enumerate(draw.tracks):
                assert positives[track, draw.positive[b]]
                negatives = draw.negatives[b]
                assert len(set(negatives.tolist())) == 2 and not positives[track, negatives].any()
                assert 0 <= draw.starts[b] < crop_starts(LENGTHS[track], SEGMENT_FRAMES)
                frames = 1000.0 * track + np.arange(LENGTHS[track], dtype=np.float32)
                np.testing.assert_array_equal(
                    inputs["mel"][b, :, 0], crop(frames, draw.starts[b], SEGMENT_FRAMES)
                )
                np.testing.assert_array_equal(inputs["positive"][b], vectors[draw.positive[b]])
                np.testing.assert_array_equal(inputs["negatives"][b], vectors[negatives])
                seen_positive.add((int(track), int(draw.positive[b])))
            np.testing.assert_array_equal(target, np.tile([1.0, 0.0, 0.0], (len(draw.tracks), 1)))
    assert seen_positive == {(r, j) for r, j in zip(*np.nonzero(positives), strict=True)}


def test_draws_are_a_function_of_seed_stream_epoch_and_step(id_store):
    _, positives = id_store
    one, two = sampler_for(positives), sampler_for(positives)
    two.draw(9, 0), two.draw(2, 1)  # whatever was drawn before (workers load in any order)
    for a, b in zip(one.draw(4, 1), two.draw(4, 1), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(one.draw(4, 1).starts, one.draw(5, 1).starts)  # epochs differ
    assert not np.array_equal(one.draw(4, 0).starts, one.draw(4, 1).starts)  # steps differ
    assert not np.array_equal(
        one.draw(4, 1).starts, sampler_for(positives, seed=4).draw(4, 1).starts
    )
    valid = sampler_for(positives, stream="valid")  # validation: the same draws every epoch
    for a, b in zip(valid.draw(0, 2), valid.draw(17, 2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(valid.draw(0, 0).starts, one.draw(0, 0).starts)


def test_resumed_batches_equal_the_uninterrupted_ones_from_ram_or_file(id_store, tmp_path):
    """Batch k of a run resumed at epoch 2 is batch 2 * steps + k of the run from epoch 0, whether
    the store is in memory or read lazily; validation is `steps` fixed batches."""
    store, positives = id_store
    sampler, vectors, rows = sampler_for(positives), vectors_for(7), np.arange(len(LENGTHS))
    whole = Batches(store, rows, sampler, vectors, first_epoch=0)
    with MelStore(store.path, in_memory=False) as lazy:
        resumed = Batches(lazy, rows, sampler_for(positives), vectors, first_epoch=2)
        assert input_pipeline(store) == "numpy-in-memory" and input_pipeline(lazy) == "numpy-lazy"
        assert whole.num_batches is None  # training runs on across epochs
        for k in range(2 * sampler.steps):
            (a, ya), (b, yb) = whole[2 * sampler.steps + k], resumed[k]
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(ya, yb)
    valid = Batches(store, rows, sampler_for(positives, stream="valid"), vectors)
    assert valid.num_batches == 3


def test_batches_cut_to_a_multiple_of_the_replicas_and_classification_targets(id_store):
    store, positives = id_store
    positives = np.concatenate([positives, positives[:1]])  # 11 tracks
    lengths, rows = LENGTHS + LENGTHS[:1], np.arange(11) % 10
    sampler = sampler_for(positives, lengths, n_negatives=0, multiple=2)
    # 11 = 4 + 4 + 3 -> 2
    assert [len(sampler.draw(0, s).tracks) for s in range(sampler.steps)] == [4, 4, 2]
    batches = Batches(store, rows, sampler, None, first_epoch=0)
    for step in range(sampler.steps):
        mel, target = batches[step]
        np.testing.assert_array_equal(
            target, positives[sampler.draw(0, step).tracks].astype(np.float32)
        )
        assert mel.shape == (len(target), SEGMENT_FRAMES, N_MELS)
    # 10 = 4 + 4 + 2 -> the last batch would be empty
    assert sampler_for(positives[:10], multiple=4).steps == 2
    with pytest.raises(ValueError, match="batch_size 4 must be a positive multiple of 3"):
        sampler_for(positives, lengths, multiple=3)
    parts = {"train": (rows, positives), "valid": (rows[:2], positives[:2])}
    with pytest.raises(
        cfg.ConfigError,
        match="--batch-size 4 and the 2 validation tracks must be shared evenly by the 3 replicas",
    ):
        training_batches(store, parts, None, 1, 4, 0, 0, replicas=3)


def test_processes_of_a_data_parallel_run_draw_equal_parts_of_each_batch(id_store):
    """part=(k, 2): the k-th half of the whole batch's draws, so that the processes' parts put
    together are the batch one process would train on."""
    _, positives = id_store
    whole = sampler_for(positives, multiple=2)
    halves = [sampler_for(positives, multiple=2, part=(k, 2)) for k in range(2)]
    for epoch, step in ((0, 0), (3, 1), (3, 2)):  # the last batch: 10 = 4 + 4 + 2
        parts = [half.draw(epoch, step) for half in halves]
        assert len(parts[0].tracks) == len(parts[1].tracks) == len(whole.draw(epoch, step)[0]) // 2
        for field, together in zip(whole.draw(epoch, step), zip(*parts, strict=True), strict=True):
            np.testing.assert_array_equal(field, np.concatenate(together))


def test_one_worker_loads_beside_training_under_every_backend(monkeypatch):
    """--workers 1: tf.data prefetches a one-worker PyDataset under TensorFlow; Keras runs it in the
    training loop under JAX and PyTorch, so there it gets two Keras threads (processes only for
    --workers N > 1)."""
    import keras

    assert loader_options(1) == {"workers": 1, "use_multiprocessing": False, "max_queue_size": 2}
    for backend in ("jax", "torch"):
        monkeypatch.setattr(keras.backend, "backend", lambda backend=backend: backend)
        assert loader_options(1) == {
            "workers": 2,
            "use_multiprocessing": False,
            "max_queue_size": 2,
        }
        assert loader_options(3) == {"workers": 3, "use_multiprocessing": True, "max_queue_size": 6}


def test_a_store_in_memory_is_checked_for_finite_values_once_not_per_batch(tmp_path, monkeypatch):
    """The finite check was 30-40% of a batch's work: a store held in RAM is checked whole when it
    opens; a store read lazily is checked at every read (tests/test_store.py: both refuse a damaged
    track)."""
    import preprocess.melstore as melstore

    checked = []
    original = melstore._all_finite
    monkeypatch.setattr(melstore, "_all_finite", lambda x: checked.append(x.size) or original(x))
    path = id_store_path(tmp_path, LENGTHS)
    for in_memory, reads_checked in ((True, 0), (False, 3)):
        with MelStore(path, in_memory=in_memory) as store:
            checked.clear()
            for _ in range(3):
                store.crops([0, 1], [0, 1], SEGMENT_FRAMES)
            assert len(checked) == reads_checked
    with MelStore(path, in_memory=True) as store:
        assert store._all_checked  # checked when it opened: every value of the store


def assert_same_draws(one, two):
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropping_the_last_batch_and_redrawing_validation(id_store):
    """drop_last: floor(10 / 4) = 2 full batches, the tracks of the order's first 8 places; redraw:
    the validation stream draws anew every epoch, epoch 0 being the draws of the once-drawn stream.
    """
    _, positives = id_store
    dropping = sampler_for(positives, drop_last=True)
    assert dropping.steps == 2 and [len(dropping.draw(3, s).tracks) for s in range(2)] == [4, 4]
    np.testing.assert_array_equal(
        np.concatenate([dropping.draw(3, s).tracks for s in range(2)]), dropping.order(3)[:8]
    )
    # the same draws, one batch fewer
    assert_same_draws(dropping.draw(3, 1), sampler_for(positives).draw(3, 1))
    once, every = (
        sampler_for(positives, stream="valid"),
        sampler_for(positives, stream="valid", redraw=True),
    )
    assert_same_draws(every.draw(0, 2), once.draw(0, 2))
    assert_same_draws(once.draw(5, 2), once.draw(0, 2))
    assert not np.array_equal(every.draw(5, 1).starts, every.draw(6, 1).starts)
    assert_same_draws(
        every.draw(5, 1), sampler_for(positives, stream="valid", redraw=True).draw(5, 1)
    )
    # streams differ
    assert not np.array_equal(every.draw(5, 1).starts, sampler_for(positives).draw(5, 1).starts)


def test_training_batches_of_the_original_protocol(id_store):
    """last_batch "drop" cuts the training stream only; valid_draws "every-epoch": the validation
    batches are the draws of the epoch their `epoch` names."""
    store, positives = id_store
    parts = {"train": (np.arange(10), positives), "valid": (np.arange(6), positives[:6])}
    batches = training_batches(
        store,
        parts,
        vectors_for(7),
        2,
        4,
        3,
        first_epoch=2,
        last_batch="drop",
        valid_draws="every-epoch",
    )
    train_sampler, valid, valid_sampler = (
        batches["train"].sampler,
        batches["valid"],
        batches["valid"].sampler,
    )
    # floor(10 / 4); ceil(6 / 4): every valid track
    assert (train_sampler.steps, valid_sampler.steps) == (2, 2)
    assert isinstance(valid, RedrawnValidation) and valid.num_batches == 2 and valid_sampler.redraw
    for epoch in (2, 3, 7):
        valid.epoch = epoch
        for step in range(valid_sampler.steps):
            draw = valid_sampler.draw(epoch, step)
            np.testing.assert_array_equal(valid[step][0]["positive"], vectors_for(7)[draw.positive])
    default = training_batches(store, parts, vectors_for(7), 2, 4, 3, first_epoch=2)
    assert default["train"].sampler.steps == 3 and type(default["valid"]) is Batches


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_validates_on_each_epochs_draws_with_every_epoch(id_store, workers):
    """Through Keras `fit` from epoch 1, inline or with 2 worker processes: epoch e validates on the
    draws of e."""
    import keras

    store, positives = id_store

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.valid = []

        def call(self, inputs):
            return inputs["positive"]

        def train_step(self, data):
            return {"n": keras.ops.zeros(())}

        def test_step(self, data):
            self.valid.append(keras.ops.convert_to_numpy(data[0]["mel"][:, 0, 0]))
            return {"n": keras.ops.zeros(())}

    parts = {"train": (np.arange(10), positives), "valid": (np.arange(5), positives[:5])}
    batches = training_batches(
        store,
        parts,
        vectors_for(7),
        2,
        4,
        3,
        first_epoch=1,
        workers=workers,
        valid_draws="every-epoch",
    )
    model = Recorder()
    model.compile(run_eagerly=True)
    model.fit(
        batches["train"],
        validation_data=batches["valid"],
        steps_per_epoch=3,
        initial_epoch=1,
        epochs=4,
        verbose=0,
        shuffle=False,
        callbacks=[batches["valid"].follow_epochs()],
    )
    expected = []
    for epoch in (1, 2, 3):
        batches["valid"].epoch = epoch
        expected += [batches["valid"][step][0]["mel"][:, 0, 0] for step in range(2)]
    assert len(model.valid) == 6
    for seen, wanted in zip(model.valid, expected, strict=True):
        np.testing.assert_array_equal(seen, wanted)
    # epochs 1, 2 differ
    assert not np.array_equal(np.concatenate(expected[:2]), np.concatenate(expected[2:4]))


def chi_square(counts) -> float:
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_draws_are_uniform():
    """Positive among 3 positives, the 2 negatives among 4 negatives (6 unordered pairs), the crop
    start among the 71 starts of a 200-frame track and the 51 starts of a tiled 60-frame track (span
    180): chi-square statistics below their 0.1 % critical values (2, 5, 70 and 50 degrees of
    freedom) over 12,000 draws each."""
    n = 600
    positives = np.zeros((n, 7), dtype=bool)
    positives[:, [1, 3, 5]] = True
    sampler = sampler_for(positives, np.tile([200, 60], n // 2), batch_size=n)
    draws = [sampler.draw(epoch, 0) for epoch in range(20)]
    tiled = np.concatenate([d.tracks for d in draws]) % 2 == 1
    positive = np.concatenate([d.positive for d in draws])
    negatives = np.sort(np.concatenate([d.negatives for d in draws]), axis=1)
    starts = np.concatenate([d.starts for d in draws])
    assert chi_square([np.sum(positive == j) for j in (1, 3, 5)]) < 13.82
    pairs = [(a, b) for a in (0, 2, 4, 6) for b in (0, 2, 4, 6) if a < b]
    assert (
        chi_square([np.sum((negatives[:, 0] == a) & (negatives[:, 1] == b)) for a, b in pairs])
        < 20.52
    )
    assert starts[~tiled].max() == 70 and starts[tiled].max() == 50 and starts.min() == 0
    assert chi_square(np.bincount(starts[~tiled], minlength=71)) < 112.3
    assert chi_square(np.bincount(starts[tiled], minlength=51)) < 86.7


def test_fit_gets_the_same_batches_from_worker_processes(id_store):
    """Keras feeds `fit` the batches in order with 2 worker processes as inline, across epochs and
    validations."""
    import keras

    store, positives = id_store

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.seen = []

        def call(self, inputs):
            return inputs["positive"]

        def train_step(self, data):
            self.seen.append(keras.ops.convert_to_numpy(data[0]["mel"][:, 0, 0]))
            return {"n": keras.ops.zeros(())}

        def test_step(self, data):
            self.seen.append(-keras.ops.convert_to_numpy(data[0]["mel"][:, 0, 0]))
            return {"n": keras.ops.zeros(())}

    seen = []
    for workers in (1, 2):
        parts = {"train": (np.arange(10), positives), "valid": (np.arange(5), positives[:5])}
        batches = training_batches(
            store, parts, vectors_for(7), 2, 4, 3, first_epoch=1, workers=workers
        )
        model = Recorder()
        model.compile(run_eagerly=True)
        model.fit(
            batches["train"],
            validation_data=batches["valid"],
            steps_per_epoch=3,
            initial_epoch=1,
            epochs=4,
            verbose=0,
            shuffle=False,
        )
        seen.append(np.concatenate(model.seen))
    expected = [batches["train"][k][0]["mel"][:, 0, 0] for k in range(9)]
    assert len(seen[0]) == len(seen[1]) == sum(map(len, expected)) + 3 * 5
    np.testing.assert_array_equal(seen[0], seen[1])
    # epoch 1: 10 samples, then valid
    np.testing.assert_array_equal(seen[0][:10], np.concatenate(expected[:3]))
