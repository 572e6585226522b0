"""How fast is the audio front end, per core and with two jobs?

Generates its own corpus in a temporary folder: --clips files of --seconds seconds, 44.1 kHz stereo,
encoded like FMA/MSD previews (--codec mp3, or ogg like OpenMIC); --unique distinct signals are
encoded and the rest are copies (decoding a copy costs the same; encoding is the slow part of making
the corpus). Then measures, side by side in one run and interleaved (best of --repeats, so that
noise from other processes hits both alike):

    front end   load_audio + log_mel for every file, in this process, one BLAS thread: the pure
                decode + mel cost
    --jobs 1    build_store(jobs=1): everything `python -m preprocess.store` does (parts,
                statistics, merge)
    --jobs 2    build_store(jobs=2)

and prints the realtime factor per core (seconds of audio per CPU second, and per wall second, of
the --jobs 1 build), the speedup of --jobs 2 over --jobs 1 (wall), the ratios to the targets and
PASS/MISS:

    realtime per core >= 250x          speedup of --jobs 2 >= 1.7x (needs 2 free cores)

The default corpus is 1 hour of audio so that fixed costs (worker start-up, the serial merge) weigh
as little as on a real corpus; with --clips 48 the build takes ~1 s and the speedup drops to ~1.66x.
On a shared machine the measured speedup is noise; a last line splits the --jobs 2 CPU into the
parent's (serial) and the workers' share and gives the Amdahl estimate for two free cores (labelled
as an estimate, not a target).

Usage:
    .venv/bin/python benchmarks/bench_preprocess.py [--clips 120] [--seconds 30] [--codec mp3]
        [--repeats 2]
                                                    [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from preprocess import frontend, store  # noqa: E402

TARGET_REALTIME_PER_CORE = 250.0
TARGET_SPEEDUP_2_JOBS = 1.7
CODECS = {"mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS")}
NATIVE_RATE = 44100


def music_like(seconds: float, seed: int) -> np.ndarray:
    """(n, 2) float32 at 44.1 kHz: chords of harmonic tones with note changes, a beat and a little
    noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * NATIVE_RATE)
    t = np.arange(n) / NATIVE_RATE
    note_length = int(0.5 * NATIVE_RATE)
    signal = np.zeros(n)
    for voice in range(3):
        pitches = 110 * 2 ** (rng.integers(0, 36, size=n // note_length + 1) / 12)
        frequency = np.repeat(pitches, note_length)[:n]
        phase = 2 * np.pi * np.cumsum(frequency) / NATIVE_RATE
        signal += sum(np.sin(h * phase) / h for h in range(1, 5)) / (voice + 1)
    beat = np.exp(-30 * (t % 0.5)) * rng.standard_normal(n) * 0.3
    signal = 0.25 * signal / np.abs(signal).max() + beat + 0.01 * rng.standard_normal(n)
    left, right = signal, np.roll(signal, 200) * 0.9
    return (0.5 * np.stack([left, right], axis=1) / np.abs(signal).max()).astype(np.float32)


def make_corpus(
    folder: Path, clips: int, unique: int, seconds: float, codec: str, seed: int
) -> list[Path]:
    fmt, subtype = CODECS[codec]
    originals = []
    for k in range(min(unique, clips)):
        path = folder / f"{k:03d}" / f"{k:06d}.{codec}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), music_like(seconds, seed + k), NATIVE_RATE, format=fmt, subtype=subtype)
        originals.append(path)
    paths = list(originals)
    for k in range(len(originals), clips):
        path = folder / f"{k:03d}" / f"{k:06d}.{codec}"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(originals[k % len(originals)], path)
        paths.append(path)
    return paths


def cpu_split() -> tuple[float, float]:
    """(CPU seconds of this process, CPU seconds of its reaped children, i.e. the pool workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def cpu_seconds() -> float:
    return sum(cpu_split())


def time_front_end(paths: list[Path]) -> dict:
    """Decode + log-mel of every file in this process, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        frontend.log_mel(frontend.load_audio(paths[0]))  # warm-up: mel basis, window, imports
        wall, cpu = time.perf_counter(), cpu_seconds()
        samples = 0
        for path in paths:
            y = frontend.load_audio(path)
            frontend.log_mel(y)
            samples += len(y)
        return {
            "wall": time.perf_counter() - wall,
            "cpu": cpu_seconds() - cpu,
            "audio_seconds": samples / frontend.SAMPLE_RATE,
        }


def time_build(audio_dir: Path, out: Path, jobs: int) -> dict:
    wall, (parent, workers) = time.perf_counter(), cpu_split()
    summary = store.build_store(audio_dir, out, jobs=jobs, progress=False)
    wall, (parent_after, workers_after) = time.perf_counter() - wall, cpu_split()
    result = {
        "wall": wall,
        "cpu": parent_after - parent + workers_after - workers,
        "parent_cpu": parent_after - parent,
        "workers_cpu": workers_after - workers,
        "audio_seconds": summary["audio_seconds"],
        "stored": summary["stored"],
    }
    shutil.rmtree(out.parent)
    return result


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["wall"])


def verdict(value: float, target: float) -> str:
    return f"{value / target:5.2f}x of target  {'PASS' if value >= target else 'MISS'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    # 120 x 30 s = 1 hour of audio: with fewer files the whole build takes ~1 s and the fixed costs
    # (worker start-up, the serial merge) dominate the 2-job speedup, unlike real corpora (19k-406k
    # files).
    parser.add_argument("--clips", type=int, default=120, help="number of audio files")
    parser.add_argument(
        "--unique", type=int, default=8, help="distinct signals encoded (the rest are copies)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument(
        "--codec", choices=sorted(CODECS), default="mp3", help="file format of the clips"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved repetitions; the best wall time counts"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated signals")
    parser.add_argument(
        "--json", default=None, help="also write the measurements to this JSON file"
    )
    args = parser.parse_args(argv)
    if args.clips < 2 or args.unique < 1 or args.seconds <= 0 or args.repeats < 1:
        print(
            "error: --clips >= 2, --unique >= 1, --seconds > 0 and --repeats >= 1 are required.",
            file=sys.stderr,
        )
        return 2

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        paths = make_corpus(
            folder / "audio", args.clips, args.unique, args.seconds, args.codec, args.seed
        )
        print(
            f"corpus: {len(paths)} x {args.seconds:g} s {args.codec} clips, 44.1 kHz stereo "
            f"({args.unique} distinct), made in {time.perf_counter() - started:.1f} s; {cores} CPU "
            "cores, "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        front, one, two = [], [], []
        for repeat in range(args.repeats):
            front.append(time_front_end(paths))
            one.append(time_build(folder / "audio", folder / f"j1_{repeat}" / "mels.h5", jobs=1))
            two.append(time_build(folder / "audio", folder / f"j2_{repeat}" / "mels.h5", jobs=2))

    front, one, two = best(front), best(one), best(two)
    audio_seconds = one["audio_seconds"]
    rows = {
        "front_end_realtime_per_cpu_s": front["audio_seconds"] / front["cpu"],
        "jobs1_realtime_per_cpu_s": audio_seconds / one["cpu"],
        "jobs1_realtime_per_wall_s": audio_seconds / one["wall"],
        "jobs2_realtime_per_wall_s": audio_seconds / two["wall"],
        "speedup_jobs2_over_jobs1": one["wall"] / two["wall"],
        # Amdahl estimate for two otherwise idle cores: the parent's work is serial, the workers'
        # CPU splits in two.
        "speedup_estimate_two_free_cores": one["cpu"]
        / (two["parent_cpu"] + two["workers_cpu"] / 2),
    }
    print(f"\n{'measurement':<40}{'wall s':>9}{'CPU s':>9}{'x realtime':>13}")
    print(
        f"{'front end (decode + mel), 1 thread':<40}{front['wall']:9.2f}{front['cpu']:9.2f}"
        f"{rows['front_end_realtime_per_cpu_s']:12.0f}x  per CPU s"
    )
    print(
        f"{'build_store --jobs 1':<40}{one['wall']:9.2f}{one['cpu']:9.2f}"
        f"{rows['jobs1_realtime_per_cpu_s']:12.0f}x  per CPU s "
        f"({rows['jobs1_realtime_per_wall_s']:.0f}x per wall s)"
    )
    print(
        f"{'build_store --jobs 2':<40}{two['wall']:9.2f}{two['cpu']:9.2f}"
        f"{rows['jobs2_realtime_per_wall_s']:12.0f}x  per wall s"
    )
    print(
        "\nrealtime per core (--jobs 1, audio s / CPU s): "
        f"{rows['jobs1_realtime_per_cpu_s']:7.0f}x   "
        f"target {TARGET_REALTIME_PER_CORE:.0f}x  "
        f"{verdict(rows['jobs1_realtime_per_cpu_s'], TARGET_REALTIME_PER_CORE)}"
    )
    print(
        f"speedup --jobs 2 / --jobs 1 (wall):            {rows['speedup_jobs2_over_jobs1']:7.2f}x  "
        " "
        f"target {TARGET_SPEEDUP_2_JOBS:.1f}x  "
        f"{verdict(rows['speedup_jobs2_over_jobs1'], TARGET_SPEEDUP_2_JOBS)}"
    )
    print(
        f"  (--jobs 2 split: parent {two['parent_cpu']:.2f} CPU s serial, workers "
        f"{two['workers_cpu']:.2f} CPU s; "
        f"if 2 cores were free: ~{rows['speedup_estimate_two_free_cores']:.2f}x. An estimate, not "
        "the target "
        f"measurement; load average now {os.getloadavg()[0]:.2f})"
    )
    if cores < 2:
        print(
            "note: fewer than 2 cores available, the --jobs 2 speedup cannot reach its target here."
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "clips": len(paths),
                    "seconds": args.seconds,
                    "codec": args.codec,
                    "cores": cores,
                    "front_end": front,
                    "jobs1": one,
                    "jobs2": two,
                    **rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
