"""Reading and writing nomarr's ``nom:`` keys in audio files, without ever damaging a file.

The contract is DESIGN §2 (key grammar in :mod:`nomarr_client.tags`); the reasoning behind the write path,
its crash states and the per-format details are in docs/tags.md. In short:

- A write is *copy → tag the copy → verify the copy → atomically replace the original*. The copy is
  verified before anything touches the original: the audio packets hash the same (PyAV demux, no
  decode), the tags read back are exactly the intended ones, and every tag nomarr does not own is
  unchanged. A crash at any moment leaves either the old file or the new one, never a mix.
- Where an atomic replace would lose something (hardlinks, an owner we cannot restore, a directory
  we cannot create files in, a bind-mounted file) the verified copy is written back over the
  original inode under a journal record, and :func:`recover` finishes or abandons it after a crash.
- nomarr owns only ``nom:`` keys and, under the ownership rule, the standard MOOD field.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import mutagen
from mutagen.aiff import AIFF
from mutagen.asf import ASF, ASFUnicodeAttribute
from mutagen.flac import FLAC, Padding, VCFLACDict
from mutagen.id3 import COMM, TXXX, Encoding
from mutagen.id3 import Frames as ID3Frames
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from nomarr_client.tags import LEGACY_PREFIX, PREFIX, fmt_score, parse_key

log = logging.getLogger(__name__)

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

TMP_SUFFIX = ".nomarr-tmp"  # scanners and watchers must ignore files ending in this
_JOURNAL_SUFFIX = ".json"
_CHUNK = 1 << 20
_CLASSES = [MP3, WAVE, AIFF, FLAC, OggVorbis, OggOpus, OggFLAC, MP4, ASF]
_ITUNES = "com.apple.itunes"


class TagError(Exception):
    """A file nomarr cannot (or must not) tag; the file is left as it was.

    ``reason`` is a short code callers can count and report: ``read-only``, ``unsupported``,
    ``corrupt``, ``vanished``, ``verify-failed`` or ``io``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.detail = " ".join(str(detail).split())  # one line, whatever mutagen/FFmpeg said
        super().__init__(f"{self.path}: {self.detail} ({reason})")


@dataclass
class FileTags:
    """What nomarr reads from a file: its own keys, legacy keys, MOOD and identity fields."""

    nom: dict[str, str]
    legacy: dict[str, str]
    mood: str | None
    ids: dict[str, str]
    format: str  # id3 | vorbis | mp4 | asf


@dataclass
class WriteResult:
    """What a write did. ``mood_written``: the value written, ``""`` if nomarr removed its MOOD,
    None if MOOD was not touched. ``unmapped``: legacy keys :func:`migrate_legacy` left alone."""

    changed: bool
    written: dict[str, str]
    removed: list[str]
    mood_written: str | None
    method: str  # unchanged | replace | inplace-journal
    unmapped: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- format codecs


@dataclass
class _Item:
    """One custom text key as stored: ``sid`` deletes it, ``name`` is the key as written."""

    sid: str
    name: str
    values: list[str]


def _first(values: list[str]) -> str | None:
    for v in values:
        if v:
            return v
    return None


def _digest(obj: object) -> str:
    return hashlib.md5(repr(obj).encode("utf-8", "surrogatepass")).hexdigest()


def _is_owned_name(name: str) -> bool:
    low = name.lower()
    return low.startswith(PREFIX) or low.startswith(LEGACY_PREFIX)


