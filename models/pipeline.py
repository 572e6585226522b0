"""Training input pipeline (../shared/REFERENCE.md, "Training"): what one epoch feeds the model.

Each epoch holds one sample per training track, in a shuffled order. A sample is
  * a random 130-frame (~3 s) crop of the track's standardized log-mel (`MelStore.random_crops`; tracks shorter
    than 130 frames are tiled),
  * embedding model: one positive label drawn uniformly from the track's seen positives and N negatives drawn
    uniformly *without replacement* from its seen negatives, replaced by their side-information vectors;
    target [1, 0, ..., 0] (ignored by the hinge loss: column 0 is the positive),
  * classification model: the multi-hot vector of the track's seen labels (order = split["seen"]).

Determinism: every random draw comes from a generator seeded with (seed, stream, epoch, step) only, so a batch
is the same whatever the number of loader threads, and a resumed run draws exactly the batches that the
uninterrupted run would have drawn. Validation uses the stream "valid" with epoch 0 every time: the same samples
every epoch, so val_loss is comparable across epochs.

`BatchSampler` is plain numpy (testable without TensorFlow). `training_dataset` / `validation_dataset` wrap it
in tf.data: a range of (epoch, step) keys mapped by `num_parallel_calls` loader threads (deterministic order),
prefetched, so reading and cropping overlap with the training step. The training dataset spans all remaining
epochs (one element per step) and is used with `steps_per_epoch`, so prefetching across an epoch boundary can
never draw a batch with the wrong epoch's seed. Each element is one global batch; tf.distribute splits it across
replicas.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

STREAMS = {"train": 1, "valid": 2}
_ORDER_TAG, _BATCH_TAG = 11, 12  # keep the order and batch generators apart (SeedSequence pads with zeros)


class BatchSampler:
    """Draws the batches of one data stream (training or validation tracks).

    Args:
        store: an open `preprocess.audio.MelStore` (anything with `random_crops(indices, rng, n_frames)`).
        store_indices: (n,) int, the store row of each track of the stream.
        positives: (n, L) bool/0-1, the track's seen labels (L = len(split["seen"])).
        label_vectors: (L, side_dim) float32 side-information vectors of the seen labels (embedding model), or
            None for the classification model.
        n_negatives: N negatives per sample (embedding model).
        batch_size: samples per batch (the last batch of an epoch may be smaller).
        seed: run seed.
        stream: "train" (new draw every epoch) or "valid" (epoch ignored: fixed draw).
        n_frames: crop length (SEGMENT_FRAMES).
        multiple: every batch size is a multiple of this (the number of replicas of a tf.distribute strategy,
            whose per-replica batches must have equal shapes in Keras): the last, partial batch of an epoch is
            cut to a multiple (at most multiple - 1 samples of the epoch are left out; with 1, none is).
    """

    def __init__(self, store, store_indices, positives, label_vectors, n_negatives: int, batch_size: int,
                 seed: int, stream: str, n_frames: int, multiple: int = 1):
        self.store = store
        self.store_indices = np.asarray(store_indices, dtype=np.int64)
        self.positives = np.asarray(positives).astype(bool)
        self.label_vectors = None if label_vectors is None else np.asarray(label_vectors, dtype=np.float32)
        self.n_negatives = int(n_negatives)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
        self.stream = stream
        self.n_frames = int(n_frames)
        self.multiple = int(multiple)
        if self.multiple < 1 or self.batch_size % self.multiple:
            raise ValueError(f"batch_size {batch_size} must be a multiple of {multiple}")
        if self.positives.shape[0] != self.store_indices.shape[0]:
            raise ValueError(f"{self.store_indices.shape[0]} tracks but positives of shape {self.positives.shape}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._orders: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    # ---- sizes ------------------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.store_indices.shape[0])

    @property
    def steps(self) -> int:
        """Batches per epoch: ceil(n_samples / batch_size) (the last one may be partial, as in Keras 2), minus
        the last one when cutting it to a multiple of `multiple` leaves nothing."""
        full, rest = divmod(self.n_samples, self.batch_size)
        return full + (1 if rest - rest % self.multiple > 0 else 0)

    @property
    def embedding(self) -> bool:
        return self.label_vectors is not None

    def _epoch_key(self, epoch: int) -> int:
        return 0 if self.stream == "valid" else int(epoch)

    # ---- random draws -----------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """(n,) permutation of the tracks for `epoch` (seeded by (seed, stream, epoch)); cached for 2 epochs."""
        key = self._epoch_key(epoch)
        with self._lock:
            if key not in self._orders:
                rng = np.random.default_rng([self.seed, STREAMS[self.stream], key, _ORDER_TAG])
                self._orders[key] = rng.permutation(self.n_samples)
                while len(self._orders) > 2:
                    self._orders.popitem(last=False)
            return self._orders[key]

    def batch_rng(self, epoch: int, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, STREAMS[self.stream], self._epoch_key(epoch), _BATCH_TAG, step])

    def draw(self, epoch: int, step: int) -> dict:
        """The random choices of one batch, without loading audio.

        Returns {"rows": (b,) track positions, "positive": (b,) label index, "negatives": (b, N) label indices,
        "rng": the generator, advanced past these draws, that the crops then use}.
        """
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} out of range: an epoch has {self.steps} batches")
        rows = self.order(epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        rows = rows[:len(rows) - len(rows) % self.multiple]
        rng = self.batch_rng(epoch, step)
        is_positive = self.positives[rows]  # (b, L)
        # Uniform choice among a row's positives: the positive with the smallest uniform key.
        keys = rng.random(is_positive.shape)
        positive = np.argmin(np.where(is_positive, keys, 2.0), axis=1)  # (b,)
        negatives = np.empty((len(rows), 0), dtype=np.int64)
        if self.embedding:
            # N distinct negatives, uniformly: the N negatives with the smallest uniform keys (positives excluded).
            keys = np.where(is_positive, 2.0, rng.random(is_positive.shape))
            # Callers guarantee every track has >= N negatives (train.py checks it), so N < L.
            n = self.n_negatives
            negatives = np.argpartition(keys, n - 1, axis=1)[:, :n].astype(np.int64)  # (b, N)
        return {"rows": rows, "positive": positive.astype(np.int64), "negatives": negatives, "rng": rng}

    def batch(self, epoch: int, step: int) -> tuple:
        """One batch as numpy arrays.

        Embedding model: (mel (b, T, 128), positive (b, s), negatives (b, N, s), target (b, N + 1)).
        Classification model: (mel (b, T, 128), multi-hot target (b, L)).
        """
        choice = self.draw(epoch, step)
        rows = choice["rows"]
        mel = np.asarray(self.store.random_crops(self.store_indices[rows], choice["rng"], n_frames=self.n_frames),
                         dtype=np.float32)
        if not self.embedding:
            return mel, self.positives[rows].astype(np.float32)
        target = np.zeros((len(rows), self.n_negatives + 1), dtype=np.float32)
        target[:, 0] = 1.0
        return (mel, self.label_vectors[choice["positive"]], self.label_vectors[choice["negatives"]], target)


# ---------------------------------------------------------------------------------------------------------------
# tf.data wrappers (TensorFlow imported lazily)
# ---------------------------------------------------------------------------------------------------------------
def _map_batches(keys, sampler: BatchSampler, workers: int, n_mels: int):
    """Map a dataset of (epoch, step) int64 keys to model batches with `workers` parallel numpy loaders."""
    import tensorflow as tf

    def load(epoch, step):
        return sampler.batch(int(epoch), int(step))

    side_dim = None if sampler.label_vectors is None else sampler.label_vectors.shape[1]
    n_labels = sampler.positives.shape[1]

    def tf_load(epoch, step):
        if sampler.embedding:
            mel, positive, negatives, target = tf.numpy_function(
                load, [epoch, step], [tf.float32] * 4, stateful=False)
            mel.set_shape((None, sampler.n_frames, n_mels))
            positive.set_shape((None, side_dim))
            negatives.set_shape((None, sampler.n_negatives, side_dim))
            target.set_shape((None, sampler.n_negatives + 1))
            return {"mel": mel, "positive": positive, "negatives": negatives}, target
        mel, target = tf.numpy_function(load, [epoch, step], [tf.float32] * 2, stateful=False)
        mel.set_shape((None, sampler.n_frames, n_mels))
        target.set_shape((None, n_labels))
        return mel, target

    workers = max(1, int(workers))
    dataset = keys.map(tf_load, num_parallel_calls=workers, deterministic=True)
    dataset = dataset.prefetch(max(2, workers))
    options = tf.data.Options()
    # Each element is a whole global batch drawn from its own seed: with several workers (multi-worker strategy)
    # shard by element; there are no files to shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def training_dataset(sampler: BatchSampler, first_epoch: int, last_epoch: int, workers: int, n_mels: int):
    """tf.data dataset of the batches of epochs first_epoch .. last_epoch - 1, `sampler.steps` per epoch.

    Use with `model.fit(..., steps_per_epoch=sampler.steps, initial_epoch=first_epoch, epochs=last_epoch)`.
    """
    import tensorflow as tf

    steps = sampler.steps
    keys = tf.data.Dataset.range(int(first_epoch) * steps, int(last_epoch) * steps)
    keys = keys.map(lambda k: (k // steps, k % steps))
    return _map_batches(keys, sampler, workers, n_mels)


def validation_dataset(sampler: BatchSampler, workers: int, n_mels: int):
    """tf.data dataset of the fixed validation batches (identical every time it is iterated)."""
    import tensorflow as tf

    keys = tf.data.Dataset.range(sampler.steps).map(lambda s: (tf.constant(0, tf.int64), s))
    return _map_batches(keys, sampler, workers, n_mels)
