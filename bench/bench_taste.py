"""Benchmark listening features on a real ``nomarr serve``: a user with 100k listens over a 100k-track
library, and streamed ingest.

Figures, each printed against its target as a ratio (target / measured: above 1 is met):

1. **profile update** (target 1 s): one new listen arrives, then ``GET /users/{u}/taste`` — the
   agent re-reads the user's listens, gathers the evidence, clusters it and stores the profile.
   Median over ``--repeats`` updates (each a new listen), client-side time.
2. **"for you" p99** (target 50 ms): ``POST /users/{u}/recommendations`` (mode for_you, 25 items)
   repeated ``--requests`` times with the profile current (the answer is ranked from the
   profile's cached scores); the first answer after a profile update is timed separately
   ("cold": re-scores the whole library) and reported beside it.
3. **trends for a year** (target 200 ms): ``GET /users/{u}/trends?weeks=52``, median, with the
   listens cached, and cold (after a new listen).
4. **streamed ingest** (target ≥ 20× real time on two cores): a 4-minute track sent as 16-bit
   stereo PCM in 2 s chunks through ``POST /ingest`` … ``/end`` (chunk upload, mix-down, the
   balanced-profile analysis in the agent's worker, Chromaprint, the store), audio seconds per
   wall second, median of ``--ingests`` tracks (each new audio, so each is analysed).

The library is synthetic (tests/synth_taste.py: 200-d musicnn-like vectors in clumps, mood scores) and
cached in ``bench/.cache``; the listens are a planted history over three years.

Usage: ``python bench/bench_taste.py [--tracks 100000] [--listens 100000]`` (run it under the
heavy lock: ``flock /tmp/nomarr-heavy.lock .venv/bin/python bench/bench_taste.py``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_api import Agent  # noqa: E402

USER = "bench-listener"
TARGETS = {"profile_s": 1.0, "for_you_p99_ms": 50.0, "trends_ms": 200.0, "ingest_x": 20.0}


def build(n_tracks: int, n_listens: int, path: Path) -> Path:
    """The library and the user's listens (cached)."""
    from nomarr.listens.match import Matcher
    from nomarr.listens.record import record_listens
    from nomarr.store import Store

    from tests.synth_taste import build_library, history

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    st = Store(tmp)
    lib = build_library(st, n_tracks, kinds=16)
    start = time.time() - 3 * 365 * 86400
    per = n_listens // 4
    listens = history(
        lib, plays={0: per, 3: per, 7: per // 2}, skips={9: per // 2}, start=start, days=500
    )
    listens += history(lib, plays={5: per}, start=start + 500 * 86400, days=595, seed=2)
    record_listens(st, Matcher(), USER, listens)
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    os.replace(tmp, path)
    return path


class Client:
    def __init__(self, agent: Agent) -> None:
        self.c = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=600)
        self.h = {"Authorization": f"Bearer {agent.token}"}

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[float, Any]:
        h = dict(self.h)
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif raw is not None:
            h["Content-Type"] = "application/octet-stream"
        t0 = time.perf_counter()
        self.c.request(method, "/api/v1" + path, body=data, headers=h)
        r = self.c.getresponse()
        out = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return dt, json.loads(out)

    def new_listen(self, k: int) -> None:
        self.call(
            "POST",
            f"/users/{USER}/listens",
            {
                "source": "bench",
                "listens": [
                    {
                        "ts": time.time() - 60,
                        "track_id": 1 + (k * 7919) % 1000,
                        "id": f"b{k}-{time.time()}",
                    }
                ],
            },
        )


def ratio(target: float, got: float, lower_is_better: bool = True) -> str:
    r = target / got if lower_is_better else got / target
    return f"{r:.2f} of the target ({'met' if r >= 1 else 'MISSED'})"


