#!/usr/bin/env python3
"""Remote analysis vs local, in one run: the per-track overhead of sending work to a Dask worker,
and throughput with the agent's own workers off and two remote workers on.

Three scans of the same library (corpus tracks, ``--no-write``, fresh database each):

  local-1   ``nomarr scan --workers 1``                 one local analysis process
  remote-1  ``--workers 0 --scheduler`` + 1 worker      the same work on one ``nomarr worker``
  remote-2  ``--workers 0 --scheduler`` + 2 workers     two remote workers, none local
  local-2   ``nomarr scan --workers 2``                 the local reference for remote-2

Each worker and local process uses one inference thread, so remote-1 vs local-1 compares one core
with one core: the ratio is the cost of the scheduler round trips, TLS, and (the workers see no
mount here) the file bytes sent. Scheduler and workers run on this machine over TLS on loopback:
on a 2-core box remote-2 and local-2 share the same two cores as the agent, so remote-2 vs local-2
shows the plumbing's cost at full load, not the speed-up a second machine brings. Medians of
``--repeat`` runs; time is the scan's own ``process`` phase (walk and calibration excluded).

    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/bench_remote.py            # 12 tracks
    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/bench_remote.py --quick    # 6 tracks
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("NOMARR_CORPUS", ROOT.parent / "shared" / "corpus"))
NOMARR = str(Path(sys.executable).with_name("nomarr"))


def env(base: Path, name: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        NOMARR_CONFIG_DIR=str(base / name / "cfg"),
        NOMARR_DATA_DIR=str(base / name / "data"),
        XDG_CACHE_HOME=str(base / name / "cache"),
        PYTHONPATH=str(ROOT),
    )
    return e


def start(base: Path, label: str, args: list[str], wait: str) -> tuple[subprocess.Popen, str]:
    log = base / f"{label}.log"
    p = subprocess.Popen(
        [NOMARR, "--log-level", "info", *args],
        env=env(base, label),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 90
    while True:
        m = re.search(wait, log.read_text(errors="replace"))
        if m:
            return p, (m.group(1) if m.groups() else "")
        if p.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{label} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def scan(base: Path, lib: Path, extra: list[str]) -> dict[str, Any]:
    db = base / f"scan-{time.monotonic_ns()}.db"
    res = subprocess.run(
        [NOMARR, "scan", str(lib), "--db", str(db), "--no-write", "--json", *extra],
        env=env(base, "agent"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    doc = json.loads(res.stdout)
    assert doc["analysed"] == doc["files"] and doc["failed"] == 0, doc["failures"]
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 tracks, 1 repeat")
    ap.add_argument("--tracks", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    n, rep = (6, 1) if a.quick else (a.tracks, a.repeat)
    files = sorted(CORPUS.glob("*.ogg"))[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} tracks in {CORPUS}")
    base = Path(tempfile.mkdtemp(prefix="nomarr-bench-remote-"))
    procs: list[subprocess.Popen] = []
    try:
        lib = base / "lib"
        lib.mkdir()
        for f in files:
            shutil.copy(f, lib / f.name)
        sec = base / "secrets"
        subprocess.run(
            [NOMARR, "worker", "--init-secrets", "--secrets", str(sec)],
            env=env(base, "init"),
            check=True,
            capture_output=True,
        )
        sched, addr = start(
            base,
            "sched",
            ["scheduler", "--listen", "tls://127.0.0.1:0", "--secrets", str(sec)],
            r"listening at (tls://\S+)",
        )
        procs.append(sched)
        remote = ["--workers", "0", "--scheduler", addr, "--secrets", str(sec)]
        results: dict[str, list[dict[str, Any]]] = {}
        for k in ("local-1", "local-2"):
            results[k] = []
        results["remote-1"], results["remote-2"] = [], []
        wargs = ["worker", addr, "--secrets", str(sec), "--threads", "1"]
        w1, _ = start(base, "w1", [*wargs, "--name", "w1"], "ready at")
        procs.append(w1)
        for _ in range(rep):
            results["local-1"].append(scan(base, lib, ["--workers", "1"]))
            results["remote-1"].append(scan(base, lib, remote))
        w2, _ = start(base, "w2", [*wargs, "--name", "w2"], "ready at")
        procs.append(w2)
        for _ in range(rep):
            results["local-2"].append(scan(base, lib, ["--workers", "2"]))
            results["remote-2"].append(scan(base, lib, remote))
        audio = results["local-1"][0]["audio_seconds"]
        print(f"{n} corpus tracks ({audio:.0f} s of audio), profile balanced, {rep} run(s) each")
        med = {}
        for k, docs in results.items():
            t = statistics.median(d["time"]["process"] for d in docs)
            med[k] = t
            who = {}
            for d in docs:
                for w in (d.get("remote") or {}).get("files", {}).values():
                    who[w] = who.get(w, 0) + 1
            sent = max((d.get("remote") or {}).get("bytes_sent", 0) for d in docs)
            print(
                f"  {k:9s} {t:7.2f} s  {t / n * 1000:7.0f} ms/track  {n / t * 60:6.1f} tracks/min"
                + (f"  analysed by {who}, {sent / 1e6:.1f} MB sent" if who else "")
            )
        over = med["remote-1"] / med["local-1"] - 1
        print(
            f"per-track overhead, remote-1 vs local-1 (one worker each, bytes sent): "
            f"{over * 100:+.1f} % (target <= 5 %: {'met' if over <= 0.05 else 'missed'})"
        )
        print(
            f"throughput, remote-2 (agent's workers off) vs local-2: "
            f"{med['local-2'] / med['remote-2']:.2f}x (same 2 cores: plumbing cost, not a speed-up)"
        )
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
