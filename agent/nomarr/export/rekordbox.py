"""Rekordbox XML export: the collection and nomarr's playlists, in the format Rekordbox imports.

The DJ_PLAYLISTS document (Rekordbox 5/6 "Import Library"): one ``TRACK`` per present file with
location (``file://localhost`` + the percent-encoded absolute path), title, artist, album, genre
(the file's own genre tag), duration, average BPM, tonality (ID3 notation, as Rekordbox writes),
comments naming the strongest moods, and a ``TEMPO`` beat-grid anchor where the tempo analyzer
found a pulse (constant tempo from the first beat). Playlists go under folders: ``nomarr moods``
(one playlist per mood label of the shared vocabulary the library scores: its tracks at tier
medium or above, strongest first, at most 50), ``nomarr radio`` and
``nomarr paths`` (those asked for with ``--playlists``).

Deterministic: tracks in id order, attributes in a fixed order, numbers in fixed formats, no
timestamps of the export itself, so the same library gives a byte-identical file.
"""

from __future__ import annotations

import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nomarr_client.tags import DEFAULT_TIER_THRESHOLDS, slug
from nomarr_client.vocab import is_mood

from nomarr import __version__, query
from nomarr.store import Store, Track

MOOD_PLAYLIST_SIZE = 50
DEFAULT_MEDIUM = DEFAULT_TIER_THRESHOLDS[1]  # uncalibrated libraries: the grammar's medium bound


@dataclass(frozen=True)
class PlaylistSpec:
    """One playlist asked for: ``mood:LABEL``, ``radio:TRACK`` or ``path:FROM,TO``."""

    kind: str
    args: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> PlaylistSpec:
        """``mood:happy`` / ``radio:/music/a.flac`` / ``radio:12`` / ``path:12,40``."""
        kind, _, rest = text.partition(":")
        kind = kind.strip().lower()
        if kind == "mood" and rest:
            return cls("mood", (rest.strip(),))
        if kind == "radio" and rest:
            return cls("radio", (rest.strip(),))
        if kind == "path" and rest.count(",") == 1:
            a, b = (x.strip() for x in rest.split(","))
            if a and b:
                return cls("path", (a, b))
        raise ValueError(f"{text!r}: a playlist is mood:LABEL, radio:TRACK or path:FROM,TO")


def location(path: str) -> str:
    """Rekordbox's Location: ``file://localhost`` + the percent-encoded absolute path."""
    raw = os.fsencode(os.path.abspath(path))
    return "file://localhost" + urllib.parse.quote(raw, safe="/")


def _kind(path: str) -> str:
    ext = Path(path).suffix.lstrip(".").upper() or "AUDIO"
    return f"{ext} File"


def _genre(path: str) -> str:
    """The file's own genre tag (empty when unreadable or absent)."""
    try:
        import mutagen

        f = mutagen.File(path, easy=True)
    except Exception:  # any parse failure: no genre, never a failed export
        return ""
    if f is None or not f.tags:
        return ""
    vals = f.tags.get("genre") or []
    return "; ".join(str(v) for v in vals if str(v))


def _moods(store: Store, rec: int, n: int = 3) -> list[tuple[str, float]]:
    """The strongest mood-vocabulary labels of a recording, strongest first (ties by name)."""
    best: dict[str, float] = {}
    for a in store.analyses(rec).values():
        for label, s in a.scores.items():
            lab = slug(label)
            if is_mood(lab):
                best[lab] = max(best.get(lab, 0.0), float(s))
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _track_element(store: Store, t: Track, tid: int) -> ET.Element:
    desc = store.descriptors(t.recording_id or 0) or {}
    tempo = desc.get("tempo") or {}
    key = (desc.get("key") or {}).get("key") or ""
    moods = _moods(store, t.recording_id or 0) if t.recording_id else []
    comment = (
        ("nomarr: " + ", ".join(f"{m.replace('_', ' ')} {s:.2f}" for m, s in moods))
        if moods
        else ""
    )
    bpm = tempo.get("bpm")
    attrs = {
        "TrackID": str(tid),
        "Name": t.title or Path(t.path).stem,
        "Artist": t.artist or "",
        "Album": t.album or "",
        "Genre": _genre(t.path),
        "Kind": _kind(t.path),
        "Size": str(t.size),
        "TotalTime": str(int(round(t.duration or 0.0))),
        "AverageBpm": f"{bpm:.2f}" if bpm else "0.00",
        "Comments": comment,
        "Location": location(t.path),
        "Tonality": key,
    }
    el = ET.Element("TRACK", attrs)
    if bpm and tempo.get("first_beat") is not None:
        ET.SubElement(
            el,
            "TEMPO",
            {
                "Inizio": f"{float(tempo['first_beat']):.3f}",
                "Bpm": f"{bpm:.2f}",
                "Metro": "4/4",
                "Battito": "1",
            },
        )
    return el


