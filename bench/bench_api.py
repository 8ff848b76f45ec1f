"""Benchmark ``nomarr serve``: /similar latency at scale, 50 clients during a scan, idle memory.

Every figure comes from a real ``nomarr serve`` process on this machine, talked to over TCP:

1. ``POST /similar`` latency (p50/p99 over sequential keep-alive requests for random seeds) at
   10k and 100k tracks with synthetic 200-d vectors and 50 label scores per recording. Measured
   twice in the same run: with the agent's in-memory vector index (the default) and with it off
   (sqlite-vec's ``vec0`` scan, the reference), printed as a ratio, and against the 25 ms goal.
2. 50 concurrent clients (mixed /similar, /playlists/mood, /tracks, /status) for the whole of a
   real scan of 4-minute MP3s into a 10k-track library: requests, errors, p50/p99.
3. Agent RSS (the serve process plus its worker processes) idle after start, after the scan once
   the workers were unloaded, and with the 100k index in memory.

Usage: ``python bench/bench_api.py [--sizes 10000,100000] [--requests 400] [--clients 50]``.
The synthetic databases and the MP3 library are cached in ``bench/.cache``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
sys.path.insert(0, str(REPO))

GOAL_P99_MS = 25.0
GOAL_IDLE_RSS_MB = 150.0
LABELS = [f"label_{i}" for i in range(50)]


def build_db(n: int, path: Path, dim: int = 200, seed: int = 0) -> Path:
    """A library database with ``n`` tracks, one recording each, 50 scores and one vector each."""
    from nomarr.store import Store

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        p.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    st = Store(tmp)
    now = time.time()
    # clustered vectors (like real embeddings: genres form clumps), not uniform noise
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    with st.tx() as db:
        st.ensure_space("msd-musicnn-1", dim)
        for start in range(0, n, 5000):
            ids = range(start + 1, min(n, start + 5000) + 1)
            db.executemany(
                "INSERT INTO recordings (id, fp_duration, created) VALUES (?, ?, ?)",
                ((i, 240.0, now) for i in ids),
            )
            db.executemany(
                "INSERT INTO tracks (id, path, size, mtime_ns, duration, container, codec, recording_id, status, "
                "first_seen, last_seen, title, artist) VALUES (?, ?, 1, 1, 240.0, 'mp3', 'mp3', ?, 'ok', ?, ?, ?, ?)",
                (
                    (
                        i,
                        os.fsencode(f"/music/synthetic/{i // 1000:03d}/{i:06d}.mp3"),
                        i,
                        now,
                        now,
                        f"Track {i}",
                        f"Artist {i % 997}",
                    )
                    for i in ids
                ),
            )
            scores = rng.random((len(ids), len(LABELS))).astype(np.float32) ** 3
            db.executemany(
                "INSERT INTO analyses (recording_id, model_id, prefix, provenance, profile, windows, n_patches, "
                "provider, scores, created) VALUES (?, 'msd-musicnn-1', 'nom:onnx_musicnn_msd-1_msd50_1_', "
                "'synthetic', 'balanced', '[]', 40, 'CPUExecutionProvider', ?, ?)",
                (
                    (i, json.dumps(dict(zip(LABELS, map(float, s), strict=True))), now)
                    for i, s in zip(ids, scores, strict=True)
                ),
            )
            vecs = centres[rng.integers(0, len(centres), len(ids))] + 0.6 * rng.standard_normal(
                (len(ids), dim)
            ).astype(np.float32)
            db.executemany(
                "INSERT INTO vec_msd_musicnn_1 (recording_id, embedding) VALUES (?, ?)",
                ((i, v.astype(np.float32).tobytes()) for i, v in zip(ids, vecs, strict=True)),
            )
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    os.replace(tmp, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    """``nomarr serve`` as a child process with its own config/data/cache dirs.

    It runs in its own session, so a Ctrl-C meant for the bench does not reach it behind
    :meth:`stop`'s back (the bench stops it, once, with SIGTERM); a start that fails stops it too.
    ``args`` are extra ``nomarr serve`` options.
    """

    def __init__(
        self,
        db: Path,
        libraries: list[Path],
        work: Path,
        *,
        args: Sequence[str] = (),
        **env: str,
    ) -> None:
        self.port = free_port()
        self.work = work
        e = dict(os.environ)
        e.update(
            {
                "NOMARR_CONFIG_DIR": str(work / "config"),
                "NOMARR_DATA_DIR": str(work / "data"),
                "XDG_CACHE_HOME": str(work / "cache"),
                "NOMARR_ZEROCONF": "false",
                "NOMARR_LOG_LEVEL": "warning",
            }
        )
        e.update(env)
        cmd = [
            str(REPO / ".venv" / "bin" / "nomarr"),
            "serve",
            "--db",
            str(db),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        for lib in libraries:
            cmd += ["--library", str(lib)]
        cmd += list(args)
        with open(work / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=e, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        try:
            self._wait_ready(time.monotonic() + 60)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.get("/health", auth=False)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"agent did not start; see {self.work / 'serve.log'}")
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"agent exited with {self.proc.returncode}; see {self.work / 'serve.log'}"
            )
        self.token = (self.work / "config" / "token").read_text().strip()
        while not self.get("/status")[1]["providers"] and time.monotonic() < deadline:
            time.sleep(0.2)  # let the start-up provider probe (a child process) finish first

    def get(self, path: str, auth: bool = True) -> tuple[int, Any]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(
            "GET",
            "/api/v1" + path,
            headers={"Authorization": f"Bearer {self.token}"} if auth else {},
        )
        r = c.getresponse()
        body = json.loads(r.read() or b"null")
        c.close()
        return r.status, body

    def rss_mb(self) -> tuple[float, float, int]:
        """(serve process RSS, serve + worker processes RSS, number of workers) in MB."""
        import psutil

        p = psutil.Process(self.proc.pid)
        own = p.memory_info().rss
        kids = p.children(recursive=True)
        total = own + sum(k.memory_info().rss for k in kids if k.is_running())
        return own / 2**20, total / 2**20, len(kids)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL after 60 s; a no-op once it has exited."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def latency(agent: Agent, n_tracks: int, requests: int, seed: int = 1) -> dict[str, float]:
    """Sequential keep-alive ``POST /similar`` for random seeds: p50/p99 in ms (client-side)."""
    rng = random.Random(seed)
    c = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=60)
    hdr = {"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"}
    times = []
    for i in range(requests + 20):
        body = json.dumps({"track_id": rng.randint(1, n_tracks), "limit": 10})
        t0 = time.perf_counter()
        c.request("POST", "/api/v1/similar", body=body, headers=hdr)
        r = c.getresponse()
        data = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"/similar answered {r.status}: {data[:200]!r}")
        if i >= 20:  # the first requests build the index and warm the caches
            times.append(dt * 1e3)
    c.close()
    a = np.array(times)
    return {
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "n": len(a),
    }


async def clients_during_scan(agent: Agent, n_clients: int, n_tracks: int) -> dict[str, Any]:
    """``n_clients`` concurrent clients issuing mixed requests until the agent's scan queue is done."""
    import aiohttp

    hdr = {"Authorization": f"Bearer {agent.token}"}
    base = f"http://127.0.0.1:{agent.port}/api/v1"
    stats: dict[str, Any] = {"ok": 0, "errors": 0, "by_status": {}, "times": [], "examples": []}
    finished = asyncio.Event()

    def scan_done() -> bool:
        return finished.is_set()

    async def watch_scan(session: aiohttp.ClientSession) -> None:
        while True:  # one poller (its requests are not counted), the clients only read the flag
            async with session.get(base + "/status", headers=hdr) as r:
                q = (await r.json())["queue"]
            if q["last_scan"] and not q["running"] and q["pending_paths"] == 0:
                finished.set()
                return
            await asyncio.sleep(0.5)

    async def one(session: aiohttp.ClientSession, k: int) -> None:
        rng = random.Random(k)
        while not scan_done():
            choice = rng.random()
            if choice < 0.6:
                req = ("POST", "/similar", {"track_id": rng.randint(1, n_tracks), "limit": 10})
            elif choice < 0.75:
                req = ("POST", "/playlists/mood", {"label": rng.choice(LABELS), "limit": 20})
            elif choice < 0.9:
                req = ("GET", f"/tracks?offset={rng.randint(0, n_tracks - 50)}&limit=50", None)
            else:
                req = ("GET", "/status", None)
            t0 = time.perf_counter()
            try:
                async with session.request(req[0], base + req[1], json=req[2], headers=hdr) as r:
                    await r.read()
                    status = r.status
            except Exception as e:
                status = f"{type(e).__name__}"
            stats["times"].append((time.perf_counter() - t0) * 1e3)
            stats["by_status"][str(status)] = stats["by_status"].get(str(status), 0) + 1
            if status == 200:
                stats["ok"] += 1
            else:
                stats["errors"] += 1
                if len(stats["examples"]) < 5:
                    stats["examples"].append({"request": req[:2], "status": status})

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=n_clients + 1)
    ) as s:
        await asyncio.gather(watch_scan(s), *(one(s, k) for k in range(n_clients)))
    t = np.array(stats.pop("times") or [0.0])
    stats.update(
        requests=int(len(t)), p50_ms=float(np.percentile(t, 50)), p99_ms=float(np.percentile(t, 99))
    )
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument(
        "--scan-library",
        default=str(CACHE / "library-8x240s"),
        help="folder of audio to scan during the concurrency test (bench_scan.py builds it)",
    )
    ap.add_argument("--skip-concurrency", action="store_true")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, Any] = {"latency": {}, "rss": {}}
    with tempfile.TemporaryDirectory(prefix="nomarr-bench-api-") as tmpd:
        tmp = Path(tmpd)
        for n in sizes:
            t0 = time.perf_counter()
            db = build_db(n, CACHE / f"api-{n}.db")
            print(
                f"\n{n} tracks (db {db.stat().st_size / 2**20:.0f} MB, ready in {time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
            row = {}
            for mode, env in (("index", {}), ("vec0", {"NOMARR_VECTOR_INDEX": "false"})):
                work = tmp / f"lat-{n}-{mode}"
                work.mkdir()
                run_db = work / "db.sqlite"
                shutil.copy(db, run_db)
                a = Agent(run_db, [], work, NOMARR_SCAN_ON_START="false", **env)
                try:
                    if mode == "index":
                        own, total, _ = a.rss_mb()
                        results["rss"][f"idle_{n}"] = own
                    row[mode] = latency(a, n, args.requests)
                    if mode == "index":
                        results["rss"][f"index_{n}"] = a.rss_mb()[0]
                finally:
                    a.stop()
                r = row[mode]
                print(
                    f"  /similar {mode:5s}: p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  max {r['max']:6.1f} ms  (n={r['n']})",
                    flush=True,
                )
            ratio = row["vec0"]["p99"] / row["index"]["p99"]
            print(
                f"  p99 index vs vec0: {ratio:.1f}x faster; goal p99 <= {GOAL_P99_MS} ms: "
                f"{'met' if row['index']['p99'] <= GOAL_P99_MS else 'MISSED'} ({row['index']['p99'] / GOAL_P99_MS:.2f} of the goal)"
            )
            results["latency"][n] = row

        if not args.skip_concurrency:
            src = Path(args.scan_library)
            if not src.is_dir():
                print(
                    f"\nconcurrency test skipped: {src} missing (run bench/bench_scan.py once to build it)"
                )
            else:
                work = tmp / "conc"
                work.mkdir()
                lib = work / "lib"
                shutil.copytree(src, lib)
                for f in lib.rglob("*"):
                    if f.is_file():
                        os.chmod(f, 0o644)
                n = min(sizes)
                run_db = work / "db.sqlite"
                shutil.copy(build_db(n, CACHE / f"api-{n}.db"), run_db)
                a = Agent(run_db, [lib], work, NOMARR_IDLE_UNLOAD_S="5")
                try:
                    before = a.rss_mb()[0]
                    t0 = time.perf_counter()
                    stats = asyncio.run(clients_during_scan(a, args.clients, n))
                    took = time.perf_counter() - t0
                    q = a.get("/status")[1]["queue"]
                    tot = q["totals"]
                    print(
                        f"\n{args.clients} clients during a scan of {len(list(lib.rglob('*.mp3')))} x 4-min MP3s into a {n}-track "
                        f"library ({took:.1f} s; {q['scans_completed']} scan batches: {tot.get('analysed')} analysed, "
                        f"{tot.get('failed')} failed, {tot.get('written')} tagged):"
                    )
                    print(
                        f"  {stats['requests']} requests, {stats['errors']} errors ({stats['by_status']}), "
                        f"p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms"
                    )
                    if stats["examples"]:
                        print(f"  error examples: {stats['examples']}")
                    results["concurrency"] = {**stats, "seconds": took}
                    time.sleep(12)  # idle_unload_s=5: the workers go
                    own, total, kids = a.rss_mb()
                    results["rss"]["after_scan_idle"] = own
                    print(
                        f"\nagent RSS: idle at start {before:.0f} MB; idle after the scan {own:.0f} MB "
                        f"({kids} worker processes left, {total:.0f} MB with them)"
                    )
                finally:
                    a.stop()
        rss = results["rss"]
        for n in sizes:
            print(
                f"agent RSS at {n} tracks: idle {rss[f'idle_{n}']:.0f} MB, with the vector index loaded {rss[f'index_{n}']:.0f} MB "
                f"(goal idle <= {GOAL_IDLE_RSS_MB:.0f} MB: {rss[f'idle_{n}'] / GOAL_IDLE_RSS_MB:.2f} of it)"
            )
    out = CACHE / "bench_api.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
