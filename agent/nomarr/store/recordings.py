"""Recordings: content identities (Chromaprint), their fingerprint index, and collection of the
ones no file points to any more."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from nomarr.store.db import Database


def rank_candidates(
    db: Any, table: str, col: str, keys: Iterable[int], min_shared: int, limit: int
) -> list[int]:
    """Ids in ``table.col`` sharing at least ``min_shared`` fingerprint index keys, most shared
    first (the library's ``fp_index`` and the shared pool's ``shared_fp_index`` alike). Keys are
    unsigned 32-bit, stored shifted into SQLite's signed range."""
    ks = [int(k) - (1 << 31) for k in keys]
    out: dict[int, int] = {}
    for i in range(0, len(ks), 500):
        chunk = ks[i : i + 500]
        for rid, n in db.execute(
            f"SELECT {col}, count(*) FROM {table} WHERE key IN ({','.join('?' * len(chunk))}) "
            f"GROUP BY {col}",
            chunk,
        ):
            out[rid] = out.get(rid, 0) + n
    ranked = sorted((r for r, n in out.items() if n >= min_shared), key=lambda r: -out[r])
    return ranked[:limit]


class RecordingsMixin(Database):
    """Queries on ``recordings`` and ``fp_index``."""

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
        return rank_candidates(self.db, "fp_index", "recording_id", keys, min_shared, limit)

    def recording_fingerprints(self, rec_id: int) -> list[np.ndarray]:
        """Fingerprints of files (any status) and streams already assigned to a recording."""
        files = [
            np.frombuffer(r[0], dtype="<u4")
            for r in self.db.execute(
                "SELECT fingerprint FROM tracks WHERE recording_id = ? AND fingerprint IS NOT NULL LIMIT 3",
                (rec_id,),
            )
        ]
        if len(files) >= 3:
            return files
        streams = self.db.execute(
            "SELECT fingerprint FROM streams WHERE recording_id = ? AND fingerprint IS NOT NULL "
            "LIMIT 3",
            (rec_id,),
        )
        return files + [np.frombuffer(r[0], dtype="<u4") for r in streams]

    def recording_exists(self, rec_id: int) -> bool:
        """Whether a recording is still stored (another file's scan may have collected it)."""
        return (
            self.db.execute("SELECT 1 FROM recordings WHERE id = ?", (rec_id,)).fetchone()
            is not None
        )

    def recording_fp_duration(self, rec_id: int) -> float | None:
        """The duration a recording's fingerprint covers (0.0 when unknown); None when there is
        no such recording (it was collected since the caller's lookup)."""
        row = self.db.execute(
            "SELECT fp_duration FROM recordings WHERE id = ?", (rec_id,)
        ).fetchone()
        return None if row is None else float(row[0] or 0.0)

    def gc_recordings(self) -> int:
        """Drop recordings no file and no stream points to any more (their analyses and vectors
        go with them). A streamed recording has no file by design: its stream row keeps it."""
        orphans = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM recordings WHERE id NOT IN (SELECT recording_id FROM tracks WHERE recording_id IS NOT NULL) "
                "AND id NOT IN (SELECT recording_id FROM streams)"
            )
        ]
        for rid in orphans:
            for name in self._spaces:
                self.db.execute(f"DELETE FROM {name} WHERE recording_id = ?", (rid,))
            self.db.execute("DELETE FROM recordings WHERE id = ?", (rid,))
        return len(orphans)