def pcm_track(seconds: float, seed: int) -> bytes:
    from tests.conftest import music_like

    sig = music_like(seconds, 44100, 2, seed=seed)
    return np.clip(np.round(sig.T * 32767), -32768, 32767).astype("<i2").tobytes()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--listens", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ingests", type=int, default=3)
    ap.add_argument("--ingest-seconds", type=float, default=240.0)
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    db = build(args.tracks, args.listens, CACHE / f"taste-{args.tracks}-{args.listens}.db")
    print(
        f"library: {args.tracks} tracks, {args.listens} listens (ready in {time.perf_counter() - t0:.1f} s)"
    )
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nomarr-bench-taste-") as tmpd:
        work = Path(tmpd)
        run_db = work / "db.sqlite"
        shutil.copy(db, run_db)
        a = Agent(
            run_db,
            [],
            work,
            NOMARR_SCAN_ON_START="false",
            NOMARR_WORKERS="2",
            NOMARR_CPU_SHARE="1.0",
        )
        try:
            c = Client(a)
            c.call("POST", f"/users/{USER}/recommendations", {"limit": 25})  # vector copy, profile
            # 1. profile update
            times = []
            for k in range(args.repeats):
                c.new_listen(k)
                dt, prof = c.call("GET", f"/users/{USER}/taste")
                times.append(dt)
            res["profile_s"] = statistics.median(times)
            print(
                f"\nprofile update ({prof['listens']} listens, {prof['recordings']} recordings, k={prof['k']}): "
                f"median {res['profile_s'] * 1e3:.0f} ms (max {max(times) * 1e3:.0f}); target ≤ 1 s: "
                f"{ratio(TARGETS['profile_s'], res['profile_s'])}"
            )
            # 2. "for you"
            cold = []
            for k in range(args.repeats):
                c.new_listen(100 + k)
                cold.append(c.call("POST", f"/users/{USER}/recommendations", {"limit": 25})[0])
            warm = [
                c.call("POST", f"/users/{USER}/recommendations", {"limit": 25})[0]
                for _ in range(args.requests)
            ]
            p99 = float(np.percentile(warm, 99)) * 1e3
            res["for_you_p99_ms"] = p99
            res["for_you_cold_ms"] = statistics.median(cold) * 1e3
            print(
                f'"for you" (25 items), profile current: p50 {np.percentile(warm, 50) * 1e3:.1f} ms, '
                f"p99 {p99:.1f} ms over {len(warm)}; target p99 ≤ 50 ms: {ratio(TARGETS['for_you_p99_ms'], p99)}"
            )
            print(
                f"  first answer after a new listen (profile rebuilt, library re-scored): median "
                f"{res['for_you_cold_ms']:.0f} ms"
            )
            # 3. trends (the very first call also builds the agent's in-memory label scores)
            tfirst = c.call("GET", f"/users/{USER}/trends?weeks=52")[0]
            c.new_listen(999)
            tcold = c.call("GET", f"/users/{USER}/trends?weeks=52")[0]
            tw = [
                c.call("GET", f"/users/{USER}/trends?weeks=52")[0] for _ in range(args.repeats * 3)
            ]
            res["trends_ms"] = statistics.median(tw) * 1e3
            res["trends_cold_ms"] = tcold * 1e3
            res["trends_first_ms"] = tfirst * 1e3
            print(
                f"trends for a year (52 weeks): median {res['trends_ms']:.0f} ms, first after a new "
                f"listen {tcold * 1e3:.0f} ms; target ≤ 200 ms: {ratio(TARGETS['trends_ms'], res['trends_ms'])}"
            )
            print(
                f"  the agent's first trends answer (builds its label-score copy): {tfirst * 1e3:.0f} ms"
            )
            # 4. streamed ingest (one short untimed stream first: the worker loads its models)
            speeds = []
            for i in range(-1, args.ingests):
                secs = 20.0 if i < 0 else args.ingest_seconds
                pcm = pcm_track(secs, seed=100 + i)
                t1 = time.perf_counter()
                _, s = c.call(
                    "POST",
                    "/ingest",
                    {
                        "identity": {
                            "provider": "bench",
                            "provider_id": f"bench://{i}-{time.time()}",
                        },
                        "format": {"encoding": "s16le", "sample_rate": 44100, "channels": 2},
                    },
                )
                step = 44100 * 4 * 2
                for k, off in enumerate(range(0, len(pcm), step)):
                    c.call("POST", f"/ingest/{s['id']}/chunks?seq={k}", raw=pcm[off : off + step])
                _, done = c.call("POST", f"/ingest/{s['id']}/end")
                wall = time.perf_counter() - t1
                assert done["analysed"], done
                if i < 0:
                    continue
                speeds.append(args.ingest_seconds / wall)
                print(
                    f"  ingest {i + 1}: {args.ingest_seconds:.0f} s of audio in {wall:.2f} s ({speeds[-1]:.1f}x real time)"
                )
            if not speeds:
                return 0
            res["ingest_x"] = statistics.median(speeds)
            print(
                f"streamed ingest (16-bit stereo 44.1 kHz, 2 s chunks, balanced profile, 2 worker cores): "
                f"median {res['ingest_x']:.1f}x real time; target ≥ 20x: "
                f"{ratio(TARGETS['ingest_x'], res['ingest_x'], lower_is_better=False)}"
            )
        finally:
            a.stop()
    (CACHE / "bench_taste.json").write_text(json.dumps(res, indent=1))
    print(f"\nraw results: {CACHE / 'bench_taste.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
