"""The demo corpus: a synthetic, deterministic music collection that mirrors the paper's Experiment 1.

    python -m demo --out data/demo --seed 0 [--tracks 1200] [--seconds 7] [--jobs N]

Experiment 1 describes FMA genres by OpenMIC-2018 instrument annotations. Here, 41 genres (8 top-level genres with
4-5 sub-genres each, an FMA-like hierarchy) are each a probability profile over the 20 OpenMIC instruments plus
tempo / rhythm traits; tracks are synthesized from those traits (demo/synth.py) and carry 1-3 genre labels
(a sub-genre, sometimes plus its parent, sometimes a second sub-genre; or a top-level genre alone). Per-track
instrument annotations are written in OpenMIC-2018's own format (likelihoods, mask, sparse: 3-8 of the 20
instruments per track, crowd-like noise) and turned into side information by the very code used for FMA
(preprocess.openmic + preprocess.side_info).

No label leak: a genre influences a track only through its traits (which instruments play, tempo, meter, swing,
rhythmic density, melodic register), all shared between genres. Duration, loudness target, key, mode, chord
progression, start position in the bar and mix levels are drawn independently of the genre.

Layout written under --out (see data/README.md):
    audio/<3-digit folder>/<6-digit id>.flac   22,050 Hz mono 16-bit FLAC, `seconds` long
    tracks.csv, annotations.csv                 track_id,path / track_id,label (label = genre title)
    genres.csv                                  FMA's format: genre_id,#tracks,parent,title,top_level
    demo_truth.csv                              what was synthesized per track (genres, traits, instruments)
    openmic/openmic-2018.npz, class-map.json    the instrument annotations, OpenMIC-2018 layout
    side_info/instrument-count.csv, instrument-confidence.csv, random.csv
    mels.h5 (+ failures.csv)                    preprocess.store.build_store
    summary.json                                dataset_dir.summarize + the demo's parameters

Idempotent: a finished corpus with the same parameters is reused. Every file reaches its final path by an atomic
rename, so a killed build leaves no broken file; rerunning resumes it (finished audio is kept). Different
parameters rebuild the corpus from scratch.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from demo import synth
from preprocess.store import build_store
from dataset_dir import (
    DATA_ROOT,
    DatasetError,
    annotations_path,
    atomic_write_text,
    format_summary,
    read_annotations,
    mels_path,
    side_info_path,
    summarize,
    summary_path,
    tracks_path,
    write_annotations,
    write_side_info,
    write_json,
    write_tracks,
)
from preprocess.openmic import load_openmic, track_id_from_sample_key, write_openmic
from preprocess.side_info import INSTRUMENT_KINDS, RANDOM_KIND, instrument_side_info, random_side_info

DEMO_VERSION = 1  # bump when the synthesis or the genre table changes: a corpus of another version is rebuilt
DEFAULT_TRACKS = 1200
DEFAULT_SECONDS = 7.0
DEFAULT_OUT = DATA_ROOT / "demo"

AUDIO_DIR = "audio"
OPENMIC_DIR = "openmic"
GENRES_FILE = "genres.csv"
TRUTH_FILE = "demo_truth.csv"
BUILD_MARKER = ".demo-build.json"  # parameters of a build in progress (removed when it finishes)
FAILURES_FILE = "failures.csv"

INSTRUMENTS = synth.INSTRUMENTS

# Presence probabilities of an instrument in a track of a genre.
CORE_P = 0.95  # the genre's defining instruments
OPTIONAL_P = 0.35  # sometimes there
BACKGROUND_P = 0.03  # any other instrument, now and then (every instrument is heard in every genre's world)
MIN_INSTRUMENTS = 2

# How tracks get their labels (FMA-like multi-label `genres`, label cardinality about 1.25).
TOP_ONLY_FRACTION = 0.12  # tracks labelled with a top-level genre alone (its own profile)
ADD_PARENT_P = 0.2  # a sub-genre track also carries its parent
ADD_SECOND_P = 0.08  # a sub-genre track also carries a sub-genre of another top-level genre

# Annotation model (OpenMIC-2018-like): each track has 3-8 annotated instruments, chosen with present instruments
# PRESENT_WEIGHT times as likely (OpenMIC asked about likely instruments); 3 or 5 raters, each right with a
# track-specific accuracy; likelihood = fraction of "present" votes (odd number of raters: never exactly 0.5).
ANNOTATED_RANGE = (3, 8)
PRESENT_WEIGHT = 3.0
RATERS = (3, 5)
RATER_ACCURACY = (0.85, 0.97)


class DemoError(ValueError):
    """Bad demo parameters or an output directory that is not a demo corpus; the message says what to do."""


# ----------------------------------------------------------------------------------------------------------------
# Genres: 8 top-level genres with 4-5 sub-genres each (41). Siblings differ by a couple of instruments and/or tempo/rhythm.
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenreSpec:
    """A genre: instrument profile (core / optional instruments) and rhythm traits.

    tempo: (low, high) BPM; density: 0 sparse, 1 medium, 2 dense; swing in [0, 1]; meter: beats per bar;
    register: -1 low, 0 middle, +1 high (where melodic instruments play inside their ranges).
    """

    title: str
    parent: str | None
    core: tuple[str, ...]
    optional: tuple[str, ...]
    tempo: tuple[float, float]
    density: int
    swing: float = 0.0
    meter: int = 4
    register: int = 0


def _g(title, parent, core, optional, tempo, density, swing=0.0, meter=4, register=0) -> GenreSpec:
    return GenreSpec(title, parent, tuple(core.split()), tuple(optional.split()), tempo, density, swing, meter,
                     register)


GENRE_SPECS = (
    _g("Rock", None, "drums bass guitar", "voice organ piano", (110, 140), 1),
    _g("Surf Rock", "Rock", "drums guitar organ cymbals", "", (150, 180), 2, register=1),
    _g("Punk", "Rock", "drums guitar voice cymbals", "bass", (165, 200), 2),
    _g("Psychedelic Rock", "Rock", "drums guitar synthesizer flute", "organ", (90, 120), 1),
    _g("Blues Rock", "Rock", "guitar piano drums voice", "saxophone", (70, 95), 1, swing=0.9, register=-1),
    _g("Jazz", None, "piano bass cymbals", "saxophone", (110, 160), 1, swing=0.9),
    _g("Bebop", "Jazz", "saxophone trumpet bass cymbals", "piano", (190, 240), 2, swing=0.9, register=1),
    _g("Cool Jazz", "Jazz", "trumpet piano flute", "bass", (90, 120), 0, swing=0.9, register=-1),
    _g("Vocal Jazz", "Jazz", "voice piano cymbals", "bass", (80, 110), 0, swing=0.9),
    _g("Big Band", "Jazz", "trumpet trombone saxophone drums", "clarinet", (140, 180), 1, swing=0.9),
    _g("Folk", None, "guitar voice", "violin", (90, 125), 1),
    _g("Chamber Folk", "Folk", "guitar voice cello", "flute", (65, 90), 0, meter=3),
    _g("Celtic Folk", "Folk", "violin flute mandolin", "accordion", (110, 140), 2, meter=3, register=1),
    _g("Indie Folk", "Folk", "ukulele voice mallet_percussion", "guitar", (90, 120), 1, swing=0.5),
    _g("Sea Shanty", "Folk", "voice accordion", "violin", (95, 125), 1, meter=3, register=-1),
    _g("Classical", None, "violin cello piano", "flute", (70, 110), 1),
    _g("Chamber Music", "Classical", "violin cello clarinet", "piano", (80, 115), 1, meter=3),
    _g("Baroque", "Classical", "organ violin flute", "cello", (95, 125), 2),
    _g("Wind Ensemble", "Classical", "flute clarinet trombone", "trumpet", (85, 115), 1),
    _g("Choral", "Classical", "voice organ cello", "", (60, 85), 0, register=-1),
    _g("Electronic", None, "synthesizer drums", "bass", (115, 135), 2),
    _g("Synthpop", "Electronic", "synthesizer drums voice", "guitar", (105, 125), 1),
    _g("Techno", "Electronic", "synthesizer drums cymbals bass", "", (125, 145), 2, register=-1),
    _g("Ambient", "Electronic", "synthesizer mallet_percussion", "piano", (60, 80), 0),
    _g("Trip-Hop", "Electronic", "drums piano cello", "voice", (75, 95), 1, swing=0.5, register=-1),
    _g("International", None, "accordion trumpet", "guitar", (100, 140), 1),
    _g("Tango", "International", "accordion violin piano", "bass", (110, 130), 1, register=-1),
    _g("Mariachi", "International", "trumpet violin guitar", "voice", (120, 160), 1, meter=3),
    _g("Polka", "International", "accordion clarinet trombone", "drums", (120, 150), 1),
    _g("Island", "International", "ukulele guitar bass", "mallet_percussion", (85, 110), 1, swing=0.5),
    _g("Soul-RnB", None, "voice organ bass", "drums", (80, 110), 1, swing=0.5),
    _g("Gospel", "Soul-RnB", "voice organ piano drums", "", (70, 100), 1, swing=0.5, meter=3),
    _g("Funk", "Soul-RnB", "bass drums guitar saxophone", "trumpet", (95, 115), 2, swing=0.5),
    _g("Classic Soul", "Soul-RnB", "voice bass drums trumpet", "organ", (90, 115), 1),
    _g("Lounge", "Soul-RnB", "mallet_percussion flute organ", "bass", (80, 100), 0, swing=0.5),
    _g("Country", None, "guitar bass banjo", "voice", (95, 130), 1),
    _g("Bluegrass", "Country", "banjo mandolin violin", "guitar", (140, 175), 2),
    _g("Honky Tonk", "Country", "piano violin bass voice", "", (105, 135), 1, swing=0.5),
    _g("Country Waltz", "Country", "guitar violin accordion bass", "", (90, 120), 0, meter=3),
    _g("Americana", "Country", "guitar banjo voice mandolin", "drums", (85, 110), 1),
    _g("Western Swing", "Country", "violin guitar trombone cymbals", "piano", (140, 170), 1, swing=0.9),
)


def genre_ids() -> dict[str, int]:
    """Title -> FMA-like integer genre id (1-based, table order)."""
    return {spec.title: index + 1 for index, spec in enumerate(GENRE_SPECS)}


def genre_profile(spec: GenreSpec) -> np.ndarray:
    """(20,) presence probability of each instrument (INSTRUMENTS order) in a track of this genre."""
    profile = np.full(len(INSTRUMENTS), BACKGROUND_P)
    profile[[INSTRUMENTS.index(name) for name in spec.optional]] = OPTIONAL_P
    profile[[INSTRUMENTS.index(name) for name in spec.core]] = CORE_P
    return profile


def validate_genres(specs=GENRE_SPECS) -> None:
    """The table is a valid two-level hierarchy of unique titles over known instruments (raises DemoError)."""
    titles = [spec.title for spec in specs]
    if len(set(titles)) != len(titles):
        raise DemoError("duplicate genre titles in GENRE_SPECS")
    tops = {spec.title for spec in specs if spec.parent is None}
    for spec in specs:
        if spec.parent is not None and spec.parent not in tops:
            raise DemoError(f"genre {spec.title!r}: parent {spec.parent!r} is not a top-level genre")
        unknown = [name for name in spec.core + spec.optional if name not in INSTRUMENTS]
        if unknown:
            raise DemoError(f"genre {spec.title!r}: unknown instruments {unknown}")
        if set(spec.core) & set(spec.optional):
            raise DemoError(f"genre {spec.title!r}: an instrument is both core and optional")
        if spec.meter not in (3, 4) or spec.density not in (0, 1, 2) or spec.register not in (-1, 0, 1):
            raise DemoError(f"genre {spec.title!r}: meter must be 3/4, density 0-2, register -1/0/1")


def genres_table(track_genres: list[list[str]]) -> pd.DataFrame:
    """FMA's genres.csv: genre_id,#tracks,parent,title,top_level (parent 0 = root).

    #tracks counts the tracks whose labels or whose labels' ancestors include the genre (FMA's genres_all).
    """
    ids = genre_ids()
    parent_of = {spec.title: spec.parent for spec in GENRE_SPECS}
    counts = dict.fromkeys(ids, 0)
    for labels in track_genres:
        for title in {t for lab in labels for t in (lab, parent_of[lab]) if t is not None}:
            counts[title] += 1
    rows = []
    for spec in GENRE_SPECS:
        top = spec.parent or spec.title
        rows.append({"genre_id": ids[spec.title], "#tracks": counts[spec.title],
                     "parent": ids[spec.parent] if spec.parent else 0, "title": spec.title, "top_level": ids[top]})
    return pd.DataFrame(rows, columns=["genre_id", "#tracks", "parent", "title", "top_level"])


# ----------------------------------------------------------------------------------------------------------------
# Track plans: labels, traits, instruments (all from the seed)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackPlan:
    track_id: str
    genres: tuple[str, ...]  # labels (titles), primary first
    present: np.ndarray  # (20,) bool: instruments rendered in the audio
    arrangement: synth.Arrangement


def _label_sets(n_tracks: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """Balanced primary genres (every sub-genre and top-level genre gets its share), then extra labels."""
    tops = [spec.title for spec in GENRE_SPECS if spec.parent is None]
    subs = [spec for spec in GENRE_SPECS if spec.parent is not None]
    n_top = int(round(TOP_ONLY_FRACTION * n_tracks))
    primaries = [tops[i % len(tops)] for i in range(n_top)] + [subs[i % len(subs)].title for i in range(n_tracks - n_top)]
    primaries = [primaries[i] for i in rng.permutation(n_tracks)]
    parent_of = {spec.title: spec.parent for spec in GENRE_SPECS}
    add_parent = rng.random(n_tracks) < ADD_PARENT_P
    add_second = rng.random(n_tracks) < ADD_SECOND_P
    second_pick = rng.random(n_tracks)  # uniform among the sub-genres of the other top-level genres
    out = []
    for i, primary in enumerate(primaries):
        labels = [primary]
        parent = parent_of[primary]
        if parent is not None:
            if add_parent[i]:
                labels.append(parent)
            if add_second[i]:
                others = [spec.title for spec in subs if spec.parent != parent]
                labels.append(others[int(second_pick[i] * len(others))])
        out.append(tuple(labels))
    return out


def _traits_source(labels: tuple[str, ...], rng: np.random.Generator) -> tuple[np.ndarray, GenreSpec]:
    """Instrument probabilities and the genre whose rhythm traits the track takes.

    A track with two sub-genres mixes their instrument profiles (mean) and takes the traits of one of them.
    """
    specs = {spec.title: spec for spec in GENRE_SPECS}
    leaves = [lab for lab in labels if specs[lab].parent is not None] or [labels[0]]
    profile = np.mean([genre_profile(specs[lab]) for lab in leaves], axis=0)
    trait_genre = specs[leaves[int(rng.integers(0, len(leaves)))]]
    return profile, trait_genre


def _draw_present(profile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    present = rng.random(len(profile)) < profile
    if present.sum() < MIN_INSTRUMENTS:  # top up with the genre's most likely missing instruments
        order = np.argsort(-profile + rng.random(len(profile)) * 1e-3)
        present[order[: MIN_INSTRUMENTS]] = True
    return present


def make_plans(n_tracks: int, seconds: float, seed: int = 0) -> list[TrackPlan]:
    """Deterministic track plans for a corpus: same (n_tracks, seconds, seed) -> same plans."""
    rng = np.random.default_rng([seed, 1])
    label_sets = _label_sets(n_tracks, rng)
    plans = []
    for index, labels in enumerate(label_sets):
        genre_rng = np.random.default_rng([seed, 2, index])  # everything the genre decides
        free_rng = np.random.default_rng([seed, 5, index])  # everything drawn the same way for every genre
        profile, spec = _traits_source(labels, genre_rng)
        present = _draw_present(profile, genre_rng)
        names = tuple(name for name, on in zip(INSTRUMENTS, present) if on)
        arrangement = synth.Arrangement(
            tempo=float(genre_rng.uniform(*spec.tempo)),
            meter=spec.meter,
            swing=spec.swing,
            density=spec.density,
            register=spec.register,
            key=int(free_rng.integers(0, 12)),
            mode=("major", "minor")[int(free_rng.integers(0, 2))],
            progression=synth.PROGRESSIONS[int(free_rng.integers(0, len(synth.PROGRESSIONS)))],
            instruments=names,
            gains_db=tuple(float(g) for g in free_rng.uniform(-2.0, 2.0, len(names))),
            seed=(seed, 3, index),
            seconds=float(seconds),
            start_beat=float(free_rng.uniform(0.0, 1.0) * spec.meter),  # anywhere in the first bar
            master_gain_db=float(free_rng.uniform(-1.0, 1.0)),
        )
        plans.append(TrackPlan(track_id=str(index + 1), genres=labels, present=present, arrangement=arrangement))
    return plans


def audio_relpath(track_id: str) -> str:
    """FMA's layout: audio/<first 3 digits>/<6-digit zero-padded id>.flac."""
    padded = f"{int(track_id):06d}"
    return f"{AUDIO_DIR}/{padded[:3]}/{padded}.flac"


