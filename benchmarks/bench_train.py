"""Benchmark: does the training input pipeline starve the model? (target: end to end / model only
>= 0.9 in memory and lazily)

Trains the deep embedding model (paper Sec. 4.1; 40-d side information, batch 64, 1 negative) with
train.py's optimizer, loss and per-batch callback (TerminateOnNaN) and compares the throughput
(samples/s of one epoch, after a first epoch that traces the step function) of

  model only   `fit` on one batch repeated (a PyDataset that does no work): no input work at all
  end to end   `fit` on train.py's batches (models.pipeline.training_batches, train.py's --workers):
               random crops of a float16 HDF5 mel store written with the documented layout, label
               draws, side-vector lookups; two paths, side by side in every round:
                 in memory  a --tracks store held in RAM (MelStore(in_memory=True))     -> >= 0.9
                 lazy       a --lazy-gb store (3 GB) read lazily from the file, the path of a store
                            too large for the machine's memory (page-cached by the OS once written:
                            this measures the loader, not a disk)                       -> >= 0.9,
                            loader alone >= 30,000 samples/s

ratio = end-to-end samples/s / model-only samples/s, the median over --rounds rounds of adjacent
epochs (the order alternates), since other processes share the CPU. Also measured, to say where
time goes:
  cpu ratio        the same ratio from the process's CPU seconds per sample (user + system, every
                   thread): what the input work costs in CPU, whatever else runs on the machine
  PyDataset layer  ms per batch that Keras' adapter of a PyDataset adds by itself (its threads,
                   the conversion to the backend's tensors): a PyDataset that does no work, pulled
                   through the adapter without a model, against one model-only step
  loader alone     the batches of one epoch read in this process, one after the other, no model;
  loader processes an epoch's batches read in 1, 2, ... forked processes (how `train.py --workers N`
                   loads), to show that the lazy loader grows with cores.

--backends tensorflow jax compares Keras backends side by side: one worker process per backend (a
process has one backend) on the same stores, every round running each backend's epochs in turn,
the order alternating, so that both see the same machine; the report gives each backend's figures
and their ratios. Figures of backends measured in separate runs are not comparable on a shared
machine.

Prints a report with PASS/MISS per target and one JSON line (the in-memory path's figures at the top
level, the lazy path's under "lazy"; with --backends one record per backend under "backends");
--json FILE writes the same JSON. Exit status 0: a timing miss is reported as MISS, not as a
failure, since timings on a shared machine are noisy (--strict exits 1 on a miss). On 2 CPU cores
the model step and the loader share the cores, so any input work shows in the ratio; on a GPU the
model step leaves the CPU to the loader.

    python benchmarks/bench_train.py [--tracks 512] [--lazy-gb 3] [--frames 650] [--steps 100]
        [--workers 1] [--rounds 9] [--in-memory both|yes|no] [--loader-processes 1 2]
        [--backends tensorflow jax] [--json FILE] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 0.9
LOADER_TARGET = 30_000  # lazy loader alone, samples/s (enough for a GPU at batch 64 on 2 cores)
_CHUNK_FRAMES = 1 << 16
PATHS = {"yes": (True,), "no": (False,), "both": (True, False)}
STORE_NAMES = {True: "mels_memory.h5", False: "mels_lazy.h5"}
PROTOCOL = "BENCH "  # the prefix of a worker's answers on stdout (libraries print too)


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


def store_sizes(args) -> dict[bool, int]:
    """Tracks of the in-memory (True) and the lazily read (False) store."""
    return {True: args.tracks, False: tracks_for(args.lazy_gb, args.frames, args.store_dtype)}


def write_stores(folder: Path, args) -> None:
    for in_memory in PATHS[args.in_memory]:
        size = store_sizes(args)[in_memory]
        write_store(folder / STORE_NAMES[in_memory], size, args.frames, args.seed, args.store_dtype)


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


def repeated_batch(batch, workers: int):
    """A PyDataset serving one batch endlessly: `fit` with no input work at all, through the same
    PyDataset path as train.py's batches (fit(steps_per_epoch=...) cuts the epochs)."""
    import keras

    from models.pipeline import loader_options

    class RepeatedBatch(keras.utils.PyDataset):
        num_batches = None

        def __getitem__(self, index):
            return batch

    return RepeatedBatch(**loader_options(workers))


