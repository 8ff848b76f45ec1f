"""ID3v2 tags with huge frames (a 40 MB cover), read and rewritten without holding them in memory.

mutagen reads a whole ID3v2 tag into memory, parses it into frames (copying each) and renders the
whole tag again to save it: for an MP3 with a 40 MB picture one tag write cost ~500 MB and ten
seconds. nomarr never looks inside such frames, so for a tag holding a frame over
:data:`BIG_FRAME`:

* **reading** parses only the small frames: mutagen gets a stand-in tag made of them (the same
  version, so the same parse), and the file's ``MP3`` object carries it as its tags;
* **saving** renders that stand-in with mutagen (ID3v2.4, as every nomarr write) and splices the
  large frames back in after it, copied byte for byte from the file in 1 MB pieces, the audio after
  them; then the new file's large frames are hashed against the old ones.

Only the plain layouts are taken this way (ID3v2.3/2.4, no tag-level unsynchronisation, no
extended header or footer, large frames neither compressed, encrypted nor grouped); anything else
goes through mutagen as before. docs/reliability.md has the memory figure.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from mutagen.id3 import ID3

from nomarr.tagio.fsio import _CHUNK, TMP_SUFFIX, _fsync_path, _unlink

BIG_FRAME = 1 << 20  # frames above this are never read into memory


@dataclass
class BigFrame:
    """A large frame left in the file: where it is and its header."""

    offset: int  # of its 10-byte header
    fid: bytes
    size: int  # of its body
    flags: bytes


@dataclass
class Layout:
    """A leading ID3v2 tag with at least one large frame."""

    major: int
    end: int  # first byte after the tag (and its padding)
    small: bytes  # the other frames, as they are in the file
    big: list[BigFrame]


def _syncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _to_syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def layout(path: str | os.PathLike[str]) -> Layout | None:
    """The file's leading tag, when it holds a large frame in a layout this module handles."""
    try:
        with open(path, "rb") as fh:
            return _scan(fh)
    except OSError:
        return None


def _scan(fh: BinaryIO) -> Layout | None:
    head = fh.read(10)
    if len(head) < 10 or head[:3] != b"ID3" or head[3] not in (3, 4) or head[5] & 0xF0:
        return None  # no tag, v2.2, unsynchronised, extended header, experimental or footer
    if any(b & 0x80 for b in head[6:10]):
        return None
    end = 10 + _syncsafe(head[6:10])
    if end - 10 <= BIG_FRAME:
        return None
    major = head[3]
    small: list[bytes] = []
    big: list[BigFrame] = []
    pos = 10
    while pos + 10 <= end:
        fh.seek(pos)
        fh_head = fh.read(10)
        fid = fh_head[:4]
        if len(fh_head) < 10 or fid[0] == 0:  # padding
            break
        if not all(48 <= c <= 57 or 65 <= c <= 90 for c in fid):
            return None  # not a frame where one should be: let mutagen judge the tag
        size = _syncsafe(fh_head[4:8]) if major == 4 else int.from_bytes(fh_head[4:8], "big")
        if pos + 10 + size > end:
            return None
        flags = fh_head[8:10]
        if size > BIG_FRAME:
            # v2.3: compression/encryption/grouping; v2.4: grouping/compression/encryption/
            # unsynchronisation/data length: such a body cannot be carried over verbatim
            if (major == 3 and flags[1] & 0xE0) or (major == 4 and flags[1] & 0x4F):
                return None
            big.append(BigFrame(pos, fid, size, flags))
        else:
            small.append(fh_head + fh.read(size))
        pos += 10 + size
    if not big:
        return None
    return Layout(major, end, b"".join(small), big)


class LiteID3(ID3):
    """A stand-in tag: the small frames, with the real tag's ``size`` (mutagen's MPEG parser
    starts looking for audio there) and the layout :func:`save` needs."""

    _nomarr_layout: Layout | None = None

    @property
    def size(self) -> int:
        lay = self._nomarr_layout
        return lay.end if lay is not None else int(super().size)


