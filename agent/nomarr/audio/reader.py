"""One decode per file: the audio the models see also feeds Chromaprint, the onset search and any
other analyzer of that file.

A scan used to open every new file four times (``fpcalc`` for the first 120 s, the onset search
twice, then each analysis window). :class:`FileReader` opens it once and reads it **continuously
from the start** as far as its consumers need, converting each stretch once: channels averaged at
the stream's own rate (*native*), then resampled once to the model rate (soxr HQ, as the models
were trained). Windows that lie beyond that read (the tail windows of a sampled profile) are read
by seeking, with :func:`~nomarr.audio.decode.stream_mono`.

**The extension point** is :class:`PcmConsumer`: anything with ``feed(block) -> bool`` and
``finish()``. Each :class:`Block` carries the same audio twice, native-rate mono and model-rate
mono, with the stream time of its first sample in each, so an analyzer that wants the original
rate (loudness, key) and one that wants the model rate (an onset or tempo estimate on the
spectrogram) both get exactly the samples the models see, without opening the file again.
Consumers are fed in order, once; a consumer returns False from ``feed`` once it needs nothing
more, and the read stops when no consumer wants more audio (or at the ``until`` time it was given).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from nomarr.audio.decode import (
    AudioError,
    AudioInfo,
    _info,
    _native_blocks,
    _open,
    _short,
    resampler,
)


@dataclass(frozen=True)
class Block:
    """One stretch of decoded audio, as every consumer sees it.

    ``native`` and ``model`` hold the same audio: channels averaged at ``native_rate``, and that
    resampled to ``model_rate``. The resampler's delay means the two arrays do not cover exactly
    the same instants, so each has its own start time (seconds on the stream's timeline; the first
    sample kept is at or after 0 — see :func:`~nomarr.audio.decode._native_blocks`).
    """

    native: np.ndarray
    native_rate: int
    native_t: float
    model: np.ndarray
    model_rate: int
    model_t: float


class PcmConsumer(Protocol):
    """Fed one file's decoded audio, in order, once (see the module docstring)."""

    def feed(self, block: Block) -> bool:
        """Take one block; return False once nothing more is needed."""
        ...

    def finish(self) -> None:
        """The read ended (end of stream, or no consumer wanted more)."""
        ...


class HeadBuffer:
    """Keeps the model-rate samples of the first ``seconds`` (the onset search and the main window
    of a sampled profile are sliced from it, so neither decodes again)."""

    def __init__(self, seconds: float, rate: int) -> None:
        self.rate = rate
        self.limit = int(np.ceil(seconds * rate))
        self.parts: list[np.ndarray] = []
        self.n = 0
        self.t0: float | None = None  # stream time of sample 0
        self._joined: np.ndarray | None = None

    def feed(self, block: Block) -> bool:
        if self.t0 is None:
            self.t0 = block.model_t
        take = block.model[: self.limit - self.n]
        if take.shape[0]:
            self.parts.append(take)
            self.n += take.shape[0]
            self._joined = None
        return self.n < self.limit

    def finish(self) -> None:
        pass

    @property
    def samples(self) -> np.ndarray:
        """Everything kept, as one array."""
        if self._joined is None:
            self._joined = (
                np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)
            )
            self.parts = [self._joined]
        return self._joined

    def covers(self, start: float, duration: float | None, complete: bool) -> bool:
        """Whether [start, start + duration) lies inside what was kept (``complete``: the stream
        ended inside the buffer, so a window running past its end is covered too)."""
        if duration is None:
            return complete and start <= (self.t0 or 0.0)
        end = int(round((start + duration - (self.t0 or 0.0)) * self.rate))
        return end <= self.n or complete

    def slice(self, start: float, duration: float | None) -> np.ndarray:
        """Samples of [start, start + duration) in stream time (clipped to what is kept)."""
        t0 = self.t0 or 0.0
        lo = max(0, int(round((start - t0) * self.rate)))
        hi = self.n if duration is None else max(lo, int(round((start + duration - t0) * self.rate)))
        return self.samples[lo:hi]


class FileReader:
    """One open audio file: its stream facts and a continuous read from the start.

    ``read(until, consumers)`` may be called several times; each call continues where the last
    stopped (the resampler's state carries over, so the model-rate signal is one continuous
    stream). ``ended`` tells whether the stream is exhausted.
    """

    def __init__(self, path: str | os.PathLike[str], model_rate: int = 16000) -> None:
        self.path = os.fspath(path)
        self.model_rate = model_rate
        self.container, self.stream = _open(path)
        try:
            self.info: AudioInfo = _info(path, self.container, self.stream)
        except Exception:
            self.container.close()
            raise
        self.native_rate = self.info.sample_rate
        self._blocks: Iterator[tuple[int, np.ndarray]] | None = None
        self._rs = resampler(self.native_rate, model_rate)
        self._model_n = 0  # model-rate samples produced so far
        self._t0: float | None = None
        self.ended = False
        self.position = 0.0  # stream time reached by the read (seconds)

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        self._blocks = None
        self.container.close()

    def _emit(self, consumers: list[PcmConsumer], native: np.ndarray, native_t: float) -> bool:
        """Resample one native block and hand it to every consumer still listening."""
        if self._t0 is None:
            self._t0 = native_t
        model = self._rs.resample_chunk(native) if self._rs else native
        model_t = self._t0 + self._model_n / self.model_rate
        self._model_n += model.shape[0]
        b = Block(native, self.native_rate, native_t, model, self.model_rate, model_t)
        keep = [c.feed(b) for c in consumers]
        return any(keep)

    def read(self, until: float | None, consumers: list[PcmConsumer]) -> None:
        """Decode on until stream time ``until`` (None: the end), or until no consumer wants more;
        ``finish`` is then called on every consumer."""
        live = list(consumers)
        try:
            if self._blocks is None and not self.ended:
                self._blocks = _native_blocks(self.container, self.stream, self.path)
            while live and not self.ended and (until is None or self.position < until):
                assert self._blocks is not None
                try:
                    pos, native = next(self._blocks)
                except StopIteration:
                    self.ended = True
                    if self._rs is not None:
                        tail = self._rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                        if tail.shape[0]:
                            self._emit_tail(live, tail)
                    break
                t = pos / self.native_rate
                self.position = t + native.shape[0] / self.native_rate
                if not self._emit(live, native, t):
                    break
        except av.error.FFmpegError as e:
            raise AudioError(self.path, f"decode failed ({_short(e)})") from e
        for c in consumers:
            c.finish()

    def _emit_tail(self, consumers: list[PcmConsumer], tail: np.ndarray) -> None:
        """The resampler's last samples (no native audio goes with them)."""
        model_t = (self._t0 or 0.0) + self._model_n / self.model_rate
        self._model_n += tail.shape[0]
        b = Block(
            np.zeros(0, dtype=np.float32),
            self.native_rate,
            self.position,
            tail,
            self.model_rate,
            model_t,
        )
        for c in consumers:
            c.feed(b)
