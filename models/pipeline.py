"""Training input pipeline (../shared/REFERENCE.md, "Training"): what one epoch feeds the model.

Each epoch holds one sample per training track, in a shuffled order. A sample is
  * a random 130-frame (~3 s) crop of the track's standardized log-mel (tracks shorter than 130 frames are tiled:
    frame t of the crop is frame (start + t) mod L of the track, start uniform in [0, span - 130], span = L when
    L >= 130, else ceil(130 / L) * L),
  * embedding model: one positive label drawn uniformly from the track's seen positives and N negatives drawn
    uniformly *without replacement* from its seen negatives, replaced by their side-information vectors;
    target [1, 0, ..., 0] (ignored by the hinge loss: column 0 is the positive),
  * classification model: the multi-hot vector of the track's seen labels (order = split["seen"]).

Two implementations draw these samples; `make_samplers` picks one per mel store and train.py records which in
config.json ("train": {"input_pipeline": ...}) and train_summary.json:

  "tensorflow"  `TFBatchSampler`, used when the store is in memory (MelStore's default below 2 GiB). The whole
                mel array sits in a CPU tf.Variable and every batch is drawn by TensorFlow ops inside tf.data
                (stateless random ops, tf.gather): no Python call per batch, so the loader neither holds the GIL nor
                copies batches through numpy, and on a small CPU machine it leaves the cores to the model step.
                RAM: the variable is a float32 copy of the store's array (frames x 128 x 4 bytes); train.py drops
                the store's own copy once the variable exists, so the steady state holds one copy.
  "numpy"       `BatchSampler`, used for a lazy store (HDF5 read per batch, larger than RAM): plain numpy, run
                through tf.numpy_function by `workers` loader threads.

Both are deterministic: every random draw depends only on (seed, stream, epoch, step), so a batch is the same
whatever the number of loader threads or the prefetching, and a resumed run (initial_epoch = k) draws exactly the
batches that the uninterrupted run drew in epochs k, k + 1, ... The two implementations use different random
generators (numpy's PCG64 seeded by SeedSequence; TensorFlow's stateless Philox ops, seeds packed from those
integers), so they draw different (equally distributed) samples for the same seed. Validation uses the stream
"valid" with epoch 0 every time: the same samples every epoch, so val_loss is comparable across epochs.

`training_dataset` / `validation_dataset` turn either sampler into a tf.data dataset. The training dataset spans
all remaining epochs (one element per step) and is used with `steps_per_epoch`, so prefetching across an epoch
boundary can never draw a batch with the wrong epoch's seed. Each element is one global batch; tf.distribute
splits it across replicas (auto-shard policy DATA).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

STREAMS = {"train": 1, "valid": 2}
PIPELINES = ("tensorflow", "numpy")
_ORDER_TAG, _BATCH_TAG = 11, 12  # keep the order and batch generators apart (SeedSequence pads with zeros)


class _Sampling:
    """What both samplers share: the arguments, their checks and the batch arithmetic.

    Args:
        store_indices: (n,) int, the store row of each track of the stream.
        positives: (n, L) bool/0-1, the track's seen labels (L = len(split["seen"])).
        label_vectors: (L, side_dim) float32 side-information vectors of the seen labels (embedding model), or
            None for the classification model.
        n_negatives: N negatives per sample (embedding model). Callers guarantee every track has >= N seen
            negatives (train.py checks it).
        batch_size: samples per batch (the last batch of an epoch may be smaller).
        seed: run seed.
        stream: "train" (new draw every epoch) or "valid" (epoch ignored: fixed draw).
        n_frames: crop length (SEGMENT_FRAMES).
        multiple: every batch size is a multiple of this (the number of replicas of a tf.distribute strategy,
            whose per-replica batches must have equal shapes in Keras): the last, partial batch of an epoch is
            cut to a multiple (at most multiple - 1 samples of the epoch are left out; with 1, none is).
    """

    pipeline = ""

    def __init__(self, store_indices, positives, label_vectors, n_negatives: int, batch_size: int, seed: int,
                 stream: str, n_frames: int, multiple: int = 1):
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
        if self.positives.ndim != 2 or self.positives.shape[0] != self.store_indices.shape[0]:
            raise ValueError(f"{self.store_indices.shape[0]} tracks but positives of shape {self.positives.shape}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    @property
    def n_samples(self) -> int:
        return int(self.store_indices.shape[0])

    @property
    def n_labels(self) -> int:
        return int(self.positives.shape[1])

    @property
    def steps(self) -> int:
        """Batches per epoch: ceil(n_samples / batch_size) (the last one may be partial, as in Keras 2), minus
        the last one when cutting it to a multiple of `multiple` leaves nothing."""
        full, rest = divmod(self.n_samples, self.batch_size)
        return full + (1 if rest - rest % self.multiple > 0 else 0)

    def batch_sizes(self) -> np.ndarray:
        """(steps,) samples of each batch: min(batch_size, n - step * batch_size) cut to a multiple of `multiple`."""
        sizes = np.minimum(self.batch_size, self.n_samples - np.arange(self.steps) * self.batch_size)
        return sizes - sizes % self.multiple

    @property
    def batch_dim(self) -> int | None:
        """The static batch dimension of the dataset elements: batch_size when every batch is full, else None.

        A known batch size lets TensorFlow trace the model step with static shapes (about 3 % faster on a
        2-core CPU); with a partial last batch the dimension must stay unknown (None).
        """
        sizes = self.batch_sizes()
        return self.batch_size if len(sizes) and (sizes == self.batch_size).all() else None

    @property
    def embedding(self) -> bool:
        return self.label_vectors is not None

    def element_shapes(self, n_mels: int) -> list[tuple]:
        """Static shapes of a batch's arrays (the order of `batch`), batch dimension `batch_dim`."""
        b = self.batch_dim
        if self.embedding:
            side_dim = self.label_vectors.shape[1]
            return [(b, self.n_frames, n_mels), (b, side_dim), (b, self.n_negatives, side_dim),
                    (b, self.n_negatives + 1)]
        return [(b, self.n_frames, n_mels), (b, self.n_labels)]

    def _epoch_key(self, epoch: int) -> int:
        return 0 if self.stream == "valid" else int(epoch)

    def _check_step(self, step: int) -> None:
        if not 0 <= int(step) < self.steps:
            raise IndexError(f"step {step} out of range: an epoch has {self.steps} batches")


