"""Audio that arrives as PCM instead of a file (the streaming-ingest API): the same mono signal the
decoder would make, and the same resampling, so the analysis cannot tell the difference.

The decoder (:mod:`nomarr.audio.decode`) averages the channels in float32 *before* resampling and
resamples with soxr HQ in blocks of :data:`~nomarr.audio.decode.BLOCK_SAMPLES` input samples from
each window's first sample. :func:`downmix` is that channel mean for interleaved PCM, and
:class:`PcmSource` replays a stored mono signal through the same resampler the same way, so a
stream of a file's decoded samples gives the file's windows, mel patches and scores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import soxr

from nomarr.audio.decode import BLOCK_SAMPLES

# encoding → (bytes per sample, dtype or None for 24-bit, scale to [-1, 1))
ENCODINGS: dict[str, tuple[int, str | None, float | None]] = {
    "s16le": (2, "<i2", 32768.0),
    "s24le": (3, None, 8388608.0),
    "s32le": (4, "<i4", 2147483648.0),
    "f32le": (4, "<f4", None),
}


class PcmError(ValueError):
    """Bytes that are not whole frames of the announced format, or not finite samples."""


def frame_bytes(encoding: str, channels: int) -> int:
    """Bytes per frame (one sample of every channel)."""
    return ENCODINGS[encoding][0] * channels


def downmix(data: bytes, encoding: str, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM → float32 mono: integers scaled as the decoder scales them
    (s16 / 2^15, s24 / 2^23, s32 / 2^31), channels averaged. Raises :class:`PcmError` for a
    partial frame or a non-finite float sample."""
    width, dtype, scale = ENCODINGS[encoding]
    fb = width * channels
    if len(data) == 0:
        raise PcmError("empty chunk")
    if len(data) % fb:
        raise PcmError(
            f"{len(data)} bytes is not a whole number of frames "
            f"({channels} channel(s) × {width} bytes of {encoding} = {fb} bytes per frame)"
        )
    if dtype is None:  # 24-bit: sign-extend three bytes into an int32
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        raw: np.ndarray = ints
    else:
        raw = np.frombuffer(data, dtype=dtype)
    if scale is None:
        x = raw.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise PcmError("f32le chunk holds NaN or infinite samples")
    else:
        x = (raw.astype(np.float64) / scale).astype(np.float32)
    planar = x.reshape(-1, channels).T  # [channels, n], as the decoder's frames are
    if channels == 1:
        return np.ascontiguousarray(planar[0])
    return planar.mean(axis=0, dtype=np.float32)


class PcmSource:
    """A mono float32 signal at its native rate (in memory, or a spool file mapped read-only),
    read the way :func:`~nomarr.audio.decode.stream_mono` reads a file."""

    def __init__(self, samples: np.ndarray, rate: int, name: str = "stream") -> None:
        self.samples = samples
        self.rate = int(rate)
        self.name = name

    @classmethod
    def from_spool(cls, path: str | os.PathLike[str], rate: int, name: str = "stream") -> PcmSource:
        """Map a spool file of float32 mono samples (no copy)."""
        size = os.path.getsize(path)
        if size == 0:
            return cls(np.zeros(0, dtype=np.float32), rate, name)
        return cls(np.memmap(path, dtype="<f4", mode="r", shape=(size // 4,)), rate, name)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.samples.shape[0] / self.rate

    def stream(
        self, sr: int = 16000, start: float = 0.0, duration: float | None = None
    ) -> Iterator[np.ndarray]:
        """Float32 mono blocks at ``sr`` from ``start`` for ``duration`` seconds."""
        first = int(round(start * self.rate))
        stop = self.samples.shape[0]
        if duration is not None:
            stop = min(stop, first + int(math.ceil(duration * self.rate)))
        if first >= stop:
            return
        rs = (
            soxr.ResampleStream(self.rate, sr, 1, dtype="float32", quality="HQ")
            if self.rate != sr
            else None
        )
        for a in range(first, stop, BLOCK_SAMPLES):
            block = np.asarray(self.samples[a : min(stop, a + BLOCK_SAMPLES)], dtype=np.float32)
            out = rs.resample_chunk(block) if rs else block.copy()
            if out.shape[0]:
                yield out
        if rs:
            tail = rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.shape[0]:
                yield tail

    def load(
        self, sr: int = 16000, start: float = 0.0, duration: float | None = None
    ) -> np.ndarray:
        """The (windowed) signal at ``sr`` at once."""
        blocks = list(self.stream(sr, start, duration))
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)

    def pcm16(self, seconds: float | None = None) -> bytes:
        """The first ``seconds`` as 16-bit PCM at the native rate (what Chromaprint is fed)."""
        n = self.samples.shape[0] if seconds is None else int(seconds * self.rate)
        x = np.asarray(self.samples[:n], dtype=np.float32)
        return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()
