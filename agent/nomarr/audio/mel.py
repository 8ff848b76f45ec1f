"""Log-mel front end compatible with ``librosa.feature.melspectrogram`` (Slaney scale and norm).

Why our own instead of librosa: librosa pulls numba/llvmlite/scipy into the agent, which is a lot of
weight on a Raspberry Pi and slow to import, for three small numpy operations. The maths here is
the published definition (Slaney's Auditory Toolbox mel scale, area-normalised triangles, periodic
Hann window, centred frames with zero padding); tests hold it to librosa's numbers.

Streaming: :class:`MelStream` takes blocks of 16 kHz samples and emits whole mel frames as soon as
their samples are in, so memory stays bounded for any file length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Slaney's scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 steps per 6.4x).
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Hz → Slaney mel."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(
        mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel
    )


@lru_cache(maxsize=8)
def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """[n_mels, 1 + n_fft//2] triangular filters, each normalised to unit area (Slaney norm)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges_hz = mel_to_hz_slaney(
        np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2)
    )
    widths = np.diff(edges_hz)
    # distance of every FFT bin from every edge: rising slope from edge i, falling to edge i+2
    dist = edges_hz[:, None] - fft_hz[None, :]
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=4)
def periodic_hann(n: int) -> np.ndarray:
    """Periodic Hann window (the DFT-even one scipy/librosa use for spectral analysis)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


@dataclass(frozen=True)
class MelSpec:
    """Parameters of a mel front end; defaults are musicnn's."""

    sr: int = 16000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 96

    def log_compress(self, mel: np.ndarray) -> np.ndarray:
        """musicnn's log10(1 + 10000·mel), in float32 (upstream's float16 overflows on loud audio)."""
        return np.log10(1.0 + 10000.0 * mel.astype(np.float32, copy=False), dtype=np.float32)


def power_mel(frames: np.ndarray, spec: MelSpec) -> np.ndarray:
    """[n, n_fft] time-domain frames → [n, n_mels] mel power (float64)."""
    spectrum = np.fft.rfft(frames * periodic_hann(spec.n_fft), axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return power @ mel_filterbank(spec.sr, spec.n_fft, spec.n_mels).T


class MelStream:
    """Centred STFT frames (zero padding of n_fft//2 both ends) computed block by block.

    Produces exactly ``1 + n_samples // hop`` frames in total, like ``librosa.stft(center=True)``.
    """

    def __init__(self, spec: MelSpec = MelSpec(), log: bool = True) -> None:
        self.spec = spec
        self.log = log  # False: power mel (float32), for callers that scale before the log
        self._buf = np.zeros(spec.n_fft // 2, dtype=np.float64)  # leading centre padding
        self._n_samples = 0
        self._frames_out = 0

    def _emit(self, upto: int) -> np.ndarray:
        """Frames whose window lies inside the buffer, up to ``upto`` frames in total."""
        s = self.spec
        n_avail = 0 if self._buf.shape[0] < s.n_fft else 1 + (self._buf.shape[0] - s.n_fft) // s.hop
        n = min(n_avail, upto - self._frames_out)
        if n <= 0:
            return np.zeros((0, s.n_mels), dtype=np.float32)
        idx = np.arange(s.n_fft)[None, :] + s.hop * np.arange(n)[:, None]
        mel = power_mel(self._buf[idx], s)
        self._buf = self._buf[n * s.hop :]
        self._frames_out += n
        return s.log_compress(mel) if self.log else mel.astype(np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; returns the log-mel frames [n, n_mels] that became complete."""
        self._buf = np.concatenate([self._buf, samples.astype(np.float64, copy=False)])
        self._n_samples += samples.shape[0]
        return self._emit(upto=1 << 62)

    def finish(self) -> np.ndarray:
        """Pad the end with zeros and return the last frames."""
        s = self.spec
        total = 1 + self._n_samples // s.hop
        self._buf = np.concatenate([self._buf, np.zeros(s.n_fft // 2 + s.n_fft, dtype=np.float64)])
        return self._emit(upto=total)


def clap_log_mel(
    signal: np.ndarray,
    sr: int = 48000,
    n_fft: int = 1024,
    hop: int = 480,
    n_mels: int = 64,
    fmin: float = 50.0,
    fmax: float = 14000.0,
) -> np.ndarray:
    """CLAP (HTSAT) input features for one clip: [frames, n_mels] power mel in dB.

    The published CLAP feature extractor uses centred frames with *reflect* padding, a Slaney mel
    bank between 50 Hz and 14 kHz, and 10·log10 with a 1e-10 floor; a 10 s clip gives 1001 frames.
    """
    x = np.asarray(signal, dtype=np.float64)
    pad = n_fft // 2
    x = np.pad(x, pad, mode="reflect") if x.shape[0] > pad else np.pad(x, pad)
    n = 1 + (x.shape[0] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    spectrum = np.fft.rfft(x[idx] * periodic_hann(n_fft), axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ mel_filterbank(sr, n_fft, n_mels, fmin, fmax).T
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).astype(np.float32)


def log_mel(signal: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Whole-signal log-mel [frames, n_mels]; the streaming path in one call."""
    ms = MelStream(spec)
    parts = [ms.push(signal), ms.finish()]
    return np.concatenate(parts)


def patches(
    frames: Iterable[np.ndarray], patch: int = 187, hop: int | None = None, pad_short: bool = True
) -> Iterator[np.ndarray]:
    """Group a stream of [n, n_mels] frame blocks into [patch, n_mels] patches.

    Non-overlapping by default; a trailing partial patch is dropped, as upstream musicnn does. A
    stream shorter than one patch is repeat-padded to one patch (``pad_short``), as the models'
    training did for short clips, so a 0.5 s file still gets scores.
    """
    hop = hop or patch
    buf: np.ndarray | None = None
    made = 0
    for block in frames:
        if block.shape[0] == 0:
            continue
        buf = block if buf is None else np.concatenate([buf, block])
        while buf.shape[0] >= patch:
            yield buf[:patch]
            buf = buf[hop:]
            made += 1
    if pad_short and made == 0 and buf is not None and buf.shape[0] > 0:
        yield np.tile(buf, (-(-patch // buf.shape[0]), 1))[:patch]
