"""Energy, danceability, onset rate and dynamic range: documented DSP measures, not model outputs.

All are computed on the front end's 16 ms frames of the analysed audio, leaving out silent frames
(below the region analyzer's silence threshold):

- **onset rate** (onsets per second): peaks of the onset strength that are local maxima within
  ±50 ms and exceed the median of the surrounding 2 s by 1.5 times its median absolute deviation
  plus a floor, counted per second of non-silent audio.
- **dynamic range** (dB): the spread between the 95th and 10th percentiles of the 1 s RMS levels
  (a short-term level range, like EBU's loudness range but unweighted and on the mono mix).
- **energy** (0…1) = 0.5 · level + 0.25 · onset density + 0.25 · brightness, where level maps the
  mean RMS level from −30 dBFS (0) to −8 dBFS (1), onset density maps 0…6 onsets/s to 0…1 and
  brightness maps the median spectral centroid from 800 Hz (0) to 3 kHz (1). Loud, busy and
  bright is energetic; quiet, sparse and dark is not. The level term makes energy depend on
  mastering, as listeners' judgements of energy do.
- **danceability** (0…1) = 0.6 · pulse clarity + 0.4 · tempo suitability: the tempo analyzer's
  confidence (how much onset strength falls on a steady beat grid), and a log-normal weight on the
  tempo centred on 120 BPM with a standard deviation of half an octave (dancing is easiest near
  120 BPM; half- and double-time feel count through the tempo chosen). No tempo: 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nomarr.analyzers.frontend import FPS

ENERGY_WEIGHTS = (0.5, 0.25, 0.25)


@dataclass(frozen=True)
class DynamicsResult:
    """Energy, danceability, onset rate and dynamic range of the analysed audio."""

    energy: float | None
    danceability: float | None
    onset_rate: float | None
    dynamic_range: float | None
    rms_db: float | None
    centroid_hz: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""

        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {
            "energy": r(self.energy),
            "danceability": r(self.danceability),
            "onset_rate": r(self.onset_rate, 3),
            "dynamic_range_db": r(self.dynamic_range, 2),
            "rms_dbfs": r(self.rms_db, 2),
            "centroid_hz": r(self.centroid_hz, 1),
            "reason": self.reason,
        }


def count_onsets(flux: np.ndarray, voiced: np.ndarray) -> int:
    """Onsets in a flux curve (see the module docstring), only in non-silent frames."""
    n = flux.size
    if n < 5:
        return 0
    x = flux.astype(np.float64)
    w = int(0.05 * FPS)  # ±50 ms
    pad = np.pad(x, w, mode="constant", constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * w + 1)
    is_max = x >= win.max(axis=1)
    step = int(FPS)  # threshold from the surrounding 2 s, evaluated once a second
    thr = np.zeros(n)
    for s in range(0, n, step):
        ctx = x[max(0, s - step) : s + 2 * step]
        med = float(np.median(ctx))
        mad = float(np.median(np.abs(ctx - med)))
        thr[s : s + step] = med + 1.5 * mad + 3.0  # 3 dB summed rise: below that is noise
    return int(np.sum(is_max & (x > thr) & voiced))


def seconds_rms_db(rms: np.ndarray) -> np.ndarray:
    """RMS level of each whole second (dBFS, floor −120)."""
    step = int(FPS)
    m = rms.size // step
    if m == 0:
        return np.zeros(0)
    ms = (rms[: m * step].astype(np.float64) ** 2).reshape(m, step).mean(axis=1)
    return 10.0 * np.log10(np.maximum(ms, 1e-12))


def dynamics(
    flux: np.ndarray,
    rms: np.ndarray,
    centroid: np.ndarray,
    voiced: np.ndarray,
    bpm: float | None,
    tempo_confidence: float,
) -> DynamicsResult:
    """The measures above for one stretch of audio (frames of the front end)."""
    n_voiced = int(voiced.sum())
    if n_voiced < FPS:  # under a second of sound
        return DynamicsResult(None, None, None, None, None, None, reason="silent or too short")
    secs = n_voiced / FPS
    onset_rate = count_onsets(flux, voiced) / secs
    level = seconds_rms_db(np.where(voiced, rms, 0.0))
    level = level[level > -90.0]
    dr = float(np.percentile(level, 95) - np.percentile(level, 10)) if level.size >= 3 else None
    rms_db = float(10 * np.log10(max(float(np.mean(rms[voiced].astype(np.float64) ** 2)), 1e-12)))
    cen = float(np.median(centroid[voiced]))
    e_level = float(np.clip((rms_db + 30.0) / 22.0, 0, 1))
    e_onset = float(np.clip(onset_rate / 6.0, 0, 1))
    e_bright = float(np.clip((cen - 800.0) / 2200.0, 0, 1))
    wl, wo, wb = ENERGY_WEIGHTS
    energy = wl * e_level + wo * e_onset + wb * e_bright
    dance = 0.0
    if bpm:
        suit = float(np.exp(-0.5 * (np.log2(bpm / 120.0) / 0.5) ** 2))
        dance = 0.6 * tempo_confidence + 0.4 * suit
    return DynamicsResult(energy, dance, onset_rate, dr, rms_db, cen)
