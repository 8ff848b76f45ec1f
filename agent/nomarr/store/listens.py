"""Listening history: listens, favourites, the play counters polled sources last reported, each
source's sync state, and the cached taste profiles (docs/listens.md).

Everything is keyed by ``user``, the user id as the source names it, so one call can export or
delete all of a person's data (:meth:`ListensMixin.export_user`, :meth:`ListensMixin.delete_user`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nomarr.store.db import Database

OUTCOMES = ("completed", "played", "skipped")


@dataclass
class Listen:
    """One stored listen."""

    id: int
    user: str
    ts: float
    source: str
    recording_id: int | None
    match: str | None
    mb_recording: str | None
    isrc: str | None
    provider_id: str | None
    artist: str | None
    title: str | None
    album: str | None
    duration: float | None
    seconds: float | None
    outcome: str
    estimated: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


_LISTEN_COLS = (
    "id, user, ts, source, recording_id, match, mb_recording, isrc, provider_id, artist, title, "
    "album, duration, seconds, outcome, estimated"
)
# the columns a new listen row fills, in order (see add_listens)
LISTEN_FIELDS = (
    "ts",
    "source",
    "dedup",
    "recording_id",
    "match",
    "mb_recording",
    "isrc",
    "provider_id",
    "artist",
    "title",
    "album",
    "duration",
    "seconds",
    "outcome",
    "estimated",
)
FAVOURITE_FIELDS = (
    "key",
    "recording_id",
    "match",
    "mb_recording",
    "isrc",
    "provider_id",
    "artist",
    "title",
    "album",
    "duration",
    "score",
    "ts",
)


def _listen(row: Any) -> Listen:
    r = list(row)
    r[-1] = bool(r[-1])
    return Listen(*r)


@dataclass
class ListenArrays:
    """A user's matched listens as columns, for the taste and trend arithmetic."""

    ts: np.ndarray  # float64 seconds
    recording: np.ndarray  # int64
    outcome: np.ndarray  # int8: 1 completed, 0 played, -1 skipped
    estimated: np.ndarray  # bool
    seconds: np.ndarray  # float64, NaN when unknown
    max_id: int = 0  # the newest listen row read (unmatched ones are not in the columns)

    def extend(self, more: ListenArrays) -> ListenArrays:
        """These columns and ``more``'s, oldest first again."""
        if more.ts.size == 0:
            return ListenArrays(
                self.ts,
                self.recording,
                self.outcome,
                self.estimated,
                self.seconds,
                max(self.max_id, more.max_id),
            )
        cols = [
            np.concatenate([getattr(self, k), getattr(more, k)])
            for k in ("ts", "recording", "outcome", "estimated", "seconds")
        ]
        order = np.argsort(cols[0], kind="stable")
        return ListenArrays(*(c[order] for c in cols), max(self.max_id, more.max_id))


