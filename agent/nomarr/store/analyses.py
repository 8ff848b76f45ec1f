"""Analyses, embedding spaces (one sqlite-vec ``vec0`` table per model) and tier calibration."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nomarr.store.db import Database, StoreError, space_name


@dataclass
class Analysis:
    """One model's stored result for one recording. ``complete``: the analysed file decoded
    fully (see :class:`nomarr.pipeline.prepare.Coverage`); ``decoded_s``: seconds it saw."""

    recording_id: int
    model_id: str
    prefix: str
    provenance: str
    profile: str
    windows: list[dict[str, Any]]
    n_patches: int
    provider: str | None
    scores: dict[str, float]
    complete: bool = True
    decoded_s: float | None = None

    def rank(self) -> tuple[bool, float]:
        """Which of two analyses of one recording represents it: complete beats partial, then
        more decoded audio. Equal ranks keep the stored one, so the choice is stable."""
        return (bool(self.complete), float(self.decoded_s or 0.0))


class AnalysesMixin(Database):
    """Queries on ``analyses``, ``spaces``, the ``vec_*`` tables and ``tiers``."""

    def analyses(self, rec_id: int) -> dict[str, Analysis]:
        """model id → stored analysis for one recording."""
        out = {}
        for r in self.db.execute(
            "SELECT recording_id, model_id, prefix, provenance, profile, windows, n_patches, provider, scores, "
            "complete, decoded_s FROM analyses WHERE recording_id = ?",
            (rec_id,),
        ):
            out[r[1]] = Analysis(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                json.loads(r[5]),
                r[6],
                r[7],
                json.loads(r[8]),
                bool(r[9]),
                r[10],
            )
        return out

    def provenances(self) -> dict[int, dict[str, str]]:
        """recording id → {model id: provenance}: the whole library in one query for skip checks."""
        out: dict[int, dict[str, str]] = {}
        for rid, mid, prov in self.db.execute(
            "SELECT recording_id, model_id, provenance FROM analyses"
        ):
            out.setdefault(rid, {})[mid] = prov
        return out

    def put_analysis(self, rec_id: int, a: Analysis, embedding: np.ndarray | None) -> None:
        """Store (replace) one model's result and its embedding for a recording."""
        self.db.execute(
            "INSERT OR REPLACE INTO analyses (recording_id, model_id, prefix, provenance, profile, windows, n_patches, "
            "provider, scores, created, complete, decoded_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                int(bool(a.complete)),
                a.decoded_s,
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

        Used for tier calibration and mood playlists; recordings with neither a present file nor
        a stream are left out.
        """
        if self.vector_index is not None:  # the agent's in-memory copy
            return self.vector_index.label_scores(model_id)  # type: ignore[no-any-return]
        rows = self.db.execute(
            "SELECT recording_id, scores FROM analyses WHERE model_id = ? AND (recording_id IN "
            "(SELECT recording_id FROM tracks WHERE status = 'ok') OR recording_id IN "
            "(SELECT recording_id FROM streams))",
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

    def model_prefixes(self) -> dict[str, str]:
        """tag prefix → model id, over every analysis in the library."""
        return {
            r[0]: r[1] for r in self.db.execute("SELECT DISTINCT prefix, model_id FROM analyses")
        }
