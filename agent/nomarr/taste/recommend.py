"""Recommendations from a taste profile (docs/taste.md): "for you", "rediscover", "discovery".

Every library recording is scored against the profile: its centred cosine with the nearest taste
centre, minus :data:`SKIP_PENALTY` times its cosine with the nearest skip centre when that is
positive (what the listener skips pulls its neighbourhood down). Then per mode:

- **for_you**: near the taste, not played (or skipped) in the last ``recent_days`` (default 30),
  never a recording the listener dislikes on balance;
- **rediscover**: recordings the listener liked (net positive, and two or more plays or a
  favourite) but has not played for ``since_days`` (default 90), by how much they were liked,
  then how near they are to today's taste;
- **discovery**: never played and never starred, near the taste.

With several taste centres the answer is shared between them in proportion to their weight (a
listener of 70 % jazz and 30 % metal gets both, in that ratio), interleaved; at most
``max_per_artist`` tracks of one artist. Every item says why: the liked recording nearest to it
("because you played …"), or its play history for rediscover.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from nomarr.query import Filters, _scores_of
from nomarr.store import ListenArrays, Store, Track
from nomarr.taste.profile import REPRESENTATIVES, Profile, build_profile
from nomarr.taste.space import Space, load_space

SKIP_PENALTY = 0.5
MODES = ("for_you", "rediscover", "discovery")


class TasteError(Exception):
    """The question cannot be answered (no such user, no vectors, no matched listens)."""


@dataclass
class Recommendation:
    """One recommended item and why."""

    track: Track
    score: float
    similarity: float
    reason: str
    because: Track | None = None
    centre: int | None = None


@dataclass
class _Scored:
    version: str
    space: Space
    final: np.ndarray  # [n] adjusted taste score per row
    best: np.ndarray  # [n] nearest taste centre per row
    sim: np.ndarray  # [n] cosine with that centre
    reps: np.ndarray  # evidence indices of the liked recordings that explain answers
    reps_x: np.ndarray  # their centred vectors


def _names(t: Track | None) -> str:
    if t is None:
        return "a track you played"
    who = " — ".join(x for x in (t.artist, t.title) if x)
    if who:
        return who
    import os

    return os.path.basename(t.path) or f"stream {t.id}"


class Taste:
    """Profiles and score vectors per (user, space), recomputed only when the user's evidence or
    the space's copy changed. One per agent; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: dict[tuple[str, str, str], Profile] = {}
        self._scores: dict[tuple[str, str, str], _Scored] = {}
        self._arrays: dict[tuple[str, str], tuple[tuple[int, int], ListenArrays]] = {}

    def arrays(self, store: Store, user: str) -> ListenArrays:
        """The user's matched listens as columns, read again only when they changed; when listens
        were only added since, only the new rows are read."""
        version, rewrites = store.listen_state(user)
        key = (str(store.path), user)
        with self._lock:
            got = self._arrays.get(key)
        if got is not None and got[0] == (version, rewrites):
            return got[1]
        if got is not None and got[0][1] == rewrites:
            arr = got[1].extend(store.listen_arrays(user, after_id=got[1].max_id))
        else:
            arr = store.listen_arrays(user)
        with self._lock:
            self._arrays[key] = ((version, rewrites), arr)
        return arr

    def forget(self, user: str) -> None:
        """Drop everything cached about a user (their data was deleted)."""
        with self._lock:
            for cache in (self._profiles, self._scores):
                for k in [k for k in cache if k[1] == user]:
                    del cache[k]
            for k in [k for k in self._arrays if k[1] == user]:
                del self._arrays[k]

    def space(self, store: Store, model: str | None) -> Space:
        """The embedding space to work in (the best one the library has, as ``/similar``)."""
        from nomarr.query import QueryError, pick_space

        try:
            mid = pick_space(store, model)
        except QueryError as e:
            raise TasteError(str(e)) from None
        sp = load_space(store, mid)
        if sp is None:
            raise TasteError("the library has no embeddings yet: run a scan first")
        return sp

    def profile(
        self, store: Store, user: str, model: str | None = None, *, persist: bool = False
    ) -> Profile:
        """The user's current profile (computed now when the evidence changed)."""
        sp = self.space(store, model)
        version = f"{store.listens_version(user)}|{sp.size}"
        key = (str(store.path), user, sp.model)
        with self._lock:
            p = self._profiles.get(key)
        if p is not None and p.version == version:
            return p
        stored = store.taste_profile(user, sp.model)
        if stored is not None and stored[0] == version:
            p = Profile.from_bytes(stored[1])
        else:
            p = build_profile(store, sp, user, version, arrays=self.arrays(store, user))
            if persist:
                with store.tx():
                    store.put_taste_profile(user, sp.model, version, p.to_bytes())
        with self._lock:
            self._profiles[key] = p
        return p

    def _scored(self, store: Store, p: Profile) -> _Scored:
        sp = self.space(store, p.model)
        key = (str(store.path), p.user, p.model)
        with self._lock:
            s = self._scores.get(key)
        if s is not None and s.version == p.version and s.space is sp:
            return s
        if not p.centres:
            raise TasteError(f"{p.user}: no liked recordings with embeddings yet")
        cos = sp.cosines(np.stack([c.vector for c in p.centres]))
        best = np.argmax(cos, axis=1)
        sim = cos[np.arange(cos.shape[0]), best]
        final = sim.copy()
        if p.negatives:
            neg = sp.cosines(np.stack([c.vector for c in p.negatives])).max(axis=1)
            final -= SKIP_PENALTY * np.maximum(neg, 0.0)
        ev = p.evidence
        like = np.flatnonzero(ev.net > 0)
        reps = like[np.argsort(-ev.net[like], kind="stable")][:REPRESENTATIVES]
        reps_x = sp.centred(ev.rows[reps]) if reps.size else np.zeros((0, sp.unit.shape[1]))
        s = _Scored(p.version, sp, final, best, sim, reps, reps_x)
        with self._lock:
            self._scores[key] = s
        return s

    def recommend(
        self,
        store: Store,
        user: str,
        mode: str,
        limit: int = 25,
        *,
        model: str | None = None,
        recent_days: float = 30.0,
        since_days: float = 90.0,
        max_per_artist: int = 3,
        filters: Filters | None = None,
        files_only: bool = False,
        now: float | None = None,
    ) -> list[Recommendation]:
        """``limit`` recommendations for ``user`` in one of :data:`MODES`."""
        if mode not in MODES:
            raise TasteError(f"mode must be one of {', '.join(MODES)}")
        p = self.profile(store, user, model)
        if p.listens == 0 and p.evidence.recs.size == 0:
            raise TasteError(f"no listens stored for user {user!r}")
        s = self._scored(store, p)
        now = time.time() if now is None else now
        ev = p.evidence
        n = s.final.shape[0]
        if mode == "rediscover":
            liked = (ev.net > 0) & ((ev.plays >= 2) | (ev.favourite > 0))
            old = ev.last < now - since_days * 86400.0
            pick = np.flatnonzero(liked & old)
            affinity = np.log1p(ev.plays[pick] + 3.0 * (ev.favourite[pick] > 0))
            order = pick[np.argsort(-(affinity + s.final[ev.rows[pick]]), kind="stable")]
            ranked = [(int(ev.rows[i]), int(i)) for i in order]
            return self._finish_rediscover(
                store, p, s, ranked, limit, max_per_artist, filters, files_only
            )
        allowed = np.ones(n, dtype=bool)
        if mode == "discovery":
            allowed[ev.rows] = False
        else:
            recent = ev.last >= now - recent_days * 86400.0
            bad = (ev.net < 0) | (ev.favourite < 0)
            allowed[ev.rows[recent | bad]] = False
        return self._by_centre(store, p, s, allowed, limit, max_per_artist, filters, files_only)

    # -- assembling answers --------------------------------------------------------------------

    def _by_centre(
        self,
        store: Store,
        p: Profile,
        s: _Scored,
        allowed: np.ndarray,
        limit: int,
        max_per_artist: int,
        filters: Filters | None,
        files_only: bool,
    ) -> list[Recommendation]:
        """Best allowed rows per taste centre, shared out by the centres' weights and
        interleaved; a centre that runs out leaves its places to the others."""
        k = len(p.centres)
        shares = np.asarray([c.share for c in p.centres], dtype=float)
        shares /= shares.sum()
        want = limit * 4 + 32
        queues: list[np.ndarray] = []
        for j in range(k):
            cand = np.flatnonzero(allowed & (s.best == j))
            if cand.size > want:
                cand = cand[np.argpartition(-s.final[cand], want - 1)[:want]]
            queues.append(cand[np.argsort(-s.final[cand], kind="stable")])
        artists: dict[str, int] = {}
        cursor = [0] * k
        picked: list[list[Recommendation]] = [[] for _ in range(k)]

        def take(j: int, need: int) -> None:
            while need > 0 and cursor[j] < len(queues[j]):
                batch = [int(r) for r in queues[j][cursor[j] : cursor[j] + 32]]
                items = self._items(store, s.space, batch, filters, files_only)
                for row in batch:
                    cursor[j] += 1
                    t = items.get(row)
                    if t is None or not _artist_ok(t, artists, max_per_artist):
                        continue
                    picked[j].append(
                        Recommendation(t, float(s.final[row]), float(s.sim[row]), "", centre=j)
                    )
                    need -= 1
                    if need == 0:
                        return

        for j, q in enumerate(_largest_remainder(shares, limit)):
            take(j, q)
        for j in np.argsort(-shares, kind="stable"):  # places a dry centre left
            short = limit - sum(len(x) for x in picked)
            if short <= 0:
                break
            take(int(j), short)
        # interleave: each centre's items spread evenly over the list
        keyed = [
            ((i + 0.5) / len(lst), -shares[j], r)
            for j, lst in enumerate(picked)
            for i, r in enumerate(lst)
        ]
        keyed.sort(key=lambda x: (x[0], x[1]))
        out = [r for _, _, r in keyed][:limit]
        self._explain(store, p, s, out)
        return out

    def _finish_rediscover(
        self,
        store: Store,
        p: Profile,
        s: _Scored,
        ranked: list[tuple[int, int]],
        limit: int,
        max_per_artist: int,
        filters: Filters | None,
        files_only: bool,
    ) -> list[Recommendation]:
        ev = p.evidence
        out: list[Recommendation] = []
        artists: dict[str, int] = {}
        for start in range(0, len(ranked), 64):
            chunk = ranked[start : start + 64]
            items = self._items(store, s.space, [r for r, _ in chunk], filters, files_only)
            for row, i in chunk:
                t = items.get(row)
                if t is None or not _artist_ok(t, artists, max_per_artist):
                    continue
                plays = int(ev.plays[i])
                when = dt.datetime.fromtimestamp(float(ev.last[i]), dt.UTC).date().isoformat()
                if ev.favourite[i] > 0:
                    why = f"you starred it; last played {when}" if ev.last[i] else "you starred it"
                else:
                    why = f"you played it {plays} times, last on {when}"
                out.append(
                    Recommendation(
                        t, float(s.final[row]), float(s.sim[row]), why, centre=int(s.best[row])
                    )
                )
                if len(out) >= limit:
                    return out
        return out

    @staticmethod
    def _items(
        store: Store,
        space: Space,
        rows: list[int],
        filters: Filters | None,
        files_only: bool,
    ) -> dict[int, Track]:
        """Row → the item answering for its recording (a file, else a stream), filtered."""
        recs = [int(space.ids[r]) for r in rows]
        items = store.items_of_recordings(recs, files_only=files_only)
        scores = _scores_of(store, recs) if filters is not None and filters.min_scores else {}
        out: dict[int, Track] = {}
        for row, rec in zip(rows, recs, strict=True):
            for t in items.get(rec, []):
                if filters is None or filters.accepts(t, scores.get(rec)):
                    out[row] = t
                    break
        return out

    @staticmethod
    def _explain(store: Store, p: Profile, s: _Scored, out: list[Recommendation]) -> None:
        """ "Because you played X": the liked recording nearest to each item."""
        if not out:
            return
        ev, reps = p.evidence, s.reps
        if reps.size == 0:
            return
        rows = s.space.rows(np.asarray([r.track.recording_id or 0 for r in out]))
        x = s.space.centred(np.maximum(rows, 0))
        nearest = np.argmax(np.einsum("nd,kd->nk", x, s.reps_x), axis=1)
        rep_recs = [int(ev.recs[reps[i]]) for i in nearest]
        items = store.items_of_recordings(sorted(set(rep_recs)))
        for r, rec, i in zip(out, rep_recs, nearest, strict=True):
            t = (items.get(rec) or [None])[0]
            plays = int(ev.plays[reps[i]])
            star = ev.favourite[reps[i]] > 0
            what = "starred" if star and not plays else "played"
            times = f" ({plays} plays)" if plays > 1 else ""
            r.because = t
            r.reason = f"because you {what} {_names(t)}{times}"


def _largest_remainder(shares: np.ndarray, total: int) -> list[int]:
    """``total`` places shared in proportion to ``shares`` (Hamilton's method)."""
    raw = shares * total
    base = np.floor(raw).astype(int)
    rest = total - int(base.sum())
    for j in np.argsort(-(raw - base), kind="stable")[:rest]:
        base[j] += 1
    return [int(x) for x in base]


def _artist_ok(t: Track, seen: dict[str, int], cap: int) -> bool:
    """At most ``cap`` items per artist (unknown artists are not capped)."""
    if not t.artist or cap <= 0:
        return True
    key = t.artist.casefold()
    if seen.get(key, 0) >= cap:
        return False
    seen[key] = seen.get(key, 0) + 1
    return True


def describe(p: Profile, store: Store) -> dict[str, Any]:
    """The profile summary with the centres' top recordings as items."""
    d = p.summary()
    recs = {r for c in p.centres + p.negatives for r in c.top}
    items = store.items_of_recordings(sorted(recs))
    for side in ("centres", "negatives"):
        for c in d[side]:
            c["top"] = [t.to_dict() for r in c["top"] for t in (items.get(r) or [])[:1]]
    return d