# ----------------------------------------------------------------------------------------------------------------
# Instrument annotations in OpenMIC-2018's form
# ----------------------------------------------------------------------------------------------------------------
def make_annotations(present: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crowd-style annotations of the rendered instruments.

    Args:
        present: (n_tracks, K) bool truth (instruments audible in each track).
    Returns:
        y_true (n_tracks, K) float32 in [0, 1]: fraction of raters who heard the instrument (0.5 + conf/2 for a
        "present" majority, 0.5 - conf/2 for "absent"), exactly 0.5 where unannotated; y_mask (n_tracks, K) bool.
    """
    rng = np.random.default_rng([seed, 4])
    n, k = present.shape
    n_annotated = rng.integers(ANNOTATED_RANGE[0], ANNOTATED_RANGE[1] + 1, n)
    # weighted sampling without replacement (Gumbel top-k): present instruments are asked about more often
    keys = np.log(np.where(present, PRESENT_WEIGHT, 1.0)) + rng.gumbel(size=(n, k))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    y_mask = rank < n_annotated[:, None]
    raters = rng.choice(np.array(RATERS), size=(n, 1))
    accuracy = rng.uniform(*RATER_ACCURACY, size=(n, 1))
    p_yes = np.where(present, accuracy, 1.0 - accuracy)
    votes = rng.binomial(np.broadcast_to(raters, (n, k)), p_yes)
    likelihood = votes / raters
    y_true = np.where(y_mask, likelihood, 0.5).astype(np.float32)
    return y_true, y_mask


def sample_key(track_id: str) -> str:
    """OpenMIC-style sample key `<6-digit id>_<start ms>`; demo clips start at 0 ms."""
    return f"{int(track_id):06d}_0"


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------
def _render_task(task: tuple[str, synth.Arrangement]) -> str:
    """Worker: render one track and write it atomically (temp file in the same folder, then rename)."""
    path, arrangement = task
    audio = synth.render_track(arrangement)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".flac.tmp", dir=final.parent)
    os.close(fd)
    try:
        sf.write(tmp, audio, synth.SR, subtype="PCM_16", format="FLAC")
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _pool_context():
    """fork when safe (fast start), spawn once TensorFlow is loaded (train.py may call ensure_demo): forking a
    process that runs TensorFlow's thread pools can deadlock the children."""
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def render_audio(plans: list[TrackPlan], out: Path, jobs: int = 1, progress: bool = True) -> dict:
    """Render every planned track whose FLAC is missing; returns {"rendered": n, "reused": n}."""
    tasks = [(str(out / audio_relpath(p.track_id)), p.arrangement) for p in plans]
    todo = [task for task in tasks if not Path(task[0]).is_file()]
    bar = tqdm(total=len(todo), desc="demo audio", unit="track", disable=not progress)
    try:
        if jobs <= 1 or len(todo) < 2:
            for task in todo:
                _render_task(task)
                bar.update()
        else:
            with _pool_context().Pool(min(jobs, len(todo))) as pool:
                for _ in pool.imap_unordered(_render_task, todo, chunksize=4):
                    bar.update()
    finally:
        bar.close()
    return {"rendered": len(todo), "reused": len(tasks) - len(todo)}


def _params(seed: int, tracks: int, seconds: float) -> dict:
    return {"version": DEMO_VERSION, "seed": int(seed), "tracks": int(tracks), "seconds": float(seconds)}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _existing_params(out: Path) -> dict | None:
    """Parameters of the corpus (finished or in progress) in `out`, or None when there is none."""
    marker = _read_json(out / BUILD_MARKER)
    if marker is not None:
        return marker
    summary = _read_json(summary_path(out))
    return summary.get("demo") if isinstance(summary, dict) else None


def _is_finished(out: Path, params: dict) -> bool:
    summary = _read_json(summary_path(out))
    if not isinstance(summary, dict) or summary.get("demo") != params or (out / BUILD_MARKER).exists():
        return False
    needed = [tracks_path(out), annotations_path(out), mels_path(out), out / GENRES_FILE]
    needed += [side_info_path(out, kind) for kind in (*INSTRUMENT_KINDS, RANDOM_KIND)]
    return all(path.is_file() for path in needed)


def _clean(out: Path) -> None:
    """Remove a previous demo corpus (only the files and folders this module writes, plus derived splits)."""
    for folder in (AUDIO_DIR, OPENMIC_DIR, "side_info", "splits"):
        shutil.rmtree(out / folder, ignore_errors=True)
    shutil.rmtree(out / "mels.h5.work", ignore_errors=True)
    for name in ("tracks.csv", "annotations.csv", GENRES_FILE, TRUTH_FILE, "mels.h5", "mels.h5.tmp", FAILURES_FILE,
                 "summary.json", BUILD_MARKER):
        (out / name).unlink(missing_ok=True)


def _remove_temporaries(out: Path) -> None:
    """Temporary files of a killed build (audio renders, the OpenMIC folder, atomic text writes)."""
    for pattern in (f"{AUDIO_DIR}/*/.*.flac.tmp", ".*.tmp", f"{OPENMIC_DIR}/.*.tmp", "side_info/.*.tmp"):
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)
    for folder in out.glob(".openmic.*"):
        shutil.rmtree(folder, ignore_errors=True)


