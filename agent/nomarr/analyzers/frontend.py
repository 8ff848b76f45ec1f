"""The analyzers' shared front end: PCM blocks in, a small per-frame feature track out.

Every DSP descriptor (tempo, key, energy, onset rate, regions) needs a short-time spectrum; doing
one STFT per analyzer would multiply the cost, so the front end frames the audio once and keeps
only what the analyzers read, at a size that stays small for any length (per hour of audio about
2.7 MB: three float32 values per 16 ms frame, 36 chroma bins per second):

- per 16 ms frame (512-point FFT, hop 256 at 16 kHz: the models' own framing): spectral flux of 24 log-spaced bands in dB (low bands weighted up)
  (the onset strength that tempo and onset rate use), RMS level and spectral centroid;
- per 128 ms frame (4096-point FFT, hop 2048): a 36-bin pitch-class profile of spectral peaks with
  harmonic weighting, summed into one row per second, plus a tuning histogram, which the key
  analyzer folds into 12 pitch classes once the tuning is known.

It consumes blocks incrementally (``feed(samples, sr, t0)``); a jump in ``t0`` (the next window of
a sampling profile) starts a new :class:`Segment`, so analysis never bridges a gap in the audio.
Input at another rate than 16 kHz is resampled with soxr (the shared decode already gives 16 kHz).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import soxr

SR = 16000
HOP = 256  # 16 ms onset/energy frames (62.5 per second), as the models
N_FFT = 512
C_HOP = 2048  # 128 ms chroma frames
C_FFT = 4096
FPS = SR / HOP
N_BANDS = 24
CHROMA_BINS = 36  # three bins per semitone: the tuning is applied when folding to 12
TUNING_BINS = 100  # one-cent… rather 1/100 of a semitone per bin
DB_FLOOR = -80.0  # band levels below this (dB re full scale) count as silence in the flux
HARMONIC_WEIGHTS = (1.0, 0.5, 0.15, 0.25)  # a peak at h·f0 also votes for f0 (h = 1…4); h = 3
# (a fifth above) is kept weak: its vote lands a fifth below, on the subdominant
CHROMA_FMIN, CHROMA_FMAX = 80.0, 5000.0


@lru_cache(maxsize=2)
def _hann(n: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=2)
def _hann32(n: int) -> np.ndarray:
    return _hann(n).astype(np.float32)


@lru_cache(maxsize=1)
def _freqs32() -> np.ndarray:
    return np.fft.rfftfreq(N_FFT, 1.0 / SR).astype(np.float32)


@lru_cache(maxsize=1)
def _band_weights() -> np.ndarray:
    """Flux weight per band, 1.0 at 40 Hz falling to 0.3 at 7.6 kHz: kick, bass and snare carry
    the beat; hi-hats and cymbals mostly subdivide it."""
    return np.linspace(1.0, 0.3, N_BANDS).astype(np.float32)


@lru_cache(maxsize=1)
def _band_edges() -> tuple[np.ndarray, np.ndarray]:
    """Rectangular log-spaced bands from 40 Hz up as ``np.add.reduceat`` start bins (the last
    band runs to 8 kHz); bands narrower than a bin at the low end share one: the second array maps
    each band to its reduceat row."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    hz = np.geomspace(40.0, 7600.0, N_BANDS + 1)
    starts = np.searchsorted(freqs, hz[:-1])
    uniq, rows = np.unique(starts, return_inverse=True)
    return uniq, rows


def _frames(buf: np.ndarray, n_fft: int, hop: int) -> tuple[np.ndarray, int]:
    """Whole frames in ``buf`` as a strided [n, n_fft] view, and how many samples they consumed."""
    if buf.shape[0] < n_fft:
        return np.zeros((0, n_fft), dtype=buf.dtype), 0
    n = 1 + (buf.shape[0] - n_fft) // hop
    view = np.lib.stride_tricks.as_strided(
        buf, shape=(n, n_fft), strides=(buf.strides[0] * hop, buf.strides[0]), writeable=False
    )
    return view, n * hop


