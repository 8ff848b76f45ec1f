"""Streaming audio decode: PyAV → mean downmix → soxr HQ resample, in bounded memory.

Why these choices:
- The models were trained on ``librosa.load(sr=16000, mono=True)``: channels averaged *before*
  resampling, soxr "HQ". libswresample's mono downmix (PyAV ``AudioResampler(layout="mono")``,
  ``ffmpeg -ac 1``) is 0.7071·(L+R), +3 dB against the mean; since the musicnn input
  ``log10(1 + 10000·mel)`` is not gain-invariant that moves track-level tags by up to 0.10. So we
  take PyAV's frames as they are, convert the sample format ourselves and average the channels.
- Everything is a generator of small float32 blocks, so a two-hour file never sits in memory.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr

from nomarr.audio.id3skip import ffmpeg_source

log = logging.getLogger(__name__)

# Containers/codecs we promise to read (PyAV/FFmpeg reads many more; others are tried too).
AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".mp4",
        ".aac",
        ".wav",
        ".aif",
        ".aiff",
        ".aifc",
        ".wma",
        ".asf",
        ".wv",
        ".ape",
        ".mka",
        ".webm",
    }
)


class AudioError(Exception):
    """A file that cannot be decoded into audio; the message says which file and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:
        # pickled with prepared patches between processes: rebuilt from both arguments
        return (AudioError, (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about the first audio stream (duration may be estimated)."""

    path: str
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    bit_rate: int | None


def _open(
    path: str | os.PathLike[str],
) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    p = Path(path)
    if not p.exists():
        raise AudioError(path, "no such file")
    if p.is_dir():
        raise AudioError(path, "is a directory")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        # a large cover tag in front is skipped: FFmpeg would read it whole on every open
        container = av.open(ffmpeg_source(p), mode="r", metadata_errors="ignore")
    except PermissionError as e:
        raise AudioError(path, "permission denied") from e
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise AudioError(path, f"not a readable audio file ({_short(e)})") from e
    if not container.streams.audio:
        container.close()
        raise AudioError(path, "no audio stream in file")
    stream = container.streams.audio[0]
    if stream.codec_context is None or not stream.codec_context.sample_rate:
        container.close()
        raise AudioError(path, "audio stream has no sample rate (unsupported codec?)")
    return container, stream


def _short(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg if len(msg) < 200 else msg[:197] + "..."


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read container metadata without decoding; raises :class:`AudioError` for bad files."""
    container, stream = _open(path)
    try:
        return _info(path, container, stream)
    finally:
        container.close()


def _info(
    path: str | os.PathLike[str],
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
) -> AudioInfo:
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    return AudioInfo(
        path=str(path),
        container=container.format.name,
        codec=stream.codec_context.name,
        sample_rate=int(stream.codec_context.sample_rate),
        channels=int(stream.codec_context.channels or 0),
        duration=duration,
        bit_rate=container.bit_rate or None,
    )


_DTYPES = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "flt": np.float32,
    "dbl": np.float64,
}
_INT_SCALE = {"u8": None, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 mono, channels averaged (the way librosa.to_mono does).

    Integer formats are scaled the way libsndfile reads them (s16 / 2^15, s32 / 2^31), which is
    what the reference pipeline saw for WAV/FLAC input.
    """
    return _to_mono(_planar(frame), frame.format.name)


def _planar(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples as [channels, n] in their native dtype (a view where possible)."""
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, len(frame.layout.channels)).T
    return arr


def _to_float(arr: np.ndarray, fmt_name: str) -> np.ndarray:
    """[channels, n] samples of any PyAV sample format as float32 in −1…1."""
    fmt = fmt_name.rstrip("p")
    if fmt == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if fmt in _INT_SCALE:
        return (arr.astype(np.float64) / _INT_SCALE[fmt]).astype(np.float32)
    return arr.astype(np.float32, copy=False)


# A consumer of the decoded audio before downmix and resampling: called with each block as float32
# [channels, n] at the file's own rate (the loudness meter needs exactly that).
NativeTap = Callable[[np.ndarray], None]


def _to_mono(arr: np.ndarray, fmt_name: str, native: NativeTap | None = None) -> np.ndarray:
    data = _to_float(arr, fmt_name)
    if native is not None:
        native(data)
    if data.shape[0] == 1:
        return np.ascontiguousarray(data[0])
    return data.mean(axis=0, dtype=np.float32)


# Decoded frames are small (1152 samples for MP3, 1024 for AAC); converting, resampling and
# framing them one by one costs more in Python overhead than the decoding itself, so samples are
# gathered into blocks of about this many input samples first. The numbers do not change: the
# per-sample arithmetic is the same and soxr's stream state does not depend on chunk sizes.
BLOCK_SAMPLES = 1 << 16


# _native_blocks is one long generator on purpose: its decode loop carries the stream position, the
# samples still wanted and the pending block across every frame; split into functions, each frame
# would pass that state back and forth in the hottest loop of a scan.
def _native_blocks(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    path: str | os.PathLike[str],
    start: float = 0.0,
    duration: float | None = None,
    native: NativeTap | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index of the block's first sample on the stream's timeline, float32 mono block) at
    the stream's own rate, from ``start`` seconds for ``duration`` seconds.

    Positions come from the first decoded frame's presentation timestamp, and samples before
    stream time 0 are dropped: a cut Ogg stream (its first granule position says the decoder
    must discard leading samples) or encoder priming left in the packets decodes to frames with
    negative timestamps, which libvorbis and players never output. Seeks near ``start`` and trims
    by timestamps, so windowed profiles decode only what they analyse. Corrupt packets in the
    middle of a file are skipped with a warning (as players do); a file that yields no audio at
    all raises :class:`AudioError`.

    ``native``, if given, also receives every block before the downmix, as float32
    [channels, n] at the file's own rate (one decode feeds the loudness meter too).
    """
    in_sr = int(stream.codec_context.sample_rate)
    first_needed = max(0, int(round(start * in_sr)))  # first input sample we keep
    remaining = None if duration is None else int(math.ceil(duration * in_sr))
    pos: int | None = None  # input sample index of the next decoded sample
    if start > 0:
        # seek a little early: the decoder needs pre-roll and timestamps land on packets
        target = max(0.0, start - 0.5)
        try:
            container.seek(
                int(target / stream.time_base), stream=stream, any_frame=False, backward=True
            )
        except av.error.FFmpegError:
            container.seek(0, stream=stream)
    produced = 0
    errors = 0
    done = False
    # Samples are gathered as raw plane bytes (one bytes object per plane per frame) and turned
    # into arrays once per block: frame.to_ndarray() per frame cost more than the decoding.
    pending: list[list[bytes]] = []
    pending_key: tuple[str, int, bool] = ("", 0, False)  # sample format, channels, planar
    pending_n = 0
    pending_pos = 0

    def flush() -> tuple[int, np.ndarray]:
        nonlocal pending, pending_n
        fmt, ch, planar = pending_key
        dt = _DTYPES[fmt.rstrip("p")]
        if planar:
            raw = np.stack([np.frombuffer(b"".join(p[c] for p in pending), dt) for c in range(ch)])
        else:
            raw = np.frombuffer(b"".join(p[0] for p in pending), dt).reshape(-1, ch).T
        pending, pending_n = [], 0
        return pending_pos, _to_mono(raw, fmt, native)

    packets = container.demux(stream)
    try:
        while not done:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # demuxer gave up: end of readable data
                errors += 1
                log.warning(
                    "demux error, stopping early", extra={"path": str(path), "error": _short(e)}
                )
                break
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError) as e:
                errors += 1
                if errors > 100:
                    raise AudioError(path, f"too many decode errors ({_short(e)})") from e
                continue
            for frame in frames:
                if frame.sample_rate != in_sr:
                    raise AudioError(path, "sample rate changes in the middle of the stream")
                if produced == 0 and frame.pts is not None and frame.time_base is not None:
                    pos = int(round(float(frame.pts * frame.time_base) * in_sr))
                elif pos is None:
                    pos = 0
                n = frame.samples
                lo = max(0, first_needed - pos)
                at = pos + lo
                pos += n
                if lo >= n:
                    continue
                m = n - lo
                if remaining is not None:
                    m = min(m, remaining)
                    remaining -= m
                    done = remaining <= 0
                produced += m
                fmt = frame.format
                ch = len(frame.layout.channels)
                key = (fmt.name, ch, fmt.is_planar)
                if pending and key != pending_key:
                    yield flush()
                if not pending:
                    pending_pos = at
                pending_key = key
                if fmt.is_planar:
                    w = fmt.bytes
                    pending.append(
                        [bytes(memoryview(p)[lo * w : (lo + m) * w]) for p in frame.planes[:ch]]
                    )
                else:
                    w = fmt.bytes * ch
                    pending.append([bytes(memoryview(frame.planes[0])[lo * w : (lo + m) * w])])
                pending_n += m
                if pending_n >= BLOCK_SAMPLES:
                    yield flush()
                if done:
                    break
        if pending:
            yield flush()
    except av.error.FFmpegError as e:
        raise AudioError(path, f"decode failed ({_short(e)})") from e
    if produced == 0:
        raise AudioError(
            path, "no audio could be decoded" + (f" ({errors} decode errors)" if errors else "")
        )
    if errors:
        log.warning("skipped undecodable packets", extra={"path": str(path), "errors": errors})


def resampler(in_sr: int, sr: int) -> soxr.ResampleStream | None:
    """The streaming resampler every model input goes through (soxr HQ, as librosa), or None when
    the rates agree."""
    if in_sr == sr:
        return None
    return soxr.ResampleStream(in_sr, sr, 1, dtype="float32", quality="HQ")


def stream_mono(
    path: str | os.PathLike[str],
    sr: int = 16000,
    start: float = 0.0,
    duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at ``sr`` from ``start`` seconds for ``duration`` seconds (see
    :func:`_native_blocks` for positions, trimming and errors)."""
    from nomarr.audio.reader import FileReader  # the reader builds on this module

    with FileReader(path, model_rate=sr) as r:
        yield from r.window(start, duration)


def load_mono(
    path: str | os.PathLike[str], sr: int = 16000, start: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """The whole (or windowed) signal at once; for short windows and tests, not for whole libraries."""
    blocks = list(stream_mono(path, sr=sr, start=start, duration=duration))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