def build_model(side_dim: int):
    import models

    model = models.build_embedding_model(side_dim, 1)
    model.compile(
        optimizer=models.DecaySGD(0.001, momentum=0.9, nesterov=True, decay=1e-6),
        loss=models.HingeRankingLoss(0.4, "sum"),
    )
    return model


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def epoch_throughput(model, data, steps: int, batch_size: int) -> tuple[float, float]:
    """(samples/s, CPU seconds per 1000 samples) of one `fit` epoch, timed from on_epoch_begin to
    on_epoch_end (fit's set-up excluded), with train.py's per-batch callback."""
    import keras

    times = {}
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.update(start=time.perf_counter(), cpu=cpu_seconds()),
        on_epoch_end=lambda e, logs: times.update(
            end=time.perf_counter(), cpu=cpu_seconds() - times["cpu"]
        ),
    )
    callbacks = [keras.callbacks.TerminateOnNaN(raise_error=True), timer]
    model.fit(data, steps_per_epoch=steps, epochs=1, callbacks=callbacks, verbose=0, shuffle=False)
    samples = steps * batch_size
    return samples / (times["end"] - times["start"]), 1000 * times["cpu"] / samples


def pydataset_layer_ms(dataset, steps: int) -> float:
    """ms per batch of pulling `steps` batches of `dataset` through Keras' PyDataset adapter for
    this backend (its threads, the conversion to the backend's tensors), without a model."""
    import keras
    from keras.src.trainers.data_adapters import get_data_adapter

    adapter = get_data_adapter(dataset, steps_per_epoch=steps)
    iterators = {
        "tensorflow": lambda: iter(adapter.get_tf_dataset()),
        "jax": adapter.get_jax_iterator,
    }
    iterator = iterators.get(keras.backend.backend(), adapter.get_numpy_iterator)()
    next(iterator)  # threads started, shapes known
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return 1000 * (time.perf_counter() - start) / steps


