"""Synthesized instruments and arrangements for the demo corpus (numpy and scipy, no per-sample
Python loops).

Twenty instruments named after the OpenMIC-2018 classes (table VOICES), each with its own timbre,
range, envelope and role. A note is a cached sample that depends only on (instrument, pitch,
variant), like a sampler bank, so a track sounds the same whichever process renders it. Every
instrument of an `Arrangement` plays through the whole clip (`render_track`), so it is audible in
any 3-s crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np
from scipy.signal import butter, lfilter

from preprocess.frontend import SAMPLE_RATE as SR

NOTE_SECONDS = 2.0  # length of every cached note sample; longer notes are re-articulated
TABLE_SIZE = 4096  # single-cycle wavetable length
NYQUIST_GUARD = 0.45  # drop harmonics above 0.45 * SR (room for vibrato, no aliasing)
MASTER_RMS = 0.08  # track loudness target (about -22 dBFS), the same for every genre


class Voice(NamedTuple):
    sound: str  # its family of note samples (_SOUNDS)
    role: str  # what it plays in a track: the Score method that writes its notes
    pitch_range: tuple[int, int] | None  # MIDI notes it plays (None: percussion)
    release: float  # fade after a note ends, seconds
    # mix level of its part (normalized to unit RMS): per instrument, never per genre
    level: float = 1.0


VOICES = {  # OpenMIC-2018 class-map order
    # two reeds 9 cents apart (musette beating), chords
    "accordion": Voice("keyboard", "comp", (53, 79), 0.06),
    # very bright pluck + drum-head twang, 16th rolls
    "banjo": Voice("plucked", "arp", (62, 86), 0.05),
    # low pluck with a reinforced fundamental, root/fifth
    "bass": Voice("plucked", "bass", (28, 50), 0.05, 1.1),
    # saw through body resonances, vibrato, slow attack
    "cello": Voice("sustained", "pad", (36, 62), 0.15),
    "clarinet": Voice("sustained", "lead", (52, 79), 0.06),  # odd harmonics, no vibrato
    # crash (long bright noise), ride (inharmonic ping)
    "cymbals": Voice("percussion", "cymbals", None, 0.3, 0.55),
    "drums": Voice("percussion", "drums", None, 0.05, 1.2),  # kick, snare, closed and open hi-hat
    "flute": Voice("sustained", "lead", (72, 96), 0.08),  # near-sine + breath noise, vibrato, high
    "guitar": Voice("plucked", "strum", (40, 67), 0.08),  # Karplus-Strong string, strummed chords
    # marimba partials 1 : 3.9 : 9.5, arpeggios
    "mallet_percussion": Voice("percussion", "arp", (67, 96), 0.1),
    # bright double course, tremolo picking
    "mandolin": Voice("plucked", "tremolo", (67, 91), 0.04),
    # drawbars incl. the 16' sub-octave, leslie wobble
    "organ": Voice("keyboard", "comp", (43, 72), 0.03),
    # struck, stretched partials, brightness decays
    "piano": Voice("keyboard", "comp", (48, 79), 0.2),
    # rich harmonics, 1.5 kHz formant, late vibrato
    "saxophone": Voice("sustained", "lead", (49, 72), 0.06),
    # detuned saws, resonant filter envelope
    "synthesizer": Voice("keyboard", "arp", (60, 88), 0.05),
    "trombone": Voice("brass", "pad", (40, 62), 0.08),  # brass, low, swelling brightness
    "trumpet": Voice("brass", "lead", (60, 82), 0.06),  # brass, high, bright swell
    "ukulele": Voice("plucked", "strum", (60, 76), 0.05),  # soft nylon string, high strums
    "violin": Voice("sustained", "lead", (67, 93), 0.12),  # bowed string, high, vibrato
    # glottal source through vowel formants, vibrato
    "voice": Voice("sustained", "lead", (52, 74), 0.1),
}
INSTRUMENTS = tuple(VOICES)
# The "pitches" of drums and cymbals
KICK = 0
SNARE = 1
CLOSED_HAT = 2
OPEN_HAT = 3
CRASH = 0
RIDE = 1
N_VARIANTS = 3  # cached variants of each drum or cymbal hit
# formants (Hz), gains:
VOWELS = (
    ((730, 1090, 2440), (1.0, 0.5, 0.25)),
    ((530, 1840, 2480), (1.0, 0.45, 0.3)),
    # the voice's vowels
    ((300, 2250, 3000), (1.0, 0.35, 0.3)),
    ((570, 840, 2410), (1.0, 0.6, 0.15)),
    ((320, 870, 2240), (1.0, 0.35, 0.1)),
)  # a e i o u
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as scale degrees (0 = tonic), one chord per bar; chosen at random, independent
# of genre.
PROGRESSIONS = (
    (0, 4, 5, 3),
    (0, 3, 4, 3),
    (0, 5, 3, 4),
    (1, 4, 0, 5),
    (0, 3, 0, 4),
    (5, 3, 0, 4),
    (0, 6, 3, 4),
)

_T = np.arange(int(round(NOTE_SECONDS * SR))) / SR  # (n,) time axis of a note sample, seconds


# ----------------------------------------------------------------------------------------------
# signal helpers
def unit_peak(x: np.ndarray) -> np.ndarray:
    return x / np.max(np.abs(x))


def harmonic_tone(amps, f0: float, freq) -> np.ndarray:
    """(n,) sum_k amps[k-1] sin(2 pi k phase), phase = cumsum(freq) / SR (freq in Hz), read from a
    wavetable. Harmonics k * f0 above the Nyquist guard are dropped (no aliasing, even with
    vibrato)."""
    amps = np.where(
        np.arange(1, len(amps) + 1) * f0 > NYQUIST_GUARD * SR,
        0.0,
        np.asarray(amps, dtype=np.float64),
    )
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : len(amps) + 1] = -0.5j * amps * TABLE_SIZE
    table = np.fft.irfft(spectrum, n=TABLE_SIZE)  # one period
    phase = np.cumsum(np.broadcast_to(freq, _T.shape)) / SR
    position = (phase - np.floor(phase)) * TABLE_SIZE
    index = position.astype(np.int64)
    frac = position - index  # linear interpolation in the table
    return table[index % TABLE_SIZE] * (1.0 - frac) + table[(index + 1) % TABLE_SIZE] * frac


def vibrato(f0: float, rate: float, cents: float, delay: float) -> np.ndarray:
    """(n,) instantaneous frequency, a sinusoidal vibrato fading in after `delay` seconds."""
    depth = np.clip((_T - delay) / 0.3, 0.0, 1.0) * cents
    return f0 * 2.0 ** (depth * np.sin(2 * np.pi * rate * _T) / 1200.0)


def attack(seconds: float) -> np.ndarray:
    """(n,) raised-cosine rise from 0 to 1 over `seconds`, then flat."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(_T / seconds, 0.0, 1.0))


