"""Synthetic libraries and listening histories with planted tastes, for the taste tests and
``bench/bench_taste.py``.

A library is ``kinds`` clumps of recordings. The vectors look like musicnn's: non-negative
activations sharing a large common component (so raw cosines between any two tracks are high, as
in the real space) plus a per-kind direction and per-track noise. Each kind also has its own
mood-label profile, so trends have moods to follow.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

MODEL = "msd-musicnn-1"
PREFIX = "nom:onnx_musicnn_msd-1_msd50_1_"
MOODS = ["happy", "sad", "party", "chill", "mellow", "aggressive", "beautiful", "catchy"]


@dataclass
class Library:
    """What was built: recording ids (== track ids) and the kind of each."""

    ids: np.ndarray
    kind: np.ndarray
    kinds: int

    def of_kind(self, k: int) -> np.ndarray:
        """Recording ids of one kind."""
        return self.ids[self.kind == k]


def build_library(
    store: object, n: int, kinds: int = 8, dim: int = 200, seed: int = 0, spread: float = 0.55
) -> Library:
    """Insert ``n`` tracks (one recording each), scores and ``dim``-d vectors into ``store``."""
    rng = np.random.default_rng(seed)
    now = time.time()
    common = np.abs(rng.standard_normal(dim)).astype(np.float32) * 2.0
    dirs = np.abs(rng.standard_normal((kinds, dim))).astype(np.float32)
    dirs *= rng.random((kinds, dim)) < 0.3  # each kind lights up its own subset of units
    mood_profile = rng.dirichlet(np.full(len(MOODS), 0.4), size=kinds)
    kind = np.arange(n) % kinds
    rng.shuffle(kind)
    ids = np.arange(1, n + 1)
    st = store
    with st.tx() as db:  # type: ignore[attr-defined]
        st.ensure_space(MODEL, dim)  # type: ignore[attr-defined]
        for start in range(0, n, 5000):
            sl = slice(start, min(n, start + 5000))
            chunk = ids[sl]
            db.executemany(
                "INSERT INTO recordings (id, fp_duration, created) VALUES (?, ?, ?)",
                ((int(i), 200.0, now) for i in chunk),
            )
            db.executemany(
                "INSERT INTO tracks (id, path, size, mtime_ns, duration, container, codec, "
                "recording_id, status, first_seen, last_seen, title, artist) VALUES "
                "(?, ?, 1, 1, ?, 'mp3', 'mp3', ?, 'ok', ?, ?, ?, ?)",
                (
                    (
                        int(i),
                        os.fsencode(f"/music/synthetic/{int(i) // 1000:03d}/{int(i):06d}.mp3"),
                        180.0 + float(i % 120),
                        int(i),
                        now,
                        now,
                        f"Song {int(i)}",
                        f"Kind{int(k)} Artist {int(i) % 37}",
                    )
                    for i, k in zip(chunk, kind[sl], strict=True)
                ),
            )
            moods = mood_profile[kind[sl]] + 0.05 * rng.random((chunk.size, len(MOODS)))
            db.executemany(
                "INSERT INTO analyses (recording_id, model_id, prefix, provenance, profile, windows, "
                "n_patches, provider, scores, created) VALUES (?, ?, ?, 'synthetic', 'balanced', "
                "'[]', 40, 'CPUExecutionProvider', ?, ?)",
                (
                    (
                        int(i),
                        MODEL,
                        PREFIX,
                        json.dumps(dict(zip(MOODS, map(float, m), strict=True))),
                        now,
                    )
                    for i, m in zip(chunk, moods, strict=True)
                ),
            )
            vec = (
                common
                + 1.2 * dirs[kind[sl]]
                + spread * np.abs(rng.standard_normal((chunk.size, dim))).astype(np.float32)
            )
            db.executemany(
                "INSERT INTO vec_msd_musicnn_1 (recording_id, embedding) VALUES (?, ?)",
                ((int(i), v.astype(np.float32).tobytes()) for i, v in zip(chunk, vec, strict=True)),
            )
    return Library(ids, kind, kinds)


def history(
    lib: Library,
    *,
    plays: dict[int, int],
    skips: dict[int, int] | None = None,
    start: float,
    days: float,
    seed: int = 1,
    source: str = "test",
) -> list[object]:
    """Listens spread uniformly over ``days`` from ``start``: ``plays[k]`` completed listens of
    random recordings of kind k, ``skips[k]`` skips."""
    from nomarr.listens.record import ListenIn

    rng = np.random.default_rng(seed)
    out: list[object] = []
    for outcome, table in (("completed", plays), ("skipped", skips or {})):
        for k, count in table.items():
            pool = lib.of_kind(k)
            recs = rng.choice(pool, size=count, replace=True)
            ts = start + rng.random(count) * days * 86400.0
            for r, t in zip(recs, ts, strict=True):
                out.append(
                    ListenIn(
                        ts=float(t),
                        source=source,
                        outcome=outcome,
                        ids={"track_id": int(r)},
                        dedup=f"{source}:{outcome}:{int(r)}:{float(t):.3f}",
                    )
                )
    return out
