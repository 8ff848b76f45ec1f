"""The connection under every store: the SQLite driver, path encoding, transactions, the named
migrations and the small ``meta`` table. Feature mixins (tracks, recordings, analyses, writes…)
build on :class:`Database` and only add queries."""

from __future__ import annotations

import os
import sqlite3 as _stdlib_sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nomarr import paths
from nomarr.store.schema import MIGRATIONS

# PRAGMA user_version: 1 was the single numbered schema; 2 means "named migrations, see the
# migrations table" (an older nomarr, which knows only 1, refuses such a database as too new)
SCHEMA_VERSION = 2


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


class StoreError(Exception):
    """The database cannot be opened or is not a nomarr database."""


sqlite3 = _driver()


def _storage_failure(e: BaseException) -> bool:
    """A write the storage refused (disk full, I/O error, read-only), not a bug in a query."""
    msg = str(e).lower()
    return any(w in msg for w in ("full", "disk i/o", "readonly", "read-only"))


def enc_path(path: str | os.PathLike[str]) -> bytes:
    """Absolute path → the bytes stored in the database."""
    return os.fsencode(os.path.abspath(os.fspath(path)))


def dec_path(raw: bytes | str) -> str:
    """Stored path → str (non-UTF-8 bytes come back as surrogate escapes, as ``os.listdir`` gives)."""
    return os.fsdecode(raw)


def space_name(model_id: str) -> str:
    """Embedding space (one vec0 table) for a model id: ``vec_<id with non-alnum → _>``."""
    return "vec_" + "".join(c if c.isalnum() else "_" for c in model_id.lower())


def _statements(sql: str) -> list[str]:
    """A migration's statements, split on ``;`` only where a statement is complete (a trigger's
    body holds ``;`` of its own)."""
    out, buf = [], ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \t\r\n;"):
        out.append(buf)
    return out


class Database:
    """A connection to one library database. Not shared between threads: open one per thread."""

    db: Any
    _spaces: dict[str, int]

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

    def close(self) -> None:
        """Close the connection (checkpointing the WAL is SQLite's business)."""
        self.db.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """One atomic unit of change: ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException as e:
            self._rollback()
            if isinstance(e, sqlite3.OperationalError) and _storage_failure(e):
                raise self._storage_error(e) from e
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            # a full disk or an I/O error at COMMIT: SQLite keeps the transaction open (its
            # journal keeps the database as it was before BEGIN); end it and say what happened
            self._rollback()
            raise self._storage_error(e) from e

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:  # the connection is past saving; the journal still protects the file
            pass

    def _storage_error(self, e: BaseException) -> StoreError:
        return StoreError(
            f"{self.path}: cannot write the database ({e}); the last change was rolled back and "
            "nothing else is lost: free some space (or fix the disk) and scan again"
        )

    def _migrate(self) -> None:
        """Bring the schema up to date: apply the named migrations this database lacks."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this nomarr ({SCHEMA_VERSION})"
            )
        known = [name for name, _ in MIGRATIONS]
        with self.tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)"
            )
            if version == 1:  # a database made before migrations had names: it has the first
                db.execute(
                    "INSERT OR IGNORE INTO migrations VALUES (?, ?)", (known[0], time.time())
                )
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        done = {r[0] for r in self.db.execute("SELECT name FROM migrations")}
        unknown = sorted(done - set(known))
        if unknown:
            raise StoreError(
                f"{self.path}: made by a newer nomarr (schema steps {', '.join(unknown)} unknown here)"
            )
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.tx() as db:
                for stmt in _statements(sql):
                    db.execute(stmt)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))

    def schema(self) -> list[str]:
        """Names of the schema steps applied to this database, in the order they were applied."""
        return [r[0] for r in self.db.execute("SELECT name FROM migrations ORDER BY applied, name")]

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


def _statements(sql: str) -> list[str]:
    """A migration's statements, split at the semicolons that end one (a trigger's body holds
    semicolons of its own: ``sqlite3.complete_statement`` tells them apart)."""
    out: list[str] = []
    buf = ""
    for part in sql.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \n\t;"):
        out.append(buf)
    return out
