"""Parsing files with mutagen (every failure mapped to a :class:`TagError`), reading, saving.

Which containers are supported, how an MP3 is loaded for writing (ID3v1 not merged into v2) and
how each format is saved (ID3v2.4, the original ID3v1 kept byte for byte) are decided here once,
so the write paths and the codecs never call mutagen's loaders or ``save`` themselves.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import mutagen
from mutagen.aiff import AIFF
from mutagen.asf import ASF
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from nomarr_client.tags import LEGACY_PREFIX, PREFIX

from nomarr.tagio import bigid3
from nomarr.tagio.codecs import codec_for
from nomarr.tagio.errors import TagError, _os_reason

SUPPORTED_SUFFIXES = frozenset(
    {
        ".mp3",
        ".wav",
        ".aiff",
        ".aif",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".mp4",
        ".m4b",
        ".wma",
        ".asf",
    }
)

_CLASSES = [MP3, WAVE, AIFF, FLAC, OggVorbis, OggOpus, OggFLAC, MP4, ASF]


@dataclass
class FileTags:
    """What nomarr reads from a file: its own keys, legacy keys, MOOD and identity fields."""

    nom: dict[str, str]
    legacy: dict[str, str]
    mood: str | None
    ids: dict[str, str]
    format: str  # id3 | vorbis | mp4 | asf


def _stat(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as e:
        raise TagError(path, _os_reason(e), f"cannot stat: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise TagError(path, "unsupported", "not a regular file")
    return st


def _load(path: str, cls: type | None = None, *, for_write: bool = False) -> mutagen.FileType:
    """Parse a file with mutagen, mapping every failure to a TagError.

    For MP3 being written, an existing ID3v2 tag is loaded without merging ID3v1 into it (so the
    write does not copy v1 fields into v2); a file with only ID3v1 gets its v2 tag seeded from
    v1, because once an ID3v2 tag exists TagLib (and so Navidrome) shows only that one.
    """
    if cls is None and Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
        raise TagError(path, "unsupported", f"not a supported audio suffix: {Path(path).suffix!r}")
    mp3 = cls is MP3 or (cls is None and Path(path).suffix.lower() == ".mp3")
    lay = bigid3.layout(path) if mp3 else None
    try:
        if lay is not None:  # a huge cover: its frames stay in the file (see bigid3)
            return MP3(path, ID3=bigid3.LiteLoader(lay), load_v1=not for_write)
        if cls is None:
            obj = mutagen.File(path, options=_CLASSES)
            if obj is None:
                raise TagError(path, "unsupported", "not a recognised audio container")
        else:
            obj = cls(path)
        if for_write and isinstance(obj, MP3):
            bare = MP3(path, load_v1=False)
            obj = bare if bare.tags is not None else obj
    except TagError:
        raise
    except Exception as e:  # mutagen raises many types, all meaning "could not parse"
        cause = e.__context__ if isinstance(e.__context__, OSError) else e
        if isinstance(cause, OSError):
            raise TagError(path, _os_reason(cause), f"cannot read: {cause}") from e
        raise TagError(path, "corrupt", f"cannot parse tags: {e}") from e
    return obj


def _file_tags(obj: mutagen.FileType) -> FileTags:
    c = codec_for(obj)
    nom: dict[str, str] = {}
    legacy: dict[str, str] = {}
    # The exact-lowercase spelling wins over case variants when both exist.
    for it in sorted(c.items(obj.tags), key=lambda it: it.name != it.name.lower()):
        low = it.name.lower()
        target = (
            nom if low.startswith(PREFIX) else legacy if low.startswith(LEGACY_PREFIX) else None
        )
        if target is not None and low not in target:
            target[low] = it.values[0] if it.values else ""
    return FileTags(nom, legacy, c.get_mood(obj.tags), c.ids(obj.tags), c.fmt)


def read_tags(path: str | os.PathLike) -> FileTags:
    """The nom:, legacy, MOOD and identity tags of one file (keys lowercased)."""
    p = os.fspath(path)
    _stat(p)
    return _file_tags(_load(p))


def _save(obj: mutagen.FileType, path: str) -> None:
    if getattr(obj.tags, "_nomarr_layout", None) is not None:
        bigid3.save(obj.tags, path)
    elif isinstance(obj, MP3):
        # mutagen regenerates an existing ID3v1 tag from the v2 frames; put the original back.
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 128))
            tail = fh.read(128)
        obj.save(v2_version=4, v1=1)
        if len(tail) == 128 and tail[:3] == b"TAG":
            with open(path, "r+b") as fh:
                fh.seek(-128, os.SEEK_END)
                if fh.read(3) == b"TAG":
                    fh.seek(-128, os.SEEK_END)
                    fh.write(tail)
    elif isinstance(obj, WAVE | AIFF):
        obj.save(v2_version=4)
    else:
        obj.save()


def _load_copy(tmp: str, cls: type, src: str) -> mutagen.FileType:
    try:
        return _load(tmp, cls, for_write=True)
    except TagError as e:  # report the user's file, not nomarr's temp
        raise TagError(src, e.reason, e.detail.replace(tmp, "the copy")) from e
