"""Files as the database knows them: paths, stat data, identity, status, and the queries a scan's
plan and the API's listings use."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nomarr.store.db import Database, dec_path, enc_path


@dataclass
@dataclass
class Track:
    """One file as the database knows it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    dev: int | None
    inode: int | None
    duration: float | None
    container: str | None
    codec: str | None
    recording_id: int | None
    status: str
    error: str | None
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    mb_recording: str | None = None
    isrc: str | None = None
    # "file", or "stream": a recording heard through the streaming-ingest API that no library
    # file holds (``id`` is then the stream's id and ``path`` is empty; ``stream`` says what it is)
    kind: str = "file"
    stream: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the API and ``--json`` outputs)."""
        extra: dict[str, Any] = {}
        if self.kind != "file":
            extra = {"kind": self.kind, "stream": self.stream}
        return {
            "id": self.id,
            "path": self.path,
            "size": self.size,
            "duration": self.duration,
            "container": self.container,
            "codec": self.codec,
            "recording_id": self.recording_id,
            "status": self.status,
            "error": self.error,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "mb_recording": self.mb_recording,
            "isrc": self.isrc,
        } | extra


_TRACK_COLS = (
    "id, path, size, mtime_ns, dev, inode, duration, container, codec, recording_id, status, "
    "error, title, artist, album, mb_recording, isrc"
)


def _track_filter(
    status: str | None, under: Iterable[str] | None, status_col: str
) -> tuple[str, list[Any]]:
    """WHERE clause for tracks with a status and under some roots (a folder's whole subtree, or
    the file itself when a root is a file); shared by listing and counting."""
    sql = "1=1"
    args: list[Any] = []
    if status:
        sql += f" AND {status_col} = ?"
        args.append(status)
    roots = [enc_path(r).rstrip(b"/") + b"/" for r in (under or [])]
    if roots:
        sql += " AND (" + " OR ".join("(path >= ? AND path < ?) OR path = ?" for _ in roots) + ")"
        for r in roots:
            args += [r, r[:-1] + b"0", r[:-1]]  # '0' sorts right after '/'
    return sql, args


def _track(row: Any) -> Track:
    r = list(row)
    r[1] = dec_path(r[1])
    return Track(*r)


class TracksMixin(Database):
    """Queries on the ``tracks`` table."""

    def track_by_path(self, path: str | os.PathLike[str]) -> Track | None:
        """The track stored for an absolute path, if any."""
        row = self.db.execute(
            f"SELECT {_TRACK_COLS} FROM tracks WHERE path = ?", (enc_path(path),)
        ).fetchone()
        return _track(row) if row else None

    def track(self, track_id: int) -> Track | None:
        """A track by id."""
        row = self.db.execute(
            f"SELECT {_TRACK_COLS} FROM tracks WHERE id = ?", (track_id,)
        ).fetchone()
        return _track(row) if row else None

    def tracks(
        self,
        *,
        status: str | None = "ok",
        under: Iterable[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        descriptors: Any = None,
    ) -> list[Track]:
        """Tracks, optionally only those with a status, under some roots and passing descriptor
        filters (a ``query.Filters``: BPM, key, energy), ordered by id."""
        # "+status": walk in id order and stop at the page, not sort every 'ok' row first
        where, args = _track_filter(status, under, "+status")
        if descriptors is not None:
            from nomarr.store.descriptors import _descriptor_clause

            extra, more = _descriptor_clause(descriptors)
            where, args = where + extra, args + more
        sql = f"SELECT {_TRACK_COLS} FROM tracks WHERE {where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        return [_track(r) for r in self.db.execute(sql, args)]

    def count_tracks(
        self,
        *,
        status: str | None = "ok",
        under: Iterable[str] | None = None,
        descriptors: Any = None,
    ) -> int:
        """How many tracks :meth:`tracks` would list without a limit (for paged answers)."""
        where, args = _track_filter(status, under, "status")
        if descriptors is not None:
            from nomarr.store.descriptors import _descriptor_clause

            extra, more = _descriptor_clause(descriptors)
            where, args = where + extra, args + more
        return int(
            self.db.execute(f"SELECT COUNT(*) FROM tracks WHERE {where}", args).fetchone()[0]
        )

    def snapshot(self, under: Iterable[str]) -> dict[bytes, tuple[int, int, int, int | None]]:
        """``path → (track id, size, mtime_ns, recording_id)`` for every known file under the roots.

        One query instead of one per file: this is what makes an unchanged rescan cheap.
        """
        out: dict[bytes, tuple[int, int, int, int | None]] = {}
        for r in under:  # a root may be a folder or a single file
            root = enc_path(r).rstrip(b"/") + b"/"
            for row in self.db.execute(
                "SELECT path, id, size, mtime_ns, recording_id FROM tracks WHERE "
                "((path >= ? AND path < ?) OR path = ?) AND status != 'missing'",
                (root, root[:-1] + b"0", root[:-1]),
            ):
                out[bytes(row[0])] = (row[1], row[2], row[3], row[4])
        return out

    def upsert_track(self, path: str | os.PathLike[str], st: os.stat_result, **fields: Any) -> int:
        """Insert or update the row for ``path`` with its stat and the given columns; returns its id."""
        now = time.time()
        cols = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "dev": st.st_dev,
            "inode": st.st_ino,
            "last_seen": now,
            **fields,
        }
        if "fingerprint" in cols and isinstance(cols["fingerprint"], np.ndarray):
            cols["fingerprint"] = cols["fingerprint"].astype("<u4").tobytes()
        raw = enc_path(path)
        names = list(cols)
        sets = ", ".join(f"{n} = excluded.{n}" for n in names)
        self.db.execute(
            f"INSERT INTO tracks (path, first_seen, {', '.join(names)}) VALUES (?, ?, {', '.join('?' * len(names))}) "
            f"ON CONFLICT(path) DO UPDATE SET {sets}",
            [raw, now, *cols.values()],
        )
        return int(self.db.execute("SELECT id FROM tracks WHERE path = ?", (raw,)).fetchone()[0])

    def touch_stat(self, track_id: int, st: os.stat_result) -> None:
        """Record a file's new size/mtime after nomarr itself changed it (a tag write)."""
        self.db.execute(
            "UPDATE tracks SET size = ?, mtime_ns = ?, dev = ?, inode = ?, last_seen = ? WHERE id = ?",
            (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, time.time(), track_id),
        )

    def move_track(
        self, track_id: int, new_path: str | os.PathLike[str], st: os.stat_result
    ) -> None:
        """A file seen at a new path with the same identity: keep its row (and its history)."""
        raw = enc_path(new_path)
        self.db.execute("DELETE FROM tracks WHERE path = ? AND id != ?", (raw, track_id))
        self.db.execute(
            "UPDATE tracks SET path = ?, status = CASE WHEN status = 'missing' THEN 'ok' ELSE status END, "
            "last_seen = ? WHERE id = ?",
            (raw, time.time(), track_id),
        )
        self.touch_stat(track_id, st)

    def mark_missing(self, track_ids: Iterable[int]) -> int:
        """Files that are gone: kept (a rename may bring them back) but out of every answer."""
        n = 0
        for tid in track_ids:
            n += self.db.execute(
                "UPDATE tracks SET status = 'missing' WHERE id = ? AND status != 'missing'", (tid,)
            ).rowcount
        return n

    def missing_by_inode(self, dev: int, inode: int, size: int, mtime_ns: int) -> Track | None:
        """A track marked missing (or about to be) with this exact inode, size and mtime: a move."""
        row = self.db.execute(
            f"SELECT {_TRACK_COLS} FROM tracks WHERE dev = ? AND inode = ? AND size = ? "
            "AND mtime_ns = ? ORDER BY status = 'missing' DESC LIMIT 1",
            (dev, inode, size, mtime_ns),
        ).fetchone()
        return _track(row) if row else None

    def delete_track(self, track_id: int) -> None:
        """Forget a file (its recording stays while another file or nothing else needs it)."""
        self.db.execute("DELETE FROM tracks WHERE id = ?", (track_id,))

    def set_failed(self, path: str | os.PathLike[str], st: os.stat_result, reason: str) -> int:
        """Remember that a file could not be analysed (so the next scan does not retry it unchanged)."""
        return self.upsert_track(path, st, status="failed", error=reason)

    def fingerprint(self, track_id: int) -> np.ndarray | None:
        """A track's stored chromaprint (raw 32-bit values)."""
        row = self.db.execute("SELECT fingerprint FROM tracks WHERE id = ?", (track_id,)).fetchone()
        return np.frombuffer(row[0], dtype="<u4").copy() if row and row[0] else None

    def duplicates(self, track_id: int) -> list[Track]:
        """Other present files of the same recording (re-encodes, copies)."""
        rows = self.db.execute(
            f"SELECT {_TRACK_COLS} FROM tracks WHERE recording_id = "
            "(SELECT recording_id FROM tracks WHERE id = ?) AND id != ? AND +status = 'ok' ORDER BY id",
            (track_id, track_id),
        )
        return [_track(r) for r in rows]

    def tracks_of_recordings(self, rec_ids: list[int]) -> dict[int, list[Track]]:
        """Present files per recording, for turning KNN hits (recordings) into files."""
        out: dict[int, list[Track]] = {}
        for i in range(0, len(rec_ids), 500):
            chunk = rec_ids[i : i + 500]
            # "+status": the planner would otherwise pick the status index (nearly every row is
            # 'ok') over the recording index and scan the whole table: 22 ms instead of 0.1 at 100k
            q = f"SELECT {_TRACK_COLS} FROM tracks WHERE +status = 'ok' AND recording_id IN ({','.join('?' * len(chunk))}) ORDER BY id"
            for r in self.db.execute(q, chunk):
                t = _track(r)
                out.setdefault(t.recording_id or 0, []).append(t)
        return out

    def lookup(
        self, *, path: str | None = None, mbid: str | None = None, isrc: str | None = None
    ) -> list[Track]:
        """Tracks by path, MusicBrainz recording id or ISRC (plugins map their items with these)."""
        if path:
            t = self.track_by_path(path)
            return [t] if t and t.status == "ok" else []
        col, val = ("mb_recording", mbid) if mbid else ("isrc", isrc)
        if not val:
            return []
        return [
            _track(r)
            for r in self.db.execute(
                f"SELECT {_TRACK_COLS} FROM tracks WHERE {col} = ? AND +status = 'ok'", (val,)
            )
        ]

    def counts(self) -> dict[str, int]:
        """Tracks per status, recordings, analyses."""
        out = {
            r[0]: r[1]
            for r in self.db.execute("SELECT status, count(*) FROM tracks GROUP BY status")
        }
        out["recordings"] = self.db.execute("SELECT count(*) FROM recordings").fetchone()[0]
        out["analyses"] = self.db.execute("SELECT count(*) FROM analyses").fetchone()[0]
        return out

    def statuses(self) -> dict[int, tuple[str, str | None]]:
        """track id → (status, error) for the whole library: one query for a scan's plan."""
        return {
            tid: (st, err)
            for tid, st, err in self.db.execute("SELECT id, status, error FROM tracks")
        }

    def inodes_of(
        self, tracks: dict[bytes, tuple[int, int, int, int | None]]
    ) -> dict[tuple[int, int, int, int], tuple[bytes, int, int | None]]:
        """(dev, inode, size, mtime) → (path, track id, recording) for the given snapshot rows
        (path → (track id, size, mtime, recording)): how a scan recognises a move."""
        out = {}
        for raw, (tid, size, mtime, rec) in tracks.items():
            row = self.db.execute("SELECT dev, inode FROM tracks WHERE id = ?", (tid,)).fetchone()
            if row and row[0] is not None:
                out[(row[0], row[1], size, mtime)] = (raw, tid, rec)
        return out
