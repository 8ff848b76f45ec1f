"""DSP analyzers: tempo, key, loudness, energy, regions and the timeline, fed by the shared decode.

They never open a file: they consume the PCM the models' decode already produces. The interface
is one small protocol, :class:`PcmConsumer` (``feed(samples, sr, t0)`` any number of times, then
``finish()``), so the same code runs on the windows of a sampling profile, on a whole file and on
a stream, with memory bounded by a few floats per 16 ms of audio (2 h: about 6 MB).

Two consumers exist, because the descriptors need two views of the audio:

- :class:`~nomarr.analyzers.frontend.Frontend` takes the models' 16 kHz mono blocks and computes
  one small per-frame feature track, from which :func:`describe` derives tempo
  (:mod:`.tempo`), key (:mod:`.key`), energy, danceability, onset rate and dynamic range
  (:mod:`.dynamics`) and the regions (:mod:`.regions`);
- :class:`~nomarr.analyzers.loudness.LoudnessMeter` takes the native multichannel blocks
  (BS.1770 is defined on the channels as they are). It needs the whole file, so it runs only when
  the analysed windows cover the file (profile ``full``, or a file shorter than a profile's
  windows).

:class:`DescriptorRun` bundles both for one file. Results are plain dataclasses with ``to_dict``;
:func:`descriptor_tags` turns them into ``nom:dsp_…`` keys (docs/tags.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from nomarr_client.tags import (
    DSP_VERSION,
    PROVENANCE,
    TAG_SCHEMA_VERSION,
    descriptor_key,
    dsp_namespace,
)

from nomarr.analyzers import dynamics as dyn
from nomarr.analyzers import key as keymod
from nomarr.analyzers import regions as reg
from nomarr.analyzers import tempo as tmp
from nomarr.analyzers.frontend import FPS, Frontend, Segment
from nomarr.analyzers.loudness import LoudnessMeter, LoudnessResult
from nomarr.analyzers.timeline import Timeline

ANALYZERS = ("tempo", "key", "loudness", "energy")
REGION_MIN_SECONDS = 20.0  # shorter regions get times and scores but no descriptors of their own


class PcmConsumer(Protocol):
    """Anything fed decoded audio block by block (the shared decode's extension point)."""

    def feed(self, samples: np.ndarray, sr: int, t0: float) -> None:
        """One block: mono [n] or [channels, n] float32 at ``sr``, starting ``t0`` s into the file."""
        ...

    def finish(self) -> Any:
        """No more audio: the result."""
        ...


def params() -> dict[str, Any]:
    """Every parameter that changes a descriptor (part of the provenance hash)."""
    return {
        "version": DSP_VERSION,
        "tempo": {
            "range": [tmp.MIN_BPM, tmp.MAX_BPM],
            "prior": [tmp.PRIOR_BPM, tmp.PRIOR_OCTAVES],
            "faster_share": tmp.FASTER_SHARE,
        },
        "key": {"profile": keymod.DEFAULT_PROFILE, "min_strength": keymod.MIN_STRENGTH},
        "energy": list(dyn.ENERGY_WEIGHTS),
        "regions": [reg.SILENCE_DB, reg.MIN_GAP, reg.MAX_REGION, reg.CHUNK],
    }


def provenance(profile_params: dict[str, Any], loudness: bool) -> str:
    """Short sha256 over the analyzers' parameters, the profile and the loudness switch."""
    doc = {
        "schema": TAG_SCHEMA_VERSION,
        "dsp": params(),
        "profile": profile_params,
        "loudness": loudness,
        "decode": {"downmix": "mean", "resampler": "soxr-hq", "sr": 16000},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class TrackDescriptors:
    """Everything the analyzers found in one file (or stream)."""

    tempo: tmp.TempoResult
    key: keymod.KeyResult
    dynamics: dyn.DynamicsResult
    loudness: LoudnessResult | None
    leading_silence: float | None
    trailing_silence: float | None
    regions: list[reg.Region]
    timeline: Timeline
    analysed_seconds: float
    provenance: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self, with_timeline: bool = False) -> dict[str, Any]:
        """JSON form (``nomarr analyze --json``, ``GET /tracks/{id}``)."""
        d: dict[str, Any] = {
            "provenance": self.provenance,
            "analysed_seconds": round(self.analysed_seconds, 3),
            "tempo": self.tempo.to_dict(),
            "key": self.key.to_dict(),
            "energy": self.dynamics.to_dict(),
            "loudness": None if self.loudness is None else self.loudness.to_dict(),
            "silence": {
                "leading": _r(self.leading_silence),
                "trailing": _r(self.trailing_silence),
            },
            "regions": [r.to_dict() for r in self.regions],
            "notes": self.notes,
        }
        if with_timeline:
            d["timeline"] = self.timeline.to_dict()
        return d

    def summary(self) -> dict[str, Any]:
        """The searchable columns (bpm, key, camelot, energy, danceability, loudness)."""
        lo = self.loudness
        return {
            "bpm": self.tempo.bpm,
            "bpm_confidence": self.tempo.confidence,
            "key": self.key.key,
            "camelot": self.key.camelot,
            "key_strength": self.key.strength if self.key.key else None,
            "energy": self.dynamics.energy,
            "danceability": self.dynamics.danceability,
            "lufs": None if lo is None else lo.integrated,
            "true_peak": None if lo is None else lo.true_peak,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def descriptor_tags(d: dict[str, Any]) -> dict[str, str]:
    """``nom:dsp_…`` keys for a stored descriptor document (``TrackDescriptors.to_dict()``).

    Only values that exist are written (a track with no tempo gets no ``bpm`` key); every
    analyzer group that wrote a value gets its provenance key.
    """
    out: dict[str, str] = {}

    def put(group: str, name: str, value: Any, fmt: str) -> None:
        if value is None:
            return
        out[descriptor_key(group, name)] = value if fmt == "s" else format(value, fmt)

    t, k, e, lo = d.get("tempo") or {}, d.get("key") or {}, d.get("energy") or {}, d.get("loudness")
    put("tempo", "bpm", t.get("bpm"), ".2f")
    if t.get("bpm") is not None:
        put("tempo", "confidence", t.get("confidence"), ".4f")
        put("tempo", "first_beat", t.get("first_beat"), ".3f")
    put("key", "key", k.get("key"), "s")
    if k.get("key"):
        put("key", "camelot", k.get("camelot"), "s")
        put("key", "open_key", k.get("open_key"), "s")
        put("key", "strength", k.get("strength"), ".4f")
    put("energy", "energy", e.get("energy"), ".4f")
    put("energy", "danceability", e.get("danceability"), ".4f")
    put("energy", "onset_rate", e.get("onset_rate"), ".3f")
    put("energy", "dynamic_range", e.get("dynamic_range_db"), ".2f")
    if lo:
        put("loudness", "integrated", lo.get("integrated_lufs"), ".2f")
        put("loudness", "range", lo.get("lra_lu"), ".2f")
        put("loudness", "true_peak", lo.get("true_peak_dbtp"), ".2f")
    groups = {g for g in ANALYZERS if any(x.startswith(dsp_namespace(g).prefix()) for x in out)}
    for g in sorted(groups):
        out[dsp_namespace(g).prefix() + PROVENANCE] = str(d.get("provenance") or "")
    return {k: v for k, v in out.items() if v}


def _slice(seg: Segment, start: float, end: float) -> Segment:
    """The part of a segment between two file times, as a segment of its own."""
    flux, rms, cen, chroma = seg.arrays()
    a = max(0, int(round((start - seg.t0) * FPS)))
    b = max(a, int(round((end - seg.t0) * FPS)))
    ca, cb = int((start - seg.t0) / 1.024), int(np.ceil((end - seg.t0) / 1.024))
    out = Segment(seg.t0 + a / FPS, n_samples=int((b - a) * 256))
    out.flux, out.rms, out.centroid = [flux[a:b]], [rms[a:b]], [cen[a:b]]
    out.chroma = [chroma[ca:cb]]
    return out


def describe(
    segments: list[Segment], tuning: float, whole_file: bool, duration: float | None
) -> tuple[tmp.TempoResult, keymod.KeyResult, dyn.DynamicsResult, dict[str, Any]]:
    """Tempo, key and dynamics of some stretches of audio; ``extra`` has the silence and regions
    when ``whole_file`` (leading/trailing silence are only known when both ends were analysed)."""
    tempo = tmp.estimate_tempo(segments)
    flux = np.concatenate([s.arrays()[0] for s in segments]) if segments else np.zeros(0)
    rms = np.concatenate([s.arrays()[1] for s in segments]) if segments else np.zeros(0)
    cen = np.concatenate([s.arrays()[2] for s in segments]) if segments else np.zeros(0)
    voiced = (
        np.concatenate([reg.voiced_frames(s.arrays()[1]) for s in segments])
        if segments
        else np.zeros(0, bool)
    )
    dynamics = dyn.dynamics(flux, rms, cen, voiced, tempo.bpm, tempo.confidence)
    chroma = [s.arrays()[3] for s in segments]
    c36 = np.concatenate(chroma) if chroma else np.zeros((0, 36))
    weights = _chroma_weights(segments)
    key = keymod.estimate_key(c36, weights, tuning)
    extra: dict[str, Any] = {}
    if whole_file and len(segments) == 1:
        seg = segments[0]
        total = duration if duration else seg.duration
        lead, trail, regions = reg.split(reg.voiced_frames(seg.arrays()[1]), seg.t0, seg.duration)
        extra = {
            "lead": lead,
            "trail": max(0.0, trail + (total - seg.duration)),
            "regions": regions,
        }
    return tempo, key, dynamics, extra


def _chroma_weights(segments: list[Segment]) -> np.ndarray:
    """Weight of each chroma second: 1 where the second is voiced, 0 where silent."""
    out = []
    for s in segments:
        _, rms, _, chroma = s.arrays()
        v = reg.voiced_frames(rms)
        for j in range(chroma.shape[0]):
            a, b = int(j * 1.024 * FPS), int((j + 1) * 1.024 * FPS)
            out.append(1.0 if v[a:b].size and v[a:b].mean() > 0.5 else 0.0)
    return np.asarray(out)


class DescriptorRun:
    """The analyzers of one file: feed 16 kHz mono (``feed``) and, when the whole file is
    analysed, native multichannel (``feed_native``); ``finish`` returns :class:`TrackDescriptors`.
    """

    def __init__(self, loudness: bool, provenance: str = "") -> None:
        self.frontend = Frontend()
        self.meter: LoudnessMeter | None = LoudnessMeter() if loudness else None
        self.provenance = provenance

    def feed(self, samples: np.ndarray, sr: int, t0: float) -> None:
        """16 kHz mono blocks (the models' input)."""
        self.frontend.feed(samples, sr, t0)

    def feed_native(self, samples: np.ndarray, sr: int, t0: float = 0.0) -> None:
        """Native-rate [channels, n] blocks of the whole file, for the loudness meter."""
        if self.meter is not None:
            self.meter.feed(samples, sr, t0)

    def finish(
        self,
        duration: float | None,
        whole_file: bool,
        timeline: Timeline | None = None,
    ) -> TrackDescriptors:
        """Derive every descriptor; per-region descriptors and scores for whole files."""
        return attach_scores(self.describe(duration, whole_file), timeline)

    def describe(self, duration: float | None, whole_file: bool) -> TrackDescriptors:
        """Every descriptor from the audio alone (the heavy part, done where the file was
        decoded); the models' per-patch scores join later (:func:`attach_scores`), so a file's
        patches and its descriptors can travel to wherever the models run."""
        segments = [s for s in self.frontend.finish() if s.n_samples > 0]
        tuning = self.frontend.tuning()
        tempo, key, dynamics, extra = describe(segments, tuning, whole_file, duration)
        tl = Timeline()
        for s in segments:
            levels = dyn.seconds_rms_db(s.arrays()[1])
            if levels.size:
                tl.add_curve(s.t0, levels)
        regions: list[reg.Region] = extra.get("regions", [])
        notes = []
        if len(regions) > 1:
            for r in regions:
                if r.end - r.start >= REGION_MIN_SECONDS:
                    sub = _slice(segments[0], r.start, r.end)
                    rt, rk, rd, _ = describe([sub], tuning, False, None)
                    r.descriptors = {
                        "bpm": None if rt.bpm is None else round(rt.bpm, 2),
                        "key": rk.key,
                        "camelot": rk.camelot,
                        "energy": None if rd.energy is None else round(rd.energy, 4),
                    }
        if not whole_file:
            notes.append("silence and regions need the whole file (profile full)")
        loud = self.meter.finish() if self.meter is not None else None
        if self.meter is None:
            notes.append("loudness needs the whole file: profile full or loudness switched on")
        return TrackDescriptors(
            tempo,
            key,
            dynamics,
            loud,
            extra.get("lead"),
            extra.get("trail"),
            regions,
            tl,
            sum(s.duration for s in segments),
            self.provenance,
            notes,
        )


def attach_scores(td: TrackDescriptors, scores: Timeline | None) -> TrackDescriptors:
    """The models' per-patch scores (``scores``: patch times and values) into a file's
    descriptors: kept in its timeline, averaged per region."""
    if scores is not None:
        td.timeline.patch_seconds = scores.patch_seconds
        td.timeline.patch_starts = list(scores.patch_starts)
        td.timeline.scores.update(scores.scores)
    if len(td.regions) > 1:
        for r in td.regions:
            r.scores = td.timeline.region_means(r.start, r.end)
    return td
