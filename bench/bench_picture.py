#!/usr/bin/env python3
"""Peak memory and time of a scan with a huge embedded picture, against the same scan without it.

A file with a 40 MB cover (an APIC frame, a FLAC PICTURE block) must cost about what the file
without it costs: the picture is never decoded, copied whole into memory, or parsed by the
decoder (docs/reliability.md). Builds two libraries of ``--files`` generated tracks that differ
only in one file's picture, runs ``nomarr scan`` on each in a subprocess (workers as given, tags
written) and samples the resident memory of the whole process tree (the scan, its workers and
fpcalc) every 10 ms.

    flock /tmp/nomarr-heavy.lock .venv/bin/python bench/bench_picture.py
    .venv/bin/python bench/bench_picture.py --format flac --picture-mb 40 --workers 2

Prints each run's peak (MB) and wall time, and the difference and ratio with picture / without.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(d)] = int(fields[1])
        rss[int(d)] = int(fields[21]) * page
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - tree
        tree |= frontier
    return sum(rss.get(p, 0) for p in tree)


def run_scan(lib: Path, db: Path, workers: int, env: dict[str, str]) -> tuple[float, float]:
    """(peak MB of the process tree, seconds) of one ``nomarr scan``."""
    cmd = [sys.executable, "-m", "nomarr.cli", "scan", str(lib), "--db", str(db)]
    cmd += ["--workers", str(workers), "--json"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(p.pid))
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = p.communicate()
    done.set()
    t.join()
    if p.returncode != 0:
        raise SystemExit(f"scan failed: {err.decode(errors='replace')[-2000:]}")
    return peak / 1e6, time.perf_counter() - t0


def add_picture(path: Path, mb: int) -> None:
    """Embed ``mb`` MB of picture (random bytes behind a JPEG header) the way taggers do."""
    import numpy as np
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3

    data = b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(mb * 1_000_000)
    if path.suffix == ".mp3":
        tags = ID3()
        tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=data))
        tags.save(path)
    else:
        f = FLAC(path)
        pic = Picture()
        pic.data, pic.type, pic.mime = data, 3, "image/jpeg"
        f.add_picture(pic)
        f.save()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=["mp3", "flac"], default="mp3")
    ap.add_argument("--picture-mb", type=int, default=40)
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per library (median reported)")
    args = ap.parse_args()
    from tests.conftest import encode, music_like

    with tempfile.TemporaryDirectory(prefix="nomarr-picture-") as d:
        base = Path(d)
        env = {
            **os.environ,
            **{v: str(base / v.lower()) for v in ("XDG_DATA_HOME", "XDG_CACHE_HOME")},
        }
        src = base / "src"
        src.mkdir()
        for i in range(args.files):
            encode(src / f"t{i}.{args.format}", music_like(60.0, seed=70 + i), 44100)
        pic = base / "pic-src"
        shutil.copytree(src, pic)
        add_picture(pic / f"t0.{args.format}", args.picture_mb)
        results: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        for r in range(args.repeat):
            for name, lib_src in (("without", src), ("with", pic)):
                lib = base / f"lib-{name}-{r}"
                shutil.copytree(lib_src, lib)
                results[name].append(run_scan(lib, base / f"{name}-{r}.db", args.workers, env))
        med = {
            k: (statistics.median(p for p, _ in v), statistics.median(t for _, t in v))
            for k, v in results.items()
        }
        print(
            f"scan of {args.files} x 60 s {args.format}, workers={args.workers}, one file with a "
            f"{args.picture_mb} MB picture (median of {args.repeat})"
        )
        for k in ("without", "with"):
            print(f"  {k:8s} picture: peak {med[k][0]:7.1f} MB   {med[k][1]:6.2f} s")
        dp = med["with"][0] - med["without"][0]
        print(
            f"  with/without: peak +{dp:.1f} MB (ratio {med['with'][0] / med['without'][0]:.3f}), "
            f"time ratio {med['with'][1] / med['without'][1]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