def resonances(freqs, centres, widths, gains) -> np.ndarray:
    """Sum of Lorentzian peaks (formants, instrument bodies) evaluated at `freqs`."""
    freqs = np.asarray(freqs, dtype=np.float64)[:, None]
    return (
        np.asarray(gains) / (1.0 + ((freqs - np.asarray(centres)) / np.asarray(widths)) ** 2)
    ).sum(axis=1)


def filtered_noise(rng: np.random.Generator, low: float, high: float | None = None) -> np.ndarray:
    """(n,) white noise through a 2nd-order Butterworth band-pass [low, high] Hz (a high-pass when
    high is None)."""
    band = low / (SR / 2) if high is None else [low / (SR / 2), high / (SR / 2)]
    return lfilter(
        *butter(2, band, btype="high" if high is None else "band"), rng.standard_normal(len(_T))
    )


def karplus_strong(
    f0: float, t60: float, brightness: float, rng: np.random.Generator
) -> np.ndarray:
    """Karplus-Strong string: a noise burst (low-passed: brightness 1 = bright pick, lower = soft
    nylon) through a feedback loop z^-L g ((1 - s) + s z^-1) allpass(C), as one lfilter call. The
    allpass supplies the fraction of the period (exact pitch); s and g make the fundamental decay by
    60 dB in t60 s at every pitch (Jaffe & Smith)."""
    period = SR / f0
    target = 10.0 ** (-3.0 / (t60 * f0))  # loop gain per period at f0
    one_minus_cos = 1.0 - np.cos(2 * np.pi * f0 / SR)
    # s (1 - s) that gives |H(f0)| = target with g = 1
    need = (1.0 - target**2) / (2.0 * one_minus_cos)
    s, g = (
        (0.5, target / np.sqrt(1.0 - 0.5 * one_minus_cos))
        if need >= 0.25
        else (0.5 - np.sqrt(0.25 - need), 1.0)
    )
    length = int(np.floor(period - s - 0.1))
    frac = period - s - length  # in [0.1, 1.1): the allpass's well-behaved range
    c = (1.0 - frac) / (1.0 + frac)
    burst = lfilter(
        [brightness], [1.0, brightness - 1.0], rng.uniform(-1.0, 1.0, int(np.ceil(period)))
    )
    excitation = np.zeros(len(_T))
    excitation[: len(burst)] = burst - burst.mean()
    a = np.zeros(length + 3)  # (1 + C z^-1) - g z^-L [(1-s) C + ((1-s) + s C) z^-1 + s z^-2]
    a[:2] = 1.0, c
    a[length:] -= g * np.array([(1.0 - s) * c, (1.0 - s) + s * c, s])
    return lfilter([1.0, c], a, excitation)