def _prepare_out(out: Path, params: dict, force: bool) -> str:
    """Decide between reuse / resume / fresh build; returns "finished", "resume" or "fresh"."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} exists and is not a directory; give a directory for the demo corpus.")
    out.mkdir(parents=True, exist_ok=True)
    existing = _existing_params(out)
    if existing is None and tracks_path(out).exists():
        raise DemoError(
            f"--out {out} holds a dataset (tracks.csv) that is not a demo corpus; refusing to overwrite it. "
            "Give an empty or new directory."
        )
    if not force and existing == params and _is_finished(out, params):
        return "finished"
    resume = existing == params and not force
    if resume:
        _remove_temporaries(out)
    else:
        _clean(out)
    write_json(out / BUILD_MARKER, params)
    return "resume" if resume else "fresh"


def write_metadata(out: Path, plans: list[TrackPlan], seed: int) -> dict:
    """tracks.csv, annotations.csv, genres.csv, demo_truth.csv, openmic/ and side_info/; returns facts for summary."""
    tracks = pd.DataFrame({"track_id": [p.track_id for p in plans], "path": [audio_relpath(p.track_id) for p in plans]})
    write_tracks(tracks_path(out), tracks)
    annotations = pd.DataFrame(
        [(p.track_id, label) for p in plans for label in p.genres], columns=["track_id", "label"]
    )
    write_annotations(annotations_path(out), annotations)
    atomic_write_text(out / GENRES_FILE, genres_table([list(p.genres) for p in plans]).to_csv(index=False))
    atomic_write_text(out / TRUTH_FILE, truth_table(plans).to_csv(index=False))

    present = np.stack([p.present for p in plans])
    y_true, y_mask = make_annotations(present, seed)
    _write_openmic_atomic(out / OPENMIC_DIR, [sample_key(p.track_id) for p in plans], y_true, y_mask)
    return write_side_infos(out, seed)


def truth_table(plans: list[TrackPlan]) -> pd.DataFrame:
    """What was synthesized: labels (FMA-style id list and titles), rhythm traits, key, and instruments."""
    ids = genre_ids()
    rows = []
    for p in plans:
        arr = p.arrangement
        rows.append({
            "track_id": p.track_id,
            "genres": "[" + ", ".join(str(ids[g]) for g in p.genres) + "]",
            "genre_titles": ";".join(p.genres),
            "tempo": round(arr.tempo, 3), "meter": arr.meter, "swing": arr.swing, "density": arr.density,
            "register": arr.register, "key": arr.key, "mode": arr.mode,
            "instruments": ";".join(arr.instruments),
        })
    return pd.DataFrame(rows)


def _write_openmic_atomic(folder: Path, keys, y_true, y_mask) -> None:
    """write_openmic into a sibling temp folder, then move each file into place with an atomic rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".openmic.", dir=folder.parent))
    try:
        write_openmic(tmp, keys, y_true, y_mask, list(INSTRUMENTS))
        folder.mkdir(exist_ok=True)
        for item in sorted(tmp.iterdir()):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_side_infos(out: Path, seed: int) -> dict:
    """Side information from the written OpenMIC-style files, through the same code path as FMA."""
    openmic = load_openmic(out / OPENMIC_DIR)
    track_ids = [track_id_from_sample_key(key) for key in openmic.sample_keys]
    annotations = read_annotations(annotations_path(out))
    dropped, kept = {}, {}
    for kind, flavour in INSTRUMENT_KINDS.items():
        labels, vectors, lost = instrument_side_info(track_ids, openmic.y_true, openmic.y_mask, annotations, flavour)
        write_side_info(side_info_path(out, kind), labels, vectors)
        dropped[kind], kept[kind] = lost, labels
    # the random baseline describes the same labels as the instrument vectors, in the same dimension (paper's 40)
    labels = kept["instrument-count"]
    dim = 2 * len(openmic.instruments)
    write_side_info(side_info_path(out, RANDOM_KIND), labels, random_side_info(labels, dim, seed=seed))
    return {"dropped_genres": dropped, "instruments": list(openmic.instruments), "side_info_dim": dim}


