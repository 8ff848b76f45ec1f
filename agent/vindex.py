"""In-memory copies of the embedding spaces, for the agent's KNN answers.

sqlite-vec's ``vec0`` scans every vector on each query; at 100k 200-d vectors that is ~25 ms (cosine)
on a small CPU, too slow for an API whose p99 goal is 25 ms with 50 clients. One normalised float32
matrix per space answers the same question with one BLAS matrix-vector product (~3 ms) and costs
``n × dim × 4`` bytes (80 MB at 100k × 200). The database stays the source of truth: the copy is
rebuilt in the background when another connection has committed (``PRAGMA data_version``), at most
every ``min_interval_s`` and never more than 20 % of the time, so a running scan does not turn the
agent into a copy loop; queries in the meantime use the previous copy (answers are filtered against
the live ``tracks`` table anyway, so a deleted file never comes back). An index idle for
``idle_unload_s`` is dropped, so an idle agent does not hold the matrix.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from agent.store import Store, space_name, sqlite3

log = logging.getLogger("nomarr.vindex")


class _Space:
    __slots__ = ("ids", "mat", "built_at", "build_s", "version", "used")

    def __init__(self, ids: np.ndarray, mat: np.ndarray, build_s: float, version: int) -> None:
        self.ids = ids
        self.mat = mat
        self.built_at = time.monotonic()
        self.build_s = build_s
        self.version = version
        self.used = time.monotonic()


class VectorIndex:
    """Thread-safe KNN over in-memory copies of a database's embedding spaces."""

    def __init__(self, db_path: str, *, min_interval_s: float = 1.0, idle_unload_s: float = 600.0) -> None:
        self.db_path = db_path
        self.min_interval_s = min_interval_s
        self.idle_unload_s = idle_unload_s
        self._spaces: dict[str, _Space] = {}
        self._lock = threading.Lock()
        self._building: set[str] = set()
        self._vlock = threading.Lock()
        self._vdb: Any = None

    def _version(self) -> int:
        """``PRAGMA data_version`` of one long-lived connection: it changes exactly when another
        connection (the scanner) has committed, and costs no table access."""
        with self._vlock:
            if self._vdb is None:
                self._vdb = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            return int(self._vdb.execute("PRAGMA data_version").fetchone()[0])

    def _build(self, model_id: str) -> _Space | None:
        t0 = time.perf_counter()
        version = self._version()  # read before the copy: a commit during it triggers another build
        st = Store(self.db_path, readonly=True)  # a private connection: builds run on their own thread
        try:
            name = space_name(model_id)
            row = st.db.execute("SELECT dim FROM spaces WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            dim = int(row[0])
            rows = st.db.execute(f"SELECT recording_id, embedding FROM {name}").fetchall()
        finally:
            st.close()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat /= np.maximum(norms, 1e-12)
        sp = _Space(ids, mat, time.perf_counter() - t0, version)
        log.debug("vector index built", extra={"model": model_id, "vectors": len(rows), "s": round(sp.build_s, 3)})
        return sp

    def _rebuild_async(self, model_id: str) -> None:
        with self._lock:
            if model_id in self._building:
                return
            self._building.add(model_id)

        def run() -> None:
            try:
                sp = self._build(model_id)
                with self._lock:
                    if sp is None:
                        self._spaces.pop(model_id, None)
                    else:
                        old = self._spaces.get(model_id)
                        if old is not None:
                            sp.used = old.used
                        self._spaces[model_id] = sp
            except Exception:  # a failed rebuild keeps the old copy; the next query tries again
                log.exception("vector index rebuild failed", extra={"model": model_id})
            finally:
                with self._lock:
                    self._building.discard(model_id)

        threading.Thread(target=run, name=f"vindex-{model_id}", daemon=True).start()

    def _space(self, model_id: str) -> _Space | None:
        with self._lock:
            sp = self._spaces.get(model_id)
        if sp is None:
            sp = self._build(model_id)
            if sp is None:
                return None
            with self._lock:
                self._spaces[model_id] = sp
            return sp
        now = time.monotonic()
        sp.used = now
        # another connection committed since the copy was made: refresh it, throttled
        wait = max(self.min_interval_s, 5.0 * sp.build_s)
        if now - sp.built_at >= wait and self._version() != sp.version:
            self._rebuild_async(model_id)
        return sp

    def knn(self, model_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest recordings by cosine distance, nearest first (as ``Store.knn``)."""
        sp = self._space(model_id)
        if sp is None or len(sp.ids) == 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != sp.mat.shape[1]:
            raise ValueError(f"vector has {q.shape[0]} dimensions; {model_id} embeddings have {sp.mat.shape[1]}")
        qn = float(np.linalg.norm(q))
        if not np.isfinite(qn) or qn == 0.0:
            raise ValueError("vector must be finite and non-zero")
        sims = sp.mat @ (q / qn)
        k = max(1, min(int(k), len(sims)))
        if k < len(sims):
            idx = np.argpartition(-sims, k - 1)[:k]
        else:
            idx = np.arange(len(sims))
        idx = idx[np.lexsort((sp.ids[idx], -sims[idx]))]
        return [(int(sp.ids[i]), float(1.0 - sims[i])) for i in idx]

    def unload_idle(self) -> int:
        """Drop copies unused for ``idle_unload_s``; returns how many were dropped."""
        now = time.monotonic()
        with self._lock:
            stale = [m for m, sp in self._spaces.items() if now - sp.used > self.idle_unload_s]
            for m in stale:
                del self._spaces[m]
        return len(stale)

    def close(self) -> None:
        """Drop every copy and the version-check connection."""
        with self._lock:
            self._spaces.clear()
        with self._vlock:
            if self._vdb is not None:
                self._vdb.close()
                self._vdb = None

    def stats(self) -> dict[str, Any]:
        """What is held in memory (for ``GET /status`` and the bench)."""
        with self._lock:
            return {m: {"vectors": int(len(sp.ids)), "bytes": int(sp.mat.nbytes), "build_s": round(sp.build_s, 3)}
                    for m, sp in self._spaces.items()}  # fmt: skip