# --------------------------------------- families of note samples: (name, f0 Hz, midi, variant,
# rng) -> (n,) samples
def _plucked(name, f0, midi, variant, rng):
    t60, brightness = {
        "guitar": (2.5, 0.55),
        "ukulele": (0.9, 0.25),
        "banjo": (0.55, 1.0),
        "mandolin": (0.8, 0.9),
        "bass": (1.8, 0.3),
    }[name]
    y = karplus_strong(f0, t60, brightness, rng)
    if name == "banjo":  # the drum head's twang: a 2.5 kHz band of noise dying in 30 ms
        return unit_peak(y) + 0.5 * filtered_noise(rng, 1800.0, 3500.0) * np.exp(-_T / 0.03)
    if name == "mandolin":  # a second course 6 cents sharp: the beating is part of the sound
        return y + karplus_strong(f0 * 2.0 ** (6.0 / 1200.0), t60, brightness, rng)
    if name == "bass":  # reinforce the fundamental (the loop filter alone makes low strings thin)
        return unit_peak(y) + 0.8 * np.sin(2 * np.pi * f0 * _T) * np.exp(-_T / 0.6) * attack(0.004)
    return y


# The sustained voices' vibrato (rate Hz, depth cents, delay s), attack (s), and bow or breath noise
# (level, band Hz)
SUSTAINED = {
    "violin": ((5.8, 22, 0.15), 0.12, 0.12, (2000, 7000)),
    "cello": ((5.0, 18, 0.2), 0.18, 0.12, (2000, 7000)),
    "flute": ((5.0, 15, 0.1), 0.07, 0.12, (1500, 8000)),
    "clarinet": ((0, 0, 0), 0.04, 0.02, (1000, 5000)),
    "saxophone": ((4.5, 20, 0.35), 0.03, 0.05, (1500, 6000)),
    "voice": ((5.5, 30, 0.2), 0.08, 0.03, (2500, 6000)),
}
# The brass voices' bright harmonic table (resonance centres, widths, gains), vibrato and attack
BRASS = {
    "trumpet": (-0.5, ((1200, 2500), (600, 900), (1.0, 0.7)), (5.5, 8, 0.4), 0.04),
    "trombone": (-0.7, ((500, 1200), (300, 600), (1.0, 0.6)), (5.0, 6, 0.5), 0.07),
}


def _sustained(name, f0, midi, variant, rng):
    """Bowed strings, winds and the voice: harmonic amplitudes `amps`, then SUSTAINED's vibrato,
    soft attack and bow or breath noise."""
    k = np.arange(1, 61)
    if name == "violin":  # a saw through the body's resonances
        amps = resonances(k * f0, (450, 1000, 2800), (150, 300, 600), (1.0, 0.6, 1.2)) / k
    elif name == "cello":
        amps = resonances(k * f0, (220, 600, 1500), (80, 200, 500), (1.0, 0.8, 0.3)) / k
    elif name == "flute":  # near-sine
        amps = [1.0, 0.25, 0.1, 0.04]
    elif name == "clarinet":  # odd harmonics, no vibrato
        amps = np.where(k % 2 == 1, 1.0 / k, 0.08 / k) * np.exp(-k * f0 / 4000.0)
    elif name == "saxophone":  # a formant at 1.5 kHz, late vibrato
        amps = k**-0.7 * resonances(k * f0, (600, 1500, 3000), (300, 400, 800), (0.6, 1.0, 0.35))
    else:  # voice: a glottal-pulse-like source through the three formants of a vowel
        centres, gains = VOWELS[variant]
        amps = k**-1.2 * (resonances(k * f0, centres, (80, 100, 140), gains) + 0.02)
    vib, rise, noise, band = SUSTAINED[name]
    tone = unit_peak(harmonic_tone(amps, f0, vibrato(f0, *vib)))
    return (tone + noise * unit_peak(filtered_noise(rng, *band))) * attack(rise)


