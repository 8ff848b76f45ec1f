"""The match rule: which recording of the library a listen (or a favourite) is of.

In order, the first rule that finds something wins (docs/listens.md states the same):

1. ``track`` / ``stream``: the source already knows the agent's item (a plugin that mapped its
   track to the agent's track id, a stream id).
2. ``mbid``: the MusicBrainz recording id equals a library file's (or a stream's) recording id.
3. ``isrc``: the ISRC equals one (case and hyphens ignored).
4. ``provider``: the provider's item id equals a stream's (what Music Assistant streamed).
5. ``artist_title``: artist and title agree after normalisation (case, accents, punctuation,
   ``&``/``and``, a ``feat.`` part and a "remastered" note dropped; the listen's artist may also be
   the first of several credited artists), and the durations agree within max(3 s, 3 %) when both
   are known. Among several recordings the one with the nearest duration wins, then the lowest
   id; when a duration rules every candidate out the listen stays unmatched (a live take or an
   edit is another recording).

A listen no rule matches is kept with its ids and counted as unmatched; :func:`rematch` tries the
unmatched again after the library changed (a scan, an ingest).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nomarr.store import Store

DURATION_TOLERANCE_S = 3.0
DURATION_TOLERANCE_FRAC = 0.03

_FEAT = re.compile(
    r"[\(\[]\s*(feat|ft|featuring|with)\.?\s[^\)\]]*[\)\]]|\s(feat|ft|featuring)\.?\s.*$"
)
_REMASTER = re.compile(
    r"[\(\[][^\)\]]*\b(remaster(ed)?|mono|stereo)\b[^\)\]]*[\)\]]|\s-\s.*\bremaster(ed)?\b.*$"
)
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
_ARTIST_SPLIT = re.compile(r"\s*(?:,|;|/|&|\bx\b|\band\b|\bfeat\.?|\bft\.?|\bfeaturing\b)\s*")


def norm_text(s: str | None) -> str:
    """Case, accents, punctuation and spacing folded away: ``"Beyoncé – Halo!"`` → ``beyonce halo``."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKD", s.casefold())
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("&", " and ")
    return " ".join(_NON_WORD.sub(" ", s).split())


def norm_title(s: str | None) -> str:
    """A title with a featuring part and a remaster note removed, then :func:`norm_text`."""
    if not s:
        return ""
    t = s.casefold()
    t = _FEAT.sub(" ", t)
    t = _REMASTER.sub(" ", t)
    return norm_text(t) or norm_text(s)


def artist_keys(s: str | None) -> set[str]:
    """The whole credit, and its first artist when several are credited."""
    if not s:
        return set()
    full = norm_text(s)
    first = norm_text(_ARTIST_SPLIT.split(s.casefold(), maxsplit=1)[0])
    return {k for k in (full, first) if k}


def norm_isrc(s: str | None) -> str | None:
    """ISRCs are written with and without hyphens, in either case."""
    if not s:
        return None
    v = re.sub(r"[^0-9A-Za-z]", "", s).upper()
    return v or None


def norm_mbid(s: str | None) -> str | None:
    """MusicBrainz ids compare lowercase."""
    v = (s or "").strip().lower()
    return v or None


def _forms(raw: Any, norm: Any) -> list[str]:
    """The spellings an identifier may be stored under: as written in the file, and normalised."""
    if not isinstance(raw, str) or not raw.strip():
        return []
    out = [raw.strip()]
    n = norm(raw)
    if n and n not in out:
        out.append(n)
    return out


def durations_agree(a: float | None, b: float | None) -> bool:
    """Within max(3 s, 3 %) when both are known; unknown agrees."""
    if not a or not b:
        return True
    return abs(a - b) <= max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRAC * max(a, b))


@dataclass(frozen=True)
class Match:
    """The outcome for one listen: the recording (None: unmatched) and the rule that found it."""

    recording_id: int | None
    rule: str  # track | stream | mbid | isrc | provider | artist_title | none


UNMATCHED = Match(None, "none")


