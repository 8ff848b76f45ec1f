"""Loudness per ITU-R BS.1770-4 / EBU R128, true peak, loudness range and ReplayGain 2.0.

A PCM consumer of the *native* decoded audio (every channel at the file's own rate, before the
models' mono downmix and 16 kHz resample): loudness is defined on the channels as they are, and a
mono average of a wide stereo mix would read up to 3 dB low.

- **K-weighting**: the standard's two biquads (high shelf +4 dB around 1.7 kHz, high-pass at
  38 Hz), designed for the file's sample rate from the analogue parameters the 48 kHz
  coefficients of BS.1770 correspond to. Only the K-weighted *mean square* of each 100 ms
  sub-block is needed, so it is computed in the frequency domain: one FFT per sub-block and
  channel, the power spectrum weighted by the cascade's exact |H(f)|² (Parseval). That is
  circular rather than linear filtering within each 100 ms; the filters' impulse responses decay
  within a few milliseconds, so the energy that wraps around equals, on average, the energy a
  linear filter would carry across the boundary (measured: bench/bench_descriptors.py against
  FFmpeg's ebur128 and pyloudnorm). numpy has no recursive filter, and a Python loop per sample
  would cost more than the models.
- **Gating** (BS.1770-4): mean squares per 100 ms, 400 ms blocks overlapping by 75 %, absolute gate
  at −70 LUFS, relative gate 10 LU below the absolute-gated mean; channel weights 1.0 (L, R, C),
  1.41 (surrounds), LFE left out.
- **Loudness range** (EBU Tech 3342): 3 s short-term loudness every 100 ms, gates −70 LUFS and
  −20 LU, the spread between its 10th and 95th percentiles.
- **True peak** (BS.1770-4 Annex 2): 4× oversampling by a 64-tap polyphase windowed-sinc
  interpolator evaluated around the sampled peaks, the maximum absolute value, in dBTP. Only
  local maxima of |x| within 6 dB of the true peak so far are interpolated around: inter-sample
  overshoot of real audio is far below that, and a band-limited signal peaks next to its sampled
  maxima.
- **ReplayGain 2.0**: track gain = −18 LUFS − integrated loudness; peak = the true peak (linear).
  Opus (RFC 7845) gets ``R128_TRACK_GAIN``: (−23 LUFS − integrated) in Q7.8 fixed point.

Memory: the per-100 ms mean squares, 10 floats per second per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ABS_GATE = -70.0
REL_GATE = -10.0
LRA_REL_GATE = -20.0
RG2_REFERENCE = -18.0
R128_REFERENCE = -23.0
TP_MARGIN_DB = 6.0
TP_TAPS = 16  # per phase: a 64-tap 4x interpolator
_SURROUND = {4: 1.41, 5: 1.41}  # FL FR FC LFE BL BR: indices of the surrounds in the usual order


@dataclass(frozen=True)
class LoudnessResult:
    """What the meter measured (``integrated`` None: nothing gated in, with ``reason``)."""

    integrated: float | None  # LUFS
    lra: float | None  # LU
    true_peak: float | None  # dBTP
    sample_peak: float | None  # dBFS
    seconds: float
    reason: str | None = None

    @property
    def rg_gain(self) -> float | None:
        """ReplayGain 2.0 track gain in dB (reference −18 LUFS)."""
        return None if self.integrated is None else RG2_REFERENCE - self.integrated

    @property
    def rg_peak(self) -> float | None:
        """ReplayGain track peak, linear (the true peak)."""
        return None if self.true_peak is None else 10 ** (self.true_peak / 20.0)

    @property
    def r128_gain(self) -> int | None:
        """Opus ``R128_TRACK_GAIN``: Q7.8 gain to −23 LUFS, clamped to a signed 16-bit value."""
        if self.integrated is None:
            return None
        return max(-32768, min(32767, round((R128_REFERENCE - self.integrated) * 256)))

    def to_dict(self) -> dict[str, object]:
        """JSON form (rounded as tags and players use them)."""

        def r(x: float | None, n: int = 2) -> float | None:
            return None if x is None else round(x, n)

        return {
            "integrated_lufs": r(self.integrated),
            "lra_lu": r(self.lra),
            "true_peak_dbtp": r(self.true_peak),
            "sample_peak_dbfs": r(self.sample_peak),
            "replaygain_track_gain_db": r(self.rg_gain),
            "replaygain_track_peak": r(self.rg_peak, 6),
            "r128_track_gain": self.r128_gain,
            "reason": self.reason,
        }


def _biquads(sr: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting stages (b, a) for a sample rate."""
    out = []
    # stage 1: high shelf
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    out.append(
        (
            np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0,
            np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]),
        )
    )
    # stage 2: RLB high-pass
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    out.append(
        (
            np.array([1.0, -2.0, 1.0]),
            np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]),
        )
    )
    return out