def lite_id3(lay: Layout, v1_tail: bytes = b"", **load_kw: Any) -> LiteID3:
    """The tag's small frames parsed by mutagen, standing in for the whole tag."""
    data = b"ID3" + bytes((lay.major, 0, 0)) + _to_syncsafe(len(lay.small)) + lay.small
    tags = LiteID3(io.BytesIO(data + v1_tail), **load_kw)
    tags._nomarr_layout = lay
    return tags


class LiteLoader:
    """``MP3(path, ID3=LiteLoader(layout))``: mutagen's MP3 with the stand-in tag (the ``ID3``
    argument is mutagen's own hook for the class that loads a file's tag)."""

    def __init__(self, lay: Layout) -> None:
        self.layout = lay

    def __call__(self, fileobj: BinaryIO, load_v1: bool = True, **kw: Any) -> LiteID3:
        tail = b""
        if load_v1:
            fileobj.seek(0, os.SEEK_END)
            if fileobj.tell() >= self.layout.end + 128:
                fileobj.seek(-128, os.SEEK_END)
                tail = fileobj.read(128)
                tail = tail if tail[:3] == b"TAG" else b""
        return lite_id3(self.layout, tail, load_v1=load_v1, **kw)


def _v24_header(f: BigFrame, major: int) -> bytes:
    """The frame's header as ID3v2.4 writes it (a v2.3 frame's status flags move one bit)."""
    flags = f.flags if major == 4 else bytes(((f.flags[0] >> 1) & 0x70, 0))
    return f.fid + _to_syncsafe(f.size) + flags


def _copy_range(src: BinaryIO, dst: BinaryIO, start: int, n: int | None, h: Any = None) -> None:
    src.seek(start)
    while n is None or n > 0:
        chunk = src.read(_CHUNK if n is None else min(_CHUNK, n))
        if not chunk:
            break
        if h is not None:
            h.update(chunk)
        dst.write(chunk)
        if n is not None:
            n -= len(chunk)


def save(tags: LiteID3, path: str, padding: int = 1024) -> None:
    """Write ``tags`` (a stand-in from :func:`lite_id3`, edited) into ``path`` with the large
    frames carried over: small frames rendered by mutagen as ID3v2.4, then the large ones byte
    for byte, padding, and everything that followed the old tag (the audio, an ID3v1 tag).

    Written to a sibling temp file and renamed over ``path`` (itself nomarr's temp copy), after
    checking the large frames in the result hash as in the original.
    """
    lay = tags._nomarr_layout
    assert lay is not None
    rendered = io.BytesIO()
    tags.save(rendered, v2_version=4, v1=0, padding=lambda info: 0)
    frames = rendered.getvalue()[10:]
    body = len(frames) + sum(10 + f.size for f in lay.big) + padding
    d, name = os.path.split(path)
    out = os.path.join(d, "." + name.lstrip(".") + ".splice" + TMP_SUFFIX)
    _unlink(out)
    want: list[str] = []
    try:
        with open(path, "rb") as src, open(out, "xb") as dst:
            dst.write(b"ID3\x04\x00\x00" + _to_syncsafe(body) + frames)
            for f in lay.big:
                h = hashlib.md5()
                dst.write(_v24_header(f, lay.major))
                _copy_range(src, dst, f.offset + 10, f.size, h)
                want.append(h.hexdigest())
            dst.write(b"\x00" * padding)
            _copy_range(src, dst, lay.end, None)
            dst.flush()
            os.fsync(dst.fileno())
        new = layout(out)
        got: list[str] = []
        if new is not None:
            with open(out, "rb") as fh:
                for f in new.big:
                    h = hashlib.md5()
                    _copy_range(fh, _Null(), f.offset + 10, f.size, h)
                    got.append(h.hexdigest())
        if got != want:
            raise OSError("the large frames did not survive the rewrite")
        os.replace(out, path)
        _fsync_path(d or ".", directory=True)
    finally:
        _unlink(out)


class _Null:
    """A sink for :func:`_copy_range` when only the hash is wanted."""

    def write(self, b: bytes) -> int:
        return len(b)
