"""ASF/WMA attribute codec."""

from __future__ import annotations

import mutagen
from mutagen.asf import ASFUnicodeAttribute

from nomarr.tagio.codecs.base import Item, _digest, _first, _is_owned_name, _std_value


class ASFCodec:
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

    def items(self, tags: mutagen.Tags | None) -> list[Item]:
        grouped: dict[str, list[str]] = {}
        for k, v in tags or []:
            grouped.setdefault(k, []).append(str(v))
        return [Item(k, k, vs) for k, vs in grouped.items()]

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

    _STD = {
        "bpm": "WM/BeatsPerMinute",
        "initial_key": "WM/InitialKey",
        "replaygain_track_gain": "REPLAYGAIN_TRACK_GAIN",
        "replaygain_track_peak": "REPLAYGAIN_TRACK_PEAK",
    }
    _STD_LOW = {v.lower(): k for k, v in _STD.items()}

    def get_std(self, tags: mutagen.Tags | None) -> dict[str, str]:
        vals: dict[str, list[str]] = {}
        for k, v in tags or []:
            if name := self._STD_LOW.get(k.lower()):
                vals.setdefault(name, []).append(str(v))
        return {n: v for n, vs in vals.items() if (v := _std_value(vs))}

    def set_std(self, tags: mutagen.Tags, name: str, value: str | None) -> None:
        field = self._STD.get(name)
        if field is None:
            return
        for k in {k for k, _ in tags if k.lower() == field.lower()}:
            del tags[k]
        if value is not None:
            tags[field] = [ASFUnicodeAttribute(value)]

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
            if not _is_owned_name(k) and k.lower() != "wm/mood" and k.lower() not in self._STD_LOW
        )
