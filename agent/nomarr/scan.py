"""``nomarr scan``: walk a library, analyse what changed, store vectors, write ``nom:`` tags.

The shape, and why:
- **Decide cheaply first.** One walk (``os.scandir``, stat only for audio suffixes) and three
  queries tell, for every file, whether it is unchanged (size + mtime), whether its recording's
  analyses carry the current provenance, and whether the tags in it are current. An unchanged
  library costs a walk and those queries, and no model is loaded.
- **Identity before analysis.** A file that is new at its path is first matched by inode (a move
  within one filesystem keeps it) and then by Chromaprint fingerprint (a copy, a re-tag or a
  re-encode), in which case the stored analysis is reused and only the tags are written.
- **Keep every core busy.** Fingerprinting and analysis run in worker processes (one ONNX Runtime
  thread each: on small CPUs two single-threaded sessions out-run one two-threaded session, and the
  next file's decode overlaps the other worker's inference); the main process only does SQLite and
  tag writes.
- **Crash-safe.** Each file's database change is one transaction; tag writes are atomic replaces
  (see :mod:`nomarr.tagio`), and the write is recorded only after it happened, so a kill at any
  moment leaves at worst a file whose tags are re-checked (and found current) by the next scan.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nomarr_client import tags as grammar

from nomarr import paths
from nomarr.fingerprint import Fingerprint, match_recording, same_recording
from nomarr.library import calibrate, desired_tags, is_current, tags_hash
from nomarr.store import Analysis, Store, enc_path
from nomarr.walk import walk
from nomarr.workers import WorkerPool, WorkerStat, process_file, run_in_process

log = logging.getLogger("nomarr.scan")


# -- main side ------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One file on its way through the workers: ``key`` names the recording whose analysis this
    job owns (see ``Scanner.run``), ``ident`` is its earlier identification result."""

    path: str
    st: os.stat_result
    mode: str
    rec: int | None
    key: tuple[str, Any] | None = None
    ident: dict[str, Any] | None = None
    alone: bool = False  # re-run by itself after a worker died with it in flight


def _merge_identity(res: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any]:
    """An analysis result completed with the fingerprint its identification step computed.

    A file that changed between the two steps is reported as changed (retried next scan): its
    fingerprint may describe the old content.
    """
    out = dict(res)
    for k in ("fp", "fp_duration", "fp_error"):
        if k in ident and k not in out:
            out[k] = ident[k]
    if out.get("match") is None:
        out["match"] = ident.get("match")
    if out.get("kind") in ("analysed", "reuse") and ident.get("stat") and out.get("stat"):
        if tuple(ident["stat"][:2]) != tuple(out["stat"][:2]):
            out.update(kind="changed", error="file changed while it was being analysed")
    t = dict(out.get("timing") or {})
    t["identify"] = t.get("identify", 0.0) + float((ident.get("timing") or {}).get("identify", 0.0))
    out["timing"] = t
    return out


@dataclass
class ScanOptions:
    """What ``nomarr scan`` was asked to do."""

    roots: list[str]
    db: str | None = None
    write: bool = True
    profile: str = "balanced"
    models: list[str] = field(default_factory=lambda: ["msd-musicnn-1"])
    workers: int | None = None  # None: one per available core; 0: in this process
    threads: int = 1
    batch: int = 1
    provider: str | None = None
    mood_field: bool = False
    retry_failed: bool = False
    verify_writes: bool = True
    nice: int = 0
    cpus: list[int] | None = None  # pin workers to these cores (the agent's CPU cap)
    vanished_ok: bool = (
        False  # roots are changed paths inside a library (the watcher): a missing one is gone
    )


