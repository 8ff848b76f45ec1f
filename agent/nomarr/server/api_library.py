"""Library queries over HTTP: tracks, lookups, similarity, labels, written keys and playlists.

Every handler validates on the event loop and does its database and numpy work on a worker thread
(:func:`~nomarr.server.http.off_loop`); the answers are the shared client's pydantic models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web
from nomarr_client import models as api
from nomarr_client import tags as tagkeys

from nomarr import library, query
from nomarr.server.http import (
    ApiError,
    agent_of,
    float_param,
    int_param,
    json_body,
    off_loop,
    path_params,
    track_id_param,
)
from nomarr.server.service import Agent


def track_model(t: Any, desc: dict[str, Any] | None = None) -> api.Track:
    d = t.to_dict()
    for k in ("bpm", "key", "camelot", "energy"):
        d[k] = (desc or {}).get(k)
    return api.Track(**d)


def hit_models(hits: list[query.Hit]) -> list[api.Hit]:
    return [api.Hit(**h.to_dict()) for h in hits]


def parse_filters(agent: Agent, f: api.Filters | None) -> query.Filters | None:
    if f is None:
        return None
    under = [agent.confine(u, must_exist=False) for u in f.under] if f.under else None
    if (
        f.min_duration is not None
        and f.max_duration is not None
        and f.min_duration > f.max_duration
    ):
        raise ApiError(400, "bad-request", "filters.min_duration is above filters.max_duration")
    from nomarr_client.tags import slug

    mins = {slug(k): v for k, v in f.min_scores.items()} if f.min_scores else None
    return query.Filters(
        under=under,
        min_duration=f.min_duration,
        max_duration=f.max_duration,
        min_scores=mins,
        min_bpm=f.min_bpm,
        max_bpm=f.max_bpm,
        keys=camelot_keys(f.keys),
        min_energy=f.min_energy,
        max_energy=f.max_energy,
        files_only=f.files_only,
    )


def camelot_keys(keys: list[str] | None) -> list[str] | None:
    """Keys in any notation → Camelot codes; an unreadable key is the caller's mistake."""
    if not keys:
        return None
    from nomarr.analyzers.key import camelot_of, parse_key

    out = []
    for k in keys:
        p = parse_key(k)
        if p is None:
            raise ApiError(400, "bad-request", f"filters.keys: {k!r} is not a key (Am, F#, 8A, 1m)")
        out.append(camelot_of(*p))
    return out


def check_labels(st: Any, filters: query.Filters | None) -> None:
    """A ``min_scores`` label no model scores would silently filter out everything: say so."""
    if filters is None or not filters.min_scores:
        return
    known = query.labels(st)
    unknown = sorted(k for k in filters.min_scores if k not in known)
    if unknown:
        raise query.QueryError(
            f"filters.min_scores: no model in this library scores {', '.join(map(repr, unknown))}"
        )


def seed_of(agent: Agent, track_id: int | None, path: str | None) -> str | int:
    if track_id is not None:
        if track_id > 2**63 - 1:  # past SQLite's 64-bit integers: no such track, not a driver error
            raise ApiError(404, "not-found", f"no track {track_id}")
        return int(track_id)
    assert path is not None
    return agent.confine(path, must_exist=False)


async def list_tracks(request: web.Request) -> api.TrackPage:
    agent = agent_of(request)
    offset = int_param(request, "offset", 0, 0, 10**9)
    limit = int_param(request, "limit", 100, 1, 1000)
    status_ = request.query.get("status", "ok")
    if status_ not in ("ok", "failed", "missing", "all"):
        raise ApiError(400, "bad-request", "status must be ok, failed, missing or all")
    under = path_params(request, "under")
    if len(under) > 64:
        raise ApiError(400, "bad-request", "at most 64 under folders")
    dirs = [agent.confine(u, must_exist=False) for u in under]
    keys = request.query.getall("key", [])
    if len(keys) > 24:
        raise ApiError(400, "bad-request", "at most 24 keys")
    desc = query.Filters(
        min_bpm=float_param(request, "min_bpm", 0, 1000),
        max_bpm=float_param(request, "max_bpm", 0, 1000),
        keys=camelot_keys(keys),
        min_energy=float_param(request, "min_energy", 0, 1),
        max_energy=float_param(request, "max_energy", 0, 1),
    )

    def work() -> api.TrackPage:
        st = agent.store()
        dsel = desc if desc.needs_descriptors else None
        rows = st.tracks(
            status=None if status_ == "all" else status_,
            under=dirs or None,
            limit=limit + 1,
            offset=offset,
            descriptors=dsel,
        )
        total = st.count_tracks(
            status=None if status_ == "all" else status_, under=dirs or None, descriptors=dsel
        )
        cols = st.descriptor_columns({t.recording_id for t in rows if t.recording_id})
        items = [track_model(t, cols.get(t.recording_id or 0)) for t in rows[:limit]]
        return api.TrackPage(
            items=items,
            total=total,
            offset=offset,
            limit=limit,
            next_offset=offset + limit if len(rows) > limit else None,
        )

    return await off_loop(work)


