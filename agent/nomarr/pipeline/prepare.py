"""One file's audio, decoded once, turned into what the models eat: windows and mel patches.

:func:`prepare` opens the file once (:class:`~nomarr.audio.reader.FileReader`) and reads it from
the start as far as needed: the fingerprint's first 120 s, the onset search and the main window of
a sampled profile all come out of that one read; tail windows are read by seeking; ``full`` reads
the file once, start to end. When asked (the scanner's identify step), the fingerprint is handed
to ``decide`` before any mel is computed, so a file whose recording already has current analyses
costs a decode of its head and nothing more.

Patches either go to a ``sink`` as they complete (``nomarr analyze``: bounded memory for any
length) or are kept and returned (the scan: a worker prepares a file, and the models run on its
patches in whichever worker — or central inference session — is free).

Every front end at the reader's model rate is fed from the same read; a front end at another rate
(none ship today) decodes its windows on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nomarr.audio.decode import AudioError, AudioInfo, stream_mono
from nomarr.audio.mel import MelSpec, MelStream, log_mel
from nomarr.audio.pcm import PcmSource
from nomarr.audio.reader import FileReader, HeadBuffer, PcmConsumer, PcmReader
from nomarr.fingerprint import FP_LENGTH_S, ChromaprintFeed, Fingerprint
from nomarr.pipeline.level import LevelScaler
from nomarr.pipeline.profiles import Profile, Window, first_strong_onset, plan_windows
from nomarr.stages import Stages

if TYPE_CHECKING:
    from nomarr.analyzers import DescriptorRun, TrackDescriptors

# (sample rate, n_fft, hop, n_mels, patch frames, patch hop): one mel front end
FrontKey = tuple[int, int, int, int, int, int]
Sink = Callable[[FrontKey, np.ndarray], None]
# whole file analysed? → the DSP descriptors' run for one file (nomarr.analyzers)
DspFactory = Callable[[bool], "DescriptorRun"]


# a window is short when it lacks more than this share of its planned audio (or one second)
SHORT_SHARE = 0.02


@dataclass
class Coverage:
    """How much of the planned audio the decoder delivered, window by window.

    A damaged file (garbage spliced in, a truncated download) decodes only up to the damage while
    its header still promises the whole length; its scores then describe part of the track. Such
    an analysis is *partial*: it is kept (it is the best this file offers) but never reused for
    another file of the same recording, and a complete one replaces it (docs/reliability.md).
    """

    duration: float | None  # what the container says
    planned_s: float = 0.0
    decoded_s: float = 0.0
    short: list[tuple[float, float, float]] = field(default_factory=list)  # start, want, got
    ends: list[float] = field(default_factory=list)  # where each window's decoded audio ended
    errors: list[AudioError] = field(default_factory=list)

    def add(self, start: float, length: float | None, got: float) -> None:
        want = length if length is not None else (self.duration or 0.0) - start
        self.decoded_s += got
        if got > 0:
            self.ends.append(start + got)
        if want <= 0:
            return
        self.planned_s += want
        if got < want - max(1.0, SHORT_SHARE * want):
            self.short.append((start, want, got))

    @property
    def complete(self) -> bool:
        return not self.short

    def ended_at(self) -> float | None:
        """Where the decodable audio ends, when a window came up short (else None): the end of
        the latest audio any window got (a window planned past the real end gets none)."""
        return max(self.ends) if self.short and self.ends else None

    def warning(self) -> str:
        return (
            f"partial decode: {self.decoded_s:.1f} of {self.planned_s:.1f} s of the planned audio "
            "could be read (a damaged or truncated file); scores describe that part only"
        )


@dataclass
class PatchGroup:
    """Every patch of one front end for one file, and the energy of the audio they came from."""

    key: FrontKey
    patches: np.ndarray  # [n, patch frames, n_mels] float32
    energy: float


@dataclass
class Prepared:
    """A file decoded and through its front ends (or stopped after its fingerprint)."""

    path: str
    info: AudioInfo
    windows: list[Window] = field(default_factory=list)
    groups: list[PatchGroup] = field(default_factory=list)
    counts: dict[FrontKey, int] = field(default_factory=dict)
    energy: dict[FrontKey, float] = field(default_factory=dict)
    fp: Fingerprint | None = None
    fp_error: str | None = None
    stopped: bool = False  # ``decide`` said no: nothing after the fingerprint was computed
    too_long: bool = False  # more patches than ``max_patches``: none were kept
    coverage: Coverage = field(default_factory=lambda: Coverage(None))
    starts: dict[FrontKey, list[float]] = field(default_factory=dict)  # each patch's start (s)
    descriptors: TrackDescriptors | None = None  # DSP descriptors, without the models' scores
    pcm: PcmSource | None = None  # the audio, when it came as PCM without a file (POST /ingest)

    @property
    def n_patches(self) -> int:
        return sum(self.counts.values())


class _Patcher:
    """Mel frames of one window → [patch, n_mels] patches, as :func:`~nomarr.audio.mel.patches`:
    non-overlapping by default, a trailing partial patch dropped, a window shorter than one patch
    repeat-padded to one."""

    def __init__(
        self,
        spec: MelSpec,
        patch: int,
        hop: int,
        out: Callable[[np.ndarray], None],
        level: float | None = None,
    ):
        # level: the level-invariant option's reference (dBFS), see nomarr.pipeline.level
        self.level = LevelScaler(spec, level) if level is not None else None
        self.mel = MelStream(spec, log=self.level is None)
        self.patch, self.hop, self.out = patch, hop, out
        self.buf: np.ndarray | None = None
        self.made = 0

    def _frames(self, block: np.ndarray) -> None:
        if block.shape[0] == 0:
            return
        self.buf = block if self.buf is None else np.concatenate([self.buf, block])
        n = (
            (self.buf.shape[0] - self.patch) // self.hop + 1
            if self.buf.shape[0] >= self.patch
            else 0
        )
        if n <= 0:
            return
        if self.hop == self.patch:
            self.out(self.buf[: n * self.patch].reshape(n, self.patch, -1))
        else:
            self.out(
                np.stack([self.buf[i * self.hop : i * self.hop + self.patch] for i in range(n)])
            )
        self.made += n
        self.buf = self.buf[n * self.hop :]

    def push(self, samples: np.ndarray) -> None:
        if self.level is None:
            self._frames(self.mel.push(samples))
            return
        self.level.measure(samples)
        for f in self.level.push(self.mel.push(samples)):
            self._frames(f)

    def finish(self) -> None:
        if self.level is None:
            self._frames(self.mel.finish())
        else:
            for f in self.level.push(self.mel.finish()) + self.level.flush():
                self._frames(f)
        if self.made == 0 and self.buf is not None and self.buf.shape[0] > 0:
            reps = -(-self.patch // self.buf.shape[0])
            self.out(np.tile(self.buf, (reps, 1))[None, : self.patch])
            self.made = 1


class _Fronts:
    """The front ends one window feeds, with their patch output and the window's energy."""

    def __init__(
        self,
        keys: list[FrontKey],
        prep: Prepared,
        sink: Sink,
        stages: Stages,
        level: float | None = None,
        dsp: DescriptorRun | None = None,
    ) -> None:
        self.keys, self.prep, self.sink, self.stages = keys, prep, sink, stages
        self.level, self.dsp = level, dsp
        self.patchers: list[_Patcher] = []
        self._out: list[tuple[FrontKey, np.ndarray]] = []
        self.samples = 0  # model-rate samples of the current window
        self.t0 = 0.0  # the current window's start (s)
        self._made: dict[FrontKey, int] = {}  # patches of the current window so far

    def open(self, start: float = 0.0) -> None:
        self.patchers = []
        self.samples = 0
        self.t0 = start
        self._made = {}
        for k in self.keys:
            spec = MelSpec(sr=k[0], n_fft=k[1], hop=k[2], n_mels=k[3])
            self.patchers.append(_Patcher(spec, k[4], k[5], self._emit(k), self.level))

    def _emit(self, key: FrontKey) -> Callable[[np.ndarray], None]:
        step = key[5] * key[2] / key[0]  # seconds between patch starts

        def out(batch: np.ndarray) -> None:
            n = batch.shape[0]
            self.prep.counts[key] = self.prep.counts.get(key, 0) + n
            made = self._made.get(key, 0)
            self.prep.starts.setdefault(key, []).extend(
                self.t0 + (made + j) * step for j in range(n)
            )
            self._made[key] = made + n
            self._out.append((key, batch))

        return out

    def _drain(self) -> None:
        """Hand completed patches on outside the mel timer (the sink may run the models)."""
        out, self._out = self._out, []
        for key, batch in out:
            self.sink(key, batch)

    def push(self, samples: np.ndarray) -> None:
        if samples.shape[0] == 0:
            return
        e = float(np.dot(samples, samples))
        if self.dsp is not None and self.keys:  # the descriptors see the models' own input
            with self.stages("descriptors"):
                self.dsp.feed(samples, self.keys[0][0], self.t0 + self.samples / self.keys[0][0])
        self.samples += samples.shape[0]
        with self.stages("mel"):
            for k, p in zip(self.keys, self.patchers, strict=True):
                self.prep.energy[k] = self.prep.energy.get(k, 0.0) + e
                p.push(samples)
        self._drain()

    def close(self) -> None:
        with self.stages("mel"):
            for p in self.patchers:
                p.finish()
        self._drain()


