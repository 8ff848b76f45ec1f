#!/usr/bin/env python3
"""Where a scan's time goes: the stage profile of one ``nomarr scan``, beside its floor.

One run, same files:

1. ``nomarr scan`` of a library of 4-minute MP3s (default settings: one worker process per core,
   tags written and verified), in a child process; its ``--json`` summary carries the time of
   every stage, summed over the workers (``worker.*``) and in the main process (``main.*``).
2. **The floor**: the same files, one after another in this process with one single-threaded
   model session: decode + mel + inference of exactly the windows the scan analysed (read back
   from its database), timed in CPU seconds (core-seconds) and divided by the cores. No
   fingerprint, no onset search, no database, no tags, no processes: the least a scan of these
   files on this machine can cost with this front end and these models.

It prints per-track and total seconds per stage for the workers and the main process, the
workers' idle (or unaccounted) time, and scan / floor. The floor uses the execution provider and
precision the scan chose (the same provider check); ``--ort-floor`` adds the plain single-thread
ONNX Runtime fp32 floor beside it.

    .venv/bin/python bench/profile_scan.py                      # 8 tracks, default profile
    .venv/bin/python bench/profile_scan.py --profile full --tracks 6
    .venv/bin/python bench/profile_scan.py --quick              # 4 tracks
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scan import CORPUS, TRACK_S, RssSampler, library, nomarr_cmd  # noqa: E402

WORKER_ORDER = (
    "startup",
    "describe",
    "open",
    "decode",
    "resample",
    "fingerprint",
    "match",
    "buffer",
    "onset",
    "mel",
    "inference",
)
MAIN_ORDER = (
    "walk",
    "decide",
    "match",
    "database",
    "tags",
    "tag_copy",
    "tag_write",
    "tag_fsync",
    "tag_verify",
    "calibrate",
    "wait",
)


def cpu_busy() -> tuple[float, float]:
    """(busy, steal) seconds of all cores since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def run_scan(lib: Path, db: Path, profile: str, extra: list[str] | None = None) -> dict[str, Any]:
    """``nomarr scan`` in a child process; its summary, wall time, peak RSS and CPU use."""
    cmd = [*nomarr_cmd(), "scan", str(lib), "--db", str(db), "--profile", profile, "--json"]
    env = dict(os.environ, NOMARR_LOG_FORMAT="json")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = cpu_busy()
    t = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, *(extra or [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    sampler = RssSampler(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    busy1, steal1 = cpu_busy()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_total, peak_single = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"scan failed ({proc.returncode}): {err[-2000:]}")
    s = json.loads(out)
    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    s.update(
        wall_s=wall,
        peak_rss_mb=peak_total,
        peak_rss_single_mb=peak_single,
        peak_pss_mb=sampler.peak_pss_mb,
        cpu_s=ours,
        others_cores=max(0.0, (busy1 - busy0) - ours) / wall,
        steal_share=(steal1 - steal0) / max(1e-9, wall * (os.cpu_count() or 1)),
    )
    return s


def floor(
    db: Path, models: list[str], provider: str | None, limit: int | None = None
) -> dict[str, Any]:
    """Decode + mel + inference of exactly the windows the scan stored, one file after another,
    one single-threaded session, in CPU seconds; ``limit``: only the first that many files (by
    track id), for a caller that scales a sample up."""
    from nomarr.audio.decode import stream_mono
    from nomarr.audio.mel import MelSpec
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.prepare import _Patcher
    from nomarr.pipeline.profiles import get_profile
    from nomarr.store import Store

    ms = ModelSet(Registry(), models, threads=1, provider=provider)
    an = Analyzer(ms, get_profile("full"), batch_size=1)
    todo: list[tuple[str, list[dict[str, Any]]]] = []
    with Store(db, readonly=True) as st:
        for t in st.tracks():
            a = next(iter(st.analyses(t.recording_id).values()), None) if t.recording_id else None
            if a is not None:
                todo.append((t.path, a.windows))
    seen: set[tuple[str, ...]] = set()
    cpu = {"decode": 0.0, "mel": 0.0, "inference": 0.0}
    n_patches = 0
    for path, windows in todo:
        k = (path,)
        if k in seen:
            continue
        if limit is not None and len(seen) >= limit:
            break
        seen.add(k)
        for key, members in an.groups.items():
            spec = MelSpec(sr=key[0], n_fft=key[1], hop=key[2], n_mels=key[3])
            for w in windows:
                got: list[Any] = []
                pat = _Patcher(spec, key[4], key[5], got.append)
                it = stream_mono(path, sr=key[0], start=w["start"], duration=w["duration"])
                while True:
                    c0 = time.process_time()
                    block = next(it, None)
                    c1 = time.process_time()
                    cpu["decode"] += c1 - c0
                    if block is None:
                        break
                    pat.push(block)
                    cpu["mel"] += time.process_time() - c1
                c1 = time.process_time()
                pat.finish()
                cpu["mel"] += time.process_time() - c1
                c2 = time.process_time()
                for batch in got:
                    for i in range(batch.shape[0]):
                        for lm in members:
                            an._run_embedder(lm, batch[i : i + 1], {"s": [], "e": []})
                        n_patches += 1
                cpu["inference"] += time.process_time() - c2
    provs = sorted({lm.choice.provider for lm in ms.models.values()})
    return {
        "cpu_s": cpu,
        "total_cpu_s": sum(cpu.values()),
        "files": len(seen),
        "patches": n_patches,
        "provider": provs,
    }


def stage_table(s: dict[str, Any], tracks: int) -> list[str]:
    """The stage profile as text lines."""
    tm = s["time"]
    workers = max(1.0, float(tm.get("workers", 1.0)))
    process = float(tm.get("process", s["elapsed_s"]))
    lines = [f"   {'stage':24s} {'total s':>9s} {'per track ms':>13s}"]
    wsum = 0.0
    lines.append("   workers:")
    names = [k[7:] for k in tm if k.startswith("worker.")]
    for n in [*[x for x in WORKER_ORDER if x in names], *sorted(set(names) - set(WORKER_ORDER))]:
        v = tm[f"worker.{n}"]
        wsum += v
        lines.append(f"     {n:22s} {v:9.2f} {1000 * v / max(1, tracks):13.0f}")
    cap = workers * process
    lines.append(f"     {'(sum of stages)':22s} {wsum:9.2f} {1000 * wsum / max(1, tracks):13.0f}")
    idle = cap - wsum
    lines.append(
        f"     {'idle / unaccounted':22s} {idle:9.2f} {1000 * idle / max(1, tracks):13.0f}"
        f"   ({workers:.0f} workers x {process:.1f} s = {cap:.1f} worker-s; {100 * idle / max(1e-9, cap):.0f} %)"
    )
    lines.append("   main process:")
    mnames = {k[5:]: v for k, v in tm.items() if k.startswith("main.")}
    mnames.setdefault("walk", tm.get("walk", 0.0))
    mnames.setdefault("decide", tm.get("decide", 0.0))
    mnames.setdefault("calibrate", tm.get("calibrate", 0.0))
    for n in [*[x for x in MAIN_ORDER if x in mnames], *sorted(set(mnames) - set(MAIN_ORDER))]:
        v = mnames[n]
        ind = "  " if n.startswith("tag_") else ""
        label = "idle (waiting on workers)" if n == "wait" else n
        lines.append(
            f"     {ind}{label:{22 - len(ind)}s} {v:9.2f} {1000 * v / max(1, tracks):13.0f}"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tracks", type=int, default=8, help="4-minute MP3s (default 8)")
    ap.add_argument("--profile", default="balanced", help="sampling profile (default balanced)")
    ap.add_argument("--quick", action="store_true", help="4 tracks")
    ap.add_argument("--ort-floor", action="store_true", help="also the ONNX Runtime fp32 floor")
    ap.add_argument("--scan-arg", action="append", default=[], help="extra nomarr scan option")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not (CORPUS / "sh01.ogg").exists():
        print(f"corpus not found at {CORPUS}")
        return 2
    if args.quick:
        args.tracks = 4
    from nomarr.models.runtime import available_cores

    cores = available_cores()
    master = library(args.tracks)
    work = Path(tempfile.mkdtemp(prefix="nomarr-profile-"))
    try:
        lib = work / "lib"
        shutil.copytree(master, lib)
        db = work / "scan.db"
        s = run_scan(lib, db, args.profile, args.scan_arg)
        n = s["analysed"]
        print(
            f"nomarr scan --profile {args.profile}: {n} x {TRACK_S:.0f} s MP3 in {s['wall_s']:.1f} s wall "
            f"({60 * n / s['wall_s']:.1f} tracks/min) on {cores} cores; other processes kept "
            f"{s['others_cores']:.2f} cores busy meanwhile; peak RSS {s['peak_rss_mb']:.0f} MB all processes (PSS {s['peak_pss_mb']:.0f} MB), {s['peak_rss_single_mb']:.0f} MB largest"
        )
        for line in stage_table(s, n):
            print(line)
        fl = floor(db, ["msd-musicnn-1"], None)
        fl_wall = fl["total_cpu_s"] / cores
        c = fl["cpu_s"]
        print(
            f"\n   floor ({', '.join(fl['provider'])}, 1 thread, {fl['patches']} patches of {fl['files']} files): "
            f"decode {c['decode']:.2f} + mel {c['mel']:.2f} + inference {c['inference']:.2f} = "
            f"{fl['total_cpu_s']:.2f} core-s = {fl_wall:.2f} s on {cores} cores"
        )
        print(
            f"   scan / floor = {s['wall_s']:.2f} / {fl_wall:.2f} = {s['wall_s'] / fl_wall:.2f}  (goal <= 1.25)"
        )
        res: dict[str, Any] = {
            "scan": s,
            "floor": fl,
            "ratio": s["wall_s"] / fl_wall,
            "cores": cores,
        }
        if args.ort_floor:
            fo = floor(db, ["msd-musicnn-1"], "CPUExecutionProvider")
            print(
                f"   ORT fp32 floor: {fo['total_cpu_s']:.2f} core-s = {fo['total_cpu_s'] / cores:.2f} s; "
                f"scan / ORT floor = {s['wall_s'] / (fo['total_cpu_s'] / cores):.2f}"
            )
            res["ort_floor"] = fo
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=float))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
