#!/usr/bin/env python3
"""Simulating a public hub of shared analyses (the numbers behind docs/scale.md).

1. **Storage and lookup**: N synthetic records go through the agent's own code (the store's shared
   pool: ``put_shared``, ``shared_candidates``, then the bit-error-rate check that ``adopt`` does)
   into a real SQLite file. Fingerprints are 120 s of chromaprint-sized random values, with 5 % of
   items drawn from a small vocabulary of common values (real fingerprints repeat values in silence
   and steady passages; that is what makes index keys collide). Queries are stored recordings
   re-encoded (5 % of bits flipped, start shifted by up to 2 items) and unknown audio. Printed:
   bytes per recording in the database and in a gzip bundle, import rate, lookup p50/p99 for hits
   and misses, recall and false matches.
2. **Consensus**: R recordings with S submissions each, of which a share comes from adversaries
   (random scores); honest submissions differ by float noise (another provider or thread count).
   Printed: the worst label error of the mean and of the median, and how often a "3 distinct
   signers agree within 0.01" rule accepts a poisoned value.

    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/sim_hub.py                 # 100k records
    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/sim_hub.py --records 20000 # ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "agent"))

ITEMS = 968  # 120 s of chromaprint items
COMMON = 4096  # vocabulary of frequent values
LABELS = 50
DIM = 200


def fingerprint(rng: np.random.Generator, common: np.ndarray) -> np.ndarray:
    v = rng.integers(0, 1 << 32, ITEMS, dtype=np.uint64).astype(np.uint32)
    pick = rng.random(ITEMS) < 0.05
    v[pick] = common[rng.integers(0, COMMON, int(pick.sum()))]
    return v


def reencode(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """5 % of bits flipped, start shifted by 0-2 items (what a lossy re-encode does)."""
    bits = np.unpackbits(v.view(np.uint8))
    flip = rng.random(bits.size) < 0.05
    out = np.packbits(bits ^ flip).view(np.uint32)
    s = int(rng.integers(0, 3))
    return out[s:].copy()


def analyses(rng: np.random.Generator) -> list[dict]:
    from nomarr.share.bundle import b64_array

    return [
        {
            "model_id": "msd-musicnn-1",
            "prefix": "nom:onnx_musicnn_msd-1_msd50_1_",
            "provenance": "b05e5c45cc19",
            "profile": "balanced",
            "windows": [{"start": 10.0, "duration": 90.0}],
            "n_patches": 30,
            "provider": "CPUExecutionProvider",
            "scores": {f"label{i}": round(float(x), 6) for i, x in enumerate(rng.random(LABELS))},
            "embedding": b64_array(rng.normal(0, 1, DIM).astype(np.float32), "<f4"),
        }
    ]


def storage_and_lookup(n: int, queries: int, seed: int) -> None:
    from nomarr.fingerprint import MATCH_MAX_BER, Fingerprint, bit_error_rate
    from nomarr.share.bundle import BundleWriter, load_or_create_key
    from nomarr.share.validate import FP_ALG
    from nomarr.store import Store

    rng = np.random.default_rng(seed)
    common = rng.integers(0, 1 << 32, COMMON, dtype=np.uint64).astype(np.uint32)
    tmp = Path(tempfile.mkdtemp(prefix="nomarr-sim-hub-"))
    db = tmp / "hub.db"
    st = Store(db)
    keep: dict[int, np.ndarray] = {}
    sample_ids = set(rng.choice(n, size=min(queries, n), replace=False).tolist())
    t0 = time.perf_counter()
    st.db.execute("BEGIN")
    imp = st.begin_import("sim", "sim", None, None)
    for i in range(n):
        fp = fingerprint(rng, common)
        st.put_shared(
            imp,
            f"{i:064x}",
            120.0,
            fp,
            Fingerprint(120.0, fp).keys(),
            240.0,
            "sim",
            analyses(rng),
        )
        if i in sample_ids:
            keep[i + 1] = fp
        if i % 20000 == 19999:
            st.db.execute("COMMIT")
            st.db.execute("BEGIN")
    st.db.execute("COMMIT")
    t_import = time.perf_counter() - t0
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db_bytes = os.path.getsize(db)

    def lookup(fp: np.ndarray) -> tuple[int | None, float]:
        t = time.perf_counter()
        q = Fingerprint(120.0, fp)
        hit = None
        for rid in st.shared_candidates(q.keys()):
            r = st.shared_record(rid)
            if r is not None and bit_error_rate(fp, r.fingerprint) <= MATCH_MAX_BER:
                hit = rid
                break
        return hit, time.perf_counter() - t

    pos = [(rid, lookup(reencode(rng, fp))) for rid, fp in keep.items()]
    neg = [lookup(fingerprint(rng, common)) for _ in range(queries)]
    recall = sum(1 for rid, (hit, _) in pos if hit == rid) / len(pos)
    wrong = sum(1 for rid, (hit, _) in pos if hit not in (None, rid))
    false = sum(1 for hit, _ in neg if hit is not None)
    tp = np.array([t for _, (_, t) in pos]) * 1000
    tn = np.array([t for _, t in neg]) * 1000
    # bundle bytes: 2000 records through the real writer
    key = load_or_create_key(tmp / "key.pem")
    from nomarr.share.bundle import b64_array

    w = BundleWriter(tmp / "b.jsonl.gz", key, {"bundle": "sim"})
    for _ in range(2000):
        fp = fingerprint(rng, common)
        w.add(
            {
                "fingerprint": {"alg": FP_ALG, "duration": 120.0, "values": b64_array(fp, "<u4")},
                "duration": 240.0,
                "ids": {},
                "analyses": analyses(rng),
                "descriptors": {},
            }
        )
    w.close()
    bundle_bytes = (tmp / "b.jsonl.gz").stat().st_size / 2000
    keys = st.db.execute("SELECT count(*) FROM shared_fp_index").fetchone()[0] / n
    st.close()
    print(f"1. storage and lookup: {n} records (1 model: 50 scores, 200-d embedding), SQLite")
    print(
        f"   import: {n / t_import:,.0f} records/s ({t_import:.1f} s); index keys/record {keys:.1f}"
    )
    print(
        f"   bytes/recording: database {db_bytes / n:,.0f}, gzip bundle {bundle_bytes:,.0f} "
        f"(fingerprint alone {ITEMS * 4:,} raw)"
    )
    print(
        f"   lookup of a re-encode (hit):   p50 {np.percentile(tp, 50):.2f} ms  p99 "
        f"{np.percentile(tp, 99):.2f} ms  recall {recall:.3f}  wrong record {wrong}"
    )
    print(
        f"   lookup of unknown audio (miss): p50 {np.percentile(tn, 50):.2f} ms  p99 "
        f"{np.percentile(tn, 99):.2f} ms  false matches {false}/{queries}"
    )
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


def consensus(recordings: int, subs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random((recordings, LABELS))
    print(f"2. consensus: {recordings} recordings x {subs} submissions, {LABELS} labels")
    for bad in (0.1, 0.3, 0.5):
        honest = truth[:, None, :] + rng.normal(0, 2e-4, (recordings, subs, LABELS))
        adv = rng.random((recordings, subs)) < bad
        sub = np.where(adv[:, :, None], rng.random((recordings, subs, LABELS)), honest)
        mean_err = np.abs(sub.mean(axis=1) - truth).max(axis=1)
        med_err = np.abs(np.median(sub, axis=1) - truth).max(axis=1)
        # accept the median only when >= 3 distinct submissions agree with it within 0.01 on
        # every label; else keep nothing (recompute locally)
        med = np.median(sub, axis=1)
        agree = (np.abs(sub - med[:, None, :]) <= 0.01).all(axis=2).sum(axis=1) >= 3
        poisoned = agree & (med_err > 0.01)
        print(
            f"   {bad:.0%} adversarial: worst label error p90: mean {np.percentile(mean_err, 90):.3f}, "
            f"median-of-submissions {np.percentile(med_err, 90):.4f}; rule accepts "
            f"{agree.mean():.1%} of recordings, poisoned accepted {poisoned.mean():.2%}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    storage_and_lookup(a.records, a.queries, a.seed)
    consensus(20_000, 5, a.seed)
    print(json.dumps({"records": a.records, "queries": a.queries, "seed": a.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