class _FullRead:
    """PcmConsumer that streams the rest of a continuous read into the front ends."""

    stage = None  # mel and inference are timed inside

    def __init__(self, fronts: _Fronts) -> None:
        self.fronts = fronts

    def feed(self, block: object) -> bool:
        self.fronts.push(block.model)  # type: ignore[attr-defined]
        return True

    def finish(self) -> None:
        pass


def _search_span(profile: Profile, duration: float | None) -> tuple[float, float] | None:
    """(start, length) of the onset search of an aligned profile (None: analysed in full)."""
    if profile.main is None or duration is None or duration < profile.min_duration:
        return None
    return profile.onset_after, max(min(20.0, duration - profile.min_duration + 5.0), 1.0)


def prepare(
    path: str | PcmSource,
    profile: Profile,
    keys: list[FrontKey],
    *,
    fingerprint: bool = False,
    decide: Callable[[Prepared], bool] | None = None,
    sink: Sink | None = None,
    max_patches: int | None = None,
    consumers: Iterable[PcmConsumer] = (),
    stages: Stages | None = None,
    describe: DspFactory | None = None,
) -> Prepared:
    """Decode ``path`` once and run its windows through the front ends ``keys``.

    ``fingerprint``: also compute its Chromaprint. ``decide(prepared)`` is called once the
    fingerprint is known and before any mel is computed; False stops there (``stopped``). Patches
    go to ``sink`` when given, else they are kept in ``groups``; ``max_patches`` refuses (before
    computing any) to keep more than that many (``too_long``: a caller then streams instead).
    ``consumers`` are fed the continuous read from the start (see :mod:`nomarr.audio.reader`); one
    still wanting audio once the models' part is read keeps the read going. ``describe(whole)``
    gives the DSP descriptors' run (:mod:`nomarr.analyzers`): fed the models' input as it is
    read, and the native channels of the continuous read for loudness when the whole file is
    analysed; ``descriptors`` holds what it found (the models' scores join after inference).
    """
    st = stages if stages is not None else Stages()
    rate = keys[0][0] if keys else 16000
    with st("open"):
        reader = (
            PcmReader(path, model_rate=rate, stages=st)
            if isinstance(path, PcmSource)
            else FileReader(path, model_rate=rate, stages=st)
        )
    try:
        whole = _search_span(profile, reader.info.duration) is None
        run = describe(whole) if describe is not None and keys else None
        meter = run.feed_native if run is not None and run.meter is not None else None
        if meter is not None:  # timed within "decode": it runs inside the decoder's loop
            reader.native_tap = lambda block: meter(block, reader.native_rate)
        prep = _prepare(
            reader, profile, keys, fingerprint, decide, sink, max_patches, consumers, st, run
        )
        if isinstance(path, PcmSource):
            prep.pcm = path
        if run is not None and not (prep.stopped or prep.too_long):
            with st("descriptors"):
                prep.descriptors = run.describe(reader.info.duration, whole)
        return prep
    finally:
        reader.close()


