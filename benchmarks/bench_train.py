"""Benchmark: does the training input pipeline starve the model? (target: ratio >= 0.9 for the
in-memory store)

Trains the deep embedding model (paper Sec. 4.1; 40-d side information, batch 64, 1 negative) and
compares the throughput (samples/s of one epoch, after a first epoch that traces the step function)
of

  model only   `fit` on one batch of in-memory tensors repeated: no input work at all
  end to end   `fit` on train.py's batches (models.pipeline.training_batches, train.py's --workers):
               random crops
               from a float16 HDF5 mel store written with the documented layout, label draws,
                   side-vector lookups.
               Two paths, side by side in every round:
                 in memory  a --tracks store held in RAM (MelStore(in_memory=True))          ->
                     ratio >= 0.9
                 lazy       a --lazy-gb store (3 GB: above the old fixed 2 GiB in-memory limit) read
                            lazily
                            from the file (in_memory=False, the path a store too large for the
                                machine's
                            memory takes)                                                    ->
                                ratio >= 0.9,
                            loader alone >= 30,000 samples/s
               (the lazy store is page-cached by the OS once written: this measures the loader, not
                   a disk)

ratio = end-to-end samples/s / model-only samples/s, the median over --rounds rounds of adjacent
epochs (the order alternates), since other processes share the CPU. "loader alone" reads the batches
of one epoch in this process, one after the other, without a model; "loader processes" reads an
epoch's batches in 1, 2, ... forked processes (how `train.py --workers N` loads:
keras.utils.PyDataset with worker processes), to show that the lazy loader grows with cores (h5py
and numpy hold the GIL, so threads would not). Prints a report and one JSON line (the in-memory
path's figures at the top level, the lazy path's under "lazy"). Exit status 0: a timing miss is
reported as MISS, not as a failure, since timings on a shared machine are noisy (--strict exits 1 on
a miss). On 2 CPU cores the model step and the loader share the cores, so any input work shows in
the ratio; on a GPU the model step leaves the CPU to the loader.

    python benchmarks/bench_train.py [--tracks 512] [--lazy-gb 3] [--frames 650] [--steps 100]
        [--workers 1]
                                     [--rounds 9] [--in-memory both|yes|no] [--loader-processes 1 2]
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
import keras  # noqa: E402  (after the environment: any Keras backend)

TARGET = 0.9
LOADER_TARGET = 30_000  # lazy loader alone, samples/s (enough for a GPU at batch 64 on 2 cores)
_CHUNK_FRAMES = 1 << 16
PATHS = {"yes": (True,), "no": (False,), "both": (True, False)}


def write_store(path: Path, n_tracks: int, frames: int, seed: int, dtype: str = "float16") -> None:
    """A store with the documented layout (float16 = the store builder's default dtype); lengths
    vary +-30%. The values are windows of one random block (content does not change a loader's
    speed; gigabytes write in seconds)."""
    import h5py

    from preprocess.frontend import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(frames * 0.7), int(frames * 1.3) + 1, size=n_tracks)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # (2c, 128)
    block = rng.standard_normal((2 * _CHUNK_FRAMES, N_MELS), dtype=np.float32).astype(dtype)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "track_ids",
            data=np.array([str(i) for i in range(n_tracks)], dtype=object),
            dtype=h5py.string_dtype("utf-8"),
        )
        handle.create_dataset("offsets", data=offsets)
        mel = handle.create_dataset("mel", shape=(int(offsets[-1]), N_MELS), dtype=dtype)
        for start in range(0, int(offsets[-1]), _CHUNK_FRAMES):
            stop = min(start + _CHUNK_FRAMES, int(offsets[-1]))
            shift = int(rng.integers(0, _CHUNK_FRAMES))
            mel[start:stop] = block[shift : shift + stop - start]
        for key, value in {
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "n_mels": N_MELS,
            "mean": 0.0,
            "std": 1.0,
        }.items():
            handle.attrs[key] = value


def tracks_for(gigabytes: float, frames: int, dtype: str) -> int:
    """Tracks of ~`frames` frames that make a store of `gigabytes` GB."""
    from preprocess.frontend import N_MELS

    return max(1, round(gigabytes * 1e9 / (frames * N_MELS * np.dtype(dtype).itemsize)))


# the batches the forked loader processes read (set before the fork, as Keras' worker pool does)
_LOADER = None


def _read_batch(index: int) -> int:
    inputs, target = _LOADER[index]
    return len(target)


def loader_rates(loader, steps: int, processes) -> dict[int, float]:
    """Samples/s of reading one epoch's batches (sent back to this process, as Keras' workers do) in
    each number of forked processes; timed on the second epoch, after the pool has started and read
    the first."""
    import multiprocessing

    global _LOADER
    _LOADER, rates = loader, {}
    for count in processes:
        with multiprocessing.get_context("fork").Pool(count) as pool:
            pool.map(_read_batch, range(steps), chunksize=1)
            start = time.perf_counter()
            samples = sum(pool.imap(_read_batch, range(steps, 2 * steps), chunksize=1))
            rates[count] = round(samples / (time.perf_counter() - start), 1)
    return rates


class RepeatedBatch(keras.utils.PyDataset):
    """One batch, endlessly: `fit` with no input work at all, through the same PyDataset path as
    train.py's."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    num_batches = None  # endless: fit(steps_per_epoch=...) cuts the epochs

    def __getitem__(self, index):
        return self.batch


