"""Recording listens from any source: normalise, de-duplicate, match, store — in batches, each one
transaction, so a replayed import adds nothing and a killed one leaves whole batches.

Every source (a ListenBrainz export or its API, Subsonic and beets play counters, Music
Assistant's playback events, a client's own ``POST``) turns what it has into :class:`ListenIn`
and calls :func:`record_listens`; the match rule is :mod:`nomarr.listens.match`'s.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nomarr.listens.match import Matcher, norm_isrc, norm_mbid, norm_text, norm_title
from nomarr.store import Store
from nomarr.store.listens import OUTCOMES

# A listen counts as completed after half the track or 4 minutes, whichever comes first
# (ListenBrainz's submission rule), and as skipped under 30 s (or under half of a shorter track).
COMPLETE_AFTER_S = 240.0
SKIP_BEFORE_S = 30.0
BATCH = 2000
ID_KEYS = ("mb_recording", "isrc", "provider_id", "artist", "title", "album", "duration")


@dataclass
class ListenIn:
    """One listen as a source reports it, before matching."""

    ts: float
    source: str
    outcome: str | None = None  # completed | played | skipped; None: decided from seconds
    seconds: float | None = None
    ids: dict[str, Any] = field(default_factory=dict)  # ID_KEYS plus track_id / stream_id
    dedup: str | None = None  # a stable id for this listen; default from time and identity
    estimated: bool = False  # the time is a guess (a play count that rose between two polls)


@dataclass
class ImportSummary:
    """What one import did."""

    received: int = 0
    added: int = 0
    duplicates: int = 0
    invalid: int = 0
    matched: int = 0
    unmatched: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    favourites: int = 0

    def bad(self, msg: str) -> None:
        """Count an entry that could not be read (the first 20 reasons are kept)."""
        self.invalid += 1
        if len(self.errors) < 20:
            self.errors.append(msg)

    def merge(self, other: ImportSummary) -> None:
        """Add another batch's counts."""
        for k in ("received", "added", "duplicates", "invalid", "matched", "unmatched"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.favourites += other.favourites
        self.rules.update(other.rules)
        for e in other.errors:
            if len(self.errors) < 20:
                self.errors.append(e)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "received": self.received,
            "added": self.added,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "by_rule": dict(self.rules),
            "favourites": self.favourites,
            "errors": self.errors,
        }


def decide_outcome(outcome: str | None, seconds: float | None, duration: float | None) -> str:
    """``completed`` / ``played`` / ``skipped``: what the source said, else from the seconds
    played against the track's length (see the constants above)."""
    if outcome in OUTCOMES:
        return outcome
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "played"
    dur = duration if duration and duration > 0 else None
    done_at = min(COMPLETE_AFTER_S, 0.5 * dur) if dur else COMPLETE_AFTER_S
    skip_at = min(SKIP_BEFORE_S, 0.5 * dur) if dur else SKIP_BEFORE_S
    if seconds >= done_at:
        return "completed"
    if seconds < skip_at:
        return "skipped"
    return "played"


def clean_ids(raw: dict[str, Any]) -> dict[str, Any]:
    """Identifiers with empty values dropped, ids normalised, text trimmed and bounded."""
    out: dict[str, Any] = {}
    for k in ("artist", "title", "album", "provider_id"):
        v = raw.get(k)
        if isinstance(v, str) and v.strip():
            out[k] = v.strip()[:1000]
    mb = norm_mbid(raw.get("mb_recording")) if isinstance(raw.get("mb_recording"), str) else None
    if mb:
        out["mb_recording"] = mb[:64]
    isrc = norm_isrc(raw.get("isrc")) if isinstance(raw.get("isrc"), str) else None
    if isrc:
        out["isrc"] = isrc[:32]
    d = raw.get("duration")
    if isinstance(d, int | float) and not isinstance(d, bool) and math.isfinite(d) and d > 0:
        out["duration"] = float(d)
    for k in ("track_id", "stream_id"):
        v = raw.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63:
            out[k] = v
    return out


def default_dedup(source: str, ts: float, ids: dict[str, Any]) -> str:
    """A listen's identity when the source gives none: source, second and what was played."""
    what = (
        ids.get("mb_recording")
        or ids.get("isrc")
        or ids.get("provider_id")
        or (f"t{ids['track_id']}" if ids.get("track_id") else None)
        or (f"s{ids['stream_id']}" if ids.get("stream_id") else None)
        or hashlib.sha1(
            f"{norm_text(ids.get('artist'))}\0{norm_title(ids.get('title'))}".encode()
        ).hexdigest()[:16]
    )
    return f"{source}:{int(ts)}:{what}"


def _batches(items: Iterable[ListenIn], n: int) -> Iterator[list[ListenIn]]:
    buf: list[ListenIn] = []
    for x in items:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def record_listens(
    store: Store,
    matcher: Matcher,
    user: str,
    listens: Iterable[ListenIn],
    summary: ImportSummary | None = None,
) -> ImportSummary:
    """Match and store listens, :data:`BATCH` per transaction; duplicates (by dedup key) are
    counted and skipped before any matching, so replaying an import costs little."""
    s = summary or ImportSummary()
    for batch in _batches(listens, BATCH):
        s.received += len(batch)
        rows = []
        keys: dict[str, ListenIn] = {}
        for x in batch:
            if not math.isfinite(x.ts) or x.ts <= 0 or x.ts > 32503680000:  # year 3000
                s.bad(f"listen time {x.ts!r} is not a plausible unix time")
                continue
            ids = clean_ids(x.ids)
            key = (x.dedup or default_dedup(x.source, x.ts, ids))[:300]
            if key in keys:
                s.duplicates += 1
                continue
            x.ids = ids
            keys[key] = x
        with store.tx():
            have = store.existing_dedup(user, keys)
            for key, x in keys.items():
                if key in have:
                    s.duplicates += 1
                    continue
                m = matcher.match(store, x.ids)
                ids = x.ids
                rows.append(
                    (
                        x.ts,
                        x.source,
                        key,
                        m.recording_id,
                        None if m.recording_id is None else m.rule,
                        *(ids.get(k) for k in ID_KEYS),
                        x.seconds,
                        decide_outcome(x.outcome, x.seconds, ids.get("duration")),
                        int(x.estimated),
                    )
                )
                if m.recording_id is None:
                    s.unmatched += 1
                else:
                    s.matched += 1
                    s.rules[m.rule] += 1
            s.added += store.add_listens(user, rows)
    return s


def record_favourites(
    store: Store,
    matcher: Matcher,
    user: str,
    source: str,
    items: Iterable[tuple[str, int, float, dict[str, Any]]],
    *,
    complete: bool,
) -> tuple[int, int]:
    """Store a source's favourites — (key, score +1/-1, since, identifiers) — matched by the same
    rule; ``complete``: these are all of the source's favourites (the rest are removed)."""
    rows = []
    for key, score, ts, raw in items:
        ids = clean_ids(raw)
        m = matcher.match(store, ids)
        rows.append(
            (
                str(key)[:300],
                m.recording_id,
                None if m.recording_id is None else m.rule,
                *(ids.get(k) for k in ID_KEYS),
                1 if score > 0 else -1,
                ts,
            )
        )
    with store.tx():
        return store.set_favourites(user, source, rows, complete=complete)
