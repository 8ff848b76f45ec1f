"""Weekly listening trends, their momentum, and the weeks the taste changed (docs/taste.md).

Weeks start on Monday 00:00 UTC. Per week, over the user's matched listens that are not skips and
whose time is known (play counts' estimated listens are left out):

- **moods**: the share of each mood label (the shared vocabulary's moods among the primary
  model's labels): each listen's mood scores normalised to sum to 1, averaged over the week;
- **axes**: the mean of the interpretable axes the library has — ``energy``, ``danceability``,
  ``tempo`` (any model or analyzer scoring a label of that name: the descriptors when present) —
  and of every label of the primary model;
- **diversity**: ``1 - |mean of the week's centred unit vectors|``: 0 when every listen is the
  same sound, towards 1 when they are spread over the library;
- **map**: the week's mean centred vector projected on the library's two principal directions
  (the taste trajectory on the map).

**Momentum** per series: an exponential moving average with a span of :data:`EMA_SHORT` weeks
(``alpha = 2 / (span + 1)``) minus one with :data:`EMA_LONG` weeks: positive while a series rises.

**Change points**: binary segmentation on the weekly taste position — the mean centred vector
projected on the user's first :data:`CP_DIMS` principal directions, plus the mood shares — with each
feature scaled by its noise (the median absolute difference between consecutive weeks / 0.954, a
robust estimate that a shift barely moves) and each week weighted by its listens (the inverse of
its mean's variance). A split of a segment is kept when it reduces the weighted squared error by more than ``CP_PENALTY × features × ln(weeks)`` (a BIC-style
penalty) and leaves at least :data:`CP_MIN_WEEKS` weeks each side; segments split recursively.
Each change point is the first week of the new segment, with the moods and axes that moved most;
cuts at most :data:`CP_MERGE_WEEKS` weeks apart are one change (a change made mid-week leaves a
mixed week between the two tastes), reported at its first week with ``through`` its last.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from nomarr.store import ListenArrays, Store
from nomarr.taste.space import Space, principal_directions
from nomarr_client.tags import slug
from nomarr_client.vocab import is_mood

WEEK_S = 7 * 86400
EPOCH_MONDAY = 4 * 86400  # 1970-01-01 was a Thursday: Monday 1970-01-05 starts week 0
EMA_SHORT = 4
EMA_LONG = 12
CP_DIMS = 8
CP_PENALTY = 2.0
CP_MIN_WEEKS = 2
CP_MERGE_WEEKS = 2
AXES = {
    "energy": ("energy", "energetic"),
    "danceability": ("danceability", "danceable"),
    "tempo": ("tempo", "bpm"),
}


@dataclass
class Week:
    """One week's aggregates (index into the answer's week list)."""

    start: float
    listens: int
    skips: int
    moods: dict[str, float]
    axes: dict[str, float]
    diversity: float | None
    map: tuple[float, float] | None


def week_of(ts: np.ndarray | float) -> np.ndarray:
    """Week number (Mondays since 1970-01-05, UTC)."""
    return np.floor((np.asarray(ts, dtype=np.float64) - EPOCH_MONDAY) / WEEK_S).astype(np.int64)


def ema(x: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average down the first axis (weeks; one column per series) with
    ``alpha = 2 / (span + 1)``; a NaN week carries the average over, the first value starts it."""
    a = 2.0 / (span + 1.0)
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    cur = np.full(x.shape[1:], np.nan)
    for i in range(x.shape[0]):
        v = x[i]
        ok = np.isfinite(v)
        cur = np.where(ok & np.isfinite(cur), a * v + (1 - a) * cur, np.where(ok, v, cur))
        out[i] = cur
    return out


