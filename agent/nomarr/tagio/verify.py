"""Proofs that a write touched nothing it should not: hashes of the audio and of whole files.

The audio-packet md5 is what lets a write prove it left the audio alone; the byte md5 is what a
journal record pins a copy and an original by; :func:`_recheck` is how a write notices that
another program changed the file while nomarr was working on its copy.
"""

from __future__ import annotations

import hashlib
import os

import av

from nomarr.audio.id3skip import ffmpeg_source
from nomarr.tagio.errors import TagError
from nomarr.tagio.fsio import _CHUNK


def nom_audio_md5(path: str | os.PathLike) -> str:
    """md5 over the bytes of every audio packet, demuxed with PyAV (no decoding).

    Equivalent in spirit to ``ffmpeg -i F -map 0:a -c copy -f md5 -``: tags live outside the
    packets in every supported container, so a tag write must leave this unchanged, and any change
    means the audio was touched.
    """
    return _audio_md5(os.fspath(path))[0]


def _audio_md5(p: str, fmt: str | None = None, report: str | None = None) -> tuple[str, str]:
    """(md5, demuxer name); ``fmt`` pins the demuxer so a suffix-less temp copy is read the same
    way as the original was."""
    report = report or p
    h = hashlib.md5()
    try:
        with av.open(ffmpeg_source(p), format=fmt) as c:  # past a large cover tag
            streams = list(c.streams.audio)
            if not streams:
                raise TagError(report, "unsupported", "no audio stream")
            for pkt in c.demux(streams):
                if pkt.size:
                    h.update(bytes(pkt))
            name = c.format.name
    except TagError:
        raise
    except FileNotFoundError as e:
        raise TagError(report, "vanished", "file not found") from e
    except PermissionError as e:
        raise TagError(report, "io", f"cannot read: {e}") from e
    except (av.FFmpegError, EOFError) as e:
        raise TagError(report, "corrupt", f"audio stream unreadable: {e}") from e
    except OSError as e:
        raise TagError(report, "io", f"cannot read: {e}") from e
    return h.hexdigest(), name


def _matches(path: str, size: int, md5: str) -> bool:
    """Whether the file's bytes are exactly these (False when unreadable)."""
    try:
        return os.path.getsize(path) == size and _file_md5(path) == (size, md5)
    except OSError:
        return False


def _file_md5(path: str) -> tuple[int, str]:
    h = hashlib.md5()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
    )


def _recheck(real: str, st: os.stat_result) -> None:
    """The original must be the file we copied: not deleted, replaced or modified meanwhile."""
    try:
        now = os.stat(real)
    except FileNotFoundError as e:
        raise TagError(real, "vanished", "file disappeared while tagging") from e
    if not _same_file(st, now):
        raise TagError(real, "io", "file changed while tagging; left as it is, retry later")
