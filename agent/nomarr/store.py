"""The library database: SQLite in WAL mode with sqlite-vec for the embeddings.

One file holds everything a rescan, a query or the API needs: which files exist (and how they looked
when last seen), which recording each file is (chromaprint identity, so a moved or re-encoded file
reuses its analysis), each recording's analyses, what was written into each file, the per-library
tier calibration, and one ``vec0`` table per embedding space for cosine KNN.

Crash safety comes from SQLite itself: every state change the scanner makes for one file is one
transaction, WAL with ``synchronous=NORMAL`` keeps committed transactions across a process kill,
and the schema is versioned (``PRAGMA user_version``) with forward migrations run in a transaction.

Paths are stored as bytes (``os.fsencode``) so that file names that are not valid UTF-8 round-trip
exactly; they are decoded with ``os.fsdecode`` on the way out.
"""

from __future__ import annotations

import json
import os
import sqlite3 as _stdlib_sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nomarr import paths

SCHEMA_VERSION = 2
DSP_ID = "nomarr-dsp"  # the descriptors' entry in provenance maps (nomarr.pipeline.analyze too)


def _driver() -> Any:
    """The sqlite3 module to use: the standard library's when it can load extensions, else sqlean.

    Some Python builds (pyenv's defaults, macOS system Python) compile ``sqlite3`` without
    loadable-extension support, which sqlite-vec needs; ``sqlean.py`` is the same DB-API with it on.
    """
    if hasattr(_stdlib_sqlite3.Connection, "enable_load_extension"):
        return _stdlib_sqlite3
    try:
        import sqlean  # type: ignore[import-not-found]
    except ImportError as e:  # pragma: no cover - sqlean is a dependency
        raise StoreError(
            "this Python's sqlite3 cannot load extensions and sqlean.py is not installed"
        ) from e
    return sqlean


sqlite3 = _driver()


class StoreError(Exception):
    """The database cannot be opened or is not a nomarr database."""


def enc_path(path: str | os.PathLike[str]) -> bytes:
    """Absolute path → the bytes stored in the database."""
    return os.fsencode(os.path.abspath(os.fspath(path)))


def dec_path(raw: bytes | str) -> str:
    """Stored path → str (non-UTF-8 bytes come back as surrogate escapes, as ``os.listdir`` gives)."""
    return os.fsdecode(raw)


def space_name(model_id: str) -> str:
    """Embedding space (one vec0 table) for a model id: ``vec_<id with non-alnum → _>``."""
    return "vec_" + "".join(c if c.isalnum() else "_" for c in model_id.lower())


_MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        fp_duration REAL,
        created REAL NOT NULL
    );
    CREATE TABLE tracks (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        dev INTEGER, inode INTEGER,
        duration REAL, container TEXT, codec TEXT, sample_rate INTEGER, channels INTEGER,
        fingerprint BLOB,
        recording_id INTEGER REFERENCES recordings(id) ON DELETE SET NULL,
        mb_recording TEXT, mb_track TEXT, mb_album TEXT, mb_artist TEXT, isrc TEXT,
        title TEXT, artist TEXT, album TEXT,
        status TEXT NOT NULL DEFAULT 'new',   -- new | ok | failed | missing
        error TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE INDEX tracks_recording ON tracks(recording_id);
    CREATE INDEX tracks_inode ON tracks(dev, inode);
    CREATE INDEX tracks_mbid ON tracks(mb_recording);
    CREATE INDEX tracks_isrc ON tracks(isrc);
    CREATE INDEX tracks_status ON tracks(status);
    CREATE TABLE fp_index (
        key INTEGER NOT NULL,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        PRIMARY KEY (key, recording_id)
    ) WITHOUT ROWID;
    CREATE INDEX fp_index_recording ON fp_index(recording_id);
    CREATE TABLE analyses (
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        prefix TEXT NOT NULL,
        provenance TEXT NOT NULL,
        profile TEXT NOT NULL,
        windows TEXT NOT NULL,
        n_patches INTEGER NOT NULL,
        provider TEXT,
        scores TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (recording_id, model_id)
    );
    CREATE TABLE spaces (
        name TEXT PRIMARY KEY,
        model_id TEXT NOT NULL,
        dim INTEGER NOT NULL
    );
    CREATE TABLE writes (
        track_id INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
        tags TEXT NOT NULL,
        tags_hash TEXT NOT NULL,
        mood TEXT,
        method TEXT,
        written REAL NOT NULL
    );
    CREATE TABLE tiers (
        model_id TEXT NOT NULL,
        label TEXT NOT NULL,
        high REAL NOT NULL,
        medium REAL NOT NULL,
        n INTEGER NOT NULL,
        computed REAL NOT NULL,
        PRIMARY KEY (model_id, label)
    );
    CREATE TABLE scans (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        roots TEXT NOT NULL,
        summary TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: DSP descriptors (tempo, key, loudness, energy, regions) and the per-track timeline, one
    # row per recording like analyses; the columns queries filter on, the whole document as JSON.
    # writes.std remembers the standard fields (BPM, key, ReplayGain) nomarr last wrote, for the
    # ownership rule.
    """
    CREATE TABLE descriptors (
        recording_id INTEGER PRIMARY KEY REFERENCES recordings(id) ON DELETE CASCADE,
        provenance TEXT NOT NULL,
        bpm REAL, bpm_confidence REAL,
        key TEXT, camelot TEXT, key_strength REAL,
        energy REAL, danceability REAL,
        lufs REAL, true_peak REAL,
        doc TEXT NOT NULL,
        timeline BLOB,
        created REAL NOT NULL
    );
    CREATE INDEX descriptors_bpm ON descriptors(bpm);
    CREATE INDEX descriptors_camelot ON descriptors(camelot);
    ALTER TABLE writes ADD COLUMN std TEXT;
    """,
]


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the API and ``--json`` outputs)."""
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
        }


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


def _descriptor_clause(f: Any) -> tuple[str, list[Any]]:
    """`` AND recording_id IN (…)`` for BPM / Camelot key / energy filters (a query.Filters)."""
    conds: list[str] = []
    args: list[Any] = []
    for col, op, val in (
        ("bpm", ">=", f.min_bpm),
        ("bpm", "<=", f.max_bpm),
        ("energy", ">=", f.min_energy),
        ("energy", "<=", f.max_energy),
    ):
        if val is not None:
            conds.append(f"{col} {op} ?")
            args.append(float(val))
    if f.keys:
        conds.append(f"camelot IN ({','.join('?' * len(f.keys))})")
        args += list(f.keys)
    if not conds:
        return "", []
    return (
        " AND recording_id IN (SELECT recording_id FROM descriptors WHERE "
        + " AND ".join(conds)
        + ")",
        args,
    )


def _track(row: Any) -> Track:
    r = list(row)
    r[1] = dec_path(r[1])
    return Track(*r)


@dataclass
class Analysis:
    """One model's stored result for one recording."""

    recording_id: int
    model_id: str
    prefix: str
    provenance: str
    profile: str
    windows: list[dict[str, Any]]
    n_patches: int
    provider: str | None
    scores: dict[str, float]