def build_mels(out: Path, jobs: int, progress: bool) -> dict:
    """mels.h5 (+ failures.csv) through the audio front end, the same call as for FMA."""
    return build_store(audio_dir=out, out=mels_path(out), tracks_csv=tracks_path(out), jobs=jobs, progress=progress)


def build_demo(out=DEFAULT_OUT, seed: int = 0, tracks: int = DEFAULT_TRACKS, seconds: float = DEFAULT_SECONDS,
               jobs: int | None = None, progress: bool = True, force: bool = False, mels: bool = True) -> dict:
    """Build (or reuse / resume) the demo corpus in `out`; returns the summary dict (also in summary.json).

    Same (seed, tracks, seconds) -> byte-identical CSVs and side information, identical audio samples.
    mels=False skips the mel store (tests of the corpus alone); the corpus then counts as unfinished.
    """
    out = Path(out).resolve()
    seed, tracks, seconds = _check_sizes(seed, tracks, seconds)
    jobs = max(1, int(jobs if jobs is not None else (os.cpu_count() or 1)))
    validate_genres()
    params = _params(seed, tracks, seconds)
    state = _prepare_out(out, params, force)
    if state == "finished":
        summary = _read_json(summary_path(out))
        if progress:
            print(f"demo corpus in {out} is complete (seed {seed}, {tracks} tracks x {seconds:g} s); reusing it.")
        return summary
    start = time.perf_counter()
    plans = make_plans(tracks, seconds, seed)
    rendered = render_audio(plans, out, jobs=jobs, progress=progress)
    facts = write_metadata(out, plans, seed)
    store = None
    if mels:  # build_store is itself atomic and resumable; a finished store of the same files is kept
        store = build_mels(out, jobs, progress)
    extra = {"demo": params, **facts, "genres_file": GENRES_FILE, "truth_file": TRUTH_FILE,
             "openmic_dir": OPENMIC_DIR}
    if store is not None:
        extra["mels_store"] = {k: store[k] for k in ("stored", "failed", "frames", "mean", "std", "dtype") if k in store}
    if mels:
        summary = summarize(out, extra=extra)
        (out / BUILD_MARKER).unlink(missing_ok=True)
    else:
        summary = summarize(out, extra=extra, write=False)
    summary["build"] = {"state": state, **rendered, "seconds": round(time.perf_counter() - start, 1), "jobs": jobs}
    return summary


