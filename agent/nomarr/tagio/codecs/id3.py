"""ID3v2 codec (MP3, WAV, AIFF)."""

from __future__ import annotations

import mutagen
from mutagen.id3 import TXXX, Encoding
from mutagen.id3 import Frames as ID3Frames

from nomarr.tagio.codecs.base import Item, _digest, _first, _is_owned_name, _std_value


class ID3Codec:
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

    def items(self, tags: mutagen.Tags | None) -> list[Item]:
        if tags is None:
            return []
        return [Item(f.HashKey, f.desc, [str(t) for t in f.text]) for f in tags.getall("TXXX")]

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

    _STD_FRAMES = {"bpm": "TBPM", "initial_key": "TKEY"}
    _STD_TXXX = {"replaygain_track_gain", "replaygain_track_peak"}

    def get_std(self, tags: mutagen.Tags | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if tags is None:
            return out
        for name, fid in self._STD_FRAMES.items():
            for f in tags.getall(fid):
                if v := _first([str(t) for t in f.text]):
                    out[name] = v
                    break
        vals: dict[str, list[str]] = {}
        for it in self.items(tags):
            if (low := it.name.lower()) in self._STD_TXXX:
                vals.setdefault(low, []).extend(it.values)
        out.update({n: v for n, vs in vals.items() if (v := _std_value(vs))})
        return out

    def set_std(self, tags: mutagen.Tags, name: str, value: str | None) -> None:
        if name in self._STD_FRAMES:
            fid = self._STD_FRAMES[name]
            tags.delall(fid)
            if value is not None:
                tags.add(ID3Frames[fid](encoding=Encoding.UTF8, text=[value]))
            return
        for it in self.items(tags):
            if it.name.lower() == name:
                del tags[it.sid]
        if value is not None:
            tags.add(TXXX(encoding=Encoding.UTF8, desc=name.upper(), text=[value]))

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
            if f.FrameID in ("TMOO", "TBPM", "TKEY") or (
                f.FrameID == "TXXX" and (_is_owned_name(f.desc) or f.desc.lower() in self._STD_TXXX)
            ):
                continue
            out.append((f.HashKey, _digest(f)))
        # Frames mutagen could not parse survive only if the version is unchanged; count them so
        # an upgrade that would drop them fails verification instead of losing them silently.
        out.append(("\0unknown-frames", str(len(getattr(tags, "unknown_frames", []) or []))))
        return sorted(out)