def _brass(name, f0, midi, variant, rng):
    """Brightness swells in during the attack: a dark table cross-faded into a bright one."""
    k = np.arange(1, 41)
    tilt, formants, vib, rise = BRASS[name]
    bright = k**tilt * resonances(k * f0, *formants)
    freq = vibrato(f0, *vib)
    blend = np.clip(_T / (2 * rise), 0.0, 1.0)
    dark = harmonic_tone(bright * np.exp(-(k - 1) / 2.5), f0, freq)
    return (dark * (1 - blend) + harmonic_tone(bright, f0, freq) * blend) * attack(rise)


def _keyboard(name, f0, midi, variant, rng):
    if name == "organ":  # drawbars 16' 8' 4' 2 2/3' 2' 1 3/5' 1' as multiples of the 8' fundamental
        tone = harmonic_tone([1.0, 0.7, 0.55, 0.5, 0, 0.35, 0, 0.3], f0, f0) + 0.5 * np.sin(
            np.pi * f0 * _T
        )
        # rotating-speaker wobble
        return tone * (1.0 + 0.15 * np.sin(2 * np.pi * 6.5 * _T)) * attack(0.01)
    if name == "accordion":  # musette tuning: reeds 9 cents apart beat at a few Hz
        amps = np.arange(1, 41) ** -0.6 * resonances(
            np.arange(1, 41) * f0, (800, 2000), (400, 800), (0.7, 1.0)
        )
        return (
            harmonic_tone(amps, f0, f0) + harmonic_tone(amps, f0, f0 * 2.0 ** (9.0 / 1200.0))
        ) * attack(0.05)
    # two saws +-10 cents through a resonant (Q 4) low-pass whose cutoff falls after
    if name == "synthesizer":
        k = np.arange(1, 81)  # the attack: the filter shapes a bright and a dark table, cross-faded
        bright, dark = (
            1 / k / np.sqrt((1 - (k * f0 / fc) ** 2) ** 2 + (k * f0 / fc / 4) ** 2)
            for fc in (4500, 1400)
        )
        env = np.exp(-_T / 0.12)
        saws = (f0 * 2.0 ** (-10.0 / 1200.0), f0 * 2.0 ** (10.0 / 1200.0))
        y = sum(
            harmonic_tone(bright, f0, f) * env + harmonic_tone(dark, f0, f) * (1 - env)
            for f in saws
        )
        return y * attack(0.005)
    # piano: stiff-string partials f_k = k f0 sqrt(1 + B k^2); higher partials decay faster
    # (brightness falls)
    k = np.arange(1, 17)[:, None]
    fk = k * f0 * np.sqrt(1.0 + 4e-4 * k**2)
    tau = (2.2 - 1.4 * (midi - 36) / 60.0) / (1.0 + 0.45 * (k - 1))
    decay = 0.65 * np.exp(-_T / (0.25 * tau)) + 0.35 * np.exp(-_T / tau)
    y = (k**-1.1 * decay * np.sin(2 * np.pi * fk * _T) * (fk < NYQUIST_GUARD * SR)).sum(axis=0)
    hammer = filtered_noise(rng, 200.0, 3000.0) * np.exp(-_T / 0.008)
    return (unit_peak(y) + 0.3 * unit_peak(hammer)) * attack(0.002)