class Matcher:
    """Applies the match rule against one store. The artist/title index is built once and rebuilt
    only when the library's files or streams changed; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sig: tuple[Any, ...] | None = None
        self._index: dict[tuple[str, str], list[tuple[int, float | None]]] = {}

    def _signature(self, store: Store) -> tuple[Any, ...]:
        # moved by triggers whenever a file comes, goes, changes recording or is re-tagged, or a
        # stream is stored (migration 0102-library-version)
        return (str(store.path), store.meta("library_version", "0"))

    def _ensure_index(self, store: Store) -> dict[tuple[str, str], list[tuple[int, float | None]]]:
        sig = self._signature(store)
        with self._lock:
            if sig == self._sig:
                return self._index
        index: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
        rows = store.db.execute(
            "SELECT recording_id, artist, title, duration FROM tracks WHERE +status = 'ok' AND "
            "recording_id IS NOT NULL AND title IS NOT NULL UNION ALL SELECT recording_id, artist, "
            "title, duration FROM streams WHERE title IS NOT NULL"
        )
        for rec, artist, title, dur in rows:
            t = norm_title(title)
            if not t:
                continue
            for a in artist_keys(artist) or {""}:
                index.setdefault((a, t), []).append((int(rec), dur))
        with self._lock:
            self._index, self._sig = index, sig
        return index

    def match(self, store: Store, ids: Mapping[str, Any]) -> Match:
        """The recording for one listen's identifiers (keys as in the ``listens`` table, plus
        ``track_id`` / ``stream_id``)."""
        db = store.db
        tid = ids.get("track_id")
        if tid:
            row = db.execute(
                "SELECT recording_id FROM tracks WHERE id = ? AND recording_id IS NOT NULL", (tid,)
            ).fetchone()
            if row:
                return Match(int(row[0]), "track")
        sid = ids.get("stream_id")
        if sid:
            row = db.execute("SELECT recording_id FROM streams WHERE id = ?", (sid,)).fetchone()
            if row:
                return Match(int(row[0]), "stream")
        for rule, col, forms in (
            ("mbid", "mb_recording", _forms(ids.get("mb_recording"), norm_mbid)),
            ("isrc", "isrc", _forms(ids.get("isrc"), norm_isrc)),
        ):
            if not forms:
                continue
            marks = ",".join("?" * len(forms))
            row = db.execute(
                f"SELECT recording_id FROM tracks WHERE {col} IN ({marks}) AND +status = 'ok' AND "
                f"recording_id IS NOT NULL UNION ALL SELECT recording_id FROM streams WHERE "
                f"{col} IN ({marks}) ORDER BY 1 LIMIT 1",
                (*forms, *forms),
            ).fetchone()
            if row:
                return Match(int(row[0]), rule)
        pid = ids.get("provider_id")
        if pid:
            row = db.execute(
                "SELECT recording_id FROM streams WHERE provider_id = ? ORDER BY id LIMIT 1", (pid,)
            ).fetchone()
            if row:
                return Match(int(row[0]), "provider")
        return self._by_name(store, ids)

    def _by_name(self, store: Store, ids: Mapping[str, Any]) -> Match:
        title = norm_title(ids.get("title"))
        if not title:
            return UNMATCHED
        index = self._ensure_index(store)
        cands: dict[int, float | None] = {}
        for a in artist_keys(ids.get("artist")) or {""}:
            for rec, dur in index.get((a, title), []):
                cands.setdefault(rec, dur)
        if not cands:
            return UNMATCHED
        want = ids.get("duration")
        want = float(want) if isinstance(want, int | float) and want > 0 else None
        ok = [(rec, dur) for rec, dur in cands.items() if durations_agree(want, dur)]
        if not ok:
            return UNMATCHED
        ok.sort(key=lambda rd: (abs((rd[1] or 0.0) - want) if want and rd[1] else 0.0, rd[0]))
        return Match(ok[0][0], "artist_title")


def rematch(store: Store, matcher: Matcher, *, batch: int = 5000) -> int:
    """Match the listens and favourites that no rule matched before (the library may have gained
    their recording since); returns how many were matched now. Call outside a transaction: it
    commits per batch."""
    found = 0
    after = 0
    while True:
        rows = store.unmatched(limit=batch, after_id=after)
        if not rows:
            break
        after = rows[-1][0]
        hits = []
        for lid, ids in rows:
            m = matcher.match(store, ids)
            if m.recording_id is not None:
                hits.append((m.recording_id, m.rule, lid))
        if hits:
            with store.tx():
                found += store.set_listen_matches(hits)
    favs = store.unmatched_favourites()
    fav_hits = []
    for user, source, key, ids in favs:
        m = matcher.match(store, ids)
        if m.recording_id is not None:
            fav_hits.append((user, source, key, m.recording_id, m.rule))
    if fav_hits:
        with store.tx():
            for user, source, key, rec, rule in fav_hits:
                store.set_favourite_match(user, source, key, rec, rule)
        found += len(fav_hits)
    return found