def _scores_matrix(store: Store, model: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(label slugs, [n, labels] scores, sorted recording ids with ``order`` to rows)."""
    labels, mat, recs = store.label_scores(model)
    return [slug(x) for x in labels], mat, np.asarray(recs, dtype=np.int64)


def _rows_of(ids: np.ndarray, recs: np.ndarray) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    if srt.size == 0:
        return np.full(recs.shape, -1)
    pos = np.minimum(np.searchsorted(srt, recs), srt.size - 1)
    return np.where(srt[pos] == recs, order[pos], -1)


def segment(x: np.ndarray, w: np.ndarray, penalty: float, min_len: int) -> list[int]:
    """Binary segmentation of the rows of ``x`` (weights ``w``) by weighted squared error; the
    indices where new segments start, sorted."""
    n = x.shape[0]
    cuts: list[int] = []

    def sse_split(a: int, b: int) -> tuple[float, int]:
        xs, ws = x[a:b], w[a:b]
        cw = np.cumsum(ws)
        cx = np.cumsum(xs * ws[:, None], axis=0)
        cxx = np.cumsum((xs * xs).sum(axis=1) * ws)
        tot = cxx[-1] - (cx[-1] @ cx[-1]) / cw[-1]
        best, at = 0.0, -1
        for t in range(min_len, b - a - min_len + 1):
            wl, wr = cw[t - 1], cw[-1] - cw[t - 1]
            if wl <= 0 or wr <= 0:
                continue
            xl, xr = cx[t - 1], cx[-1] - cx[t - 1]
            left = cxx[t - 1] - (xl @ xl) / wl
            right = (cxx[-1] - cxx[t - 1]) - (xr @ xr) / wr
            gain = tot - left - right
            if gain > best:
                best, at = gain, t
        return best, at

    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        if b - a < 2 * min_len:
            continue
        gain, t = sse_split(a, b)
        if t > 0 and gain > penalty:
            cuts.append(a + t)
            stack += [(a, a + t), (a + t, b)]
    return sorted(cuts)


def _noise(x: np.ndarray) -> np.ndarray:
    """Per-column noise scale from consecutive differences (robust to a few level shifts)."""
    if x.shape[0] < 3:
        return np.ones(x.shape[1])
    d = np.abs(np.diff(x, axis=0))
    s = np.median(d, axis=0) / 0.954  # median |N(0, 2σ²)| = 0.954 σ
    return np.where(s > 1e-9, s, max(float(np.median(s[s > 0])) if (s > 0).any() else 1.0, 1e-9))


def trends(
    store: Store,
    space: Space,
    user: str,
    *,
    weeks: int = 52,
    until: float | None = None,
    mood_model: str | None = None,
    arrays: ListenArrays | None = None,
) -> dict[str, Any]:
    """The user's last ``weeks`` weeks up to ``until`` (default: their newest listen)."""
    arr = arrays if arrays is not None else store.listen_arrays(user)
    keep = (arr.outcome >= 0) & ~arr.estimated
    ts, recs = arr.ts[keep], arr.recording[keep]
    skips_ts = arr.ts[(arr.outcome < 0) & ~arr.estimated]
    end = until if until is not None else (float(ts.max()) if ts.size else time.time())
    last_week = int(week_of(end))
    first_week = last_week - weeks + 1
    wk = week_of(ts)
    sel = (wk >= first_week) & (wk <= last_week)
    ts, recs, wk = ts[sel], recs[sel], wk[sel] - first_week
    sk = week_of(skips_ts) - first_week
    sk = sk[(sk >= 0) & (sk < weeks)]
    counts = np.bincount(wk, minlength=weeks)
    skip_counts = np.bincount(sk, minlength=weeks)

    # vectors: centred unit vectors of the listens that have one
    rows = space.rows(recs)
    has = rows >= 0
    xv = space.centred(rows[has]) if has.any() else np.zeros((0, space.unit.shape[1]), np.float32)
    wv = wk[has]
    nv = np.bincount(wv, minlength=weeks).astype(float)
    sums = _sum_by(wv, xv, weeks)
    means = sums / np.maximum(nv, 1)[:, None]
    diversity = np.where(nv > 0, 1.0 - np.linalg.norm(means, axis=1), np.nan)
    axes2 = space.map_axes()
    mapxy = means @ axes2.T

    # label scores: moods (shares), axes and every label of the primary model
    model = mood_model or space.model
    labels, mat, srecs = _scores_matrix(store, model)
    srows = _rows_of(srecs, recs)
    hs = srows >= 0
    label_means = np.full((weeks, len(labels)), np.nan)
    mood_idx = [i for i, lab in enumerate(labels) if is_mood(lab)]
    mood_shares = np.full((weeks, len(mood_idx)), np.nan)
    if hs.any() and labels:
        sc = np.nan_to_num(mat[srows[hs]].astype(np.float64))
        wl = wk[hs]
        n_l = np.bincount(wl, minlength=weeks).astype(float)
        tot = _sum_by(wl, sc, weeks)
        ok = n_l > 0
        label_means[ok] = tot[ok] / n_l[ok, None]
        if mood_idx:
            m = sc[:, mood_idx]
            m = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
            ms = _sum_by(wl, m, weeks)
            mood_shares[ok] = ms[ok] / n_l[ok, None]
    axes = _axes(store, recs, wk, weeks, {model: (labels, label_means)})

    series: dict[str, np.ndarray] = {
        f"mood:{labels[i]}": mood_shares[:, j] for j, i in enumerate(mood_idx)
    }
    series |= {f"axis:{k}": v for k, v in axes.items()}
    series["diversity"] = diversity
    series["listens"] = counts.astype(float)

    change = _change_points(means, nv, mood_shares, weeks)
    changes = []
    for c, through in change:
        before, after = slice(max(0, c - 8), c), slice(through, min(weeks, through + 8))
        moved = []
        for name, v in series.items():
            if name == "listens":
                continue
            a, b = (
                np.nanmean(v[before]) if np.isfinite(v[before]).any() else np.nan,
                (np.nanmean(v[after]) if np.isfinite(v[after]).any() else np.nan),
            )
            if np.isfinite(a) and np.isfinite(b):
                moved.append((abs(b - a), name, float(a), float(b)))
        moved.sort(reverse=True)
        changes.append(
            {
                "week": _iso(first_week + c),
                "index": int(c),
                "through": _iso(first_week + through),
                "moved": [
                    {"series": name, "before": round(a, 4), "after": round(b, 4)}
                    for _, name, a, b in moved[:5]
                ],
            }
        )

    week_list = []
    for i in range(weeks):
        week_list.append(
            {
                "week": _iso(first_week + i),
                "listens": int(counts[i]),
                "skips": int(skip_counts[i]),
                "moods": {labels[j]: _r(mood_shares[i, k]) for k, j in enumerate(mood_idx)},
                "axes": {k: _r(v[i]) for k, v in axes.items()},
                "diversity": _r(diversity[i]),
                "map": None if nv[i] == 0 else [_r(mapxy[i, 0]), _r(mapxy[i, 1])],
            }
        )
    names = list(series)
    table = np.stack([series[n] for n in names], axis=1) if names else np.zeros((weeks, 0))
    short, long_ = ema(table, EMA_SHORT)[-1], ema(table, EMA_LONG)[-1]
    momentum = {
        n: {"ema": _r(short[i]), "momentum": _r(short[i] - long_[i])} for i, n in enumerate(names)
    }
    return {
        "user": user,
        "model": space.model,
        "scores_model": model,
        "weeks": week_list,
        "labels": {
            labels[j]: [_r(label_means[i, j]) for i in range(weeks)] for j in range(len(labels))
        },
        "momentum": momentum,
        "change_points": changes,
        "method": {
            "week_start": "Monday 00:00 UTC",
            "ema_spans_weeks": [EMA_SHORT, EMA_LONG],
            "change_points": f"binary segmentation, penalty {CP_PENALTY} x features x ln(weeks), "
            f"at least {CP_MIN_WEEKS} weeks per segment",
        },
    }


def _axes(
    store: Store,
    recs: np.ndarray,
    wk: np.ndarray,
    weeks: int,
    have: dict[str, tuple[list[str], np.ndarray]],
) -> dict[str, np.ndarray]:
    """Weekly means of the interpretable axes, from whichever model scores them."""
    out: dict[str, np.ndarray] = {}
    for model in _model_ids(store):
        if model in have:
            labels, means = have[model]
            for axis, names in AXES.items():
                for nm in names:
                    if nm in labels and axis not in out:
                        out[axis] = means[:, labels.index(nm)]
            continue
        labels, mat, srecs = _scores_matrix(store, model)
        hits = [
            (axis, labels.index(nm)) for axis, names in AXES.items() for nm in names if nm in labels
        ]
        hits = [(a, i) for a, i in hits if a not in out]
        if not hits:
            continue
        rows = _rows_of(srecs, recs)
        ok = rows >= 0
        n = np.bincount(wk[ok], minlength=weeks).astype(float)
        for axis, i in hits:
            if axis in out:
                continue
            tot = np.bincount(wk[ok], weights=np.nan_to_num(mat[rows[ok], i]), minlength=weeks)
            out[axis] = np.where(n > 0, tot / np.maximum(n, 1), np.nan)
    return out


_MODELS: dict[str, tuple[float, list[str]]] = {}


def _model_ids(store: Store) -> list[str]:
    """The models with analyses, remembered for a minute: finding them scans every analysis,
    which at 100k tracks costs more than the rest of a trend answer."""
    key = str(store.path)
    got = _MODELS.get(key)
    if got is None or time.monotonic() - got[0] > 60.0:
        got = (time.monotonic(), store.model_ids())
        _MODELS[key] = got
    return got[1]


def _change_points(
    means: np.ndarray, n: np.ndarray, moods: np.ndarray, weeks: int
) -> list[tuple[int, int]]:
    """Changes as (first week, last week of the transition) indices, from the weekly taste
    position and mood shares."""
    live = np.flatnonzero(n > 0)
    if live.size < 2 * CP_MIN_WEEKS + 1:
        return []
    x = means[live]
    x = x - x.mean(axis=0)
    feats = [x @ principal_directions(x, CP_DIMS).T]
    if moods.shape[1]:
        feats.append(np.nan_to_num(moods[live]))
    f = np.concatenate(feats, axis=1)
    f = (f - f.mean(axis=0)) / _noise(f)
    # a week's mean varies as 1/listens: weighting by listens makes every week's noise count
    # alike, so a half-empty first or last week cannot pass for a change
    w = n[live] / n[live].mean()
    penalty = CP_PENALTY * f.shape[1] * np.log(max(live.size, 3))
    cuts = [int(live[c]) for c in segment(f, w, penalty, CP_MIN_WEEKS)]
    # a change that happens mid-week leaves one mixed week, which segmentation may isolate as a
    # segment of its own: cuts within CP_MERGE_WEEKS of the previous one belong to one change
    out: list[tuple[int, int]] = []
    for c in cuts:
        if out and c - out[-1][1] <= CP_MERGE_WEEKS:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _sum_by(group: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Row sums of ``x`` per group (0..n-1): [n, columns]."""
    out = np.zeros((n, x.shape[1]))
    if group.size == 0:
        return out
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    out[g[starts]] = np.add.reduceat(np.asarray(x, dtype=np.float64)[order], starts, axis=0)
    return out


def _iso(week: int) -> str:
    return dt.datetime.fromtimestamp(EPOCH_MONDAY + week * WEEK_S, dt.UTC).date().isoformat()


def _r(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)
