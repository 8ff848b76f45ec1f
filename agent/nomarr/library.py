"""The library view: what a recording's stored analyses mean to the files and to the API.

The scanner (which writes tags), ``GET /tracks/{id}`` (which shows them) and ``POST /analyze``
(which answers for a file before or after it is scanned) must agree on three things, so they are
decided here and nowhere else:

- **tiers**: a score's tier uses the library's calibrated per-label thresholds wherever the library
  has a calibration for that model (docs/tiers.md), else the fixed defaults of the tag grammar;
- **desired tags**: the complete ``nom:`` key set (and the optional MOOD value) a file of a
  recording should carry, and a hash of it that write records are compared with;
- **current**: whether stored analyses carry the provenance an analysis would record now (the rule
  itself is the shared client's :func:`nomarr_client.tags.is_current`).

Calibration lives here too, because it is what makes tiers a property of the library rather than
of one file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from nomarr_client import models as api
from nomarr_client import tags as grammar
from nomarr_client.tags import fmt_score, slug, tier_of
from nomarr_client.vocab import is_mood

from nomarr.analyzers import descriptor_tags
from nomarr.store import DSP_ID, Analysis, Store

Thresholds = Mapping[str, Mapping[str, tuple[float, float]]]  # model id → label → (high, medium)

CALIBRATE_MIN_TRACKS = 100  # below this, fixed thresholds (docs/tiers.md)
CALIBRATE_GROWTH = 0.10  # recalibrate when the analysed library grew by this share
TIER_QUANTILES = (0.90, 0.70)  # high = top 10 % of the library for a label, medium = next 20 %
TIER_FLOORS = (0.10, 0.05)  # …but never high below 0.10 / medium below 0.05 (a label nobody has)


class Scored(Protocol):
    """One model's track-level result, stored (:class:`~nomarr.store.Analysis`) or fresh."""

    model_id: str
    prefix: str
    provenance: str
    scores: dict[str, float]


def tiers_of(
    scores: Mapping[str, float], thresholds: Mapping[str, tuple[float, float]] | None
) -> dict[str, str]:
    """label → tier for one model's scores: calibrated per label where the library has a
    threshold for it, the grammar's defaults otherwise. Keys are the labels as given."""
    th = thresholds or {}
    return {k: tier_of(v, th[k]) if k in th else tier_of(v) for k, v in scores.items()}


def desired_tags(
    analyses: Iterable[Scored],
    thresholds: Thresholds,
    mood_field: bool,
    descriptors: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], str | None]:
    """The complete ``nom:`` key set (and optional MOOD value) a file of this recording should
    carry: per model a score key and the current tier's key per label, and the provenance key;
    the DSP descriptors' keys. MOOD lists the labels of the shared mood vocabulary at tier high,
    strongest first."""
    out: dict[str, str] = {}
    if descriptors:
        out.update(descriptor_tags(dict(descriptors)))
    moods: list[tuple[float, str]] = []
    for a in analyses:
        tiers = tiers_of(a.scores, thresholds.get(a.model_id))
        for label, s in a.scores.items():
            lab = slug(label)
            out[a.prefix + lab] = fmt_score(s)
            out[f"{a.prefix}{lab}_{tiers[label]}"] = fmt_score(s)
            if tiers[label] == "high" and is_mood(lab):
                moods.append((s, lab.replace("_", " ")))
        out[a.prefix + grammar.PROVENANCE] = a.provenance
    mood = None
    if mood_field and moods:
        mood = "; ".join(dict.fromkeys(lab for _, lab in sorted(moods, reverse=True)))
    return out, mood


def desired_std(descriptors: Mapping[str, Any] | None) -> dict[str, str]:
    """The standard fields (BPM, initial key, ReplayGain 2.0 / Opus R128 track gain) a file of
    this recording should carry where the ownership rule lets nomarr write them (docs/tags.md).
    Values as players read them: integer BPM, ID3v2.4 key (``Am``), ``-6.52 dB``, a linear peak,
    a Q7.8 integer."""
    if not descriptors:
        return {}
    out: dict[str, str] = {}
    bpm = (descriptors.get("tempo") or {}).get("bpm")
    if bpm:
        out["bpm"] = str(int(round(float(bpm))))
    key = (descriptors.get("key") or {}).get("key")
    if key:
        out["initial_key"] = str(key)
    lo = descriptors.get("loudness") or {}
    if lo.get("replaygain_track_gain_db") is not None:
        out["replaygain_track_gain"] = f"{float(lo['replaygain_track_gain_db']):+.2f} dB"
    if lo.get("replaygain_track_peak") is not None:
        out["replaygain_track_peak"] = f"{float(lo['replaygain_track_peak']):.6f}"
    if lo.get("r128_track_gain") is not None:
        out["r128_track_gain"] = str(int(lo["r128_track_gain"]))
    return out


