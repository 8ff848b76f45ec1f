"""The compact per-track timeline: per-patch label scores and an energy curve.

What the web view draws and what DJ cue points are placed by. Stored per recording as one small
blob: a JSON header (models, labels, patch start times, curve segments) and the values as bytes,
zlib-compressed.

- Label scores: one byte per patch and label (score · 255, rounded; ±0.002, far below what a view
  or a cue needs). musicnn's 50 labels over a 3 s patch: 17 bytes per second of analysed audio
  before compression.
- Energy curve: the RMS level of each second of analysed audio, one byte (0 = −60 dBFS or below,
  255 = 0 dBFS).

Measured size (``bench/bench_descriptors.py``): see docs/bench.md; about 1.2 kB for a 4-minute
track under the default profile, so 100k tracks need about 120 MB.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VERSION = 1
CURVE_FLOOR_DB = -60.0


@dataclass
class Timeline:
    """Per-patch scores per model and an energy curve in segments."""

    patch_seconds: float = 0.0
    patch_starts: list[float] = field(default_factory=list)
    scores: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)  # uint8
    curve: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (t0, uint8 per second)

    def add_scores(self, model: str, labels: list[str], per_patch: np.ndarray) -> None:
        """Keep a model's per-patch scores [n_patches, n_labels] (floats in 0…1)."""
        q = np.clip(np.rint(np.asarray(per_patch, dtype=np.float64) * 255.0), 0, 255)
        self.scores[model] = (list(labels), q.astype(np.uint8))

    def add_curve(self, t0: float, levels_db: np.ndarray) -> None:
        """Add one contiguous stretch of per-second levels in dBFS."""
        q = np.clip(np.rint((levels_db - CURVE_FLOOR_DB) / -CURVE_FLOOR_DB * 255.0), 0, 255)
        self.curve.append((float(t0), q.astype(np.uint8)))

    def encode(self) -> bytes:
        """The stored form."""
        head = {
            "v": VERSION,
            "patch_seconds": round(self.patch_seconds, 4),
            "patch_starts": [round(t, 3) for t in self.patch_starts],
            "models": [[m, labels, int(a.shape[0])] for m, (labels, a) in self.scores.items()],
            "curve": [[round(t, 3), int(a.size)] for t, a in self.curve],
        }
        hb = json.dumps(head, separators=(",", ":")).encode()
        body = b"".join(a.tobytes() for _, a in self.scores.values()) + b"".join(
            a.tobytes() for _, a in self.curve
        )
        return zlib.compress(len(hb).to_bytes(4, "little") + hb + body, 9)

    @classmethod
    def decode(cls, blob: bytes) -> Timeline:
        """Inverse of :meth:`encode`."""
        raw = zlib.decompress(blob)
        n = int.from_bytes(raw[:4], "little")
        head = json.loads(raw[4 : 4 + n])
        pos = 4 + n
        tl = cls(head["patch_seconds"], list(head["patch_starts"]))
        for m, labels, rows in head["models"]:
            size = rows * len(labels)
            a = np.frombuffer(raw[pos : pos + size], dtype=np.uint8).reshape(rows, len(labels))
            tl.scores[m] = (labels, a.copy())
            pos += size
        for t0, size in head["curve"]:
            tl.curve.append((t0, np.frombuffer(raw[pos : pos + size], dtype=np.uint8).copy()))
            pos += size
        return tl

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API: scores back in 0…1 (3 decimals), curve in dBFS."""
        return {
            "patch_seconds": self.patch_seconds,
            "patch_starts": self.patch_starts,
            "scores": {
                m: {"labels": labels, "values": np.round(a / 255.0, 3).tolist()}
                for m, (labels, a) in self.scores.items()
            },
            "energy_curve": [
                {
                    "start": t0,
                    "step": 1.0,
                    "dbfs": np.round(a / 255.0 * -CURVE_FLOOR_DB + CURVE_FLOOR_DB, 1).tolist(),
                }
                for t0, a in self.curve
            ],
        }

    def region_means(self, start: float, end: float) -> dict[str, dict[str, float]]:
        """Per model, the mean score of the patches whose middle lies in [start, end)."""
        t = np.asarray(self.patch_starts) + self.patch_seconds / 2
        sel = (t >= start) & (t < end)
        out: dict[str, dict[str, float]] = {}
        if not sel.any():
            return out
        for m, (labels, a) in self.scores.items():
            if a.shape[0] != sel.size:
                continue
            mean = a[sel].mean(axis=0) / 255.0
            out[m] = {lab: float(v) for lab, v in zip(labels, mean, strict=True)}
        return out