class ListensMixin(Database):
    """Queries on ``listens``, ``favourites``, ``play_counters``, ``listen_sources`` and
    ``taste_profiles``."""

    # -- listens -------------------------------------------------------------------------------

    def _bump(self, users: Iterable[str], *, rewrite: bool = True) -> None:
        """A user's evidence changed: profiles and caches keyed by its version are stale.
        ``rewrite=False``: listens were only added (a cache may read just the new rows)."""
        r = int(rewrite)
        self.db.executemany(
            "INSERT INTO listen_versions (user, version, rewrites) VALUES (?, 1, ?) "
            "ON CONFLICT(user) DO UPDATE SET version = version + 1, rewrites = rewrites + ?",
            [(u, r, r) for u in set(users)],
        )

    def listen_state(self, user: str) -> tuple[int, int]:
        """(version, rewrites): both move on any change; only version moves on additions."""
        row = self.db.execute(
            "SELECT version, rewrites FROM listen_versions WHERE user = ?", (user,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def add_listens(self, user: str, rows: Sequence[Sequence[Any]]) -> int:
        """Insert listens (tuples in :data:`LISTEN_FIELDS` order); a row whose ``dedup`` key this
        user already has is skipped. Returns how many were added."""
        before = self.db.total_changes
        self.db.executemany(
            f"INSERT INTO listens (user, {', '.join(LISTEN_FIELDS)}) VALUES "
            f"(?, {', '.join('?' * len(LISTEN_FIELDS))}) ON CONFLICT(user, dedup) DO NOTHING",
            [(user, *r) for r in rows],
        )
        added = int(self.db.total_changes - before)
        if added:
            self._bump([user], rewrite=False)
        return added

    def existing_dedup(self, user: str, keys: Iterable[str]) -> set[str]:
        """Which of these dedup keys the user already has (an import reports its duplicates)."""
        ks = list(keys)
        out: set[str] = set()
        for i in range(0, len(ks), 500):
            chunk = ks[i : i + 500]
            out.update(
                r[0]
                for r in self.db.execute(
                    f"SELECT dedup FROM listens WHERE user = ? AND dedup IN ({','.join('?' * len(chunk))})",
                    (user, *chunk),
                )
            )
        return out

    def listens(
        self,
        user: str,
        *,
        since: float | None = None,
        until: float | None = None,
        unmatched: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Listen]:
        """A user's listens, newest first."""
        where, args = self._listen_filter(user, since, until, unmatched)
        rows = self.db.execute(
            f"SELECT {_LISTEN_COLS} FROM listens WHERE {where} ORDER BY ts DESC, id DESC "
            "LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [_listen(r) for r in rows]

    def count_listens(
        self,
        user: str,
        *,
        since: float | None = None,
        until: float | None = None,
        unmatched: bool = False,
    ) -> int:
        """How many listens :meth:`listens` would page through."""
        where, args = self._listen_filter(user, since, until, unmatched)
        return int(
            self.db.execute(f"SELECT count(*) FROM listens WHERE {where}", args).fetchone()[0]
        )

    @staticmethod
    def _listen_filter(
        user: str, since: float | None, until: float | None, unmatched: bool
    ) -> tuple[str, list[Any]]:
        sql, args = "user = ?", [user]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        if unmatched:
            sql += " AND recording_id IS NULL"
        return sql, args

    def listen_arrays(
        self, user: str, *, since: float | None = None, after_id: int = 0
    ) -> ListenArrays:
        """The user's matched listens as numpy columns, oldest first (one query); ``after_id``:
        only listens stored after that one (a cache extending itself)."""
        sql = (
            "SELECT ts, recording_id, CASE outcome WHEN 'completed' THEN 1 WHEN 'skipped' THEN -1 "
            "ELSE 0 END, estimated, seconds, id FROM listens WHERE user = ? AND "
            "recording_id IS NOT NULL"
        )
        args: list[Any] = [user]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if after_id:
            sql += " AND id > ?"
            args.append(after_id)
        rows = self.db.execute(sql + " ORDER BY ts", args).fetchall()
        if not rows:
            return ListenArrays(
                np.zeros(0),
                np.zeros(0, np.int64),
                np.zeros(0, np.int8),
                np.zeros(0, bool),
                np.zeros(0),
                after_id,
            )
        ts, rec, out, est, sec, ids = zip(*rows, strict=True)
        return ListenArrays(
            np.asarray(ts, dtype=np.float64),
            np.asarray(rec, dtype=np.int64),
            np.asarray(out, dtype=np.int8),
            np.asarray(est, dtype=bool),
            np.asarray([np.nan if s is None else s for s in sec], dtype=np.float64),
            max(max(ids), after_id),
        )

    def unmatched(self, limit: int = 10000, after_id: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """Listens with no recording yet (every user), by id: what a re-match pass looks at."""
        rows = self.db.execute(
            "SELECT id, mb_recording, isrc, provider_id, artist, title, duration FROM listens "
            "WHERE recording_id IS NULL AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        keys = ("mb_recording", "isrc", "provider_id", "artist", "title", "duration")
        return [(int(r[0]), dict(zip(keys, r[1:], strict=True))) for r in rows]

    def set_listen_matches(self, matches: Iterable[tuple[int, str, int]]) -> int:
        """Record matches found later: ``(recording id, rule, listen id)``."""
        rows = list(matches)
        before = self.db.total_changes
        self.db.executemany(
            "UPDATE listens SET recording_id = ?, match = ? WHERE id = ? AND recording_id IS NULL",
            rows,
        )
        n = int(self.db.total_changes - before)
        if n:
            ids = [r[2] for r in rows]
            users: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                users.update(
                    u
                    for (u,) in self.db.execute(
                        f"SELECT DISTINCT user FROM listens WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    )
                )
            self._bump(users)
        return n

    def last_listen_ts(self, user: str, source: str | None = None) -> float | None:
        """The newest listen's time (per source when given)."""
        sql, args = "SELECT max(ts) FROM listens WHERE user = ?", [user]
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        row = self.db.execute(sql, args).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def listen_stats(self, user: str) -> dict[str, Any]:
        """Counts for one user: listens, matched, unmatched, skips, first and last time."""
        row = self.db.execute(
            "SELECT count(*), count(recording_id), sum(outcome = 'skipped'), min(ts), max(ts), "
            "count(DISTINCT recording_id) FROM listens WHERE user = ?",
            (user,),
        ).fetchone()
        n, matched, skips, first, last, recs = row
        by_source = {
            s: c
            for s, c in self.db.execute(
                "SELECT source, count(*) FROM listens WHERE user = ? GROUP BY source", (user,)
            )
        }
        favs = self.db.execute(
            "SELECT count(*) FROM favourites WHERE user = ? AND score > 0", (user,)
        ).fetchone()[0]
        return {
            "listens": int(n),
            "matched": int(matched),
            "unmatched": int(n - matched),
            "skips": int(skips or 0),
            "recordings": int(recs),
            "favourites": int(favs),
            "first": first,
            "last": last,
            "sources": by_source,
        }

    def users(self) -> list[str]:
        """Every user with any stored data, sorted."""
        rows = self.db.execute(
            "SELECT user FROM listens UNION SELECT user FROM favourites UNION "
            "SELECT user FROM listen_sources UNION SELECT user FROM play_counters ORDER BY 1"
        )
        return [r[0] for r in rows]

    # -- favourites ----------------------------------------------------------------------------

    def set_favourites(
        self, user: str, source: str, rows: Sequence[Sequence[Any]], *, complete: bool
    ) -> tuple[int, int]:
        """Upsert favourites (tuples in :data:`FAVOURITE_FIELDS` order) for one source; with
        ``complete`` the given set is the source's whole list and the others are removed.
        Returns (added or changed, removed)."""
        before = self.db.total_changes
        self.db.executemany(
            f"INSERT INTO favourites (user, source, {', '.join(FAVOURITE_FIELDS)}) VALUES "
            f"(?, ?, {', '.join('?' * len(FAVOURITE_FIELDS))}) ON CONFLICT(user, source, key) DO "
            "UPDATE SET score = excluded.score, recording_id = coalesce(excluded.recording_id, "
            "recording_id), match = coalesce(excluded.match, match) WHERE score != excluded.score "
            "OR (recording_id IS NULL AND excluded.recording_id IS NOT NULL)",
            [(user, source, *r) for r in rows],
        )
        changed = int(self.db.total_changes - before)
        removed = 0
        if complete:
            keep = {str(r[0]) for r in rows}
            have = [
                k
                for (k,) in self.db.execute(
                    "SELECT key FROM favourites WHERE user = ? AND source = ?", (user, source)
                )
            ]
            gone = [k for k in have if k not in keep]
            for k in gone:
                self.db.execute(
                    "DELETE FROM favourites WHERE user = ? AND source = ? AND key = ?",
                    (user, source, k),
                )
            removed = len(gone)
        if changed or removed:
            self._bump([user])
        return changed, removed

    def remove_favourites(self, user: str, source: str, keys: Iterable[str]) -> int:
        """Forget some of a source's favourites (unstarred since the last report)."""
        before = self.db.total_changes
        self.db.executemany(
            "DELETE FROM favourites WHERE user = ? AND source = ? AND key = ?",
            [(user, source, k) for k in keys],
        )
        n = int(self.db.total_changes - before)
        if n:
            self._bump([user])
        return n

    def favourite_scores(self, user: str) -> list[tuple[int, int, float]]:
        """(recording id, score, since) of the user's matched favourites (+1 loved, -1 hated)."""
        return [
            (int(r[0]), int(r[1]), float(r[2]))
            for r in self.db.execute(
                "SELECT recording_id, score, ts FROM favourites WHERE user = ? AND "
                "recording_id IS NOT NULL",
                (user,),
            )
        ]

    def unmatched_favourites(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Favourites with no recording yet: (user, source, key, ids)."""
        keys = ("mb_recording", "isrc", "provider_id", "artist", "title", "duration")
        return [
            (r[0], r[1], r[2], dict(zip(keys, r[3:], strict=True)))
            for r in self.db.execute(
                "SELECT user, source, key, mb_recording, isrc, provider_id, artist, title, duration "
                "FROM favourites WHERE recording_id IS NULL"
            )
        ]

    def set_favourite_match(self, user: str, source: str, key: str, rec: int, rule: str) -> None:
        """Record a favourite's match found later."""
        self.db.execute(
            "UPDATE favourites SET recording_id = ?, match = ? WHERE user = ? AND source = ? AND key = ?",
            (rec, rule, user, source, key),
        )
        self._bump([user])

    # -- play counters (polled sources) --------------------------------------------------------

    def counters(self, user: str, source: str) -> dict[str, tuple[int, int, float | None]]:
        """item → (plays, skips, last played) as the source last reported them."""
        return {
            r[0]: (int(r[1]), int(r[2]), r[3])
            for r in self.db.execute(
                "SELECT item, plays, skips, last_played FROM play_counters WHERE user = ? AND source = ?",
                (user, source),
            )
        }

    def put_counters(
        self, user: str, source: str, rows: Iterable[tuple[str, int, int, float | None]]
    ) -> None:
        """Remember what the source reported: (item, plays, skips, last played)."""
        self.db.executemany(
            "INSERT INTO play_counters (user, source, item, plays, skips, last_played) VALUES "
            "(?, ?, ?, ?, ?, ?) ON CONFLICT(user, source, item) DO UPDATE SET plays = excluded.plays, "
            "skips = excluded.skips, last_played = excluded.last_played",
            [(user, source, *r) for r in rows],
        )

    # -- source state --------------------------------------------------------------------------

    def source_state(self, user: str, source: str) -> dict[str, Any]:
        """A source's sync state for a user (cursor, settings); empty when never synced."""
        row = self.db.execute(
            "SELECT state FROM listen_sources WHERE user = ? AND source = ?", (user, source)
        ).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def set_source_state(self, user: str, source: str, state: dict[str, Any]) -> None:
        """Replace a source's sync state."""
        self.db.execute(
            "INSERT INTO listen_sources (user, source, state, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(user, source) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            (user, source, json.dumps(state), time.time()),
        )

    def sources(self, user: str | None = None) -> list[tuple[str, str, dict[str, Any], float]]:
        """(user, source, state, updated) for every synced source (of one user)."""
        sql, args = "SELECT user, source, state, updated FROM listen_sources", []
        if user is not None:
            sql += " WHERE user = ?"
            args.append(user)
        return [(r[0], r[1], json.loads(r[2]), float(r[3])) for r in self.db.execute(sql, args)]

    # -- taste profiles ------------------------------------------------------------------------

    def taste_profile(self, user: str, space: str) -> tuple[str, bytes] | None:
        """(version, serialised profile) last computed for a user in an embedding space."""
        row = self.db.execute(
            "SELECT version, profile FROM taste_profiles WHERE user = ? AND space = ?",
            (user, space),
        ).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def put_taste_profile(self, user: str, space: str, version: str, blob: bytes) -> None:
        """Store a computed profile."""
        self.db.execute(
            "INSERT INTO taste_profiles (user, space, version, profile, computed) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(user, space) DO UPDATE SET version = excluded.version, "
            "profile = excluded.profile, computed = excluded.computed",
            (user, space, version, blob, time.time()),
        )

    def listens_version(self, user: str) -> str:
        """Changes whenever the user's evidence changes (listens, matches, favourites): a counter
        every write bumps, so checking it costs one primary-key lookup at any history size."""
        row = self.db.execute(
            "SELECT version FROM listen_versions WHERE user = ?", (user,)
        ).fetchone()
        return str(row[0]) if row else "0"

    def has_user(self, user: str) -> bool:
        """Whether anything is stored for a user."""
        return any(
            self.db.execute(f"SELECT 1 FROM {t} WHERE user = ? LIMIT 1", (user,)).fetchone()
            for t in ("listens", "favourites", "listen_sources", "play_counters")
        )

    # -- privacy -------------------------------------------------------------------------------

    def export_user(self, user: str) -> dict[str, Any]:
        """Everything stored about one user, as plain data (tokens are left out)."""
        listens = [
            _listen(r).to_dict()
            for r in self.db.execute(
                f"SELECT {_LISTEN_COLS} FROM listens WHERE user = ? ORDER BY ts, id", (user,)
            )
        ]
        favs = [
            dict(zip(("source", *FAVOURITE_FIELDS), r, strict=True))
            for r in self.db.execute(
                f"SELECT source, {', '.join(FAVOURITE_FIELDS)} FROM favourites WHERE user = ? "
                "ORDER BY source, key",
                (user,),
            )
        ]
        counters = [
            {"source": r[0], "item": r[1], "plays": r[2], "skips": r[3], "last_played": r[4]}
            for r in self.db.execute(
                "SELECT source, item, plays, skips, last_played FROM play_counters WHERE user = ? "
                "ORDER BY source, item",
                (user,),
            )
        ]
        sources = [
            {"source": s, "state": {k: v for k, v in st.items() if "token" not in k}, "updated": u}
            for _, s, st, u in self.sources(user)
        ]
        profiles = [
            {"space": r[0], "version": r[1], "computed": r[2]}
            for r in self.db.execute(
                "SELECT space, version, computed FROM taste_profiles WHERE user = ?", (user,)
            )
        ]
        return {
            "user": user,
            "listens": listens,
            "favourites": favs,
            "play_counters": counters,
            "sources": sources,
            "taste_profiles": profiles,
        }

    def delete_user(self, user: str) -> dict[str, int]:
        """Remove every row about one user (call inside a transaction); counts per table."""
        out = {}
        for table in (
            "listens",
            "favourites",
            "play_counters",
            "listen_sources",
            "taste_profiles",
            "listen_versions",
        ):
            out[table] = self.db.execute(f"DELETE FROM {table} WHERE user = ?", (user,)).rowcount
        return out