async def get_track(request: web.Request) -> api.TrackDetail:
    agent = agent_of(request)
    tid = track_id_param(request)

    def work() -> api.TrackDetail:
        d = library.track_detail(agent.store(), tid, agent.cfg.mood_field)
        if d is None:
            raise ApiError(404, "not-found", f"no track {tid}")
        return d

    return await off_loop(work)


async def lookup(request: web.Request) -> api.TrackList:
    agent = agent_of(request)
    q = request.query
    given = [k for k in ("path", "fingerprint", "mbid", "isrc") if q.get(k)]
    if len(given) != 1:
        raise ApiError(400, "bad-request", "give exactly one of path, fingerprint, mbid, isrc")
    key = given[0]
    val = path_params(request, "path")[0] if key == "path" else q[key]
    if len(val) > 65536:
        raise ApiError(413, "too-large", f"{key} is too long")

    def work() -> api.TrackList:
        st = agent.store()
        if key == "path":
            return api.TrackList(
                items=[track_model(t) for t in st.lookup(path=agent.confine(val, must_exist=False))]
            )
        if key == "mbid":
            return api.TrackList(items=[track_model(t) for t in st.lookup(mbid=val.lower())])
        if key == "isrc":
            return api.TrackList(items=[track_model(t) for t in st.lookup(isrc=val.upper())])
        from nomarr.fingerprint import Fingerprint, decode_compressed, match_recording

        try:
            values = decode_compressed(val)
        except ValueError as e:
            raise ApiError(400, "bad-request", f"fingerprint: {e}") from None
        dur = q.get("duration")
        try:
            duration = float(dur) if dur else 0.0
        except ValueError:
            raise ApiError(400, "bad-request", "duration must be a number") from None
        rec = match_recording(st, Fingerprint(duration, values))
        if rec is None:
            return api.TrackList(items=[])
        return api.TrackList(
            items=[track_model(t) for t in st.tracks_of_recordings([rec]).get(rec, [])]
        )

    return await off_loop(work)


async def similar(request: web.Request) -> api.HitList:
    agent = agent_of(request)
    req: api.SimilarRequest = await json_body(request, api.SimilarRequest)
    filters = parse_filters(agent, req.filters)
    seed: Any = None
    if req.track_id is not None or req.path is not None:
        seed = seed_of(agent, req.track_id, req.path)

    def work() -> api.HitList:
        check_labels(agent.store(), filters)
        st = agent.store()
        if req.vector is not None:
            assert req.model is not None
            space = query.pick_space(st, req.model)
            vec = np.asarray(req.vector, dtype=np.float32)
            if not np.all(np.isfinite(vec)) or not np.any(vec):
                raise ApiError(400, "bad-request", "vector must be finite and not all zero")
            dim = next((d for mid, d in st.spaces().values() if mid == space), None)
            if dim is not None and dim != vec.shape[0]:
                raise ApiError(
                    400, "bad-request", f"vector has {vec.shape[0]} dimensions; {space} has {dim}"
                )
            hits = query.similar_to_vector(
                st, vec, space, req.limit, filters=filters, distinct=req.distinct
            )
            return api.HitList(model=space, items=hit_models(hits))
        ref = seed
        if req.stream_id is not None:
            ref = st.stream(req.stream_id) if req.stream_id <= 2**63 - 1 else None
            if ref is None:
                raise ApiError(404, "not-found", f"no stream {req.stream_id}")
        assert ref is not None
        space = query.pick_space(st, req.model)
        seed_track, hits = query.similar(
            st, ref, req.limit, model=space, filters=filters, distinct=req.distinct
        )
        return api.HitList(model=space, seed=track_model(seed_track), items=hit_models(hits))

    return await off_loop(work)