def _percussion(name, f0, midi, variant, rng):
    """Drum pieces (midi = KICK...OPEN_HAT), cymbals (midi = CRASH or RIDE) and the mallet bar (midi
    = pitch)."""
    # a marimba-like bar: partials at 1, 3.93 and 9.54 x f0, fast decays, a click
    if name == "mallet_percussion":
        ratios, amps, taus = np.array([[1.0, 3.93, 9.54], [1.0, 0.4, 0.15], [0.6, 0.12, 0.04]])[
            :, :, None
        ]
        bar = (
            amps
            * np.exp(-_T / (taus * (1 - (midi - 60) / 80)))
            * np.sin(2 * np.pi * ratios * f0 * _T)
        )
        click = filtered_noise(rng, 1000.0, 6000.0) * np.exp(-_T / 0.003)
        return unit_peak((bar * (ratios * f0 < NYQUIST_GUARD * SR)).sum(axis=0)) + 0.3 * unit_peak(
            click
        )
    # crash: long broadband noise + dense inharmonic shimmer; ride: pinged partials + wash
    if name == "cymbals":
        partials = rng.uniform(3000.0, 9000.0, (24 if midi == CRASH else 6, 1))
        shimmer = unit_peak(
            np.sin(2 * np.pi * partials * _T + rng.uniform(0, 2 * np.pi, partials.shape)).sum(0)
        )
        noise = unit_peak(filtered_noise(rng, 3500.0))
        crash = (noise + 0.4 * shimmer) * np.exp(-_T / 1.0)
        y = (
            crash
            if midi == CRASH
            else 0.35 * noise * np.exp(-_T / 0.5) + 0.8 * shimmer * np.exp(-_T / 0.7)
        )
    elif midi == KICK:  # a falling sine and a click
        y = np.sin(2 * np.pi * np.cumsum(48.0 + 110.0 * np.exp(-_T / 0.035)) / SR) * np.exp(
            -_T / 0.22
        )
        y += 0.3 * filtered_noise(rng, 1000.0, 5000.0) * np.exp(-_T / 0.003)
    elif midi == SNARE:  # band noise and a 185 Hz body
        y = 0.9 * unit_peak(filtered_noise(rng, 1500.0, 8000.0)) * np.exp(-_T / 0.11)
        y += 0.6 * np.sin(2 * np.pi * 185.0 * _T) * np.exp(-_T / 0.06)
    else:  # closed or open hi-hat: high noise
        y = filtered_noise(rng, 7000.0) * np.exp(-_T / (0.03 if midi == CLOSED_HAT else 0.25))
    return y * attack(0.001)


_SOUNDS = dict(
    plucked=_plucked, sustained=_sustained, brass=_brass, keyboard=_keyboard, percussion=_percussion
)


@cache
def note_sample(name: str, midi: int, variant: int = 0) -> np.ndarray:
    """The cached (NOTE_SECONDS * SR,) float32 sample of one note, peak 1; depends only on its
    arguments. midi: the pitch, drum piece (KICK...) or cymbal kind (CRASH, RIDE); variant: the
    voice's vowel (0-4) or one of N_VARIANTS hits. The generator is seeded by integers only (never
    by Python's salted str hash)."""
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0)  # equal temperament, A4 = MIDI 69 = 440 Hz
    rng = np.random.default_rng([7919, INSTRUMENTS.index(name), midi, variant])
    sample = unit_peak(_SOUNDS[VOICES[name].sound](name, f0, midi, variant, rng)).astype(np.float32)
    sample.setflags(write=False)
    return sample


# ------------------------------------------------------------------------------ arrangement: the
# notes of each part
@dataclass(frozen=True)
class Arrangement:
    """Everything audible about a track. Genre enters only through tempo, meter, swing, density,
    register and instruments (demo/build.py); everything else is drawn the same way for every genre.
    """

    tempo: float  # beats per minute
    meter: int  # beats per bar, 3 or 4
    swing: float  # in [0, 1]: off-beat eighths are delayed by swing / 6 beat
    density: int  # 0 / 1 / 2: sparse / medium / dense rhythms
    register: int  # -1 / 0 / +1: lower / middle / upper part of each melodic instrument's range
    key: int  # 0-11
    mode: str  # "major" or "minor"
    progression: tuple[int, ...]  # scale degrees, one chord per bar
    instruments: tuple[str, ...]
    gains_db: tuple[float, ...]  # per-part level offsets
    seed: tuple[int, ...]  # per-track randomness (melodies, velocities)
    seconds: float  # clip length
    start_beat: float = 0.0  # where the clip starts inside the first bar
    master_gain_db: float = 0.0


class Notes(NamedTuple):
    """A part's notes: onset and duration (s), MIDI pitch (or drum piece), velocity, variant; arrays
    or scalars."""

    onset: np.ndarray
    pitch: np.ndarray
    duration: np.ndarray
    velocity: np.ndarray
    variant: np.ndarray | int = 0


