"""What was written into each file (so a rescan knows whether its tags are current) and the scan
log."""

from __future__ import annotations

import json
import time
from typing import Any

from nomarr.store.db import Database


class WritesMixin(Database):
    """Queries on ``writes`` and ``scans``."""

    def set_write_epoch(self, track_id: int, tags_hash: str) -> None:
        """Mark a file's recorded write as current for a new tier epoch without rewriting it."""
        self.db.execute("UPDATE writes SET tags_hash = ? WHERE track_id = ?", (tags_hash, track_id))

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

    def record_write(
        self, track_id: int, tags: dict[str, str], tags_hash: str, mood: str | None, method: str
    ) -> None:
        """Remember what was written into a file, so the next scan can tell whether it is current."""
        self.db.execute(
            "INSERT OR REPLACE INTO writes (track_id, tags, tags_hash, mood, method, written) VALUES (?, ?, ?, ?, ?, ?)",
            (track_id, json.dumps(tags, sort_keys=True), tags_hash, mood, method, time.time()),
        )

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