async def moods(request: web.Request) -> api.MoodList:
    agent = agent_of(request)

    def work() -> api.MoodList:
        labs = query.labels(agent.store())
        items = [api.MoodLabel(label=k, models=sorted(v)) for k, v in sorted(labs.items())]
        return api.MoodList(items=items, zero_shot=clap_text_ready(agent))

    return await off_loop(work)


async def tag_keys(request: web.Request) -> api.TagKeyList:
    agent = agent_of(request)

    def work() -> api.TagKeyList:
        st = agent.store()
        prefixes = st.model_prefixes()
        items = []
        for key, n in st.written_keys():
            try:
                pk = tagkeys.parse_key(key)
            except ValueError:  # not ours to describe (the writer only writes parseable keys)
                continue
            prefix = f"{tagkeys.PREFIX}{pk.group}_"
            items.append(
                api.TagKey(
                    key=pk.key,
                    tracks=n,
                    kind=pk.kind,
                    prefix=prefix,  # type: ignore[arg-type]
                    label=None if pk.kind == "provenance" else pk.label,
                    tier=pk.tier,  # type: ignore[arg-type]
                    model=prefixes.get(prefix),
                )
            )
        return api.TagKeyList(items=items)

    return await off_loop(work)


def clap_text_ready(agent: Agent) -> bool:
    try:
        return any(
            m.kind == "clap-text" and agent.registry.installed(m)
            for m in agent.registry.manifests().values()
        )
    except Exception:
        return False


async def playlist_mood(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.MoodPlaylistRequest = await json_body(request, api.MoodPlaylistRequest)
    filters = parse_filters(agent, req.filters)

    def work() -> api.Playlist:
        check_labels(agent.store(), filters)
        st = agent.store()
        if req.model is not None and req.model not in st.model_ids():
            raise query.QueryError(
                f"no analyses of model {req.model!r} in this library (have: {', '.join(st.model_ids()) or 'none'})"
            )
        try:
            hits = query.mood_playlist(
                st, req.label, req.limit, model=req.model, min_score=req.min_score, filters=filters
            )
            return api.Playlist(kind="mood", model=req.model, items=hit_models(hits))
        except query.QueryError:
            if req.model is not None or not clap_text_ready(agent):
                raise
        # no model scores this label: with CLAP, any words are a mood (zero-shot)
        hits = query.text_playlist(
            st, f"{req.label} music", req.limit, filters=filters, registry=agent.registry
        )
        return api.Playlist(kind="mood", zero_shot=True, items=hit_models(hits))

    return await off_loop(work)


async def playlist_radio(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.RadioRequest = await json_body(request, api.RadioRequest)
    filters = parse_filters(agent, req.filters)
    seed = seed_of(agent, req.track_id, req.path)

    def work() -> api.Playlist:
        check_labels(agent.store(), filters)
        st = agent.store()
        space = query.pick_space(st, req.model)
        hits = query.radio(
            st,
            seed,
            req.limit + len(req.exclude_track_ids),
            model=space,
            filters=filters,
            harmonic=req.harmonic,
        )
        skip = set(req.exclude_track_ids)
        hits = [h for i, h in enumerate(hits) if i == 0 or h.track.id not in skip][: req.limit]
        return api.Playlist(kind="radio", model=space, items=hit_models(hits))

    return await off_loop(work)


async def playlist_path(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.PathPlaylistRequest = await json_body(request, api.PathPlaylistRequest)
    filters = parse_filters(agent, req.filters)
    a = seed_of(agent, req.start.track_id, req.start.path)
    b = seed_of(agent, req.end.track_id, req.end.path)

    def work() -> api.Playlist:
        check_labels(agent.store(), filters)
        st = agent.store()
        space = query.pick_space(st, req.model)
        return api.Playlist(
            kind="path",
            model=space,
            items=hit_models(
                query.path_playlist(
                    st, a, b, req.limit, model=space, filters=filters, harmonic=req.harmonic
                )
            ),
        )

    return await off_loop(work)


async def playlist_text(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.TextPlaylistRequest = await json_body(request, api.TextPlaylistRequest)
    filters = parse_filters(agent, req.filters)

    def work() -> api.Playlist:
        check_labels(agent.store(), filters)
        return api.Playlist(
            kind="text",
            items=hit_models(
                query.text_playlist(
                    agent.store(), req.text, req.limit, filters=filters, registry=agent.registry
                )
            ),
        )

    return await off_loop(work)
