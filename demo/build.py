"""The demo corpus: a synthetic, deterministic stand-in for the paper's Experiment 1 (`python -m
demo`).

Experiment 1 describes FMA genres by OpenMIC-2018 instrument annotations. Here 41 genres (8
top-level genres with 4-5 sub-genres each) are presence profiles over the 20 OpenMIC instruments
plus rhythm traits; tracks are synthesized from them (demo/synth.py) and carry 1-3 genre labels.
Their instrument annotations are written as OpenMIC-2018's files and become side information through
the code used for FMA. No label leak: a genre acts only through traits that genres share; length,
loudness, key, chords and mix levels never depend on it.

Writes the dataset layout of docs/formats.md plus audio/, genres.csv (FMA's columns), demo_truth.csv
(what was synthesized) and openmic/. The same seed gives byte-identical files. The folder is claimed
with fileio's marker (a non-empty folder without it is refused, untouched) and locked while
building; a finished corpus is reused, a killed build resumes, and a corpus of other parameters is
replaced only with --force, which deletes only the files the demo wrote (splits/ and anything else
stay).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from dataset_dir import (
    DATA_ROOT,
    DatasetError,
    annotations_path,
    mels_path,
    read_annotations,
    side_info_dir,
    side_info_path,
    summarize,
    summary_path,
    tracks_path,
    write_annotations,
    write_side_info,
    write_tracks,
)
from demo import synth
from fileio import (
    atomic_write,
    atomic_write_text,
    claim_folder,
    contents,
    output_lock,
    remove_temporaries,
    resolved,
    write_json,
)
from preprocess.openmic import (
    CLASS_MAP_FILE,
    NPZ_FILE,
    load_openmic,
    track_id_from_sample_key,
    write_openmic,
)
from preprocess.side_info import (
    INSTRUMENT_KINDS,
    RANDOM_KIND,
    instrument_side_info,
    random_side_info,
)
from preprocess.store import build_store, failures_path

# bump when the synthesis or the genre table changes: a corpus of another version is rebuilt
DEMO_VERSION = 2
DEFAULT_TRACKS = 1200
DEFAULT_SECONDS = 7.0
DEFAULT_OUT = DATA_ROOT / "demo"
OWNER = "demo"  # fileio marker of a folder this module may write into and clean
BUILD_MARKER = ".demo-build.json"  # parameters of a build in progress (removed when it finishes)
GENRES_FILE = "genres.csv"
TRUTH_FILE = "demo_truth.csv"
OPENMIC_DIR = "openmic"
AUDIO_DIR = "audio"
INSTRUMENTS = synth.INSTRUMENTS
SIDE_INFO_KINDS = (*INSTRUMENT_KINDS, RANDOM_KIND)

# Presence probability of an instrument in a track of a genre: the genre's core instruments, its
# optional ones, and any other instrument now and then (every instrument is heard in every genre's
# world).
CORE_P = 0.95
OPTIONAL_P = 0.35
BACKGROUND_P = 0.03
MIN_INSTRUMENTS = 2
# Labels (FMA-like multi-label genres, about 1.25 per track): some tracks carry a top-level genre
# alone (its own profile); a sub-genre track may also carry its parent, or a sub-genre of another
# top-level genre.
TOP_ONLY_FRACTION = 0.12
ADD_PARENT_P = 0.2
ADD_SECOND_P = 0.08
# Annotations (OpenMIC-like): 3-8 instruments annotated per track, present ones PRESENT_WEIGHT times
# as likely to be asked about; 3 or 5 raters, each right with a track-specific accuracy; likelihood
# = fraction of "present" votes (an odd number of raters: never exactly 0.5, which means "not
# annotated").
ANNOTATED_RANGE = (3, 8)
PRESENT_WEIGHT = 3.0
RATERS = (3, 5)
RATER_ACCURACY = (0.85, 0.97)


class DemoError(DatasetError):
    """Bad demo parameters, or a folder whose corpus cannot be used or built as asked; the message
    names the flag or folder and what to do."""


class GenreSpec(NamedTuple):
    title: str
    parent: str | None  # None: a top-level genre
    core: str  # instruments (space-separated) in 95% of its tracks
    optional: str  # instruments in 35% of its tracks
    tempo: tuple[float, float]  # BPM range
    density: int  # 0 sparse, 1 medium, 2 dense rhythms
    swing: float = 0.0  # in [0, 1]
    meter: int = 4  # beats per bar
    # -1 low, 0 middle, +1 high: where melodic instruments play inside their ranges
    register: int = 0


GENRE_SPECS = (  # siblings differ by a couple of instruments and/or their rhythm
    GenreSpec("Rock", None, "drums bass guitar", "voice organ piano", (110, 140), 1),
    GenreSpec("Surf Rock", "Rock", "drums guitar organ cymbals", "", (150, 180), 2, register=1),
    GenreSpec("Punk", "Rock", "drums guitar voice cymbals", "bass", (165, 200), 2),
    GenreSpec("Psychedelic Rock", "Rock", "drums guitar synthesizer flute", "organ", (90, 120), 1),
    GenreSpec(
        "Blues Rock",
        "Rock",
        "guitar piano drums voice",
        "saxophone",
        (70, 95),
        1,
        swing=0.9,
        register=-1,
    ),
    GenreSpec("Jazz", None, "piano bass cymbals", "saxophone", (110, 160), 1, swing=0.9),
    GenreSpec(
        "Bebop",
        "Jazz",
        "saxophone trumpet bass cymbals",
        "piano",
        (190, 240),
        2,
        swing=0.9,
        register=1,
    ),
    GenreSpec(
        "Cool Jazz", "Jazz", "trumpet piano flute", "bass", (90, 120), 0, swing=0.9, register=-1
    ),
    GenreSpec("Vocal Jazz", "Jazz", "voice piano cymbals", "bass", (80, 110), 0, swing=0.9),
    GenreSpec(
        "Big Band", "Jazz", "trumpet trombone saxophone drums", "clarinet", (140, 180), 1, swing=0.9
    ),
    GenreSpec("Folk", None, "guitar voice", "violin", (90, 125), 1),
    GenreSpec("Chamber Folk", "Folk", "guitar voice cello", "flute", (65, 90), 0, meter=3),
    GenreSpec(
        "Celtic Folk",
        "Folk",
        "violin flute mandolin",
        "accordion",
        (110, 140),
        2,
        meter=3,
        register=1,
    ),
    GenreSpec(
        "Indie Folk", "Folk", "ukulele voice mallet_percussion", "guitar", (90, 120), 1, swing=0.5
    ),
    GenreSpec(
        "Sea Shanty", "Folk", "voice accordion", "violin", (95, 125), 1, meter=3, register=-1
    ),
    GenreSpec("Classical", None, "violin cello piano", "flute", (70, 110), 1),
    GenreSpec(
        "Chamber Music", "Classical", "violin cello clarinet", "piano", (80, 115), 1, meter=3
    ),
    GenreSpec("Baroque", "Classical", "organ violin flute", "cello", (95, 125), 2),
    GenreSpec("Wind Ensemble", "Classical", "flute clarinet trombone", "trumpet", (85, 115), 1),
    GenreSpec("Choral", "Classical", "voice organ cello", "", (60, 85), 0, register=-1),
    GenreSpec("Electronic", None, "synthesizer drums", "bass", (115, 135), 2),
    GenreSpec("Synthpop", "Electronic", "synthesizer drums voice", "guitar", (105, 125), 1),
    GenreSpec(
        "Techno", "Electronic", "synthesizer drums cymbals bass", "", (125, 145), 2, register=-1
    ),
    GenreSpec("Ambient", "Electronic", "synthesizer mallet_percussion", "piano", (60, 80), 0),
    GenreSpec(
        "Trip-Hop", "Electronic", "drums piano cello", "voice", (75, 95), 1, swing=0.5, register=-1
    ),
    GenreSpec("International", None, "accordion trumpet", "guitar", (100, 140), 1),
    GenreSpec(
        "Tango", "International", "accordion violin piano", "bass", (110, 130), 1, register=-1
    ),
    GenreSpec(
        "Mariachi", "International", "trumpet violin guitar", "voice", (120, 160), 1, meter=3
    ),
    GenreSpec("Polka", "International", "accordion clarinet trombone", "drums", (120, 150), 1),
    GenreSpec(
        "Island",
        "International",
        "ukulele guitar bass",
        "mallet_percussion",
        (85, 110),
        1,
        swing=0.5,
    ),
    GenreSpec("Soul-RnB", None, "voice organ bass", "drums", (80, 110), 1, swing=0.5),
    GenreSpec(
        "Gospel", "Soul-RnB", "voice organ piano drums", "", (70, 100), 1, swing=0.5, meter=3
    ),
    GenreSpec(
        "Funk", "Soul-RnB", "bass drums guitar saxophone", "trumpet", (95, 115), 2, swing=0.5
    ),
    GenreSpec("Classic Soul", "Soul-RnB", "voice bass drums trumpet", "organ", (90, 115), 1),
    GenreSpec(
        "Lounge", "Soul-RnB", "mallet_percussion flute organ", "bass", (80, 100), 0, swing=0.5
    ),
    GenreSpec("Country", None, "guitar bass banjo", "voice", (95, 130), 1),
    GenreSpec("Bluegrass", "Country", "banjo mandolin violin", "guitar", (140, 175), 2),
    GenreSpec("Honky Tonk", "Country", "piano violin bass voice", "", (105, 135), 1, swing=0.5),
    GenreSpec(
        "Country Waltz", "Country", "guitar violin accordion bass", "", (90, 120), 0, meter=3
    ),
    GenreSpec("Americana", "Country", "guitar banjo voice mandolin", "drums", (85, 110), 1),
    GenreSpec(
        "Western Swing",
        "Country",
        "violin guitar trombone cymbals",
        "piano",
        (140, 170),
        1,
        swing=0.9,
    ),
)
SPECS = {spec.title: spec for spec in GENRE_SPECS}
# FMA-like ids, table order
GENRE_IDS = {spec.title: index + 1 for index, spec in enumerate(GENRE_SPECS)}


def genre_profile(spec: GenreSpec) -> np.ndarray:
    """(20,) presence probability of each instrument (INSTRUMENTS order) in a track of the genre."""
    profile = np.full(len(INSTRUMENTS), BACKGROUND_P)
    profile[[INSTRUMENTS.index(name) for name in spec.optional.split()]] = OPTIONAL_P
    profile[[INSTRUMENTS.index(name) for name in spec.core.split()]] = CORE_P
    return profile


def genres_table(track_genres) -> pd.DataFrame:
    """FMA's genres.csv: genre_id, #tracks, parent (0 = root), title, top_level. #tracks counts the
    tracks whose labels or their parents include the genre (FMA's genres_all)."""
    counts = pd.Series(
        [
            t
            for labels in track_genres
            for t in {*labels, *(SPECS[lab].parent for lab in labels)}
            if t is not None
        ],
        dtype=object,
    ).value_counts()
    return pd.DataFrame(
        [
            {
                "genre_id": GENRE_IDS[s.title],
                "#tracks": int(counts.get(s.title, 0)),
                "parent": GENRE_IDS[s.parent] if s.parent else 0,
                "title": s.title,
                "top_level": GENRE_IDS[s.parent or s.title],
            }
            for s in GENRE_SPECS
        ]
    )


# -------------------------------------------------------------------- track plans: labels, traits
# and instruments
@dataclass(frozen=True)
class TrackPlan:
    track_id: str
    genres: tuple[str, ...]  # labels (titles), primary first
    present: np.ndarray  # (20,) bool: the instruments rendered in the audio
    arrangement: synth.Arrangement


def _label_sets(n_tracks: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """Balanced primary genres (each gets its share), in random order, then the extra labels."""
    tops = [s.title for s in GENRE_SPECS if s.parent is None]
    subs = [s.title for s in GENRE_SPECS if s.parent is not None]
    n_top = int(round(TOP_ONLY_FRACTION * n_tracks))
    primaries = [tops[i % len(tops)] for i in range(n_top)] + [
        subs[i % len(subs)] for i in range(n_tracks - n_top)
    ]
    primaries = [primaries[i] for i in rng.permutation(n_tracks)]
    add_parent, add_second = (
        rng.random(n_tracks) < ADD_PARENT_P,
        rng.random(n_tracks) < ADD_SECOND_P,
    )
    second_pick = rng.random(n_tracks)  # uniform among the sub-genres of the other top-level genres
    out = []
    for primary, parent_too, second_too, pick in zip(
        primaries, add_parent, add_second, second_pick, strict=True
    ):
        parent = SPECS[primary].parent
        labels = [primary]
        if parent is not None and parent_too:
            labels.append(parent)
        if parent is not None and second_too:
            others = [title for title in subs if SPECS[title].parent != parent]
            labels.append(others[int(pick * len(others))])
        out.append(tuple(labels))
    return out


def make_plans(n_tracks: int, seconds: float, seed: int = 0) -> list[TrackPlan]:
    """Deterministic track plans: same (n_tracks, seconds, seed) -> same plans.

    A track's instruments follow the mean profile of its sub-genres (or of its top-level genre
    alone) and its rhythm the traits of one of them; everything else comes from a generator that
    never sees the genre.
    """
    plans = []
    for index, labels in enumerate(_label_sets(n_tracks, np.random.default_rng([seed, 1]))):
        genre_rng = np.random.default_rng([seed, 2, index])  # everything the genre decides
        # everything drawn the same way for every genre
        free_rng = np.random.default_rng([seed, 5, index])
        leaves = [lab for lab in labels if SPECS[lab].parent is not None] or [labels[0]]
        profile = np.mean([genre_profile(SPECS[lab]) for lab in leaves], axis=0)
        spec = SPECS[leaves[int(genre_rng.integers(0, len(leaves)))]]
        present = genre_rng.random(len(profile)) < profile
        if present.sum() < MIN_INSTRUMENTS:  # top up with the genre's most likely instruments
            present[
                np.argsort(-profile + genre_rng.random(len(profile)) * 1e-3)[:MIN_INSTRUMENTS]
            ] = True
        names = tuple(name for name, on in zip(INSTRUMENTS, present, strict=True) if on)
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
        plans.append(TrackPlan(str(index + 1), labels, present, arrangement))
    return plans


def audio_relpath(track_id: str) -> str:
    """FMA's layout: audio/<first 3 digits>/<6-digit zero-padded id>.flac."""
    padded = f"{int(track_id):06d}"
    return f"{AUDIO_DIR}/{padded[:3]}/{padded}.flac"


def make_annotations(present: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crowd-style annotations of the rendered instruments, present: (n_tracks, K) bool.

    Returns y_true (n_tracks, K) float32: the fraction of raters who heard the instrument, exactly
    0.5 where not annotated, and y_mask (n_tracks, K) bool: annotated.
    """
    rng = np.random.default_rng([seed, 4])
    n, k = present.shape
    n_annotated = rng.integers(ANNOTATED_RANGE[0], ANNOTATED_RANGE[1] + 1, n)
    # weighted sampling without replacement (Gumbel top-k): present instruments are asked about more
    # often
    keys = np.log(np.where(present, PRESENT_WEIGHT, 1.0)) + rng.gumbel(size=(n, k))
    y_mask = np.argsort(np.argsort(-keys, axis=1), axis=1) < n_annotated[:, None]
    raters = rng.choice(np.array(RATERS), size=(n, 1))
    accuracy = rng.uniform(*RATER_ACCURACY, size=(n, 1))
    votes = rng.binomial(
        np.broadcast_to(raters, (n, k)), np.where(present, accuracy, 1.0 - accuracy)
    )
    return np.where(y_mask, votes / raters, 0.5).astype(np.float32), y_mask


# ------------------------------------------------------------------------------------------------
# writing the files
def _render_one(task: tuple[str, synth.Arrangement]) -> None:
    path, arrangement = task
    audio = synth.render_track(arrangement)
    atomic_write(path, lambda tmp: sf.write(tmp, audio, synth.SR, subtype="PCM_16", format="FLAC"))


def render_audio(plans: list[TrackPlan], out: Path, jobs: int = 1, progress: bool = True) -> dict:
    """Render every planned track whose FLAC is missing; returns {"rendered": n, "reused": n}.

    Worker processes fork while TensorFlow is not loaded (fast start); train.py may call us after
    loading it, and forking its thread pools can deadlock the children, so then they spawn.
    """
    todo = [(out / audio_relpath(p.track_id), p.arrangement) for p in plans]
    todo = [task for task in todo if not task[0].is_file()]
    with tqdm(total=len(todo), desc="demo audio", unit="track", disable=not progress) as bar:
        if jobs <= 1 or len(todo) < 2:
            for task in todo:
                _render_one(task)
                bar.update()
        else:
            fork = (
                "fork" in multiprocessing.get_all_start_methods()
                and "tensorflow" not in sys.modules
            )
            method = "fork" if fork else "spawn"
            with multiprocessing.get_context(method).Pool(min(jobs, len(todo))) as pool:
                for _ in pool.imap_unordered(_render_one, todo, chunksize=4):
                    bar.update()
    return {"rendered": len(todo), "reused": len(plans) - len(todo)}


def truth_table(plans: list[TrackPlan]) -> pd.DataFrame:
    """What was synthesized: labels (FMA-style id list and titles), rhythm traits, key, and
    instruments."""
    return pd.DataFrame(
        [
            {
                "track_id": p.track_id,
                "genres": "[" + ", ".join(str(GENRE_IDS[g]) for g in p.genres) + "]",
                "genre_titles": ";".join(p.genres),
                "tempo": round(p.arrangement.tempo, 3),
                "meter": p.arrangement.meter,
                "swing": p.arrangement.swing,
                "density": p.arrangement.density,
                "register": p.arrangement.register,
                "key": p.arrangement.key,
                "mode": p.arrangement.mode,
                "instruments": ";".join(p.arrangement.instruments),
            }
            for p in plans
        ]
    )


def write_metadata(out: Path, plans: list[TrackPlan], seed: int) -> dict:
    """tracks.csv, annotations.csv, genres.csv, demo_truth.csv, openmic/ and side_info/; returns
    facts for the summary. The side information is computed from the written OpenMIC files, by the
    same code as for FMA."""
    write_tracks(
        tracks_path(out),
        pd.DataFrame(
            {
                "track_id": [p.track_id for p in plans],
                "path": [audio_relpath(p.track_id) for p in plans],
            }
        ),
    )
    annotations = pd.DataFrame(
        [(p.track_id, g) for p in plans for g in p.genres], columns=["track_id", "label"]
    )
    write_annotations(annotations_path(out), annotations)
    atomic_write_text(
        out / GENRES_FILE, genres_table([p.genres for p in plans]).to_csv(index=False)
    )
    atomic_write_text(out / TRUTH_FILE, truth_table(plans).to_csv(index=False))
    y_true, y_mask = make_annotations(np.stack([p.present for p in plans]), seed)
    write_openmic(
        out / OPENMIC_DIR, [f"{int(p.track_id):06d}_0" for p in plans], y_true, y_mask, INSTRUMENTS
    )

    openmic = load_openmic(out / OPENMIC_DIR)
    track_ids = [track_id_from_sample_key(key) for key in openmic.sample_keys]
    annotations = read_annotations(annotations_path(out))
    dropped, kept = {}, {}
    for kind, flavour in INSTRUMENT_KINDS.items():
        kept[kind], vectors, dropped[kind] = instrument_side_info(
            track_ids, openmic.y_true, openmic.y_mask, annotations, flavour
        )
        write_side_info(side_info_path(out, kind), kept[kind], vectors)
    # the random baseline describes the same labels, in the same dimension as the instrument vectors
    # (paper: 40)
    labels = kept["instrument-count"]
    dim = 2 * len(openmic.instruments)
    write_side_info(
        side_info_path(out, RANDOM_KIND), labels, random_side_info(labels, dim, seed=seed)
    )
    return {
        "dropped_genres": dropped,
        "instruments": list(openmic.instruments),
        "side_info_dim": dim,
    }


# ------------------------------------------------------------------------------- the output folder
# and the build
def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _existing_params(out: Path) -> dict | None:
    """The corpus parameters in `out`: of a build in progress, else of a finished one, else None."""
    return _read_json(out / BUILD_MARKER) or (_read_json(summary_path(out)) or {}).get("demo")


def _is_finished(out: Path, params: dict) -> bool:
    needed = [tracks_path(out), annotations_path(out), mels_path(out), out / GENRES_FILE]
    needed += [side_info_path(out, kind) for kind in SIDE_INFO_KINDS]
    summary = _read_json(summary_path(out)) or {}
    return (
        summary.get("demo") == params
        and not (out / BUILD_MARKER).exists()
        and all(p.is_file() for p in needed)
    )


def _clean(out: Path) -> None:
    """Delete an earlier demo corpus in `out` (a folder marked as ours): the files this module
    writes (audio named as `audio_relpath` names it), then their folders when empty. Splits (made
    from the old annotations, maybe by the user) and anything else are left alone."""
    audio = list(out.glob(f"{AUDIO_DIR}/[0-9][0-9][0-9]/[0-9][0-9][0-9][0-9][0-9][0-9]*.flac"))
    files = [tracks_path(out), annotations_path(out), out / GENRES_FILE, out / TRUTH_FILE]
    files += [out / OPENMIC_DIR / NPZ_FILE, out / OPENMIC_DIR / CLASS_MAP_FILE]
    files += [side_info_path(out, kind) for kind in SIDE_INFO_KINDS]
    files += [mels_path(out), failures_path(mels_path(out)), summary_path(out)]
    for path in audio + files:
        path.unlink(missing_ok=True)
    folders = [*sorted({p.parent for p in audio}), out / AUDIO_DIR, out / OPENMIC_DIR]
    for folder in [*folders, side_info_dir(out)]:
        with contextlib.suppress(OSError):  # not empty: it holds someone else's files
            folder.rmdir()


def _describe(params: dict | None) -> str:
    return (
        ", ".join(f"{k} {params.get(k)}" for k in ("version", "seed", "tracks", "seconds"))
        if params
        else "unknown parameters"
    )


def _check_sizes(seed, tracks, seconds) -> dict:
    """The build's parameters (as recorded in summary.json), or DemoError naming the bad flag."""
    rules = [  # (holds, the message when it does not)
        (int(tracks) >= 1, f"--tracks {tracks}: need at least 1 track."),
        (
            0.5 <= float(seconds) <= 60.0,
            f"--seconds {seconds}: clip length must be between 0.5 and 60 seconds.",
        ),
        (int(seed) >= 0, f"--seed {seed}: must be a non-negative integer."),
    ]
    if broken := next((message for holds, message in rules if not holds), None):
        raise DemoError(broken)
    return {
        "version": DEMO_VERSION,
        "seed": int(seed),
        "tracks": int(tracks),
        "seconds": float(seconds),
    }


def build_demo(
    out=DEFAULT_OUT,
    seed: int = 0,
    tracks: int = DEFAULT_TRACKS,
    seconds: float = DEFAULT_SECONDS,
    jobs: int | None = None,
    progress: bool = True,
    force: bool = False,
    mels: bool = True,
) -> dict:
    """Build (or reuse, or resume) the demo corpus in `out`; returns the summary (also written to
    summary.json).

    mels=False skips the mel store (tests of the corpus alone); the corpus then stays unfinished.
    """
    out = resolved(out, "--out")
    params = _check_sizes(seed, tracks, seconds)
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    if not force and _is_finished(out, params):
        if progress:
            print(
                f"demo corpus in {out} is complete (seed {seed}, {tracks} tracks x {seconds:g} s); "
                "reusing it."
            )
        return _read_json(summary_path(out))
    claim_folder(
        out,
        OWNER,
        hint="An old demo corpus: delete it (`make clean-demo` for data/demo); else change --out.",
    )
    with output_lock(out, "demo build"):
        started = time.perf_counter()
        if (old := _existing_params(out)) != params and contents(out) and not force:
            raise DemoError(
                f"{out} holds a demo corpus of {_describe(old)}, not {_describe(params)}: rebuild "
                f"it with `python -m demo --out {out} --force ...` (deletes only the demo's own "
                "files; splits/ and other files stay), or choose another folder."
            )
        # what a killed build left: fileio.atomic_write's temporaries
        remove_temporaries(out, *out.glob(f"{AUDIO_DIR}/*"), side_info_dir(out), out / OPENMIC_DIR)
        state = "resume" if not force and old == params else "fresh"
        if state == "fresh":
            _clean(out)
        write_json(out / BUILD_MARKER, params)
        plans = make_plans(tracks, seconds, seed)
        rendered = render_audio(plans, out, jobs=jobs, progress=progress)
        extra = {
            "demo": params,
            **write_metadata(out, plans, seed),
            "genres_file": GENRES_FILE,
            "truth_file": TRUTH_FILE,
            "openmic_dir": OPENMIC_DIR,
        }
        if mels:  # build_store is itself resumable; a finished store of the same files is kept
            store = build_store(
                audio_dir=out,
                out=mels_path(out),
                tracks_csv=tracks_path(out),
                jobs=jobs,
                progress=progress,
            )
            extra["mels_store"] = {
                k: store[k] for k in ("stored", "failed", "frames", "mean", "std", "dtype")
            }
        summary = summarize(out, extra=extra, write=mels)
        if mels:
            (out / BUILD_MARKER).unlink()
    summary["build"] = {
        "state": state,
        **rendered,
        "seconds": round(time.perf_counter() - started, 1),
        "jobs": jobs,
    }
    return summary


def ensure_demo(dataset_dir, seed: int = 0, **size_options) -> Path:
    """The demo corpus folder for train.py, which never builds over existing data.

    A complete corpus is returned as it is, whatever its seed or size; an unfinished one is
    completed with its own parameters (a deleted mels.h5 is rebuilt, the audio kept); a missing or
    empty folder is built with `seed` and size_options (tracks, seconds, jobs) or the defaults.
    Anything else is refused untouched: DemoError (another corpus), OutputError (not ours).
    """
    dataset_dir = Path(dataset_dir).resolve()
    existing = _existing_params(dataset_dir)
    if existing and _is_finished(dataset_dir, existing):
        return dataset_dir
    if existing and existing.get("version") == DEMO_VERSION:
        seed = existing["seed"]
        size_options = {
            **size_options,
            "tracks": existing["tracks"],
            "seconds": existing["seconds"],
        }
    build_demo(dataset_dir, seed=seed, **size_options)
    return dataset_dir
