"""The DSP descriptors a bundle record carries: how they are written and how an import judges them.

A record's ``descriptors`` is ``{}`` (the recording has none, or the bundle is version 1) or
``{"provenance", "doc", "timeline"}``: the stored document (``TrackDescriptors.to_dict()``), the
provenance it was computed with, and the compact timeline (:mod:`nomarr.analyzers.timeline`,
zlib bytes as base64, or null when it is missing or larger than :data:`MAX_TIMELINE_BYTES`).

Why the document is checked field by field rather than trusted once its provenance matches: its
values go straight into files. BPM, key and ReplayGain become standard fields a player acts on (a
forged +40 dB track gain is a blown speaker), ``nom:dsp_*`` tags and the columns filters search.
So every value that reaches a tag, a standard field or a column must have the type and range the
analyzers give, the key's three notations must name the same key, and the ReplayGain and R128
gains must be the ones the integrated loudness implies. The parts that only a track page shows
(the tempo's audit trail, notes) are bounded in size. The timeline must decode, within bounds,
with every byte accounted for, and the label lists of models this agent has must be theirs.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nomarr.analyzers import key as keymod
from nomarr.analyzers import tempo as tempomod
from nomarr.analyzers.timeline import VERSION as TIMELINE_VERSION
from nomarr.analyzers.timeline import Timeline

MAX_DOC_BYTES = 256 << 10  # a 2 h mix with 60 regions and their scores is ~60 kB
MAX_TIMELINE_BYTES = 1 << 20  # compressed; 24 h of musicnn patches is ~0.5 MB (export omits more)
MAX_TIMELINE_RAW = 16 << 20  # decompressed: a zlib bomb stops here
MAX_REGIONS = 4096
MAX_NOTES = 16
MAX_TEXT = 300
MAX_MODELS = 32
MAX_LABELS = 4096
# tempo: the analyzers' beat range, widened by the ±3 % refinement and rounding
BPM_RANGE = (tempomod.MIN_BPM * 0.95, tempomod.MAX_BPM * 1.05)
LUFS_RANGE = (-70.5, 12.0)  # BS.1770 absolute gate … full-scale multichannel
PEAK_DB_RANGE = (-400.0, 40.0)  # float sources can exceed full scale
PROVENANCE_RE = re.compile(r"[0-9a-f]{8,64}\Z")

_TOP = {"provenance", "analysed_seconds", "tempo", "key", "energy", "loudness", "silence"}
_TOP |= {"regions", "notes"}
_TEMPO = {"bpm", "confidence", "first_beat", "octave", "reason"}
_KEY = {"key", "mode", "strength", "mode_margin", "camelot", "open_key", "tuning_cents", "reason"}
_ENERGY = {"energy", "danceability", "onset_rate", "dynamic_range_db", "rms_dbfs", "centroid_hz"}
_ENERGY |= {"reason"}
_LOUD = {"integrated_lufs", "lra_lu", "true_peak_dbtp", "sample_peak_dbfs"}
_LOUD |= {"replaygain_track_gain_db", "replaygain_track_peak", "r128_track_gain", "reason"}
_REGION = {"start", "end", "bpm", "key", "camelot", "energy", "scores"}


class BadDescriptors(ValueError):
    """Why a record's descriptors cannot be right (the record is refused as malformed)."""


@dataclass
class Descriptors:
    """A record's descriptors as validated: what :meth:`Store.put_descriptors` takes."""

    provenance: str
    doc: dict[str, Any]
    timeline: bytes | None


def record_part(doc: dict[str, Any] | None, timeline: bytes | None) -> dict[str, Any]:
    """A stored recording's descriptors as a record's ``descriptors`` value (``{}``: none). A
    timeline over :data:`MAX_TIMELINE_BYTES` travels as null rather than making the record one an
    importer refuses."""
    if not doc:
        return {}
    tl = timeline if timeline is not None and len(timeline) <= MAX_TIMELINE_BYTES else None
    return {
        "provenance": str(doc.get("provenance") or ""),
        "doc": doc,
        "timeline": None if tl is None else base64.b64encode(tl).decode("ascii"),
    }


