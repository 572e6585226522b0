"""Benchmark: does the training input pipeline starve the model? (target: ratio >= 0.9)

Trains the deep embedding model (paper Sec. 4.1; 40-d side information, batch 64, 1 negative) two ways and
compares their throughput (samples/s of one epoch, after a first epoch that traces the step function):

  model only   `fit` on one batch of in-memory tensors repeated (tf.data.Dataset.from_tensors(...).repeat())
  end to end   `fit` on train.py's real pipeline (models.pipeline.make_samplers + training_dataset, as train.py
               builds them: random crops from a float16 HDF5 mel store written with the documented layout, label
               draws, side-vector lookups). The store is in memory (auto: < 2 GiB), so this is the "tensorflow"
               pipeline (TensorFlow ops only, no Python per batch); --pipeline numpy times the numpy loader that
               train.py uses for lazily read stores (--in-memory no picks it too)

  tf-only      reference, not the pipeline: crops gathered by TensorFlow ops alone (random starts, tf.gather from
               the whole in-memory mel array, no Python per batch) - the cheapest input a CPU-only machine can
               feed; its ratio is how much of the gap the cores' sharing alone explains

Each end-to-end epoch reads the first of a two-epoch dataset, as in train.py, whose dataset spans all remaining
epochs (a dataset that ends with the timed epoch would make Keras build a next epoch's iterator inside it). All
batches are full here (--steps x --batch-size samples), so both pipelines declare a static batch dimension, as
model only does; with a partial last batch the model step itself runs ~3 % slower on this CPU (unknown batch
dimension), whatever the input. "pipeline alone" iterates the pipeline's dataset without a model, one load at
a time.

ratio = end-to-end samples/s / model-only samples/s, the median over --rounds rounds of two adjacent epochs (one
of each, alternating which goes first), since other processes share the CPU. Prints a human-readable
report and one JSON line. Exit status 0: a timing miss is reported as MISS, not as a failure, since timings on a
shared machine are noisy (--strict exits 1 on a miss).

On 2 CPU cores the model step and the loader share the cores, so any input work (even TensorFlow's own gather,
see tf-only) shows up directly in the ratio; on a GPU the model step leaves the CPU free for loading.

    python benchmarks/bench_train.py [--tracks 512] [--frames 650] [--steps 100] [--workers 2] [--rounds 9]
                                     [--pipeline auto|tensorflow|numpy]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 0.9


def write_store(path: Path, n_tracks: int, frames: int, seed: int, dtype: str = "float16") -> None:
    """A store with the documented layout (float16 = the audio builder's default dtype); lengths vary +-30%."""
    import h5py

    from preprocess.store import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(frames * 0.7), int(frames * 1.3) + 1, size=n_tracks)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("track_ids", data=np.array([str(i) for i in range(n_tracks)], dtype=object),
                              dtype=h5py.string_dtype("utf-8"))
        handle.create_dataset("offsets", data=offsets)
        mel = handle.create_dataset("mel", shape=(int(offsets[-1]), N_MELS), dtype=dtype)
        for start in range(0, n_tracks, 64):
            stop = min(start + 64, n_tracks)
            mel[offsets[start]:offsets[stop]] = rng.normal(size=(int(offsets[stop] - offsets[start]), N_MELS))
        for key, value in {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS,
                           "mean": 0.0, "std": 1.0}.items():
            handle.attrs[key] = value


class EpochTimer:
    """Wall time of each epoch (Keras callback built lazily so that --help does not import Keras)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        return _Timer()


def build_model(side_dim: int):
    import models

    model = models.build_embedding_model(side_dim, 1)
    model.compile(optimizer=models.DecaySGD(0.001, momentum=0.9, nesterov=True, decay=1e-6),
                  loss=models.HingeRankingLoss(0.4, "sum"))
    return model


def epoch_throughput(model, dataset, steps: int, batch_size: int) -> float:
    """Samples/s of one `fit` epoch (timed from on_epoch_begin to on_epoch_end, so fit's set-up is excluded)."""
    timer = EpochTimer()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0, shuffle=False)
    return steps * batch_size / timer.times[0]


