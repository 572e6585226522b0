"""What a training batch holds (docs/original.md, "Training"), and how it reaches `fit`.

An epoch holds one sample per track of the stream, in an order shuffled per epoch, cut into batches
of `batch_size`; the last, partial training batch is left out (train.py --last-batch drop, the
original) or kept (--last-batch keep). A sample of the embedding model is
  * mel        one 130-frame crop of the track's standardized log-mel, its start drawn uniformly
               among the
               `frontend.crop_starts(length, 130)` valid starts (a track shorter than 130 frames is
                   tiled first,
               as `frontend.crop` does),
  * positive   the side vector of one label drawn uniformly from the track's seen positives,
  * negatives  the side vectors of N labels drawn uniformly without replacement from its seen
               negatives,
  * target     [1, 0, ..., 0] (the hinge loss ignores it: column 0 is the positive);
a sample of the classification model is the crop and the multi-hot vector of the track's seen
labels. The validation stream keeps every track and draws the batches of epoch 0 every epoch, so
that val_loss compares across epochs (train.py --valid-draws once), or new ones every epoch
(--valid-draws every-epoch, the original).

`Sampler.draw` makes every random choice of a batch as a pure function of (seed, stream, epoch,
step), in numpy; the store only reads the crops (`MelStore.crops`, from RAM or lazily from the
file). So a batch is the same whatever the storage, the loader workers or the prefetching, and a run
resumed at epoch k draws the batches the uninterrupted run drew. `Batches` serves them to `fit` as a
`keras.utils.PyDataset` (numpy arrays: any backend).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

from config import ConfigError
from preprocess.frontend import SEGMENT_FRAMES, crop_starts

STREAMS = {"train": 1, "valid": 2}
# Keep an epoch's order and its batches' draws apart (SeedSequence pads keys with zeros)
_ORDER = 11
_BATCH = 12


class Draw(NamedTuple):
    """The random choices of one batch of b samples."""

    tracks: np.ndarray  # (b,) positions of the samples' tracks in the stream
    starts: np.ndarray  # (b,) crop starts, 0 <= start < crop_starts(length, n_frames)
    positive: np.ndarray  # (b,) label index of each sample's positive
    # (b, N) label indices of its negatives (N = 0 for the classification model)
    negatives: np.ndarray


class Sampler:
    """The random choices of the batches of one stream of tracks.

    Args:
        positives: (n, L) bool/0-1, the tracks' seen labels (columns: split["seen"]).
        lengths: (n,) frames of each track.
        n_negatives: N per sample (0: classification model). Each track needs >= N seen negatives
            (train.py checks). batch_size, seed: train.py's flags.
        stream: "train" or "valid": keys the draws apart.
        multiple: every batch holds a multiple of this many samples (the replicas of a strategy need
            equal shares): the last batch of an epoch is cut, leaving out at most multiple - 1
            samples.
        part: (k, parts): draw whole batches, keep the k-th of `parts` equal slices (the process k
            of a multi-process data-parallel run feeds that slice; `multiple` must divide by parts).
        drop_last: leave the last, partial batch of an epoch out (the original's floor(n /
            batch_size) batches).
        redraw: new draws every epoch; False: every epoch draws the batches of epoch 0. Default: the
            training
            stream redraws, the validation stream does not (so that val_loss compares across
                epochs).
    """

    def __init__(
        self,
        positives,
        lengths,
        n_negatives: int,
        batch_size: int,
        seed: int,
        stream: str,
        n_frames: int = SEGMENT_FRAMES,
        multiple: int = 1,
        drop_last: bool = False,
        redraw: bool | None = None,
        part: tuple[int, int] = (0, 1),
    ):
        self.positives = np.asarray(positives).astype(bool)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.n_negatives = int(n_negatives)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.stream = stream
        self.n_frames = int(n_frames)
        self.multiple = int(multiple)
        self.drop_last = bool(drop_last)
        self.redraw = stream == "train" if redraw is None else bool(redraw)
        self.part = part
        rules = [  # (holds, the message when it does not)
            (stream in STREAMS, f"stream must be one of {', '.join(STREAMS)}, got {stream!r}"),
            (
                self.batch_size >= 1 and self.multiple >= 1 and not self.batch_size % self.multiple,
                f"batch_size {batch_size} must be a positive multiple of {multiple}",
            ),
            (
                self.positives.ndim == 2 and len(self.positives) == len(self.lengths),
                f"{len(self.lengths)} tracks but positives of shape {self.positives.shape}",
            ),
        ]
        if broken := next((message for holds, message in rules if not holds), None):
            raise ValueError(broken)
        self._orders: dict[int, np.ndarray] = {}

    @property
    def steps(self) -> int:
        """Batches per epoch: floor(n / batch_size) with drop_last, else ceil(n / batch_size), less
        the last one when its cut to a multiple leaves nothing."""
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + int(rest >= self.multiple and not self.drop_last)

    def _key(self, epoch: int, *more: int) -> list[int]:
        return [self.seed, STREAMS[self.stream], int(epoch) if self.redraw else 0, *more]

    def order(self, epoch: int) -> np.ndarray:
        """(n,) the epoch's permutation of the tracks (the last two epochs' are kept: every batch
        needs one)."""
        key = self._key(epoch)[2]
        if key not in self._orders:
            order = np.random.default_rng(self._key(epoch, _ORDER)).permutation(len(self.lengths))
            # prefetching reaches into the next epoch
            previous = dict(list(self._orders.items())[-1:])
            self._orders = {**previous, key: order}  # one assignment: safe for a loader thread
        return self._orders[key]

    def draw(self, epoch: int, step: int) -> Draw:
        """The random choices of batch `step` of `epoch` (see the module docstring for what they
        mean)."""
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} out of range: an epoch has {self.steps} batches")
        tracks = self.order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        tracks = tracks[: len(tracks) - len(tracks) % self.multiple]
        rng = np.random.default_rng(self._key(epoch, _BATCH, step))
        is_positive = self.positives[tracks]  # (b, L)
        # One uniform key per (sample, label). The positive with the smallest key is a uniform
        # choice among the positives; the N negatives with the smallest keys are a uniform subset of
        # the negatives (without replacement). Positives and negatives are disjoint, so the two
        # choices are independent.
        keys = rng.random(is_positive.shape)  # (b, L)
        positive = np.argmin(np.where(is_positive, keys, 2.0), axis=1)  # (b,)
        negatives = np.zeros((len(tracks), 0), dtype=np.int64)
        if self.n_negatives:
            negative_keys = np.where(is_positive, 2.0, keys)
            # (b, N)
            negatives = np.argpartition(negative_keys, self.n_negatives - 1, axis=1)[
                :, : self.n_negatives
            ]
        starts = rng.integers(0, crop_starts(self.lengths[tracks], self.n_frames))  # (b,)
        size = len(tracks) // self.part[1]  # (the whole batch is drawn: the same in every part)
        mine = slice(self.part[0] * size, (self.part[0] + 1) * size)
        return Draw(tracks[mine], starts[mine], positive[mine], negatives[mine])


def loader_options(workers: int) -> dict:
    """keras.utils.PyDataset's options for train.py --workers. 1 loads beside training: in tf.data's
    prefetching thread under TensorFlow, in two Keras threads under other backends (Keras 3 runs a
    PyDataset of one worker in the training loop itself, where a synchronous step, e.g. with
    TerminateOnNaN, would wait for every batch); N > 1 in N worker processes (for many cores;
    threads would share the GIL with the training loop)."""
    threads = 2 if workers == 1 and keras.backend.backend() != "tensorflow" else workers
    return {"workers": threads, "use_multiprocessing": workers > 1, "max_queue_size": 2 * workers}


class Batches(keras.utils.PyDataset):
    """The batches of one stream for `fit`, as numpy arrays: ({"mel", "positive", "negatives"},
    target) for the embedding model, (mel, multi-hot target) for the classification model
    (`label_vectors` None).

    Training (`first_epoch` given): batch k is step k % steps of epoch first_epoch + k // steps,
        without end; use `fit(..., steps_per_epoch=sampler.steps, initial_epoch=first_epoch)`. Keras
        keeps one iterator across the epochs, and its worker pool goes on with the next index after
        each epoch. Validation: the `steps` batches of epoch 0 (`RedrawnValidation`: of the epoch
        being trained). `workers`: see `loader_options`.

    Args:
        store: an open `preprocess.melstore.MelStore`; rows: (n,) the store row of each of the
            sampler's tracks.
        label_vectors: (L, side_dim) float32 side vectors of the seen labels, or None
            (classification).
    """

    def __init__(
        self,
        store,
        rows,
        sampler: Sampler,
        label_vectors=None,
        first_epoch: int | None = None,
        workers: int = 1,
    ):
        super().__init__(**loader_options(workers))
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.sampler = sampler
        self.label_vectors = (
            None if label_vectors is None else np.asarray(label_vectors, dtype=np.float32)
        )
        self.first_epoch = first_epoch

    @property
    def num_batches(self) -> int | None:
        return None if self.first_epoch is not None else self.sampler.steps

    def __getitem__(self, index: int):
        epoch, step = divmod(int(index), self.sampler.steps)
        draw = self.sampler.draw((self.first_epoch or 0) + epoch, step)
        # the stored dtype (float16 by default): the model casts it to float32 far faster than numpy
        # does (b, 130, 128)
        mel = self.store.crops(
            self.rows[draw.tracks], draw.starts, self.sampler.n_frames, dtype=None
        )
        if self.label_vectors is None:
            return mel, self.sampler.positives[draw.tracks].astype(np.float32)  # (b, L) multi-hot
        target = np.zeros((len(draw.tracks), self.sampler.n_negatives + 1), dtype=np.float32)
        target[:, 0] = 1.0
        inputs = {
            "mel": mel,
            "positive": self.label_vectors[draw.positive],  # (b, side_dim)
            "negatives": self.label_vectors[draw.negatives],
        }  # (b, N, side_dim)
        return inputs, target


class RedrawnValidation(Batches):
    """Validation batches drawn anew every epoch (train.py --valid-draws every-epoch): batch `index`
    of the draws of `epoch`, which the callback of `follow_epochs` sets when each training epoch
    begins. Keras reads a validation's batches only after that (its worker processes start anew for
    every validation), so epoch e validates on the draws of epoch e, also after a resume."""

    epoch = 0

    def __getitem__(self, index: int):
        return super().__getitem__(self.epoch * self.sampler.steps + int(index))

    def follow_epochs(self):
        """The callback for `fit` that keeps `epoch` at the epoch being trained."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: setattr(self, "epoch", int(epoch))
        )


