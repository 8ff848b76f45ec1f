#!/usr/bin/env python3
"""Issue 15: new 4-minute tracks copied into a library watched by ``nomarr serve``, until every one
is tagged and answerable by ``/similar`` — against the 90 s goal and against the floor, in one run.

The goal (issue 15): 100 new 4-minute tracks, every one tagged and answerable by ``/similar`` in
<= 90 s at the default profile; peak RSS of all the agent's processes <= 400 MB; idle agent
<= 150 MB. For N tracks the time goal is scaled linearly (90 s x N / 100).

One run:

1. The 4-minute MP3 library of ``bench_scan.py`` (three 80 s corpus excerpts per track, built once
   into ``$NOMARR_BENCH_CACHE``, default /tmp/nomarr-bench-cache, outside the repository).
2. A real ``nomarr serve`` child (``bench_api.Agent``): its own config/data/cache folders in a temp
   folder, 127.0.0.1 on a free port, token auth, no zeroconf, one empty library folder watched
   with inotify events (``--watch event``), everything else at its defaults (profile, workers =
   ``cpu_share`` of the cores, nice, debounce, settle); ``--serve-arg`` adds options.
3. Once it is idle: its memory for a few seconds (summed RSS and PSS of its process tree, sampled
   from /proc as ``bench_scan.RssSampler`` does for scans).
4. The N tracks are copied in, one after another, as fast as the disk allows. ``--copy rename``
   (default) writes each under a hidden temporary name in the same folder and renames it into
   place, as rsync does; ``--copy plain`` writes it under its final name, as cp does, so the
   watcher's settle rule (the size must hold still for ``settle_s``) is what keeps a half-copied
   file from being analysed.
5. Every ``--poll`` seconds, through the plugins' client (``nomarr_client``): ``GET /tracks``; a
   track is *done* when the file carries ``nom:`` tags (read back from the file with
   ``nomarr.tagio.read_tags`` once its inode, size, mtime or ctime changed) and ``POST /similar``
   with its id answers with it as the seed. Peak memory of the whole tree is sampled meanwhile.
   Times are from the start of the copy; each track is also timed from the end of its own copy.
6. The agent is stopped with SIGTERM (SIGKILL after 60 s; any process of its tree still alive
   after that is killed and reported). Then **the floor**: decode + mel + inference of exactly
   the windows the agent stored for these files, one file after another, one single-threaded
   session (``profile_scan.floor``), in CPU seconds, divided by the cores (and by the agent's
   worker processes, the cores it lets itself use).

    .venv/bin/python bench/bench_watch.py                    # 100 tracks (~10-20 min on 2 cores)
    .venv/bin/python bench/bench_watch.py --tracks 20        # goal scaled to 18 s
    .venv/bin/python bench/bench_watch.py --tracks 20 --serve-arg=--cpu-share=1 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# bench_scan first: it sets one BLAS thread before numpy is imported (the floor's mel needs it)
from bench_scan import CORPUS, TRACK_S, RssSampler, library, process_tree  # noqa: E402
from profile_scan import cpu_busy, floor  # noqa: E402

# isort: split
from bench_api import GOAL_IDLE_RSS_MB, Agent  # noqa: E402

GOAL_S_PER_100 = 90.0
GOAL_PEAK_MB = 400.0


@dataclass
class Copied:
    """One track copied into the watched library, and what the agent made of it (seconds from t0)."""

    path: str
    copied_s: float = float("nan")
    sig: tuple[int, ...] = ()
    track_id: int | None = None
    seen_s: float | None = None
    tagged_s: float | None = None
    done_s: float | None = None
    failed: str | None = None
    last_error: str | None = None
    hits: int | None = None


@dataclass
class Tree:
    """Processes of the agent's tree: CPU time, worker processes seen, every (pid, start) seen."""

    root: int
    seen: dict[tuple[int, int], str] = field(default_factory=dict)
    max_workers: int = 0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # by role: serve, worker, other

    def snapshot(self) -> float:
        """CPU seconds of the live tree (own + waited-for children), noting every process and
        the largest RSS seen per role."""
        tick = os.sysconf("SC_CLK_TCK")
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        total = 0.0
        workers = 0
        for pid in process_tree(self.root):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            f = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(x) for x in f[11:15]) / tick  # utime stime cutime cstime
            self.seen[(pid, int(f[19]))] = cmd
            role = "serve" if pid == self.root else "worker" if "spawn_main" in cmd else "other"
            workers += role == "worker"
            rss = int(f[21]) * page_mb
            self.peak_rss_mb[role] = max(self.peak_rss_mb.get(role, 0.0), rss)
        self.max_workers = max(self.max_workers, workers)
        return total

    def leftovers(self) -> list[tuple[int, str]]:
        """Processes seen in the tree that still run (same pid *and* start time: no reused pid)."""
        out = []
        for (pid, start), cmd in self.seen.items():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            f = stat[stat.rindex(")") + 2 :].split()
            if int(f[19]) == start and f[0] != "Z":
                out.append((pid, cmd))
        return out


