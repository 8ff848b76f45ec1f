"""A listener's taste profile: where in embedding space their listening sits (docs/taste.md).

Evidence, per listen of a recording the library has a vector for, decayed with a half-life of
:data:`HALF_LIFE_DAYS` counted back from the user's newest listen:

- a completed listen weighs ``+1``, a listen of unknown length ``+0.5``, a skip ``-1``;
- a favourite (starred in Navidrome, loved on ListenBrainz) weighs ``+3`` and a hated one ``-3``,
  decayed like a listen but never below half weight (a star says more than one play).

Per recording the positive and negative weights are summed; a recording whose net weight is
positive is *liked*, negative is *disliked*. The liked recordings' centred vectors (see
:mod:`nomarr.taste.space`) are clustered by weighted spherical k-means for k = 1 … :data:`K_MAX`
(k-means++ seeding, fixed seed, :data:`KMEANS_ITER` iterations, on a weighted sample of at most
:data:`SAMPLE` recordings), k at most one per :data:`MIN_PER_CENTRE` recordings; k is the one with
the best weighted silhouette (cosine distance, on a sample of :data:`SILHOUETTE_SAMPLE`) among
k ≥ 2 when that silhouette reaches :data:`SILHOUETTE_MIN`, else 1 — mixed tastes get several
centres, one taste one. Centres carrying under :data:`MIN_SHARE` of the weight are dropped. Disliked recordings get
the same treatment with at most :data:`K_MAX_NEG` centres.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nomarr.store import ListenArrays, Store
from nomarr.taste.space import Space

HALF_LIFE_DAYS = 90.0
W_COMPLETED = 1.0
W_PLAYED = 0.5
W_SKIPPED = -1.0
W_FAVOURITE = 3.0
FAVOURITE_FLOOR = 0.5
K_MAX = 4
K_MAX_NEG = 2
KMEANS_ITER = 25
SAMPLE = 3000
SILHOUETTE_SAMPLE = 800
SILHOUETTE_MIN = 0.10
MIN_SHARE = 0.05
MIN_PER_CENTRE = 5  # k is at most (recordings on that side) / 5: no centre of one track
REPRESENTATIVES = 400  # liked recordings kept to explain recommendations ("because you played")


@dataclass
class Evidence:
    """Per recording (with a vector): weights and counts behind the profile and the modes."""

    recs: np.ndarray  # int64 recording ids
    rows: np.ndarray  # int64 rows in the space
    pos: np.ndarray  # decayed positive weight
    neg: np.ndarray  # decayed negative weight (>= 0)
    plays: np.ndarray  # undecayed non-skip listens
    skips: np.ndarray  # undecayed skips
    last: np.ndarray  # newest listen time (0 if only a favourite)
    favourite: np.ndarray  # -1, 0, +1

    @property
    def net(self) -> np.ndarray:
        """Positive minus negative weight."""
        return self.pos - self.neg


@dataclass
class Centre:
    """One cluster of the taste (or of what is skipped)."""

    vector: np.ndarray  # unit, centred space
    share: float  # of the side's total weight
    recordings: int
    top: list[int] = field(default_factory=list)  # heaviest recordings nearest to it


@dataclass
class Profile:
    """A user's taste in one embedding space."""

    user: str
    model: str
    version: str
    computed: float
    ref_ts: float
    centres: list[Centre]
    negatives: list[Centre]
    evidence: Evidence
    silhouettes: dict[int, float]
    listens: int

    def summary(self) -> dict[str, Any]:
        """What ``GET /users/{user}/taste`` shows (no vectors)."""
        ev = self.evidence
        return {
            "model": self.model,
            "computed": self.computed,
            "reference_time": self.ref_ts,
            "half_life_days": HALF_LIFE_DAYS,
            "listens": self.listens,
            "recordings": int(ev.recs.size),
            "liked": int((ev.net > 0).sum()),
            "disliked": int((ev.net < 0).sum()),
            "k": len(self.centres),
            "silhouettes": {str(k): round(v, 4) for k, v in sorted(self.silhouettes.items())},
            "centres": [
                {"share": round(c.share, 4), "recordings": c.recordings, "top": c.top}
                for c in self.centres
            ],
            "negatives": [
                {"share": round(c.share, 4), "recordings": c.recordings, "top": c.top}
                for c in self.negatives
            ],
        }

    def to_bytes(self) -> bytes:
        """Serialised for the ``taste_profiles`` table."""
        ev = self.evidence
        meta = {
            "user": self.user,
            "model": self.model,
            "version": self.version,
            "computed": self.computed,
            "ref_ts": self.ref_ts,
            "silhouettes": self.silhouettes,
            "listens": self.listens,
            "centres": [(c.share, c.recordings, c.top) for c in self.centres],
            "negatives": [(c.share, c.recordings, c.top) for c in self.negatives],
        }
        buf = io.BytesIO()
        np.savez(
            buf,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            cv=_stack([c.vector for c in self.centres]),
            nv=_stack([c.vector for c in self.negatives]),
            **{f"ev_{k}": getattr(ev, k) for k in Evidence.__dataclass_fields__},
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Profile:
        """Inverse of :meth:`to_bytes`."""
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        meta = json.loads(bytes(z["meta"]).decode())
        ev = Evidence(**{k: z[f"ev_{k}"] for k in Evidence.__dataclass_fields__})
        cv, nv = z["cv"], z["nv"]
        return cls(
            user=meta["user"],
            model=meta["model"],
            version=meta["version"],
            computed=meta["computed"],
            ref_ts=meta["ref_ts"],
            centres=[Centre(cv[i], s, n, t) for i, (s, n, t) in enumerate(meta["centres"])],
            negatives=[Centre(nv[i], s, n, t) for i, (s, n, t) in enumerate(meta["negatives"])],
            evidence=ev,
            silhouettes={int(k): v for k, v in meta["silhouettes"].items()},
            listens=int(meta["listens"]),
        )


def _stack(vs: list[np.ndarray]) -> np.ndarray:
    return np.stack(vs).astype(np.float32) if vs else np.zeros((0, 0), dtype=np.float32)


def decay(age_s: np.ndarray, half_life_days: float = HALF_LIFE_DAYS) -> np.ndarray:
    """``0.5 ** (age / half-life)``; ages below zero (listens after the reference) count fully."""
    return np.power(0.5, np.maximum(age_s, 0.0) / (half_life_days * 86400.0))


def gather_evidence(
    arr: ListenArrays, favourites: list[tuple[int, int, float]], space: Space, ref_ts: float
) -> Evidence:
    """Sum each recording's decayed evidence (see the module docstring)."""
    fav_recs = np.asarray([f[0] for f in favourites], dtype=np.int64)
    all_recs = np.concatenate([arr.recording, fav_recs])
    if all_recs.size == 0:
        z = np.zeros(0)
        return Evidence(np.zeros(0, np.int64), np.zeros(0, np.int64), z, z, z, z, z, z)
    recs, inv = np.unique(all_recs, return_inverse=True)
    n = recs.size
    li = inv[: arr.recording.size]
    fi = inv[arr.recording.size :]
    d = decay(ref_ts - arr.ts)
    w = np.where(arr.outcome > 0, W_COMPLETED, np.where(arr.outcome == 0, W_PLAYED, W_SKIPPED)) * d
    pos = np.bincount(li, weights=np.maximum(w, 0.0), minlength=n)
    neg = np.bincount(li, weights=np.maximum(-w, 0.0), minlength=n)
    plays = np.bincount(li, weights=(arr.outcome >= 0).astype(float), minlength=n)
    skips = np.bincount(li, weights=(arr.outcome < 0).astype(float), minlength=n)
    last = np.zeros(n)
    if li.size:  # listens come oldest first: each recording's last occurrence is its newest
        rev_first = np.unique(li[::-1], return_index=True)[1]
        last[li[::-1][rev_first]] = arr.ts[::-1][rev_first]
    fav = np.zeros(n)
    if favourites:
        score = np.asarray([f[1] for f in favourites], dtype=float)
        since = np.asarray([f[2] for f in favourites], dtype=float)
        fw = W_FAVOURITE * np.maximum(decay(ref_ts - since), FAVOURITE_FLOOR)
        np.add.at(pos, fi, np.where(score > 0, fw, 0.0))
        np.add.at(neg, fi, np.where(score < 0, fw, 0.0))
        np.add.at(fav, fi, np.sign(score))
    rows = space.rows(recs)
    keep = rows >= 0
    return Evidence(
        recs[keep],
        rows[keep],
        pos[keep],
        neg[keep],
        plays[keep],
        skips[keep],
        last[keep],
        np.clip(fav[keep], -1, 1),
    )


def _weighted_sample(
    n: int, w: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and multiplicities: everything when small, else a with-replacement draw
    proportional to ``w`` (unbiased for weighted means: each draw counts once)."""
    if n <= size:
        return np.arange(n), w
    idx = rng.choice(n, size=size, replace=True, p=w / w.sum())
    u, c = np.unique(idx, return_counts=True)
    return u, c.astype(float)


def spherical_kmeans(
    x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator, iters: int = KMEANS_ITER
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means on the unit sphere (cosine): (centres [k, d], labels [n])."""
    n = x.shape[0]
    k = min(k, n)
    first = int(rng.choice(n, p=w / w.sum()))
    centres = [x[first]]
    best = np.einsum("nd,d->n", x, x[first])
    for _ in range(1, k):  # k-means++: far from the chosen centres, weighted
        d2 = np.maximum(1.0 - best, 0.0) * w
        if d2.sum() <= 0:
            break
        j = int(rng.choice(n, p=d2 / d2.sum()))
        centres.append(x[j])
        best = np.maximum(best, np.einsum("nd,d->n", x, x[j]))
    c = np.stack(centres)
    labels = np.zeros(n, dtype=np.int64)
    xw = x * w[:, None]
    # einsum, not BLAS: these products are small, and a threaded BLAS call on a busy little
    # box costs ~10 ms of thread hand-off against ~0.5 ms of arithmetic
    for it in range(iters):
        new = np.argmax(np.einsum("nd,kd->nk", x, c), axis=1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        sums = np.stack(
            [xw[labels == j].sum(axis=0) if (labels == j).any() else c[j] for j in range(len(c))]
        )
        nrm = np.linalg.norm(sums, axis=1, keepdims=True)
        c = np.where(nrm > 1e-9, sums / np.maximum(nrm, 1e-12), c)
    return c.astype(np.float32), labels


def weighted_silhouette(x: np.ndarray, w: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (cosine distance), each point weighted by ``w``."""
    ks = np.unique(labels)
    if ks.size < 2:
        return -1.0
    d = 1.0 - x @ x.T
    per = np.zeros((x.shape[0], ks.size))
    for i, k in enumerate(ks):
        m = labels == k
        per[:, i] = (d[:, m] * w[m]).sum(axis=1) / max(w[m].sum(), 1e-12)
    own = np.searchsorted(ks, labels)
    idx = np.arange(x.shape[0])
    a = per[idx, own]
    per[idx, own] = np.inf
    b = per.min(axis=1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    sizes = np.bincount(own, minlength=ks.size)
    s = np.where(sizes[own] > 1, s, 0.0)  # a point alone in its cluster scores 0 (Rousseeuw)
    return float((s * w).sum() / w.sum())


def cluster(
    space: Space, rows: np.ndarray, weights: np.ndarray, k_max: int, seed: int = 0
) -> tuple[list[Centre], dict[int, float], np.ndarray]:
    """Centres for one side of the evidence, k chosen by silhouette; (centres, silhouette per k,
    the centres' order of recordings for ``top``)."""
    if rows.size == 0 or weights.sum() <= 0:
        return [], {}, np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    idx, mult = _weighted_sample(rows.size, weights, SAMPLE, rng)
    x = space.centred(rows[idx])
    w = weights[idx] if mult is weights else mult
    sil_idx, sil_w = _weighted_sample(idx.size, w, SILHOUETTE_SAMPLE, rng)
    sil_x = x[sil_idx]
    fits: dict[int, np.ndarray] = {}
    sils: dict[int, float] = {}
    for k in range(1, max(1, min(k_max, rows.size // MIN_PER_CENTRE, idx.size)) + 1):
        c, _ = spherical_kmeans(x, w, k, rng)
        fits[k] = c
        if k >= 2:
            lab = np.argmax(np.einsum("nd,kd->nk", sil_x, c), axis=1)
            sils[k] = weighted_silhouette(sil_x, sil_w, lab)
    k = 1
    if sils:
        kb = max(sils, key=lambda j: (sils[j], -j))
        if sils[kb] >= SILHOUETTE_MIN:
            k = kb
    c = fits[k]
    # shares over every recording of this side, not just the sample
    allx = space.centred(rows)
    lab = np.argmax(np.einsum("nd,kd->nk", allx, c), axis=1)
    share = np.bincount(lab, weights=weights, minlength=c.shape[0]) / weights.sum()
    keep = share >= MIN_SHARE
    if not keep.all():
        c = c[keep]
        lab = np.argmax(np.einsum("nd,kd->nk", allx, c), axis=1)
        share = np.bincount(lab, weights=weights, minlength=c.shape[0]) / weights.sum()
    centres = []
    for j in np.argsort(-share, kind="stable"):  # heaviest centre first
        m = np.flatnonzero(lab == j)
        order = m[np.argsort(-weights[m], kind="stable")][:5]
        centres.append(Centre(c[j], float(share[j]), int(m.size), [int(r) for r in order]))
    return centres, sils, lab


def build_profile(
    store: Store,
    space: Space,
    user: str,
    version: str,
    now: float | None = None,
    arrays: ListenArrays | None = None,
) -> Profile:
    """Compute a user's profile from the stored evidence (see the module docstring)."""
    arr = arrays if arrays is not None else store.listen_arrays(user)
    favs = store.favourite_scores(user)
    newest = float(arr.ts.max()) if arr.ts.size else 0.0
    if favs:
        newest = max(newest, max(f[2] for f in favs))
    now = time.time() if now is None else now
    ref = min(newest, now) if newest else now
    ev = gather_evidence(arr, favs, space, ref)
    net = ev.net
    like, dislike = np.flatnonzero(net > 0), np.flatnonzero(net < 0)
    centres, sils, _ = cluster(space, ev.rows[like], net[like], K_MAX)
    negatives, _, _ = cluster(space, ev.rows[dislike], -net[dislike], K_MAX_NEG, seed=1)
    for c in centres:  # top recordings as recording ids, not positions
        c.top = [int(ev.recs[like][i]) for i in c.top]
    for c in negatives:
        c.top = [int(ev.recs[dislike][i]) for i in c.top]
    return Profile(
        user=user,
        model=space.model,
        version=version,
        computed=time.time(),
        ref_ts=ref,
        centres=centres,
        negatives=negatives,
        evidence=ev,
        silhouettes=sils,
        listens=int(arr.ts.size),
    )
