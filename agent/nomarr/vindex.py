"""In-memory copies of the embedding spaces, for the agent's KNN answers.

sqlite-vec's ``vec0`` scans every vector on each query; at 100k 200-d vectors that is ~25 ms (cosine)
on a small CPU, too slow for an API whose p99 goal is 25 ms with 50 clients. One normalised float32
matrix per space answers the same question with one BLAS matrix-vector product (~3 ms) and costs
``n × dim × 4`` bytes (80 MB at 100k × 200). The database stays the source of truth, and an answer
is never stale by more than a bound **in time**, whatever the rate of queries:

- every query compares the copy's library version with the database's: ``meta.library_version``,
  which triggers move when analyses, present files or streams change (not when a listen is
  stored), read again only when ``PRAGMA data_version`` on a long-lived connection says another
  connection committed; equal means the copy is current;
- when another connection has committed since and the copy is cheap to rebuild (its last build
  took at most ``sync_build_s``, 50 ms by default: about 20k × 200-d vectors on a Pi-class CPU),
  the query rebuilds it first and answers from the fresh copy: the very next query after an
  analysis commits lists the new track;
- when it is expensive, the query answers from the previous copy and starts a rebuild in the
  background, unless the copy is older than ``max_stale_s`` (2 s by default): then the query waits
  for the rebuild. So an answer never misses a commit made more than ``max_stale_s`` before the
  query (plus the build's own time), and a running scan that commits every second costs at most
  one rebuild per ``max(max_stale_s, 5 × build time)`` in the background.

Answers are filtered against the live ``tracks`` table anyway, so a deleted file never comes back.
An index idle for ``idle_unload_s`` is dropped, so an idle agent does not hold the matrix. The
per-model label score matrices that mood playlists rank by are cached the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from nomarr.store import Store, space_name, sqlite3

log = logging.getLogger("nomarr.vindex")


class _Entry:
    """One cached copy: what it holds, how long it took to make, which database state it reflects."""

    __slots__ = ("payload", "built_at", "build_s", "version", "used")

    def __init__(self, payload: Any, build_s: float, version: int) -> None:
        self.payload = payload
        self.built_at = time.monotonic()
        self.build_s = build_s
        self.version = version
        self.used = time.monotonic()


Key = tuple[str, str]  # ("vectors" | "scores", model id)


class VectorIndex:
    """Thread-safe KNN over in-memory copies of a database's embedding spaces, plus the per-model
    score matrices mood playlists rank by (decoding every recording's JSON scores per request
    would cost seconds at 100k tracks)."""

    def __init__(
        self,
        db_path: str,
        *,
        min_interval_s: float = 1.0,
        idle_unload_s: float = 600.0,
        sync_build_s: float = 0.05,
        max_stale_s: float = 2.0,
    ) -> None:
        """``min_interval_s``: least time between two background rebuilds of one copy;
        ``sync_build_s``: a copy whose build took at most this long is rebuilt before answering;
        ``max_stale_s``: an expensive copy older than this is rebuilt before answering too."""
        self.db_path = db_path
        self.min_interval_s = min_interval_s
        self.idle_unload_s = idle_unload_s
        self.sync_build_s = sync_build_s
        self.max_stale_s = max_stale_s
        self._entries: dict[Key, _Entry] = {}
        self._lock = threading.Lock()
        self._building: set[Key] = set()
        self._first: dict[Key, threading.Lock] = {}
        self._vlock = threading.Lock()
        self._vdb: Any = None
        self._dv: int | None = None
        self._lv = 0

    def _version(self) -> int:
        """The library's version (``meta.library_version``, which triggers move whenever
        analyses, present files or streams change), read again only when ``PRAGMA data_version``
        of one long-lived connection says another connection has committed: a listen stored
        commits too, but leaves the copies current."""
        with self._vlock:
            if self._vdb is None:
                self._vdb = sqlite3.connect(
                    self.db_path, check_same_thread=False, isolation_level=None
                )
            dv = int(self._vdb.execute("PRAGMA data_version").fetchone()[0])
            if dv != self._dv:
                row = self._vdb.execute(
                    "SELECT value FROM meta WHERE key = 'library_version'"
                ).fetchone()
                self._dv, self._lv = dv, int(row[0]) if row else 0
            return self._lv

    def _build(self, key: Key) -> _Entry | None:
        t0 = time.perf_counter()
        version = self._version()  # read before the copy: a commit during it triggers another build
        st = Store(
            self.db_path, readonly=True
        )  # a private connection: builds run on their own thread
        try:
            payload = (
                self._load_vectors(st, key[1]) if key[0] == "vectors" else st.label_scores(key[1])
            )
        finally:
            st.close()
        if payload is None:
            return None
        e = _Entry(payload, time.perf_counter() - t0, version)
        log.debug(
            "in-memory copy built",
            extra={"kind": key[0], "model": key[1], "s": round(e.build_s, 3)},
        )
        return e

    @staticmethod
    def _load_vectors(st: Store, model_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        return load_vectors(st, model_id)

    def _rebuild_async(self, key: Key) -> None:
        with self._lock:
            if key in self._building:
                return
            self._building.add(key)

        def run() -> None:
            try:
                e = self._build(key)
                with self._lock:
                    if e is None:
                        self._entries.pop(key, None)
                    else:
                        old = self._entries.get(key)
                        if old is not None:
                            e.used = old.used
                        self._entries[key] = e
            except Exception:  # a failed rebuild keeps the old copy; the next query tries again
                log.exception(
                    "in-memory copy rebuild failed", extra={"kind": key[0], "model": key[1]}
                )
            finally:
                with self._lock:
                    self._building.discard(key)

        threading.Thread(target=run, name=f"vindex-{key[0]}-{key[1]}", daemon=True).start()

    def _build_now(self, key: Key, stale: _Entry | None) -> _Entry | None:
        """Build ``key`` in this thread; concurrent callers wait for one build instead of each
        making one. ``stale``: the copy the caller found out of date (None: there was none)."""
        with self._lock:
            gate = self._first.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                e = self._entries.get(key)
            if e is not None and e is not stale and (stale is None or e.version != stale.version):
                return e  # another caller built it while we waited
            e = self._build(key)
            with self._lock:
                if e is None:
                    self._entries.pop(key, None)
                else:
                    if stale is not None:
                        e.used = stale.used
                    self._entries[key] = e
            return e

    def _get(self, key: Key) -> Any:
        with self._lock:
            e = self._entries.get(key)
        if e is None:
            e = self._build_now(key, None)
            return None if e is None else e.payload
        now = time.monotonic()
        e.used = now
        if self._version() == e.version:
            return e.payload
        # another connection committed since the copy was made
        if e.build_s <= self.sync_build_s or now - e.built_at >= self.max_stale_s:
            fresh = self._build_now(key, e)
            return None if fresh is None else fresh.payload
        if now - e.built_at >= max(self.min_interval_s, 5.0 * e.build_s):
            self._rebuild_async(key)
        return e.payload

    def label_scores(self, model_id: str) -> tuple[list[str], np.ndarray, list[int]]:
        """``Store.label_scores`` from memory (the same answer, refreshed like the vectors)."""
        got = self._get(("scores", model_id))
        return got if got is not None else ([], np.zeros((0, 0), dtype=np.float32), [])

    def vectors(self, model_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(recording ids, L2-normalised vectors) of one space, refreshed like every copy (the
        console's map projects them)."""
        return self._get(("vectors", model_id))  # type: ignore[no-any-return]

    def version(self) -> int:
        """The database's ``data_version`` as this index sees it (a cache key for derived data)."""
        return self._version()

    def knn(self, model_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest recordings by cosine distance, nearest first (as ``Store.knn``)."""
        got = self._get(("vectors", model_id))
        if got is None or len(got[0]) == 0:
            return []
        ids, mat = got
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != mat.shape[1]:
            raise ValueError(
                f"vector has {q.shape[0]} dimensions; {model_id} embeddings have {mat.shape[1]}"
            )
        qn = float(np.linalg.norm(q))
        if not np.isfinite(qn) or qn == 0.0:
            raise ValueError("vector must be finite and non-zero")
        sims = mat @ (q / qn)
        k = max(1, min(int(k), len(sims)))
        if k < len(sims):
            idx = np.argpartition(-sims, k - 1)[:k]
        else:
            idx = np.arange(len(sims))
        idx = idx[np.lexsort((ids[idx], -sims[idx]))]
        return [(int(ids[i]), float(1.0 - sims[i])) for i in idx]

    def matrix(self, model_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The current copy of one space: (recording ids, unit vectors, one row each), refreshed
        like the KNN answers. Shared and read-only: callers must not write into it."""
        got = self._get(("vectors", model_id))
        return None if got is None or len(got[0]) == 0 else got

    def unload_idle(self) -> int:
        """Drop copies unused for ``idle_unload_s``; returns how many were dropped."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k, e in self._entries.items() if now - e.used > self.idle_unload_s]
            for k in stale:
                del self._entries[k]
        return len(stale)

    def close(self) -> None:
        """Drop every copy and the version-check connection."""
        with self._lock:
            self._entries.clear()
        with self._vlock:
            if self._vdb is not None:
                self._vdb.close()
                self._vdb = None

    def stats(self) -> dict[str, Any]:
        """What is held in memory (for ``GET /status`` and the bench)."""
        with self._lock:
            return {
                f"{k[0]}:{k[1]}": {"build_s": round(e.build_s, 3)} for k, e in self._entries.items()
            }


def load_vectors(st: Store, model_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Every vector of one space from the database: (recording ids, unit vectors), or None when
    the library has no such space."""
    name = space_name(model_id)
    row = st.db.execute("SELECT dim FROM spaces WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    dim = int(row[0])
    rows = st.db.execute(f"SELECT recording_id, embedding FROM {name}").fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    mat = (
        np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
    )
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    return ids, mat
