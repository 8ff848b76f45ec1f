"""Loudness per ITU-R BS.1770-4 / EBU R128, true peak, loudness range and ReplayGain 2.0.

A PCM consumer of the *native* decoded audio (every channel at the file's own rate, before the
models' mono downmix and 16 kHz resample): loudness is defined on the channels as they are, and a
mono average of a wide stereo mix would read up to 3 dB low.

- **K-weighting**: the standard's two biquads (high shelf +4 dB around 1.7 kHz, high-pass at
  38 Hz), designed for the file's sample rate from the analogue parameters the 48 kHz
  coefficients of BS.1770 correspond to. They are applied as one FIR — the cascade's impulse
  response, 150 ms long, where it has decayed by more than 200 dB — by FFT overlap-add: numpy has
  no recursive filter and a Python loop per sample would cost more than the models.
- **Gating** (BS.1770-4): mean squares per 100 ms, 400 ms blocks overlapping by 75 %, absolute gate
  at −70 LUFS, relative gate 10 LU below the absolute-gated mean; channel weights 1.0 (L, R, C),
  1.41 (surrounds), LFE left out.
- **Loudness range** (EBU Tech 3342): 3 s short-term loudness every 100 ms, gates −70 LUFS and
  −20 LU, the spread between its 10th and 95th percentiles.
- **True peak** (BS.1770-4 Annex 2): 4× oversampling (soxr's medium-quality linear-phase filter), the maximum absolute
  value, in dBTP. Only blocks whose sample peak comes within 6 dB of the true peak so far are
  oversampled: inter-sample overshoot of real audio is far below that.
- **ReplayGain 2.0**: track gain = −18 LUFS − integrated loudness; peak = the true peak (linear).
  Opus (RFC 7845) gets ``R128_TRACK_GAIN``: (−23 LUFS − integrated) in Q7.8 fixed point.

Memory: the per-100 ms mean squares, 10 floats per second per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soxr

ABS_GATE = -70.0
REL_GATE = -10.0
LRA_REL_GATE = -20.0
RG2_REFERENCE = -18.0
R128_REFERENCE = -23.0
TP_MARGIN_DB = 6.0
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


@lru_cache(maxsize=8)
def k_weighting_ir(sr: int) -> np.ndarray:
    """Impulse response of the K-weighting cascade, 150 ms long (decayed by > 200 dB)."""
    n = max(64, int(0.15 * sr))
    x = np.zeros(n)
    x[0] = 1.0
    for b, a in _biquads(sr):
        y = np.zeros(n)
        x1 = x2 = y1 = y2 = 0.0
        b0, b1, b2 = (float(v) for v in b)
        a1, a2 = float(a[1]), float(a[2])
        for i in range(n):  # once per sample rate, cached
            xi = float(x[i])
            yi = b0 * xi + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            x2, x1, y2, y1 = x1, xi, y1, yi
            y[i] = yi
        x = y
    x.setflags(write=False)
    return x


@lru_cache(maxsize=8)
def _spectrum(sr: int, nfft: int) -> np.ndarray:
    return np.fft.rfft(k_weighting_ir(sr).astype(np.float32), nfft).astype(np.complex64)


class LoudnessMeter:
    """BS.1770-4 meter fed native multichannel blocks: ``feed(samples[ch, n], sr, t0)``."""

    def __init__(self) -> None:
        self.sr: int | None = None
        self.channels = 0
        self._tail: np.ndarray | None = None  # overlap-add carry [ch, L-1]
        self._sub: list[np.ndarray] = []  # per-100 ms mean squares [ch]
        self._acc: np.ndarray | None = None
        self._acc_n = 0
        self._pos = 0  # samples seen
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
            self._acc = np.zeros(self.channels)
            self._sub_end = self._boundary(1)
        elif sr != self.sr or x.shape[0] != self.channels:
            self.error = "sample rate or channel count changed mid-stream"
            return
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        self._true_peak(x)
        self._mean_squares(self._kweight(x))

    def _boundary(self, k: int) -> int:
        """Sample index where the k-th 100 ms sub-block ends (exact for any rate)."""
        assert self.sr is not None
        return (k * self.sr) // 10

    def _kweight(self, x: np.ndarray) -> np.ndarray:
        """Overlap-add FIR filtering in fixed FFT sizes (float32: the FFT is the meter's cost)."""
        assert self.sr is not None
        h = k_weighting_ir(self.sr)
        L = h.shape[0]
        nfft = 1 << max(12, int(np.ceil(np.log2(4 * L))))
        step = nfft - L + 1
        H = _spectrum(self.sr, nfft)
        outs = []
        for i in range(0, x.shape[1], step):
            part = x[:, i : i + step]
            n = part.shape[1]
            y = np.fft.irfft(np.fft.rfft(part, nfft, axis=1) * H, nfft, axis=1)
            if self._tail is not None:
                y[:, : L - 1] += self._tail
            self._tail = y[:, n : n + L - 1].copy()
            outs.append(y[:, :n])
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def _mean_squares(self, y: np.ndarray) -> None:
        assert self._acc is not None
        i = 0
        n = y.shape[1]
        sq = (y * y).astype(np.float64)
        while i < n:
            take = min(n - i, self._sub_end - self._pos)
            self._acc += sq[:, i : i + take].sum(axis=1)
            self._acc_n += take
            self._pos += take
            i += take
            if self._pos == self._sub_end:
                self._sub.append(self._acc / max(self._acc_n, 1))
                self._acc = np.zeros(self.channels)
                self._acc_n = 0
                self._sub_end = self._boundary(len(self._sub) + 1)

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
        assert self.sr is not None
        if self.sr >= 192000:  # already 4× of 48 kHz
            return float(np.max(np.abs(buf[:, start:end])))
        factor = 4 if self.sr < 96000 else 2
        up = soxr.resample(buf.T.astype(np.float32), self.sr, self.sr * factor, quality="MQ")
        return float(np.max(np.abs(up[start * factor : end * factor])))

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
