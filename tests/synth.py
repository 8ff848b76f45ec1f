"""Synthetic music with known tempo and key, for the descriptor tests and bench.

Drum patterns (kick, snare, hi-hat) at a given tempo under a chord progression in a given key,
in one of several timbres. Deterministic per seed. The truth is the pattern's beat (quarter
notes: the kick/snare level) and the progression's key.
"""

from __future__ import annotations

import numpy as np

TIMBRES = ("organ", "saw", "pluck", "epiano", "sine")
PATTERNS = ("four", "rock", "halfhat")
MAJOR_PROGRESSIONS = ((0, 7, 9, 5), (0, 5, 7, 0), (0, 9, 5, 7))  # I-V-vi-IV, I-IV-V-I, I-vi-IV-V
MINOR_PROGRESSIONS = ((0, 5, 7, 0), (0, 8, 5, 7), (0, 5, 8, 7))  # i-iv-V-i, i-VI-iv-V, i-iv-VI-V


def _triad(root_pc: int, tonic: int, mode: str) -> tuple[int, int, int]:
    """Pitch classes of the diatonic triad on a scale degree (V is major in minor)."""
    deg = (root_pc - tonic) % 12
    if mode == "major":
        minor_degrees = {2, 4, 9}
        dim = {11}
    else:
        minor_degrees = {0, 5}
        dim = {2}
    third = 3 if deg in minor_degrees or deg in dim else 4
    fifth = 6 if deg in dim else 7
    return root_pc, (root_pc + third) % 12, (root_pc + fifth) % 12


def _note(f0: float, n: int, sr: int, timbre: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if timbre == "sine":
        y = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 2 * f0 * t)
        env = np.minimum(1.0, t / 0.01)
    else:
        spec = {
            "organ": [1.0, 0.7, 0.5, 0.35, 0.25, 0.2],
            "saw": [1.0 / k for k in range(1, 13)],
            "pluck": [1.0, 0.6, 0.4, 0.25, 0.15, 0.1, 0.07],
            "epiano": [1.0, 0.35, 0.12, 0.06],
        }[timbre]
        y = np.zeros(n)
        for k, a in enumerate(spec, start=1):
            if k * f0 < sr / 2 - 500:
                ph = rng.uniform(0, 2 * np.pi)
                decay = np.exp(-t * (1.5 * k if timbre in ("pluck", "epiano") else 0.0))
                y += a * decay * np.sin(2 * np.pi * k * f0 * t + ph)
        env = np.minimum(1.0, t / 0.005)
        if timbre in ("pluck", "epiano"):
            env = env * np.exp(-t * 2.0)
    rel = np.minimum(1.0, (n - np.arange(n)) / (0.02 * sr))
    return y * env * rel


def _drum(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    if kind == "kick":
        f = 50 + 70 * np.exp(-t * 30)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * 12)
    if kind == "snare":
        noise = rng.standard_normal(n)
        return 0.6 * noise * np.exp(-t * 25) + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t * 30)
    noise = np.diff(rng.standard_normal(n + 1))  # hat: bright noise
    return 0.35 * noise * np.exp(-t * 60)


def song(
    bpm: float,
    tonic: int,
    mode: str,
    *,
    timbre: str = "organ",
    pattern: str = "four",
    seconds: float = 30.0,
    sr: int = 44100,
    seed: int = 0,
    progression: int = 0,
) -> np.ndarray:
    """Stereo [2, n] float32 music at ``bpm`` in ``tonic`` (pitch class, C = 0) ``mode``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    beat = 60.0 / bpm
    n_beats = int(seconds / beat)
    drums = {k: _drum(k, sr, rng) for k in ("kick", "snare", "hat")}

    def put(sig: np.ndarray, at: float, gain: float) -> None:
        i = int(round(at * sr))
        if i >= n:
            return
        m = min(sig.size, n - i)
        out[i : i + m] += gain * sig[:m]

    for b in range(n_beats):
        t = b * beat
        pos = b % 4
        if pattern == "four" or pos in (0, 2):
            put(drums["kick"], t, 0.9)
        if pattern == "rock" and pos == 2:
            put(drums["kick"], t + beat / 2, 0.6)
        if pos in (1, 3):
            put(drums["snare"], t, 0.55)
        if pattern == "halfhat":
            put(drums["hat"], t, 0.35)
        else:
            put(drums["hat"], t, 0.3)
            put(drums["hat"], t + beat / 2, 0.2)
    progs = MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS
    prog = progs[progression % len(progs)]
    bar = 4 * beat
    harm = np.zeros(n)
    for i in range(int(np.ceil(seconds / bar))):
        root = (tonic + prog[i % 4]) % 12
        pcs = _triad(root, tonic, mode)
        t0 = i * bar
        strikes = [t0 + k * beat for k in range(4)] if timbre in ("pluck", "epiano") else [t0]
        length = beat if len(strikes) > 1 else bar
        for st in strikes:
            a = int(st * sr)
            m = min(int(length * sr), n - a)
            if m <= 0:
                continue
            for j, pc in enumerate(pcs):
                midi = 60 + (pc - 0) % 12 if j else 57 + (pc - 9) % 12  # triad around C4/A3
                harm[a : a + m] += 0.22 * _note(440 * 2 ** ((midi - 69) / 12), m, sr, timbre, rng)
            bass = 36 + (root % 12)
            harm[a : a + m] += 0.3 * _note(440 * 2 ** ((bass - 69) / 12), m, sr, timbre, rng)
    out += harm
    out /= max(1e-9, float(np.max(np.abs(out)))) / 0.7
    left = out
    right = np.roll(out, int(0.0004 * sr)) * 0.95
    return np.stack([left, right]).astype(np.float32)
