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


# The proof for MP3 files: md5 of every byte after the ID3v2 tag. nomarr's MP3 writes change only
# that leading tag (the original ID3v1 and any trailing APE tag are kept byte for byte, see
# tagio.files._save), so the bytes after it must be identical: a stronger proof than the packet
# md5 (every MPEG frame and everything between them), at the cost of one sequential read instead
# of a demux (about 10 ms instead of 50-80 ms for a 4-minute file; docs/bench.md).
MP3_BYTES = "mp3-bytes-after-id3v2"


def _id3v2_end(fh: object) -> int:
    """Offset of the first byte after a leading ID3v2 tag (0 without one)."""
    head = fh.read(10)  # type: ignore[attr-defined]
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = 0
    for b in head[6:10]:
        size = (size << 7) | (b & 0x7F)
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _mp3_body_md5(p: str, report: str) -> tuple[str, str]:
    h = hashlib.md5()
    try:
        with open(p, "rb") as fh:
            fh.seek(_id3v2_end(fh))
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError as e:
        raise TagError(report, "vanished", "file not found") from e
    except OSError as e:
        raise TagError(report, "io", f"cannot read: {e}") from e
    return h.hexdigest(), MP3_BYTES


def _audio_md5(p: str, fmt: str | None = None, report: str | None = None) -> tuple[str, str]:
    """(md5, demuxer name); ``fmt`` pins the demuxer so a suffix-less temp copy is read the same
    way as the original was (or, with :data:`MP3_BYTES`, the MP3 byte proof)."""
    report = report or p
    if fmt == MP3_BYTES:
        return _mp3_body_md5(p, report)
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
