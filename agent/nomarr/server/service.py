"""The long-running agent behind ``nomarr serve``: one scanner thread, the watcher, the worker pool,
the vector index and the zeroconf announcement, with the HTTP API (``nomarr.server.app``) on top.

Why one scanner thread fed by a queue: the watcher, the poll schedule and ``POST /scan`` all ask for
rescans of paths at unpredictable moments; merging them into batches keeps a burst of 500 copied
files one scan (one process pool, one calibration) instead of 500, and a single writer is what
SQLite wants anyway. The API reads through per-thread connections, which WAL lets run alongside
the scanner; what it writes (listens, favourites, streamed recordings, taste profiles) goes
through :meth:`Agent.write`, one writer at a time, and waits its turn with the scanner on
SQLite's own lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nomarr_client import models as api

from nomarr import __version__, paths
from nomarr.config import ServeConfig
from nomarr.identity import agent_id, ensure_token
from nomarr.store import Store, StoreError
from nomarr.vindex import VectorIndex
from nomarr.walk import inside

log = logging.getLogger("nomarr.serve")


class PathDenied(Exception):
    """A path argument that is not inside a library root (or does not exist there)."""


class PathInvalid(PathDenied):
    """A path argument that cannot name a file at all (relative, empty, NUL): the caller's typo."""


class ScanQueue:
    """Paths waiting to be scanned, merged: a path asked for twice is scanned once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: dict[str, str] = {}  # path → reason
        self._batches = 0

    def put(self, paths_: list[str], reason: str) -> int:
        """Queue paths; returns how many are now pending."""
        with self._cond:
            for p in paths_:
                self._items.setdefault(os.path.abspath(p), reason)
            self._batches += 1
            self._cond.notify_all()
            return len(self._items)

    def take(self, timeout: float) -> dict[str, str]:
        """Everything pending (waiting up to ``timeout`` for something to arrive)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items, self._items = self._items, {}
            self._batches = 0
            return items

    def wake(self) -> None:
        """Wake the consumer (shutdown)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Paths waiting."""
        with self._cond:
            return len(self._items)

    @property
    def batches(self) -> int:
        """Submissions merged into the pending paths."""
        with self._cond:
            return self._batches


