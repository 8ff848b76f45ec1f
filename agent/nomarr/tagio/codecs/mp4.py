"""MP4/M4A freeform-atom codec."""

from __future__ import annotations

import mutagen
from mutagen.mp4 import AtomDataType, MP4FreeForm

from nomarr.tagio.codecs.base import Item, _digest, _first, _is_owned_name, _std_value

_ITUNES = "com.apple.itunes"


def _ff_text(v: MP4FreeForm) -> str:
    data = bytes(v)
    if getattr(v, "dataformat", None) == AtomDataType.UTF16:
        return data.decode("utf-16-be", "replace")
    return data.decode("utf-8", "replace")


class MP4Codec:
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

    def items(self, tags: mutagen.Tags | None) -> list[Item]:
        out = []
        for k in list(tags or []):
            parts = k.split(":", 2)
            if parts[0] == "----" and len(parts) == 3 and parts[1].lower() == _ITUNES:
                out.append(Item(k, parts[2], [_ff_text(v) for v in tags[k]]))
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

    _STD_FF = {"initial_key", "replaygain_track_gain", "replaygain_track_peak"}
    _STD_NAME = {"initial_key": "initialkey"}

    def get_std(self, tags: mutagen.Tags | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if tags is None:
            return out
        tmpo = tags.get("tmpo")
        if tmpo and tmpo[0]:
            out["bpm"] = str(tmpo[0])
        by_name = {self._STD_NAME.get(n, n): n for n in self._STD_FF}
        vals: dict[str, list[str]] = {}
        for it in self.items(tags):
            if name := by_name.get(it.name.lower()):
                vals.setdefault(name, []).extend(it.values)
        out.update({n: v for n, vs in vals.items() if (v := _std_value(vs))})
        return out

    def set_std(self, tags: mutagen.Tags, name: str, value: str | None) -> None:
        if name == "bpm":
            tags.pop("tmpo", None)
            if value is not None:
                tags["tmpo"] = [int(value)]
            return
        stored = self._STD_NAME.get(name, name)
        for it in self.items(tags):
            if it.name.lower() == stored:
                del tags[it.sid]
        if value is not None:
            self.set(tags, stored, value)

    def _std_sids(self, tags: mutagen.Tags | None) -> set[str]:
        names = {self._STD_NAME.get(n, n) for n in self._STD_FF}
        out = {it.sid for it in self.items(tags) if it.name.lower() in names}
        return out | ({"tmpo"} if tags is not None and "tmpo" in tags else set())

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
        owned |= self._std_sids(obj.tags)
        return sorted((k, _digest(v)) for k, v in (obj.tags or {}).items() if k not in owned)
