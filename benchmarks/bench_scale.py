"""What the real datasets cost: the FMA experiment rehearsed at its real size, MSD's label side, and
the efficiency of training and track embedding against this machine's limits.

FMA (paper Table 1: 19,466 tracks, 157 genres, 125 seen / 32 unseen; 40-d instrument side
information). The rehearsal writes a dataset directory of that shape without audio: annotations
with 157 labels (Zipf-like popularity, ~2.8 labels per track, which gives FMA's group sizes and
label cardinality within 20%: see FMA below), random 40-d instrument-count side information, and a
float16 mel store of 30-s tracks (~1,292 frames each, about 6.4 GB at full size) written straight
from random, finite, standardized frames, with the documented layout and per-track statistics.
Then, each stage in a process of its own (timed, and its peak resident memory read from the kernel
when the process ends):

    fma_generate_files      tracks.csv, annotations.csv, side_info/instrument-count.csv
    fma_store_build         mels.h5 (no audio decoding: the decode estimate below uses the measured
                            front-end speed of benchmarks/bench_preprocess.py)
    fma_split_make          splits.ensure_split (split and Table 1 statistics)
    fma_split_load_first    load_split with the annotations check, no remembered digest
    fma_split_load_repeated the same, as every later train.py / evaluate.py call
    fma_train_epoch_memory  train.py, (A+B)-X, 2 epochs, the store held in RAM; the stage's seconds
                            are the second epoch (training + validation; the first one traces)
    fma_train_epoch_lazy    the same, the store read lazily from the file
    fma_embed               protocol.embed: the track embedding of every track evaluation needs
                            (A, B and C: (A+B+C)-Y retrieval); embed_vs_predict: on 1,024 tracks,
                            the same path (read, tile, predict in calls of 2,048 segments, average)
                            against the model's bare predict on the same segments read beforehand
                            (the faster of one call and calls of 2,048; medians of 5), target >= 0.8
    fma_score               protocol.evaluate_run with those embeddings: every setup of Tables 2-3
                            and the GZSL view, metrics, results.json
    fma_collect_45_runs     evaluate.py --collect over 45 finished runs, each loaded and checked
                            whole and its results.json reused (3 training setups x 3 kinds of
                            side information x 5 seeds)

MSD's label side (406,409 tracks, 1,126 tags, 900 seen / 226 unseen; no audio):

    msd_generate_annotations  random MSD-shaped annotations (benchmarks/bench_splits.py), and random
                              100-d embeddings of every track and label in the exchange format
    msd_split_make, msd_split_load_first, msd_split_load_repeated   as for FMA
    msd_score_every_setup     evaluate.py --external on the random embeddings: every zero-shot setup
                              of Tables 2-3 and the GZSL view at MSD size (score matrices up to
                              (B+C) x 1,126)
    msd_collect               evaluate.py --collect over 5 seeds of those results (aggregation)

Efficiency (one process per Keras backend that imports: TensorFlow, JAX):

    efficiency_<backend>  the float32 matmul peak of this machine (4096 x 4096 on all cores, numpy
                          and the backend, before and after, the best), the model's training FLOPs
                          per sample from its layer shapes, and model-only training throughput at
                          batch 64 -> train_fraction_of_peak (target >= 0.5); to say where the time
                          goes: batch 256, the audio module forward only, and under TensorFlow
                          the same training with XLA (jit_compile=True)

--fraction F (default 1) scales the track counts of both experiments. The report prints every
stage's seconds, peak memory, items and items/s, the targets with PASS/MISS, the memory the MSD
score matrices need, and the estimated hours of a full FMA reproduction (Tables 2-4: 3 training
setups x 3 side-information kinds x 5 seeds, plus Table 4's classification model on A-X x 5 seeds)
on this machine and on a GPU from the README's measured H200 throughput. --json FILE writes
{"stages": [{"stage", "seconds", "peak_rss_bytes", "items", "scales_with_data"}, ...],
"embed_vs_predict", "train_fraction_of_peak", "fma_full_estimate_hours": {...}, ...}.
--growth-from SMALLER.json (a run at a smaller --fraction) checks that every stage that scales with
the data grows linearly: at most 2.6x the time for twice the items (compounded for other ratios).

    python benchmarks/bench_scale.py [--fraction 1] [--workdir DIR] [--keep] [--json FILE]
        [--growth-from FILE] [--epochs-assumed 63] [--seed 0]

Disk: about 6.5 GB x fraction under --workdir (default: a temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_splits
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# 1 + Poisson(2) labels per track drawn from a Zipf-like popularity: with split seed 0 at full size,
# groups A/B/C 13,488 / 5,564 / 414 and label cardinality B-Y 1.15, C-Y 1.20 (paper Table 1 and
# Sec. 6.1: 11,606 / 6,935 / 925, 1.18 and 1.15)
FMA = {"tracks": 19_466, "labels": 157, "side_dim": 40, "seconds": 30.0, "extra_labels": 2.0}
MSD = {"tracks": 406_409, "labels": 1_126, "extra_labels": 1.5}
SIDE_KINDS = ("instrument-count", "instrument-confidence", "random")  # FMA rows of Tables 2-3
SEEDS = 5
TRAIN_EPOCHS = 2  # the first traces the step functions; the second is the steady epoch timed
EMBED_SUBSET = 1024  # tracks of the embed_vs_predict comparison
# Targets (issue 23)
EMBED_TARGET = 0.8
PEAK_TARGET = 0.5
DOUBLING_TARGET = 2.6
# The README's measured throughput on an NVIDIA H200 (JAX backend; batch 64 two runs; predict at
# batch 1024) and the front end's measured speed (benchmarks/bench_preprocess.py: decode + log-mel,
# realtime factor per core on this kind of machine)
GPU = {"train_slow": 19_066, "train_fast": 32_052, "predict": 38_586}
DECODE_REALTIME_PER_CORE = 370
PROTOCOL = "STAGE "  # the prefix of a stage process's answer on stdout
_CHUNK_FRAMES = 1 << 16


# ---- The generated data --------------------------------------------------------------------------
def scaled(count: int, fraction: float) -> int:
    return max(64, round(count * fraction))


def frames_of(seconds: float) -> int:
    """Frames of a clip of `seconds` (librosa's centred STFT: 1 + samples // hop)."""
    from preprocess.frontend import HOP_LENGTH, SAMPLE_RATE

    return 1 + int(seconds * SAMPLE_RATE) // HOP_LENGTH


def annotations_frame(n_tracks: int, n_labels: int, extra: float, seed: int):
    from bench_splits import msd_like_annotations

    return msd_like_annotations(n_tracks, n_labels, seed, mean_extra=extra)


def write_mel_store(path: Path, track_ids, lengths, seed: int) -> None:
    """mels.h5 with the documented layout (preprocess/store.py): float16 windows of one block of
    standard-normal frames (finite and standardized; content does not change a reader's speed, and
    gigabytes write in seconds), per-track statistics [count, mean, M2] of the stored values, and
    mean/std combined from them as the store builder does."""
    import h5py

    from preprocess.frontend import FRONT_END, N_MELS
    from preprocess.store import _mean_std

    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    block = rng.standard_normal((2 * _CHUNK_FRAMES, N_MELS), dtype=np.float32).astype(np.float16)
    row_sum = np.empty(total)  # (frames,) sums and sums of squares of each stored frame
    row_square = np.empty(total)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            "track_ids", data=np.asarray(track_ids, dtype=object), dtype=h5py.string_dtype()
        )
        handle["offsets"] = offsets
        mel = handle.create_dataset("mel", shape=(total, N_MELS), dtype="float16")
        for start in range(0, total, _CHUNK_FRAMES):
            stop = min(start + _CHUNK_FRAMES, total)
            shift = int(rng.integers(0, _CHUNK_FRAMES))
            chunk = block[shift : shift + stop - start]  # (c, 128)
            mel[start:stop] = chunk
            values = chunk.astype(np.float64)
            row_sum[start:stop] = values.sum(axis=1)
            row_square[start:stop] = np.square(values).sum(axis=1)
        count = np.diff(offsets) * N_MELS
        sums = np.add.reduceat(row_sum, offsets[:-1])
        means = sums / count
        m2 = np.add.reduceat(row_square, offsets[:-1]) - sums * means
        stats = np.stack([count, means, m2], axis=1)  # (n, 3)
        handle["track_stats"] = stats
        mean, std = _mean_std(stats)
        handle.attrs.update({**FRONT_END, "mean": mean, "std": std})


