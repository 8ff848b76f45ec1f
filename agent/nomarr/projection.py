"""A 2-D map of an embedding space for the web console (``GET /map``).

Method: **PCA of the L2-normalised embeddings** (the same cosine geometry every similarity answer
uses), the two leading principal axes, scaled so the 1st–99th percentiles fill ``[-1, 1]``.
Why PCA rather than t-SNE or UMAP:

- it runs anywhere the agent runs: one ``dim × dim`` covariance and an eigendecomposition, about
  0.1 s for 100k × 200-d vectors on a laptop core and a few seconds on a Raspberry Pi, with numpy
  alone (UMAP needs numba/llvmlite, which the agent must not pull in; t-SNE takes minutes at 100k
  on a Pi and a native extension);
- it is deterministic and stable: a rescan that adds a hundred tracks moves nobody else, so an
  operator's mental map of "where the calm stuff is" survives; a non-linear embedding is
  recomputed from scratch and lands differently each time;
- its axes mean something (the directions along which the library varies most), and the share of
  variance they explain is reported with the map, so a map that explains little says so.

Its cost is that clusters overlap more than in a neighbour-preserving embedding; colouring by a
label and the similarity answers make up for that. The projection is cached per space until the
database changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from nomarr.store import Store, space_name

METHOD = "pca-cosine"


@dataclass
class Projection:
    """Points of one space: recording ids, coordinates, explained variance per axis."""

    model: str
    recordings: np.ndarray
    xy: np.ndarray  # [n, 2] float32 in about [-1, 1]
    explained: list[float]


def load_vectors(st: Store, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(recording ids, L2-normalised vectors) of one space: the agent's in-memory copy when it
    has one, else read from the database."""
    idx = st.vector_index
    if idx is not None and hasattr(idx, "vectors"):
        got = idx.vectors(model)
        if got is not None:
            return got
    name = space_name(model)
    row = st.db.execute("SELECT dim FROM spaces WHERE name = ?", (name,)).fetchone()
    if row is None:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    dim = int(row[0])
    rows = st.db.execute(f"SELECT recording_id, embedding FROM {name}").fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    return ids, mat.astype(np.float32)


def project(ids: np.ndarray, mat: np.ndarray, model: str) -> Projection:
    """PCA to two axes (see the module docstring for why)."""
    n = len(ids)
    if n == 0:
        return Projection(model, ids, np.zeros((0, 2), np.float32), [])
    x = mat.astype(np.float64, copy=False)
    mean = x.mean(axis=0)
    if n < 3:
        xy = np.zeros((n, 2), np.float32)
        return Projection(model, ids, xy, [0.0, 0.0])
    cov = (x.T @ x) / n - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)  # ascending
    top = vecs[:, ::-1][:, :2]
    # a sign convention, so the same library always draws the same way round
    top *= np.sign(top[np.argmax(np.abs(top), axis=0), [0, 1]])
    xy = (x - mean) @ top
    total = float(vals.sum()) or 1.0
    explained = [round(float(v) / total, 4) for v in vals[::-1][:2]]
    for a in range(2):
        lo, hi = np.percentile(xy[:, a], [1, 99])
        mid, half = (hi + lo) / 2, max((hi - lo) / 2, 1e-9)
        xy[:, a] = np.clip((xy[:, a] - mid) / half, -1.2, 1.2)
    return Projection(model, ids, xy.astype(np.float32), explained)


class MapCache:
    """One projection per space, recomputed only when the database changed since (the serialised
    answer is cached with it: 100k points are megabytes of JSON)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            # keep the newest few: one per (space, label) an operator looks at
            if len(self._items) >= 8:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value