class Agent:
    """Everything ``nomarr serve`` runs, started and stopped as one."""

    def __init__(self, cfg: ServeConfig) -> None:
        from nomarr.models.registry import Registry
        from nomarr.pipeline.modelset import planned_provenance
        from nomarr.pipeline.profiles import get_profile
        from nomarr.scan import Scanner, ScanOptions
        from nomarr.workers import WorkerPool

        self.cfg = cfg
        self.version = __version__
        self.db_path = str(cfg.db or paths.default_db())
        self.roots = [lib.path for lib in cfg.libraries]
        self.real_roots = [os.path.realpath(r) for r in self.roots]
        self.token, self.token_created = ensure_token(cfg)
        self.agent_id = agent_id()
        self.started = time.time()
        self.registry = Registry()
        self.uploads = uploads_dir()
        from nomarr.server.guard import remove_stale_uploads

        # left by an agent killed mid-request; a minute's grace for one starting beside this one
        remove_stale_uploads(self.uploads, 60.0)
        profile = get_profile(
            cfg.profile
        )  # an unknown profile is a config error now, not at the first scan
        Store(self.db_path).close()  # create/migrate the database before any reader opens it
        self.want = planned_provenance(self.registry, cfg.models, profile)
        self.scan_opts = ScanOptions(
            roots=[],
            db=self.db_path,
            write=cfg.write_tags,
            profile=cfg.profile,
            models=list(cfg.models),
            workers=cfg.worker_count(),
            threads=1,
            mood_field=cfg.mood_field,
            nice=cfg.nice,
            confine=list(self.roots),
            cpus=cfg.worker_cpus(),
        )
        self.pool = WorkerPool(
            cfg.worker_count(), Scanner.worker_initargs(self.scan_opts, self.db_path, self.want)
        )
        self.index = VectorIndex(self.db_path, idle_unload_s=max(cfg.idle_unload_s, 60.0))
        from nomarr.ingest.sessions import Limits, Sessions
        from nomarr.listens.match import Matcher
        from nomarr.taste.recommend import Taste

        self.matcher = Matcher()
        self.taste = Taste()
        self.write_lock = threading.Lock()
        self.ingest = Sessions(
            paths.cache_dir() / "ingest",
            Limits(
                sessions=cfg.ingest_sessions,
                idle_s=cfg.ingest_idle_s,
                max_bytes=cfg.ingest_max_mb * 1024 * 1024,
                min_seconds=cfg.ingest_min_s,
            ),
        )
        self.syncing: set[str] = set()  # users whose ListenBrainz sync runs now
        self.queue = ScanQueue()
        self.cancel = threading.Event()
        self.scanning: str | None = None
        self.last_scan: dict[str, Any] | None = None
        self.scans_done = 0
        self.totals: dict[str, int] = {}
        self._trimmed = 0.0
        self.analyses: asyncio.Semaphore | None = None  # made in start(), on the server's loop
        self.pull_lock = asyncio.Lock()
        self._local = threading.local()
        self._stores: list[Store] = []
        self._stores_lock = threading.Lock()
        self._scan_thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.watcher: Any = None
        self.announcer: Any = None
        self.port: int | None = None
        self.providers: list[str] | None = None  # filled in the background at start
        self.on_scan_done: list[Callable[[dict[str, Any]], None]] = []
        # live state for the console's event stream: bumped on every change worth pushing
        self.progress: api.ScanProgress | None = None
        self.pull_state: api.PullProgress | None = None
        self.state_version = 0

    # -- database access for the API ----------------------------------------------------------

    def store(self) -> Store:
        """This thread's read connection (sqlite connections are not shared between threads)."""
        s = getattr(self._local, "store", None)
        if s is None:
            s = Store(self.db_path, readonly=True)
            if self.cfg.vector_index:
                s.vector_index = self.index
            self._local.store = s
            with self._stores_lock:
                self._stores.append(s)
        return s

    def write(self, fn: Callable[[Store], Any]) -> Any:
        """Run ``fn`` with this thread's connection as the API's one writer (call off the loop)."""
        with self.write_lock:
            return fn(self.store())

    def rematch(self) -> int:
        """Match the stored listens no recording matched yet (after a scan or an ingest)."""
        from nomarr.listens.match import rematch

        return int(self.write(lambda st: rematch(st, self.matcher)))

    # -- path confinement ------------------------------------------------------------------------

    def confine(self, path: str, *, must_exist: bool = True) -> str:
        """The absolute form of a path argument, if it lies inside a library root.

        Both the path as given (normalised, ``..`` resolved) and its real path (symlinks
        resolved) must be inside a root, so neither ``../`` nor a symlink can reach other files.
        This is the scanner's own rule (:func:`nomarr.walk.walk` never follows a link out of the
        roots), so the API answers for exactly the files the library holds.
        """
        if not path or "\x00" in path:
            raise PathInvalid("empty path or NUL byte in path")
        if not os.path.isabs(path):
            raise PathInvalid(f"{path}: give an absolute path inside a library root")
        norm = os.path.normpath(path)
        if not any(_inside(norm, r) for r in self.roots):
            raise PathDenied(f"{path}: not inside a library root")
        real = os.path.realpath(norm)
        if not any(_inside(real, r) for r in self.real_roots):
            raise PathDenied(f"{path}: resolves outside the library roots")
        if must_exist and not os.path.exists(real):
            raise FileNotFoundError(path)
        return norm

    # -- scanning ------------------------------------------------------------------------------

    def submit(self, paths_: list[str], reason: str) -> int:
        """Queue paths (or roots) for a scan; thread-safe, returns how many are pending."""
        keep = [p for p in paths_ if any(_inside(os.path.abspath(p), r) for r in self.roots)]
        if not keep:
            return self.queue.pending
        n = self.queue.put(keep, reason)
        log.info("scan queued", extra={"paths": len(keep), "reason": reason, "pending": n})
        return n

    def _scan_loop(self) -> None:
        from nomarr.scan import Scanner

        while not self.cancel.is_set():
            items = self.queue.take(timeout=1.0)
            if not items or self.cancel.is_set():
                continue
            whole = sorted(p for p in items if p in self.roots)
            parts = sorted(
                p for p in items if p not in self.roots and not any(_inside(p, r) for r in whole)
            )
            for roots, vanished_ok in ((whole, False), (parts, True)):
                if not roots or self.cancel.is_set():
                    continue
                reasons = sorted({items[p] for p in roots})
                self.scanning = f"{len(roots)} path(s) ({', '.join(reasons)})"
                t0 = time.time()
                opts = dataclasses.replace(self.scan_opts, roots=roots, vanished_ok=vanished_ok)
                try:
                    summary = (
                        Scanner(
                            opts,
                            progress=False,
                            pool=self.pool,
                            cancel=self.cancel,
                            on_progress=self._on_progress,
                        )
                        .run()
                        .to_dict()
                    )
                except StoreError as e:  # a full disk, say: the message says it all
                    log.error("scan failed", extra={"roots": len(roots), "error": str(e)})
                    summary = {"error": str(e)}
                except Exception as e:  # the agent keeps running; the next change retries
                    log.exception("scan failed", extra={"roots": len(roots)})
                    summary = {"error": f"{type(e).__name__}: {e}"}
                self.last_scan = {
                    "started": t0,
                    "finished": time.time(),
                    "reason": ",".join(reasons),
                    "summary": {
                        k: v for k, v in summary.items() if k not in ("failures", "walk_errors")
                    }
                    | {"failures": summary.get("failures", [])[:20]},
                }
                self.scans_done += 1
                self.progress = None
                self.state_version += 1
                for k in (
                    "files",
                    "analysed",
                    "reused",
                    "moved",
                    "skipped",
                    "written",
                    "failed",
                    "missing",
                ):
                    v = summary.get(k)
                    if isinstance(v, int):
                        self.totals[k] = self.totals.get(k, 0) + v
                log.info(
                    "scan done",
                    extra={
                        k: summary.get(k)
                        for k in (
                            "files",
                            "analysed",
                            "reused",
                            "moved",
                            "skipped",
                            "written",
                            "failed",
                            "missing",
                            "elapsed_s",
                        )
                    },
                )
                for cb in list(self.on_scan_done):
                    try:
                        cb(summary)
                    except Exception:
                        log.exception("scan callback failed")
            self.scanning = None
            self.state_version += 1

    def _on_progress(self, done: int, total: int, path: str) -> None:
        """The scanner's per-file callback (scanner thread): files done, rate, ETA."""
        now = time.time()
        p = self.progress
        if done == 0 or p is None:
            self.progress = api.ScanProgress(done=0, total=total, started=now)
        else:
            el = max(1e-6, now - p.started)
            rate = done / el
            self.progress = api.ScanProgress(
                done=done,
                total=total,
                file=path,
                started=p.started,
                rate_per_min=round(rate * 60.0, 1),
                eta_s=round((total - done) / rate, 1) if rate > 0 else None,
            )
        self.state_version += 1

    def on_pull_progress(self, model_id: str, name: str, done: int, total: int | None) -> None:
        """A model download's progress (the pull's worker thread)."""
        p = self.pull_state
        started = p.started if p is not None and p.id == model_id else time.time()
        self.pull_state = api.PullProgress(
            id=model_id, file=name, done=done, total=total, started=started
        )
        self.state_version += 1

    def memory_mb(self) -> dict[str, float]:
        """Resident memory of the server process and of the analysis workers, in MiB."""
        out = {"agent": round(_rss_mb(os.getpid()), 1)}
        ex = self.pool._executor
        procs = getattr(ex, "_processes", None) or {}
        if procs:
            out["workers"] = round(sum(_rss_mb(pid) for pid in list(procs)), 1)
        return out

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scanner thread, the watcher, the housekeeping task (and the first scan)."""
        from nomarr.watch import LibrarySpec, LibraryWatcher

        self.analyses = asyncio.Semaphore(self.cfg.max_concurrent_analyses)
        threading.Thread(target=self._probe_providers, name="nomarr-providers", daemon=True).start()
        self._loop = asyncio.get_running_loop()
        self._scan_thread = threading.Thread(
            target=self._scan_loop, name="nomarr-scanner", daemon=True
        )
        self._scan_thread.start()
        specs = [
            LibrarySpec(
                path=lib.path,
                watch=lib.watch,
                poll_interval_s=lib.poll_interval_s,
                rescan_interval_s=lib.rescan_interval_s,
            )
            for lib in self.cfg.libraries
        ]
        self.watcher = LibraryWatcher(
            specs, self.submit, debounce_s=self.cfg.debounce_s, settle_s=self.cfg.settle_s
        )
        await self.watcher.start()
        self.on_scan_done.append(self._rematch_after_scan)
        if self.cfg.scan_on_start and self.roots:
            self.submit(list(self.roots), "start")
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="nomarr-housekeeping"))

    async def announce(self, port: int) -> None:
        """Register on the LAN with zeroconf (DESIGN §6) once the port is known."""
        self.port = port
        if not self.cfg.zeroconf:
            return
        from nomarr.discovery import Announcer

        self.announcer = Announcer(
            agent_id=self.agent_id,
            version=self.version,
            port=port,
            bind_host=self.cfg.host,
            auth=self.cfg.auth == "token",
        )
        try:
            await self.announcer.start()
        except Exception as e:  # no multicast (containers, no network): the API still works by URL
            log.warning(
                "zeroconf announcement failed; plugins need the agent's URL configured",
                extra={"error": f"{type(e).__name__}: {e}"},
            )
            self.announcer = None

    def _rematch_after_scan(self, summary: dict[str, Any]) -> None:
        """A scan that added files may hold recordings stored listens are of."""
        if summary.get("analysed") or summary.get("reused") or summary.get("moved"):
            n = self.rematch()
            if n:
                log.info("listens matched after the scan", extra={"matched": n})

    async def _housekeeping(self) -> None:
        """Idle unload: worker processes (and their models) and the vector copies go when unused;
        idle ingest sessions expire; remembered ListenBrainz users are synced when due."""
        while True:
            await asyncio.sleep(min(10.0, max(0.5, self.cfg.idle_unload_s / 4)))
            try:
                if self.ingest.expire():
                    log.info("idle ingest sessions dropped")
                await self._sync_due()
            except Exception:
                log.exception("housekeeping (ingest, sync) failed")
            try:
                if (
                    self.pool.loaded
                    and self.scanning is None
                    and self.queue.pending == 0
                    and self.pool.busy == 0
                    and self.pool.idle_for() >= self.cfg.idle_unload_s
                ):
                    self.pool.shutdown(wait=False)
                    log.info("idle: analysis workers stopped, models unloaded")
                if self.index.unload_idle():
                    log.info("idle: vector index dropped")
                from nomarr.query import unload_idle_text

                if unload_idle_text(self.cfg.idle_unload_s):
                    log.info("idle: CLAP text model unloaded")
                from nomarr.server.guard import UPLOAD_TIMEOUT_S, remove_stale_uploads

                remove_stale_uploads(self.uploads, UPLOAD_TIMEOUT_S + 3600.0)
                if self.scanning is None and time.monotonic() - self._trimmed > 30.0:
                    self._trimmed = time.monotonic()
                    await asyncio.to_thread(_trim_heap)
            except Exception:
                log.exception("housekeeping failed")

    async def stop(self, timeout: float = 60.0) -> None:
        """Graceful: stop watching, finish the files in flight (tag writes are atomic, so one
        abandoned at the timeout leaves the original file intact), say goodbye on the LAN."""
        self.cancel.set()
        self.queue.wake()
        for t in self._tasks:
            t.cancel()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.announcer is not None:
            await self.announcer.stop()
        if self._scan_thread is not None:
            await asyncio.to_thread(self._scan_thread.join, timeout)
            if self._scan_thread.is_alive():
                log.warning(
                    "scan still running at shutdown; abandoning it (files are written atomically)"
                )
        await asyncio.to_thread(self.pool.shutdown, True)
        self.ingest.close()
        self.index.close()
        with self._stores_lock:
            for s in self._stores:
                try:
                    s.close()
                except Exception:
                    pass
            self._stores.clear()

    async def _sync_due(self) -> None:
        """Start the ListenBrainz syncs that are due (users who asked the agent to remember)."""
        every = self.cfg.listenbrainz_sync_s
        if every <= 0:
            return
        from nomarr.server.api_listens import run_sync

        due = await asyncio.to_thread(
            lambda: [
                u
                for u, src, st, _ in self.store().sources()
                if src == "listenbrainz"
                and st.get("remember")
                and time.time() - float(st.get("synced", 0)) >= every
            ]
        )
        self._tasks = [t for t in self._tasks if not t.done()]
        for user in due:
            if user not in self.syncing:
                self._tasks.append(asyncio.create_task(run_sync(self, user, None)))

    # -- status ----------------------------------------------------------------------------------

    def _probe_providers(self) -> None:
        """The execution providers, asked of onnxruntime in a short-lived child process: importing
        onnxruntime here would add tens of MB to an agent that never runs a model itself."""
        import json
        import subprocess
        import sys

        code = "import json; from nomarr.models.runtime import ort_available_providers as p; print(json.dumps(p()))"
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            self.providers = [str(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
            log.warning("could not list execution providers", extra={"error": str(e)})
            self.providers = []

    def status(self) -> api.Status:
        """``GET /status``."""
        st = self.store()
        counts = st.counts()
        watch_state = {w["path"]: w for w in (self.watcher.status() if self.watcher else [])}
        roots = []
        for lib in self.cfg.libraries:
            ws = watch_state.get(lib.path, {})
            n = st.count_tracks(under=[lib.path])
            roots.append(
                api.RootStatus(
                    path=lib.path,
                    watch=ws.get("watch", lib.watch),
                    poll_interval_s=lib.poll_interval_s
                    if ws.get("watch", lib.watch) == "poll"
                    else None,
                    exists=os.path.isdir(lib.path),
                    tracks=int(n),
                )
            )
        models = []
        for m in sorted(self.registry.manifests().values(), key=lambda m: m.id):
            if m.id in self.cfg.models or self.registry.installed(m):
                models.append(
                    api.ModelStatus(
                        id=m.id,
                        kind=m.kind,
                        installed=self.registry.installed(m),
                        loaded=self.pool.loaded and m.id in self.cfg.models,
                        builtin=m.builtin,
                        licence=m.licence or None,
                    )
                )
        last = api.ScanInfo(**self.last_scan) if self.last_scan else None
        return api.Status(
            version=self.version,
            agent_id=self.agent_id,
            roots=roots,
            queue=api.QueueStatus(
                pending=self.queue.batches,
                pending_paths=self.queue.pending,
                running=self.scanning is not None,
                current=self.scanning,
                last_scan=last,
                scans_completed=self.scans_done,
                totals=dict(self.totals),
                progress=self.progress if self.scanning is not None else None,
            ),
            models=models,
            providers=list(self.providers or []),
            tracks=counts,
            workers_loaded=self.pool.loaded,
            uptime_s=round(time.time() - self.started, 1),
            memory_mb=self.memory_mb(),
            pull=self.pull_state,
        )


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc only). A burst of requests on several threads
    leaves tens of MB free but held in malloc's per-thread arenas; on a Pi that is memory the music
    server could use."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
        pass


def _rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc; 0 where unknown)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


_inside = inside


def uploads_dir() -> Path:
    """Where uploaded audio waits for analysis (deleted right after)."""
    d = paths.cache_dir() / "uploads"
    d.mkdir(parents=True, exist_ok=True)
    return d
