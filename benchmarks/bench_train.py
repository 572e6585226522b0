"""Benchmark: does the training input pipeline starve the model? (target: ratio >= 0.9 for the in-memory store)

Trains the deep embedding model (paper Sec. 4.1; 40-d side information, batch 64, 1 negative) and compares the
throughput (samples/s of one epoch, after a first epoch that traces the step function) of

  model only   `fit` on one batch of in-memory tensors repeated: no input work at all
  end to end   `fit` on train.py's batches (models.pipeline.training_batches, train.py's --workers): random crops
               from a float16 HDF5 mel store written with the documented layout, label draws, side-vector lookups.
               Two paths, side by side in every round:
                 in memory  the store held in RAM (MelStore(in_memory=True))     -> ratio target >= 0.9
                 lazy       the store read lazily from the file (in_memory=False)   -> reported, no target
               (the lazy store is page-cached by the OS after its first epoch: this measures the loader, not a disk)

ratio = end-to-end samples/s / model-only samples/s, the median over --rounds rounds of adjacent epochs (the order
alternates), since other processes share the CPU. "loader alone" reads the batches of one epoch in this process,
one after the other, without a model. Prints a report and one JSON line (the in-memory path's figures at the top
level, the lazy path's under "lazy"). Exit status 0: a timing miss is reported as MISS, not as a failure, since
timings on a shared machine are noisy (--strict exits 1 on a miss). On 2 CPU cores the model step and the loader
share the cores, so any input work shows in the ratio; on a GPU the model step leaves the CPU to the loader.

    python benchmarks/bench_train.py [--tracks 512] [--frames 650] [--steps 100] [--workers 1] [--rounds 9]
                                     [--in-memory both|yes|no]
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
PATHS = {"yes": (True,), "no": (False,), "both": (True, False)}


def write_store(path: Path, n_tracks: int, frames: int, seed: int, dtype: str = "float16") -> None:
    """A store with the documented layout (float16 = the store builder's default dtype); lengths vary +-30%."""
    import h5py

    from preprocess.frontend import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

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


def build_model(side_dim: int):
    import models

    model = models.build_embedding_model(side_dim, 1)
    model.compile(optimizer=models.DecaySGD(0.001, momentum=0.9, nesterov=True, decay=1e-6),
                  loss=models.HingeRankingLoss(0.4, "sum"))
    return model


def epoch_throughput(model, data, steps: int, batch_size: int) -> float:
    """Samples/s of one `fit` epoch, timed from on_epoch_begin to on_epoch_end (fit's set-up excluded)."""
    import keras

    times = {}
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: times.update(start=time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.update(end=time.perf_counter()))
    model.fit(data, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0, shuffle=False)
    return steps * batch_size / (times["end"] - times["start"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tracks", type=int, default=512, help="tracks in the generated store")
    parser.add_argument("--frames", type=int, default=650, help="mean frames per track (650 ~ 15 s)")
    parser.add_argument("--labels", type=int, default=50, help="seen labels")
    parser.add_argument("--side-dim", type=int, default=40, help="side-information dimension")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (original: 64)")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--workers", type=int, default=1, help="train.py --workers (1: one loader thread)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of adjacent epochs; ratios are their median")
    parser.add_argument("--in-memory", choices=tuple(PATHS), default="both",
                        help="store paths to time: in memory (yes), read lazily (no), or both side by side")
    parser.add_argument("--store-dtype", choices=("float16", "float32"), default="float16",
                        help="dtype of the generated store (preprocess.store default: float16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the in-memory ratio misses the target")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from models.pipeline import input_pipeline, training_batches
    from preprocess.frontend import N_MELS, SEGMENT_FRAMES
    from preprocess.melstore import MelStore

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_samples = args.steps * args.batch_size
    positives = rng.random((n_samples, args.labels)) < 0.05
    positives[np.arange(n_samples), rng.integers(0, args.labels, n_samples)] = True
    vectors = rng.normal(size=(args.labels, args.side_dim)).astype(np.float32)
    rows = rng.integers(0, args.tracks, n_samples)
    parts = {"train": (rows, positives), "valid": (rows[:args.batch_size], positives[:args.batch_size])}
    inputs = {"mel": rng.normal(size=(args.batch_size, SEGMENT_FRAMES, N_MELS)).astype(np.float32),
              "positive": vectors[rng.integers(0, args.labels, args.batch_size)],
              "negatives": vectors[rng.integers(0, args.labels, (args.batch_size, 1))]}
    target = np.tile(np.array([[1.0, 0.0]], np.float32), (args.batch_size, 1))
    model_only = tf.data.Dataset.from_tensors((inputs, target)).repeat()

    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "mels.h5"
        write_store(store_path, args.tracks, args.frames, args.seed, args.store_dtype)
        stores = {in_memory: MelStore(store_path, in_memory=in_memory) for in_memory in PATHS[args.in_memory]}
        epoch = 0

        def batches(store):  # a new epoch each time (batches as train.py builds them)
            nonlocal epoch
            epoch += 1
            return training_batches(store, parts, vectors, 1, args.batch_size, args.seed, epoch, args.workers)["train"]

        kinds = {"model_only": lambda: model_only, **{m: (lambda s=s: batches(s)) for m, s in stores.items()}}
        trained = {kind: build_model(args.side_dim) for kind in kinds}
        for kind, data in kinds.items():  # trace the step functions
            epoch_throughput(trained[kind], data(), args.steps, args.batch_size)
        rates = {kind: [] for kind in kinds}
        for round_index in range(args.rounds):  # adjacent epochs, alternating order: load bursts hit all alike
            for kind in list(kinds)[::1 if round_index % 2 == 0 else -1]:
                rates[kind].append(epoch_throughput(trained[kind], kinds[kind](), args.steps, args.batch_size))
        results = {}
        for in_memory, store in stores.items():
            loader = batches(store)
            start = time.perf_counter()
            for k in range(args.steps):
                loader[k]
            ratios = np.array(rates[in_memory]) / np.array(rates["model_only"])
            results[in_memory] = {
                "in_memory": store.in_memory, "input_pipeline": input_pipeline(store),
                "loader_samples_per_s": round(n_samples / (time.perf_counter() - start), 1),
                "end_to_end_samples_per_s": round(float(np.median(rates[in_memory])), 1),
                "ratio": round(float(np.median(ratios)), 4), "round_ratios": [round(r, 4) for r in ratios]}
            store.close()

    print(f"store: {args.tracks} tracks x ~{args.frames} frames {args.store_dtype}; batch {args.batch_size}, "
          f"{args.steps} steps/epoch, {args.workers} loader worker(s), {os.cpu_count()} CPUs, {args.rounds} rounds")
    print(f"model only (in-memory tensors):   {np.median(rates['model_only']):8.1f} samples/s")
    for result in results.values():
        verdict = f"target >= {TARGET}: {'PASS' if result['ratio'] >= TARGET else 'MISS'}" if result["in_memory"] \
            else "(reported, no target)"
        print(f"{result['input_pipeline']:>15}: end to end {result['end_to_end_samples_per_s']:8.1f} samples/s, "
              f"loader alone {result['loader_samples_per_s']:8.1f} samples/s, ratio {result['ratio']:.3f} {verdict}")
        print(f"{'':>15}  per-round ratios: {', '.join(f'{r:.2f}' for r in result['round_ratios'])}")
    head = results.get(True) or results[False]
    record = {"benchmark": "train_pipeline", **head, "target": TARGET,
              "pass": bool(head["ratio"] >= TARGET) if head["in_memory"] else None,
              "model_only_samples_per_s": round(float(np.median(rates["model_only"])), 1),
              "workers": args.workers, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    if True in results and False in results:
        record["lazy"] = results[False]
    print(json.dumps(record))
    return 1 if args.strict and record["pass"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