class Bench:
    """Stores, batches and one traced model per kind (model only, in memory, lazy) in this process,
    under its Keras backend."""

    def __init__(self, args, folder: Path):
        import keras

        from models.pipeline import training_batches
        from preprocess.frontend import N_MELS, SEGMENT_FRAMES
        from preprocess.melstore import MelStore

        keras.utils.set_random_seed(args.seed)
        self.args = args
        rng = np.random.default_rng(args.seed)
        n_samples = args.steps * args.batch_size
        positives = rng.random((n_samples, args.labels)) < 0.05
        positives[np.arange(n_samples), rng.integers(0, args.labels, n_samples)] = True
        self.vectors = rng.normal(size=(args.labels, args.side_dim)).astype(np.float32)
        inputs = {
            "mel": rng.normal(size=(args.batch_size, SEGMENT_FRAMES, N_MELS)).astype(np.float32),
            "positive": self.vectors[rng.integers(0, args.labels, args.batch_size)],
            "negatives": self.vectors[rng.integers(0, args.labels, (args.batch_size, 1))],
        }
        target = np.tile(np.array([[1.0, 0.0]], np.float32), (args.batch_size, 1))
        self.model_only = repeated_batch((inputs, target), args.workers)
        self.stores, self.parts = {}, {}
        for in_memory in PATHS[args.in_memory]:
            self.stores[in_memory] = MelStore(folder / STORE_NAMES[in_memory], in_memory=in_memory)
            rows = rng.integers(0, len(self.stores[in_memory]), n_samples)  # the whole store
            self.parts[in_memory] = {
                "train": (rows, positives),
                "valid": (rows[: args.batch_size], positives[: args.batch_size]),
            }
        self.training_batches = training_batches
        self.epoch = 0
        self.kinds = {"model_only": lambda: self.model_only}
        self.kinds.update({m: (lambda m=m: self.batches(m)) for m in self.stores})
        self.models = {kind: build_model(args.side_dim) for kind in self.kinds}
        for kind, data in self.kinds.items():  # trace the step functions
            epoch_throughput(self.models[kind], data(), args.steps, args.batch_size)
        self.rates = {kind: [] for kind in self.kinds}
        self.cpu = {kind: [] for kind in self.kinds}

    def batches(self, in_memory: bool):
        """A new epoch's training batches each time, as train.py builds them."""
        self.epoch += 1
        args = self.args
        return self.training_batches(
            self.stores[in_memory],
            self.parts[in_memory],
            self.vectors,
            1,
            args.batch_size,
            args.seed,
            self.epoch,
            args.workers,
        )["train"]

    def round(self, index: int) -> dict:
        """One epoch of every kind, adjacent, the order alternating with `index`."""
        for kind in list(self.kinds)[:: 1 if index % 2 == 0 else -1]:
            data = self.kinds[kind]()
            rate, cpu = epoch_throughput(
                self.models[kind], data, self.args.steps, self.args.batch_size
            )
            self.rates[kind].append(rate)
            self.cpu[kind].append(cpu)
        return {kind: rates[-1] for kind, rates in self.rates.items()}

    def finish(self) -> dict:
        """The record of every round so far, plus the loader alone and the PyDataset layer."""
        import keras

        from models.pipeline import input_pipeline
        from preprocess.frontend import N_MELS

        args = self.args
        n_samples = args.steps * args.batch_size
        model_only = float(np.median(self.rates["model_only"]))
        layer_ms = pydataset_layer_ms(self.model_only, args.steps)
        results = {}
        for in_memory, store in self.stores.items():
            loader = self.batches(in_memory)
            start = time.perf_counter()
            for k in range(args.steps):
                loader[k]
            ratios = np.array(self.rates[in_memory]) / np.array(self.rates["model_only"])
            cpu_ratios = np.array(self.cpu["model_only"]) / np.array(self.cpu[in_memory])
            results[in_memory] = {
                "in_memory": store.in_memory,
                "input_pipeline": input_pipeline(store),
                "store_gb": round(
                    store.lengths.sum() * N_MELS * np.dtype(args.store_dtype).itemsize / 1e9, 2
                ),
                "loader_samples_per_s": round(n_samples / (time.perf_counter() - start), 1),
                "end_to_end_samples_per_s": round(float(np.median(self.rates[in_memory])), 1),
                "ratio": round(float(np.median(ratios)), 4),
                "round_ratios": [round(r, 4) for r in ratios],
                "cpu_ratio": round(float(np.median(cpu_ratios)), 4),
                "cpu_ms_per_1000_samples": round(float(np.median(self.cpu[in_memory])) * 1000, 1),
            }
            if not in_memory:
                results[in_memory]["loader_processes_samples_per_s"] = loader_rates(
                    self.batches(in_memory), args.steps, args.loader_processes
                )
        head = results.get(True) or results[False]
        record = {
            "benchmark": "train_pipeline",
            **head,
            "target": TARGET,
            "loader_target": LOADER_TARGET,
            "pass": all(
                r["ratio"] >= TARGET
                and (r["in_memory"] or r["loader_samples_per_s"] >= LOADER_TARGET)
                for r in results.values()
            ),
            "model_only_samples_per_s": round(model_only, 1),
            "model_only_round_samples_per_s": [round(r, 1) for r in self.rates["model_only"]],
            "model_only_cpu_ms_per_1000_samples": round(
                float(np.median(self.cpu["model_only"])) * 1000, 1
            ),
            "pydataset_layer_ms_per_batch": round(layer_ms, 3),
            "pydataset_layer_fraction_of_step": round(
                layer_ms / (1000 * args.batch_size / model_only), 4
            ),
            "rounds": len(self.rates["model_only"]),
            "steps": args.steps,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "cpus": os.cpu_count(),
            "keras_backend": keras.backend.backend(),
        }
        if True in results and False in results:
            record["lazy"] = results[False]
        for store in self.stores.values():
            store.close()
        return record