def tf_only_dataset(store, vectors: np.ndarray, batch_size: int):
    """Reference input: random 130-frame crops and label vectors drawn by TensorFlow ops only (no Python per batch)."""
    import tensorflow as tf

    from preprocess.store import SEGMENT_FRAMES

    frames_all = np.concatenate([store.frames(i) for i in range(len(store))])  # (frames, 128) float32
    mel = tf.Variable(frames_all, trainable=False)  # a variable, not a constant: no 2 GB graph limit
    table = tf.constant(vectors)
    n_frames, n_labels = int(mel.shape[0]), int(vectors.shape[0])
    target = tf.tile(tf.constant([[1.0, 0.0]]), [batch_size, 1])

    def batch(_):
        starts = tf.random.uniform((batch_size, 1), 0, n_frames - SEGMENT_FRAMES, dtype=tf.int64)
        frames = starts + tf.range(SEGMENT_FRAMES, dtype=tf.int64)[None, :]  # (b, 130)
        labels = tf.random.uniform((batch_size, 2), 0, n_labels, dtype=tf.int64)
        inputs = {"mel": tf.gather(mel, frames), "positive": tf.gather(table, labels[:, 0]),
                  "negatives": tf.gather(table, labels[:, 1:])}
        return inputs, target

    return tf.data.Dataset.range(1 << 40).map(batch, num_parallel_calls=2).prefetch(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tracks", type=int, default=512, help="tracks in the generated store")
    parser.add_argument("--frames", type=int, default=650, help="mean frames per track (650 ~ 15 s)")
    parser.add_argument("--labels", type=int, default=50, help="seen labels")
    parser.add_argument("--side-dim", type=int, default=40, help="side-information dimension")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (original: 64)")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--workers", type=int, default=2,
                        help="parallel batch loads of the real pipeline (train.py --workers)")
    parser.add_argument("--pipeline", choices=("auto", "tensorflow", "numpy"), default="auto",
                        help="input pipeline of the end-to-end run (auto: what train.py picks for the store)")
    parser.add_argument("--rounds", type=int, default=9,
                        help="rounds of one model-only epoch and one end-to-end epoch; the ratio is their median")
    parser.add_argument("--in-memory", choices=("auto", "yes", "no"), default="auto",
                        help="MelStore in_memory (auto: RAM when < 2 GiB, like train.py)")
    parser.add_argument("--store-dtype", choices=("float16", "float32"), default="float16",
                        help="dtype of the generated store (preprocess.store default: float16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the ratio misses the target")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from models.pipeline import make_samplers, training_dataset
    from preprocess.store import N_MELS, SEGMENT_FRAMES, MelStore

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_samples = args.steps * args.batch_size
    positives = rng.random((n_samples, args.labels)) < 0.05
    positives[np.arange(n_samples), rng.integers(0, args.labels, n_samples)] = True
    vectors = rng.normal(size=(args.labels, args.side_dim)).astype(np.float32)
    in_memory = {"auto": None, "yes": True, "no": False}[args.in_memory]

    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "mels.h5"
        write_store(store_path, args.tracks, args.frames, args.seed, args.store_dtype)
        with MelStore(store_path, in_memory=in_memory) as store:
            parts = {"train": (rng.integers(0, args.tracks, n_samples), positives)}
            sampler = make_samplers(store, parts, vectors, 1, args.batch_size, args.seed, SEGMENT_FRAMES,
                                    pipeline=args.pipeline)["train"]
            inputs = {"mel": rng.normal(size=(args.batch_size, SEGMENT_FRAMES, N_MELS)).astype(np.float32),
                      "positive": vectors[rng.integers(0, args.labels, args.batch_size)],
                      "negatives": vectors[rng.integers(0, args.labels, (args.batch_size, 1))]}
            target = np.tile(np.array([[1.0, 0.0]], np.float32), (args.batch_size, 1))
            model_only = tf.data.Dataset.from_tensors((inputs, target)).repeat()
            tf_only = tf_only_dataset(store, vectors, args.batch_size)
            trained = {kind: build_model(args.side_dim) for kind in ("model_only", "end_to_end", "tf_only")}
            epoch = 0

            def dataset_for(kind):
                nonlocal epoch
                epoch += 1
                if kind == "model_only":
                    return model_only
                if kind == "tf_only":
                    return tf_only
                # Two epochs, of which fit reads one: train.py's dataset spans all remaining epochs, so an epoch
                # is followed by more data. (A dataset that ends with the epoch makes Keras build the iterator of
                # a next epoch inside the timed one, a cost a real run pays once, not per epoch.)
                return training_dataset(sampler, epoch, epoch + 2, args.workers, N_MELS)

            for kind in trained:  # trace the step functions
                epoch_throughput(trained[kind], dataset_for(kind), args.steps, args.batch_size)
            best = {kind: 0.0 for kind in trained}
            paired, reference = [], []
            for round_index in range(args.rounds):
                rates = {}
                order = ("model_only", "end_to_end", "tf_only")
                order = order if round_index % 2 == 0 else order[::-1]
                for kind in order:  # adjacent epochs, alternating order: bursts of machine load hit both alike
                    rates[kind] = epoch_throughput(trained[kind], dataset_for(kind), args.steps, args.batch_size)
                    best[kind] = max(best[kind], rates[kind])
                paired.append(rates["end_to_end"] / rates["model_only"])
                reference.append(rates["tf_only"] / rates["model_only"])
            in_ram = store.in_memory
            loader = iter(training_dataset(sampler, 0, 1, 1, N_MELS))  # the pipeline alone, one batch at a time
            next(loader)  # its first batch pays for tracing the map function
            start = time.perf_counter()
            for _ in loader:
                pass
            loader_only = (args.steps - 1) * args.batch_size / (time.perf_counter() - start)

    ratio = float(np.median(paired))
    ceiling = float(np.median(reference))
    best_ratio = best["end_to_end"] / best["model_only"]
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print(f"store: {args.tracks} tracks x ~{args.frames} frames {args.store_dtype} (in memory: {in_ram}); batch "
          f"{args.batch_size}, {args.steps} steps/epoch, {sampler.pipeline} input pipeline, {args.workers} parallel "
          f"loads, {os.cpu_count()} CPUs")
    print(f"model only (in-memory tensors): {best['model_only']:8.1f} samples/s")
    print(f"end to end (train.py pipeline): {best['end_to_end']:8.1f} samples/s")
    print(f"tf-only reference input:        {best['tf_only']:8.1f} samples/s  (ratio {ceiling:.3f}: the cost of any "
          "input on these cores)")
    print(f"pipeline alone (one at a time): {loader_only:8.1f} samples/s")
    print(f"per-round ratios:               {', '.join(f'{r:.2f}' for r in paired)}")
    print(f"best end-to-end / best model-only: {best_ratio:.3f}")
    print(f"ratio end-to-end / model-only:  {ratio:8.3f}   (median of the rounds) target >= {TARGET}: {verdict}")
    print(f"end-to-end / tf-only reference: {ratio / ceiling:8.3f}")
    print(json.dumps({"benchmark": "train_pipeline", "tf_only_ratio": round(ceiling, 4),
                      "model_only_samples_per_s": round(best["model_only"], 2),
                      "end_to_end_samples_per_s": round(best["end_to_end"], 2),
                      "loader_samples_per_s": round(loader_only, 2), "ratio": round(ratio, 4),
                      "best_ratio": round(best_ratio, 4),
                      "round_ratios": [round(r, 4) for r in paired], "target": TARGET,
                      "pass": ratio >= TARGET, "in_memory": in_ram, "input_pipeline": sampler.pipeline,
                      "workers": args.workers,
                      "batch_size": args.batch_size, "cpus": os.cpu_count()}))
    return 1 if args.strict and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
