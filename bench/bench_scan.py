#!/usr/bin/env python3
"""Benchmark ``nomarr scan`` end to end against the upstream musicnn pipeline, in one run.

What it prints (issue 3's figures):
  a. whole-pipeline throughput per profile on a library of 4-minute MP3s: tracks/min, x real time,
     the share of worker time spent outside inference, peak RSS (all nomarr processes summed,
     sampled from /proc), and the same files through upstream musicnn's ``extractor`` (TensorFlow,
     every patch, one file after another, as its README drives it) as a ratio;
  b. the 50,000-track projection (4-minute tracks) per profile against the 12 h goal;
  c. an unchanged rescan as a share of the first scan, and N new tracks added to a scanned library
     until they are tagged and queryable;
  d. agreement of each profile's top-5 tags with ``full`` on the library and on the corpus.

The library is built from ../shared/corpus: each 4-minute track is three 80 s excerpts of
different corpus tracks (distinct openings, so chromaprint sees distinct recordings). Nothing is
written outside bench/.cache and the temp folder.

    .venv/bin/python bench/bench_scan.py            # full run (~15 min on 2 cores)
    .venv/bin/python bench/bench_scan.py --quick    # smaller library, no upstream, ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# nomarr's own setting of one BLAS thread (nomarr/__init__.py) must come before numpy's import,
# or the floor's mel is timed with OpenBLAS's spinning threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CORPUS = Path(os.environ.get("NOMARR_CORPUS", ROOT.parent / "shared" / "corpus"))
# 4-minute test libraries are built once from the corpus into a scratch folder outside the repository
CACHE = Path(
    os.environ.get("NOMARR_BENCH_CACHE", Path(tempfile.gettempdir()) / "nomarr-bench-cache")
)
TRACK_S = 240.0
GOAL_TRACKS, GOAL_HOURS = 50_000, 12.0


def nomarr_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("nomarr")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "nomarr.cli"]


def build_library(
    dest: Path, n: int, seed: int = 11, seconds: float = TRACK_S, offset: int = 0
) -> list[Path]:
    """n tracks of ``seconds`` s, each 3 excerpts of 3 different corpus tracks, as 44.1 kHz stereo MP3.

    Track i depends only on (seed, i), so a file already in ``dest`` is kept (its random draws are
    still made) and only missing tracks are encoded; each is written under a temp name first, so
    an interrupted build leaves no half-encoded track behind."""
    from nomarr.audio.decode import load_mono

    from tests.conftest import encode

    srcs = sorted(CORPUS.glob("sh*.ogg"))
    cache: dict[Path, np.ndarray] = {}
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    seg = int(seconds / 3 * 44100)
    for i in range(n):
        picks = rng.sample(srcs, 3)
        parts = []
        for p in picks:
            if p not in cache:
                cache[p] = load_mono(p, sr=44100)
            x = cache[p]
            start = rng.randrange(0, max(1, x.shape[0] - seg))
            part = x[start : start + seg]
            parts.append(np.pad(part, (0, seg - part.shape[0])))
        level = 0.6 + 0.4 * rng.random()  # levels differ per track, as in a real library
        f = dest / f"track{offset + i:04d}.mp3"
        out.append(f)
        if f.exists():
            continue
        sig = np.concatenate(parts).astype(np.float32) * level
        tmp = f.with_name(f".{f.name}.part")
        encode(tmp, np.stack([sig, sig * 0.95]), 44100, ext="mp3")
        os.replace(tmp, f)
    return out


def library(n: int) -> Path:
    """The cached library of ``n`` 4-minute MP3s (built on first use).

    Libraries of every size share their first tracks (same seed), so a new size starts from the
    tracks another cached size already has (hard links) and encodes only the rest."""
    master_dir = CACHE / f"library-{n}x{TRACK_S:.0f}s"
    want = {f"track{i:04d}.mp3" for i in range(n)}
    if {f.name for f in master_dir.glob("*.mp3")} != want:
        master_dir.mkdir(parents=True, exist_ok=True)
        for f in master_dir.glob("*.mp3"):
            if f.name not in want:
                f.unlink()
        for other in CACHE.glob(f"library-*x{TRACK_S:.0f}s"):
            for f in other.glob("*.mp3"):
                dest = master_dir / f.name
                if f.name in want and not dest.exists():
                    try:
                        os.link(f, dest)
                    except OSError:
                        shutil.copyfile(f, dest)
        build_library(master_dir, n)
    return master_dir


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc's per-thread ``children`` lists)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                todo += [int(k) for k in kids]
        except OSError:
            pass
    return out


class RssSampler:
    """Peak of the summed RSS of a process and its descendants, sampled every 50 ms from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = pss = 0
            for p in process_tree(self.pid):
                try:
                    for line in Path(f"/proc/{p}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            total += kb
                            self.peak_single = max(self.peak_single, kb)
                    for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
                except OSError:
                    pass
            self.peak_total = max(self.peak_total, total)
            self.peak_pss = max(self.peak_pss, pss)
            time.sleep(0.05)

    def stop(self) -> tuple[float, float]:
        """(peak summed RSS, peak single RSS) in MB; ``peak_pss`` (MB) counts each shared page
        once, split among the processes mapping it (the libraries every worker maps)."""
        self._stop.set()
        self._t.join()
        self.peak_pss_mb = self.peak_pss / 1024
        return self.peak_total / 1024, self.peak_single / 1024


def run_scan(lib: Path, db: Path, profile: str, extra: list[str] | None = None) -> dict[str, Any]:
    cmd = [
        *nomarr_cmd(),
        "scan",
        str(lib),
        "--db",
        str(db),
        "--profile",
        profile,
        "--json",
        *(extra or []),
    ]
    env = dict(os.environ, NOMARR_LOG_FORMAT="json")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = RssSampler(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    peak_total, peak_single = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"scan failed ({proc.returncode}): {err[-2000:]}")
    s = json.loads(out)
    s.update(
        wall_s=wall,
        peak_rss_mb=peak_total,
        peak_rss_single_mb=peak_single,
        peak_pss_mb=sampler.peak_pss_mb,
    )
    return s


def top5(db: Path) -> dict[str, list[str]]:
    """path → top-5 labels of msd-musicnn-1, from the database."""
    from nomarr.store import Store

    out = {}
    with Store(db, readonly=True) as st:
        for t in st.tracks():
            a = st.analyses(t.recording_id).get("msd-musicnn-1")
            if a:
                out[os.path.basename(t.path)] = [
                    k for k, _ in sorted(a.scores.items(), key=lambda kv: -kv[1])[:5]
                ]
    return out


def agreement(a: dict[str, list[str]], b: dict[str, list[str]]) -> tuple[float, float]:
    """(share of files with identical top-5 as a set, mean overlap of the top-5 sets)."""
    common = sorted(set(a) & set(b))
    if not common:
        return float("nan"), float("nan")
    same = sum(set(a[k]) == set(b[k]) for k in common) / len(common)
    overlap = float(np.mean([len(set(a[k]) & set(b[k])) / 5 for k in common]))
    return same, overlap


UPSTREAM = r"""
import contextlib, io, json, sys, time, warnings
warnings.filterwarnings("ignore")
from musicnn.extractor import extractor
files = json.loads(sys.argv[1])
t0 = time.perf_counter()
extractor(files[0], model="MSD_musicnn", extract_features=True)  # warm: TF import and first graph
warm = time.perf_counter() - t0
per = []
with contextlib.redirect_stdout(io.StringIO()):
    for f in files:
        t = time.perf_counter()
        extractor(f, model="MSD_musicnn", extract_features=True)
        per.append(time.perf_counter() - t)
print(json.dumps({"per_file_s": per, "first_call_s": warm}))
"""


def run_upstream(files: list[Path]) -> dict[str, Any] | None:
    try:
        from bench_musicnn import find_musicnn

        mdir = find_musicnn(None)
    except Exception as e:  # noqa: BLE001 - the comparison is skipped with the reason printed
        print(f"upstream musicnn unavailable: {e}")
        return None
    env = dict(
        os.environ,
        TF_USE_LEGACY_KERAS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONWARNINGS="ignore",
        PYTHONPATH=os.pathsep.join(p for p in (str(mdir), os.environ.get("PYTHONPATH")) if p),
    )
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", UPSTREAM, json.dumps([str(f) for f in files])],
        env=env,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        print(f"upstream failed: {p.stderr.strip().splitlines()[-3:]}")
        return None
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["wall_s"] = time.perf_counter() - t
    r["total_s"] = sum(r["per_file_s"])
    return r


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tracks", type=int, default=16, help="4-minute tracks in the library (default 16)"
    )
    ap.add_argument(
        "--new", type=int, default=100, help="tracks added for the incremental test (default 100)"
    )
    ap.add_argument("--profiles", default="fast,balanced,club_hifi_150s,full")
    ap.add_argument("--quick", action="store_true", help="8 tracks, 20 new, no upstream")
    ap.add_argument("--no-upstream", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--scan-arg", action="append", default=[], help="extra nomarr scan option (repeatable)"
    )
    args = ap.parse_args()
    if not (CORPUS / "sh01.ogg").exists():
        print(f"corpus not found at {CORPUS}")
        return 2
    if args.quick:
        args.tracks, args.new, args.no_upstream = 8, 20, True
    from nomarr.models.runtime import available_cores, platform_info

    cores = available_cores()
    work = Path(tempfile.mkdtemp(prefix="nomarr-bench-"))
    res: dict[str, Any] = {"machine": platform_info(), "cores": cores, "tracks": args.tracks}
    try:
        t = time.perf_counter()
        master_dir = library(args.tracks)
        master = sorted(master_dir.glob("*.mp3"))
        print(
            f"library: {len(master)} x {TRACK_S:.0f} s MP3 in {time.perf_counter() - t:.0f} s; {cores} cores; "
            f"nomarr scan = default settings (one worker process per core, tags written and verified)"
        )
        profiles = args.profiles.split(",")
        rows = []
        tops: dict[str, dict[str, list[str]]] = {}
        for prof in profiles:
            lib = work / f"lib-{prof}"
            shutil.copytree(master_dir, lib)
            db = work / f"{prof}.db"
            s = run_scan(lib, db, prof, args.scan_arg)
            tops[prof] = top5(db)
            tm = s["time"]
            workers = cores
            inf = tm.get("worker.inference", 0.0)
            worker_total = sum(
                v for k, v in tm.items() if k.startswith("worker.") and k != "worker.startup"
            )
            from profile_scan import floor

            fl = floor(db, ["msd-musicnn-1"], None)
            floor_s = fl["total_cpu_s"] / cores
            audio = s["audio_seconds"]
            per_track = s["wall_s"] / max(1, s["analysed"])
            rows.append(
                {
                    "profile": prof,
                    "analysed": s["analysed"],
                    "failed": s["failed"],
                    "wall_s": s["wall_s"],
                    "scan_s": s["elapsed_s"],
                    "tracks_per_min": 60 * s["analysed"] / s["wall_s"],
                    "x_realtime": audio / s["wall_s"],
                    "outside_inference_share_of_worker_time": 1 - inf / max(1e-9, worker_total),
                    "outside_inference_share_of_capacity": 1
                    - inf / max(1e-9, s["wall_s"] * workers),
                    "worker_s": {k: round(v, 2) for k, v in tm.items()},
                    "peak_rss_mb": s["peak_rss_mb"],
                    "peak_pss_mb": s["peak_pss_mb"],
                    "floor_s": floor_s,
                    "floor_provider": fl["provider"],
                    "scan_over_floor": s["wall_s"] / floor_s,
                    "peak_rss_single_mb": s["peak_rss_single_mb"],
                    "per_track_s": per_track,
                    "projection_h": GOAL_TRACKS
                    * per_track
                    * (TRACK_S / (audio / max(1, s["analysed"])))
                    / 3600,
                }
            )
            r = rows[-1]
            print(
                f"  {prof:15s} {r['analysed']:3d} tracks {r['wall_s']:6.1f} s  {r['tracks_per_min']:5.1f} tracks/min  "
                f"{r['x_realtime']:5.0f}x RT  outside inference {100 * r['outside_inference_share_of_worker_time']:4.1f} % "
                f"of worker time ({100 * r['outside_inference_share_of_capacity']:4.1f} % of capacity)  "
                f"peak RSS {r['peak_rss_mb']:.0f} MB all processes (PSS {r['peak_pss_mb']:.0f}) / {r['peak_rss_single_mb']:.0f} MB largest  "
                f"scan/floor {r['scan_over_floor']:.2f} (floor {r['floor_s']:.1f} s, {'+'.join(r['floor_provider'])})  "
                f"50k projection {r['projection_h']:.1f} h",
                flush=True,
            )
        res["profiles"] = rows
        up = None if args.no_upstream else run_upstream(master)
        res["upstream"] = up
        print("\na. Whole pipeline vs upstream musicnn (same files, same run)")
        print(
            f"   {'profile':15s} {'tracks/min':>10s} {'x RT':>6s} {'outside inf.':>12s} {'peak RSS':>9s} {'vs upstream':>12s} {'scan/floor':>10s}"
        )
        for r in rows:
            ratio = (up["total_s"] / r["wall_s"]) if up else float("nan")
            r["speedup_vs_upstream"] = ratio
            print(
                f"   {r['profile']:15s} {r['tracks_per_min']:10.1f} {r['x_realtime']:6.0f} "
                f"{100 * r['outside_inference_share_of_worker_time']:11.1f}% {r['peak_rss_mb']:7.0f}MB {ratio:11.2f}x "
                f"{r['scan_over_floor']:10.2f}"
            )
        if up:
            n = len(up["per_file_s"])
            print(
                f"   upstream musicnn extractor: {n} files in {up['total_s']:.1f} s ({60 * n / up['total_s']:.1f} tracks/min, "
                f"{n * TRACK_S / up['total_s']:.0f}x RT; one process, TF's own threading; first call {up['first_call_s']:.1f} s excluded)"
            )
        print(f"\nb. {GOAL_TRACKS:,} tracks of 4 min on this machine (goal < {GOAL_HOURS:.0f} h)")
        for r in rows:
            print(
                f"   {r['profile']:15s} {r['projection_h']:5.1f} h  ({'meets' if r['projection_h'] < GOAL_HOURS else 'misses'} the goal)"
            )

        # c. rescan and incremental add, default profile
        from nomarr.pipeline.profiles import DEFAULT_PROFILE

        lib = work / f"lib-{DEFAULT_PROFILE}"
        db = work / f"{DEFAULT_PROFILE}.db"
        first = next(r for r in rows if r["profile"] == DEFAULT_PROFILE)
        again = run_scan(lib, db, DEFAULT_PROFILE)
        res["rescan"] = {
            "wall_s": again["wall_s"],
            "analysed": again["analysed"],
            "share_of_first": again["wall_s"] / first["wall_s"],
        }
        print(
            f"\nc. unchanged rescan: {again['wall_s']:.2f} s wall, {again['analysed']} analysed = "
            f"{100 * again['wall_s'] / first['wall_s']:.1f} % of the first scan ({first['wall_s']:.1f} s) (goal < 5 %)"
        )
        t = time.perf_counter()
        new_dir = CACHE / f"new-{args.new}x90s"
        if len(list(new_dir.glob("*.mp3"))) != args.new:  # built once, reused by later runs
            shutil.rmtree(new_dir, ignore_errors=True)
            build_library(new_dir, args.new, seed=99, seconds=90.0, offset=1000)
        shutil.copytree(new_dir, lib / "new")
        built = time.perf_counter() - t
        add = run_scan(lib, db, DEFAULT_PROFILE)
        t = time.perf_counter()
        q = subprocess.run(
            [
                *nomarr_cmd(),
                "similar",
                str(lib / "new" / "track1000.mp3"),
                "--db",
                str(db),
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        q_s = time.perf_counter() - t
        ok = q.returncode == 0 and len(json.loads(q.stdout)["tracks"]) > 0
        res["incremental"] = {
            "new": args.new,
            "analysed": add["analysed"],
            "wall_s": add["wall_s"],
            "query_s": q_s,
            "query_ok": ok,
        }
        print(
            f"   {args.new} new 90 s tracks (built in {built:.0f} s, not counted): analysed {add['analysed']}, tagged and "
            f"stored in {add['wall_s']:.1f} s; first query {q_s:.2f} s ({'ok' if ok else 'FAILED'}) (goal < 90 s)"
        )

        # d. agreement with full
        print("\nd. top-5 tags vs the full profile (same set of 5)")
        res["agreement"] = {}
        if "full" in tops:
            for prof in profiles:
                same, ov = agreement(tops[prof], tops["full"])
                res["agreement"][prof] = {"library_same_top5": same, "library_overlap": ov}
                print(
                    f"   {prof:15s} 4-min library: {100 * same:5.1f} % identical top-5, mean overlap {100 * ov:5.1f} %"
                )
        corpus_lib = work / "corpus"
        shutil.copytree(
            CORPUS, corpus_lib, ignore=shutil.ignore_patterns("*.csv", "*.md", "licenses")
        )
        ctops = {}
        for prof in (DEFAULT_PROFILE, "full"):
            dbc = work / f"corpus-{prof}.db"
            run_scan(corpus_lib, dbc, prof, ["--no-write"])
            ctops[prof] = top5(dbc)
        same, ov = agreement(ctops[DEFAULT_PROFILE], ctops["full"])
        res["agreement"]["corpus_default"] = {"same_top5": same, "overlap": ov}
        print(
            f"   {DEFAULT_PROFILE} on ../shared/corpus ({len(ctops['full'])} tracks of 90 s): {100 * same:.1f} % identical "
            f"top-5 (goal >= 90 %); corpus tracks are shorter than the profile's windows, so they are analysed in full"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