def report(record: dict) -> None:
    """The console report of one backend's record."""
    print(
        f"[{record['keras_backend']}] batch {record['batch_size']}, {record['steps']} steps/epoch, "
        f"{record['workers']} loader worker(s) in fit, {record['cpus']} CPUs, "
        f"{record['rounds']} rounds"
    )
    print(
        f"model only (one batch repeated): {record['model_only_samples_per_s']:8.1f} samples/s; "
        f"the PyDataset layer alone: {record['pydataset_layer_ms_per_batch']:.2f} ms per batch = "
        f"{record['pydataset_layer_fraction_of_step']:.1%} of a model-only step"
    )
    for result in [record, record.get("lazy")]:
        if result is None:
            continue
        lazy = not result["in_memory"]
        verdict = f"ratio target >= {TARGET}: {'PASS' if result['ratio'] >= TARGET else 'MISS'}"
        if lazy:
            verdict += (
                f", loader target >= {LOADER_TARGET}: "
                f"{'PASS' if result['loader_samples_per_s'] >= LOADER_TARGET else 'MISS'}"
            )
        print(
            f"{result['input_pipeline']:>15} ({result['store_gb']:.2f} GB store): end to end "
            f"{result['end_to_end_samples_per_s']:8.1f} samples/s, loader alone "
            f"{result['loader_samples_per_s']:8.1f} samples/s, ratio {result['ratio']:.3f} "
            f"(CPU-time ratio {result['cpu_ratio']:.3f})  {verdict}"
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


def worker_main(args) -> int:
    """One backend's side of --backends: set up, then answer `round K` and `finish` on stdin."""
    bench = Bench(args, Path(args.store_dir))
    print(PROTOCOL + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "round":
            print(PROTOCOL + json.dumps(bench.round(int(command[1]))), flush=True)
        else:
            print(PROTOCOL + json.dumps(bench.finish()), flush=True)
            return 0
    return 1


def answer(process) -> dict:
    """The next protocol line of a worker (other output passes through to our stderr)."""
    for line in process.stdout:
        if line.startswith(PROTOCOL):
            return json.loads(line[len(PROTOCOL) :])
        print(line, end="", file=sys.stderr)
    raise RuntimeError(
        f"a benchmark worker died (exit status {process.wait()}); see its errors above"
    )


def compare_backends(args, argv) -> dict:
    """--backends: one worker per backend on the same stores, rounds interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        write_stores(Path(tmp), args)
        command = [sys.executable, __file__, *argv, "--worker", "--store-dir", tmp]
        workers = {
            backend: subprocess.Popen(
                command,
                env=dict(os.environ, KERAS_BACKEND=backend),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for backend in args.backends
        }
        for process in workers.values():
            answer(process)  # set up and traced, one after the other
        for index in range(args.rounds):
            for backend in list(workers)[:: 1 if index % 2 == 0 else -1]:
                workers[backend].stdin.write(f"round {index}\n")
                workers[backend].stdin.flush()
                answer(workers[backend])
        records = {}
        for backend, process in workers.items():
            process.stdin.write("finish\n")
            process.stdin.flush()
            records[backend] = answer(process)
            process.wait()
    return records


def comparison(records: dict) -> dict:
    """Each backend's samples/s relative to the first one's, figure by figure."""
    first, *others = records
    keys = ("model_only_samples_per_s", "end_to_end_samples_per_s")
    out = {}
    for backend in others:
        for key in keys:
            out[f"{backend}/{first} {key}"] = round(records[backend][key] / records[first][key], 3)
        if "lazy" in records[first]:
            out[f"{backend}/{first} lazy end_to_end_samples_per_s"] = round(
                records[backend]["lazy"]["end_to_end_samples_per_s"]
                / records[first]["lazy"]["end_to_end_samples_per_s"],
                3,
            )
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--tracks", type=int, default=512, help="tracks in the in-memory store")
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
    parser.add_argument("--frames", type=int, default=650, help="mean frames per track (~15 s)")
    parser.add_argument("--labels", type=int, default=50, help="seen labels")
    parser.add_argument("--side-dim", type=int, default=40, help="side-information dimension")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (original: 64)")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--workers", type=int, default=1, help="train.py --workers")
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
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("tensorflow", "jax", "torch"),
        help="compare these Keras backends side by side (one worker process each); default: "
        "KERAS_BACKEND in this process",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON record to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.backends:
        records = compare_backends(args, argv)
        for record in records.values():
            report(record)
        output = {
            "benchmark": "train_pipeline_backends",
            "backends": records,
            "side_by_side": comparison(records),
            "pass": all(r["pass"] for r in records.values()),
        }
        for key, value in output["side_by_side"].items():
            print(f"side by side, the same rounds: {key} = {value:.3f}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_stores(Path(tmp), args)
            bench = Bench(args, Path(tmp))
            for index in range(args.rounds):
                bench.round(index)
            output = bench.finish()
        report(output)
    print(json.dumps(output))
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 1 if args.strict and not output["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