def build_model(side_dim: int):
    import models

    model = models.build_embedding_model(side_dim, 1)
    model.compile(
        optimizer=models.DecaySGD(0.001, momentum=0.9, nesterov=True, decay=1e-6),
        loss=models.HingeRankingLoss(0.4, "sum"),
    )
    return model


def epoch_throughput(model, data, steps: int, batch_size: int) -> float:
    """Samples/s of one `fit` epoch, timed from on_epoch_begin to on_epoch_end (fit's set-up
    excluded)."""
    times = {}
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.update(start=time.perf_counter()),
        on_epoch_end=lambda e, logs: times.update(end=time.perf_counter()),
    )
    model.fit(data, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0, shuffle=False)
    return steps * batch_size / (times["end"] - times["start"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--tracks", type=int, default=512, help="tracks in the generated in-memory store"
    )
    parser.add_argument(
        "--lazy-gb", type=float, default=3.0, help="size of the generated lazily read store (GB)"
    )
    parser.add_argument(
        "--loader-processes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="numbers of forked loader processes for the lazy loader's scaling figures",
    )
    parser.add_argument(
        "--frames", type=int, default=650, help="mean frames per track (650 ~ 15 s)"
    )
    parser.add_argument("--labels", type=int, default=50, help="seen labels")
    parser.add_argument("--side-dim", type=int, default=40, help="side-information dimension")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (original: 64)")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument(
        "--workers", type=int, default=1, help="train.py --workers (1: one loader thread)"
    )
    parser.add_argument(
        "--rounds", type=int, default=9, help="rounds of adjacent epochs; ratios are their median"
    )
    parser.add_argument(
        "--in-memory",
        choices=tuple(PATHS),
        default="both",
        help="store paths to time: in memory (yes), read lazily (no), or both side by side",
    )
    parser.add_argument(
        "--store-dtype",
        choices=("float16", "float32"),
        default="float16",
        help="dtype of the generated store (preprocess.store default: float16)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    from models.pipeline import input_pipeline, training_batches
    from preprocess.frontend import N_MELS, SEGMENT_FRAMES
    from preprocess.melstore import MelStore

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_samples = args.steps * args.batch_size
    positives = rng.random((n_samples, args.labels)) < 0.05
    positives[np.arange(n_samples), rng.integers(0, args.labels, n_samples)] = True
    vectors = rng.normal(size=(args.labels, args.side_dim)).astype(np.float32)
    inputs = {
        "mel": rng.normal(size=(args.batch_size, SEGMENT_FRAMES, N_MELS)).astype(np.float32),
        "positive": vectors[rng.integers(0, args.labels, args.batch_size)],
        "negatives": vectors[rng.integers(0, args.labels, (args.batch_size, 1))],
    }
    model_only = RepeatedBatch(
        (inputs, np.tile(np.array([[1.0, 0.0]], np.float32), (args.batch_size, 1)))
    )
    sizes = {True: args.tracks, False: tracks_for(args.lazy_gb, args.frames, args.store_dtype)}

    with tempfile.TemporaryDirectory() as tmp:
        stores, parts = {}, {}
        for in_memory in PATHS[args.in_memory]:
            path = Path(tmp) / f"mels_{'memory' if in_memory else 'lazy'}.h5"
            write_store(path, sizes[in_memory], args.frames, args.seed, args.store_dtype)
            stores[in_memory] = MelStore(path, in_memory=in_memory)
            # samples spread over the whole store
            rows = rng.integers(0, sizes[in_memory], n_samples)
            parts[in_memory] = {
                "train": (rows, positives),
                "valid": (rows[: args.batch_size], positives[: args.batch_size]),
            }
        epoch = 0

        def batches(in_memory):  # a new epoch each time (batches as train.py builds them)
            nonlocal epoch
            epoch += 1
            return training_batches(
                stores[in_memory],
                parts[in_memory],
                vectors,
                1,
                args.batch_size,
                args.seed,
                epoch,
                args.workers,
            )["train"]

        kinds = {"model_only": lambda: model_only, **{m: (lambda m=m: batches(m)) for m in stores}}
        trained = {kind: build_model(args.side_dim) for kind in kinds}
        for kind, data in kinds.items():  # trace the step functions
            epoch_throughput(trained[kind], data(), args.steps, args.batch_size)
        rates = {kind: [] for kind in kinds}
        # adjacent epochs, alternating order: load bursts hit all alike
        for round_index in range(args.rounds):
            for kind in list(kinds)[:: 1 if round_index % 2 == 0 else -1]:
                rates[kind].append(
                    epoch_throughput(trained[kind], kinds[kind](), args.steps, args.batch_size)
                )
        results = {}
        for in_memory, store in stores.items():
            loader = batches(in_memory)
            start = time.perf_counter()
            for k in range(args.steps):
                loader[k]
            ratios = np.array(rates[in_memory]) / np.array(rates["model_only"])
            results[in_memory] = {
                "in_memory": store.in_memory,
                "input_pipeline": input_pipeline(store),
                "store_gb": round(
                    store.lengths.sum() * N_MELS * np.dtype(args.store_dtype).itemsize / 1e9, 2
                ),
                "loader_samples_per_s": round(n_samples / (time.perf_counter() - start), 1),
                "end_to_end_samples_per_s": round(float(np.median(rates[in_memory])), 1),
                "ratio": round(float(np.median(ratios)), 4),
                "round_ratios": [round(r, 4) for r in ratios],
            }
            if not in_memory:
                results[in_memory]["loader_processes_samples_per_s"] = loader_rates(
                    batches(in_memory), args.steps, args.loader_processes
                )
            store.close()

    print(
        f"batch {args.batch_size}, {args.steps} steps/epoch, {args.workers} loader worker(s) in "
        "fit, "
        f"{os.cpu_count()} CPUs, {args.rounds} rounds, Keras backend {keras.backend.backend()}"
    )
    print(f"model only (one batch repeated): {np.median(rates['model_only']):8.1f} samples/s")
    for result in results.values():
        lazy = not result["in_memory"]
        verdict = f"ratio target >= {TARGET}: {'PASS' if result['ratio'] >= TARGET else 'MISS'}"
        if lazy:
            verdict += (
                f", loader target >= {LOADER_TARGET}: "
                f"{'PASS' if result['loader_samples_per_s'] >= LOADER_TARGET else 'MISS'}"
            )
        print(
            f"{result['input_pipeline']:>15} ({result['store_gb']:.2f} GB {args.store_dtype} "
            "store): end to end "
            f"{result['end_to_end_samples_per_s']:8.1f} samples/s, loader alone "
            f"{result['loader_samples_per_s']:8.1f}"
            f" samples/s, ratio {result['ratio']:.3f}  {verdict}"
        )
        print(
            f"{'':>15}  per-round ratios: {', '.join(f'{r:.2f}' for r in result['round_ratios'])}"
        )
        if lazy:
            print(
                f"{'':>15}  loader in forked processes: "
                + ", ".join(
                    f"{count}: {rate:.0f}"
                    for count, rate in result["loader_processes_samples_per_s"].items()
                )
                + " samples/s"
            )
    head = results.get(True) or results[False]
    passes = [
        r["ratio"] >= TARGET and (r["in_memory"] or r["loader_samples_per_s"] >= LOADER_TARGET)
        for r in results.values()
    ]
    record = {
        "benchmark": "train_pipeline",
        **head,
        "target": TARGET,
        "loader_target": LOADER_TARGET,
        "pass": all(passes),
        "model_only_samples_per_s": round(float(np.median(rates["model_only"])), 1),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "keras_backend": keras.backend.backend(),
    }
    if True in results and False in results:
        record["lazy"] = results[False]
    print(json.dumps(record))
    return 1 if args.strict and not record["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
