"""The library as people browse it (the web console's table, ``GET /browse``): search, filter by a
label's score or tier, sort, page; and the 2-D map of an embedding space (``GET /map``).

Text search and column sorts are SQL (the ``tracks_fts`` index); anything about a label's score is
numpy over the per-model score matrix the agent already keeps in memory for mood playlists
(:mod:`nomarr.vindex`), because scores live in JSON per analysis and decoding 100k of them per
request would take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from nomarr_client import models as api
from nomarr_client.tags import DEFAULT_TIER_THRESHOLDS, slug, tier_of

from nomarr import query
from nomarr.library import tiers_of
from nomarr.store import Store, Track


@dataclass
class BrowseParams:
    """What the table asks for."""

    q: str | None = None
    status: str | None = "ok"
    under: list[str] | None = None
    sort: str = "id"  # a store.browse.SORT_COLUMNS key, or "score" (needs label)
    desc: bool = False
    offset: int = 0
    limit: int = 50
    label: str | None = None
    model: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    tier: str | None = None
    ids: list[int] | None = None  # only these tracks (the map's selection)


def label_column(
    st: Store, label: str, model: str | None
) -> tuple[str, str, np.ndarray, np.ndarray, tuple[float, float], bool]:
    """(model id, label as stored, sorted recording ids, their scores, (high, medium) bounds,
    whether the bounds are calibrated) for one label; QueryError when no model scores it."""
    want = slug(label)
    for mid in [model] if model else st.model_ids():
        labs, mat, recs = st.label_scores(mid)
        slugs = [slug(x) for x in labs]
        if want not in slugs:
            continue
        j = slugs.index(want)
        rec = np.asarray(recs, dtype=np.int64)
        col = np.asarray(mat[:, j], dtype=np.float32) if len(rec) else np.zeros(0, np.float32)
        order = np.argsort(rec, kind="stable")
        th = st.tier_thresholds().get(mid, {}).get(labs[j])
        bounds = th if th is not None else DEFAULT_TIER_THRESHOLDS
        return mid, labs[j], rec[order], col[order], bounds, th is not None
    where = f"model {model!r}" if model else "any model in this library"
    raise query.QueryError(f"label {label!r} is not scored by {where}")


def scores_for(sorted_recs: np.ndarray, col: np.ndarray, recs: np.ndarray) -> np.ndarray:
    """Each of ``recs``' score (NaN where the recording has none)."""
    out = np.full(len(recs), np.nan, dtype=np.float32)
    if len(sorted_recs) == 0 or len(recs) == 0:
        return out
    pos = np.clip(np.searchsorted(sorted_recs, recs), 0, len(sorted_recs) - 1)
    hit = sorted_recs[pos] == recs
    out[hit] = col[pos[hit]]
    return out


def _tier_mask(s: np.ndarray, tier: str, bounds: tuple[float, float]) -> np.ndarray:
    hi, med = bounds
    if tier == "high":
        return s >= hi
    if tier == "medium":
        return (s >= med) & (s < hi)
    return s < med


def browse(st: Store, p: BrowseParams) -> api.BrowsePage:
    """One page of the table."""
    if p.label is None:
        tracks, total = st.browse(
            q=p.q,
            status=p.status,
            under=p.under,
            sort=p.sort,
            desc=p.desc,
            limit=p.limit,
            offset=p.offset,
            ids=p.ids,
        )
        return _page(st, p, tracks, total, None, None, {}, None)
    mid, _, srecs, col, bounds, _ = label_column(st, p.label, p.model)
    sql_sort = "id" if p.sort == "score" else p.sort
    ids, recs = st.browse_ids(
        q=p.q, status=p.status, under=p.under, sort=sql_sort, desc=p.desc, ids=p.ids
    )
    tid = np.asarray(ids, dtype=np.int64)
    s = scores_for(srecs, col, np.asarray(recs, dtype=np.int64))
    keep = np.ones(len(tid), dtype=bool)
    if p.min_score is not None:
        keep &= s >= p.min_score
    if p.max_score is not None:
        keep &= s <= p.max_score
    if p.tier is not None:
        keep &= _tier_mask(s, p.tier, bounds)
    if p.min_score is not None or p.max_score is not None or p.tier is not None:
        keep &= ~np.isnan(s)
    tid, s = tid[keep], s[keep]
    if p.sort == "score":
        key = np.where(np.isnan(s), -np.inf if p.desc else np.inf, s)
        order = np.lexsort((tid, -key if p.desc else key))
        tid, s = tid[order], s[order]
    page_ids = [int(x) for x in tid[p.offset : p.offset + p.limit]]
    page_scores = {
        int(i): float(v)
        for i, v in zip(
            tid[p.offset : p.offset + p.limit], s[p.offset : p.offset + p.limit], strict=True
        )
    }
    return _page(
        st, p, st.tracks_by_ids(page_ids), int(len(tid)), mid, bounds, page_scores, p.label
    )


def _page(
    st: Store,
    p: BrowseParams,
    tracks: list[Track],
    total: int,
    model: str | None,
    bounds: tuple[float, float] | None,
    scores: dict[int, float],
    label: str | None,
) -> api.BrowsePage:
    all_scores = st.scores_of(t.recording_id for t in tracks if t.recording_id)
    th = st.tier_thresholds()
    items = []
    for t in tracks:
        item = api.BrowseItem(**t.to_dict(), top=_top(all_scores.get(t.recording_id or 0, {}), th))
        sc = scores.get(t.id)
        if sc is not None and not np.isnan(sc) and bounds is not None:
            item.score = round(sc, 4)
            item.tier = tier_of(sc, bounds)
        items.append(item)
    return api.BrowsePage(
        items=items,
        total=total,
        offset=p.offset,
        limit=p.limit,
        sort=p.sort,
        order="desc" if p.desc else "asc",
        label=slug(label) if label else None,
        model=model,
    )


def _top(models: dict[str, dict[str, float]], th: dict[str, Any]) -> list[str]:
    """Labels at tier high over a recording's models, strongest first, at most three."""
    high: list[tuple[float, str]] = []
    for mid, scores in models.items():
        tiers = tiers_of(scores, th.get(mid))
        high += [(v, slug(k)) for k, v in scores.items() if tiers[k] == "high"]
    return list(dict.fromkeys(lab for _, lab in sorted(high, reverse=True)))[:3]