class BatchSampler(_Sampling):
    """The numpy sampler (lazy stores): draws the batches of one data stream (training or validation tracks).

    Args:
        store: an open `preprocess.store.MelStore` (anything with `random_crops(indices, rng, n_frames)`).
        The other arguments: see `_Sampling`.
    """

    pipeline = "numpy"

    def __init__(self, store, store_indices, positives, label_vectors, n_negatives: int, batch_size: int,
                 seed: int, stream: str, n_frames: int, multiple: int = 1):
        super().__init__(store_indices, positives, label_vectors, n_negatives, batch_size, seed, stream, n_frames,
                         multiple)
        self.store = store
        self._orders: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

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
        self._check_step(step)
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
# The TensorFlow sampler (in-memory stores; TensorFlow imported lazily)
# ---------------------------------------------------------------------------------------------------------------
def cpu_variable(array, dtype=None):
    """A non-trainable tf.Variable on the host CPU holding `array` (a copy).

    A variable, not a constant: a dataset function captures it by reference, so the array is never serialized
    into the dataset graph (tf.data rewrites serialize graphs; constants are limited to 2 GB there). Create it
    outside any tf.distribute strategy scope (a scope would mirror it onto every replica's device).
    """
    import tensorflow as tf

    with tf.device("/CPU:0"):
        return tf.Variable(array if dtype is None else np.asarray(array, dtype=dtype), trainable=False)


