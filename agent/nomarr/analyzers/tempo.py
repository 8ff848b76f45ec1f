"""Tempo (BPM), its confidence, which metrical level was picked and why, and the beat phase.

Method, on the front end's onset strength (spectral flux of 24 log bands, 62.5 frames/s):

1. **Periodicity.** The onset strength, less its 1.5 s moving average and half-wave rectified, is
   autocorrelated in 8 s windows (hop 4 s) and the windows are summed (a tempogram averaged over
   the audio). Each lag's strength is read with parabolic interpolation.
2. **Metrical level (the octave).** Autocorrelation peaks come in families: the beat period P
   shows peaks at P, 2P, 3P… and the eighth-note period P/2 as well. The strongest peak in the beat
   range 50–210 BPM (periodicity × a log-normal prior centred on 120 BPM, 1.5 octaves wide) is
   moved to its slowest octave relative in range, then subdivided (÷2 or ÷3) while the inner
   points of its beat grid carry at least 35 % of the onset strength of the grid points: the beat
   is the fastest level whose off-beats are clearly weaker than its beats (see :func:`_choose`).
   The rule, the alternatives related to the winner by 2, 3, ½ or ⅓ with their periodicity and
   prior, and the off-beat share of every step are reported (``octave``), so a choice can be
   audited.
3. **Precision and phase.** The chosen period is refined on a 0.1 % grid (±3 %) together with the
   beat phase by maximising the mean onset strength at the beat positions of a constant-tempo grid
   over the first 3 minutes of the longest stretch of audio (a long mix drifts off any constant
   grid; its regions get tempi of their own). The grid gives the BPM and the first beat's time.
4. **Confidence.** Mean onset strength on the beat grid divided by the mean over all frames
   ("pulse clarity"), mapped to 0…1: 1.0 is a ratio ≥ 3 (a click track is about 20), 0 a ratio
   ≤ 1.25, which aperiodic noise reaches by chance. Below 0.05 there is no tempo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nomarr.analyzers.frontend import FPS, HOP, N_FFT, SR, Segment

MIN_BPM, MAX_BPM = (
    50.0,
    210.0,
)  # the beat (tactus) range; outside it a level is a subdivision or a bar
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.5
FASTER_SHARE = 0.35  # off-beats this strong (vs. the beats, medians above the background) mean
# the beat is twice as fast
ACF_WIN, ACF_HOP = 8.0, 4.0
MIN_SECONDS = 6.0  # shorter audio has too few beats to call a tempo
GRID_SECONDS = 180.0  # the beat grid is fitted on at most this much audio (see estimate_tempo)
MIN_CONFIDENCE = 0.05


@dataclass(frozen=True)
class TempoResult:
    """A tempo estimate (``bpm`` None: no tempo, with ``reason``)."""

    bpm: float | None
    confidence: float
    first_beat: float | None  # seconds into the file
    octave: dict[str, object] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "bpm": None if self.bpm is None else round(self.bpm, 2),
            "confidence": round(self.confidence, 4),
            "first_beat": None if self.first_beat is None else round(self.first_beat, 3),
            "octave": self.octave,
            "reason": self.reason,
        }


def onset_envelope(flux: np.ndarray) -> np.ndarray:
    """Flux less its 1.5 s moving average, rectified (what periodicity is measured on)."""
    x = flux.astype(np.float64)
    if x.size == 0:
        return x
    w = max(3, int(1.5 * FPS) | 1)
    k = np.ones(w) / w
    pad = np.pad(x, (w // 2, w // 2), mode="edge")
    return np.maximum(0.0, x - np.convolve(pad, k, mode="valid"))


def _acf(env: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation summed over 8 s windows (hop 4 s), lags 0…max_lag."""
    n = env.size
    win, hop = int(ACF_WIN * FPS), int(ACF_HOP * FPS)
    out = np.zeros(max_lag + 1)
    starts = [0] if n <= win else range(0, n - win + 1, hop)
    for s in starts:
        seg = env[s : s + win]
        seg = seg - seg.mean()
        nfft = 1 << int(np.ceil(np.log2(2 * seg.size)))
        f = np.fft.rfft(seg, nfft)
        ac = np.fft.irfft(f * np.conj(f), nfft)[: max_lag + 1]
        out[: ac.size] += ac
    return out


def _at(a: np.ndarray, lag: float) -> float:
    """Linearly interpolated value of ``a`` at a fractional index (0 outside)."""
    if lag < 0 or lag > a.size - 1:
        return 0.0
    i = int(lag)
    f = lag - i
    return float(a[i] * (1 - f) + (a[i + 1] if i + 1 < a.size else 0.0) * f)


