"""Questions answered from the library database: similar tracks and playlists.

Vectors live per recording (all files of one recording share its analysis), so a KNN hit is a
recording and is turned into files afterwards. Answers never contain missing files. The same
functions back the CLI and the HTTP API.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from nomarr_client.tags import slug

from nomarr.store import Store, Track

DEFAULT_SPACE_ORDER = (
    "clap-htsat-unfused-audio",
    "discogs-effnet-bsdynamic-1",
    "msd-musicnn-1",
    "mtt-musicnn-1",
)


class QueryError(Exception):
    """A question that cannot be answered as asked (unknown track, no vectors, no such label)."""


class UnknownTrack(QueryError):
    """The track asked about is not in the library (the API answers 404)."""


class ModelRequired(QueryError):
    """The question needs a model that is not installed (the message says how to get it)."""


@dataclass
class Hit:
    """One answer: a file, how far it is from the question, and whether it is the seed's recording."""

    track: Track
    distance: float
    same_recording: bool = False
    score: float | None = None
    desc: dict[str, Any] | None = None  # bpm, key, camelot, energy of its recording

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the track plus ``distance`` / ``similarity`` (1 − cosine distance)."""
        d = self.track.to_dict()
        for k in ("bpm", "key", "camelot", "energy"):
            v = (self.desc or {}).get(k)
            d[k] = round(v, 2) if isinstance(v, float) else v
        d["distance"] = round(self.distance, 6)
        d["similarity"] = round(1.0 - self.distance, 6)
        d["same_recording"] = self.same_recording
        if self.score is not None:
            d["score"] = round(self.score, 4)
        return d


@dataclass
class Filters:
    """Restrictions on answers: under some folders, a duration range, minimum label scores."""

    under: list[str] | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    min_scores: dict[str, float] | None = (
        None  # label slug → minimum score (any model with the label)
    )
    min_bpm: float | None = None
    max_bpm: float | None = None
    keys: list[str] | None = None  # Camelot codes (any notation is normalised on the way in)
    min_energy: float | None = None
    max_energy: float | None = None
    files_only: bool = False  # leave out recordings known only as a stream

    @property
    def needs_descriptors(self) -> bool:
        """Whether a descriptor filter is set (answers then need their recordings' columns)."""
        return any(
            x is not None
            for x in (self.min_bpm, self.max_bpm, self.keys, self.min_energy, self.max_energy)
        )

    def accepts_descriptors(self, desc: dict[str, Any] | None) -> bool:
        """Whether a recording's descriptor columns pass the BPM, key and energy filters (a
        recording without the value asked about does not)."""
        if not self.needs_descriptors:
            return True
        d = desc or {}
        bpm, energy = d.get("bpm"), d.get("energy")
        if (self.min_bpm is not None or self.max_bpm is not None) and bpm is None:
            return False
        if self.min_bpm is not None and bpm < self.min_bpm:
            return False
        if self.max_bpm is not None and bpm > self.max_bpm:
            return False
        if self.keys and d.get("camelot") not in self.keys:
            return False
        if (self.min_energy is not None or self.max_energy is not None) and energy is None:
            return False
        if self.min_energy is not None and energy < self.min_energy:
            return False
        return not (self.max_energy is not None and energy > self.max_energy)

    def accepts(
        self,
        t: Track,
        scores: dict[str, float] | None = None,
        desc: dict[str, Any] | None = None,
    ) -> bool:
        """Whether a track passes every filter (``desc``: its recording's descriptor columns)."""
        if t.kind != "file" and (self.files_only or self.under):
            return False
        if not self.accepts_descriptors(desc):
            return False
        if self.under:
            p = os.fsencode(t.path)
            if not any(
                p.startswith(os.fsencode(os.path.abspath(u)).rstrip(b"/") + b"/")
                for u in self.under
            ):
                return False
        if self.min_duration is not None and (t.duration or 0.0) < self.min_duration:
            return False
        if self.max_duration is not None and (t.duration or 0.0) > self.max_duration:
            return False
        if self.min_scores:
            for lab, lo in self.min_scores.items():
                if (scores or {}).get(lab, -1.0) < lo:
                    return False
        return True


def pick_space(store: Store, model: str | None = None) -> str:
    """The embedding space to answer in: the one asked for, else the best one the library has."""
    have = {mid for mid, _ in store.spaces().values()}
    if model:
        if model not in have:
            raise QueryError(
                f"no embeddings for model {model!r} in this library (have: {', '.join(sorted(have)) or 'none'})"
            )
        return model
    for mid in DEFAULT_SPACE_ORDER:
        if mid in have:
            return mid
    if have:
        return sorted(have)[0]
    raise QueryError("the library has no embeddings yet: run `nomarr scan` first")


def resolve_track(store: Store, ref: str | int | Track) -> Track:
    """A track by id (an int or digits) or by path; a :class:`Track` (a stream the caller looked
    up) is taken as it is."""
    t: Track | None
    if isinstance(ref, Track):
        t = ref
    elif isinstance(ref, int) or (
        isinstance(ref, str) and ref.isdigit() and not os.path.exists(ref)
    ):
        t = store.track(int(ref))
    else:
        t = store.track_by_path(os.path.abspath(str(ref)))
    if t is None or t.status != "ok":
        raise UnknownTrack(f"{ref}: not in the library (scan it first)")
    if t.recording_id is None:
        raise QueryError(f"{ref}: has no analysis yet")
    return t


def _scores_of(store: Store, rec_ids: list[int]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for r in rec_ids:
        merged: dict[str, float] = {}
        for a in store.analyses(r).values():
            for lab, s in a.scores.items():
                merged.setdefault(slug(lab), s)
        out[r] = merged
    return out


def similar_to_vector(
    store: Store,
    vector: np.ndarray,
    model: str,
    n: int = 10,
    *,
    filters: Filters | None = None,
    exclude_recordings: set[int] | None = None,
    distinct: bool = False,
    seed_recording: int | None = None,
    exclude_tracks: set[int] | None = None,
    exclude_streams: set[int] | None = None,
) -> list[Hit]:
    """Nearest items to a vector (files, and streams for recordings no file holds), filtered;
    grows ``k`` until ``n`` answers survive the filters."""
    filters = filters or Filters()
    exclude_recordings = exclude_recordings or set()
    exclude_tracks = exclude_tracks or set()
    exclude_streams = exclude_streams or set()
    k = max(16, 2 * n + 8)
    while True:
        hits = store.knn(model, vector, k)
        recs = [r for r, _ in hits if r not in exclude_recordings]
        files = store.items_of_recordings(recs, files_only=filters.files_only)
        scores = _scores_of(store, recs) if filters.min_scores else {}
        descs = store.descriptor_columns(recs)
        out: list[Hit] = []
        for rid, dist in hits:
            if rid in exclude_recordings:
                continue
            for t in files.get(rid, []):
                if t.id in exclude_tracks if t.kind == "file" else t.id in exclude_streams:
                    continue
                if not filters.accepts(t, scores.get(rid), descs.get(rid)):
                    continue
                out.append(
                    Hit(
                        t, max(0.0, dist), same_recording=rid == seed_recording, desc=descs.get(rid)
                    )
                )
                if distinct:
                    break
            if len(out) >= n:
                return out[:n]
        if len(hits) < k or k >= 4096:
            return out[:n]
        k = min(4096, k * 4)


def similar(
    store: Store,
    ref: str | int | Track,
    n: int = 10,
    *,
    model: str | None = None,
    filters: Filters | None = None,
    distinct: bool = False,
) -> tuple[Track, list[Hit]]:
    """Files most similar to a seed file, nearest first; the seed itself is never in the answer.

    Other files of the seed's recording (re-encodes, copies) come first, marked ``same_recording``;
    ``distinct`` drops them and gives one file per recording.
    """
    seed = resolve_track(store, ref)
    space = pick_space(store, model)
    vec = store.embedding(space, seed.recording_id or 0)
    if vec is None:
        raise QueryError(f"{seed.path}: no {space} embedding stored")
    excl = {seed.recording_id or 0} if distinct else set()
    hits = similar_to_vector(
        store,
        vec,
        space,
        n,
        filters=filters,
        exclude_recordings=excl,
        distinct=distinct,
        seed_recording=seed.recording_id,
        exclude_tracks={seed.id} if seed.kind == "file" else None,
        exclude_streams={seed.id} if seed.kind == "stream" else None,
    )
    return seed, hits


def labels(store: Store) -> dict[str, list[str]]:
    """label slug → models that score it (for ``--mood`` and ``GET /moods``)."""
    out: dict[str, list[str]] = {}
    for mid in store.model_ids():
        labs, _, _ = store.label_scores(mid)
        for lab in labs:
            out.setdefault(slug(lab), []).append(mid)
    return out


def mood_playlist(
    store: Store,
    label: str,
    n: int = 25,
    *,
    model: str | None = None,
    min_score: float = 0.0,
    filters: Filters | None = None,
) -> list[Hit]:
    """The ``n`` recordings scoring highest for a label (one file each), best first."""
    want = slug(label)
    candidates = [model] if model else store.model_ids()
    for mid in candidates:
        labs, mat, recs = store.label_scores(mid)
        slugs = [slug(x) for x in labs]
        if want not in slugs:
            continue
        col = mat[:, slugs.index(want)]
        order = np.argsort(-col, kind="stable")  # NaN (label not scored) sorts last
        chunk = max(4 * n, 64)
        files: dict[int, list[Track]] = {}
        descs: dict[int, dict[str, Any]] = {}
        out: list[Hit] = []
        filters = filters or Filters()
        for pos, i in enumerate(order):
            if pos % chunk == 0:  # files fetched a chunk at a time: filters may skip many
                part = [recs[j] for j in order[pos : pos + chunk]]
                files.update(store.items_of_recordings(part, files_only=filters.files_only))
                descs.update(store.descriptor_columns(part))
            s = float(col[i])
            if s < min_score or s != s:
                break
            for t in files.get(recs[i], []):
                if filters.accepts(t, None, descs.get(recs[i])):
                    out.append(Hit(t, 1.0 - s, score=s, desc=descs.get(recs[i])))
                    break
            if len(out) >= n:
                break
        return out
    known = sorted(labels(store))
    raise QueryError(
        f"no model in this library scores {label!r}"
        + (f"; labels: {', '.join(known[:30])}…" if known else "")
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def harmonic_match(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether a DJ can mix from ``a`` into ``b``: tempi within ±6 % (or one half or double the
    other, within 6 %) and Camelot-compatible keys (same key, ±1 hour, or relative major/minor).
    A track without a tempo or a key never matches."""
    from nomarr.analyzers.key import compatible, parse_key

    if not a or not b or not a.get("bpm") or not b.get("bpm"):
        return False
    ka, kb = parse_key(a.get("camelot") or ""), parse_key(b.get("camelot") or "")
    if ka is None or kb is None or not compatible(ka, kb):
        return False
    r = float(b["bpm"]) / float(a["bpm"])
    return any(abs(r * m - 1.0) <= HARMONIC_BPM_TOLERANCE for m in (1.0, 2.0, 0.5))


HARMONIC_BPM_TOLERANCE = 0.06


def radio(
    store: Store,
    ref: str | int,
    n: int = 25,
    *,
    model: str | None = None,
    filters: Filters | None = None,
    harmonic: bool = False,
) -> list[Hit]:
    """A seed radio: the seed, then its neighbourhood ordered as a smooth walk (each next track is
    the nearest unplayed one to the current), one file per recording.

    ``harmonic``: each next track must also mix into the current one (:func:`harmonic_match`):
    the walk draws from a larger neighbourhood and ends early rather than break the rule."""
    seed = resolve_track(store, ref)
    space = pick_space(store, model)
    pool = similar_to_vector(
        store,
        store.embedding(space, seed.recording_id or 0),
        space,
        n * (8 if harmonic else 2),
        filters=filters,
        exclude_recordings={seed.recording_id or 0},
        distinct=True,
    )
    vecs = {h.track.recording_id: store.embedding(space, h.track.recording_id or 0) for h in pool}
    seed_desc = store.descriptor_columns([seed.recording_id or 0]).get(seed.recording_id or 0)
    out = [Hit(seed, 0.0, same_recording=True, desc=seed_desc)]
    cur = store.embedding(space, seed.recording_id or 0)
    cur_desc = seed_desc
    left = list(pool)
    while left and len(out) < n:
        cand = [h for h in left if not harmonic or harmonic_match(cur_desc, h.desc)]
        if not cand:
            break
        dists = [1.0 - float(np.dot(_unit(cur), _unit(vecs[h.track.recording_id]))) for h in cand]  # type: ignore[arg-type]
        i = int(np.argmin(dists))
        h = cand[i]
        left.remove(h)
        out.append(Hit(h.track, dists[i], desc=h.desc))
        cur = vecs[h.track.recording_id]  # type: ignore[assignment]
        cur_desc = h.desc
    return out


def path_playlist(
    store: Store,
    start: str | int,
    end: str | int,
    n: int = 12,
    *,
    model: str | None = None,
    filters: Filters | None = None,
    harmonic: bool = False,
) -> list[Hit]:
    """A song path: ``n`` tracks from ``start`` to ``end`` that walk through embedding space along the
    great circle between them, each step the nearest unused recording to its waypoint.

    ``harmonic``: each step is the nearest of the waypoint's 32 neighbours that mixes into the
    previous track (:func:`harmonic_match`); a waypoint with none is skipped. The last step into
    ``end`` is whatever ``end`` is."""
    a, b = resolve_track(store, start), resolve_track(store, end)
    space = pick_space(store, model)
    va, vb = (
        store.embedding(space, a.recording_id or 0),
        store.embedding(space, b.recording_id or 0),
    )
    if va is None or vb is None:
        raise QueryError(f"both ends need a {space} embedding")
    ua, ub = _unit(va), _unit(vb)
    omega = float(np.arccos(np.clip(np.dot(ua, ub), -1.0, 1.0)))
    used = {a.recording_id or 0, b.recording_id or 0}
    ends = store.descriptor_columns([a.recording_id or 0, b.recording_id or 0])
    out = [Hit(a, 0.0, desc=ends.get(a.recording_id or 0))]
    n = max(2, n)
    for i in range(1, n - 1):
        t = i / (n - 1)
        if omega < 1e-6:
            target = ua
        else:  # slerp: waypoints evenly spaced in angle
            target = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
        hits = similar_to_vector(
            store,
            target.astype(np.float32),
            space,
            32 if harmonic else 1,
            filters=filters,
            exclude_recordings=used,
            distinct=True,
        )
        if harmonic:
            hits = [h for h in hits if harmonic_match(out[-1].desc, h.desc)][:1]
            if not hits:
                continue
        if not hits:
            break
        used.add(hits[0].track.recording_id or 0)
        out.append(hits[0])
    out.append(Hit(b, 1.0 - float(np.dot(ua, ub)), desc=ends.get(b.recording_id or 0)))
    return out


def text_playlist(
    store: Store, text: str, n: int = 25, *, filters: Filters | None = None, registry: Any = None
) -> list[Hit]:
    """Tracks nearest to a text description (CLAP text tower against CLAP audio vectors).
    ``registry``: the agent passes its own (its model paths are fixed when it starts)."""
    from nomarr.models.registry import ModelError, Registry

    reg = registry or Registry()
    audio_spaces = [
        mid
        for mid, _ in store.spaces().values()
        if reg.manifests().get(mid) is not None and reg.manifests()[mid].kind == "clap-audio"
    ]
    if not audio_spaces:
        raise ModelRequired(
            "text search needs a CLAP model: `nomarr models pull clap-htsat-unfused-audio "
            "clap-htsat-unfused-text`, then `nomarr scan --model msd-musicnn-1 --model "
            "clap-htsat-unfused-audio LIBRARY`"
        )
    from nomarr.models.clap import partner

    audio = reg.get(audio_spaces[0])
    text_m = partner(reg, audio, "clap-text")
    if text_m is None or not reg.installed(text_m):
        raise ModelRequired(
            f"text search needs the text tower that pairs with {audio.id}: `nomarr models pull "
            f"{text_m.id if text_m else 'clap-htsat-unfused-text'}`"
        )
    try:
        vec = _text_tower(reg, text_m).embed([text])[0]
    except ModelError as e:
        raise QueryError(str(e)) from e
    return similar_to_vector(store, vec, audio.id, n, filters=filters, distinct=True)


# The text tower (a RoBERTa, ~500 MB for the real CLAP) is loaded once and kept while it is used:
# loading it per query would cost seconds. The agent drops it when idle (unload_idle_text).
_TEXT_TOWERS: dict[tuple[str, str], list[Any]] = {}
_TEXT_LOCK = threading.Lock()


def _text_tower(reg: Any, manifest: Any) -> Any:
    from nomarr.models.clap import ClapText

    key = (str(reg.models_dir), manifest.id)
    with _TEXT_LOCK:
        entry = _TEXT_TOWERS.get(key)
        if entry is None:
            entry = [ClapText(reg, manifest), time.monotonic()]
            _TEXT_TOWERS[key] = entry
        entry[1] = time.monotonic()
        return entry[0]


def unload_idle_text(max_idle_s: float) -> int:
    """Drop text towers unused for ``max_idle_s`` seconds; returns how many were dropped."""
    now = time.monotonic()
    with _TEXT_LOCK:
        stale = [k for k, (_, used) in _TEXT_TOWERS.items() if now - used > max_idle_s]
        for k in stale:
            del _TEXT_TOWERS[k]
    return len(stale)


def to_m3u(hits: list[Hit]) -> str:
    """Extended M3U: ``#EXTINF:<seconds>,<artist> - <title>`` then the absolute path."""
    lines = ["#EXTM3U"]
    for h in hits:
        t = h.track
        title = " - ".join(x for x in (t.artist, t.title) if x) or os.path.basename(t.path)
        lines.append(f"#EXTINF:{round(t.duration) if t.duration else -1},{title}")
        lines.append(t.path)
    return "\n".join(lines) + "\n"