class TFBatchSampler(_Sampling):
    """The TensorFlow sampler (in-memory stores): the batches of one data stream drawn by TensorFlow ops only.

    Args:
        mel: the store's whole (frames, n_mels) float32 mel array (`MelStore.in_memory_arrays()[0]`) or a
            `cpu_variable` of it (share one variable between the training and validation samplers).
        offsets: (n_store + 1,) int64 frame offsets of the store's tracks (`MelStore.in_memory_arrays()[1]`).
        The other arguments: see `_Sampling`.

    Randomness: TensorFlow's stateless random ops (the default algorithm: Philox on the CPU, where tf.data runs),
    each seeded by
        [seed, ((stream * 64 + tag) * 2^24 + epoch key) * 2^24 + index]
    (epoch key = epoch, or 0 for the validation stream; tag _ORDER_TAG with index 0 for an epoch's order, tag
    _BATCH_TAG with the chunk index for the draws of a chunk), so distinct draws get distinct seeds, which the
    ops hash into independent Philox streams. An epoch's order is a stateless shuffle of 0..n-1. Its batches are
    drawn by chunks of `chunk_steps` consecutive steps (chunk c = steps c*K .. c*K + K - 1 of the epoch; chunks
    start at epoch boundaries): one (K * batch_size, L + 1) uniform float64 draw u per chunk; for each sample, the
    positive is the track's positive with the smallest key u[:, :L], the N negatives its N negatives with the
    smallest keys (positives and negatives use disjoint keys, so the two choices are independent), the crop start
    floor(u[:, L] * number of starts). So a batch is a pure function of (seed, stream, epoch, step) and of the
    chunk size K = min(steps, CHUNK_KEYS // (batch_size * (L + 1))), fixed by the run's data and flags: a run
    resumed at an epoch draws the batches of the uninterrupted run.

    Why chunks: a tf.data map function costs ~5 us per op and call; drawing K batches in one call leaves the
    per-step function little more than the crop gather. Why few ops: tf.data instantiates (and optimizes) the
    functions again for every iterator, i.e. for every validation pass, at ~0.1-0.2 ms per op.
    """

    pipeline = "tensorflow"
    MAX_STEPS = MAX_EPOCHS = 1 << 24  # the seed packs the epoch key and the chunk index into 24 bits each
    CHUNK_KEYS = 1 << 20  # keys per chunk draw: K * batch_size * (L + 1) <= this (8 MB of float64), K >= 1

    def __init__(self, mel, offsets, store_indices, positives, label_vectors, n_negatives: int, batch_size: int,
                 seed: int, stream: str, n_frames: int, multiple: int = 1):
        import tensorflow as tf

        super().__init__(store_indices, positives, label_vectors, n_negatives, batch_size, seed, stream, n_frames,
                         multiple)
        if self.steps >= self.MAX_STEPS:
            raise ValueError(f"{self.steps} steps per epoch: at most {self.MAX_STEPS - 1} (use a larger batch)")
        self.mel = mel if isinstance(mel, tf.Variable) else cpu_variable(mel, np.float32)
        if self.mel.shape.rank != 2:
            raise ValueError(f"mel must be (frames, n_mels), got shape {self.mel.shape}")
        self.n_mels = int(self.mel.shape[1])
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets[-1] != self.mel.shape[0] or (np.diff(offsets) <= 0).any():
            raise ValueError(f"offsets (shape {offsets.shape}) do not describe the {self.mel.shape[0]} mel frames")
        if self.n_samples and not 0 <= self.store_indices.min() <= self.store_indices.max() < len(offsets) - 1:
            raise ValueError(f"store_indices out of range for a store of {len(offsets) - 1} tracks")
        self.chunk_steps = max(1, min(self.steps, self.CHUNK_KEYS // (self.batch_size * (self.n_labels + 1))))
        self.n_chunks = -(-self.steps // self.chunk_steps)
        start, length = offsets[self.store_indices], np.diff(offsets)[self.store_indices]
        span = np.where(length >= self.n_frames, length, -(-self.n_frames // length) * length)  # tiled length
        # Per track: [first frame, length], number of crop starts, seen positives as bits (n * L / 8 bytes).
        self._tables = {
            "frames": cpu_variable(np.stack([start, length], axis=1)),
            "n_starts": cpu_variable((span - self.n_frames + 1).astype(np.float64)),
            "positives": cpu_variable(np.packbits(self.positives, axis=1, bitorder="little")),
            "vectors": cpu_variable(self.label_vectors if self.embedding else np.zeros((0, 1), np.float32)),
        }

    # ---- random draws (eager or inside tf.data) ---------------------------------------------------------------
    def _seed(self, epoch, tag: int, index=0):
        """The (2,) int64 stateless seed of one draw (see the class docstring); epoch and index: ints or tensors."""
        import tensorflow as tf

        key = 0 if self.stream == "valid" else tf.cast(epoch, tf.int64) * (1 << 24)
        high = (STREAMS[self.stream] * 64 + tag) << 48
        return tf.stack([tf.constant(self.seed, tf.int64), high + key + tf.cast(index, tf.int64)])

    def order(self, epoch):
        """(n,) int32 permutation of the tracks for `epoch` (a stateless shuffle seeded by (seed, stream, epoch))."""
        import tensorflow as tf

        return tf.random.experimental.stateless_shuffle(tf.range(self.n_samples, dtype=tf.int32),
                                                        self._seed(epoch, _ORDER_TAG))

    def _chunk_table(self, order):
        """(n_chunks, K * batch_size) int32: the order's rows of each chunk's batches, padded with row 0 (those
        samples are drawn and never used)."""
        import tensorflow as tf

        take = min(self.n_samples, self.steps * self.batch_size)  # rows that belong to a batch
        cells = self.n_chunks * self.chunk_steps * self.batch_size
        return tf.reshape(tf.pad(order[:take], [[0, cells - take]]), [self.n_chunks, -1])

    def _draw_chunk(self, epoch, chunk, rows):
        """The draws of chunk `chunk` (rows: (m,) = (K * batch_size,), its `_chunk_table` row) as one (m, 3 + C)
        int64 matrix (one tensor keeps the graphs small): columns row, positive, crop start, then the N negatives
        (embedding model) or the L seen-positive flags (classification); see `_columns`."""
        import tensorflow as tf

        tables, n_labels = self._tables, self.n_labels
        packed = tf.gather(tables["positives"], rows)[:, :, None]  # (m, ceil(L / 8), 1) uint8
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed, np.arange(8, dtype=np.uint8)), 1)
        is_positive = tf.reshape(bits, [-1, packed.shape[1] * 8])[:, :n_labels] > 0  # (m, L)
        u = tf.random.stateless_uniform([rows.shape[0], n_labels + 1], self._seed(epoch, _BATCH_TAG, chunk),
                                        dtype=tf.float64)
        keys, above = u[:, :n_labels], tf.constant(2.0, tf.float64)  # keys < 1 < above
        positive = tf.argmin(tf.where(is_positive, keys, above), axis=1)  # uniform among the positives
        n_starts = tf.gather(tables["n_starts"], rows)
        crop_start = tf.cast(tf.minimum(tf.floor(u[:, n_labels] * n_starts), n_starts - 1), tf.int64)
        if self.embedding:
            # The N negatives with the smallest keys: N distinct negatives, a uniform subset.
            rest = tf.math.top_k(-tf.where(is_positive, above, keys), k=self.n_negatives).indices
        else:
            rest = is_positive
        return tf.concat([tf.cast(rows, tf.int64)[:, None], positive[:, None], crop_start[:, None],
                          tf.cast(rest, tf.int64)], axis=1)

    def _columns(self, draws) -> dict:
        """`_draw_chunk`'s matrix (or some of its rows) -> {"rows", "positive", "crop_start", and "negatives"
        (embedding model) or "is_positive" (classification)}."""
        named = {"rows": draws[:, 0], "positive": draws[:, 1], "crop_start": draws[:, 2]}
        if self.embedding:
            named["negatives"] = draws[:, 3:]
        else:
            named["is_positive"] = draws[:, 3:] > 0
        return named

    def draw(self, epoch: int, step: int, order=None) -> dict:
        """The random choices of one batch as tensors (what the dataset draws for (epoch, step)).

        Returns {"rows": (b,) track positions, "positive": (b,) label index, "crop_start": (b,) start within the
        (tiled) track, and "negatives": (b, N) label indices (embedding model) or "is_positive": (b, L) bool
        (classification)}, int64. `order`: the epoch's `order(epoch)` when already computed.
        """
        self._check_step(step)
        order = self.order(epoch) if order is None else order
        chunk, within = divmod(int(step), self.chunk_steps)
        draws = self._draw_chunk(epoch, chunk, self._chunk_table(order)[chunk])
        first = within * self.batch_size
        return self._columns(draws[first:first + int(self.batch_sizes()[step])])

    def batch(self, epoch: int, step: int, order=None) -> tuple:
        """One batch as tensors, the same structure as `BatchSampler.batch`.

        Embedding model: (mel (b, T, n_mels), positive (b, s), negatives (b, N, s), target (b, N + 1)).
        Classification model: (mel (b, T, n_mels), multi-hot target (b, L)).
        """
        return self._batch(self.draw(epoch, step, order))

    def _batch(self, choice: dict) -> tuple:
        import tensorflow as tf

        rows, tables = choice["rows"], self._tables
        frames = tf.gather(tables["frames"], rows)  # (b, 2): first frame, length
        within = (choice["crop_start"][:, None] + tf.range(self.n_frames, dtype=tf.int64)) % frames[:, 1:]  # (b, T)
        mel = tf.gather(self.mel, frames[:, :1] + within)  # (b, T, n_mels)
        if not self.embedding:
            return mel, tf.cast(choice["is_positive"], tf.float32)
        target = tf.one_hot(tf.zeros_like(rows), self.n_negatives + 1, dtype=tf.float32)  # [1, 0, ..., 0]
        vectors = tables["vectors"]
        return mel, tf.gather(vectors, choice["positive"]), tf.gather(vectors, choice["negatives"]), target

    def _element(self, batch: tuple):
        """A batch in the structure `fit` takes: ({"mel", "positive", "negatives"}, target) or (mel, target),
        with the static shapes of `element_shapes`."""
        for tensor, shape in zip(batch, self.element_shapes(self.n_mels)):
            tensor.set_shape(shape)
        return _as_element(batch, self.embedding)

    def dataset(self, first_epoch: int, last_epoch: int, workers: int):
        """tf.data dataset of the batches of epochs first_epoch .. last_epoch - 1.

        (epoch, chunk) indices -> map: the chunk's rows and draws, split into its steps -> unbatch: one element
        per step -> `workers` parallel map calls: crop gather, side vectors (deterministic order) -> prefetch.
        """
        import tensorflow as tf

        first_epoch, last_epoch = int(first_epoch), max(int(first_epoch), int(last_epoch))
        if last_epoch > self.MAX_EPOCHS:
            raise ValueError(f"epoch {last_epoch - 1}: at most {self.MAX_EPOCHS - 1} epochs")
        steps, size, k, workers = self.steps, self.batch_size, self.chunk_steps, max(1, int(workers))
        sizes = tf.constant(self.batch_sizes(), tf.int64)

        def chunk_steps(index):  # index = epoch * n_chunks + chunk
            epoch, chunk = index // self.n_chunks, index % self.n_chunks
            # The epoch's order again for each chunk: O(n) per chunk, cheaper than one more map function.
            rows = tf.gather(self._chunk_table(self.order(epoch)), chunk)
            draws = tf.reshape(self._draw_chunk(epoch, chunk, rows), [k, size, -1])
            n = tf.minimum(tf.cast(k, tf.int64), steps - chunk * k)  # the last chunk of an epoch may be short
            return draws[:n], sizes[chunk * k:chunk * k + n]

        def element(draws, n):
            if self.batch_dim is None:  # some batch is partial
                draws = draws[:n]
            return self._element(self._batch(self._columns(draws)))

        chunks = tf.data.Dataset.range(first_epoch * self.n_chunks, last_epoch * self.n_chunks)
        batches = chunks.map(chunk_steps).unbatch().map(element, num_parallel_calls=workers, deterministic=True)
        # unbatch hides the length; Keras needs it to end a validation pass without an "out of data" warning.
        batches = batches.apply(tf.data.experimental.assert_cardinality((last_epoch - first_epoch) * steps))
        # tf.data's default graph rewrites (map fusion, parallelization, injected prefetch) have nothing to do
        # here (the map is parallel, the prefetch explicit) but cost ~10 ms at every iterator, i.e. every
        # validation pass.
        return _with_options(batches.prefetch(max(2, workers)), default_optimizations=False)


def make_samplers(store, parts: dict, label_vectors, n_negatives: int, batch_size: int, seed: int, n_frames: int,
                  multiple: int = 1, pipeline: str = "auto") -> dict:
    """One sampler per stream of `parts` ({stream: (store_indices, positives)}), all of the same pipeline.

    pipeline "auto": "tensorflow" when `store.in_memory` (one CPU tf.Variable of the mel array shared by the
    streams; create the samplers outside any strategy scope), else "numpy". "tensorflow" on a lazy store raises
    ValueError (its frames are not in RAM). The TensorFlow samplers do not keep a reference to the store.
    """
    if pipeline == "auto":
        pipeline = "tensorflow" if store.in_memory else "numpy"
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be auto or one of {', '.join(PIPELINES)}, got {pipeline!r}")
    common = dict(label_vectors=label_vectors, n_negatives=n_negatives, batch_size=batch_size, seed=seed,
                  n_frames=n_frames, multiple=multiple)
    if pipeline == "numpy":
        return {stream: BatchSampler(store, indices, positives, stream=stream, **common)
                for stream, (indices, positives) in parts.items()}
    if not store.in_memory:
        raise ValueError(f"the tensorflow input pipeline needs an in-memory store; {store.path} is read lazily")
    mel, offsets = store.in_memory_arrays()
    variable = cpu_variable(mel)
    return {stream: TFBatchSampler(variable, offsets, indices, positives, stream=stream, **common)
            for stream, (indices, positives) in parts.items()}


# ---------------------------------------------------------------------------------------------------------------
# tf.data wrappers (TensorFlow imported lazily)
# ---------------------------------------------------------------------------------------------------------------
def _as_element(batch: tuple, embedding: bool):
    if embedding:
        mel, positive, negatives, target = batch
        return {"mel": mel, "positive": positive, "negatives": negatives}, target
    return batch


def _with_options(dataset, default_optimizations: bool = True):
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = default_optimizations
    # Each element is a whole global batch drawn from its own seed: with several workers (multi-worker strategy)
    # shard by element; there are no files to shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _map_batches(keys, sampler: BatchSampler, workers: int, n_mels: int):
    """Map a dataset of (epoch, step) int64 keys to model batches with `workers` parallel numpy loaders."""
    import tensorflow as tf

    def load(epoch, step):
        return sampler.batch(int(epoch), int(step))

    shapes = sampler.element_shapes(n_mels)

    def tf_load(epoch, step):
        batch = tf.numpy_function(load, [epoch, step], [tf.float32] * len(shapes), stateful=False)
        for tensor, shape in zip(batch, shapes):
            tensor.set_shape(shape)
        return _as_element(tuple(batch), sampler.embedding)

    workers = max(1, int(workers))
    dataset = keys.map(tf_load, num_parallel_calls=workers, deterministic=True)
    return _with_options(dataset.prefetch(max(2, workers)))


def training_dataset(sampler, first_epoch: int, last_epoch: int, workers: int, n_mels: int):
    """tf.data dataset of the batches of epochs first_epoch .. last_epoch - 1, `sampler.steps` per epoch.

    `sampler`: a `TFBatchSampler` (TensorFlow ops only; `workers` parallel map calls) or a `BatchSampler`
    (`workers` numpy loader threads; `n_mels` gives the static shape). Use with `model.fit(...,
    steps_per_epoch=sampler.steps, initial_epoch=first_epoch, epochs=last_epoch)`.
    """
    import tensorflow as tf

    if isinstance(sampler, TFBatchSampler):
        return sampler.dataset(first_epoch, last_epoch, workers)
    steps = sampler.steps
    keys = tf.data.Dataset.range(int(first_epoch) * steps, int(last_epoch) * steps)
    keys = keys.map(lambda k: (k // steps, k % steps))
    return _map_batches(keys, sampler, workers, n_mels)


def validation_dataset(sampler, workers: int, n_mels: int):
    """tf.data dataset of the fixed validation batches (identical every time it is iterated)."""
    import tensorflow as tf

    if isinstance(sampler, TFBatchSampler):
        return sampler.dataset(0, 1, workers)
    keys = tf.data.Dataset.range(sampler.steps).map(lambda s: (tf.constant(0, tf.int64), s))
    return _map_batches(keys, sampler, workers, n_mels)