def signature(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def copy_tracks(
    files: list[Path], lib: Path, mode: str, t0: float, out: list[Copied], stop: threading.Event
) -> None:
    """Copy ``files`` into ``lib`` one after another (``rename``: hidden temp name, then rename)."""
    for src in files:
        if stop.is_set():
            return
        dest = lib / src.name
        tmp = lib / f".{src.name}.{secrets.token_hex(3)}" if mode == "rename" else dest
        shutil.copyfile(src, tmp)
        if tmp != dest:
            os.rename(tmp, dest)
        out.append(Copied(str(dest), time.perf_counter() - t0, signature(str(dest))))


def wait_idle(agent: Agent, tree: Tree, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the scan queue is empty and the tree has been the serve process alone for 2 s
    (the start-up provider probe is a child process that must be gone)."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        st = agent.get("/status")[1]
        q = st["queue"]
        alone = len(process_tree(agent.proc.pid)) == 1
        if not q["running"] and not q["pending"] and not q["pending_paths"] and alone:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 2.0:
                tree.snapshot()
                return st
        else:
            quiet_since = None
        time.sleep(0.2)
    raise RuntimeError("the agent did not become idle")


def measure_idle(agent: Agent, seconds: float) -> dict[str, float]:
    """Peak summed RSS, PSS and the serve process's own RSS (MB) over ``seconds`` of idling."""
    s = RssSampler(agent.proc.pid)
    time.sleep(seconds)
    total, single = s.stop()
    st = agent.get("/status")[1]
    return {
        "rss_mb": total,
        "pss_mb": s.peak_pss_mb,
        "largest_mb": single,
        "processes": len(process_tree(agent.proc.pid)),
        "agent_reported_mb": st.get("memory_mb", {}).get("agent", float("nan")),
    }


async def check_track(client: Any, c: Copied, tid: int, now: float) -> None:
    """Tagged (the file, read back) and answerable (``/similar`` knows it as a seed)?"""
    from nomarr.tagio import TagError, read_tags
    from nomarr_client import NomarrError

    if c.tagged_s is None:
        try:
            sig = signature(c.path)
            if sig == c.sig:
                return  # not rewritten since it was last looked at: no tags yet
            c.sig = sig
            if not any(k.startswith("nom:") for k in read_tags(c.path).nom):
                return
        except (OSError, TagError) as e:  # caught between two steps of a write: next poll
            c.last_error = str(e)
            return
        c.tagged_s = now
    try:
        hl = await client.similar(track_id=tid, limit=10)
    except NomarrError as e:  # no embedding yet (the tags came first): next poll
        c.last_error = str(e)
        return
    if hl.seed is not None and hl.seed.id == tid:
        c.done_s, c.hits = now, len(hl.items)


async def poll_until_done(
    client: Any,
    copied: list[Copied],
    n: int,
    t0: float,
    timeout: float,
    poll_s: float,
    tree: Tree,
) -> None:
    """Poll the API until all ``n`` copied tracks are done or failed, or ``timeout`` passes."""
    by_path: dict[str, Copied] = {}
    last_report = 0.0
    while True:
        now = time.perf_counter() - t0
        for c in copied[len(by_path) :]:
            by_path[os.path.realpath(c.path)] = c
        offset: int | None = 0
        while offset is not None:
            page = await client.tracks(offset, 1000, status="all")
            for t in page.items:
                c = by_path.get(os.path.realpath(t.path))
                if c is None or c.done_s is not None or c.failed:
                    continue
                c.track_id = t.id
                c.seen_s = c.seen_s if c.seen_s is not None else now
                if t.status == "failed":
                    c.failed = t.error or "failed"
                elif t.status == "ok" and t.recording_id is not None:
                    await check_track(client, c, t.id, now)
            offset = page.next_offset
        tree.snapshot()
        finished = [c for c in by_path.values() if c.done_s is not None or c.failed]
        if now - last_report >= 10:
            last_report = now
            print(f"   {now:6.1f} s: {len(copied)} copied, {len(finished)} done", flush=True)
        if len(finished) >= n or now > timeout:
            return
        await asyncio.sleep(poll_s)


async def final_answers(client: Any, copied: list[Copied]) -> int:
    """Done tracks whose ``/similar`` answer, asked again now, lists at least one other track."""
    ok = 0
    for c in copied:
        if c.done_s is not None and c.track_id is not None:
            hl = await client.similar(track_id=c.track_id, limit=5)
            ok += bool(hl.items)
    return ok


async def queue_settled(client: Any, timeout: float) -> dict[str, Any]:
    """``/status`` once the scan queue has been empty for 4 s (its totals count a batch only when
    it ends; the agent's own tag writes come back as events, wait out debounce + settle in the
    watcher, and are skipped in a last small batch)."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        st = (await client.status()).model_dump()
        q = st["queue"]
        idle = not q["running"] and not q["pending"] and not q["pending_paths"]
        quiet_since = (quiet_since or time.monotonic()) if idle else None
        if (quiet_since and time.monotonic() - quiet_since >= 4.0) or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.5)


async def run_watch(
    agent: Agent, files: list[Path], lib: Path, args: argparse.Namespace, tree: Tree
) -> dict[str, Any]:
    """Copy the tracks in and poll until they are all done; timings, peak memory, CPU."""
    from nomarr_client import NomarrClient

    copied: list[Copied] = []
    stop = threading.Event()
    sampler = RssSampler(agent.proc.pid)
    busy0, _ = cpu_busy()
    ours0, agent0 = time.process_time(), tree.snapshot()
    t0 = time.perf_counter()
    copier = asyncio.create_task(
        asyncio.to_thread(copy_tracks, files, lib, args.copy, t0, copied, stop)
    )
    try:
        async with NomarrClient(f"http://127.0.0.1:{agent.port}", agent.token) as client:
            await poll_until_done(client, copied, len(files), t0, args.timeout, args.poll, tree)
            wall = time.perf_counter() - t0
            agent_cpu = tree.snapshot() - agent0
            busy1, _ = cpu_busy()
            answers = await final_answers(client, copied)
            status = await queue_settled(client, 120.0)
    finally:
        stop.set()
        await copier
        rss, single = sampler.stop()
    ours = time.process_time() - ours0
    return {
        "tracks": [asdict(c) for c in copied],
        "wall_s": wall,
        "copy_s": max((c.copied_s for c in copied), default=float("nan")),
        "answers_with_hits": answers,
        "peak_rss_mb": rss,
        "peak_pss_mb": sampler.peak_pss_mb,
        "peak_largest_mb": single,
        "agent_cpu_s": agent_cpu,
        "others_cores": max(0.0, (busy1 - busy0) - agent_cpu - ours) / wall,
        "workers": tree.max_workers,
        "peak_rss_by_role_mb": dict(tree.peak_rss_mb),
        "queue": status["queue"],
    }


def stop_agent(agent: Agent, tree: Tree) -> list[tuple[int, str]]:
    """SIGTERM the agent; then SIGKILL whatever of its tree is still alive. What was killed."""
    agent.stop()
    deadline = time.monotonic() + 10
    while (left := tree.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def measure_floor(db: Path, n: int, sample: int | None) -> dict[str, Any]:
    """The floor of the files the agent analysed (all, or the first ``sample`` scaled to ``n``)."""
    from nomarr.store import Store

    with Store(db, readonly=True) as st:
        models = st.model_ids()
        profiles = sorted(
            {a.profile for t in st.tracks() for a in st.analyses(t.recording_id or 0).values()}
        )
    fl = floor(db, models, None, limit=sample)
    fl["scaled_cpu_s"] = fl["total_cpu_s"] * n / max(1, fl["files"])
    fl["models"], fl["profiles"] = models, profiles
    return fl


def ratio_line(label: str, value: float, goal: float, unit: str) -> str:
    verdict = "met" if value <= goal else "MISSED"
    return f"{label} {value:.1f} {unit}; goal <= {goal:.1f} {unit}: {verdict} ({value / goal:.2f}x the goal)"


def report_times(res: dict[str, Any], n: int) -> list[float]:
    """The time figures; returns the sorted done times."""
    w = res["watch"]
    goal = GOAL_S_PER_100 * n / 100
    done = sorted(t["done_s"] for t in w["tracks"] if t["done_s"] is not None)
    failed = [t for t in w["tracks"] if t["failed"]]
    print(
        f"\n{n} x {TRACK_S:.0f} s MP3 copied ({res['copy_mode']}) in {w['copy_s']:.2f} s; "
        f"done = nom: tags in the file and /similar answers for it; seconds from the start of the copy:"
    )
    print(f"   done {len(done)} of {n}, failed {len(failed)}")
    for t in failed[:5]:
        print(f"     failed: {t['path']}: {t['failed']}")
    if not done:
        return done
    lat = sorted(t["done_s"] - t["copied_s"] for t in w["tracks"] if t["done_s"] is not None)
    seen = [t["seen_s"] - t["copied_s"] for t in w["tracks"] if t["seen_s"] is not None]
    print(f"   first  {done[0]:7.1f} s")
    print(f"   median {statistics.median(done):7.1f} s")
    last = done[-1] if len(done) == n else float("inf")
    print(
        "   "
        + ratio_line(f"last  {'' if len(done) == n else '(not all done) '}", last, goal, "s")
        + f"  [goal 90 s per 100 tracks, scaled linearly to {n}]"
    )
    rate = 60 * len(done) / (done[-1] if len(done) == n else w["wall_s"])
    print(
        f"   throughput {rate:.1f} tracks/min (the goal needs {60 * n / goal:.1f}); each track from "
        f"the end of its own copy: median {statistics.median(lat):.1f} s, max {lat[-1]:.1f} s"
    )
    print(
        f"   listed by GET /tracks (watcher debounce + settle, then identified): median "
        f"{statistics.median(seen):.1f} s after its copy; /similar asked again at the end lists "
        f"other tracks for {w['answers_with_hits']} of {len(done)}"
    )
    return done


def report_floor(res: dict[str, Any], n: int, cores: int, done: list[float]) -> None:
    """The floor, and the run and the goal as ratios of it."""
    fl, workers = res["floor"], max(1, res["watch"]["workers"])
    goal = GOAL_S_PER_100 * n / 100
    on_cores, on_workers = fl["scaled_cpu_s"] / cores, fl["scaled_cpu_s"] / workers
    sample = "" if fl["files"] >= n else f", measured on {fl['files']} files and scaled to {n}"
    c = fl["cpu_s"]
    print(
        f"\nfloor ({'+'.join(fl['provider'])}, 1 thread, profile {','.join(fl['profiles'])}, "
        f"{fl['patches']} patches{sample}): decode {c['decode']:.1f} + mel {c['mel']:.1f} + "
        f"inference {c['inference']:.1f} core-s; {fl['scaled_cpu_s']:.1f} core-s for {n} tracks = "
        f"{on_cores:.1f} s on {cores} cores, {on_workers:.1f} s on the agent's {workers} worker(s)"
    )
    if len(done) == n:
        print(
            f"   last / floor = {done[-1] / on_cores:.2f} (all cores), "
            f"{done[-1] / on_workers:.2f} (the agent's workers)"
        )
    print(
        f"   floor / goal = {on_cores / goal:.2f} on all cores, {on_workers / goal:.2f} on the "
        f"agent's workers (above 1: the goal is out of reach with these models on this machine)"
    )


def report(res: dict[str, Any], n: int, cores: int) -> None:
    """Print every figure against its goal and the floor."""
    w, idle = res["watch"], res["idle"]
    print(
        f"\nidle agent ({idle['processes']} process(es)): "
        + ratio_line("RSS", idle["rss_mb"], GOAL_IDLE_RSS_MB, "MB")
        + f"; PSS {idle['pss_mb']:.1f} MB; the agent's own /status: {idle['agent_reported_mb']} MB"
    )
    done = report_times(res, n)
    print(
        "\npeak memory during the run, the agent's whole process tree: "
        + ratio_line("summed RSS", w["peak_rss_mb"], GOAL_PEAK_MB, "MB")
        + f"; PSS {w['peak_pss_mb']:.0f} MB ({w['peak_pss_mb'] / GOAL_PEAK_MB:.2f}x); "
        f"largest process {w['peak_largest_mb']:.0f} MB"
    )
    roles = ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(w["peak_rss_by_role_mb"].items()))
    print(f"   largest RSS per process seen at the polls: {roles}")
    if res.get("floor"):
        report_floor(res, n, cores, done)
    q = w["queue"]
    print(
        f"\nagent: {w['workers']} worker process(es) on {cores} cores; {q['scans_completed']} scan "
        f"batches; totals {q['totals']}; agent CPU {w['agent_cpu_s']:.0f} s in {w['wall_s']:.0f} s; "
        f"other processes kept {w['others_cores']:.2f} cores busy"
    )
    print(
        f"load average before {res['load_before']}, after {res['load_after']}; "
        f"left-over processes after the stop: {len(res['leftovers'])}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tracks", type=int, default=100, help="4-minute tracks copied (default 100)")
    ap.add_argument("--copy", choices=("rename", "plain"), default="rename")
    ap.add_argument("--poll", type=float, default=0.5, help="API poll interval, s (default 0.5)")
    ap.add_argument("--timeout", type=float, help="give up after this long (default 12 s/track)")
    ap.add_argument("--idle-s", type=float, default=5.0, help="idle memory sampled this long")
    ap.add_argument(
        "--floor-sample", type=int, help="floor of the first K files only, scaled (default: all)"
    )
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument(
        "--serve-arg", action="append", default=[], help="extra nomarr serve option (repeatable)"
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not (CORPUS / "sh01.ogg").exists():
        print(f"corpus not found at {CORPUS}")
        return 2
    if args.tracks < 1:
        ap.error("--tracks must be >= 1")
    args.timeout = args.timeout or max(180.0, 12.0 * args.tracks)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill runs the clean-up below
    from nomarr.models.runtime import available_cores, platform_info

    cores = available_cores()
    t = time.perf_counter()
    files = sorted(library(args.tracks).glob("*.mp3"))
    print(
        f"library: {len(files)} x {TRACK_S:.0f} s MP3 ready in {time.perf_counter() - t:.0f} s; {cores} cores; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    res: dict[str, Any] = {
        "machine": platform_info(),
        "cores": cores,
        "n": args.tracks,
        "copy_mode": args.copy,
        "serve_args": args.serve_arg,
        "goal_s": GOAL_S_PER_100 * args.tracks / 100,
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    work = Path(tempfile.mkdtemp(prefix="nomarr-bench-watch-"))
    agent = tree = None
    try:
        lib = work / "library"
        lib.mkdir()
        db = work / "nomarr.db"
        agent = Agent(db, [lib], work, args=["--watch", "event", *args.serve_arg])
        tree = Tree(agent.proc.pid)
        wait_idle(agent, tree)
        res["idle"] = measure_idle(agent, args.idle_s)
        print(f"nomarr serve on port {agent.port}, idle; copying {args.tracks} tracks", flush=True)
        res["watch"] = asyncio.run(run_watch(agent, files, lib, args, tree))
        res["leftovers"] = stop_agent(agent, tree)
        if not args.no_floor:
            print("measuring the floor (same files, same windows, one process)", flush=True)
            res["floor"] = measure_floor(db, args.tracks, args.floor_sample)
        res["load_after"] = [round(x, 2) for x in os.getloadavg()]
        report(res, args.tracks, cores)
    except KeyboardInterrupt:
        print("interrupted: stopping the agent", file=sys.stderr)
        return 130
    except Exception:
        log = work / "serve.log"  # the folder goes below: show the agent's side first
        if log.exists():
            print(f"serve log tail:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        if agent is not None and tree is not None:
            stop_agent(agent, tree)
        elif agent is not None:
            agent.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
    done = [t for t in res["watch"]["tracks"] if t["done_s"] is not None]
    return 0 if len(done) == args.tracks else 1


if __name__ == "__main__":
    raise SystemExit(main())