class _ID3Codec:
    """ID3v2 (MP3, WAV, AIFF): TXXX frames with desc = key; MOOD is TMOO."""

    fmt = "id3"
    _IDS = {
        "musicbrainz_trackid": "musicbrainz release track id",
        "musicbrainz_albumid": "musicbrainz album id",
        "musicbrainz_artistid": "musicbrainz artist id",
    }
    _TEXT = {
        "isrc": "TSRC",
        "title": "TIT2",
        "artist": "TPE1",
        "album": "TALB",
        "albumartist": "TPE2",
        "tracknumber": "TRCK",
    }

    def items(self, tags: mutagen.Tags | None) -> list[_Item]:
        if tags is None:
            return []
        return [_Item(f.HashKey, f.desc, [str(t) for t in f.text]) for f in tags.getall("TXXX")]

    def delete(self, tags: mutagen.Tags, sid: str) -> None:
        del tags[sid]

    def set(self, tags: mutagen.Tags, key: str, value: str) -> None:
        tags.add(TXXX(encoding=Encoding.UTF8, desc=key, text=[value]))

    def get_mood(self, tags: mutagen.Tags | None) -> str | None:
        if tags is None:
            return None
        for f in tags.getall("TMOO"):
            if v := _first([str(t) for t in f.text]):
                return v
        # ID3v2.3 has no TMOO; taggers write TXXX:MOOD there, and TagLib reads both as MOOD.
        for it in self.items(tags):
            if it.name.lower() == "mood" and (v := _first(it.values)):
                return v
        return None

    def set_mood(self, tags: mutagen.Tags, value: str | None) -> None:
        tags.delall("TMOO")
        if value is not None:
            tags.add(ID3Frames["TMOO"](encoding=Encoding.UTF8, text=[value]))

    def ids(self, tags: mutagen.Tags | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if tags is None:
            return out
        for f in tags.getall("UFID"):
            if f.owner == "http://musicbrainz.org" and f.data:
                out["musicbrainz_recordingid"] = f.data.decode("ascii", "replace")
        txxx = {it.name.lower(): _first(it.values) for it in self.items(tags)}
        if "musicbrainz_recordingid" not in out and txxx.get("musicbrainz track id"):
            out["musicbrainz_recordingid"] = txxx["musicbrainz track id"]
        for k, desc in self._IDS.items():
            if v := txxx.get(desc):
                out[k] = v
        for k, fid in self._TEXT.items():
            for f in tags.getall(fid):
                if v := "; ".join(str(t) for t in f.text if str(t)):
                    out[k] = v.split("/")[0] if k == "tracknumber" else v
        return out

    def others(self, obj: mutagen.FileType) -> list[tuple[str, str]]:
        tags = obj.tags
        out = []
        for f in tags.values() if tags is not None else []:
            if f.FrameID == "TMOO" or (f.FrameID == "TXXX" and _is_owned_name(f.desc)):
                continue
            out.append((f.HashKey, _digest(f)))
        # Frames mutagen could not parse survive only if the version is unchanged; count them so
        # an upgrade that would drop them fails verification instead of losing them silently.
        out.append(("\0unknown-frames", str(len(getattr(tags, "unknown_frames", []) or []))))
        return sorted(out)


class _VorbisCodec:
    """Vorbis comments (FLAC, Ogg Vorbis, Opus, Ogg FLAC): field name = key; MOOD field."""

    fmt = "vorbis"
    _IDS = {
        "musicbrainz_recordingid": ("musicbrainz_trackid",),
        "musicbrainz_trackid": ("musicbrainz_releasetrackid",),
        "musicbrainz_albumid": ("musicbrainz_albumid",),
        "musicbrainz_artistid": ("musicbrainz_artistid",),
        "isrc": ("isrc",),
        "title": ("title",),
        "artist": ("artist",),
        "album": ("album",),
        "albumartist": ("albumartist", "album artist"),
        "tracknumber": ("tracknumber",),
    }

    def items(self, tags: mutagen.Tags | None) -> list[_Item]:
        grouped: dict[str, list[str]] = {}
        for k, v in tags or []:
            grouped.setdefault(k, []).append(v)
        return [_Item(k, k, vs) for k, vs in grouped.items()]

    def _remove(self, tags: mutagen.Tags, names: set[str]) -> None:
        kept = [kv for kv in tags if kv[0] not in names]
        del tags[:]
        tags.extend(kept)

    def delete(self, tags: mutagen.Tags, sid: str) -> None:
        self._remove(tags, {sid})

    def set(self, tags: mutagen.Tags, key: str, value: str) -> None:
        tags.append((key, value))

    def get_mood(self, tags: mutagen.Tags | None) -> str | None:
        return _first([v for k, v in tags or [] if k.lower() == "mood"])

    def set_mood(self, tags: mutagen.Tags, value: str | None) -> None:
        self._remove(tags, {k for k, _ in tags if k.lower() == "mood"})
        if value is not None:
            tags.append(("MOOD", value))

    def ids(self, tags: mutagen.Tags | None) -> dict[str, str]:
        low: dict[str, list[str]] = {}
        for k, v in tags or []:
            low.setdefault(k.lower(), []).append(v)
        out = {}
        for k, names in self._IDS.items():
            for n in names:
                vals = [v for v in low.get(n, []) if v]
                if vals:
                    one = k.startswith("musicbrainz") or k in ("isrc", "tracknumber")
                    v = vals[0] if one else "; ".join(vals)
                    out[k] = v.split("/")[0] if k == "tracknumber" else v
                    break
        return out

    def others(self, obj: mutagen.FileType) -> list[tuple[str, str]]:
        out = [
            (k.lower(), _digest(v))
            for k, v in obj.tags or []
            if not _is_owned_name(k) and k.lower() != "mood"
        ]
        for i, block in enumerate(getattr(obj, "metadata_blocks", None) or []):
            if isinstance(block, VCFLACDict | Padding):
                continue
            out.append((f"\0flac-block-{type(block).__name__}-{i}", _digest(block.write())))
        return sorted(out)


def _ff_text(v: MP4FreeForm) -> str:
    data = bytes(v)
    if getattr(v, "dataformat", None) == AtomDataType.UTF16:
        return data.decode("utf-16-be", "replace")
    return data.decode("utf-8", "replace")


class _MP4Codec:
    """MP4/M4A: freeform atoms ``----:com.apple.iTunes:<key>`` (UTF-8); MOOD is a freeform too."""

    fmt = "mp4"
    _FF = {
        "musicbrainz_recordingid": "musicbrainz track id",
        "musicbrainz_trackid": "musicbrainz release track id",
        "musicbrainz_albumid": "musicbrainz album id",
        "musicbrainz_artistid": "musicbrainz artist id",
        "isrc": "isrc",
    }
    _TEXT = {"title": "©nam", "artist": "©ART", "album": "©alb", "albumartist": "aART"}

    def items(self, tags: mutagen.Tags | None) -> list[_Item]:
        out = []
        for k in list(tags or []):
            parts = k.split(":", 2)
            if parts[0] == "----" and len(parts) == 3 and parts[1].lower() == _ITUNES:
                out.append(_Item(k, parts[2], [_ff_text(v) for v in tags[k]]))
        return out

    def delete(self, tags: mutagen.Tags, sid: str) -> None:
        del tags[sid]

    def set(self, tags: mutagen.Tags, key: str, value: str) -> None:
        ff = MP4FreeForm(value.encode("utf-8"), dataformat=AtomDataType.UTF8)
        tags["----:com.apple.iTunes:" + key] = [ff]

    def get_mood(self, tags: mutagen.Tags | None) -> str | None:
        for it in self.items(tags):
            if it.name.lower() == "mood" and (v := _first(it.values)):
                return v
        return None

    def set_mood(self, tags: mutagen.Tags, value: str | None) -> None:
        for it in self.items(tags):
            if it.name.lower() == "mood":
                del tags[it.sid]
        if value is not None:
            self.set(tags, "MOOD", value)

    def ids(self, tags: mutagen.Tags | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if tags is None:
            return out
        ff = {it.name.lower(): _first(it.values) for it in self.items(tags)}
        for k, name in self._FF.items():
            if v := ff.get(name):
                out[k] = v
        for k, atom in self._TEXT.items():
            if v := "; ".join(str(x) for x in tags.get(atom, []) if str(x)):
                out[k] = v
        trkn = tags.get("trkn")
        if trkn and trkn[0] and trkn[0][0]:
            out["tracknumber"] = str(trkn[0][0])
        return out

    def others(self, obj: mutagen.FileType) -> list[tuple[str, str]]:
        owned = {
            it.sid
            for it in self.items(obj.tags)
            if _is_owned_name(it.name) or it.name.lower() == "mood"
        }
        return sorted((k, _digest(v)) for k, v in (obj.tags or {}).items() if k not in owned)


class _ASFCodec:
    """ASF/WMA: attribute named = key (unicode string); MOOD is ``WM/Mood``."""

    fmt = "asf"
    _IDS = {
        "musicbrainz_recordingid": "musicbrainz/track id",
        "musicbrainz_trackid": "musicbrainz/release track id",
        "musicbrainz_albumid": "musicbrainz/album id",
        "musicbrainz_artistid": "musicbrainz/artist id",
        "isrc": "wm/isrc",
        "title": "title",
        "artist": "author",
        "album": "wm/albumtitle",
        "albumartist": "wm/albumartist",
        "tracknumber": "wm/tracknumber",
    }

    def items(self, tags: mutagen.Tags | None) -> list[_Item]:
        grouped: dict[str, list[str]] = {}
        for k, v in tags or []:
            grouped.setdefault(k, []).append(str(v))
        return [_Item(k, k, vs) for k, vs in grouped.items()]

    def delete(self, tags: mutagen.Tags, sid: str) -> None:
        del tags[sid]

    def set(self, tags: mutagen.Tags, key: str, value: str) -> None:
        tags[key] = [ASFUnicodeAttribute(value)]

    def get_mood(self, tags: mutagen.Tags | None) -> str | None:
        return _first([str(v) for k, v in tags or [] if k.lower() == "wm/mood"])

    def set_mood(self, tags: mutagen.Tags, value: str | None) -> None:
        for k in {k for k, _ in tags if k.lower() == "wm/mood"}:
            del tags[k]
        if value is not None:
            tags["WM/Mood"] = [ASFUnicodeAttribute(value)]

    def ids(self, tags: mutagen.Tags | None) -> dict[str, str]:
        low: dict[str, str] = {}
        for k, v in tags or []:
            if str(v):
                low.setdefault(k.lower(), str(v))
        return {k: low[n] for k, n in self._IDS.items() if n in low}

    def others(self, obj: mutagen.FileType) -> list[tuple[str, str]]:
        return sorted(
            (k, _digest(v))
            for k, v in obj.tags or []
            if not _is_owned_name(k) and k.lower() != "wm/mood"
        )


_ID3, _VORBIS, _MP4, _ASF = _ID3Codec(), _VorbisCodec(), _MP4Codec(), _ASFCodec()
_Codec = _ID3Codec | _VorbisCodec | _MP4Codec | _ASFCodec
_CODECS: dict[type, _Codec] = {
    MP3: _ID3,
    WAVE: _ID3,
    AIFF: _ID3,
    FLAC: _VORBIS,
    OggVorbis: _VORBIS,
    OggOpus: _VORBIS,
    OggFLAC: _VORBIS,
    MP4: _MP4,
    ASF: _ASF,
}


# --------------------------------------------------------------------------- loading


def _os_reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "vanished"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return "read-only"
    return "io"


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
    try:
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


def _codec(obj: mutagen.FileType) -> _Codec:
    return _CODECS[type(obj)]


def _file_tags(obj: mutagen.FileType) -> FileTags:
    c = _codec(obj)
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


# --------------------------------------------------------------------------- audio hash


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
        with av.open(p, format=fmt) as c:
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


# --------------------------------------------------------------------------- planning


@dataclass
class _Request:
    nom: dict[str, str]
    mood: str | None
    mood_owned: str | None
    legacy: set[str] | None  # legacy keys to remove; None = all of them


@dataclass
class _Plan:
    delete: list[str]  # sids
    write: dict[str, str]
    removed: list[str]
    mood: tuple[str | None] | None  # (new value or None to remove,) or None = leave MOOD


def _plan(obj: mutagen.FileType, req: _Request) -> _Plan | None:
    """The edits that make this file carry exactly ``req``; None when it already does."""
    c = _codec(obj)
    by_key: dict[str, list[_Item]] = {}
    legacy: dict[str, list[_Item]] = {}
    for it in c.items(obj.tags):
        low = it.name.lower()
        if low.startswith(PREFIX):
            by_key.setdefault(low, []).append(it)
        elif low.startswith(LEGACY_PREFIX):
            legacy.setdefault(low, []).append(it)
    delete: list[str] = []
    write: dict[str, str] = {}
    removed: list[str] = []
    for key, value in req.nom.items():
        have = by_key.pop(key, [])
        if len(have) == 1 and have[0].name == key and have[0].values == [value]:
            continue
        delete += [it.sid for it in have]
        write[key] = value
    for key, have in sorted(by_key.items()):  # stale keys from older model builds
        delete += [it.sid for it in have]
        removed.append(key)
    for key, have in sorted(legacy.items()):
        if req.legacy is None or key in req.legacy:
            delete += [it.sid for it in have]
            removed.append(key)
    cur = c.get_mood(obj.tags)
    mood: tuple[str | None] | None = None
    if req.mood is not None:
        if cur != req.mood and (cur is None or (req.mood_owned and cur == req.mood_owned)):
            mood = (req.mood,)
    elif req.mood_owned and cur == req.mood_owned:
        mood = (None,)
    if not delete and not write and mood is None:
        return None
    return _Plan(delete, write, removed, mood)


def _apply(obj: mutagen.FileType, plan: _Plan, path: str) -> list[tuple[str, str]]:
    """Edit the in-memory tags; returns snapshot entries of frames mirrored from WAV INFO."""
    c = _codec(obj)
    mirrored: list[tuple[str, str]] = []
    if obj.tags is None:
        obj.add_tags()
        if isinstance(obj, WAVE):
            mirrored = _mirror_info(path, obj.tags)
    for sid in plan.delete:
        c.delete(obj.tags, sid)
    for key, value in sorted(plan.write.items()):
        c.set(obj.tags, key, value)
    if plan.mood is not None:
        c.set_mood(obj.tags, plan.mood[0])
    return mirrored


def _state(obj: mutagen.FileType) -> tuple:
    c = _codec(obj)
    items = sorted(
        (it.name, tuple(it.values)) for it in c.items(obj.tags) if _is_owned_name(it.name)
    )
    return items, c.get_mood(obj.tags), c.others(obj)


def _save(obj: mutagen.FileType, path: str) -> None:
    if isinstance(obj, MP3):
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


def _fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # platforms without directory fds (Windows)
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _load_copy(tmp: str, cls: type, src: str) -> mutagen.FileType:
    try:
        return _load(tmp, cls, for_write=True)
    except TagError as e:  # report the user's file, not nomarr's temp
        raise TagError(src, e.reason, e.detail.replace(tmp, "the copy")) from e


def _tag_copy(
    tmp: str, cls: type, req: _Request, src: str, audio: tuple[str, str] | None
) -> _Plan | None:
    """Tag the copy at ``tmp`` and verify it; returns the plan applied (None: nothing to do).

    Verification, all on the copy: (1) mutagen reads back exactly the tag state it was asked to
    write; (2) every tag nomarr does not own is unchanged; (3) a second plan against the copy is
    empty; (4) with ``audio`` (md5, demuxer), the audio packets hash as the original's did.
    """
    obj = _load_copy(tmp, cls, src)
    plan = _plan(obj, req)
    if plan is None:
        return None
    before = _codec(obj).others(obj)
    mirrored = _apply(obj, plan, tmp)
    after = _codec(obj).others(obj)
    if after != sorted(before + mirrored):
        raise TagError(src, "verify-failed", "edit would change tags nomarr does not own")
    expected = _state(obj)
    try:
        _save(obj, tmp)
    except Exception as e:
        raise TagError(src, "io", f"mutagen could not write the copy: {e}") from e
    _fsync_path(tmp)
    back = _load_copy(tmp, cls, src)
    if _state(back) != expected or _plan(back, req) is not None:
        raise TagError(src, "verify-failed", "tags read back differ from the tags written")
    if audio is not None:
        try:
            got, _ = _audio_md5(tmp, audio[1], src)
        except TagError as e:
            raise TagError(src, "verify-failed", f"audio of the copy unreadable: {e.detail}") from e
        if got != audio[0]:
            raise TagError(src, "verify-failed", "audio stream changed in the copy")
    return plan


# --------------------------------------------------------------------------- write paths


# Striped locks: bounded memory however many files a scan touches; never held two at a time.
_LOCKS = [threading.Lock() for _ in range(64)]


@contextlib.contextmanager
def _path_lock(real: str) -> Iterator[None]:
    """One writer per file within this process (scan workers may be threads)."""
    with _LOCKS[int(_journal_name(real)[:8], 16) % len(_LOCKS)]:
        yield


def _fs_readonly(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False


def _dir_writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def _check_writable(real: str, st: os.stat_result) -> None:
    """Refuse read-only files before anything is created.

    Root passes every permission check, so a file with no write bit at all is also treated as
    read-only: a user who ran ``chmod a-w`` meant it, whoever nomarr runs as.
    """
    if _fs_readonly(os.path.dirname(real)):
        raise TagError(real, "read-only", "file system is mounted read-only")
    if not os.access(real, os.W_OK) or not (st.st_mode & 0o222):
        raise TagError(real, "read-only", "no write permission")


def _can_chown(st: os.stat_result) -> bool:
    if not hasattr(os, "geteuid"):
        return True
    if os.geteuid() == 0:
        return True
    return st.st_uid == os.geteuid() and st.st_gid in {os.getegid(), *os.getgroups()}


class _NeedInplace(Exception):
    """An atomic replace would lose something; use the journalled in-place path."""


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


def _copy_fd(src: str, fd: int, hash_src: bool = False) -> str | None:
    h = hashlib.md5() if hash_src else None
    with open(src, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if h:
                h.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    return h.hexdigest() if h else None


def _copy_xattrs(src: str, fd: int) -> None:
    """Extended attributes (ACLs, SELinux labels, user tags) must survive a replace."""
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        try:
            value = os.getxattr(src, name)
            with contextlib.suppress(OSError):
                if os.getxattr(fd, name) == value:
                    continue
            os.setxattr(fd, name, value)
        except OSError as e:
            raise _NeedInplace(f"cannot copy xattr {name}: {e}") from e


def _unlink(path: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_replace(
    real: str, st: os.stat_result, cls: type, req: _Request, audio: tuple[str, str] | None
) -> _Plan | None:
    d, name = os.path.split(real)
    tmp = os.path.join(d, "." + name + TMP_SUFFIX)
    _unlink(tmp)  # a stray from an earlier crash
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except PermissionError as e:
        raise _NeedInplace(f"cannot create a file beside it: {e}") from e
    except OSError as e:
        raise TagError(real, _os_reason(e), f"cannot create temp copy: {e}") from e
    try:
        try:
            _copy_fd(real, fd)
            fst = os.fstat(fd)
            if hasattr(os, "fchown") and (fst.st_uid, fst.st_gid) != (st.st_uid, st.st_gid):
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                except PermissionError as e:
                    raise _NeedInplace(f"cannot restore owner: {e}") from e
            if hasattr(os, "fchmod"):
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            else:
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
            _copy_xattrs(real, fd)
        except FileNotFoundError as e:
            raise TagError(real, "vanished", "file disappeared while copying") from e
        except OSError as e:
            raise TagError(real, _os_reason(e), f"cannot copy: {e}") from e
        finally:
            os.close(fd)
        plan = _tag_copy(tmp, cls, req, real, audio)
        if plan is None:
            return None
        _recheck(real, st)
        try:
            os.replace(tmp, real)
        except OSError as e:  # EBUSY (bind-mounted file), EPERM (sticky dir, immutable), EXDEV
            raise _NeedInplace(f"atomic replace refused: {e}") from e
        _fsync_path(d, directory=True)
        return plan
    finally:
        _unlink(tmp)


# In-place path. States, in order (docs/tags.md has the full argument):
#   A. temp being built/verified in journal_dir, no record   → original untouched; recover()
#      deletes the stray temp.
#   B. record durable (written via rename + fsync), copy-back not started → original untouched,
#      temp verified; recover() finishes the copy-back.
#   C. copy-back in progress → original damaged, temp verified and fsynced; recover() redoes the
#      copy-back (idempotent: it writes the whole temp from offset 0 and truncates).
#   D. copy-back done and fsynced, record not yet deleted → recover() sees original == temp and
#      just cleans up.


def _journal_name(real: str) -> str:
    return hashlib.sha1(real.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _write_json_durably(path: Path, data: dict) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)
    _fsync_path(path.parent, directory=True)


def _copy_back(tmp: str, real: str, dev: int, ino: int) -> None:
    """Write the temp's bytes over the original inode: space first, then bytes, then truncate.

    ``posix_fallocate`` before the first byte is written means running out of disk space fails
    while the original is still intact, not half-way through overwriting it. Contract: a TagError
    means nothing was written; an OSError means the original may be partly overwritten.
    """
    size = os.path.getsize(tmp)
    try:
        fd = os.open(real, os.O_WRONLY)
    except FileNotFoundError as e:
        raise TagError(real, "vanished", "file disappeared before copy-back") from e
    except OSError as e:  # EPERM (immutable), EACCES, EROFS: nothing written yet
        reason = "read-only" if e.errno in (errno.EPERM, errno.EACCES, errno.EROFS) else "io"
        raise TagError(real, reason, f"cannot open for writing: {e}") from e
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (dev, ino):
            raise TagError(real, "vanished", "file was replaced by another one")
        if size > fst.st_size and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    if os.fstat(fd).st_size != fst.st_size:
                        os.ftruncate(fd, fst.st_size)
                    raise TagError(real, "io", f"no space to grow the file: {e}") from e
        os.lseek(fd, 0, os.SEEK_SET)
        _copy_fd(tmp, fd)
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _cleanup_journal(rec: Path, tmp: str | os.PathLike) -> None:
    _unlink(tmp)
    _unlink(rec)
    _fsync_path(rec.parent, directory=True)


def _stage_inplace(
    real: str,
    st: os.stat_result,
    cls: type,
    req: _Request,
    jdir: Path,
    audio: tuple[str, str] | None,
) -> tuple[_Plan | None, Path, dict]:
    """States A→B: build and verify the temp in the journal dir, then make the record durable."""
    name = _journal_name(real)
    tmp = jdir / (name + TMP_SUFFIX)
    rec = jdir / (name + _JOURNAL_SUFFIX)
    try:
        jdir.mkdir(parents=True, exist_ok=True)
        _unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise TagError(real, "io", f"cannot use journal dir {jdir}: {e}") from e
    try:
        try:
            orig_md5 = _copy_fd(real, fd, hash_src=True)
        except FileNotFoundError as e:
            raise TagError(real, "vanished", "file disappeared while copying") from e
        except OSError as e:
            raise TagError(real, _os_reason(e), f"cannot copy: {e}") from e
        finally:
            os.close(fd)
        plan = _tag_copy(str(tmp), cls, req, real, audio)
        if plan is None:
            _unlink(tmp)
            return None, rec, {}
        _recheck(real, st)
        temp_size, temp_md5 = _file_md5(str(tmp))
        data = {
            "version": 1,
            "path": real,
            "temp": str(tmp),
            "dev": st.st_dev,
            "ino": st.st_ino,
            "orig_size": st.st_size,
            "orig_mtime_ns": st.st_mtime_ns,
            "orig_md5": orig_md5,
            "temp_size": temp_size,
            "temp_md5": temp_md5,
            "created": time.time(),
        }
        _write_json_durably(rec, data)
    except BaseException:
        _unlink(tmp)
        raise
    return plan, rec, data


def _write_inplace(
    real: str,
    st: os.stat_result,
    cls: type,
    req: _Request,
    jdir: Path,
    audio: tuple[str, str] | None,
    verify: bool,
) -> _Plan | None:
    plan, rec, data = _stage_inplace(real, st, cls, req, jdir, audio)
    if plan is None:
        return None
    # From here on the record is durable. It is deleted only once the original is known good
    # (finished, or provably untouched); anything else, a crash included, leaves it for recover().
    try:
        _copy_back(data["temp"], real, data["dev"], data["ino"])
    except TagError:  # raised before the first byte was written: the original is intact
        _cleanup_journal(rec, data["temp"])
        raise
    except OSError as e:  # bytes may be half-written: try once more now, else leave to recover()
        if _recover_record(rec, data) in ("finished", "done"):
            return plan
        raise TagError(
            real, "io", f"copy-back failed ({e}); journal {rec} kept for recover()"
        ) from e
    if verify and _file_md5(real) != (data["temp_size"], data["temp_md5"]):
        if _recover_record(rec, data) not in ("finished", "done"):
            raise TagError(real, "io", f"file differs from the verified copy; journal {rec} kept")
        return plan
    _cleanup_journal(rec, data["temp"])
    return plan


def _recover_record(rec: Path, data: dict) -> str | None:
    """Bring one journalled write to a clean end.

    Returns ``finished`` (copy-back redone), ``done`` (it had completed), ``abandoned`` (original
    intact, copy dropped), ``gone`` (file deleted or replaced meanwhile: not ours to touch), or None
    when it cannot be resolved safely (record and copy are then kept for a human).
    """
    real, tmp = data["path"], data["temp"]
    temp_ok = _matches(tmp, data["temp_size"], data["temp_md5"])
    try:
        st = os.stat(real)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(real)):
            # An unmounted share looks like this too; the copy may be the only good one left.
            log.warning("journalled file unreachable; journal kept", extra={"path": real})
            return None
        log.warning("journalled file is gone; dropping its journal", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "gone"
    if st.st_dev != data["dev"]:  # remounted elsewhere, or another file system: don't guess
        log.warning("journalled file on another device now; journal kept", extra={"path": real})
        return None
    if st.st_ino != data["ino"]:
        log.warning("journalled file was replaced by another; leaving it", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "gone"
    if _matches(real, data["temp_size"], data["temp_md5"]):  # state D
        _cleanup_journal(rec, tmp)
        return "done"
    if temp_ok:  # states B and C
        try:
            _copy_back(tmp, real, data["dev"], data["ino"])
        except (OSError, TagError) as e:
            if _matches(real, data["orig_size"], data["orig_md5"]):
                log.warning(
                    "cannot finish an interrupted tag write; original intact, dropped",
                    extra={"path": real, "error": str(e)},
                )
                _cleanup_journal(rec, tmp)
                return "abandoned"
            log.error("cannot finish journalled write", extra={"path": real, "error": str(e)})
            return None
        if not _matches(real, data["temp_size"], data["temp_md5"]):
            log.error("journalled write did not verify", extra={"path": real})
            return None
        log.info("finished an interrupted tag write", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "finished"
    if _matches(real, data["orig_size"], data["orig_md5"]):  # copy lost/damaged; original intact
        log.warning("interrupted tag write abandoned; original intact", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "abandoned"
    log.error(
        "file damaged and its verified copy is gone or damaged; journal kept",
        extra={"path": real, "journal": str(rec)},
    )
    return None


def recover(journal_dir: str | os.PathLike) -> list[str]:
    """Finish or roll back in-place writes interrupted by a crash; run once at startup.

    Returns the paths whose journal records were resolved. A record that cannot be resolved
    safely (the file is damaged *and* its verified copy is gone) is logged and kept.
    """
    jdir = Path(journal_dir)
    if not jdir.is_dir():
        return []
    handled = []
    for rec in sorted(jdir.glob("*" + _JOURNAL_SUFFIX)):
        try:
            data = json.loads(rec.read_text(encoding="utf-8"))
            data["path"], data["temp"]  # noqa: B018 - schema check
        except (OSError, ValueError, KeyError, TypeError):
            # Records are written whole (rename) so this is not a crash artefact; don't guess.
            log.error(
                "unreadable tag-write journal record; left in place", extra={"path": str(rec)}
            )
            continue
        with _path_lock(data["path"]):
            try:
                status = _recover_record(rec, data)
            except Exception as e:  # one bad record must not stop startup; it stays for later
                log.error(
                    "tag-write recovery failed", extra={"path": data["path"], "error": str(e)}
                )
                status = None
        if status is not None:
            handled.append(data["path"])
    for stray in jdir.glob("*" + TMP_SUFFIX):  # state A leftovers
        if not stray.with_name(stray.name[: -len(TMP_SUFFIX)] + _JOURNAL_SUFFIX).exists():
            _unlink(stray)
    for part in jdir.glob("*" + _JOURNAL_SUFFIX + ".part"):
        _unlink(part)
    return handled


# --------------------------------------------------------------------------- public writers


def _validate_nom(nom: dict[str, str]) -> None:
    for k, v in nom.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"nom keys and values must be str: {k!r}={v!r}")
        if parse_key(k).key != k:
            raise ValueError(f"{k!r} is not a canonical lowercase nom: key")
        if not v or "\0" in v:
            raise ValueError(f"{k!r}: value must be non-empty and contain no NUL")


def _write(
    path: str | os.PathLike, req: _Request, journal_dir: str | os.PathLike | None, verify: bool
) -> WriteResult:
    src = os.fspath(path)
    # A symlinked path is written through to its target; replacing the link itself would turn it
    # into a regular file.
    real = os.path.realpath(src)
    with _path_lock(real):
        jdir = Path(journal_dir) if journal_dir is not None else None
        if jdir is not None:
            pending = jdir / (_journal_name(real) + _JOURNAL_SUFFIX)
            if pending.exists():  # an interrupted write of this very file: settle it first
                with contextlib.suppress(OSError, ValueError):
                    _recover_record(pending, json.loads(pending.read_text(encoding="utf-8")))
                if pending.exists():
                    raise TagError(real, "io", f"unresolved tag-write journal {pending}")
        st = _stat(real)
        obj = _load(real)
        if isinstance(obj, WAVE | AIFF):
            _iff_check(real)
        wobj = _load(real, type(obj), for_write=True) if isinstance(obj, MP3) else obj
        plan = _plan(wobj, req)
        if plan is None:
            return WriteResult(False, {}, [], None, "unchanged")
        _check_writable(real, st)
        cls = type(obj)
        audio = _audio_md5(real) if verify else None
        d = os.path.dirname(real)
        method = "replace"
        if st.st_nlink > 1 or not _can_chown(st) or not _dir_writable(d):
            method = "inplace-journal"
        else:
            try:
                done = _write_replace(real, st, cls, req, audio)
            except _NeedInplace as e:
                log.info(
                    "atomic replace not possible; using journalled in-place write",
                    extra={"path": real, "why": str(e)},
                )
                method = "inplace-journal"
        if method == "inplace-journal":
            if jdir is None:
                raise TagError(
                    real,
                    "io",
                    "in-place write needed (hardlinks, owner or directory "
                    "permissions) but no journal_dir given",
                )
            done = _write_inplace(real, st, cls, req, jdir, audio, verify)
        if done is None:
            return WriteResult(False, {}, [], None, "unchanged")
        mood = None if done.mood is None else (done.mood[0] or "")
        return WriteResult(True, done.write, done.removed, mood, method)


def write_tags(
    path: str | os.PathLike,
    nom: dict[str, str],
    *,
    mood: str | None = None,
    mood_owned: str | None = None,
    remove_legacy: bool = False,
    journal_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> WriteResult:
    """Make ``path`` carry exactly the ``nom:`` keys in ``nom`` (and MOOD under the ownership rule).

    ``nom`` is the complete desired set: other ``nom:`` keys in the file are removed, equal ones
    left alone, and a file already in the desired state is not touched at all. MOOD is set to
    ``mood`` only where it is empty or still ``mood_owned`` (what nomarr wrote last time); with
    ``mood=None`` an owned MOOD is removed. Nothing else in the file changes except ``essentia:``
    keys when ``remove_legacy``. ``journal_dir`` enables the in-place path that hardlinked files,
    foreign-owned files and unwritable directories need. ``verify=False`` skips the audio hash
    (benchmarks only). Raises TagError; the file is then unchanged.
    """
    _validate_nom(nom)
    req = _Request(dict(nom), mood or None, mood_owned or None, None if remove_legacy else set())
    return _write(path, req, journal_dir, verify)


def _legacy_target(key: str, mapping: dict[str, str]) -> str | None:
    body = key[len(LEGACY_PREFIX) :]
    try:
        return parse_key(PREFIX + body).key
    except ValueError:
        pass
    target = mapping.get(key)
    if target is None:
        return None
    return parse_key(target).key  # a bad mapping is the caller's bug: ValueError


def migrate_legacy(
    path: str | os.PathLike,
    *,
    mapping: dict[str, str] | None = None,
    journal_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> WriteResult:
    """Rewrite legacy ``essentia:`` keys as ``nom:`` keys, best effort, through the safe writer.

    Rule per legacy key: if ``nom:`` + its body is a valid nom key, use that; else use
    ``mapping[legacy_key]``; else leave it and report it in ``unmapped``. Existing ``nom:`` keys
    are kept and win over a migrated value for the same key. Numeric score/tier values are
    normalised to 4 decimals. Migrated legacy keys are removed; MOOD is not touched.
    """
    src = os.fspath(path)
    current = read_tags(src)
    mapping = {k.lower(): v for k, v in (mapping or {}).items()}
    nom = dict(current.nom)
    migrate: set[str] = set()
    unmapped: list[str] = []
    for key, value in sorted(current.legacy.items()):
        target = _legacy_target(key, mapping)
        if target is None:
            unmapped.append(key)
            continue
        migrate.add(key)
        if parse_key(target).kind != "provenance":
            with contextlib.suppress(ValueError):
                value = fmt_score(float(value))
        nom.setdefault(target, value)
    if unmapped:
        log.warning("legacy keys left unmigrated", extra={"path": src, "keys": ",".join(unmapped)})
    req = _Request(nom, None, None, migrate)
    result = _write(src, req, journal_dir, verify)
    result.unmapped = unmapped
    return result
