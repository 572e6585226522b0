"""Instrument synthesis and arrangement for the demo corpus (numpy/scipy only, no per-sample Python loops).

Twenty instruments named after the OpenMIC-2018 classes (same names, same column order), each with its own timbre
(spectrum), pitch range, envelope and musical role:

    accordion          reed tone, two detuned voices (musette beating), sustained chords       (comp)
    banjo              very bright Karplus-Strong pluck + head "twang", fast decay, 16th rolls (arp)
    bass               low plucked tone, root/fifth lines                                      (bass)
    cello              bowed string (saw + body resonances), vibrato, slow attack, low          (pad)
    clarinet           odd harmonics, smooth attack, no vibrato, mid register                   (lead)
    cymbals            crash (long bright noise) + ride (inharmonic ping)                       (cymbals)
    drums              kick / snare / closed and open hi-hat                                    (drums)
    flute              near-sine + breath noise, vibrato, high register                         (lead)
    guitar             Karplus-Strong plucked string (scipy.signal.lfilter), strummed chords     (strum)
    mallet_percussion  marimba-like inharmonic partials 1 : 3.9 : 9.5, fast decay, arpeggios     (arp)
    mandolin           bright double-course pluck, tremolo picking                              (tremolo)
    organ              additive drawbars incl. the 16' sub-octave, flat sustain, leslie wobble  (comp)
    piano              struck, stretched (inharmonic) partials, brightness decays              (comp)
    saxophone          rich harmonics with a 1.5 kHz formant, breath, late vibrato              (lead)
    synthesizer        detuned saw lead with a resonant filter envelope, 16th arpeggios         (arp)
    trombone           brass, low, swelling brightness                                          (pad)
    trumpet            brass, high, bright swell                                                (lead)
    ukulele            soft nylon Karplus-Strong, high re-entrant strums                        (strum)
    violin             bowed string, high, vibrato                                              (lead)
    voice              glottal source through vowel formants (a e i o u), vibrato               (lead)

Every note of an instrument is a cached sample that depends only on (instrument, pitch, variant), like a sampler
bank: rendering is deterministic and independent of the order in which tracks are rendered (and of the number of
worker processes). A track is an `Arrangement` (tempo, meter, swing, rhythmic density, register, key, chord
progression, instruments, per-part gains) rendered by `render_track`; every listed instrument plays through the whole
clip, so its presence is audible in any 3-s crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, lfilter

from preprocess.store import SAMPLE_RATE

SR = SAMPLE_RATE
NOTE_SECONDS = 2.0  # length of every cached note sample; longer notes are re-articulated
TABLE_SIZE = 4096  # single-cycle wavetable length
NYQUIST_GUARD = 0.45  # drop harmonics above 0.45 * SR (room for vibrato, no aliasing)
MASTER_RMS = 0.08  # track loudness target (about -22 dBFS), the same for every genre

INSTRUMENTS = (
    "accordion", "banjo", "bass", "cello", "clarinet", "cymbals", "drums", "flute", "guitar", "mallet_percussion",
    "mandolin", "organ", "piano", "saxophone", "synthesizer", "trombone", "trumpet", "ukulele", "violin", "voice",
)  # OpenMIC-2018 class-map order

# role, pitch range (MIDI) in which the instrument plays, release (s), mix level (linear, applied after each part
# is normalized to unit RMS; constant per instrument, never per genre).
ROLE = {
    "accordion": "comp", "banjo": "arp", "bass": "bass", "cello": "pad", "clarinet": "lead", "cymbals": "cymbals",
    "drums": "drums", "flute": "lead", "guitar": "strum", "mallet_percussion": "arp", "mandolin": "tremolo",
    "organ": "comp", "piano": "comp", "saxophone": "lead", "synthesizer": "arp", "trombone": "pad",
    "trumpet": "lead", "ukulele": "strum", "violin": "lead", "voice": "lead",
}
PITCH_RANGE = {
    "accordion": (53, 79), "banjo": (62, 86), "bass": (28, 50), "cello": (36, 62), "clarinet": (52, 79),
    "flute": (72, 96), "guitar": (40, 67), "mallet_percussion": (67, 96), "mandolin": (67, 91), "organ": (43, 72),
    "piano": (48, 79), "saxophone": (49, 72), "synthesizer": (60, 88), "trombone": (40, 62), "trumpet": (60, 82),
    "ukulele": (60, 76), "violin": (67, 93), "voice": (52, 74),
}
RELEASE = {
    "accordion": 0.06, "banjo": 0.05, "bass": 0.05, "cello": 0.15, "clarinet": 0.06, "cymbals": 0.3,
    "drums": 0.05, "flute": 0.08, "guitar": 0.08, "mallet_percussion": 0.1, "mandolin": 0.04, "organ": 0.03,
    "piano": 0.2, "saxophone": 0.06, "synthesizer": 0.05, "trombone": 0.08, "trumpet": 0.06, "ukulele": 0.05,
    "violin": 0.12, "voice": 0.1,
}
LEVEL = {name: 1.0 for name in INSTRUMENTS}
LEVEL.update({"cymbals": 0.55, "drums": 1.2, "bass": 1.1})

# Percussion "pitches": drum pieces and cymbal kinds.
KICK, SNARE, CLOSED_HAT, OPEN_HAT = 0, 1, 2, 3
CRASH, RIDE = 0, 1
N_VARIANTS = 3  # drum hits have 3 cached variants; the voice has 5 vowels
VOWELS = {  # formant frequencies (Hz) and relative gains of the vowels a e i o u
    0: ((730, 1090, 2440), (1.0, 0.5, 0.25)),
    1: ((530, 1840, 2480), (1.0, 0.45, 0.3)),
    2: ((300, 2250, 3000), (1.0, 0.35, 0.3)),
    3: ((570, 840, 2410), (1.0, 0.6, 0.15)),
    4: ((320, 870, 2240), (1.0, 0.35, 0.1)),
}

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as scale degrees (0 = tonic), one chord per bar; chosen at random, independent of genre.
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 3), (0, 5, 3, 4), (1, 4, 0, 5), (0, 3, 0, 4), (5, 3, 0, 4), (0, 6, 3, 4))


# ----------------------------------------------------------------------------------------------------------------
# Signal helpers
# ----------------------------------------------------------------------------------------------------------------
def midi_to_hz(midi) -> np.ndarray:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _time(seconds: float = NOTE_SECONDS) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def _rng(*key: int) -> np.random.Generator:
    """Deterministic generator for a note sample: seeded by integers only (never Python's salted str hash)."""
    return np.random.default_rng([7919, *[int(k) for k in key]])


def harmonic_table(amps: np.ndarray) -> np.ndarray:
    """One period (TABLE_SIZE samples) of sum_k amps[k-1] * sin(2 pi k phase), via an inverse real FFT."""
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    amps = np.asarray(amps, dtype=np.float64)[: TABLE_SIZE // 2 - 1]
    spectrum[1 : len(amps) + 1] = -0.5j * amps * TABLE_SIZE
    return np.fft.irfft(spectrum, n=TABLE_SIZE)


def band_limit(amps: np.ndarray, f0: float) -> np.ndarray:
    """Zero the harmonics k * f0 above the Nyquist guard (no aliasing, even with vibrato)."""
    amps = np.asarray(amps, dtype=np.float64).copy()
    k = np.arange(1, len(amps) + 1)
    amps[k * f0 > NYQUIST_GUARD * SR] = 0.0
    return amps


def oscillator(table: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Wavetable oscillator: phase = cumsum(freq) / SR, linear interpolation in the table. freq: (n,) Hz."""
    phase = np.cumsum(freq) / SR
    position = (phase - np.floor(phase)) * TABLE_SIZE
    index = position.astype(np.int64)
    frac = position - index
    return table[index % TABLE_SIZE] * (1.0 - frac) + table[(index + 1) % TABLE_SIZE] * frac


def vibrato(f0: float, t: np.ndarray, rate: float, cents: float, delay: float) -> np.ndarray:
    """Instantaneous frequency with a sinusoidal vibrato that fades in after `delay` seconds."""
    depth = np.clip((t - delay) / 0.3, 0.0, 1.0) * cents
    return f0 * 2.0 ** (depth * np.sin(2 * np.pi * rate * t) / 1200.0)


def attack_release(t: np.ndarray, attack: float) -> np.ndarray:
    """Raised-cosine attack from 0 to 1 over `attack` seconds, then flat."""
    ramp = np.clip(t / attack, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * ramp)


def resonance_weights(freqs: np.ndarray, centres, widths, gains) -> np.ndarray:
    """Sum of Lorentzian peaks: spectral envelope of formants / instrument bodies, evaluated at `freqs`."""
    freqs = np.asarray(freqs, dtype=np.float64)[:, None]
    centres, widths, gains = (np.asarray(v, dtype=np.float64)[None, :] for v in (centres, widths, gains))
    return (gains / (1.0 + ((freqs - centres) / widths) ** 2)).sum(axis=1)


def filtered_noise(rng: np.random.Generator, n: int, low: float | None, high: float | None) -> np.ndarray:
    """White noise through a 2nd-order Butterworth high-pass (low) and/or low-pass (high)."""
    noise = rng.standard_normal(n)
    if low is not None and high is not None:
        b, a = butter(2, [low / (SR / 2), high / (SR / 2)], btype="band")
    elif low is not None:
        b, a = butter(2, low / (SR / 2), btype="high")
    elif high is not None:
        b, a = butter(2, high / (SR / 2), btype="low")
    else:
        return noise
    return lfilter(b, a, noise)


def karplus_strong(f0: float, t60: float, brightness: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """Plucked string: a noise burst through a feedback comb with a one-zero low-pass in the loop (Karplus-Strong).

    Loop: z^-L * g * ((1 - s) + s z^-1) * allpass(C). The first-order allpass (C + z^-1)/(1 + C z^-1) supplies
    the fractional part of the period (the low-pass delays by s samples), so that the pitch is exact. The loss per
    period at f0 is set so that the fundamental decays by 60 dB in t60 seconds at every pitch (Jaffe & Smith's
    decay stretching): s = 1/2 (plain averaging) where that is not too much loss, a smaller s for high notes,
    whose many periods per second would otherwise kill them in a few milliseconds. Higher harmonics still decay
    faster (the string's brightness falls). The recursion is one scipy.signal.lfilter call (IIR of order L + 2).
    brightness in (0, 1]: one-pole low-pass of the excitation (1 = raw noise, bright pick; lower = soft nylon).
    """
    period = SR / f0
    target = 10.0 ** (-3.0 / (t60 * f0))  # loop gain per period at f0
    one_minus_cos = 1.0 - np.cos(2 * np.pi * f0 / SR)
    need = (1.0 - target**2) / (2.0 * one_minus_cos)  # s (1 - s) that gives |H(f0)| = target with g = 1
    if need >= 0.25:
        s, g = 0.5, target / np.sqrt(1.0 - 0.5 * one_minus_cos)
    else:
        s, g = 0.5 - np.sqrt(0.25 - need), 1.0
    length = int(np.floor(period - s - 0.1))
    frac = period - s - length  # in [0.1, 1.1): well-behaved allpass range
    c = (1.0 - frac) / (1.0 + frac)
    burst = rng.uniform(-1.0, 1.0, int(np.ceil(period)))
    burst = lfilter([brightness], [1.0, brightness - 1.0], burst)
    burst -= burst.mean()
    excitation = np.zeros(n)
    excitation[: len(burst)] = burst
    # denominator (1 + C z^-1) - g z^-L [(1-s) C + ((1-s) + s C) z^-1 + s z^-2]
    a = np.zeros(length + 3)
    a[0], a[1] = 1.0, c
    a[length] -= g * (1.0 - s) * c
    a[length + 1] -= g * ((1.0 - s) + s * c)
    a[length + 2] -= g * s
    return lfilter([1.0, c], a, excitation)


def normalize_peak(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return (x / peak if peak > 0 else x).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Note samples (one function per instrument family); all return float32 arrays of NOTE_SECONDS * SR samples
# ----------------------------------------------------------------------------------------------------------------
def _pluck(name: str, midi: int) -> np.ndarray:
    """guitar / ukulele / banjo / mandolin / bass: Karplus-Strong strings with per-instrument decay and pick."""
    f0 = float(midi_to_hz(midi))
    n = len(_time())
    rng = _rng(INSTRUMENTS.index(name), midi)
    if name == "guitar":
        y = karplus_strong(f0, t60=2.5, brightness=0.55, rng=rng, n=n)
    elif name == "ukulele":
        y = karplus_strong(f0, t60=0.9, brightness=0.25, rng=rng, n=n)
    elif name == "banjo":
        # bright pick, short ring, plus the drum-head "twang": a 2.5 kHz band of noise dying in 30 ms
        y = karplus_strong(f0, t60=0.55, brightness=1.0, rng=rng, n=n)
        t = _time()
        y = y / np.max(np.abs(y)) + 0.5 * filtered_noise(rng, n, 1800.0, 3500.0) * np.exp(-t / 0.03)
    elif name == "mandolin":
        # two courses tuned 6 cents apart: the beating is part of the mandolin sound
        detune = 2.0 ** (6.0 / 1200.0)
        y = karplus_strong(f0, 0.8, 0.9, rng, n) + karplus_strong(f0 * detune, 0.8, 0.9, rng, n)
    elif name == "bass":
        y = karplus_strong(f0, t60=1.8, brightness=0.3, rng=rng, n=n)
        t = _time()
        # reinforce the fundamental (the averaging filter alone makes low strings thin)
        y = y / np.max(np.abs(y)) + 0.8 * np.sin(2 * np.pi * f0 * t) * np.exp(-t / 0.6) * attack_release(t, 0.004)
    else:
        raise ValueError(f"{name!r} is not a plucked instrument")
    return normalize_peak(y)


def _bowed(name: str, midi: int) -> np.ndarray:
    """violin / cello: saw-like source shaped by body resonances, delayed vibrato, slow bowed attack, bow noise."""
    f0 = float(midi_to_hz(midi))
    t = _time()
    rng = _rng(INSTRUMENTS.index(name), midi)
    k = np.arange(1, 61)
    if name == "violin":
        body = resonance_weights(k * f0, (450, 1000, 2800), (150, 300, 600), (1.0, 0.6, 1.2))
        freq, attack = vibrato(f0, t, 5.8, 22.0, 0.15), 0.12
    else:
        body = resonance_weights(k * f0, (220, 600, 1500), (80, 200, 500), (1.0, 0.8, 0.3))
        freq, attack = vibrato(f0, t, 5.0, 18.0, 0.2), 0.18
    amps = band_limit(body / k, f0)
    tone = oscillator(harmonic_table(amps), freq)
    tone /= np.max(np.abs(tone))
    noise = filtered_noise(rng, len(t), 2000.0, 7000.0) * 0.04
    return normalize_peak((tone + noise) * attack_release(t, attack))


def _wind(name: str, midi: int) -> np.ndarray:
    """flute / clarinet / saxophone: harmonic spectra with breath noise and instrument-specific vibrato."""
    f0 = float(midi_to_hz(midi))
    t = _time()
    rng = _rng(INSTRUMENTS.index(name), midi)
    k = np.arange(1, 41)
    if name == "flute":
        amps = np.zeros(40)
        amps[:4] = (1.0, 0.25, 0.1, 0.04)
        freq, attack, breath = vibrato(f0, t, 5.0, 15.0, 0.1), 0.07, 0.12
        noise_band = (1500.0, 8000.0)
    elif name == "clarinet":
        amps = np.where(k % 2 == 1, 1.0 / k, 0.08 / k) * np.exp(-k * f0 / 4000.0)
        freq, attack, breath = np.full(len(t), f0), 0.04, 0.02
        noise_band = (1000.0, 5000.0)
    elif name == "saxophone":
        amps = k ** -0.7 * resonance_weights(k * f0, (600, 1500, 3000), (300, 400, 800), (0.6, 1.0, 0.35))
        freq, attack, breath = vibrato(f0, t, 4.5, 20.0, 0.35), 0.03, 0.05
        noise_band = (1500.0, 6000.0)
    else:
        raise ValueError(f"{name!r} is not a wind instrument")
    tone = oscillator(harmonic_table(band_limit(amps, f0)), freq)
    tone /= np.max(np.abs(tone))
    noise = filtered_noise(rng, len(t), *noise_band)
    noise /= np.max(np.abs(noise))
    return normalize_peak((tone + breath * noise) * attack_release(t, attack))


def _brass(name: str, midi: int) -> np.ndarray:
    """trumpet / trombone: rich harmonics whose brightness swells in during the attack (dark -> bright tables)."""
    f0 = float(midi_to_hz(midi))
    t = _time()
    k = np.arange(1, 41)
    if name == "trumpet":
        bright = k ** -0.5 * resonance_weights(k * f0, (1200, 2500), (600, 900), (1.0, 0.7))
        swell, attack, freq = 0.08, 0.04, vibrato(f0, t, 5.5, 8.0, 0.4)
    else:
        bright = k ** -0.7 * resonance_weights(k * f0, (500, 1200), (300, 600), (1.0, 0.6))
        swell, attack, freq = 0.15, 0.07, vibrato(f0, t, 5.0, 6.0, 0.5)
    dark = bright * np.exp(-(k - 1) / 2.5)
    blend = np.clip(t / swell, 0.0, 1.0)
    bright_tone = oscillator(harmonic_table(band_limit(bright, f0)), freq)
    dark_tone = oscillator(harmonic_table(band_limit(dark, f0)), freq)
    y = (dark_tone * (1 - blend) + bright_tone * blend) * attack_release(t, attack)
    return normalize_peak(y)


def _keyboard(name: str, midi: int) -> np.ndarray:
    """piano (struck, inharmonic, decaying), organ (drawbars, flat), accordion (detuned reeds, beating)."""
    f0 = float(midi_to_hz(midi))
    t = _time()
    rng = _rng(INSTRUMENTS.index(name), midi)
    if name == "piano":
        # stiff-string partials f_k = k f0 sqrt(1 + B k^2); higher partials decay faster (brightness falls)
        k = np.arange(1, 17, dtype=np.float64)
        fk = k * f0 * np.sqrt(1.0 + 4e-4 * k**2)
        keep = fk < NYQUIST_GUARD * SR
        k, fk = k[keep], fk[keep]
        tau = (2.2 - 1.4 * (midi - 36) / 60.0) / (1.0 + 0.45 * (k - 1))
        amps = k**-1.1
        decay = 0.65 * np.exp(-t[None, :] / (0.25 * tau[:, None])) + 0.35 * np.exp(-t[None, :] / tau[:, None])
        y = (amps[:, None] * decay * np.sin(2 * np.pi * fk[:, None] * t[None, :])).sum(axis=0)
        y /= np.max(np.abs(y))
        hammer = filtered_noise(rng, len(t), 200.0, 3000.0) * np.exp(-t / 0.008)
        y = y + 0.3 * hammer / np.max(np.abs(hammer))
        return normalize_peak(y * attack_release(t, 0.002))
    if name == "organ":
        # drawbars 16' 8' 4' 2 2/3' 2' 1 3/5' 1' as multiples of the 8' fundamental (sub-octave = 0.5)
        amps = np.zeros(16)
        amps[[0, 1, 2, 3, 5, 7]] = (1.0, 0.7, 0.55, 0.5, 0.35, 0.3)
        table = harmonic_table(band_limit(amps, f0))
        sub = 0.5 * np.sin(np.pi * f0 * t)
        tone = oscillator(table, np.full(len(t), f0)) + sub
        wobble = 1.0 + 0.15 * np.sin(2 * np.pi * 6.5 * t)  # rotating-speaker amplitude modulation
        return normalize_peak(tone * wobble * attack_release(t, 0.01))
    if name == "accordion":
        k = np.arange(1, 41)
        amps = k**-0.6 * resonance_weights(k * f0, (800, 2000), (400, 800), (0.7, 1.0))
        table = harmonic_table(band_limit(amps, f0))
        cents = 2.0 ** (9.0 / 1200.0)  # musette tuning: reeds 9 cents apart beat at a few Hz
        tone = oscillator(table, np.full(len(t), f0)) + oscillator(table, np.full(len(t), f0 * cents))
        return normalize_peak(tone * attack_release(t, 0.05))
    raise ValueError(f"{name!r} is not a keyboard instrument")


def _mallet(midi: int) -> np.ndarray:
    """mallet_percussion: marimba-like bar, partials at 1, 3.93 and 9.54 x f0 with fast decays, plus a click."""
    f0 = float(midi_to_hz(midi))
    t = _time()
    rng = _rng(INSTRUMENTS.index("mallet_percussion"), midi)
    ratios = np.array([1.0, 3.93, 9.54])
    amps = np.array([1.0, 0.4, 0.15])
    taus = np.array([0.6, 0.12, 0.04]) * (1.0 - 0.5 * (midi - 60) / 40.0)
    keep = ratios * f0 < NYQUIST_GUARD * SR
    y = (amps[keep, None] * np.exp(-t[None, :] / taus[keep, None]) * np.sin(2 * np.pi * ratios[keep, None] * f0 * t)).sum(0)
    click = filtered_noise(rng, len(t), 1000.0, 6000.0) * np.exp(-t / 0.003)
    return normalize_peak(y / np.max(np.abs(y)) + 0.3 * click / np.max(np.abs(click)))


def _synth(midi: int) -> np.ndarray:
    """synthesizer: two saws detuned by +-10 cents through a resonant low-pass whose cutoff falls after the attack.

    The filter is applied per harmonic (a 2-pole resonant response evaluated at k f0) to a bright and a dark table,
    cross-faded by the filter envelope: exact for a static filter, and cheap.
    """
    f0 = float(midi_to_hz(midi))
    t = _time()
    k = np.arange(1, 81)

    def lowpass(cutoff: float, q: float = 4.0) -> np.ndarray:
        ratio = k * f0 / cutoff
        return 1.0 / np.sqrt((1 - ratio**2) ** 2 + (ratio / q) ** 2)

    saw = 1.0 / k
    bright = harmonic_table(band_limit(saw * lowpass(4500.0), f0))
    dark = harmonic_table(band_limit(saw * lowpass(1400.0), f0))
    env = np.exp(-t / 0.12)
    detune = 2.0 ** (10.0 / 1200.0)
    y = np.zeros(len(t))
    for factor in (1.0 / detune, detune):
        freq = np.full(len(t), f0 * factor)
        y += oscillator(bright, freq) * env + oscillator(dark, freq) * (1 - env)
    return normalize_peak(y * attack_release(t, 0.005))


def _voice(midi: int, vowel: int) -> np.ndarray:
    """voice: glottal-pulse-like source (harmonics k^-1.2) through the three formants of a vowel, with vibrato."""
    f0 = float(midi_to_hz(midi))
    t = _time()
    rng = _rng(INSTRUMENTS.index("voice"), midi, vowel)
    centres, gains = VOWELS[vowel]
    k = np.arange(1, 61)
    amps = k**-1.2 * resonance_weights(k * f0, centres, (80.0, 100.0, 140.0), gains) + 0.02 * k**-1.2
    tone = oscillator(harmonic_table(band_limit(amps, f0)), vibrato(f0, t, 5.5, 30.0, 0.2))
    tone /= np.max(np.abs(tone))
    breath = filtered_noise(rng, len(t), 2500.0, 6000.0)
    return normalize_peak((tone + 0.03 * breath / np.max(np.abs(breath))) * attack_release(t, 0.08))


def _drum(piece: int, variant: int) -> np.ndarray:
    """drums: kick (falling sine + click), snare (band noise + 185 Hz body), closed / open hi-hat (high noise)."""
    t = _time()
    rng = _rng(INSTRUMENTS.index("drums"), piece, variant)
    n = len(t)
    if piece == KICK:
        freq = 48.0 + 110.0 * np.exp(-t / 0.035)
        y = np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t / 0.22)
        y += 0.3 * filtered_noise(rng, n, 1000.0, 5000.0) * np.exp(-t / 0.003)
    elif piece == SNARE:
        noise = filtered_noise(rng, n, 1500.0, 8000.0)
        y = 0.9 * noise / np.max(np.abs(noise)) * np.exp(-t / 0.11) + 0.6 * np.sin(2 * np.pi * 185.0 * t) * np.exp(-t / 0.06)
    elif piece in (CLOSED_HAT, OPEN_HAT):
        noise = filtered_noise(rng, n, 7000.0, None)
        y = noise * np.exp(-t / (0.03 if piece == CLOSED_HAT else 0.25))
    else:
        raise ValueError(f"unknown drum piece {piece}")
    return normalize_peak(y * attack_release(t, 0.001))


def _cymbal(kind: int, variant: int) -> np.ndarray:
    """cymbals: crash (long, broadband bright noise + dense inharmonic shimmer) or ride (pinged partials + wash)."""
    t = _time()
    rng = _rng(INSTRUMENTS.index("cymbals"), kind, variant)
    n = len(t)
    partials = rng.uniform(3000.0, 9000.0, 24 if kind == CRASH else 6)
    shimmer = np.sin(2 * np.pi * partials[:, None] * t[None, :] + rng.uniform(0, 2 * np.pi, (len(partials), 1))).sum(0)
    shimmer /= np.max(np.abs(shimmer))
    noise = filtered_noise(rng, n, 3500.0, None)
    noise /= np.max(np.abs(noise))
    if kind == CRASH:
        y = (noise + 0.4 * shimmer) * np.exp(-t / 1.0)
    elif kind == RIDE:
        y = 0.35 * noise * np.exp(-t / 0.5) + 0.8 * shimmer * np.exp(-t / 0.7)
    else:
        raise ValueError(f"unknown cymbal kind {kind}")
    return normalize_peak(y * attack_release(t, 0.001))


@lru_cache(maxsize=None)
def note_sample(name: str, midi: int, variant: int = 0) -> np.ndarray:
    """The cached (NOTE_SECONDS * SR,) float32 sample of one note; depends only on its arguments.

    midi is the pitch for pitched instruments, the piece for drums (KICK...OPEN_HAT) and the kind for cymbals
    (CRASH, RIDE); variant selects the vowel of the voice (0-4) and the hit variant of drums/cymbals (0-2).
    """
    if name in ("guitar", "ukulele", "banjo", "mandolin", "bass"):
        sample = _pluck(name, midi)
    elif name in ("violin", "cello"):
        sample = _bowed(name, midi)
    elif name in ("flute", "clarinet", "saxophone"):
        sample = _wind(name, midi)
    elif name in ("trumpet", "trombone"):
        sample = _brass(name, midi)
    elif name in ("piano", "organ", "accordion"):
        sample = _keyboard(name, midi)
    elif name == "mallet_percussion":
        sample = _mallet(midi)
    elif name == "synthesizer":
        sample = _synth(midi)
    elif name == "voice":
        sample = _voice(midi, variant)
    elif name == "drums":
        sample = _drum(midi, variant)
    elif name == "cymbals":
        sample = _cymbal(midi, variant)
    else:
        raise ValueError(f"unknown instrument {name!r}; known: {', '.join(INSTRUMENTS)}")
    sample.setflags(write=False)
    return sample


# ----------------------------------------------------------------------------------------------------------------
# Arrangement: notes of each part from tempo, meter, swing, density, register and harmony
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arrangement:
    """Everything audible about a track. Genre enters only through these traits (see demo/build.py).

    tempo: beats per minute; meter: beats per bar (3 or 4); swing in [0, 1] (off-beat eighths delayed by swing/6
    beat); density 0/1/2 (sparse/medium/dense rhythms); register -1/0/+1 (lower/middle/upper part of each melodic
    instrument's range); key 0-11 and mode "major"/"minor"; progression: scale degrees, one chord per bar;
    instruments: names (INSTRUMENTS); gains_db: per-part level offsets; seed: per-track randomness (melodies,
    velocities, variations); seconds: clip length; start_beat: where the clip starts inside the first bar.
    """

    tempo: float
    meter: int
    swing: float
    density: int
    register: int
    key: int
    mode: str
    progression: tuple[int, ...]
    instruments: tuple[str, ...]
    gains_db: tuple[float, ...]
    seed: tuple[int, ...]
    seconds: float
    start_beat: float = 0.0
    master_gain_db: float = 0.0


@dataclass
class Notes:
    """A part's notes: onsets and durations in seconds, MIDI pitch (or drum piece), velocity, sample variant."""

    onset: np.ndarray
    pitch: np.ndarray
    duration: np.ndarray
    velocity: np.ndarray
    variant: np.ndarray

    @classmethod
    def build(cls, onset, pitch, duration, velocity, variant=None) -> "Notes":
        onset = np.asarray(onset, dtype=np.float64)
        n = len(onset)
        return cls(
            onset=onset,
            pitch=np.broadcast_to(np.asarray(pitch, dtype=np.int64), (n,)).copy(),
            duration=np.broadcast_to(np.asarray(duration, dtype=np.float64), (n,)).copy(),
            velocity=np.broadcast_to(np.asarray(velocity, dtype=np.float64), (n,)).copy(),
            variant=np.zeros(n, dtype=np.int64) if variant is None else np.asarray(variant, dtype=np.int64),
        )


class Timeline:
    """Beat positions -> seconds for one track (tempo, swing) plus the harmony of each bar."""

    def __init__(self, arr: Arrangement):
        self.arr = arr
        self.beat = 60.0 / arr.tempo
        self.total_beats = arr.start_beat + arr.seconds / self.beat + 1.0
        self.n_bars = int(np.ceil(self.total_beats / arr.meter)) + 1
        self.scale = np.array(SCALES[arr.mode])

    def seconds(self, beats: np.ndarray) -> np.ndarray:
        """Swing warps each beat piecewise-linearly: 0 -> 0, 0.5 -> 0.5 + swing/6, 1 -> 1."""
        beats = np.asarray(beats, dtype=np.float64)
        whole = np.floor(beats)
        frac = beats - whole
        mid = 0.5 + self.arr.swing / 6.0
        warped = np.where(frac < 0.5, frac / 0.5 * mid, mid + (frac - 0.5) / 0.5 * (1.0 - mid))
        return (whole + warped - self.arr.start_beat) * self.beat

    def grid(self, step: float) -> np.ndarray:
        """Beat positions of a regular grid (step in beats) covering the clip."""
        return np.arange(0.0, self.n_bars * self.arr.meter, step)

    def chord_pcs(self, beats: np.ndarray) -> np.ndarray:
        """(n, 3) pitch classes of the triad sounding at each beat position (progression cycles every bar)."""
        bar = (np.asarray(beats) // self.arr.meter).astype(np.int64)
        degree = np.asarray(self.arr.progression)[bar % len(self.arr.progression)]
        steps = degree[:, None] + np.array([0, 2, 4])[None, :]
        return (self.arr.key + self.scale[steps % 7]) % 12

    def scale_pitches(self, low: int, high: int) -> np.ndarray:
        midi = np.arange(low, high + 1)
        return midi[np.isin((midi - self.arr.key) % 12, self.scale)]


def nearest_chord_tone(pitch: np.ndarray, pcs: np.ndarray) -> np.ndarray:
    """Move each pitch to the nearest MIDI note whose pitch class is in its row of pcs (n, 3); ties go down."""
    offsets = np.arange(-6, 7)
    candidates = pitch[:, None] + offsets[None, :]
    ok = (candidates[:, :, None] % 12 == pcs[:, None, :]).any(axis=2)
    cost = np.where(ok, np.abs(offsets)[None, :] + (offsets[None, :] > 0) * 0.1, 99.0)
    return candidates[np.arange(len(pitch)), np.argmin(cost, axis=1)]


def chord_voicing(pcs: np.ndarray, low: int, high: int) -> np.ndarray:
    """(n, m) chord voicings: every note in [low, high] whose pitch class is in the chord, padded with -1."""
    midi = np.arange(low, high + 1)
    member = (midi[None, :, None] % 12 == pcs[:, None, :]).any(axis=2)
    width = int(member.sum(axis=1).max())
    out = np.full((len(pcs), width), -1, dtype=np.int64)
    order = np.argsort(~member, axis=1, kind="stable")[:, :width]
    picked = np.take_along_axis(np.broadcast_to(midi, member.shape), order, axis=1)
    valid = np.take_along_axis(member, order, axis=1)
    out[valid] = picked[valid]
    return out


def register_window(name: str, register: int, span: int = 16) -> tuple[int, int]:
    """The pitch window of a melodic part: `span` semitones in the lower/middle/upper part of the range."""
    low, high = PITCH_RANGE[name]
    span = min(span, high - low)
    start = {-1: low, 0: low + (high - low - span) // 2, 1: high - span}[register]
    return start, start + span


def _velocities(rng: np.random.Generator, n: int, accent: np.ndarray | None = None) -> np.ndarray:
    vel = rng.uniform(0.75, 1.0, n)
    return vel if accent is None else np.where(accent, np.minimum(vel * 1.15, 1.0), vel * 0.9)


def melody_notes(tl: Timeline, name: str, rng: np.random.Generator, step_choices, long: bool = False) -> Notes:
    """A melodic line: rhythm from `step_choices` (beats), pitches a random walk on the scale, chord tones on beats."""
    low, high = register_window(name, tl.arr.register)
    pitches = tl.scale_pitches(low, high)
    total = tl.n_bars * tl.arr.meter
    steps = rng.choice(step_choices, size=int(total / min(step_choices)) + 2)
    starts = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
    keep = starts < total
    starts, steps = starts[keep], steps[keep]
    moves = rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3], size=len(starts))
    walk = np.cumsum(moves) + rng.integers(0, len(pitches))
    period = max(2 * (len(pitches) - 1), 1)
    walk = np.abs((walk % period + period) % period)
    walk = np.where(walk >= len(pitches), period - walk, walk)  # reflect at both ends of the window
    pitch = pitches[walk]
    on_beat = np.isclose(starts % 1.0, 0.0)
    snapped = nearest_chord_tone(pitch, tl.chord_pcs(starts))
    pitch = np.clip(np.where(on_beat, snapped, pitch), low, high)
    legato = 0.95 if long else 0.85
    return Notes.build(tl.seconds(starts), pitch, steps * tl.beat * legato, _velocities(rng, len(starts), on_beat))


def lead_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    steps = {0: [1.0, 2.0, 1.5], 1: [0.5, 1.0, 1.0, 1.5], 2: [0.5, 0.5, 0.25, 1.0]}[tl.arr.density]
    notes = melody_notes(tl, name, rng, steps)
    if name == "voice":
        notes.variant = rng.integers(0, len(VOWELS), len(notes.onset))
    return notes


def pad_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    """cello / trombone: long notes (half or whole bars) on chord tones in a low window."""
    step = {0: tl.arr.meter, 1: tl.arr.meter / 2 if tl.arr.meter == 4 else tl.arr.meter, 2: 1.0 if tl.arr.meter == 3 else 2.0}
    return melody_notes(tl, name, rng, [step[tl.arr.density]], long=True)


def bass_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    """Roots (and fifths) on the beat grid; density sets the step (half bar, beat, eighth)."""
    step = {0: 2.0 if tl.arr.meter == 4 else 3.0, 1: 1.0, 2: 0.5}[tl.arr.density]
    starts = tl.grid(step)
    pcs = tl.chord_pcs(starts)
    low, _ = PITCH_RANGE[name]
    use_fifth = rng.random(len(starts)) < 0.3
    pc = np.where(use_fifth, pcs[:, 2], pcs[:, 0])
    pitch = low + (pc - low) % 12 + 12 * (rng.random(len(starts)) < 0.25)
    on_bar = np.isclose(starts % tl.arr.meter, 0.0)
    return Notes.build(tl.seconds(starts), pitch, step * tl.beat * 0.9, _velocities(rng, len(starts), on_bar))


def comp_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    """Block chords: organ/accordion hold them (half bars), piano repeats them on the density grid."""
    low, _ = register_window(name, tl.arr.register, span=14)
    if name == "piano":
        step = {0: 2.0 if tl.arr.meter == 4 else 3.0, 1: 1.0, 2: 0.5}[tl.arr.density]
        legato = 0.9
    else:
        step = {0: tl.arr.meter, 1: 2.0 if tl.arr.meter == 4 else 3.0, 2: 1.0}[tl.arr.density]
        legato = 0.97
    starts = tl.grid(step)
    return _chords(tl, starts, step * legato, low, low + 14, rng, stagger=0.0)


def strum_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    """guitar / ukulele: strummed chords (strings 12 ms apart, alternating down/up) on the density grid."""
    low, high = PITCH_RANGE[name]
    step = {0: 1.0, 1: 0.5, 2: 0.5}[tl.arr.density]
    starts = tl.grid(step)
    if tl.arr.density == 2:  # dense: add syncopated sixteenth strums at random
        extra = tl.grid(0.25)
        extra = extra[(extra % 0.5 > 0) & (rng.random(len(extra)) < 0.4)]
        starts = np.sort(np.concatenate([starts, extra]))
    return _chords(tl, starts, step * 0.9, low, min(high, low + 19), rng, stagger=0.012)


def _chords(tl: Timeline, starts, duration, low, high, rng, stagger: float) -> Notes:
    voicing = chord_voicing(tl.chord_pcs(starts), low, high)  # (n_chords, m)
    m = voicing.shape[1]
    direction = np.where(np.arange(len(starts)) % 2 == 0, 1, -1)  # down- and up-strokes
    order = np.where(direction[:, None] > 0, np.arange(m)[None, :], (m - 1 - np.arange(m))[None, :])
    onset = tl.seconds(starts)[:, None] + stagger * order
    accent = np.isclose(starts % tl.arr.meter, 0.0)
    vel = np.repeat(_velocities(rng, len(starts), accent)[:, None], m, axis=1) / np.sqrt(max(m, 1))
    valid = voicing >= 0
    return Notes.build(onset[valid], voicing[valid], duration * tl.beat, vel[valid])


def arp_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    """banjo rolls, mallet and synthesizer arpeggios: chord tones cycling over ~1.5 octaves."""
    if name == "banjo":
        step = 0.25 if tl.arr.density > 0 else 0.5
    else:
        step = {0: 0.5, 1: 0.5, 2: 0.25}[tl.arr.density]
    low, high = register_window(name, tl.arr.register, span=18)
    starts = tl.grid(step)
    voicing = chord_voicing(tl.chord_pcs(starts), low, high)
    counts = (voicing >= 0).sum(axis=1)
    pattern = np.array([0, 1, 2, 3, 2, 1] if name != "banjo" else [0, 2, 1, 3, 0, 2, 1, 3])
    idx = pattern[np.arange(len(starts)) % len(pattern)] % counts
    pitch = voicing[np.arange(len(starts)), idx]
    accent = np.isclose(starts % 1.0, 0.0)
    return Notes.build(tl.seconds(starts), pitch, step * tl.beat * 0.9, _velocities(rng, len(starts), accent))


def tremolo_part(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    """mandolin: a slow melody played as rapid repeated picks (sixteenth-note tremolo at the track tempo)."""
    base = melody_notes(tl, name, rng, {0: [2.0, 1.0], 1: [1.0, 2.0], 2: [1.0, 0.5]}[tl.arr.density])
    pick = tl.beat / 4.0
    repeats = np.maximum(1, np.round(base.duration / pick).astype(np.int64))
    index = np.repeat(np.arange(len(base.onset)), repeats)
    within = np.arange(len(index)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    onset = base.onset[index] + within * pick
    vel = base.velocity[index] * np.where(within % 2 == 0, 1.0, 0.8)
    return Notes.build(onset, base.pitch[index], pick * 0.95, vel)


def drum_part(tl: Timeline, rng: np.random.Generator) -> Notes:
    """Kick / snare / hi-hat patterns by meter and density, with random extra kicks and open hats."""
    meter, density = tl.arr.meter, tl.arr.density
    bars = np.arange(tl.n_bars)[:, None] * meter
    if meter == 3:
        kick = bars + np.array([0.0])
        snare = bars + np.array([1.0, 2.0])
    else:
        kick = bars + (np.array([0.0, 2.0]) if density < 2 else np.array([0.0, 1.0, 2.0, 3.0]))
        snare = bars + np.array([1.0, 3.0])
    hat_step = {0: 1.0, 1: 0.5, 2: 0.25}[density]
    hats = tl.grid(hat_step)
    kick = kick.ravel()
    extra_kick = tl.grid(0.5)
    extra_kick = extra_kick[(extra_kick % 1.0 > 0) & (rng.random(len(extra_kick)) < 0.12)]
    starts = np.concatenate([kick, extra_kick, snare.ravel(), hats])
    piece = np.concatenate([
        np.full(len(kick) + len(extra_kick), KICK), np.full(snare.size, SNARE),
        np.where(rng.random(len(hats)) < 0.08, OPEN_HAT, CLOSED_HAT),
    ])
    vel = _velocities(rng, len(starts))
    vel[piece >= CLOSED_HAT] *= 0.55
    return Notes.build(tl.seconds(starts), piece, 0.5 * tl.beat, vel, rng.integers(0, N_VARIANTS, len(starts)))


def cymbal_part(tl: Timeline, rng: np.random.Generator) -> Notes:
    """A crash every two bars and a ride on the beat (sparse) or on eighths (medium/dense)."""
    crash = np.arange(0, tl.n_bars, 2) * tl.arr.meter
    ride = tl.grid(1.0 if tl.arr.density == 0 else 0.5)
    ride = ride[~np.isin(ride, crash)]
    starts = np.concatenate([crash, ride])
    kind = np.concatenate([np.full(len(crash), CRASH), np.full(len(ride), RIDE)])
    vel = _velocities(rng, len(starts)) * np.where(kind == CRASH, 1.0, 0.6)
    return Notes.build(tl.seconds(starts), kind, 1.6, vel, rng.integers(0, N_VARIANTS, len(starts)))


PART_BUILDERS = {"lead": lead_part, "pad": pad_part, "bass": bass_part, "comp": comp_part, "strum": strum_part,
                 "arp": arp_part, "tremolo": tremolo_part}


def part_notes(tl: Timeline, name: str, rng: np.random.Generator) -> Notes:
    role = ROLE[name]
    if role == "drums":
        return drum_part(tl, rng)
    if role == "cymbals":
        return cymbal_part(tl, rng)
    return PART_BUILDERS[role](tl, name, rng)


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
def render_part(name: str, notes: Notes, n_samples: int) -> np.ndarray:
    """Place cached note samples into a (n_samples,) buffer: note k sounds for duration[k] + release, gated.

    Notes longer than a cached sample are re-articulated (split into equal pieces, like a bow change or a
    re-struck chord), so that long sustained notes never leave a gap. One Python iteration per note (tens to a
    few hundred per part), each a vectorized slice add.
    """
    out = np.zeros(n_samples, dtype=np.float32)
    release = max(1, int(RELEASE[name] * SR))
    fade = np.linspace(1.0, 0.0, release, dtype=np.float32)
    longest = int(round(NOTE_SECONDS * SR)) - release
    onsets = np.round(notes.onset * SR).astype(np.int64)
    held = np.maximum(np.round(notes.duration * SR).astype(np.int64), 1)
    pieces = -(-held // longest)  # ceil division
    index = np.repeat(np.arange(len(onsets)), pieces)
    within = np.arange(len(index)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    piece_len = held[index] // pieces[index]
    onsets, held = onsets[index] + within * piece_len, piece_len
    for start, hold, pitch, vel, variant in zip(onsets, held, notes.pitch[index], notes.velocity[index],
                                                notes.variant[index]):
        sample = note_sample(name, int(pitch), int(variant))
        lo, hi = max(start, 0), min(start + hold + release, n_samples)
        if hi <= lo:
            continue
        segment = sample[lo - start : hi - start] * np.float32(vel)
        tail = np.arange(lo - start, hi - start) >= hold
        if tail.any():
            segment[tail] *= fade[np.arange(lo - start, hi - start)[tail] - hold]
        out[lo:hi] += segment
    return out


def render_parts(arr: Arrangement) -> dict[str, np.ndarray]:
    """Each instrument's part, normalized to unit RMS, before mixing: {name: (n_samples,) float32}."""
    tl = Timeline(arr)
    n_samples = int(round(arr.seconds * SR))
    parts = {}
    for name in arr.instruments:
        rng = np.random.default_rng([*arr.seed, 1 + INSTRUMENTS.index(name)])
        notes = part_notes(tl, name, rng)
        audio = render_part(name, notes, n_samples)
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        parts[name] = audio / rms if rms > 0 else audio
    return parts


def soft_clip(x: np.ndarray, knee: float = 0.8) -> np.ndarray:
    """Identity below |x| = knee, then a tanh curve that approaches 1.0: no hard clipping, peaks < 1."""
    mag = np.abs(x)
    over = mag > knee
    out = x.copy()
    out[over] = np.sign(x[over]) * (knee + (1 - knee) * np.tanh((mag[over] - knee) / (1 - knee)))
    return out


def render_track(arr: Arrangement) -> np.ndarray:
    """Mix the parts with LEVEL * gains_db, normalize to MASTER_RMS * master_gain_db, soft-clip. (n,) float32."""
    parts = render_parts(arr)
    n_samples = int(round(arr.seconds * SR))
    mix = np.zeros(n_samples, dtype=np.float64)
    for (name, audio), gain_db in zip(parts.items(), arr.gains_db):
        mix += LEVEL[name] * 10.0 ** (gain_db / 20.0) * audio
    rms = float(np.sqrt(np.mean(mix**2)))
    if rms > 0:
        mix *= MASTER_RMS * 10.0 ** (arr.master_gain_db / 20.0) / rms
    return soft_clip(mix).astype(np.float32)