def _playlist(parent: ET.Element, name: str, track_ids: list[int]) -> None:
    node = ET.SubElement(
        parent,
        "NODE",
        {"Name": name, "Type": "1", "KeyType": "0", "Entries": str(len(track_ids))},
    )
    for i in track_ids:
        ET.SubElement(node, "TRACK", {"Key": str(i)})


def _folder(parent: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(parent, "NODE", {"Type": "0", "Name": name, "Count": "0"})


def build(store: Store, specs: Iterable[PlaylistSpec] = (), moods: bool = True) -> ET.ElementTree:
    """The whole document for a library (present tracks only)."""
    root = ET.Element("DJ_PLAYLISTS", {"Version": "1.0.0"})
    ET.SubElement(root, "PRODUCT", {"Name": "nomarr", "Version": __version__, "Company": "nomarr"})
    tracks = store.tracks(status="ok")
    coll = ET.SubElement(root, "COLLECTION", {"Entries": str(len(tracks))})
    for t in tracks:
        coll.append(_track_element(store, t, t.id))
    pl = ET.SubElement(root, "PLAYLISTS")
    top = ET.SubElement(pl, "NODE", {"Type": "0", "Name": "ROOT", "Count": "0"})
    folders: dict[str, ET.Element] = {}

    def folder(name: str) -> ET.Element:
        if name not in folders:
            folders[name] = _folder(top, name)
        return folders[name]

    if moods:
        floors = _medium_floors(store)
        for label in sorted(lab for lab in query.labels(store) if is_mood(lab)):
            hits = query.mood_playlist(
                store, label, MOOD_PLAYLIST_SIZE, min_score=floors.get(label, DEFAULT_MEDIUM)
            )
            if hits:
                _playlist(
                    folder("nomarr moods"), label.replace("_", " "), [h.track.id for h in hits]
                )
    for spec in specs:
        if spec.kind == "mood":
            hits = query.mood_playlist(store, spec.args[0], MOOD_PLAYLIST_SIZE)
            _playlist(folder("nomarr moods"), spec.args[0], [h.track.id for h in hits])
        elif spec.kind == "radio":
            hits = query.radio(store, spec.args[0], 25)
            _playlist(
                folder("nomarr radio"), f"radio: {_name(hits[0].track)}", [h.track.id for h in hits]
            )
        else:
            hits = query.path_playlist(store, spec.args[0], spec.args[1], 12)
            name = f"path: {_name(hits[0].track)} → {_name(hits[-1].track)}"
            _playlist(folder("nomarr paths"), name, [h.track.id for h in hits])
    for node in [top, *folders.values()]:
        node.set("Count", str(len(node)))
    ET.indent(root, space="  ")
    return ET.ElementTree(root)


def _medium_floors(store: Store) -> dict[str, float]:
    """label slug → the lowest score that is at least tier medium in this library (the lowest
    calibrated bound over the models scoring it)."""
    out: dict[str, float] = {}
    for per_label in store.tier_thresholds().values():
        for label, (_, med) in per_label.items():
            lab = slug(label)
            out[lab] = min(out.get(lab, med), med)
    return out


def _name(t: Track) -> str:
    return " - ".join(x for x in (t.artist, t.title) if x) or Path(t.path).stem


def export(
    store: Store, out: str | os.PathLike[str], specs: Iterable[PlaylistSpec] = ()
) -> dict[str, Any]:
    """Write the document to ``out`` (atomically: a temp file renamed over it)."""
    tree = build(store, specs)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tree.write(tmp, encoding="UTF-8", xml_declaration=True)
    os.replace(tmp, out)
    root = tree.getroot()
    coll = root.find("COLLECTION")
    return {
        "path": str(out),
        "tracks": len(coll) if coll is not None else 0,
        "playlists": len(root.findall(".//NODE[@Type='1']")),
    }