# _prepare keeps the whole read of one file in one place on purpose: the head read, the decision,
# the windows and the continuation share the reader's position and the head buffer; split up, each
# part would hand all of them to the next.
def _prepare(
    reader: FileReader,
    profile: Profile,
    keys: list[FrontKey],
    fingerprint: bool,
    decide: Callable[[Prepared], bool] | None,
    sink: Sink | None,
    max_patches: int | None,
    consumers: Iterable[PcmConsumer],
    st: Stages,
    dsp: DescriptorRun | None = None,
) -> Prepared:
    info = reader.info
    prep = Prepared(reader.path, info, coverage=Coverage(info.duration))
    extra = list(consumers)
    span = _search_span(profile, info.duration)
    head_s = FP_LENGTH_S if fingerprint else 0.0
    if span is not None:
        head_s = max(head_s, span[0] + span[1] + float(profile.main or 0.0))
    feed = ChromaprintFeed(info.duration) if fingerprint else None
    head = HeadBuffer(head_s, reader.model_rate) if head_s > 0 else None
    needed: list[PcmConsumer] = [c for c in (feed, head) if c is not None]
    if needed:
        extra = [c for c in reader.read(head_s, needed + extra) if c in extra]
    if feed is not None:
        prep.fp, prep.fp_error = feed.fp, feed.error
    if decide is not None and not decide(prep):
        prep.stopped = True
        return prep

    def onset(start: float, length: float) -> float | None:
        with st("onset"):
            if head is not None and head.covers(start, length, reader.ended):
                sig = head.slice(start, length)
            else:
                sig = np.concatenate(list(reader.window(start, length)) or [np.zeros(0, "f4")])
            spec = MelSpec(sr=reader.model_rate)
            return first_strong_onset(log_mel(sig, spec), spec.sr / spec.hop)

    prep.windows = plan_windows(profile, info.duration, onset)
    if max_patches is not None and _estimate(prep.windows, info.duration, keys) > max_patches:
        prep.too_long = True
        return prep
    if extra and span is not None and not reader.ended:
        reader.read(None, extra)  # a consumer that wants the whole file gets it before the seeks
        extra = []
    kept: dict[FrontKey, list[np.ndarray]] = {k: [] for k in keys}
    out: Sink = sink if sink is not None else (lambda k, b: kept[k].append(b))
    here = [k for k in keys if k[0] == reader.model_rate]
    fronts = _Fronts(here, prep, out, st, profile.level_norm, dsp)
    cov = prep.coverage
    for w in prep.windows:
        fronts.open(w.start)
        try:
            if w.duration is None:  # the whole file: what the head read holds, then the rest
                if head is not None:
                    fronts.push(head.slice(0.0, None))
                if not reader.ended:
                    reader.read(None, [_FullRead(fronts), *extra])
                    extra = []
            elif head is not None and head.covers(w.start, w.duration, reader.ended):
                fronts.push(head.slice(w.start, w.duration))
            else:
                for block in reader.window(w.start, w.duration):
                    fronts.push(block)
        except AudioError as e:  # past the real end of a damaged file: recorded, not fatal
            cov.errors.append(e)
        fronts.close()
        cov.add(w.start, w.duration, fronts.samples / reader.model_rate)
    if reader.error is not None:
        cov.errors.append(reader.error)
    for k in keys:
        if k[0] != reader.model_rate:  # a front end at another rate decodes on its own
            _other_rate(reader, k, prep, out, st, profile.level_norm)
    if sink is None:
        for k in keys:
            if kept[k]:
                prep.groups.append(PatchGroup(k, np.concatenate(kept[k]), prep.energy.get(k, 0.0)))
    if keys and prep.n_patches == 0:  # (no front end: a CLAP-only selection reads on its own)
        raise cov.errors[0] if cov.errors else AudioError(reader.path, "no audio frames to analyse")
    return prep


def _other_rate(
    reader: FileReader, key: FrontKey, prep: Prepared, out: Sink, st: Stages, level: float | None
) -> None:
    fronts = _Fronts([key], prep, out, st, level)
    for w in prep.windows:
        fronts.open(w.start)
        blocks = (
            reader.src.stream(key[0], w.start, w.duration)
            if isinstance(reader, PcmReader)
            else stream_mono(reader.path, sr=key[0], start=w.start, duration=w.duration)
        )
        for block in _timed(blocks, st):
            fronts.push(block)
        fronts.close()


def _timed(blocks: Iterator[np.ndarray], st: Stages) -> Iterator[np.ndarray]:
    while True:
        with st("decode"):
            b = next(blocks, None)
        if b is None:
            return
        yield b


def _estimate(windows: list[Window], duration: float | None, keys: list[FrontKey]) -> int:
    """Patches the windows will give (an upper bound; unknown length counts as unbounded)."""
    total = 0.0
    for w in windows:
        if w.duration is None:
            if duration is None:
                return 1 << 62
            total += max(0.0, duration - w.start)
        else:
            total += w.duration
    return sum(int(total * k[0] / k[2] / k[5]) + 1 for k in keys)