# ---- Stages (each runs in a process of its own: `--stage NAME`) ----------------------------------
def fma_dir(work: Path) -> Path:
    return work / "fma"


def msd_dir(work: Path) -> Path:
    return work / "msd"


def stage_fma_generate_files(args, work: Path) -> dict:
    import pandas as pd

    import dataset_dir as ds

    n_tracks = scaled(FMA["tracks"], args.fraction)
    frame = annotations_frame(n_tracks, FMA["labels"], FMA["extra_labels"], args.seed)
    track_ids = sorted(set(frame["track_id"]))
    folder = fma_dir(work)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [f"audio/{t}.mp3" for t in track_ids]
    ds.write_tracks(ds.tracks_path(folder), pd.DataFrame({"track_id": track_ids, "path": paths}))
    ds.write_annotations(ds.annotations_path(folder), frame)
    labels = sorted(set(frame["label"]))
    rng = np.random.default_rng(args.seed)
    counts = rng.poisson(2.0, size=(len(labels), FMA["side_dim"])).astype(float)
    ds.write_side_info(ds.side_info_path(folder, "instrument-count"), labels, counts)
    return {"items": len(track_ids), "unit": "tracks", "rows": len(frame), "labels": len(labels)}


def stage_fma_store_build(args, work: Path) -> dict:
    import dataset_dir as ds

    track_ids = ds.read_tracks(ds.tracks_path(fma_dir(work)))["track_id"].tolist()
    rng = np.random.default_rng(args.seed)
    frames = frames_of(FMA["seconds"])
    lengths = rng.integers(frames - 12, frames + 1, size=len(track_ids))  # FMA clips: ~30 s
    start = time.perf_counter()
    write_mel_store(ds.mels_path(fma_dir(work)), track_ids, lengths, args.seed)
    seconds = time.perf_counter() - start
    size = ds.mels_path(fma_dir(work)).stat().st_size
    audio_hours = len(track_ids) * FMA["seconds"] / 3600
    return {
        "seconds": seconds,
        "items": len(track_ids),
        "unit": "tracks",
        "store_bytes": size,
        "audio_hours": audio_hours,
    }