def _check_sizes(seed, tracks, seconds) -> tuple[int, int, float]:
    if int(tracks) < 1:
        raise DemoError(f"--tracks {tracks}: need at least 1 track.")
    if not 0.5 <= float(seconds) <= 60.0:
        raise DemoError(f"--seconds {seconds}: clip length must be between 0.5 and 60 seconds.")
    if int(seed) < 0:
        raise DemoError(f"--seed {seed}: must be a non-negative integer.")
    return int(seed), int(tracks), float(seconds)


def ensure_demo(dataset_dir, seed: int = 0, **size_options) -> Path:
    """The demo corpus directory; builds it when its data or mels.h5 is missing (train.py calls this).

    An unfinished demo corpus of the same seed in dataset_dir is completed with its own size (a deleted mels.h5
    is rebuilt without touching the audio); otherwise the default size (or size_options: tracks, seconds, jobs)
    is built. A complete directory is returned as it is.
    """
    dataset_dir = Path(dataset_dir).resolve()
    needed = [tracks_path(dataset_dir), annotations_path(dataset_dir), mels_path(dataset_dir),
              side_info_path(dataset_dir, "instrument-count")]
    if not all(path.is_file() for path in needed):
        existing = _existing_params(dataset_dir) if dataset_dir.is_dir() else None
        if existing and existing.get("seed") == seed and existing.get("version") == DEMO_VERSION:
            size_options = {"tracks": existing["tracks"], "seconds": existing["seconds"], **size_options}
        build_demo(dataset_dir, seed=seed, **size_options)
    return dataset_dir


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Build the synthetic demo corpus (41 genres described by 20 OpenMIC instruments) with audio, "
                    "annotations, side information and the mel store. Reuses a finished corpus with the same "
                    "parameters; resumes an interrupted one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="dataset directory to write.")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (labels, arrangements, annotations).")
    parser.add_argument("--tracks", type=int, default=DEFAULT_TRACKS, help="number of tracks.")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of every clip in seconds.")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes for synthesis and the mel store.")
    parser.add_argument("--force", action="store_true", help="rebuild even when a finished corpus exists.")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars.")
    return parser


def format_build(summary: dict) -> str:
    """Human-readable lines: counts, labels per genre, dropped genres, build time."""
    lines = [format_summary(summary)]
    demo = summary.get("demo", {})
    lines.append(f"  seed {demo.get('seed')}, {demo.get('tracks')} tracks x {demo.get('seconds')} s, "
                 f"{len(summary.get('instruments', []))} instruments, genres.csv + demo_truth.csv written")
    dropped = sorted({g for lost in summary.get("dropped_genres", {}).values() for g in lost})
    lines.append(f"  genres dropped from instrument side information: {', '.join(dropped) if dropped else 'none'}")
    build = summary.get("build")
    if build:
        lines.append(f"  built in {build['seconds']} s with {build['jobs']} job(s): {build['rendered']} rendered, "
                     f"{build['reused']} reused")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = build_demo(args.out, seed=args.seed, tracks=args.tracks, seconds=args.seconds, jobs=args.jobs,
                             progress=not args.no_progress, force=args.force)
    except (DemoError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_build(summary))
    print(json.dumps({k: summary[k] for k in ("dataset", "tracks", "labels", "positives", "label_cardinality")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
