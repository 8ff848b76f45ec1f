"""DSP descriptors per recording (tempo, key, loudness, energy, regions, the timeline) and the
standard fields nomarr last wrote into each file (docs/descriptors.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from nomarr.store.db import Database

DSP_ID = "nomarr-dsp"  # the descriptors' entry in provenance maps (beside the model ids)


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


class DescriptorsMixin(Database):
    """Queries on ``descriptors`` and ``writes.std``; merges the descriptors' provenance into
    :meth:`provenances` so a scan's skip rule covers them."""

    def provenances(self) -> dict[int, dict[str, str]]:
        """recording id → {model id: provenance}, plus ``DSP_ID`` → the descriptors' provenance."""
        out: dict[int, dict[str, str]] = super().provenances()  # type: ignore[misc]
        for rid, prov in self.db.execute("SELECT recording_id, provenance FROM descriptors"):
            out.setdefault(rid, {})[DSP_ID] = prov
        return out

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