def training_batches(
    store,
    parts: dict,
    label_vectors,
    n_negatives: int,
    batch_size: int,
    seed: int,
    first_epoch: int,
    workers: int = 1,
    replicas: int = 1,
    last_batch: str = "keep",
    valid_draws: str = "once",
    part: tuple[int, int] = (0, 1),
) -> dict:
    """{"train", "valid"} `Batches` of parts {stream: (store rows, positives)} for train.py's flags,
    training from `first_epoch`; label_vectors None: the classification model. Several replicas load
    in this process (a tf.distribute dataset takes batches from the worker pool out of order).

    last_batch "drop" leaves the last partial training batch out; validation always uses every
    track. valid_draws "every-epoch": the validation batches are a `RedrawnValidation` (pass its
    `follow_epochs()` to fit). part: (this process, processes) of a data-parallel run (Sampler)."""
    if batch_size % replicas or len(parts["valid"][0]) < replicas:
        raise ConfigError(
            f"--batch-size {batch_size} and the {len(parts['valid'][0])} validation tracks must be "
            f"shared evenly by the {replicas} replicas of the --strategy."
        )
    batches = {}
    redraw = {"train": True, "valid": valid_draws == "every-epoch"}
    for stream, (rows, positives) in parts.items():
        sampler = Sampler(
            positives,
            store.lengths[rows],
            n_negatives * (label_vectors is not None),  # the classification model draws none
            batch_size,
            seed,
            stream,
            multiple=replicas,
            drop_last=stream == "train" and last_batch == "drop",
            redraw=redraw[stream],
            part=part,
        )
        kind = RedrawnValidation if stream == "valid" and redraw["valid"] else Batches
        batches[stream] = kind(
            store,
            rows,
            sampler,
            label_vectors,
            first_epoch if stream == "train" else None,
            workers if replicas == 1 else 1,  # several replicas load in this process
        )
    return batches


def input_pipeline(store) -> str:
    """The name config.json and train_summary.json record: the batches come from RAM or lazily from
    the file."""
    return "numpy-in-memory" if store.in_memory else "numpy-lazy"