def envelope(part: Any) -> str | None:
    """The provenance of a record's ``descriptors`` (None: the record carries none), after the
    checks that hold whatever the provenance: the fields, the provenance's form, the sizes."""
    if part is None or part == {}:
        return None
    if not isinstance(part, dict) or set(part) != {"provenance", "doc", "timeline"}:
        raise BadDescriptors('descriptors must be {} or {"provenance", "doc", "timeline"}')
    prov = part["provenance"]
    if not isinstance(prov, str) or not PROVENANCE_RE.match(prov):
        raise BadDescriptors("descriptors provenance is not 8 to 64 lowercase hex digits")
    if not isinstance(part["doc"], dict):
        raise BadDescriptors("descriptors doc must be an object")
    tl = part["timeline"]
    if tl is not None and (not isinstance(tl, str) or len(tl) > 4 * (MAX_TIMELINE_BYTES // 3 + 1)):
        raise BadDescriptors(
            f"timeline must be null or base64 of at most {MAX_TIMELINE_BYTES} bytes"
        )
    if len(json.dumps(part["doc"], separators=(",", ":"))) > MAX_DOC_BYTES:
        raise BadDescriptors(f"descriptors doc is larger than {MAX_DOC_BYTES} bytes")
    return prov


def check(
    part: dict[str, Any], duration: float, labels_of: Callable[[str], list[str] | None]
) -> Descriptors:
    """Validate descriptors whose provenance is this agent's (after :func:`envelope`).

    ``labels_of(model_id)`` gives a model's labels where this agent has the model (None where it
    does not: its timeline rows are only bounded). Raises :class:`BadDescriptors`.
    """
    doc = part["doc"]
    if doc.get("provenance") != part["provenance"]:
        raise BadDescriptors("the document's provenance is not the descriptors' provenance")
    _fields(doc, _TOP, "descriptors doc")
    span = duration * 1.05 + 2.0  # the decoder may run a little past the container's duration
    _num(doc["analysed_seconds"], "analysed_seconds", 0.0, span)
    _tempo(doc["tempo"], span)
    _key(doc["key"], "key")
    _energy(doc["energy"])
    _loudness(doc["loudness"])
    sil = doc["silence"]
    _fields(sil, {"leading", "trailing"}, "silence")
    for k in ("leading", "trailing"):
        _opt(sil[k], f"silence.{k}", 0.0, span)
    _regions(doc["regions"], span)
    notes = doc["notes"]
    if not isinstance(notes, list) or len(notes) > MAX_NOTES:
        raise BadDescriptors(f"notes must be a list of at most {MAX_NOTES}")
    for n in notes:
        _text(n, "a note")
    tl = None if part["timeline"] is None else _timeline(part["timeline"], span, labels_of)
    return Descriptors(part["provenance"], doc, tl)


# -- the document ------------------------------------------------------------------------------


def _fields(d: Any, want: set[str], what: str) -> None:
    if not isinstance(d, dict) or set(d) != want:
        raise BadDescriptors(f"{what} must have exactly {sorted(want)}")


def _num(x: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise BadDescriptors(f"{what} is not a finite number")
    if not lo <= x <= hi:
        raise BadDescriptors(f"{what} {x} is outside [{lo:g}, {hi:g}]")
    return float(x)


def _opt(x: Any, what: str, lo: float, hi: float) -> float | None:
    return None if x is None else _num(x, what, lo, hi)


def _text(x: Any, what: str, nullable: bool = False) -> None:
    if x is None and nullable:
        return
    if not isinstance(x, str) or len(x) > MAX_TEXT:
        raise BadDescriptors(f"{what} must be a string of at most {MAX_TEXT} characters")


def _tempo(t: Any, span: float) -> None:
    _fields(t, _TEMPO, "tempo")
    bpm = _opt(t["bpm"], "tempo bpm", *BPM_RANGE)
    _num(t["confidence"], "tempo confidence", 0.0, 1.0)
    _opt(t["first_beat"], "tempo first_beat", 0.0, span)
    if bpm is None and t["first_beat"] is not None:
        raise BadDescriptors("a first beat without a tempo")
    if not isinstance(t["octave"], dict):  # the audit trail: shown, never tagged (size bounded)
        raise BadDescriptors("tempo octave must be an object")
    _text(t["reason"], "tempo reason", nullable=True)


def _key_notation(key: Any, camelot: Any, what: str) -> tuple[int, str] | None:
    """A key in ID3v2.4 notation (as the analyzer spells it) and its Camelot code, consistent."""
    if key is None:
        if camelot is not None:
            raise BadDescriptors(f"{what}: a Camelot code without a key")
        return None
    if not isinstance(key, str) or len(key) > 8:
        raise BadDescriptors(f"{what} must be a short string or null")
    parsed = keymod.parse_key(key)
    if parsed is None or keymod.key_name(*parsed) != key:
        raise BadDescriptors(f"{what} {key!r} is not a key in ID3v2.4 notation (Am, F#, Bb…)")
    if camelot != keymod.camelot_of(*parsed):
        raise BadDescriptors(f"{what}: Camelot {camelot!r} is not that of {key}")
    return parsed


def _key(k: Any, what: str) -> None:
    _fields(k, _KEY, what)
    parsed = _key_notation(k["key"], k["camelot"], what)
    if parsed is None:
        if k["mode"] is not None or k["open_key"] is not None:
            raise BadDescriptors(f"{what}: a mode or Open Key code without a key")
    elif k["mode"] != parsed[1] or k["open_key"] != keymod.open_key_of(*parsed):
        raise BadDescriptors(f"{what}: mode or Open Key code is not that of {k['key']}")
    _num(k["strength"], f"{what} strength", -1.0, 1.0)  # a correlation
    _num(k["mode_margin"], f"{what} mode_margin", -2.0, 2.0)
    _num(k["tuning_cents"], f"{what} tuning_cents", -100.0, 100.0)
    _text(k["reason"], f"{what} reason", nullable=True)


def _energy(e: Any) -> None:
    _fields(e, _ENERGY, "energy")
    _opt(e["energy"], "energy", 0.0, 1.0)
    _opt(e["danceability"], "danceability", 0.0, 1.0)
    _opt(e["onset_rate"], "onset_rate", 0.0, 100.0)
    _opt(e["dynamic_range_db"], "dynamic_range_db", 0.0, 200.0)
    _opt(e["rms_dbfs"], "rms_dbfs", -200.0, 40.0)
    _opt(e["centroid_hz"], "centroid_hz", 0.0, 8000.0)  # of the models' 16 kHz audio
    _text(e["reason"], "energy reason", nullable=True)


def _loudness(lo: Any) -> None:
    """BS.1770 values in range, and the gains written into files the ones they imply."""
    if lo is None:
        return
    _fields(lo, _LOUD, "loudness")
    lufs = _opt(lo["integrated_lufs"], "integrated LUFS", *LUFS_RANGE)
    _opt(lo["lra_lu"], "loudness range", 0.0, 100.0)
    tp = _opt(lo["true_peak_dbtp"], "true peak", *PEAK_DB_RANGE)
    sp = _opt(lo["sample_peak_dbfs"], "sample peak", *PEAK_DB_RANGE)
    if tp is not None and sp is not None and sp > tp + 0.011:
        raise BadDescriptors("sample peak above the true peak")
    gain, peak, r128 = (
        lo["replaygain_track_gain_db"],
        lo["replaygain_track_peak"],
        lo["r128_track_gain"],
    )
    if lufs is None:
        if gain is not None or r128 is not None:
            raise BadDescriptors("a track gain without an integrated loudness")
    else:
        # ReplayGain 2.0: -18 LUFS reference; Opus R128: -23 LUFS in Q7.8 (both from 2-decimal
        # values here, hence the rounding allowances)
        if abs(_num(gain, "ReplayGain gain", -100.0, 100.0) - (-18.0 - lufs)) > 0.011:
            raise BadDescriptors(
                f"ReplayGain gain {gain} dB is not -18 LUFS less the integrated {lufs} LUFS"
            )
        if isinstance(r128, bool) or not isinstance(r128, int):
            raise BadDescriptors("R128 track gain must be an integer")
        if abs(r128 - max(-32768, min(32767, round((-23.0 - lufs) * 256)))) > 2:
            raise BadDescriptors(f"R128 track gain {r128} is not that of {lufs} LUFS")
    if tp is None:
        if peak is not None:
            raise BadDescriptors("a ReplayGain peak without a true peak")
    elif not math.isclose(
        _num(peak, "ReplayGain peak", 0.0, 100.0), 10 ** (tp / 20), rel_tol=1e-3, abs_tol=1e-6
    ):  # the peak is linear, from the true peak before its rounding to 0.01 dB
        raise BadDescriptors(f"ReplayGain peak {peak} is not the true peak {tp} dBTP")
    _text(lo["reason"], "loudness reason", nullable=True)


def _regions(regions: Any, span: float) -> None:
    if not isinstance(regions, list) or len(regions) > MAX_REGIONS:
        raise BadDescriptors(f"regions must be a list of at most {MAX_REGIONS}")
    for i, r in enumerate(regions):
        what = f"region {i}"
        if not isinstance(r, dict) or not {"start", "end"} <= set(r) <= _REGION:
            raise BadDescriptors(f"{what} must have start, end and only {sorted(_REGION)}")
        start = _num(r["start"], f"{what} start", 0.0, span)
        _num(r["end"], f"{what} end", start, span)  # not before its start
        _opt(r.get("bpm"), f"{what} bpm", *BPM_RANGE)
        _key_notation(r.get("key"), r.get("camelot"), f"{what} key")
        _opt(r.get("energy"), f"{what} energy", 0.0, 1.0)
        scores = r.get("scores", {})
        if not isinstance(scores, dict) or len(scores) > MAX_MODELS:
            raise BadDescriptors(f"{what} scores must map at most {MAX_MODELS} models")
        for m, s in scores.items():
            _text(m, f"{what} model id")
            if not isinstance(s, dict) or len(s) > MAX_LABELS:
                raise BadDescriptors(f"{what} scores of {m} must be an object")
            for lab, v in s.items():
                _num(v, f"{what} score {lab!r}", 0.0, 1.0)


# -- the timeline ------------------------------------------------------------------------------


def _timeline(text: str, span: float, labels_of: Callable[[str], list[str] | None]) -> bytes:
    """The stored timeline blob, after checking it decodes within bounds and adds up exactly."""
    try:
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadDescriptors("timeline is not base64") from None
    if len(blob) > MAX_TIMELINE_BYTES:
        raise BadDescriptors(f"timeline is larger than {MAX_TIMELINE_BYTES} bytes")
    z = zlib.decompressobj()
    try:
        raw = z.decompress(blob, MAX_TIMELINE_RAW)
    except zlib.error:
        raise BadDescriptors("timeline is not zlib data") from None
    if z.unconsumed_tail:
        raise BadDescriptors(f"timeline expands past {MAX_TIMELINE_RAW} bytes")
    if not z.eof or z.unused_data:
        raise BadDescriptors("timeline is a truncated or padded zlib stream")
    n = int.from_bytes(raw[:4], "little")
    if len(raw) < 4 or n > len(raw) - 4 or n > MAX_DOC_BYTES:
        raise BadDescriptors("timeline header length is wrong")
    try:
        head = json.loads(raw[4 : 4 + n])
    except ValueError:
        raise BadDescriptors("timeline header is not JSON") from None
    _fields(head, {"v", "patch_seconds", "patch_starts", "models", "curve"}, "timeline header")
    if head["v"] != TIMELINE_VERSION:
        raise BadDescriptors(f"timeline version {head['v']!r} is not {TIMELINE_VERSION}")
    _num(head["patch_seconds"], "timeline patch_seconds", 0.0, 600.0)
    starts, models, curve = head["patch_starts"], head["models"], head["curve"]
    if not isinstance(starts, list) or not isinstance(models, list) or not isinstance(curve, list):
        raise BadDescriptors("timeline patch_starts, models and curve must be lists")
    if len(models) > MAX_MODELS or len(curve) > MAX_REGIONS:
        raise BadDescriptors("timeline has too many models or curve segments")
    for t in starts:
        _num(t, "timeline patch start", 0.0, span)
    size = 0
    for m in models:
        if not isinstance(m, list) or len(m) != 3 or not isinstance(m[1], list):
            raise BadDescriptors("a timeline model is [id, labels, rows]")
        mid, labels, rows = m
        _text(mid, "timeline model id")
        if len(labels) > MAX_LABELS or not all(isinstance(x, str) for x in labels):
            raise BadDescriptors(f"timeline labels of {mid} must be strings")
        known = labels_of(mid)
        if known is not None and list(labels) != list(known):
            raise BadDescriptors(f"timeline labels of {mid} are not the model's")
        size += _count(rows, f"timeline rows of {mid}", len(starts)) * len(labels)
    for seg in curve:
        if not isinstance(seg, list) or len(seg) != 2:
            raise BadDescriptors("a timeline curve segment is [start, seconds]")
        _num(seg[0], "timeline curve start", 0.0, span)
        size += _count(seg[1], "timeline curve length", int(span) + 1)
    if 4 + n + size != len(raw):
        raise BadDescriptors(f"timeline holds {len(raw) - 4 - n} value bytes; its header {size}")
    try:
        Timeline.decode(blob)  # the reader the agent uses must accept it too
    except (ValueError, KeyError, TypeError, zlib.error) as e:
        raise BadDescriptors(f"timeline does not decode ({e})") from None
    return blob


def _count(x: Any, what: str, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= hi:
        raise BadDescriptors(f"{what} must be an integer in [0, {hi}]")
    return x