class Score:
    """The notes of one arrangement: beat grid, swing and harmony, and one method per role
    (Voice.role)."""

    def __init__(self, arr: Arrangement):
        self.arr = arr
        self.density = arr.density
        self.beat = 60.0 / arr.tempo  # seconds
        self.n_bars = int(np.ceil((arr.start_beat + arr.seconds / self.beat + 1.0) / arr.meter)) + 1
        self.half_bar = 2.0 if arr.meter == 4 else 3.0  # a 3/4 bar is not halved
        self.scale = np.array(SCALES[arr.mode])

    @staticmethod
    def velocities(rng: np.random.Generator, n: int, accent=None) -> np.ndarray:
        vel = rng.uniform(0.75, 1.0, n)
        return vel if accent is None else np.where(accent, np.minimum(vel * 1.15, 1.0), vel * 0.9)

    def seconds(self, beats) -> np.ndarray:
        """Swing warps each beat piecewise-linearly: 0 -> 0, 0.5 -> 0.5 + swing/6, 1 -> 1."""
        whole, frac = np.divmod(np.asarray(beats, dtype=np.float64), 1.0)
        mid = 0.5 + self.arr.swing / 6.0
        warped = np.where(frac < 0.5, frac / 0.5 * mid, mid + (frac - 0.5) / 0.5 * (1.0 - mid))
        return (whole + warped - self.arr.start_beat) * self.beat

    def grid(self, step: float) -> np.ndarray:
        """Beat positions of a regular grid (step in beats) covering the clip."""
        return np.arange(0.0, self.n_bars * self.arr.meter, step)

    def chord_pcs(self, beats) -> np.ndarray:
        """(n, 3) pitch classes (root, third, fifth) of the triad at each beat (the progression
        cycles by bar)."""
        bar = (np.asarray(beats) // self.arr.meter).astype(np.int64)
        degree = np.asarray(self.arr.progression)[bar % len(self.arr.progression)]
        return (self.arr.key + self.scale[(degree[:, None] + np.array([0, 2, 4])) % 7]) % 12

    def chord_tones(self, beats, low: int, high: int) -> list[np.ndarray]:
        """The notes in [low, high] of the triad sounding at each beat."""
        midi = np.arange(low, high + 1)
        return [
            midi[member] for member in (midi % 12 == self.chord_pcs(beats)[:, :, None]).any(axis=1)
        ]

    def window(self, name: str, span: int = 16) -> tuple[int, int]:
        """The pitch window of a melodic part: `span` semitones in the lower/middle/upper part of
        its range."""
        low, high = VOICES[name].pitch_range
        span = min(span, high - low)
        start = {-1: low, 0: low + (high - low - span) // 2, 1: high - span}[self.arr.register]
        return start, start + span

    def melody(self, name, rng, step_choices, legato: float = 0.85) -> Notes:
        """Rhythm drawn from `step_choices` (beats); pitch a random walk on the scale, reflected at
        the edges."""
        low, high = self.window(name)
        midi = np.arange(low, high + 1)
        pitches = midi[np.isin((midi - self.arr.key) % 12, self.scale)]
        total = self.n_bars * self.arr.meter
        steps = rng.choice(step_choices, size=int(total / min(step_choices)) + 2)
        starts = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
        starts, steps = starts[starts < total], steps[starts < total]
        walk = np.cumsum(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3], len(starts))) + rng.integers(
            0, len(pitches)
        )
        period = 2 * (len(pitches) - 1)
        walk = np.minimum(walk % period, period - walk % period)
        return Notes(
            self.seconds(starts),
            pitches[walk],
            steps * self.beat * legato,
            self.velocities(rng, len(starts), np.isclose(starts % 1.0, 0.0)),
        )

    def lead(self, name, rng) -> Notes:
        notes = self.melody(
            name, rng, ([1.0, 2.0, 1.5], [0.5, 1.0, 1.0, 1.5], [0.5, 0.5, 0.25, 1.0])[self.density]
        )
        return (
            notes._replace(variant=rng.integers(0, len(VOWELS), len(notes.onset)))
            if name == "voice"
            else notes
        )

    def pad(self, name, rng) -> Notes:  # long notes: whole bars, half bars or beats
        return self.melody(
            name, rng, [(self.arr.meter, self.half_bar, 4.0 - self.half_bar)[self.density]], 0.95
        )

    def tremolo(self, name, rng) -> Notes:
        """A slow melody played as rapid repeated picks (sixteenths at the track tempo)."""
        tune = self.melody(name, rng, ([2.0, 1.0], [1.0, 2.0], [1.0, 0.5])[self.density])
        picks = self.seconds(self.grid(0.25))
        # the melody note at each pick
        playing = np.searchsorted(tune.onset, picks, side="right") - 1
        vel = tune.velocity[playing] * np.where(np.arange(len(picks)) % 2 == 0, 1.0, 0.8)
        return Notes(picks, tune.pitch[playing], self.beat / 4.0 * 0.95, vel)

    def bass(self, name, rng) -> Notes:
        """Roots (sometimes fifths, sometimes an octave up) every half bar, beat or eighth."""
        starts = self.grid(step := (self.half_bar, 1.0, 0.5)[self.density])
        pcs = self.chord_pcs(starts)
        low = VOICES[name].pitch_range[0]
        pc = np.where(rng.random(len(starts)) < 0.3, pcs[:, 2], pcs[:, 0])
        pitch = low + (pc - low) % 12 + 12 * (rng.random(len(starts)) < 0.25)
        on_bar = np.isclose(starts % self.arr.meter, 0.0)
        return Notes(
            self.seconds(starts),
            pitch,
            step * self.beat * 0.9,
            self.velocities(rng, len(starts), on_bar),
        )

    def comp(self, name, rng) -> Notes:
        """Block chords: organ / accordion hold them, the piano repeats them on the density grid."""
        low, _ = self.window(name, span=14)
        piano = name == "piano"
        step = ((self.half_bar, 1.0, 0.5) if piano else (self.arr.meter, self.half_bar, 1.0))[
            self.density
        ]
        return self.chords(
            self.grid(step), step * (0.9 if piano else 0.97), low, low + 14, rng, stagger=0.0
        )

    def strum(self, name, rng) -> Notes:
        """Strummed chords (strings 12 ms apart, alternating down and up) on beats, eighths or
        sixteenths."""
        low, high = VOICES[name].pitch_range
        step = (1.0, 0.5, 0.25)[self.density]
        return self.chords(
            self.grid(step), step * 0.9, low, min(high, low + 19), rng, stagger=0.012
        )

    def chords(self, starts, duration, low, high, rng, stagger: float) -> Notes:
        """Every chord tone in [low, high] at each start, `stagger` seconds apart (strokes down, up,
        down, ...)."""
        tones = self.chord_tones(starts, low, high)
        strokes = [np.arange(len(t))[:: 1 - 2 * (i % 2)] for i, t in enumerate(tones)]
        onset = np.concatenate(
            [
                self.seconds(beat) + stagger * order
                for beat, order in zip(starts, strokes, strict=True)
            ]
        )
        accented = self.velocities(rng, len(starts), np.isclose(starts % self.arr.meter, 0.0))
        vel = np.concatenate(
            [np.full(len(t), v / np.sqrt(len(t))) for t, v in zip(tones, accented, strict=True)]
        )
        return Notes(onset, np.concatenate(tones), duration * self.beat, vel)

    def arp(self, name, rng) -> Notes:
        """Banjo rolls, mallet and synthesizer arpeggios: chord tones cycling over ~1.5 octaves."""
        step = ((0.5, 0.25, 0.25) if name == "banjo" else (0.5, 0.5, 0.25))[self.density]
        pattern = [0, 2, 1, 3] if name == "banjo" else [0, 1, 2, 3, 2, 1]
        starts = self.grid(step)
        tones = self.chord_tones(starts, *self.window(name, span=18))
        pitch = [t[p % len(t)] for t, p in zip(tones, np.resize(pattern, len(starts)), strict=True)]
        return Notes(
            self.seconds(starts),
            pitch,
            step * self.beat * 0.9,
            self.velocities(rng, len(starts), np.isclose(starts % 1.0, 0.0)),
        )

    def drums(self, name, rng) -> Notes:
        """Kick / snare / hi-hat patterns by meter and density, with random extra kicks and open
        hats."""
        bars = np.arange(self.n_bars)[:, None] * self.arr.meter
        if self.arr.meter == 3:
            kick = bars + [0.0]
            snare = bars + [1.0, 2.0]
        else:
            kick = bars + ([0.0, 2.0] if self.density < 2 else [0.0, 1.0, 2.0, 3.0])
            snare = bars + [1.0, 3.0]
        offbeats = self.grid(0.5)[1::2]
        kick = np.concatenate([kick.ravel(), offbeats[rng.random(len(offbeats)) < 0.12]])
        hats = self.grid((1.0, 0.5, 0.25)[self.density])
        piece = np.concatenate(
            [
                np.full(len(kick), KICK),
                np.full(snare.size, SNARE),
                np.where(rng.random(len(hats)) < 0.08, OPEN_HAT, CLOSED_HAT),
            ]
        )
        vel = self.velocities(rng, len(piece)) * np.where(piece >= CLOSED_HAT, 0.55, 1.0)
        return Notes(
            self.seconds(np.concatenate([kick, snare.ravel(), hats])),
            piece,
            0.5 * self.beat,
            vel,
            rng.integers(0, N_VARIANTS, len(piece)),
        )

    def cymbals(self, name, rng) -> Notes:
        """A crash every two bars, a ride on the beat (sparse) or on eighths."""
        crash = np.arange(0, self.n_bars, 2) * self.arr.meter
        ride = self.grid(1.0 if self.density == 0 else 0.5)
        ride = ride[~np.isin(ride, crash)]
        kind = np.concatenate([np.full(len(crash), CRASH), np.full(len(ride), RIDE)])
        vel = self.velocities(rng, len(kind)) * np.where(kind == CRASH, 1.0, 0.6)
        variant = rng.integers(0, N_VARIANTS, len(kind))
        return Notes(self.seconds(np.concatenate([crash, ride])), kind, 1.6, vel, variant)