def _prior(bpm: float) -> float:
    return float(np.exp(-0.5 * (np.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2))


def _candidates(acf: np.ndarray) -> list[tuple[float, float, float]]:
    """(lag in frames, harmonic score, prior-weighted score) for every ACF peak in range."""
    lo, hi = FPS * 60.0 / MAX_BPM, FPS * 60.0 / MIN_BPM
    out = []
    for i in range(max(2, int(lo)), min(acf.size - 1, int(hi) + 1)):
        if acf[i] > acf[i - 1] and acf[i] >= acf[i + 1] and acf[i] > 0:
            den = acf[i - 1] - 2 * acf[i] + acf[i + 1]
            lag = i + (0.5 * (acf[i - 1] - acf[i + 1]) / den if den < 0 else 0.0)
            h = max(0.0, _at(acf, lag))
            out.append((lag, h, h * _prior(60.0 * FPS / lag)))
    return out


def _grid_strength(sm: np.ndarray, period: float, phase: float) -> float:
    """Mean of the (smoothed) onset strength at ``phase + k·period``, each read as the max within
    ±1 frame (beats land between frames)."""
    pos = np.arange(phase, sm.size - 2, period)
    if pos.size == 0:
        return 0.0
    i = np.clip(np.rint(pos).astype(int), 1, sm.size - 2)
    return float(np.median(np.maximum(np.maximum(sm[i - 1], sm[i]), sm[i + 1])))


def _threshold(slow: float, fast: float) -> float:
    """Off-beat share needed to step from period ``slow`` to the faster ``fast``: ``FASTER_SHARE``,
    raised by the square of how much less likely the faster tempo is than the slower one under a
    one-octave log-normal prior around 120 BPM (never lowered). A smooth rule rather than a hard
    ceiling, so a copy played 10 % faster or slower makes the same choice: stepping from 100 to
    200 BPM needs a share of 0.56, from 85 to 170 the plain 0.35."""
    ps, pf = (
        float(np.exp(-0.5 * np.log2(60.0 * FPS / lag / PRIOR_BPM) ** 2)) for lag in (slow, fast)
    )
    return FASTER_SHARE * max(1.0, ps / max(pf, 1e-9)) ** 2


def _choose(
    cands: list[tuple[float, float, float]], env: np.ndarray
) -> tuple[float, float, dict[str, float]]:
    """The beat period: the slowest octave relative in range of the strongest candidate
    (periodicity × prior), then two (or three) times as fast while the half-way (third-way) points
    of its beat grid carry onsets at least ``FASTER_SHARE`` as strong as the grid points
    themselves (medians, above the median background; the weaker of the inner points counts, and
    the better-supported subdivision wins). A level whose off-beats are as busy as its beats is a
    half-bar or a bar, not the beat; a level whose off-beats are quiet is the beat. Returns (lag,
    periodicity, the off-beat share of each step tried, keyed "<bpm>/<subdivision>")."""
    lag, h, _ = max(cands, key=lambda c: c[2])
    while 60.0 * FPS / (2 * lag) >= MIN_BPM:  # start from the slowest level in range
        lag *= 2
        near = [c for c in cands if abs(c[0] / lag - 1) < 0.04]
        h = max((c[1] for c in near), default=0.0)
        if near:
            lag = max(near, key=lambda c: c[1])[0]
    sm = np.convolve(env, np.array([0.25, 0.5, 0.25]), mode="same")
    bg = float(np.median(sm))
    steps: dict[str, float] = {}
    while True:
        period, phase, _ = _refine(env, lag, span=0.01)
        on = _grid_strength(sm, period, phase) - bg
        best_m, best_share = 0, 0.0
        for m in (2, 3):  # duple, then triple subdivision of the current level
            if 60.0 * FPS / (lag / m) > MAX_BPM:
                continue
            inner = [_grid_strength(sm, period, phase + j * period / m) - bg for j in range(1, m)]
            share = min(inner) / on if on > 0 else 0.0
            steps[f"{60.0 * FPS / lag:.1f}/{m}"] = round(share, 3)
            if share >= _threshold(lag, lag / m) and share > best_share:
                best_m, best_share = m, share
        if not best_m:
            break
        lag /= best_m
        near = [c for c in cands if abs(c[0] / lag - 1) < 0.04]
        if near:
            lag, h, _ = max(near, key=lambda c: c[1])
    return lag, h, steps


def _refine(env: np.ndarray, lag: float, span: float = 0.03) -> tuple[float, float, float]:
    """(period in frames, phase in frames, mean strength on the grid) maximising the strength on
    a constant-tempo beat grid, for periods within ±3 % of ``lag`` on a 0.1 % grid."""
    sm = np.convolve(env, np.array([0.25, 0.5, 0.25]), mode="same")
    best = (lag, 0.0, -1.0)
    n = sm.size
    for p in lag * (1.0 + np.arange(-span, span + 0.0005, 0.001)):
        phases = np.arange(0.0, p, 0.5)
        k = np.arange(int((n - 1) // p) + 1)
        pos = phases[:, None] + p * k[None, :]
        valid = pos <= n - 1
        i = np.minimum(pos.astype(int), n - 2)
        f = pos - i
        vals = np.where(valid, sm[i] * (1 - f) + sm[i + 1] * f, 0.0)
        score = vals.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        j = int(np.argmax(score))
        if score[j] > best[2]:
            best = (float(p), float(phases[j]), float(score[j]))
    return best


def estimate_tempo(segments: list[Segment]) -> TempoResult:
    """Tempo of the audio in ``segments`` (windows of one file)."""
    envs = [(s, onset_envelope(s.arrays()[0])) for s in segments]
    seconds = sum(e.size for _, e in envs) / FPS
    if seconds < MIN_SECONDS:
        return TempoResult(None, 0.0, None, reason=f"too short for a tempo ({seconds:.1f} s)")
    if all(float(e.max(initial=0.0)) <= 1e-9 for _, e in envs):
        return TempoResult(None, 0.0, None, reason="no onsets (silence or a steady sound)")
    max_lag = int(FPS * 60.0 / MIN_BPM * 4) + 2
    acf = sum((_acf(e, max_lag) for _, e in envs if e.size >= FPS * 2), np.zeros(max_lag + 1))
    cands = _candidates(acf)
    if not cands or acf[0] <= 0:
        return TempoResult(None, 0.0, None, reason="no periodicity in the onsets")
    seg, env = max(envs, key=lambda se: se[1].size)
    # the grid is fitted on at most the first GRID_SECONDS of the longest stretch: a constant
    # tempo drifts off a long DJ mix (regions get their own), and the anchor that matters for a
    # beat grid is the start
    start = int(np.argmax(env > 0)) if np.any(env > 0) else 0
    env = env[start : start + int(GRID_SECONDS * FPS)]
    t_start = seg.t0 + start / FPS
    lag, h, steps = _choose(cands, env)
    period, phase, on_grid = _refine(env, lag)
    ratio = on_grid / max(float(env.mean()), 1e-12)
    conf = float(np.clip((ratio - 1.25) / (3.0 - 1.25), 0.0, 1.0))
    bpm = 60.0 * FPS / period
    octave = _octave_report(cands, lag, h)
    octave["offbeat_share"] = steps
    if conf < MIN_CONFIDENCE:
        return TempoResult(
            None, conf, None, octave, reason=f"no steady pulse (pulse clarity {ratio:.2f})"
        )
    centre = (N_FFT / 2) / SR  # a frame's time is its window's centre
    t_phase = t_start + phase / FPS + centre - 0.5 * HOP / SR  # flux at frame i compares i-1 → i
    beat = 60.0 / bpm
    first = t_phase - np.floor(t_phase / beat) * beat
    return TempoResult(bpm, conf, float(first), octave)


def _octave_report(
    cands: list[tuple[float, float, float]], lag: float, h: float
) -> dict[str, object]:
    """The chosen level and its octave/triple relatives with their scores: why this BPM."""
    rel = []
    for c_lag, c_h, _ in cands:
        r = c_lag / lag
        for name, target in (("double", 0.5), ("half", 2.0), ("triple", 1 / 3), ("third", 3.0)):
            if abs(r / target - 1.0) < 0.04:
                rel.append(
                    {
                        "relation": name,
                        "bpm": round(60.0 * FPS / c_lag, 2),
                        "periodicity": round(c_h / max(h, 1e-12), 3),
                        "prior": round(_prior(60.0 * FPS / c_lag), 3),
                    }
                )
    rel.sort(key=lambda d: str(d["relation"]))
    return {
        "rule": f"strongest periodicity x log-normal prior (centre {PRIOR_BPM:.0f} BPM, sd "
        f"{PRIOR_OCTAVES} octaves), then twice as fast while the off-beats carry >= "
        f"{FASTER_SHARE} of the beats' onset strength",
        "prior": round(_prior(60.0 * FPS / lag), 3),
        "alternatives": rel,
    }
