"""Analyses imported from other agents (``nomarr analyses import``), kept apart from the library's
own until a file of the same recording turns up.

Why apart: an imported record has no file here. Were it a recording of the library at once, a
bundle of a million records would fill every similarity answer with recordings nobody owns and
every calibration with somebody else's music. So records wait in ``shared_records`` (with their
own fingerprint index, the same keys as the library's), and a scan that identifies a new file
*adopts* the matching record: a recording with the record's analyses and embeddings is created,
the file points to it, and its tags are written without running a model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nomarr.store.db import Database
from nomarr.store.descriptors import DSP_ID
from nomarr.store.recordings import rank_candidates


@dataclass
class SharedRecord:
    """One imported record as stored: identity and the validated analyses (bundle form)."""

    id: int
    fp_duration: float
    fingerprint: np.ndarray
    duration: float
    signer: str
    analyses: list[dict[str, Any]]
    adopted: int | None
    descriptors: dict[str, Any] | None = None  # the validated document (None: the record had none)
    timeline: bytes | None = None

    def provenances(self) -> dict[str, str]:
        """model id → provenance, plus ``DSP_ID`` → the descriptors' (what adoption compares with
        the scan's planned provenances)."""
        out = {a["model_id"]: a["provenance"] for a in self.analyses}
        if self.descriptors is not None:
            out[DSP_ID] = str(self.descriptors.get("provenance") or "")
        return out


def _key(k: int) -> int:
    """Fingerprint index keys are unsigned 32-bit; SQLite integers are signed (as in fp_index)."""
    return int(k) - (1 << 31)


class SharedMixin(Database):
    """Queries on ``shared_records``, ``shared_fp_index`` and ``shared_imports``."""

    def begin_import(
        self, bundle: str, signer: str, agent_id: str | None, created: float | None
    ) -> int:
        """A row for one import of one bundle (its summary is filled in by :meth:`end_import`)."""
        cur = self.db.execute(
            "INSERT INTO shared_imports (bundle, signer, agent_id, created, imported, summary) "
            "VALUES (?, ?, ?, ?, ?, '{}')",
            (bundle, signer, agent_id, created, time.time()),
        )
        return int(cur.lastrowid)

    def end_import(self, import_id: int, summary: dict[str, Any]) -> None:
        """Record what an import accepted and refused."""
        self.db.execute(
            "UPDATE shared_imports SET summary = ? WHERE id = ?",
            (json.dumps(summary, sort_keys=True), import_id),
        )

    def has_shared(self, digest: str) -> bool:
        """Whether a record with this digest was imported before (from any bundle)."""
        row = self.db.execute("SELECT 1 FROM shared_records WHERE digest = ?", (digest,))
        return row.fetchone() is not None

    def put_shared(
        self,
        import_id: int,
        digest: str,
        fp_duration: float,
        fingerprint: np.ndarray,
        keys: Iterable[int],
        duration: float,
        signer: str,
        analyses: list[dict[str, Any]],
        descriptors: dict[str, Any] | None = None,
        timeline: bytes | None = None,
    ) -> int:
        """Store one validated record (its descriptors' document and timeline too, where it has
        them) and its fingerprint index keys; returns its id."""
        cur = self.db.execute(
            "INSERT INTO shared_records (digest, fp_duration, fingerprint, duration, signer, "
            "import_id, analyses, imported, descriptors, timeline) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                digest,
                fp_duration,
                np.asarray(fingerprint, dtype="<u4").tobytes(),
                duration,
                signer,
                import_id,
                json.dumps(analyses, separators=(",", ":")),
                time.time(),
                None if descriptors is None else json.dumps(descriptors, separators=(",", ":")),
                timeline,
            ),
        )
        rid = int(cur.lastrowid)
        self.db.executemany(
            "INSERT OR IGNORE INTO shared_fp_index (key, record_id) VALUES (?, ?)",
            [(_key(k), rid) for k in keys],
        )
        return rid

    def shared_candidates(
        self, keys: Iterable[int], min_shared: int = 2, limit: int = 20
    ) -> list[int]:
        """Imported records sharing at least ``min_shared`` index keys, most shared first."""
        return rank_candidates(self.db, "shared_fp_index", "record_id", keys, min_shared, limit)

    def shared_record(self, record_id: int) -> SharedRecord | None:
        """One imported record by id."""
        row = self.db.execute(
            "SELECT id, fp_duration, fingerprint, duration, signer, analyses, adopted, "
            "descriptors, timeline FROM shared_records WHERE id = ?",
            (record_id,),
        ).fetchone()
        if row is None:
            return None
        return SharedRecord(
            int(row[0]),
            float(row[1]),
            np.frombuffer(row[2], dtype="<u4").copy(),
            float(row[3]),
            row[4],
            json.loads(row[5]),
            row[6],
            None if row[7] is None else json.loads(row[7]),
            None if row[8] is None else bytes(row[8]),
        )

    def mark_adopted(self, record_id: int, rec_id: int) -> None:
        """A library recording was made from this record (export leaves such recordings out)."""
        self.db.execute("UPDATE shared_records SET adopted = ? WHERE id = ?", (rec_id, record_id))

    def adopted_recordings(self) -> set[int]:
        """Library recordings whose analyses came from an imported record."""
        return {
            int(r[0])
            for r in self.db.execute("SELECT adopted FROM shared_records WHERE adopted IS NOT NULL")
        }

    def shared_counts(self) -> dict[str, int]:
        """Imported records, how many were adopted by a file here, imports made, and how many
        records carry descriptors."""
        q = self.db.execute
        return {
            "records": int(q("SELECT count(*) FROM shared_records").fetchone()[0]),
            "adopted": int(
                q("SELECT count(*) FROM shared_records WHERE adopted IS NOT NULL").fetchone()[0]
            ),
            "imports": int(q("SELECT count(*) FROM shared_imports").fetchone()[0]),
            "with_descriptors": int(
                q("SELECT count(*) FROM shared_records WHERE descriptors IS NOT NULL").fetchone()[0]
            ),
        }