def tags_hash(
    tags: Mapping[str, str], mood: str | None, std: Mapping[str, str] | None = None
) -> str:
    """Hash of a file's desired nomarr tag state (what write records are compared with)."""
    doc: list[Any] = [sorted(tags.items()), mood]
    if std:
        doc.append(sorted(std.items()))
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def is_current(
    analyses: Mapping[str, Analysis], want: Mapping[str, str], dsp: str | None = None
) -> bool:
    """Whether a recording's stored analyses (and descriptors, provenance ``dsp``) are what an
    analysis would record now."""
    have = {mid: a.provenance for mid, a in analyses.items()}
    if dsp is not None:
        have[DSP_ID] = dsp
    return grammar.is_current(have, want)


def recording_current(store: Store, rec: int, want: Mapping[str, str]) -> bool:
    """:func:`is_current` for a stored recording, descriptors included."""
    return is_current(store.analyses(rec), want, store.descriptor_provenance(rec))


def reusable(
    analyses: Mapping[str, Analysis], want: Mapping[str, str], dsp: str | None = None
) -> bool:
    """Whether another file of the recording may take these analyses instead of being analysed:
    current (descriptors included, provenance ``dsp``), and from a complete decode. A partial
    analysis (a damaged copy analysed first) is never final: each further file of the recording
    is analysed until a complete decode replaces it, so which file represents a recording does
    not depend on scan order (docs/reliability.md).
    """
    return is_current(analyses, want, dsp) and all(a.complete for a in analyses.values())


def recording_reusable(store: Store, rec: int, want: Mapping[str, str]) -> bool:
    """:func:`reusable` for a stored recording, its descriptors included."""
    return reusable(store.analyses(rec), want, store.descriptor_provenance(rec))


def calibrate(store: Store, force: bool = False) -> dict[str, Any]:
    """Per-library tier thresholds (docs/tiers.md); returns what changed.

    Each label's ``high`` bound is the library's 90th percentile of that label's track scores and
    ``medium`` the 70th, floored at 0.10 / 0.05, computed once ≥ 100 recordings are analysed and
    again whenever the analysed library has grown by 10 % since.
    """
    out: dict[str, Any] = {}
    for mid in store.model_ids():
        labels, mat, _ = store.label_scores(mid)
        n = mat.shape[0]
        last = int(store.meta(f"calibrated_n:{mid}", "0") or 0)
        # growth counted in whole recordings: 100 * 1.1 is 110.00000000000001 in floating point,
        # which would make exactly 10 % growth not count
        grown_enough = n >= last + math.ceil(round(last * CALIBRATE_GROWTH, 6))
        if n < CALIBRATE_MIN_TRACKS or (not force and last and not grown_enough):
            out[mid] = {"recordings": n, "calibrated_at": last or None, "changed": False}
            continue
        q_hi = np.nanquantile(mat, TIER_QUANTILES[0], axis=0)
        q_med = np.nanquantile(mat, TIER_QUANTILES[1], axis=0)
        th = {}
        for lab, hi, med in zip(labels, q_hi, q_med, strict=True):
            h = max(float(hi), TIER_FLOORS[0])
            th[lab] = (round(h, 4), round(min(max(float(med), TIER_FLOORS[1]), h), 4))
        with store.tx():
            store.set_tiers(mid, th, n)
            store.set_meta(f"calibrated_n:{mid}", str(n))
            store.set_meta("tier_epoch", str(int(store.meta("tier_epoch", "0") or 0) + 1))
        out[mid] = {"recordings": n, "calibrated_at": n, "changed": True}
    return out


# -- answers ------------------------------------------------------------------------------------


def track_detail(
    store: Store, track_id: int, mood_field: bool, std_fields: bool = True
) -> api.TrackDetail | None:
    """``GET /tracks/{id}``: the track, its recording's analyses with the library's tiers, the
    tags its file should carry and whether the last write put exactly those there."""
    t = store.track(track_id)
    if t is None:
        return None
    d = api.TrackDetail(**t.to_dict())
    if t.recording_id is None:
        return d
    th = store.tier_thresholds()
    analyses = store.analyses(t.recording_id)
    for mid, a in sorted(analyses.items()):
        tiers = tiers_of(a.scores, th.get(mid))
        d.analyses.append(
            api.ModelScores(
                model=mid,
                tag_prefix=a.prefix,
                provenance=a.provenance,
                profile=a.profile,
                patches=a.n_patches,
                scores={slug(k): round(v, 6) for k, v in a.scores.items()},
                tiers={slug(k): v for k, v in tiers.items()},
                complete=a.complete,
            )
        )
    d.embeddings = [
        mid
        for mid, _ in store.spaces().values()
        if store.embedding(mid, t.recording_id) is not None
    ]
    d.same_recording = [
        o.id
        for o in store.tracks_of_recordings([t.recording_id]).get(t.recording_id, [])
        if o.id != t.id
    ]
    desc = store.descriptors(t.recording_id)
    tags, mood = desired_tags(analyses.values(), th, mood_field, desc)
    d.tags = tags
    d.descriptors = desc
    lw = store.last_write(t.id)
    std = desired_std(desc) if std_fields else None
    d.tags_written = lw is not None and lw[0].split(":")[0] == tags_hash(tags, mood, std)
    return d


