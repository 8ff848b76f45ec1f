"""Opening files for FFmpeg without the cover art in front of their audio.

An MP3 (and the odd AAC or FLAC) starts with an ID3v2 tag, which may hold a cover picture of tens
of megabytes. FFmpeg reads the whole tag on every open and keeps the picture as an "attached
picture" packet: a 40 MB cover costs 40 MB per open, and an analysis opens a file several times
(probe, onset search, each window, the tag writer's audio hash). None of it is audio, so for a
file whose leading tag is large, FFmpeg is given a view of the file that starts where the tag
ends: the same audio packets, the same decode, no picture (docs/reliability.md).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

# tags up to this size are read as they are (nothing to gain; covers of a few 100 KB are common)
SKIP_ABOVE = 1 << 20


def id3v2_end(fh: BinaryIO) -> int:
    """Offset just past a leading ID3v2 tag (header, frames, padding, footer); 0 without one.

    Repeated tags (some taggers stack them) are all skipped, as FFmpeg itself does.
    """
    end = 0
    while True:
        fh.seek(end)
        head = fh.read(10)
        if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
            return end
        if any(b & 0x80 for b in head[6:10]):  # not a syncsafe size: not a tag
            return end
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        end += 10 + size + (10 if head[3] == 4 and head[5] & 0x10 else 0)


class Window(io.RawIOBase):
    """A read-only view of ``fh`` from ``start`` to its end, as a seekable file of its own."""

    def __init__(self, fh: BinaryIO, start: int) -> None:
        super().__init__()
        self._fh = fh
        self._start = start
        self._size = os.fstat(fh.fileno()).st_size - start
        fh.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._fh.readinto(b)  # type: ignore[attr-defined,no-any-return]

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = self._fh.seek(self._start + max(0, offset))
        elif whence == io.SEEK_CUR:
            pos = self._fh.seek(max(self._start, self._fh.tell() + offset))
        else:
            pos = self._fh.seek(max(self._start, self._start + self._size + offset))
        return pos - self._start

    def tell(self) -> int:
        return self._fh.tell() - self._start

    def close(self) -> None:
        self._fh.close()
        super().close()


def ffmpeg_source(path: str | os.PathLike[str]) -> str | Window:
    """What to hand ``av.open``: the path, or a :class:`Window` past a large leading ID3v2 tag."""
    p = os.fspath(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - owned by the Window (closed with it) or closed here
    except OSError:
        return p  # let FFmpeg report it in its own words
    try:
        end = id3v2_end(fh)
    except OSError:
        end = 0
    if end <= SKIP_ABOVE:
        fh.close()
        return p
    return Window(fh, end)