def split_stage(folder: Path, step: str) -> dict:
    import dataset_dir as ds
    import splits

    path = splits.default_split_path(folder, 0)
    annotations = ds.annotations_path(folder)
    rows = sum(1 for _ in open(annotations, encoding="utf-8")) - 1
    if step == "make":
        start = time.perf_counter()
        splits.ensure_split(folder, seed=0)
        seconds = time.perf_counter() - start
        stats = json.loads(splits.stats_path(path).read_text())
        return {"seconds": seconds, "items": rows, "unit": "annotation rows", "split": stats}
    if step == "first":  # no remembered digest: the annotations are hashed
        annotations.with_name(f".{annotations.name}.sha256.json").unlink(missing_ok=True)
    start = time.perf_counter()
    splits.load_split(path, annotations)
    return {"seconds": time.perf_counter() - start, "items": rows, "unit": "annotation rows"}


def stage_fma_split_make(args, work):
    return split_stage(fma_dir(work), "make")


def stage_fma_split_load_first(args, work):
    return split_stage(fma_dir(work), "first")


def stage_fma_split_load_repeated(args, work):
    return split_stage(fma_dir(work), "repeated")


def train_stage(args, work: Path, in_memory: str) -> dict:
    """train.run as `python train.py` runs it, with a timer added before train.py's callbacks."""
    import keras

    import config as cfg
    import train
    from models import callbacks as callbacks_module

    marks: list[dict] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: marks.append({"begin": time.perf_counter()}),
        on_epoch_end=lambda e, logs: marks[-1].update(end=time.perf_counter()),
    )
    timer.on_test_begin = lambda logs=None: marks[-1].update(test_begin=time.perf_counter())
    timer.on_test_end = lambda logs=None: marks[-1].update(test_end=time.perf_counter())
    original = callbacks_module.training_callbacks

    def with_timer(model, config, run_dir):
        found, backup = original(model, config, run_dir)
        return [timer, *found], backup

    callbacks_module.training_callbacks = with_timer
    run_dir = work / "fma_runs" / in_memory
    config = cfg.TrainConfig(
        dataset=str(fma_dir(work)),
        run_dir=str(run_dir),
        epochs=TRAIN_EPOCHS,
        verbose=0,
        in_memory={"memory": "yes", "lazy": "no"}[in_memory],
        seed=args.seed,
    )
    start = time.perf_counter()
    train.run(config)
    total = time.perf_counter() - start
    summary = json.loads((run_dir / cfg.SUMMARY_FILE).read_text())
    meta = json.loads((run_dir / cfg.CONFIG_FILE).read_text())
    steady = marks[-1]
    samples = summary["steps_per_epoch"] * config.batch_size
    fit = steady["test_begin"] - steady["begin"]
    return {
        "seconds": steady["end"] - steady["begin"],
        "items": samples,
        "unit": "training samples",
        "train_seconds": fit,
        "train_samples_per_s": samples / fit,
        "valid_tracks": meta["train"]["valid_tracks"],
        "valid_seconds": steady["test_end"] - steady["test_begin"],
        "train_tracks": meta["train"]["tracks"],
        "first_epoch_seconds": marks[0]["end"] - marks[0]["begin"],
        "epoch_overhead_seconds": marks[1]["begin"] - marks[0]["end"],  # saves after an epoch
        "setup_seconds": total - (marks[-1]["end"] - marks[0]["begin"]),
        "input_pipeline": summary["input_pipeline"],
        "keras_backend": meta["versions"]["keras_backend"],
    }


def stage_fma_train_epoch_memory(args, work):
    return train_stage(args, work, "memory")


def stage_fma_train_epoch_lazy(args, work):
    return train_stage(args, work, "lazy")


