"""Routes the web console needs beyond the library queries, public like every route: the
searchable library table (``GET /browse``), recent analyses, the 2-D map and the tags a file
carries now. Bearer-token clients may use them too; the console calls them with its session
cookie (see :mod:`nomarr.web`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from aiohttp import web
from nomarr_client import models as api
from nomarr_client.tags import TIERS, slug

from nomarr import query
from nomarr.browse import BrowseParams, browse, label_column, scores_for
from nomarr.projection import METHOD, MapCache, load_vectors, project
from nomarr.server.http import (
    ApiError,
    agent_of,
    float_param,
    int_param,
    off_loop,
    path_params,
    track_id_param,
)
from nomarr.store.browse import SORT_COLUMNS

_MAP = MapCache()


def _str_param(request: web.Request, name: str, max_len: int = 200) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len or "\x00" in raw:
        raise ApiError(400, "bad-request", f"{name} is too long or holds a NUL byte")
    return raw


async def browse_tracks(request: web.Request) -> api.BrowsePage:
    agent = agent_of(request)
    q = request.query
    sort = q.get("sort") or "id"
    if sort not in (*SORT_COLUMNS, "score"):
        raise ApiError(
            400, "bad-request", f"sort must be one of {', '.join([*SORT_COLUMNS, 'score'])}"
        )
    order = q.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "bad-request", "order must be asc or desc")
    status_ = q.get("status") or "ok"
    if status_ not in ("ok", "failed", "missing", "all"):
        raise ApiError(400, "bad-request", "status must be ok, failed, missing or all")
    tier = q.get("tier") or None
    if tier is not None and tier not in TIERS:
        raise ApiError(400, "bad-request", "tier must be high, medium or low")
    label = _str_param(request, "label")
    if label is None and (sort == "score" or tier or q.get("min_score") or q.get("max_score")):
        raise ApiError(400, "bad-request", "sort=score, tier, min_score and max_score need label")
    under = path_params(request, "under")
    if len(under) > 64:
        raise ApiError(400, "bad-request", "at most 64 under folders")
    raw_ids = q.getall("id", [])
    if len(raw_ids) > 500:
        raise ApiError(400, "bad-request", "at most 500 id values")
    try:
        ids = [int(x) for x in raw_ids]
    except ValueError:
        raise ApiError(400, "bad-request", "id must be an integer") from None
    if any(not 1 <= i <= 2**63 - 1 for i in ids):
        raise ApiError(400, "bad-request", "id must be a track id (1 or more)")
    p = BrowseParams(
        q=_str_param(request, "q", 500),
        status=None if status_ == "all" else status_,
        under=[agent.confine(u, must_exist=False) for u in under] or None,
        sort=sort,
        desc=order == "desc",
        offset=int_param(request, "offset", 0, 0, 10**9),
        limit=int_param(request, "limit", 50, 1, 500),
        label=label,
        model=_str_param(request, "model"),
        min_score=float_param(request, "min_score", 0.0, 1.0),
        max_score=float_param(request, "max_score", 0.0, 1.0),
        tier=tier,
        ids=ids or None,
    )
    return await off_loop(lambda: browse(agent.store(), p))


async def recent_analyses(request: web.Request) -> api.RecentList:
    agent = agent_of(request)
    limit = int_param(request, "limit", 10, 1, 100)

    def work() -> api.RecentList:
        rows = agent.store().recent_analyses(limit)
        return api.RecentList(
            items=[
                api.RecentAnalysis(track=api.Track(**t.to_dict()), model=m, created=c)
                for t, m, c in rows
            ]
        )

    return await off_loop(work)


async def file_tags(request: web.Request) -> api.FileTags:
    agent = agent_of(request)
    tid = track_id_param(request)

    def work() -> api.FileTags:
        from nomarr.tagio import TagError, read_tags

        t = agent.store().track(tid)
        if t is None or t.status == "missing":
            raise ApiError(404, "not-found", f"no track {tid}")
        path = agent.confine(t.path)
        try:
            ft = read_tags(path)
        except TagError as e:
            return api.FileTags(path=path, tags={}, error=str(e))
        return api.FileTags(path=path, tags=dict(sorted(ft.nom.items())), mood=ft.mood)

    return await off_loop(work)


async def map_points(request: web.Request) -> web.StreamResponse:
    """``GET /map``: answered from a cache of serialised answers (100k points are ~3 MB of
    JSON; serialising them per request would dominate the answer's time)."""
    agent = agent_of(request)
    model = _str_param(request, "model")
    label = _str_param(request, "label")

    def work() -> bytes:
        st = agent.store()
        space = query.pick_space(st, model)
        version = agent.index.version()
        key = (space, slug(label) if label else None, version)
        hit = _MAP.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        pkey = (space, None, version, "projection")
        proj = _MAP.get(pkey)
        if proj is None:
            ids, mat = load_vectors(st, space)
            proj = project(ids, mat, space)
            _MAP.put(pkey, proj)
        first = _first_tracks(st)
        keep = np.array([int(r) in first for r in proj.recordings], dtype=bool)
        recs = proj.recordings[keep]
        xy = proj.xy[keep]
        values = None
        if label:
            _, _, srecs, col, _, _ = label_column(st, label, None)
            s = scores_for(srecs, col, recs)
            values = np.where(np.isnan(s), -1.0, np.round(s.astype(np.float64), 3)).tolist()
        doc = {
            "model": space,
            "method": METHOD,
            "explained": proj.explained,
            "track_ids": [first[int(r)] for r in recs],
            "x": np.round(xy[:, 0].astype(np.float64), 4).tolist(),
            "y": np.round(xy[:, 1].astype(np.float64), 4).tolist(),
            "label": slug(label) if label else None,
            "values": values,
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        _MAP.put(key, body)
        return body

    body = await off_loop(work)
    resp = web.Response(body=body, content_type="application/json")
    resp.enable_compression()
    return resp


def _first_tracks(st: Any) -> dict[int, int]:
    """recording id → its first present track."""
    return {
        int(r): int(t)
        for r, t in st.db.execute(
            "SELECT recording_id, min(id) FROM tracks WHERE +status = 'ok' AND recording_id IS NOT NULL "
            "GROUP BY recording_id"
        )
    }


def precision_of(m: Any) -> str:
    """fp32, fp16 or int8, from the model's id and file names (builds are named for it)."""
    names = " ".join([m.id, m.name, *(f.name for f in m.files)]).lower()
    for key, word in (("int8", "int8"), ("quant", "int8"), ("fp16", "fp16"), ("float16", "fp16")):
        if key in names:
            return word
    return "fp32"
