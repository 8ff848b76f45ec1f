"""Play counters from polled sources — Subsonic servers (Navidrome's ``playCount``, ``played``,
``starred``) and beets (``play_count``, ``skip_count``, ``last_played`` from mpdstats) — turned into
listens.

Such a source only says "this song has been played 12 times, last at T". The agent keeps the last
counts each source reported (``play_counters``) and makes a listen of every rise:

- a rise of ``d`` plays since the last report gives ``d`` listens; the newest is dated at the
  reported last-played time, the others spread evenly between the previous last-played time and
  that one, and marked ``estimated`` (their hour is a guess; trends leave estimated listens out);
- the first report of an item is its history: ``plays`` listens, all dated at its last-played
  time and marked estimated (so taste sees the history, trends do not invent a week of it);
- skips rise the same way (beets counts them) and become ``skipped`` listens;
- a count that went down (a server that reset its counts) only moves the baseline.

The n-th play of an item has the identity ``<source>:<item>:play:<n>``, so reporting the same
counts twice, or an older report after a newer one, adds nothing. Stars are favourites: the
report's set of starred items replaces the source's previous set when ``complete`` is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nomarr.listens.match import Matcher
from nomarr.listens.record import ImportSummary, ListenIn, record_favourites, record_listens
from nomarr.store import Store

MAX_RISE = 10000  # plays of one item in one report beyond this are treated as a bad counter


@dataclass
class CounterItem:
    """One item of a counter report."""

    item: str
    plays: int
    skips: int = 0
    last_played: float | None = None
    starred: bool | None = None
    starred_at: float | None = None
    ids: dict[str, Any] | None = None


def _spread(n: int, lo: float | None, hi: float) -> list[tuple[float, bool]]:
    """Times for ``n`` new events, newest at ``hi`` (exact); the others spread evenly back to
    ``lo`` (estimated), or all at ``hi`` when there is no earlier time."""
    if n <= 0:
        return []
    out = [(hi, False)]
    for k in range(1, n):
        if lo is None or lo >= hi:
            out.append((hi, True))
        else:
            out.append((hi - (hi - lo) * k / n, True))
    return out


def apply_counters(
    store: Store,
    matcher: Matcher,
    user: str,
    source: str,
    items: Iterable[CounterItem],
    *,
    complete: bool = False,
    now: float | None = None,
) -> ImportSummary:
    """Turn one counter report into listens and favourites (see the module docstring)."""
    now = time.time() if now is None else now
    items = list(items)
    prev = store.counters(user, source)
    listens: list[ListenIn] = []
    new_counts: list[tuple[str, int, int, float | None]] = []
    summary = ImportSummary()
    for it in items:
        if it.plays < 0 or it.skips < 0:
            summary.bad(f"{it.item}: negative count")
            continue
        last = it.last_played if it.last_played and math.isfinite(it.last_played) else None
        old = prev.get(it.item)
        new_counts.append((it.item, it.plays, it.skips, last or (old[2] if old else None)))
        ids = dict(it.ids or {})
        for kind, count, before in (
            ("play", it.plays, old[0] if old else 0),
            ("skip", it.skips, old[1] if old else 0),
        ):
            rise = count - before
            if rise <= 0:
                continue
            if rise > MAX_RISE:
                summary.bad(f"{it.item}: {kind} count rose by {rise}; ignored")
                continue
            hi = last or now
            if old is None:  # history: all at the last-played time, estimated
                times = [(hi, True)] * rise
            else:
                times = _spread(rise, old[2], hi)
                if last is None or (old[2] is not None and last <= old[2]):
                    times = [(t, True) for t, _ in times]
            for k, (ts, est) in enumerate(times):
                n = count - k  # the n-th play (or skip) of this item
                listens.append(
                    ListenIn(
                        ts=ts,
                        source=source,
                        outcome="skipped" if kind == "skip" else "completed",
                        ids=ids,
                        dedup=f"{source}:{it.item}:{kind}:{n}",
                        estimated=est,
                    )
                )
    record_listens(store, matcher, user, listens, summary)
    with store.tx():
        store.put_counters(user, source, new_counts)
    stars = [
        (it.item, 1, it.starred_at or it.last_played or now, dict(it.ids or {}))
        for it in items
        if it.starred
    ]
    if stars or complete:
        changed, _removed = record_favourites(
            store, matcher, user, source, stars, complete=complete
        )
        summary.favourites = changed
    unstarred = [it.item for it in items if it.starred is False]
    if unstarred and not complete:
        with store.tx():
            store.remove_favourites(user, source, unstarred)
    return summary