def chroma_rows(mag: np.ndarray, tuning_hist: np.ndarray) -> np.ndarray:
    """[n, 36] harmonic pitch-class profiles (each unit max) of [n, C_FFT//2+1] magnitude frames;
    adds the peaks' tuning evidence to ``tuning_hist``.

    Peaks: local maxima within 60 dB of the frame's strongest, between 80 Hz and 5 kHz, their
    frequency refined by parabolic interpolation of the log magnitude. Each peak votes for its own
    pitch class and, with decaying weight, for those of f/2, f/3, f/4 (it may be a harmonic of a
    lower note), spread linearly over the two nearest of the 36 bins.
    """
    n = mag.shape[0]
    out = np.zeros((n, CHROMA_BINS))
    bin_hz = SR / C_FFT
    lo, hi = int(CHROMA_FMIN / bin_hz), int(CHROMA_FMAX / bin_hz)
    m = mag[:, lo - 1 : hi + 2].astype(np.float64)
    top = m.max(axis=1, keepdims=True)
    c = m[:, 1:-1]
    is_peak = (c > m[:, :-2]) & (c >= m[:, 2:]) & (c > top * 1e-3) & (top > 1e-9)
    fr, idx = np.nonzero(is_peak)
    if idx.size == 0:
        return out
    la, lb, lc = (np.log(m[fr, idx + j] + 1e-12) for j in range(3))
    den = la - 2 * lb + lc
    delta = np.where(np.abs(den) > 1e-12, 0.5 * (la - lc) / np.where(den == 0, 1, den), 0.0)
    freq = (idx + lo + np.clip(delta, -0.5, 0.5)) * bin_hz
    amp = c[fr, idx]
    semis = 12.0 * np.log2(freq / 440.0) + 69.0
    frac = semis - np.round(semis)  # tuning evidence in [-0.5, 0.5]
    tb = np.clip(((frac + 0.5) * TUNING_BINS).astype(int), 0, TUNING_BINS - 1)
    tuning_hist += np.bincount(tb, weights=amp, minlength=TUNING_BINS)
    flat = np.zeros(n * CHROMA_BINS)
    for h, w in enumerate(HARMONIC_WEIGHTS, start=1):
        pos = (semis - 12.0 * np.log2(h)) * 3.0  # in 36-bin units
        base = np.floor(pos)
        f = pos - base
        b0 = base.astype(int) % CHROMA_BINS
        size = n * CHROMA_BINS
        flat += np.bincount(fr * CHROMA_BINS + b0, weights=w * amp * (1 - f), minlength=size)
        flat += np.bincount(
            fr * CHROMA_BINS + (b0 + 1) % CHROMA_BINS, weights=w * amp * f, minlength=size
        )
    out = flat.reshape(n, CHROMA_BINS)
    mx = out.max(axis=1, keepdims=True)
    return np.where(mx > 0, out / np.where(mx > 0, mx, 1), 0.0)


