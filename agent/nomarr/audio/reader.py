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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from nomarr.audio.decode import (
    BLOCK_SAMPLES,
    AudioError,
    AudioInfo,
    NativeTap,
    _info,
    _native_blocks,
    _open,
    _short,
    resampler,
)
from nomarr.audio.pcm import PcmSource
from nomarr.stages import Stages


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
    """Keeps the model-rate samples of the continuous read (the onset search and the main window
    of a sampled profile are sliced from it, so neither decodes again). It keeps every block it is
    fed, so what it holds is exactly what was read, and a later read continues right after it;
    ``seconds`` is how much it asks for."""

    stage = "buffer"

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
        if block.model.shape[0]:
            self.parts.append(block.model)
            self.n += block.model.shape[0]
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
        hi = (
            self.n if duration is None else max(lo, int(round((start + duration - t0) * self.rate)))
        )
        return self.samples[lo:hi]


class FileReader:
    """One open audio file: its stream facts and a continuous read from the start.

    ``read(until, consumers)`` may be called several times; each call continues where the last
    stopped (the resampler's state carries over, so the model-rate signal is one continuous
    stream). ``ended`` tells whether the stream is exhausted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model_rate: int = 16000,
        stages: Stages | None = None,
        native_tap: NativeTap | None = None,
    ) -> None:
        """``native_tap``: fed the continuous read's blocks before the downmix (float32
        [channels, n] at the file's rate), e.g. a loudness meter; windows read by seeking skip it."""
        self.path = os.fspath(path)
        self.container, self.stream = _open(path)
        try:
            info = _info(path, self.container, self.stream)
        except Exception:
            self.container.close()
            raise
        self._setup(info, model_rate, stages, native_tap)

    def _setup(
        self,
        info: AudioInfo,
        model_rate: int,
        stages: Stages | None,
        native_tap: NativeTap | None,
    ) -> None:
        self.info: AudioInfo = info
        self.native_tap = native_tap
        self.stages = stages or Stages()
        self.model_rate = model_rate
        self.native_rate = self.info.sample_rate
        self._blocks: Iterator[tuple[int, np.ndarray]] | None = None
        self._rs = resampler(self.native_rate, model_rate)
        self._model_n = 0  # model-rate samples produced so far
        self._t0: float | None = None
        self.ended = False  # the continuous read reached the end of the stream
        self._seeked = False  # a window was read by seeking: the continuous read cannot go on
        self._wants: dict[int, bool] = {}
        self.position = 0.0  # stream time reached by the read (seconds)
        self.error: AudioError | None = None  # a decode error that ended the read early

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        self._blocks = None
        self.container.close()

    def _native(
        self, start: float = 0.0, duration: float | None = None, native: NativeTap | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample's index, mono block) at the native rate (see ``_native_blocks``)."""
        return _native_blocks(self.container, self.stream, self.path, start, duration, native)

    def _emit(self, consumers: list[PcmConsumer], native: np.ndarray, native_t: float) -> bool:
        """Resample one native block and hand it to every consumer still listening."""
        if self._t0 is None:
            self._t0 = native_t
        t = time.perf_counter()
        model = self._rs.resample_chunk(native) if self._rs else native
        self.stages.add("resample", time.perf_counter() - t)
        model_t = self._t0 + self._model_n / self.model_rate
        self._model_n += model.shape[0]
        b = Block(native, self.native_rate, native_t, model, self.model_rate, model_t)
        keep = False
        for c in consumers:
            t = time.perf_counter()
            want = c.feed(b)
            self._wants[id(c)] = want
            keep = want or keep
            name = getattr(c, "stage", type(c).__name__)
            if name:  # None: the consumer times its own stages
                self.stages.add(name, time.perf_counter() - t)
        return keep

    def read(self, until: float | None, consumers: list[PcmConsumer]) -> list[PcmConsumer]:
        """Decode on until stream time ``until`` (None: the end), or until no consumer wants more;
        ``finish`` is then called on every consumer. Every consumer is fed every block read (so a
        buffer stays continuous); returns those that still wanted more when the read stopped."""
        if self._seeked:
            raise RuntimeError("FileReader.read after window(): the continuous read is over")
        live = list(consumers)
        self._wants = {id(c): True for c in live}
        try:
            if self._blocks is None and not self.ended:
                self._blocks = self._native(native=self.native_tap)
            while live and not self.ended and (until is None or self.position < until):
                assert self._blocks is not None
                t = time.perf_counter()
                try:
                    pos, native = next(self._blocks)
                except StopIteration:
                    self.stages.add("decode", time.perf_counter() - t)
                    self.ended = True
                    if self._rs is not None:
                        tail = self._rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                        if tail.shape[0]:
                            self._emit_tail(live, tail)
                    break
                self.stages.add("decode", time.perf_counter() - t)
                t_s = pos / self.native_rate
                self.position = t_s + native.shape[0] / self.native_rate
                if not self._emit(live, native, t_s):
                    break
        except av.error.FFmpegError as e:
            err = AudioError(self.path, f"decode failed ({_short(e)})")
            if self._model_n == 0:
                raise err from e
            # damage after some audio (a truncated download, garbage spliced in): what was read
            # stands and the stream ends here; the analysis measures how much it got (Coverage)
            self.ended, self.error = True, err
        for c in consumers:
            c.finish()
        return [c for c in consumers if self._wants.get(id(c)) and not self.ended]

    def window(self, start: float, duration: float | None) -> Iterator[np.ndarray]:
        """Model-rate blocks of one window, read by seeking this reader's container (the
        continuous read is over once a window is read this way). Its resampler starts fresh at
        the window, as a window decoded on its own always did."""
        self._blocks = None
        self._seeked = True
        rs = resampler(self.native_rate, self.model_rate)
        it = self._native(start, duration)
        try:
            while True:
                t = time.perf_counter()
                try:
                    _, native = next(it)
                except StopIteration:
                    self.stages.add("decode", time.perf_counter() - t)
                    break
                t1 = time.perf_counter()
                self.stages.add("decode", t1 - t)
                out = rs.resample_chunk(native) if rs else native
                self.stages.add("resample", time.perf_counter() - t1)
                if out.shape[0]:
                    yield out
            if rs:
                tail = rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                if tail.shape[0]:
                    yield tail
        except av.error.FFmpegError as e:
            raise AudioError(self.path, f"decode failed ({_short(e)})") from e

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


class PcmReader(FileReader):
    """A :class:`~nomarr.audio.pcm.PcmSource` (audio streamed to the agent without a file) read
    exactly as a :class:`FileReader` reads a file: the same blocks, the same resampling from the
    start of the continuous read or of a seeked window, so streamed PCM of a file's decoded
    samples gives that file's windows, patches and scores."""

    def __init__(
        self,
        src: PcmSource,
        model_rate: int = 16000,
        stages: Stages | None = None,
        native_tap: NativeTap | None = None,
    ) -> None:
        self.path = src.name
        self.src = src
        info = AudioInfo(src.name, "pcm", "pcm_f32le", src.rate, 1, src.duration, None)
        self._setup(info, model_rate, stages, native_tap)

    def close(self) -> None:
        self._blocks = None

    def _native(
        self, start: float = 0.0, duration: float | None = None, native: NativeTap | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        samples, rate = self.src.samples, self.src.rate
        first = max(0, int(round(start * rate)))
        stop = samples.shape[0]
        if duration is not None:
            stop = min(stop, first + int(np.ceil(duration * rate)))
        for a in range(first, stop, BLOCK_SAMPLES):
            block = np.array(samples[a : min(stop, a + BLOCK_SAMPLES)], dtype=np.float32)
            if native is not None:
                native(block[None, :])
            yield a, block