@lru_cache(maxsize=16)
def _power_weights(sr: int, n: int) -> np.ndarray:
    """|H(f)|² of the K-weighting cascade at the rfft bins of an n-point frame, times the
    one-sided spectrum's factor 2 (DC and Nyquist once), so that
    ``sum(|X|² · w) / n²`` is the filtered frame's mean square."""
    z = np.exp(-1j * 2 * np.pi * np.fft.rfftfreq(n))
    h2 = np.ones(z.size)
    for b, a in _biquads(sr):
        h = (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
        h2 *= np.abs(h) ** 2
    h2[1:] *= 2.0
    if n % 2 == 0:
        h2[-1] /= 2.0
    return h2


@lru_cache(maxsize=1)
def _interpolator() -> np.ndarray:
    """[TP_TAPS, 3] taps of the phases ¼, ½, ¾ of a 4× interpolator: a sinc cut at the original
    Nyquist frequency under a Kaiser window (β = 7), each phase normalised to unit DC gain."""
    n = np.arange(TP_TAPS)
    out = np.zeros((TP_TAPS, 3))
    for j, frac in enumerate((0.25, 0.5, 0.75)):
        t = n - (TP_TAPS // 2 - 1) - frac  # distance of each input sample from the output point
        h = (
            np.sinc(t)
            * np.kaiser(2 * TP_TAPS + 1, 7.0)[
                np.clip(np.rint(2 * t + TP_TAPS).astype(int), 0, 2 * TP_TAPS)
            ]
        )
        out[:, j] = h / h.sum()
    return out[::-1].astype(np.float32)


class LoudnessMeter:
    """BS.1770-4 meter fed native multichannel blocks: ``feed(samples[ch, n], sr, t0)``."""

    def __init__(self) -> None:
        self.sr: int | None = None
        self.channels = 0
        self._pending: np.ndarray | None = None  # samples of the unfinished sub-block
        self._sub: list[np.ndarray] = []  # per-100 ms K-weighted mean squares [ch]
        self._pos = 0  # samples metered (whole sub-blocks)
        self._sub_end = 0
        self._tp = 0.0
        self._sp = 0.0
        self._tp_carry: np.ndarray | None = None
        self.error: str | None = None

    def feed(self, samples: np.ndarray, sr: int, t0: float = 0.0) -> None:
        """Add a block of [channels, n] float samples (a 1-d block is mono)."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] == 0 or self.error:
            return
        if self.sr is None:
            self.sr, self.channels = int(sr), x.shape[0]
            self._sub_end = self._boundary(1)
        elif sr != self.sr or x.shape[0] != self.channels:
            self.error = "sample rate or channel count changed mid-stream"
            return
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        self._true_peak(x)
        self._mean_squares(x)

    def _boundary(self, k: int) -> int:
        """Sample index where the k-th 100 ms sub-block ends (exact for any rate)."""
        assert self.sr is not None
        return (k * self.sr) // 10

    def _mean_squares(self, x: np.ndarray) -> None:
        """K-weighted mean square of every whole 100 ms sub-block, by Parseval: one FFT of the
        sub-block, its power spectrum weighted by the filters' exact |H(f)|² (see the module
        docstring for why this is the filter)."""
        buf = x if self._pending is None else np.concatenate([self._pending, x], axis=1)
        i = 0
        sr = self.sr or 0
        if sr % 10 == 0:  # equal sub-blocks: one batched FFT for the whole block
            n = sr // 10
            k = (buf.shape[1] - i) // n
            if k:
                parts = buf[:, : k * n].reshape(buf.shape[0], k, n)
                spec = np.fft.rfft(parts, axis=2)
                p = spec.real**2 + spec.imag**2
                ms = (p * _power_weights(sr, n)).sum(axis=2) / (n * n)  # [ch, k]
                self._sub.extend(ms.T.astype(np.float64))
                i = k * n
                self._pos += k * n
                self._sub_end = self._boundary(len(self._sub) + 1)
        while True:  # rates whose 100 ms is not a whole number of samples
            n = self._sub_end - self._pos
            if buf.shape[1] - i < n:
                break
            spec = np.fft.rfft(buf[:, i : i + n], axis=1)
            p = spec.real**2 + spec.imag**2
            self._sub.append((p * _power_weights(sr, n)).sum(axis=1) / (n * n))
            i += n
            self._pos += n
            self._sub_end = self._boundary(len(self._sub) + 1)
        self._pending = buf[:, i:]

    def _true_peak(self, x: np.ndarray) -> None:
        """Track the sample peak, and the 4× oversampled peak of blocks that could raise it."""
        assert self.sr is not None
        ctx = 64
        buf = x if self._tp_carry is None else np.concatenate([self._tp_carry, x], axis=1)
        sp = float(np.max(np.abs(x)))
        self._sp = max(self._sp, sp)
        start = 0 if self._tp_carry is None else ctx
        self._tp_carry = buf[:, max(0, buf.shape[1] - 2 * ctx) :]
        end = buf.shape[1] - ctx
        if end <= start:
            return
        if (
            20 * math.log10(max(float(np.max(np.abs(buf))), 1e-12))
            < 20 * math.log10(max(self._tp, 1e-12)) - TP_MARGIN_DB
        ):
            return
        self._tp = max(self._tp, self._oversampled_peak(buf, start, end))

    def _oversampled_peak(self, buf: np.ndarray, start: int, end: int) -> float:
        """Max |x| of ``buf[:, start:end]`` interpolated 4×: the samples themselves, and the three
        in-between phases of a polyphase windowed-sinc interpolator evaluated on both sides of
        every local maximum of |x| within ``TP_MARGIN_DB`` of the largest so far (a band-limited
        signal's peaks lie next to its sampled maxima; elsewhere exceeding the peak so far would
        take an overshoot real audio does not have)."""
        x = buf.astype(np.float32, copy=False)
        if end <= start:
            return 0.0
        a = np.abs(x)
        peak = float(a[:, start:end].max())
        thr = max(peak, self._tp) * 10 ** (-TP_MARGIN_DB / 20.0)
        taps = _interpolator()  # [TP_TAPS, 3]
        half = TP_TAPS // 2
        lo, hi = max(start, half), min(end, x.shape[1] - half - 1)
        if hi <= lo:
            return peak
        for c in range(x.shape[0]):
            seg = a[c, lo - 1 : hi + 1]
            mid = seg[1:-1]
            # local maxima of |x| within the margin: the signal's peaks lie next to them
            near = np.nonzero((mid >= thr) & (mid >= seg[:-2]) & (mid >= seg[2:]))[0] + lo
            if near.size == 0:
                continue
            idx = near[:, None] + np.arange(-(half - 1), half + 1)[None, :]
            win = x[c][idx]  # [k, TP_TAPS]
            vals = (win[:, :, None] * taps[None, :, :]).sum(axis=1)
            peak = max(peak, float(np.abs(vals).max()))
            before = near[near > lo] - 1  # and before it
            if before.size:
                idx = before[:, None] + np.arange(-(half - 1), half + 1)[None, :]
                vals = (x[c][idx][:, :, None] * taps[None, :, :]).sum(axis=1)
                peak = max(peak, float(np.abs(vals).max()))
        return peak

    def finish(self) -> LoudnessResult:
        """Gate the measurements and return the result."""
        if self.error:
            return LoudnessResult(None, None, None, None, 0.0, reason=self.error)
        if self.sr is None:
            return LoudnessResult(None, None, None, None, 0.0, reason="no audio")
        seconds = self._pos / self.sr
        if self._tp_carry is not None and self._tp_carry.shape[1]:
            c = self._tp_carry
            self._tp = max(self._tp, self._oversampled_peak(c, min(64, c.shape[1]), c.shape[1]))
        tp = max(self._tp, self._sp)
        tp_db = 20 * math.log10(tp) if tp > 0 else None
        sp_db = 20 * math.log10(self._sp) if self._sp > 0 else None
        ms = np.array(self._sub) if self._sub else np.zeros((0, self.channels))
        g = np.array([_SURROUND.get(i, 0.0 if i == 3 else 1.0) for i in range(self.channels)])
        if self.channels < 4:
            g = np.ones(self.channels)
        integrated = _gated(ms, g, 4, REL_GATE)
        st = _windowed(ms, g, 30)
        lra = None
        if st.size:
            st = st[st > ABS_GATE]
            if st.size:
                rel = _lufs(np.mean(10 ** ((st + 0.691) / 10))) + LRA_REL_GATE
                st = st[st > rel]
                if st.size:
                    lra = float(np.percentile(st, 95) - np.percentile(st, 10))
        reason = None
        if integrated is None:
            reason = "shorter than one 400 ms block" if seconds < 0.4 else "silent (below -70 LUFS)"
        return LoudnessResult(integrated, lra, tp_db, sp_db, seconds, reason)


def _lufs(power: float) -> float:
    return -0.691 + 10.0 * math.log10(power) if power > 0 else -math.inf


def _windowed(ms: np.ndarray, g: np.ndarray, n: int) -> np.ndarray:
    """Loudness of every run of ``n`` consecutive 100 ms sub-blocks (hop 100 ms)."""
    if ms.shape[0] < n:
        return np.zeros(0)
    c = np.cumsum(np.vstack([np.zeros((1, ms.shape[1])), ms]), axis=0)
    z = (c[n:] - c[:-n]) / n
    p = z @ g
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(np.maximum(p, 1e-30))


def _gated(ms: np.ndarray, g: np.ndarray, n: int, rel_gate: float) -> float | None:
    """BS.1770-4 gated loudness over ``n``×100 ms blocks overlapping by n−1 sub-blocks."""
    if ms.shape[0] < n:
        return None
    c = np.cumsum(np.vstack([np.zeros((1, ms.shape[1])), ms]), axis=0)
    p = ((c[n:] - c[:-n]) / n) @ g
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10.0 * np.log10(np.maximum(p, 1e-30))
    p1 = p[lk > ABS_GATE]
    if p1.size == 0:
        return None
    gate = _lufs(float(p1.mean())) + rel_gate
    p2 = p[(lk > ABS_GATE) & (lk > gate)]
    return _lufs(float(p2.mean())) if p2.size else None
