"""WAV/AIFF chunk checks, and mirroring WAV LIST/INFO into a new ID3 tag."""

from __future__ import annotations

import os
import struct

import mutagen
from mutagen.id3 import COMM, Encoding
from mutagen.id3 import Frames as ID3Frames

from nomarr.tagio.codecs.base import _digest
from nomarr.tagio.errors import TagError


def _iff_check(path: str) -> None:
    """Refuse WAV/AIFF whose chunks run past the end of the file (a truncated copy).

    mutagen would append its ID3 chunk at the real end of the file, which lies inside the declared
    ``data`` chunk, and players would then play the tag as audio.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            fmt = "<I"
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            fmt = ">I"
        else:
            return
        off = 12
        while off + 8 <= size:
            fh.seek(off)
            cid, raw = fh.read(4), fh.read(4)
            (n,) = struct.unpack(fmt, raw)
            if off + 8 + n > size:
                name = cid.decode("latin-1")
                raise TagError(
                    path, "corrupt", f"chunk {name!r} runs past end of file (truncated?)"
                )
            off += 8 + n + (n & 1)


def _iff_info(path: str) -> dict[str, str]:
    """The RIFF LIST/INFO fields of a WAV (id → text), for mirroring into a new ID3 tag."""
    out: dict[str, str] = {}
    with open(path, "rb") as fh:
        data = fh.read()
    off = 12
    while off + 8 <= len(data):
        cid = data[off : off + 4]
        (n,) = struct.unpack("<I", data[off + 4 : off + 8])
        body = data[off + 8 : off + 8 + n]
        if cid == b"LIST" and body[:4] == b"INFO":
            sub = 4
            while sub + 8 <= len(body):
                sid = body[sub : sub + 4].decode("latin-1")
                (m,) = struct.unpack("<I", body[sub + 4 : sub + 8])
                raw = body[sub + 8 : sub + 8 + m].split(b"\0", 1)[0]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("latin-1")
                if text.strip():
                    out.setdefault(sid, text.strip())
                sub += 8 + m + (m & 1)
        off += 8 + n + (n & 1)
    return out


# INFO id → ID3 frame, for the fields TagLib shows from INFO (what a WAV "loses" in TagLib-based
# players once an ID3 chunk exists, since TagLib then shows only the ID3 tag).
_INFO_TO_ID3 = {
    "INAM": "TIT2",
    "IART": "TPE1",
    "IPRD": "TALB",
    "ICRD": "TDRC",
    "IGNR": "TCON",
    "IPRT": "TRCK",
    "ITRK": "TRCK",
    "ISFT": "TSSE",
    "ICOP": "TCOP",
    "IMUS": "TCOM",
    "ILNG": "TLAN",
    "IMED": "TMED",
    "IBPM": "TBPM",
    "ISRC": "TSRC",
    "ITCH": "TENC",
    "IWRI": "TEXT",
    "ICMT": "COMM",
}


def _mirror_info(path: str, tags: mutagen.Tags) -> list[tuple[str, str]]:
    added = []
    for sid, text in _iff_info(path).items():
        fid = _INFO_TO_ID3.get(sid)
        if fid is None or tags.getall(fid):
            continue
        if fid == "TDRC" and not (len(text) >= 4 and text[:4].isdigit()):
            continue
        if fid == "COMM":
            frame = COMM(encoding=Encoding.UTF8, lang="eng", desc="", text=[text])
        else:
            frame = ID3Frames[fid](encoding=Encoding.UTF8, text=[text])
        tags.add(frame)
        added.append((frame.HashKey, _digest(tags[frame.HashKey])))
    return added
