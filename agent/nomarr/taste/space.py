"""One embedding space as taste arithmetic needs it: every recording's unit vector, the library's
mean, and cosines measured *around that mean*.

Why centred: audio embeddings such as musicnn's are non-negative activations, so any two tracks
have a cosine of 0.7–0.95 and "near my taste" and "near what I skip" are nearly the same number for
every track. Subtracting the library's mean direction first leaves what distinguishes one track
from the rest of *this* library; a taste centre and a skip centre then pull apart. The centred
vectors are never stored: for a unit vector ``u``, mean ``m`` and a unit centre ``c`` in centred
space, ``cos(u - m, c) = (u·c - m·c) / |u - m|``, so one matrix product with the shared copy (the
agent's in-memory vector index) scores the whole library, and ``|u - m|`` is computed once per
copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nomarr.store import Store


@dataclass
class Space:
    """A space's vectors and what taste derives from them once per copy."""

    model: str
    ids: np.ndarray  # int64 recording ids, one per row of ``unit``
    unit: np.ndarray  # [n, d] float32 unit vectors (shared; never written)
    mean: np.ndarray = field(init=False)  # [d] mean unit vector
    norms: np.ndarray = field(init=False)  # [n] |u - mean|
    _sorted: np.ndarray = field(init=False, repr=False)
    _order: np.ndarray = field(init=False, repr=False)
    _map: np.ndarray | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.mean = self.unit.mean(axis=0, dtype=np.float64).astype(np.float32)
        m2 = float(self.mean @ self.mean)
        dots = self.unit @ self.mean
        self.norms = np.sqrt(np.maximum(1.0 - 2.0 * dots + m2, 1e-12)).astype(np.float32)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    @property
    def size(self) -> int:
        """Recordings in the space."""
        return int(self.ids.shape[0])

    def rows(self, recs: np.ndarray) -> np.ndarray:
        """Row of each recording id, -1 where the space has no vector for it."""
        recs = np.asarray(recs, dtype=np.int64)
        if self.size == 0 or recs.size == 0:
            return np.full(recs.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted, recs)
        pos = np.minimum(pos, self.size - 1)
        hit = self._sorted[pos] == recs
        return np.where(hit, self._order[pos], -1)

    def centred(self, rows: np.ndarray) -> np.ndarray:
        """Unit centred vectors of some rows: [len(rows), d]."""
        x = self.unit[rows].astype(np.float32) - self.mean
        return x / self.norms[rows, None]

    def cosines(self, centres: np.ndarray) -> np.ndarray:
        """Centred cosine of every recording with each unit centre: [n, k] float32."""
        c = np.asarray(centres, dtype=np.float32).reshape(-1, self.unit.shape[1])
        raw = self.unit @ c.T
        raw -= self.mean @ c.T
        raw /= self.norms[:, None]
        return raw

    def map_axes(self) -> np.ndarray:
        """Two principal directions of the centred library (the "map" trends draw the taste
        trajectory on), from a deterministic sample of at most 5000 recordings."""
        if self._map is None:
            n = self.size
            pick = np.random.default_rng(0).choice(n, min(n, 5000), replace=False) if n else []
            x = self.centred(np.sort(np.asarray(pick, dtype=np.int64)))
            if x.shape[0] < 3:
                self._map = np.eye(2, self.unit.shape[1], dtype=np.float32)
            else:
                self._map = principal_directions(x, 2)
        return self._map


def principal_directions(x: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading principal directions of the rows of ``x`` ([k, d], unit, each with its
    largest component positive so the answer is deterministic). Eigen-decomposition of the
    d × d scatter matrix: a full SVD of a tall matrix costs seconds on a busy small CPU."""
    c = np.asarray(x, dtype=np.float64)
    c = c - c.mean(axis=0)
    if c.shape[0] < c.shape[1]:  # fewer rows than dimensions (weeks): the n x n Gram matrix
        vals, vecs = np.linalg.eigh(c @ c.T)
        top = np.argsort(-vals)[:k]
        axes = (c.T @ vecs[:, top]).T
        axes /= np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)
        axes = axes.astype(np.float32)
    else:
        vals, vecs = np.linalg.eigh(c.T @ c)
        axes = vecs[:, np.argsort(-vals)[:k]].T.astype(np.float32)
    for i in range(axes.shape[0]):
        j = int(np.argmax(np.abs(axes[i])))
        if axes[i, j] < 0:
            axes[i] = -axes[i]
    return axes


_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str], Space] = {}


def load_space(store: Store, model: str) -> Space | None:
    """The space for ``model``: the agent's in-memory copy when it has one (shared, refreshed with
    the library), else read from the database. Derived data is reused while the copy is."""
    index: Any = store.vector_index
    if index is not None:
        got = index.matrix(model)
    else:
        from nomarr.vindex import load_vectors

        got = load_vectors(store, model)
    if got is None or len(got[0]) == 0:
        return None
    ids, mat = got
    key = (str(store.path), model)
    with _LOCK:
        sp = _CACHE.get(key)
        if sp is not None and sp.unit is mat and sp.ids is ids:
            return sp
    sp = Space(model, ids, mat)
    if index is not None:  # only the shared copy is worth remembering
        with _LOCK:
            _CACHE[key] = sp
    return sp