def _model_result(
    a: Scored,
    *,
    provider: str | None,
    patches: int,
    thresholds: Thresholds,
    embedding: np.ndarray | list[float] | None,
    with_embedding: bool,
    complete: bool = True,
) -> api.ModelResult:
    """One model's answer, tiered by the library; the same shape whether stored or fresh."""
    vec = None if embedding is None else np.asarray(embedding, dtype=np.float32)
    return api.ModelResult(
        tag_prefix=a.prefix,
        provider=provider,
        patches=patches,
        provenance=a.provenance,
        scores={k: round(v, 6) for k, v in a.scores.items()},
        tiers=tiers_of(a.scores, thresholds.get(a.model_id)),
        top5=[k for k, _ in sorted(a.scores.items(), key=lambda kv: -kv[1])[:5]],
        embedding_dim=None if vec is None else int(vec.shape[0]),
        embedding=[round(float(x), 6) for x in vec]
        if (with_embedding and vec is not None)
        else None,
        complete=complete,
    )


def stored_answer(
    store: Store, path: str, want: Mapping[str, str], with_embedding: bool
) -> api.AnalyzeResponse | None:
    """``POST /analyze`` of a scanned, unchanged file whose analyses are current: the library's
    own result, with no model run. None when the file must be analysed."""
    t = store.track_by_path(path)
    if t is None or t.status != "ok" or t.recording_id is None:
        return None
    try:
        s = os.stat(path)
    except OSError:
        return None
    if (s.st_size, s.st_mtime_ns) != (t.size, t.mtime_ns):
        return None
    analyses = store.analyses(t.recording_id)
    if not is_current(analyses, want, store.descriptor_provenance(t.recording_id)):
        return None
    return recording_answer(
        store,
        t.recording_id,
        path=path,
        filename=os.path.basename(path),
        duration=t.duration,
        with_embedding=with_embedding,
    )


def recording_answer(
    store: Store,
    rec: int,
    *,
    path: str | None,
    filename: str | None,
    duration: float | None,
    with_embedding: bool = False,
) -> api.AnalyzeResponse:
    """A recording's stored analyses as an analysis answer (``source="library"``), tiered by
    the library: a scanned file's, or a streamed recording's that matched a stored one."""
    analyses = store.analyses(rec)
    th = store.tier_thresholds()
    tags, _ = desired_tags(analyses.values(), th, False, store.descriptors(rec))
    models = {
        mid: _model_result(
            a,
            provider=a.provider,
            patches=a.n_patches,
            thresholds=th,
            embedding=store.embedding(mid, rec),
            with_embedding=with_embedding,
            complete=a.complete,
        )
        for mid, a in analyses.items()
    }
    return api.AnalyzeResponse(
        path=path,
        filename=filename,
        source="library",
        duration=duration,
        profile=next(iter(analyses.values())).profile if analyses else None,
        models=models,
        tags=tags,
    )


class _Fresh:
    """A fresh analysis's model entry seen as :class:`Scored`."""

    def __init__(self, model_id: str, doc: Mapping[str, Any]) -> None:
        self.model_id = model_id
        self.prefix = str(doc["tag_prefix"])
        self.provenance = str(doc["provenance"])
        self.scores = {str(k): float(v) for k, v in doc["scores"].items()}


def fresh_answer(
    doc: Mapping[str, Any], thresholds: Thresholds, *, path: str | None, filename: str | None
) -> api.AnalyzeResponse:
    """``POST /analyze`` of a file analysed just now (a library file not scanned yet, or an
    upload), from the worker's ``nomarr analyze`` document: tiers and tags follow the library's
    calibration exactly as the scanner would write them, so the answer does not depend on whether
    the file was scanned first."""
    models: dict[str, api.ModelResult] = {}
    fresh: list[_Fresh] = []
    for mid, m in doc.get("models", {}).items():
        f = _Fresh(mid, m)
        fresh.append(f)
        models[mid] = _model_result(
            f,
            provider=m.get("provider"),
            patches=int(m.get("patches", 0)),
            thresholds=thresholds,
            embedding=m.get("embedding"),
            with_embedding=m.get("embedding") is not None,
            complete=bool(doc.get("complete", True)),
        )
        if m.get("embedding") is None and m.get("embedding_dim") is not None:
            models[mid].embedding_dim = int(m["embedding_dim"])
    # silence gets no tags (the scan writes none either): its scores describe no music
    tags = (
        {}
        if doc.get("silent")
        else desired_tags(fresh, thresholds, False, doc.get("descriptors"))[0]
    )
    return api.AnalyzeResponse(
        path=path,
        filename=filename,
        source="analysis",
        duration=doc.get("duration"),
        profile=doc.get("profile"),
        models=models,
        tags=tags,
        warnings=list(doc.get("warnings", [])),
        elapsed_s=doc.get("elapsed_s"),
    )