def stage_fma_embed(args, work: Path) -> dict:
    """protocol.embed of every track the evaluation needs; then embed_vs_predict on a subset: the
    same path (embeddings.track_embeddings: read, tile, predict in chunks, average) against the
    model's bare predict on the same segments, read beforehand (medians of 5 interleaved rounds)."""
    import embeddings
    import protocol
    from preprocess.melstore import MelStore

    run = protocol.load_run(work / "fma_runs" / "memory")
    plan, _ = protocol.setup_plan(run.model_kind, run.train_setup)
    with MelStore(run.mels_path, in_memory=False) as store:  # as evaluate_run opens it
        available = set(store.track_ids)
        members = [protocol.setup_members(run.split, test, available)[0] for test, _ in plan]
        needed = list(dict.fromkeys(t for tracks in members for t in tracks))
        run.predict(store.segments(0)[:1])  # the model loaded and traced once
        start = time.perf_counter()
        protocol.embed(run, store, needed, force=True, progress=False)
        seconds = time.perf_counter() - start
        rows = [store.index(t) for t in needed[:EMBED_SUBSET]]
        segments = np.concatenate([store.segments(row) for row in rows])  # (k, 130, 128)
        batch = protocol.DEFAULT_BATCH_SIZE
        budget = 8 * batch  # segments per predict call, as protocol.embed asks
        ways = {
            "embed": lambda: embeddings.track_embeddings(
                lambda x: run.predict(x, batch), store, rows, budget, progress=False
            ),
            "predict_one_call": lambda: run.predict(segments, batch),
            "predict_in_chunks": lambda: [
                run.predict(segments[i : i + budget], batch)
                for i in range(0, len(segments), budget)
            ],
        }
        times = {way: [] for way in ways}
        for _ in range(5):  # interleaved; the median of each (a best of few was an outlier)
            for way, call in ways.items():
                start = time.perf_counter()
                call()
                times[way].append(time.perf_counter() - start)
        total_segments = int(sum(max(store.lengths[store.index(t)] // 130, 1) for t in needed))
    return {
        "seconds": seconds,
        "items": len(needed),
        "unit": "tracks",
        "segments": total_segments,
        "segments_per_s": total_segments / seconds,
        # against the faster bare predict: one call on all, or calls of the size embed makes
        "embed_vs_predict": min(median(times[way]) for way in ways if way != "embed")
        / median(times["embed"]),
        "subset_segments": len(segments),
        "subset_seconds": {way: median(values) for way, values in times.items()},
    }


def stage_fma_score(args, work: Path) -> dict:
    import protocol

    run_dir = work / "fma_runs" / "memory"
    start = time.perf_counter()
    records, notes = protocol.evaluate_run(run_dir, progress=False)
    seconds = time.perf_counter() - start
    if not any(", 0 computed" in note for note in notes):
        raise RuntimeError(f"the scores did not reuse the embeddings of fma_embed: {notes}")
    split = protocol.load_run(run_dir).split
    return {
        "seconds": seconds,
        "items": sum(len(split[g]) for g in ("A", "B", "C")),
        "unit": "tracks",
        "records": len(records),
    }


def run_measured(command, env=None) -> tuple[float, int, str, int]:
    """(seconds, peak resident bytes, stdout, exit status) of a command, its peak memory from the
    kernel's accounting of that one process (os.wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss * 1024, out, process.returncode


def collect_stage(dirs: list[Path]) -> dict:
    """evaluate.py --collect over `dirs`, as a user runs it."""
    command = [sys.executable, "evaluate.py", "--collect", *map(str, dirs), "--format", "json"]
    seconds, peak, out, status = run_measured(command)
    if status:
        raise RuntimeError(f"evaluate.py --collect failed (exit status {status})")
    return {
        "seconds": seconds,
        "items": len(dirs),
        "unit": "runs",
        "command_peak_rss_bytes": peak,
        "aggregated_records": out.count('"n_runs"'),
    }


def stage_fma_collect_45_runs(args, work: Path) -> dict:
    """45 finished run directories that differ in setup, side information and seed, each as train.py
    and evaluate.py leave one (config.json on the split of its seed, model.keras stamped for that
    config.json, train_summary.json bound to both, the rehearsal run's records relabelled and
    carrying this run's provenance), then evaluate.py --collect: every run is loaded and checked
    whole, every results.json proven current and reused."""
    import zipfile

    import config as cfg
    import protocol
    import splits
    import train
    from fileio import sha256_file, write_json

    base = work / "fma_runs" / "memory"
    meta = json.loads((base / cfg.CONFIG_FILE).read_text())
    records = json.loads((base / protocol.RESULTS_FILE).read_text())
    summary = json.loads((base / cfg.SUMMARY_FILE).read_text())
    unstamped = work / "fma_collect" / "unstamped.keras"  # the model without its run's stamp
    unstamped.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(base / cfg.MODEL_FILE) as source, zipfile.ZipFile(unstamped, "w") as out:
        for member in source.namelist():
            if member != cfg.MODEL_STAMP:
                out.writestr(member, source.read(member))
    split_paths = {seed: splits.ensure_split(fma_dir(work), seed) for seed in range(SEEDS)}
    dirs = []
    for setup in splits.TRAIN_SETUPS:
        for kind in SIDE_KINDS:
            for seed in range(SEEDS):
                name = setup.replace("(", "").replace(")", "")
                run = work / "fma_collect" / kind / name / f"s{seed}"
                run.mkdir(parents=True, exist_ok=True)
                config = {**meta["config"], "seed": seed, "split_seed": seed, "side_info": kind}
                config.update(train_setup=setup, split=str(split_paths[seed]), run_dir=str(run))
                checksums = {**meta["checksums"], "split": sha256_file(split_paths[seed])}
                run_meta = {**meta, "config": config, "checksums": checksums}
                write_json(
                    run / cfg.CONFIG_FILE, {**run_meta, "split_path": str(split_paths[seed])}
                )
                shutil.copyfile(unstamped, run / cfg.MODEL_FILE)
                config_sha256 = sha256_file(run / cfg.CONFIG_FILE)
                train.stamp_model(run / cfg.MODEL_FILE, config_sha256)
                model_sha256 = sha256_file(run / cfg.MODEL_FILE)
                write_json(
                    run / cfg.SUMMARY_FILE,
                    {**summary, "config_sha256": config_sha256, "model_sha256": model_sha256},
                )
                identity = {"finished": True, "provenance": protocol.load_run(run).provenance}
                mine = [{**r, "side_info": kind, "train": setup, **identity} for r in records]
                write_json(run / protocol.RESULTS_FILE, mine)
                dirs.append(run)
    return collect_stage(dirs)


def stage_msd_generate_annotations(args, work: Path) -> dict:
    import dataset_dir as ds
    from external import write_exchange

    n_tracks = scaled(MSD["tracks"], args.fraction)
    start = time.perf_counter()
    frame = annotations_frame(n_tracks, MSD["labels"], MSD["extra_labels"], args.seed)
    msd_dir(work).mkdir(parents=True, exist_ok=True)
    ds.write_annotations(ds.annotations_path(msd_dir(work)), frame)
    seconds = time.perf_counter() - start
    track_ids = sorted(set(frame["track_id"]))
    labels = sorted(set(frame["label"]))
    rng = np.random.default_rng(args.seed)
    write_exchange(
        work / "msd_random.npz",
        track_ids,
        labels,
        rng.standard_normal((len(track_ids), 100), dtype=np.float32),
        rng.standard_normal((len(labels), 100), dtype=np.float32),
    )
    return {"seconds": seconds, "items": len(frame), "unit": "annotation rows", "tracks": n_tracks}


def stage_msd_split_make(args, work):
    return split_stage(msd_dir(work), "make")


def stage_msd_split_load_first(args, work):
    return split_stage(msd_dir(work), "first")


def stage_msd_split_load_repeated(args, work):
    return split_stage(msd_dir(work), "repeated")


def stage_msd_score_every_setup(args, work: Path) -> dict:
    import external
    import splits

    out = work / "msd_external"
    start = time.perf_counter()
    records, _ = external.evaluate_external(work / "msd_random.npz", msd_dir(work), out=out)
    seconds = time.perf_counter() - start
    split = splits.load_split(splits.default_split_path(msd_dir(work), 0))
    sizes = {g: len(split[g]) for g in ("A", "B", "C")}
    labels = len(split["seen"]) + len(split["unseen"])
    # the work is the score cells: the generated groups do not keep their proportions across
    # fractions (B + C is 32% of the tracks at 0.25, 53% at 1), so tracks would misjudge growth
    setups = {
        test: splits.setup_tracks_labels(split, test) for test, _ in external.zero_shot_plan()
    }
    return {
        "seconds": seconds,
        "items": sum(len(tracks) * len(names) for tracks, names in setups.values()),
        "unit": "score cells (tracks x labels over the setups)",
        "tracks": sum(sizes.values()),
        "records": len(records),
        "largest_score_matrix_bytes": (sizes["B"] + sizes["C"]) * labels * 4,
        "groups": sizes,
    }


def stage_msd_collect(args, work: Path) -> dict:
    import protocol
    import splits
    from fileio import sha256_file

    base = work / "msd_external"
    dirs = []
    for seed in range(SEEDS):  # the seed-0 results, relabelled as if scored on split `seed`
        run = work / "msd_collect" / f"s{seed}"
        run.mkdir(parents=True, exist_ok=True)
        meta = json.loads((base / protocol.EXTERNAL_FILE).read_text())
        split_path = splits.ensure_split(msd_dir(work), seed)
        meta["split"] = {"path": str(split_path), "sha256": sha256_file(split_path)}
        (run / protocol.EXTERNAL_FILE).write_text(json.dumps(meta))
        shutil.copy(base / protocol.RESULTS_FILE, run / protocol.RESULTS_FILE)
        dirs.append(run)
    return collect_stage(dirs)


# ---- Efficiency ----------------------------------------------------------------------------------
def training_flops_per_sample(model) -> dict:
    """FLOPs of one training sample from the layer shapes: a convolution or dense layer does
    2 x (multiply-adds) forward; backward computes the weight gradient (as many FLOPs) and the input
    gradient (as many again), except for a layer fed by the model's input (no gradient needed).
    Element-wise work (ReLU, pooling, bias, cosine, loss) is left out: memory-bound and small."""
    import keras

    forward = backward = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv1D):
            steps, filters = layer.output.shape[1], layer.filters
            macs = steps * layer.kernel_size[0] * layer.input.shape[-1] * filters
        elif isinstance(layer, keras.layers.Dense):
            rows = math.prod(layer.input.shape[1:-1]) or 1
            macs = rows * layer.input.shape[-1] * layer.units
        else:
            continue
        first = layer.input.name in ("mel", "side_info")  # fed by an input
        rows_per_sample = 2 if layer.name == "label_dense" else 1  # positive + 1 negative
        forward += 2 * macs * rows_per_sample
        backward += 2 * macs * rows_per_sample * (1 if first else 2)
    return {"forward": forward, "backward": backward, "total": forward + backward}


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _leaf_layers(layer)
        else:
            yield layer


def matmul_peak(size: int = 4096, repeats: int = 3) -> dict:
    """GFLOP/s of a float32 (size x size) @ (size x size) on all cores: numpy (its BLAS) and the
    Keras backend's matmul, the best of `repeats` each."""
    import keras

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2 * size**3
    found = {}
    ta, tb = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
    for name, multiply in {
        "numpy": lambda: a @ b,
        keras.backend.backend(): lambda: keras.ops.convert_to_numpy(keras.ops.matmul(ta, tb)),
    }.items():
        multiply()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            multiply()
            best = min(best, time.perf_counter() - start)
        found[name] = flops / best / 1e9
    return found


def model_only_rate(batch_size: int, jit_compile="auto", epochs: int = 3) -> float:
    """Training samples/s of the embedding model on one batch repeated (no input work), train.py's
    optimizer and loss, best of `epochs` epochs of 2,048 samples after one that traces."""
    from bench_train import epoch_throughput, repeated_batch

    import models
    from preprocess.frontend import N_MELS, SEGMENT_FRAMES

    rng = np.random.default_rng(0)
    inputs = {
        "mel": rng.standard_normal((batch_size, SEGMENT_FRAMES, N_MELS), dtype=np.float32),
        "positive": rng.standard_normal((batch_size, FMA["side_dim"]), dtype=np.float32),
        "negatives": rng.standard_normal((batch_size, 1, FMA["side_dim"]), dtype=np.float32),
    }
    target = np.tile(np.float32([[1, 0]]), (batch_size, 1))
    model = models.build_embedding_model(FMA["side_dim"], 1)
    model.compile(
        optimizer=models.DecaySGD(0.001, momentum=0.9, nesterov=True, decay=1e-6),
        loss=models.HingeRankingLoss(0.4, "sum"),
        jit_compile=jit_compile,
    )
    data = repeated_batch((inputs, target), 1)
    steps = max(8, 2048 // batch_size)
    return max(epoch_throughput(model, data, steps, batch_size)[0] for _ in range(epochs + 1))


def forward_rate(batch_size: int = 256, repeats: int = 3) -> float:
    """Segments/s of the audio module alone, forward only (predict_on_batch), best of `repeats`
    passes over 2,048 segments."""
    import models

    module = models.build_audio_module()
    segments = np.random.default_rng(0).standard_normal((batch_size, 130, 128), dtype=np.float32)
    module.predict_on_batch(segments)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(2048 // batch_size):
            module.predict_on_batch(segments)
        best = min(best, time.perf_counter() - start)
    return 2048 / best


def stage_efficiency(args, work: Path) -> dict:
    """Where training stands against the machine's peak, and the measurements that say why: batch
    size, forward only, and (TensorFlow) XLA compilation against TensorFlow's own kernels."""
    import keras

    import models

    flops = training_flops_per_sample(models.build_embedding_model(FMA["side_dim"], 1))
    peak = matmul_peak()
    rates = {batch: model_only_rate(batch) for batch in (64, 256)}
    variants = {"forward_only_segments_per_s_batch_256": forward_rate()}
    if keras.backend.backend() == "tensorflow":
        variants["xla_jit_compile_samples_per_s_batch_64"] = model_only_rate(64, True)
    best_peak = max([*peak.values(), *matmul_peak().values()])  # before and after: the better
    return {
        "seconds": 0.0,
        "items": 0,
        "unit": "",
        "keras_backend": keras.backend.backend(),
        "flops_per_sample": flops,
        "matmul_gflops": peak,
        "peak_gflops": best_peak,
        "model_only_samples_per_s": rates,
        "train_fraction_of_peak": {
            batch: rate * flops["total"] / 1e9 / best_peak for batch, rate in rates.items()
        },
        "forward_fraction_of_peak": variants["forward_only_segments_per_s_batch_256"]
        * flops["forward"]
        / 1e9
        / best_peak,
        **variants,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threads": os.cpu_count(),
    }


STAGES = {
    "fma_generate_files": (stage_fma_generate_files, True),
    "fma_store_build": (stage_fma_store_build, True),
    "fma_split_make": (stage_fma_split_make, True),
    "fma_split_load_first": (stage_fma_split_load_first, True),
    "fma_split_load_repeated": (stage_fma_split_load_repeated, True),
    "fma_train_epoch_memory": (stage_fma_train_epoch_memory, True),
    "fma_train_epoch_lazy": (stage_fma_train_epoch_lazy, True),
    "fma_embed": (stage_fma_embed, True),
    "fma_score": (stage_fma_score, True),
    "fma_collect_45_runs": (stage_fma_collect_45_runs, False),
    "msd_generate_annotations": (stage_msd_generate_annotations, True),
    "msd_split_make": (stage_msd_split_make, True),
    "msd_split_load_first": (stage_msd_split_load_first, True),
    "msd_split_load_repeated": (stage_msd_split_load_repeated, True),
    "msd_score_every_setup": (stage_msd_score_every_setup, True),
    "msd_collect": (stage_msd_collect, False),
}


def backends() -> list[str]:
    """The Keras backends that import here (TensorFlow first: the default)."""
    import importlib.util

    return [name for name in ("tensorflow", "jax") if importlib.util.find_spec(name)]


def run_stage(name: str, args, work: Path) -> dict:
    """One stage in a process of its own; its record with the process's peak memory."""
    backend = name.removeprefix("efficiency_") if name.startswith("efficiency_") else None
    command = [sys.executable, __file__, "--stage", name, "--workdir", str(work)]
    command += ["--fraction", str(args.fraction), "--seed", str(args.seed)]
    env = dict(os.environ, KERAS_BACKEND=backend) if backend else None
    wall, peak, out, status = run_measured(command, env)
    answers = [line for line in out.splitlines() if line.startswith(PROTOCOL)]
    if status or not answers:
        raise RuntimeError(f"stage {name} failed (exit status {status}); see its errors above")
    result = json.loads(answers[-1][len(PROTOCOL) :])
    result.setdefault("seconds", wall)
    scales = STAGES[name][1] if name in STAGES else False
    return {
        "stage": name,
        "seconds": result.pop("seconds"),
        "peak_rss_bytes": peak,
        "items": result.pop("items"),
        "scales_with_data": scales,
        "process_seconds": wall,
        **result,
    }


def stage_main(args) -> int:
    work = Path(args.workdir)
    if args.stage.startswith("efficiency_"):
        result = stage_efficiency(args, work)
    else:
        result = STAGES[args.stage][0](args, work)
    print(PROTOCOL + json.dumps(result), flush=True)
    return 0


# ---- The estimate --------------------------------------------------------------------------------
def fma_estimate(stages: dict, args) -> dict:
    """Hours of a full FMA reproduction at FMA's real size, from the stages measured here.

    Runs: 3 training setups x 3 side-information kinds x 5 seeds (Tables 2-3; A-X also gives Table
    4's embedding row) + the classification model on A-X x 5 seeds (Table 4). Each run trains
    `epochs` epochs and is evaluated once; each seed makes its split once. Epoch time of a setup =
    its training tracks at the measured training rate (in memory) + its validation tracks at the
    measured validation rate + the measured saves after an epoch; the classification model is
    taken to cost what the embedding model does (the same audio module). Evaluation = embedding
    every track + scoring, as measured (per track). Group sizes: the paper's Table 1. GPU: the
    README's H200 training rate (two runs: slow, fast) and predict rate for the model work, this
    machine's figures for the rest."""
    import splits

    memory = stages["fma_train_epoch_memory"]
    train_rate = memory["train_samples_per_s"]
    valid_rate = memory["valid_tracks"] / memory["valid_seconds"]
    overhead = memory["epoch_overhead_seconds"]
    groups = splits.paper_statistics("fma")["instances"]  # the paper's Table 1 group sizes
    groups["A+B"] = groups["A"] + groups["B"]
    train_sizes = {g: int(groups[g] * 0.9) for g in ("A", "B", "A+B")}  # --valid-fraction 0.1
    valid_sizes = {g: groups[g] - train_sizes[g] for g in train_sizes}
    scale = FMA["tracks"] / stages["fma_generate_files"]["items"]  # -> FMA's real size
    runs = {"A": 3 * SEEDS + SEEDS, "B": 3 * SEEDS, "A+B": 3 * SEEDS}  # + classification on A-X
    embed_per_track = stages["fma_embed"]["seconds"] / stages["fma_embed"]["items"]
    segments_per_track = stages["fma_embed"]["segments"] / stages["fma_embed"]["items"]
    score_per_track = stages["fma_score"]["seconds"] / stages["fma_score"]["items"]
    n_runs = sum(runs.values())
    split_hours = SEEDS * stages["fma_split_make"]["seconds"] * scale / 3600
    decode_hours = FMA["tracks"] * FMA["seconds"] / DECODE_REALTIME_PER_CORE / os.cpu_count() / 3600

    def hours(train, valid, predict, epochs_per_run=args.epochs_assumed) -> float:
        epochs = sum(
            runs[g] * (train_sizes[g] / train + valid_sizes[g] / valid + overhead) for g in runs
        )
        evaluation = n_runs * FMA["tracks"] * (predict + score_per_track)
        return (epochs_per_run * epochs + evaluation) / 3600 + split_hours

    gpu_predict = segments_per_track / GPU["predict"]
    return {
        "cpu_this_machine": round(hours(train_rate, valid_rate, embed_per_track), 2),
        "gpu_h200_jax_slow": round(hours(GPU["train_slow"], GPU["predict"], gpu_predict), 2),
        "gpu_h200_jax_fast": round(hours(GPU["train_fast"], GPU["predict"], gpu_predict), 2),
        "epochs_per_run": args.epochs_assumed,
        "runs": n_runs,
        "store_decode_hours_this_machine": round(decode_hours, 2),
        "cpu_this_machine_by_epochs": {
            e: round(hours(train_rate, valid_rate, embed_per_track, e), 2) for e in (20, 200)
        },
    }


# ---- Report --------------------------------------------------------------------------------------
def gigabytes(n: float) -> str:
    return f"{n / 1e9:6.2f} GB"


def report(record: dict) -> None:
    print(
        f"\n{record['cpus']} CPUs, fraction {record['fraction']}: FMA {record['fma_tracks']} "
        f"tracks, MSD {record['msd_tracks']} tracks"
    )
    print(f"{'stage':<26} {'seconds':>9} {'peak RSS':>10} {'items':>10} {'items/s':>11}  scales")
    for s in record["stages"]:
        rate = s["items"] / s["seconds"] if s["seconds"] else float("nan")
        print(
            f"{s['stage']:<26} {s['seconds']:9.2f} {gigabytes(s['peak_rss_bytes'])} "
            f"{s['items']:>10} {rate:11.1f}  {'yes' if s['scales_with_data'] else 'no'}"
        )
    by_name = {s["stage"]: s for s in record["stages"]}
    for name in ("fma_train_epoch_memory", "fma_train_epoch_lazy"):
        s = by_name[name]
        print(
            f"{name}: {s['train_samples_per_s']:.0f} training samples/s, validation "
            f"{s['valid_seconds']:.1f} s, saves {s['epoch_overhead_seconds']:.1f} s, first epoch "
            f"{s['first_epoch_seconds']:.1f} s, set-up {s['setup_seconds']:.1f} s "
            f"({s['input_pipeline']}, {s['keras_backend']})"
        )
    score = by_name["msd_score_every_setup"]
    print(
        f"MSD scores: the largest score matrix ((B+C) x {MSD['labels']} float32) is "
        f"{gigabytes(score['largest_score_matrix_bytes'])} here, "
        f"{gigabytes(score['largest_score_matrix_bytes'] / record['fraction'])} at full size; the "
        f"stage peaked at {gigabytes(score['peak_rss_bytes'])} "
        f"(linear extrapolation to full size: "
        f"{gigabytes(record['msd_score_peak_rss_full_size_bytes'])}); with the paper's groups "
        f"(Table 1) the largest is {gigabytes(record['msd_paper_largest_score_matrix_bytes'])}"
    )
    for backend, e in record["efficiency"].items():
        fractions = e["train_fraction_of_peak"]
        print(
            f"efficiency [{backend}]: matmul peak {e['peak_gflops']:.0f} GFLOP/s "
            f"({', '.join(f'{k} {v:.0f}' for k, v in e['matmul_gflops'].items())}), training "
            f"{e['flops_per_sample']['total'] / 1e6:.1f} MFLOP/sample; model only "
            + ", ".join(
                f"batch {b}: {r:.0f} samples/s = {fractions[b]:.2f} of peak"
                for b, r in e["model_only_samples_per_s"].items()
            )
            + f"; forward only {e['forward_only_segments_per_s_batch_256']:.0f} segments/s = "
            f"{e['forward_fraction_of_peak']:.2f} of peak"
            + (
                f"; with XLA (jit_compile=True) {e['xla_jit_compile_samples_per_s_batch_64']:.0f} "
                "samples/s at batch 64"
                if "xla_jit_compile_samples_per_s_batch_64" in e
                else ""
            )
        )
    for line in record["verdicts"]:
        print(line)
    estimate = record["fma_full_estimate_hours"]
    print(
        f"full FMA reproduction ({estimate['runs']} runs x {estimate['epochs_per_run']} epochs, "
        f"evaluation, 5 splits): this machine {estimate['cpu_this_machine']:.1f} h "
        f"(20 epochs: {estimate['cpu_this_machine_by_epochs'][20]:.1f} h, 200 epochs: "
        f"{estimate['cpu_this_machine_by_epochs'][200]:.1f} h); H200 with JAX "
        f"{estimate['gpu_h200_jax_fast']:.1f}-{estimate['gpu_h200_jax_slow']:.1f} h; building the "
        f"store from audio here ~{estimate['store_decode_hours_this_machine']:.1f} h"
    )


def verdicts(record: dict) -> list[str]:
    lines = []
    embed = record["embed_vs_predict"]
    ok = embed >= EMBED_TARGET
    lines.append(
        f"embed_vs_predict {embed:.3f} (target >= {EMBED_TARGET})  {'PASS' if ok else 'MISS'}"
    )
    for backend, e in record["efficiency"].items():
        value = e["train_fraction_of_peak"]["64"]
        ok = value >= PEAK_TARGET
        lines.append(
            f"train_fraction_of_peak [{backend}, batch 64] {value:.3f} (target >= {PEAK_TARGET})  "
            f"{'PASS' if ok else 'MISS'}"
        )
    return lines


def growth(record: dict, smaller: dict) -> list[str]:
    """Each scaling stage's time ratio against a smaller run, and its limit."""
    before = {s["stage"]: s for s in smaller["stages"]}
    lines = []
    for s in record["stages"]:
        old = before.get(s["stage"])
        if not s["scales_with_data"] or not old or not old["items"] or not old["seconds"]:
            continue
        items = s["items"] / old["items"]
        limit = DOUBLING_TARGET ** math.log2(items) if items > 1 else DOUBLING_TARGET
        ratio = s["seconds"] / old["seconds"]
        lines.append(
            f"growth {s['stage']:<26} {items:5.2f}x the items: {ratio:5.2f}x the time "
            f"(limit {limit:.2f})  {'PASS' if ratio <= limit else 'MISS'}"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--fraction", type=float, default=1.0, help="of the real track counts")
    parser.add_argument("--workdir", help="where the data go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--json", type=Path, help="also write the record to this JSON file")
    parser.add_argument("--growth-from", type=Path, help="a --json of a run at a smaller fraction")
    parser.add_argument(
        "--epochs-assumed",
        type=int,
        default=63,
        help="epochs per run of the estimate: the demo's (A+B)-X run (python train.py, seed 0) "
        "had its best val_loss at epoch 43 and early stopping ended it at epoch 63",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage:
        return stage_main(args)
    import splits

    if not 0 < args.fraction <= 1:
        print("error: --fraction must be in (0, 1]", file=sys.stderr)
        return 2
    smaller = json.loads(args.growth_from.read_text()) if args.growth_from else None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = []
    try:
        for name in [*STAGES, *(f"efficiency_{b}" for b in backends())]:
            print(f"stage {name} ...", file=sys.stderr, flush=True)
            stages.append(run_stage(name, args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    by_name = {s["stage"]: s for s in stages}
    efficiency = {s["keras_backend"]: s for s in stages if s["stage"].startswith("efficiency_")}
    score = by_name["msd_score_every_setup"]
    baseline = by_name["msd_split_load_repeated"]["peak_rss_bytes"]  # the interpreter and pandas
    record = {
        "benchmark": "scale",
        "fraction": args.fraction,
        "fma_tracks": by_name["fma_generate_files"]["items"],
        "msd_tracks": by_name["msd_generate_annotations"]["tracks"],
        "cpus": os.cpu_count(),
        "stages": stages,
        "embed_vs_predict": by_name["fma_embed"]["embed_vs_predict"],
        "train_fraction_of_peak": efficiency[backends()[0]]["train_fraction_of_peak"]["64"],
        "train_fraction_of_peak_by_backend": {
            b: e["train_fraction_of_peak"]["64"] for b, e in efficiency.items()
        },
        "train_fraction_of_peak_end_to_end": by_name["fma_train_epoch_memory"][
            "train_samples_per_s"
        ]
        * efficiency[backends()[0]]["flops_per_sample"]["total"]
        / 1e9
        / efficiency[backends()[0]]["peak_gflops"],
        "efficiency": efficiency,
        "msd_score_peak_rss_full_size_bytes": baseline
        + (score["peak_rss_bytes"] - baseline) / args.fraction,
        "total_seconds": time.perf_counter() - started,
    }
    paper = splits.paper_statistics("msd")
    record["msd_paper_largest_score_matrix_bytes"] = (
        (paper["instances"]["B"] + paper["instances"]["C"]) * paper["labels"]["total"] * 4
    )
    record["fma_full_estimate_hours"] = fma_estimate(by_name, args)
    record["verdicts"] = verdicts(record)
    if smaller:
        record["verdicts"] += growth(record, smaller)
    report(record)
    print(f"total {record['total_seconds'] / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
