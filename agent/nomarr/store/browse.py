"""Queries behind the web console's library table and overview: full-text search (the
``tracks_fts`` index of migration ``0006-console-tracks-fts``), sorted pages, recent analyses and which
execution provider each model ran on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from nomarr.store.db import Database
from nomarr.store.tracks import _TRACK_COLS, Track, _track, _track_filter

# the columns a page may be sorted by → SQL (NULLs last in either direction; id breaks ties)
SORT_COLUMNS = {
    "id": "id",
    "title": "title COLLATE NOCASE",
    "artist": "artist COLLATE NOCASE",
    "album": "album COLLATE NOCASE",
    "path": "path",
    "duration": "duration",
    "added": "first_seen",
}
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 12


def fts_query(text: str) -> str | None:
    """A user's search box text as an FTS5 query: every word must prefix-match some word of the
    title, artist, album or path. Quotes, operators and column filters typed by the user are
    plain words here, so no input is an FTS syntax error."""
    words = _WORD.findall(text.lower())[:MAX_TERMS]
    if not words:
        return None
    return " AND ".join('"' + w.replace('"', '""') + '"*' for w in words)


def _order(sort: str, desc: bool) -> str:
    col = SORT_COLUMNS[sort]
    bare = col.split(" ")[0]
    direction = "DESC" if desc else "ASC"
    return f"{bare} IS NULL, {col} {direction}, id {direction}"


class BrowseMixin(Database):
    """Searching, sorting and paging the library for people (the console), not for scans."""

    def _browse_where(
        self,
        q: str | None,
        status: str | None,
        under: Iterable[str] | None,
        ids: list[int] | None = None,
    ) -> tuple[str, list[Any]]:
        where, args = _track_filter(status, under, "+status")
        if ids is not None:
            where += f" AND id IN ({','.join('?' * len(ids)) or 'NULL'})"
            args += ids
        match = fts_query(q) if q else None
        if q and match is None:  # punctuation only: matches nothing rather than everything
            return where + " AND 0", args
        if match:
            where += " AND id IN (SELECT rowid FROM tracks_fts WHERE tracks_fts MATCH ?)"
            args.append(match)
        return where, args

    def browse(
        self,
        *,
        q: str | None = None,
        status: str | None = "ok",
        under: Iterable[str] | None = None,
        sort: str = "id",
        desc: bool = False,
        limit: int = 50,
        offset: int = 0,
        ids: list[int] | None = None,
    ) -> tuple[list[Track], int]:
        """One sorted page of the tracks matching a search, and how many match in all."""
        where, args = self._browse_where(q, status, under, ids)
        rows = self.db.execute(
            f"SELECT {_TRACK_COLS} FROM tracks WHERE {where} ORDER BY {_order(sort, desc)} "
            "LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        total = self.db.execute(f"SELECT count(*) FROM tracks WHERE {where}", args).fetchone()[0]
        return [_track(r) for r in rows], int(total)

    def browse_ids(
        self,
        *,
        q: str | None = None,
        status: str | None = "ok",
        under: Iterable[str] | None = None,
        sort: str = "id",
        desc: bool = False,
        ids: list[int] | None = None,
    ) -> tuple[list[int], list[int]]:
        """(track ids, their recording ids, 0 for none) of every match, in the asked order: the
        input of a score filter or sort, which is done on the in-memory score matrix."""
        where, args = self._browse_where(q, status, under, ids)
        rows = self.db.execute(
            f"SELECT id, recording_id FROM tracks WHERE {where} ORDER BY {_order(sort, desc)}",
            args,
        ).fetchall()
        return [r[0] for r in rows], [r[1] or 0 for r in rows]

    def tracks_by_ids(self, ids: list[int]) -> list[Track]:
        """Tracks in the order of ``ids`` (unknown ids left out)."""
        got: dict[int, Track] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in self.db.execute(
                f"SELECT {_TRACK_COLS} FROM tracks WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                t = _track(r)
                got[t.id] = t
        return [got[i] for i in ids if i in got]

    def scores_of(self, rec_ids: Iterable[int]) -> dict[int, dict[str, dict[str, float]]]:
        """recording id → model id → label → score, for a page of recordings."""
        ids = sorted(set(rec_ids))
        out: dict[int, dict[str, dict[str, float]]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for rid, mid, scores in self.db.execute(
                "SELECT recording_id, model_id, scores FROM analyses "
                f"WHERE recording_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out.setdefault(rid, {})[mid] = json.loads(scores)
        return out

    def recent_analyses(self, limit: int = 10) -> list[tuple[Track, str, float]]:
        """The latest analyses: (a present file of the recording, model id, when)."""
        rows = self.db.execute(
            "SELECT recording_id, model_id, created FROM analyses ORDER BY created DESC LIMIT ?",
            (limit * 4,),
        ).fetchall()
        out: list[tuple[Track, str, float]] = []
        seen: set[int] = set()
        for rid, mid, created in rows:
            if rid in seen:
                continue
            row = self.db.execute(
                f"SELECT {_TRACK_COLS} FROM tracks WHERE recording_id = ? AND +status = 'ok' "
                "ORDER BY id LIMIT 1",
                (rid,),
            ).fetchone()
            if row is None:
                continue
            seen.add(rid)
            out.append((_track(row), mid, float(created)))
            if len(out) >= limit:
                break
        return out

    def provider_usage(self) -> dict[str, dict[str, int]]:
        """model id → execution provider → how many stored analyses ran on it."""
        out: dict[str, dict[str, int]] = {}
        for mid, prov, n in self.db.execute(
            "SELECT model_id, coalesce(provider, ''), count(*) FROM analyses "
            "GROUP BY model_id, provider"
        ):
            out.setdefault(mid, {})[prov or "unknown"] = int(n)
        return out

    def analysed_count(self, model_id: str) -> int:
        """Present tracks whose recording has an analysis by this model."""
        return int(
            self.db.execute(
                "SELECT count(*) FROM tracks WHERE +status = 'ok' AND recording_id IN "
                "(SELECT recording_id FROM analyses WHERE model_id = ?)",
                (model_id,),
            ).fetchone()[0]
        )