@dataclass
class ScanSummary:
    """Counts and per-file failure reasons (the ``--json`` document)."""

    files: int = 0
    analysed: int = 0
    reused: int = 0
    moved: int = 0
    skipped: int = 0
    written: int = 0
    tags_current: int = 0
    failed: int = 0
    failed_unchanged: int = 0
    read_only: int = 0
    missing: int = 0
    retiered: int = 0
    worker_crashes: int = 0  # worker pools lost to a dead process (their files were retried)
    walk_entries: int = 0
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    time: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    walk_errors: list[dict[str, str]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        d = dict(self.__dict__)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        d["audio_seconds"] = round(self.audio_seconds, 1)
        d["time"] = {k: round(v, 3) for k, v in self.time.items()}
        return d


class Progress:
    """Files done / total, rate and ETA on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, done: int, note: str = "") -> None:
        """Redraw at most 5 times a second."""
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and done < self.total):
            return
        self._last = now
        el = now - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * done / max(1, self.total))
        sys.stderr.write(
            f"\rscan [{bar:<30}] {done}/{self.total} files  {rate * 60:.0f}/min  "
            f"ETA {_hms(eta)}  {note[:40]:<40}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            sys.stderr.write("\n")


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Scanner:
    """One scan of one or more library roots into one database."""

    def __init__(
        self,
        opts: ScanOptions,
        progress: bool | None = None,
        pool: WorkerPool | None = None,
        cancel: Any = None,
    ) -> None:
        """``pool``: worker processes to use and leave running (the agent's); ``cancel``: an object
        with ``is_set()`` (a ``threading.Event``) that stops the scan between files."""
        from nomarr.models.registry import Registry
        from nomarr.pipeline.analyze import planned_provenance
        from nomarr.pipeline.profiles import get_profile

        self.opts = opts
        self.db_path = str(opts.db or paths.default_db())
        self.store = Store(self.db_path)
        self.profile = get_profile(opts.profile)
        self.registry = Registry()
        self.want = planned_provenance(self.registry, opts.models, self.profile)
        self.progress_enabled = progress
        self._thresholds: dict[str, dict[str, tuple[float, float]]] | None = None
        self.summary = ScanSummary()
        self.cancel = cancel
        self.journal_dir = paths.data_dir() / "journal"
        self._own_pool = pool is None
        self.pool = pool or WorkerPool(
            self._workers(), self.worker_initargs(opts, self.db_path, self.want)
        )

    @staticmethod
    def worker_initargs(opts: ScanOptions, db_path: str, want: dict[str, str]) -> tuple[Any, ...]:
        """What each worker process is started with (the agent builds its long-lived pool from this)."""
        return (
            db_path,
            opts.models,
            opts.profile,
            want,
            opts.threads,
            opts.batch,
            opts.provider,
            log.getEffectiveLevel(),
            opts.nice,
            opts.cpus,
        )

    @property
    def _executor(self) -> ProcessPoolExecutor | None:
        return self.pool._executor

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, path: str, reason: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append({"path": path, "reason": reason})
        log.warning("file failed", extra={"path": path, "reason": reason})

    def _current(self, rec: int | None, provs: dict[int, dict[str, str]]) -> bool:
        if rec is None:
            return False
        return grammar.is_current(provs.get(rec, {}), self.want)

    def _workers(self) -> int:
        if self.opts.workers is not None:
            return max(0, self.opts.workers)
        from nomarr.models.runtime import available_cores

        return max(1, available_cores())

    def _submit(self, path: str, mode: str, rec: int | None) -> Future[dict[str, Any]]:
        if self._workers() == 0:
            key = (
                self.db_path,
                tuple(self.opts.models),
                self.opts.profile,
                tuple(sorted(self.want.items())),
                self.opts.threads,
                self.opts.batch,
                self.opts.provider,
            )
            initargs = (
                self.db_path,
                self.opts.models,
                self.opts.profile,
                self.want,
                self.opts.threads or 0,
                max(self.opts.batch, 4),
                self.opts.provider,
                log.getEffectiveLevel(),
                0,
            )
            return run_in_process(key, initargs, process_file, path, mode, rec)
        return self.pool.get().submit(process_file, path, mode, rec)

    # -- the scan ---------------------------------------------------------------------------------

    def run(self) -> ScanSummary:
        """Walk, decide, analyse, store, write, calibrate; returns the summary."""
        from nomarr import tagio

        t0 = time.perf_counter()
        s = self.summary
        store = self.store
        roots = [os.path.abspath(r) for r in self.opts.roots]
        if self.opts.write:
            for p in tagio.recover(self.journal_dir):
                log.warning("finished an interrupted tag write", extra={"path": p})
        scan_id = store.begin_scan(roots)
        tw = time.perf_counter()
        w = walk(roots, vanished_ok=self.opts.vanished_ok)
        s.files = len(w.files)
        s.walk_entries = w.entries
        s.walk_errors = [{"path": p, "reason": r} for p, r in w.errors]
        s.time["walk"] = time.perf_counter() - tw
        if self.opts.write:
            # A tag write killed between creating its temp copy and the atomic rename leaves
            # ".NAME.nomarr-tmp" beside the file; the original is intact. tagio removes such a
            # stray before its next write of NAME, but a file whose tags are current is never
            # written again, so the scan removes them.
            for tmp in w.stray_temps:
                try:
                    os.unlink(tmp)
                    log.info(
                        "removed a stray temp file from an interrupted tag write",
                        extra={"path": tmp},
                    )
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning(
                        "cannot remove stray temp file", extra={"path": tmp, "error": str(e)}
                    )

        td = time.perf_counter()
        known = store.snapshot(roots)
        provs = store.provenances()
        epoch = int(store.meta("tier_epoch", "0") or 0)
        written = store.write_hashes()
        status = {
            tid: (st, err)
            for tid, st, err in store.db.execute("SELECT id, status, error FROM tracks")
        }
        seen: set[bytes] = set()
        jobs: deque[_Job] = deque()
        write_only: list[tuple[int, str]] = []
        new_files: list[tuple[str, os.stat_result]] = []
        for path, st in w.files:
            raw = enc_path(path)
            seen.add(raw)
            k = known.get(raw)
            if k is None:
                new_files.append((path, st))
                continue
            tid, size, mtime, rec = k
            unchanged = size == st.st_size and mtime == st.st_mtime_ns
            stt, err = status.get(tid, ("new", None))
            if unchanged and stt == "failed" and not self.opts.retry_failed:
                s.failed_unchanged += 1
                s.failures.append(
                    {"path": path, "reason": f"{err} (unchanged since it failed; --retry-failed)"}
                )
                continue
            if unchanged and stt == "ok" and self._current(rec, provs):
                if not self.opts.write or written.get(tid, "").endswith(f":{epoch}"):
                    s.skipped += 1
                else:
                    write_only.append((tid, path))
                continue
            if unchanged and stt == "ok" and rec is not None:
                jobs.append(
                    _Job(path, st, "analyze", rec)
                )  # stale provenance: same recording, new models/profile
            else:
                jobs.append(_Job(path, st, "identify", None))
        gone = {
            raw: v
            for raw, v in known.items()
            if raw not in seen and not _under_any(raw, w.unreadable_dirs)
        }
        # moves within a filesystem keep inode, size and mtime: no fingerprint needed
        if new_files and gone:
            by_inode = {}
            for raw, (tid, size, mtime, rec) in gone.items():
                row = store.db.execute(
                    "SELECT dev, inode FROM tracks WHERE id = ?", (tid,)
                ).fetchone()
                if row and row[0] is not None:
                    by_inode[(row[0], row[1], size, mtime)] = (raw, tid, rec)
            for path, st in new_files:
                hit = by_inode.pop((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), None)
                if hit is None:
                    jobs.append(_Job(path, st, "identify", None))
                    continue
                raw, tid, rec = hit
                gone.pop(raw, None)
                with store.tx():
                    store.move_track(tid, path, st)
                s.moved += 1
                if self._current(rec, provs) and status.get(tid, ("",))[0] == "ok":
                    if self.opts.write and not written.get(tid, "").endswith(f":{epoch}"):
                        write_only.append((tid, path))
                    else:
                        s.skipped += 1
                else:
                    jobs.append(_Job(path, st, "identify", None))
        else:
            jobs.extend(_Job(p, st, "identify", None) for p, st in new_files)
        s.time["decide"] = time.perf_counter() - td

        total = len(jobs) + len(write_only)
        prog = Progress(total, self.progress_enabled)
        done = 0
        tp = time.perf_counter()
        try:
            for tid, path in write_only:
                if self._cancelled():
                    break
                self._write(tid, path, trust_db=True)
                done += 1
                prog.update(done, os.path.basename(path))
            limit = max(2, 2 * self._workers())
            # One analysis per recording at a time: files identified as a recording that is being
            # analysed wait here (their identification kept) and reuse its result when it lands.
            # Keys: ("rec", id) for a stored recording, ("new", path) for a new one; new_fps holds
            # the fingerprints of the new recordings in flight, to match later files against.
            in_flight: dict[Future[dict[str, Any]], _Job] = {}
            waiting: dict[tuple[str, Any], list[tuple[str, Any, os.stat_result]]] = {}
            new_fps: dict[tuple[str, Any], Fingerprint] = {}

            pools: dict[Future[dict[str, Any]], Any] = {}  # the executor each job went to
            suspects: deque[_Job] = deque()  # in flight when a worker died: re-run one at a time

            def submit(job: _Job) -> None:
                try:
                    f = self._submit(job.path, job.mode, job.rec)
                except BrokenProcessPool:  # a worker died while idle: start a fresh pool
                    s.worker_crashes += 1
                    self._reset_pool()
                    f = self._submit(job.path, job.mode, job.rec)
                in_flight[f] = job
                pools[f] = self._executor

            def start_analysis(
                path: str,
                st: os.stat_result,
                key: tuple[str, Any] | None,
                ident: dict[str, Any] | None,
                rec: int | None,
            ) -> None:
                if key is not None:
                    waiting.setdefault(key, [])
                submit(_Job(path, st, "analyze", rec, key, ident))

            def release(key: tuple[str, Any] | None, rec: int | None) -> int:
                """The analysis owning ``key`` ended: waiting files reuse it, or the next one runs.
                Returns how many waiting files were finished."""
                if key is None:
                    return 0
                queue = waiting.pop(key, [])
                fp = new_fps.pop(key, None)
                if rec is None:  # it failed: hand the analysis to the next waiting file
                    if not queue:
                        return 0
                    kind, item, st = queue.pop(0)
                    waiting[key] = queue
                    if fp is not None:
                        new_fps[key] = fp
                    if kind == "result":
                        start_analysis(item["path"], st, key, item, item.get("match"))
                    else:
                        submit(_Job(item.path, item.st, item.mode, item.rec, key))
                    return 0
                n = 0
                for kind, item, st in queue:
                    if kind == "result":
                        self._handle({**item, "kind": "reuse", "match": rec}, st)
                        n += 1
                    else:
                        jobs.appendleft(item)  # an unchanged file of a re-analysed recording
                return n

            while jobs or in_flight or suspects:
                if (
                    jobs and self._cancelled()
                ):  # shutting down: finish what is in flight, start nothing
                    log.info(
                        "scan cancelled; finishing the files in flight", extra={"left": len(jobs)}
                    )
                    jobs.clear()
                    suspects.clear()
                    if not in_flight:
                        break
                if suspects and not in_flight:
                    job = suspects.popleft()
                    job.alone = True
                    submit(job)
                alone = suspects or any(j.alone for j in in_flight.values())
                while jobs and not alone and len(in_flight) < limit:
                    job = jobs.popleft()
                    if job.mode == "analyze" and job.key is None and job.rec is not None:
                        key = ("rec", job.rec)
                        if key in waiting:
                            waiting[key].append(
                                ("job", _Job(job.path, job.st, job.mode, job.rec), job.st)
                            )
                            continue
                        waiting[key] = []
                        job = _Job(job.path, job.st, job.mode, job.rec, key)
                    submit(job)
                finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for f in finished:
                    job = in_flight.pop(f)
                    pool = pools.pop(f, None)
                    try:
                        res = f.result()
                    except (Exception, CancelledError) as e:  # a dead worker must not end the scan
                        if pool is not None and pool is self._executor:
                            s.worker_crashes += 1
                            log.warning(
                                "a worker process died; retrying its files one by one",
                                extra={"error": str(e)},
                            )
                            self._reset_pool()
                        if not job.alone:
                            # every job in flight fails when one worker dies (OOM killer, a
                            # decoder crash): try each again by itself before blaming its file
                            suspects.append(job)
                            continue
                        res = {
                            "path": job.path,
                            "kind": "failed",
                            "error": f"worker crashed while processing this file ({type(e).__name__}: {e})",
                        }
                    if res.get("kind") == "identified":
                        rec = self._identified(res)
                        if rec is not None and self._is_current(rec):
                            self._handle({**res, "kind": "reuse", "match": rec}, job.st)
                        else:
                            fp = res.get("fp")
                            key = ("rec", rec) if rec is not None else None
                            if key is None and fp is not None:
                                mine = Fingerprint(
                                    res.get("fp_duration") or 0.0, np.asarray(fp, dtype=np.uint32)
                                )
                                key = next(
                                    (k for k, o in new_fps.items() if same_recording(mine, o)), None
                                )
                                if key is None:
                                    key = ("new", job.path)
                                    new_fps[key] = mine
                            if key is not None and key in waiting:
                                waiting[key].append(("result", {**res, "match": rec}, job.st))
                                continue
                            start_analysis(job.path, job.st, key, {**res, "match": rec}, rec)
                            continue
                    else:
                        if job.ident is not None:
                            res = _merge_identity(res, job.ident)
                        rec = self._handle(res, job.st)
                        done += release(job.key, rec)
                    done += 1
                    prog.update(done, os.path.basename(job.path))
        finally:
            prog.close()
            if self._own_pool:
                self.pool.shutdown(wait=True)
        s.time["process"] = time.perf_counter() - tp

        with store.tx():
            s.missing = store.mark_missing(tid for tid, *_ in gone.values())
            store.gc_recordings()
        tc = time.perf_counter()
        s.calibration = calibrate(store)
        self._thresholds = None
        if (
            self.opts.write
            and not self._cancelled()
            and any(v.get("changed") for v in s.calibration.values())
        ):
            s.retiered = self._retier(roots)
        s.time["calibrate"] = time.perf_counter() - tc
        s.elapsed_s = time.perf_counter() - t0
        store.end_scan(scan_id, s.to_dict())
        return s

    def _cancelled(self) -> bool:
        return self.cancel is not None and bool(self.cancel.is_set())

    def _reset_pool(self) -> None:
        self.pool.reset()

    def _tiers(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Tier thresholds, read once per calibration rather than once per written file."""
        if self._thresholds is None:
            self._thresholds = self.store.tier_thresholds()
        return self._thresholds

    def _identified(self, res: dict[str, Any]) -> int | None:
        """The stored recording an identified file belongs to, looked up again in this process
        (the worker's view of the database may predate analyses this scan has stored since)."""
        rec = res.get("match")
        if (
            rec is not None
            and self.store.db.execute("SELECT 1 FROM recordings WHERE id = ?", (rec,)).fetchone()
        ):
            return int(rec)
        fp = res.get("fp")
        if fp is None:
            return None
        return match_recording(
            self.store, Fingerprint(res.get("fp_duration") or 0.0, np.asarray(fp, dtype=np.uint32))
        )

    def _is_current(self, rec: int) -> bool:
        return is_current(self.store.analyses(rec), self.want)

    def _handle(self, res: dict[str, Any], st_walk: os.stat_result) -> int | None:
        """Store one worker result (and write the file's tags); returns its recording id, or
        None when the file failed."""
        s = self.summary
        store = self.store
        path = res["path"]
        kind = res.get("kind")
        if kind in ("failed", "changed"):
            if res.get("vanished"):
                self._fail(path, res["error"])
                return None
            if kind == "changed":
                self._fail(path, res["error"] + " (will be retried next scan)")
                return None
            self._fail(path, res["error"])
            try:
                st = os.stat(path)
            except OSError:
                return None
            with store.tx():
                store.set_failed(path, st, res["error"])
            return None
        st = WorkerStat(res["stat"])
        fp = res.get("fp")
        ids = res.get("ids") or {}
        with store.tx():
            rec = res.get("match")
            if (
                rec is not None
                and store.db.execute("SELECT 1 FROM recordings WHERE id = ?", (rec,)).fetchone()
                is None
            ):
                rec = None
            if kind == "analysed" and rec is None and fp is not None:
                # a duplicate analysed by another worker in this same scan
                rec = match_recording(store, Fingerprint(res.get("fp_duration") or 0.0, fp))
            if rec is None:
                if kind == "reuse":  # the recording vanished since the worker looked: analyse again
                    self._fail(path, "matched recording disappeared; will be analysed next scan")
                    return None
                keys = Fingerprint(0.0, fp).keys() if fp is not None else set()
                rec = store.new_recording(res.get("fp_duration"), keys)
            fields = dict(
                duration=res.get("duration"),
                container=res.get("container"),
                codec=res.get("codec"),
                sample_rate=res.get("sample_rate"),
                channels=res.get("channels"),
                recording_id=rec,
                mb_recording=ids.get("musicbrainz_recordingid"),
                mb_track=ids.get("musicbrainz_trackid"),
                mb_album=ids.get("musicbrainz_albumid"),
                mb_artist=ids.get("musicbrainz_artistid"),
                isrc=ids.get("isrc"),
                title=ids.get("title"),
                artist=ids.get("artist"),
                album=ids.get("album"),
                status="ok",
                error=None,
            )
            if fp is not None:
                fields["fingerprint"] = np.asarray(fp, dtype=np.uint32)
            tid = store.upsert_track(path, st, **fields)  # type: ignore[arg-type]
            if kind == "analysed":
                for r in res["results"]:
                    store.put_analysis(
                        rec,
                        Analysis(
                            rec,
                            r["model_id"],
                            r["prefix"],
                            r["provenance"],
                            self.profile.name,
                            res["windows"],
                            r["n_patches"],
                            r["provider"],
                            r["scores"],
                        ),
                        r["embedding"],
                    )
        if kind == "analysed":
            s.analysed += 1
            s.audio_seconds += float(res.get("duration") or 0.0)
            for k, v in (res.get("timing") or {}).items():
                if k in ("decode_mel", "inference", "plan", "identify"):
                    s.time[f"worker_{k}"] = s.time.get(f"worker_{k}", 0.0) + v
            for wmsg in res.get("warnings") or []:
                log.info("analysis warning", extra={"path": path, "warning": wmsg})
        else:
            s.reused += 1
        if self.opts.write:
            self._write(tid, path)
        return int(rec)

    def _write(self, tid: int, path: str, trust_db: bool = False) -> bool:
        """Bring one file's ``nom:`` tags in line with the database; records what was written.

        With ``trust_db``, a file whose last recorded write is the same tag set is not opened (the
        file is unchanged since, or the scan would have re-identified it): a recalibration that
        moves no tier of a file costs a hash, not a read.
        """
        from nomarr import tagio

        s = self.summary
        store = self.store
        t = store.track(tid)
        if t is None or t.recording_id is None:
            return False
        epoch = int(store.meta("tier_epoch", "0") or 0)
        nom, mood = desired_tags(
            store.analyses(t.recording_id).values(), self._tiers(), self.opts.mood_field
        )
        h = tags_hash(nom, mood)
        last = store.last_write(tid)
        if trust_db and last is not None and last[0].split(":")[0] == h:
            with store.tx():
                store.db.execute(
                    "UPDATE writes SET tags_hash = ? WHERE track_id = ?", (f"{h}:{epoch}", tid)
                )
            return False
        tw = time.perf_counter()
        try:
            wr = tagio.write_tags(
                path,
                nom,
                mood=mood,
                mood_owned=last[1] if last else None,
                journal_dir=self.journal_dir,
                verify=self.opts.verify_writes,
            )
        except tagio.TagError as e:
            s.time["write"] = s.time.get("write", 0.0) + time.perf_counter() - tw
            if e.reason == "read-only":
                s.read_only += 1
                s.failures.append(
                    {"path": path, "reason": "read-only: tags kept in the database only"}
                )
                log.warning("read-only file, tags not written", extra={"path": path})
            else:
                self._fail(path, f"tag write failed: {e}")
            return False
        s.time["write"] = s.time.get("write", 0.0) + time.perf_counter() - tw
        try:
            st = os.stat(path)
        except OSError:
            return False
        with store.tx():
            store.record_write(
                tid,
                nom,
                f"{h}:{epoch}",
                wr.mood_written if wr.mood_written is not None else (last[1] if last else None),
                wr.method,
            )
            store.touch_stat(tid, st)
        if wr.changed:
            s.written += 1
        else:
            s.tags_current += 1
        return wr.changed

    def _retier(self, roots: list[str]) -> int:
        """After a recalibration: rewrite only the files whose tier keys changed."""
        n = 0
        for t in self.store.tracks(under=roots):
            before = self.store.last_write(t.id)
            if self._write(t.id, t.path, trust_db=True) and before is not None:
                n += 1
        return n


def _under_any(raw: bytes, dirs: list[str]) -> bool:
    for d in dirs:
        pre = enc_path(d).rstrip(b"/") + b"/"
        if raw.startswith(pre):
            return True
    return False
