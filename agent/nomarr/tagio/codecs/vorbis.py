"""Vorbis-comment codec (FLAC, Ogg Vorbis, Opus, Ogg FLAC)."""

from __future__ import annotations

import mutagen
from mutagen.flac import Padding, VCFLACDict

from nomarr.tagio.codecs.base import Item, _digest, _first, _is_owned_name, _std_value


class VorbisCodec:
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

    def items(self, tags: mutagen.Tags | None) -> list[Item]:
        grouped: dict[str, list[str]] = {}
        for k, v in tags or []:
            grouped.setdefault(k, []).append(v)
        return [Item(k, k, vs) for k, vs in grouped.items()]

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

    _STD = {
        "bpm": "BPM",
        "initial_key": "INITIALKEY",
        "replaygain_track_gain": "REPLAYGAIN_TRACK_GAIN",
        "replaygain_track_peak": "REPLAYGAIN_TRACK_PEAK",
        "r128_track_gain": "R128_TRACK_GAIN",
    }
    _STD_LOW = {v.lower(): k for k, v in _STD.items()}

    def get_std(self, tags: mutagen.Tags | None) -> dict[str, str]:
        vals: dict[str, list[str]] = {}
        for k, v in tags or []:
            if name := self._STD_LOW.get(k.lower()):
                vals.setdefault(name, []).append(v)
        return {n: v for n, vs in vals.items() if (v := _std_value(vs))}

    def set_std(self, tags: mutagen.Tags, name: str, value: str | None) -> None:
        field = self._STD[name]
        self._remove(tags, {k for k, _ in tags if k.lower() == field.lower()})
        if value is not None:
            tags.append((field, value))

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
            if not _is_owned_name(k) and k.lower() != "mood" and k.lower() not in self._STD_LOW
        ]
        for i, block in enumerate(getattr(obj, "metadata_blocks", None) or []):
            if isinstance(block, VCFLACDict | Padding):
                continue
            out.append((f"\0flac-block-{type(block).__name__}-{i}", _digest(block.write())))
        return sorted(out)