@dataclass
class Segment:
    """A stretch of contiguous audio: per-frame features with the time of its first frame."""

    t0: float
    n_samples: int = 0
    flux: list[np.ndarray] = field(default_factory=list)
    rms: list[np.ndarray] = field(default_factory=list)
    centroid: list[np.ndarray] = field(default_factory=list)
    chroma: list[np.ndarray] = field(default_factory=list)  # one [36] row per second

    @property
    def duration(self) -> float:
        """Seconds of audio in this segment."""
        return self.n_samples / SR

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(flux, rms, centroid, chroma[seconds, 36]) as arrays."""

        def cat(xs: list[np.ndarray], width: int | None = None) -> np.ndarray:
            if xs:
                return np.concatenate(xs)
            return np.zeros((0,) if width is None else (0, width), dtype=np.float32)

        return cat(self.flux), cat(self.rms), cat(self.centroid), cat(self.chroma, CHROMA_BINS)


class Frontend:
    """Frames mono PCM once for every descriptor; see the module docstring."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.tuning_hist = np.zeros(TUNING_BINS)
        self._next_t: float | None = None
        self._buf = np.zeros(0, dtype=np.float32)
        self._cbuf = np.zeros(0, dtype=np.float32)
        self._prev_db: np.ndarray | None = None
        self._rs: soxr.ResampleStream | None = None
        self._rs_sr = SR
        self._chroma_acc = np.zeros(CHROMA_BINS)
        self._chroma_n = 0

    # -- input ----------------------------------------------------------------------------------

    def feed(self, samples: np.ndarray, sr: int, t0: float) -> None:
        """Add a block of mono samples that starts at ``t0`` seconds into the file."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.shape[0] == 0:
            return
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        gap = self._next_t is None or abs(t0 - self._next_t) > 1.5 / sr or sr != self._rs_sr
        if gap:
            self._start_segment(t0, sr)
        self._next_t = t0 + x.shape[0] / sr
        if self._rs is not None:
            x = self._rs.resample_chunk(x)
        self._push(x)

    def _start_segment(self, t0: float, sr: int) -> None:
        self._flush_resampler()
        self._close_chroma()
        self.segments.append(Segment(t0))
        self._buf = np.zeros(0, dtype=np.float32)
        self._cbuf = np.zeros(0, dtype=np.float32)
        self._prev_db = None
        self._rs_sr = sr
        self._rs = soxr.ResampleStream(sr, SR, 1, dtype="float32") if sr != SR else None

    def _flush_resampler(self) -> None:
        if self._rs is not None and self.segments:
            tail = self._rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self._rs = None
            if tail.shape[0]:
                self._push(tail)

    def finish(self) -> list[Segment]:
        """Flush the last segment; returns every segment."""
        self._flush_resampler()
        self._close_chroma()
        self._next_t = None
        return self.segments

    # -- features -------------------------------------------------------------------------------

    def _push(self, x: np.ndarray) -> None:
        seg = self.segments[-1]
        seg.n_samples += x.shape[0]
        self._buf = np.concatenate([self._buf, x])
        frames, used = _frames(self._buf, N_FFT, HOP)
        if frames.shape[0]:
            self._onset_frames(seg, frames)
            self._buf = self._buf[used:]
        self._cbuf = np.concatenate([self._cbuf, x])
        cframes, cused = _frames(self._cbuf, C_FFT, C_HOP)
        if cframes.shape[0]:
            self._chroma_frames(seg, cframes)
            self._cbuf = self._cbuf[cused:]

    def _onset_frames(self, seg: Segment, frames: np.ndarray) -> None:
        spec = np.fft.rfft(frames * _hann32(N_FFT), axis=1)
        power = np.abs(spec) ** 2 * np.float32(4.0 / N_FFT**2)  # full-scale sine ≈ 1
        # bands are contiguous bin ranges: sums, not a matrix product (BLAS threads cost more
        # than this tiny product, and spin against the models' threads)
        edges, lows = _band_edges()
        bands = np.add.reduceat(power, edges, axis=1)[:, lows]
        db = 10.0 * np.log10(np.maximum(bands, np.float32(10 ** (DB_FLOOR / 10))))
        prev = self._prev_db if self._prev_db is not None else db[:1]
        d = np.diff(np.concatenate([prev, db]), axis=0)
        self._prev_db = db[-1:]
        seg.flux.append((np.maximum(d, 0.0) * _band_weights()).sum(axis=1).astype(np.float32))
        seg.rms.append(np.sqrt(np.mean(frames * frames, axis=1)).astype(np.float32))
        tot = power.sum(axis=1)
        cen = (power * _freqs32()).sum(axis=1) / np.maximum(tot, np.float32(1e-30))
        seg.centroid.append(np.where(tot > 1e-12, cen, 0.0).astype(np.float32))

    def _chroma_frames(self, seg: Segment, frames: np.ndarray) -> None:
        rows = chroma_rows(np.abs(np.fft.rfft(frames * _hann32(C_FFT), axis=1)), self.tuning_hist)
        for row in rows:
            self._chroma_acc += row
            self._chroma_n += 1
            if self._chroma_n * C_HOP >= SR:  # one chroma row per second of audio
                self._close_chroma()

    def _close_chroma(self) -> None:
        if self._chroma_n and self.segments:
            self.segments[-1].chroma.append(self._chroma_acc.astype(np.float32)[None, :])
        self._chroma_acc = np.zeros(CHROMA_BINS)
        self._chroma_n = 0

    # -- derived --------------------------------------------------------------------------------

    def tuning(self) -> float:
        """Estimated tuning offset in semitones (−0.5…0.5) from the peaks seen: the circular mean
        of their distance to the equal-tempered grid (A = 440 Hz ⇒ 0)."""
        h = self.tuning_hist
        if h.sum() <= 0:
            return 0.0
        ang = (np.arange(TUNING_BINS) + 0.5) / TUNING_BINS * 2 * np.pi - np.pi
        z = np.sum(h * np.exp(1j * ang))
        return float(np.angle(z) / (2 * np.pi))