# --------------------------------------------------------------------------------------------------
# rendering
def render_part(name: str, notes: Notes, n_samples: int) -> np.ndarray:
    """(n_samples,) float32: each note's cached sample, held for its duration, then faded out over
    the release."""
    release = max(1, int(VOICES[name].release * SR))
    fade = np.linspace(1.0, 0.0, release, dtype=np.float32)
    margin = len(_T)  # room for notes that start before the clip or ring past its end
    out = np.zeros(margin + n_samples + margin, dtype=np.float32)
    onset, pitch, duration, velocity, variant = (a.tolist() for a in np.broadcast_arrays(*notes))
    held = np.maximum(np.round(np.asarray(duration) * SR).astype(np.int64), 1)
    # a note longer than a sample is re-articulated: no gap, like a bow change
    pieces = -(-held // (len(_T) - release))
    for start, hold, n, p, v, var in zip(
        onset, (held // pieces).tolist(), pieces.tolist(), pitch, velocity, variant, strict=True
    ):
        segment = note_sample(name, p, var)[: hold + release] * np.float32(v)
        segment[hold:] *= fade
        for begin in range(round(start * SR), round(start * SR) + n * hold, hold):
            if -margin < begin < n_samples:
                out[margin + begin : margin + begin + len(segment)] += segment
    return out[margin : margin + n_samples]


def render_track(arr: Arrangement) -> np.ndarray:
    """(n,) float32: each part at unit RMS, mixed with level * gains_db, normalized to MASTER_RMS *
    master gain; the rare peaks above 0.8 follow a tanh curve towards 1 (soft clipping, never hard).
    """
    score = Score(arr)
    mix = np.zeros(int(round(arr.seconds * SR)), dtype=np.float64)
    for name, gain_db in zip(arr.instruments, arr.gains_db, strict=True):
        rng = np.random.default_rng([*arr.seed, 1 + INSTRUMENTS.index(name)])
        part = render_part(name, getattr(score, VOICES[name].role)(name, rng), len(mix)).astype(
            np.float64
        )
        mix += VOICES[name].level * 10.0 ** (gain_db / 20.0) * part / np.sqrt(np.mean(part**2))
    mix *= MASTER_RMS * 10.0 ** (arr.master_gain_db / 20.0) / np.sqrt(np.mean(mix**2))
    peaks = np.abs(mix) > 0.8
    mix[peaks] = np.sign(mix[peaks]) * (0.8 + 0.2 * np.tanh((np.abs(mix[peaks]) - 0.8) / 0.2))
    return mix.astype(np.float32)