class Store:
    """A connection to one library database. Not shared between threads: open one per thread."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False
    ) -> None:
        self.path = Path(path) if path else paths.default_db()
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreError(f"{self.path}: no database here yet (run `nomarr scan` first)")
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            self.db.enable_load_extension(True)
            import sqlite_vec

            sqlite_vec.load(self.db)
            self.db.enable_load_extension(False)
            self.db.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable nomarr database ({e})") from e
        self._spaces: dict[str, int] = {
            r[0]: r[1] for r in self.db.execute("SELECT name, dim FROM spaces")
        }
        # the agent attaches an in-memory index (agent.vindex) for fast KNN; the CLI uses vec0
        self.vector_index: Any = None

    def _has_space(self, name: str) -> bool:
        """Whether a vec table exists, re-reading the list once (another connection, such as the
        agent's scanner, may have created it since this one opened)."""
        if name not in self._spaces:
            self._spaces = {r[0]: r[1] for r in self.db.execute("SELECT name, dim FROM spaces")}
        return name in self._spaces

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (checkpointing the WAL is SQLite's business)."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """One atomic unit of change: ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this nomarr ({SCHEMA_VERSION})"
            )
        for v in range(version, SCHEMA_VERSION):
            with self.tx() as db:
                for stmt in _MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"PRAGMA user_version = {v + 1}")

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``'s verdict: ``ok`` or the first problem."""
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def meta(self, key: str, default: str | None = None) -> str | None:
        """A small persistent setting (agent id, last calibration size…)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value (inside or outside a transaction)."""
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- tracks ---------------------------------------------------------------------------------

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

    # -- recordings and fingerprints ----------------------------------------------------------

    def new_recording(self, fp_duration: float | None, keys: Iterable[int]) -> int:
        """A new content identity with its fingerprint index keys."""
        cur = self.db.execute(
            "INSERT INTO recordings (fp_duration, created) VALUES (?, ?)",
            (fp_duration, time.time()),
        )
        rid = int(cur.lastrowid)
        self.db.executemany(
            "INSERT OR IGNORE INTO fp_index (key, recording_id) VALUES (?, ?)",
            [(int(k) - (1 << 31), rid) for k in keys],
        )
        return rid

    def candidates(self, keys: Iterable[int], min_shared: int = 2, limit: int = 20) -> list[int]:
        """Recordings sharing at least ``min_shared`` fingerprint index keys, most shared first."""
        ks = [int(k) - (1 << 31) for k in keys]
        if not ks:
            return []
        out: dict[int, int] = {}
        for i in range(0, len(ks), 500):
            chunk = ks[i : i + 500]
            for rid, n in self.db.execute(
                f"SELECT recording_id, count(*) FROM fp_index WHERE key IN ({','.join('?' * len(chunk))}) "
                "GROUP BY recording_id",
                chunk,
            ):
                out[rid] = out.get(rid, 0) + n
        ranked = sorted((r for r, n in out.items() if n >= min_shared), key=lambda r: -out[r])
        return ranked[:limit]

    def recording_fingerprints(self, rec_id: int) -> list[np.ndarray]:
        """Fingerprints of files already assigned to a recording (any status)."""
        return [
            np.frombuffer(r[0], dtype="<u4")
            for r in self.db.execute(
                "SELECT fingerprint FROM tracks WHERE recording_id = ? AND fingerprint IS NOT NULL LIMIT 3",
                (rec_id,),
            )
        ]

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

    def recording_exists(self, rec_id: int) -> bool:
        """Whether a recording is still stored (another file's scan may have collected it)."""
        return (
            self.db.execute("SELECT 1 FROM recordings WHERE id = ?", (rec_id,)).fetchone()
            is not None
        )

    def set_write_epoch(self, track_id: int, tags_hash: str) -> None:
        """Mark a file's recorded write as current for a new tier epoch without rewriting it."""
        self.db.execute("UPDATE writes SET tags_hash = ? WHERE track_id = ?", (tags_hash, track_id))

    def recording_fp_duration(self, rec_id: int) -> float | None:
        """The duration a recording's fingerprint covers (0.0 when unknown); None when there is
        no such recording (it was collected since the caller's lookup)."""
        row = self.db.execute(
            "SELECT fp_duration FROM recordings WHERE id = ?", (rec_id,)
        ).fetchone()
        return None if row is None else float(row[0] or 0.0)

    def gc_recordings(self) -> int:
        """Drop recordings no file points to any more (their analyses and vectors go with them)."""
        orphans = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM recordings WHERE id NOT IN (SELECT recording_id FROM tracks WHERE recording_id IS NOT NULL)"
            )
        ]
        for rid in orphans:
            for name in self._spaces:
                self.db.execute(f"DELETE FROM {name} WHERE recording_id = ?", (rid,))
            self.db.execute("DELETE FROM recordings WHERE id = ?", (rid,))
        return len(orphans)

    # -- analyses and vectors -------------------------------------------------------------------

    def analyses(self, rec_id: int) -> dict[str, Analysis]:
        """model id → stored analysis for one recording."""
        out = {}
        for r in self.db.execute(
            "SELECT recording_id, model_id, prefix, provenance, profile, windows, n_patches, provider, scores "
            "FROM analyses WHERE recording_id = ?",
            (rec_id,),
        ):
            out[r[1]] = Analysis(
                r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], json.loads(r[8])
            )
        return out

    def provenances(self) -> dict[int, dict[str, str]]:
        """recording id → {model id: provenance}: the whole library in one query for skip checks."""
        out: dict[int, dict[str, str]] = {}
        for rid, mid, prov in self.db.execute(
            "SELECT recording_id, model_id, provenance FROM analyses"
        ):
            out.setdefault(rid, {})[mid] = prov
        for rid, prov in self.db.execute("SELECT recording_id, provenance FROM descriptors"):
            out.setdefault(rid, {})[DSP_ID] = prov
        return out

    def put_analysis(self, rec_id: int, a: Analysis, embedding: np.ndarray | None) -> None:
        """Store (replace) one model's result and its embedding for a recording."""
        self.db.execute(
            "INSERT OR REPLACE INTO analyses (recording_id, model_id, prefix, provenance, profile, windows, n_patches, "
            "provider, scores, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec_id,
                a.model_id,
                a.prefix,
                a.provenance,
                a.profile,
                json.dumps(a.windows),
                a.n_patches,
                a.provider,
                json.dumps(a.scores, separators=(",", ":")),
                time.time(),
            ),
        )
        if embedding is not None:
            name = self.ensure_space(a.model_id, int(embedding.shape[0]))
            self.db.execute(f"DELETE FROM {name} WHERE recording_id = ?", (rec_id,))
            self.db.execute(
                f"INSERT INTO {name} (recording_id, embedding) VALUES (?, ?)",
                (rec_id, np.asarray(embedding, dtype=np.float32).tobytes()),
            )

    def ensure_space(self, model_id: str, dim: int) -> str:
        """Create the vec0 table for a model's embeddings on first use."""
        name = space_name(model_id)
        if name in self._spaces:
            if self._spaces[name] != dim:
                raise StoreError(
                    f"embedding space {name} has dimension {self._spaces[name]}, not {dim}"
                )
            return name
        self.db.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING vec0("
            f"recording_id INTEGER PRIMARY KEY, embedding float[{dim}] distance_metric=cosine)"
        )
        self.db.execute(
            "INSERT OR REPLACE INTO spaces (name, model_id, dim) VALUES (?, ?, ?)",
            (name, model_id, dim),
        )
        self._spaces[name] = dim
        return name

    def spaces(self) -> dict[str, tuple[str, int]]:
        """vec table → (model id, dimension)."""
        return {
            r[0]: (r[1], r[2]) for r in self.db.execute("SELECT name, model_id, dim FROM spaces")
        }

    def embedding(self, model_id: str, rec_id: int) -> np.ndarray | None:
        """A recording's stored vector in one space."""
        name = space_name(model_id)
        if not self._has_space(name):
            return None
        row = self.db.execute(
            f"SELECT embedding FROM {name} WHERE recording_id = ?", (rec_id,)
        ).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def knn(self, model_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest recordings by cosine distance: ``[(recording id, distance)]``."""
        name = space_name(model_id)
        if not self._has_space(name):
            return []
        k = max(1, min(int(k), 4096))  # vec0's own ceiling on k
        if self.vector_index is not None:
            return self.vector_index.knn(model_id, vector, k)  # type: ignore[no-any-return]
        rows = self.db.execute(
            f"SELECT recording_id, distance FROM {name} WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (np.asarray(vector, dtype=np.float32).tobytes(), k),
        )
        return [(int(r[0]), float(r[1])) for r in rows]

    def label_scores(self, model_id: str) -> tuple[list[str], np.ndarray, list[int]]:
        """All stored scores of one model as a matrix: (labels, [n recordings, n labels], recording ids).

        Used for tier calibration and mood playlists; recordings with no present file are left out.
        """
        if self.vector_index is not None:  # the agent's in-memory copy
            return self.vector_index.label_scores(model_id)  # type: ignore[no-any-return]
        rows = self.db.execute(
            "SELECT recording_id, scores FROM analyses WHERE model_id = ? AND recording_id IN "
            "(SELECT recording_id FROM tracks WHERE status = 'ok')",
            (model_id,),
        ).fetchall()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32), []
        labels = list(json.loads(rows[0][1]))
        mat = np.full((len(rows), len(labels)), np.nan, dtype=np.float32)
        for i, r in enumerate(rows):  # one JSON decode per row (not per row and label)
            d = json.loads(r[1])
            mat[i] = [d.get(lab, np.nan) for lab in labels]
        return labels, mat, [int(r[0]) for r in rows]

    def model_ids(self) -> list[str]:
        """Models with at least one stored analysis."""
        return [
            r[0]
            for r in self.db.execute("SELECT DISTINCT model_id FROM analyses ORDER BY model_id")
        ]

    # -- tiers and writes -------------------------------------------------------------------------

    def tier_thresholds(self) -> dict[str, dict[str, tuple[float, float]]]:
        """model id → label → (high, medium) lower bounds from the last calibration."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for mid, label, hi, med in self.db.execute(
            "SELECT model_id, label, high, medium FROM tiers"
        ):
            out.setdefault(mid, {})[label] = (hi, med)
        return out

    def set_tiers(self, model_id: str, thresholds: dict[str, tuple[float, float]], n: int) -> None:
        """Replace one model's calibration."""
        self.db.execute("DELETE FROM tiers WHERE model_id = ?", (model_id,))
        now = time.time()
        self.db.executemany(
            "INSERT INTO tiers (model_id, label, high, medium, n, computed) VALUES (?, ?, ?, ?, ?, ?)",
            [(model_id, lab, hi, med, n, now) for lab, (hi, med) in thresholds.items()],
        )

    def last_write(self, track_id: int) -> tuple[str, str | None] | None:
        """(tags hash, MOOD value) nomarr last wrote into a file."""
        row = self.db.execute(
            "SELECT tags_hash, mood FROM writes WHERE track_id = ?", (track_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def write_hashes(self) -> dict[int, str]:
        """track id → hash of the tag set last written (one query for the whole library)."""
        return {r[0]: r[1] for r in self.db.execute("SELECT track_id, tags_hash FROM writes")}

    def written_keys(self) -> list[tuple[str, int]]:
        """(key, number of ok tracks) for every ``nom:`` key last written into some file.

        Reads the write records, not the files: they are committed only after the file was written
        and verified, so they say what TagLib will find without opening a single file.
        """
        rows = self.db.execute(
            "SELECT j.key, count(*) FROM writes w JOIN tracks t ON t.id = w.track_id, json_each(w.tags) j "
            "WHERE t.status = 'ok' GROUP BY j.key ORDER BY j.key"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def model_prefixes(self) -> dict[str, str]:
        """tag prefix → model id, over every analysis in the library."""
        return {
            r[0]: r[1] for r in self.db.execute("SELECT DISTINCT prefix, model_id FROM analyses")
        }

    def record_write(
        self, track_id: int, tags: dict[str, str], tags_hash: str, mood: str | None, method: str
    ) -> None:
        """Remember what was written into a file, so the next scan can tell whether it is current."""
        self.db.execute(
            "INSERT OR REPLACE INTO writes (track_id, tags, tags_hash, mood, method, written) VALUES (?, ?, ?, ?, ?, ?)",
            (track_id, json.dumps(tags, sort_keys=True), tags_hash, mood, method, time.time()),
        )

    # -- DSP descriptors --------------------------------------------------------------------------

    def put_descriptors(self, rec_id: int, doc: dict[str, Any], timeline: bytes | None) -> None:
        """Store (replace) a recording's descriptors (``TrackDescriptors.to_dict()``)."""
        t, k, e, lo = (
            doc.get("tempo") or {},
            doc.get("key") or {},
            doc.get("energy") or {},
            doc.get("loudness") or {},
        )
        self.db.execute(
            "INSERT OR REPLACE INTO descriptors (recording_id, provenance, bpm, bpm_confidence, key, "
            "camelot, key_strength, energy, danceability, lufs, true_peak, doc, timeline, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec_id,
                str(doc.get("provenance") or ""),
                t.get("bpm"),
                t.get("confidence"),
                k.get("key"),
                k.get("camelot"),
                k.get("strength") if k.get("key") else None,
                e.get("energy"),
                e.get("danceability"),
                lo.get("integrated_lufs"),
                lo.get("true_peak_dbtp"),
                json.dumps(doc, separators=(",", ":")),
                timeline,
                time.time(),
            ),
        )

    def descriptors(self, rec_id: int) -> dict[str, Any] | None:
        """A recording's descriptor document, or None."""
        row = self.db.execute(
            "SELECT doc FROM descriptors WHERE recording_id = ?", (rec_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def timeline(self, rec_id: int) -> bytes | None:
        """A recording's stored timeline blob (see nomarr.analyzers.timeline)."""
        row = self.db.execute(
            "SELECT timeline FROM descriptors WHERE recording_id = ?", (rec_id,)
        ).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def descriptor_provenance(self, rec_id: int) -> str | None:
        """The provenance a recording's descriptors were computed with (None: none stored)."""
        row = self.db.execute(
            "SELECT provenance FROM descriptors WHERE recording_id = ?", (rec_id,)
        ).fetchone()
        return row[0] if row else None

    def descriptor_columns(self, rec_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """recording id → {bpm, key, camelot, energy, danceability, lufs} for filters."""
        ids = list(rec_ids)
        out: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in self.db.execute(
                "SELECT recording_id, bpm, key, camelot, energy, danceability, lufs FROM descriptors "
                f"WHERE recording_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[r[0]] = dict(
                    bpm=r[1], key=r[2], camelot=r[3], energy=r[4], danceability=r[5], lufs=r[6]
                )
        return out

    def last_std(self, track_id: int) -> dict[str, str]:
        """The standard fields (bpm, initial_key, replaygain…) nomarr last wrote into a file."""
        row = self.db.execute("SELECT std FROM writes WHERE track_id = ?", (track_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def set_last_std(self, track_id: int, std: dict[str, str]) -> None:
        """Remember the standard fields written (after :meth:`record_write`)."""
        self.db.execute(
            "UPDATE writes SET std = ? WHERE track_id = ?",
            (json.dumps(std, sort_keys=True), track_id),
        )

    # -- scans ----------------------------------------------------------------------------------

    def begin_scan(self, roots: list[str]) -> int:
        """Open a scan record (its summary is filled in when it finishes)."""
        cur = self.db.execute(
            "INSERT INTO scans (started, roots) VALUES (?, ?)", (time.time(), json.dumps(roots))
        )
        return int(cur.lastrowid)

    def end_scan(self, scan_id: int, summary: dict[str, Any]) -> None:
        """Close a scan record with its summary."""
        self.db.execute(
            "UPDATE scans SET finished = ?, summary = ? WHERE id = ?",
            (time.time(), json.dumps(summary), scan_id),
        )
