"""One scan of one or more library roots into one database: walk → plan → dispatch → apply →
calibrate, in that order (see the package docstring for why)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from nomarr import paths
from nomarr.library import calibrate
from nomarr.pipeline.prepare import Prepared
from nomarr.results import WorkerResult
from nomarr.scan.apply import Applier
from nomarr.scan.central import CentralInference
from nomarr.scan.dispatch import Dispatcher
from nomarr.scan.options import Progress, ScanOptions, ScanSummary
from nomarr.scan.plan import Job, make_plan
from nomarr.stages import Stages
from nomarr.store import Store
from nomarr.walk import WalkResult, walk
from nomarr.workers import WorkerPool, infer_job, process_file, run_in_process

log = logging.getLogger("nomarr.scan")

GPU_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
        "CoreMLExecutionProvider",
    }
)


class Scanner(Applier):
    """One scan of one or more library roots into one database."""

    def __init__(
        self,
        opts: ScanOptions,
        progress: bool | None = None,
        pool: WorkerPool | None = None,
        cancel: Any = None,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        """``pool``: worker processes to use and leave running (the agent's); ``cancel``: an object
        with ``is_set()`` (a ``threading.Event``) that stops the scan between files;
        ``on_progress(done, total, path)``: called once when processing starts (done 0) and after
        every file (the agent's live progress)."""
        from nomarr.models.registry import Registry
        from nomarr.pipeline.modelset import planned_provenance
        from nomarr.pipeline.profiles import get_profile

        self.opts = opts
        self.db_path = str(opts.db or paths.default_db())
        self.store = Store(self.db_path)
        self.profile = get_profile(opts.profile)
        self.registry = Registry()
        self.want = planned_provenance(self.registry, opts.models, self.profile)
        self.progress_enabled = progress
        self._thresholds = None
        self.summary = ScanSummary()
        self.cancel = cancel
        self.on_progress = on_progress
        self.journal_dir = paths.data_dir() / "journal"
        self.stages = Stages()
        self.worker_stages = Stages()
        self.central: CentralInference | None = None  # one model session fed by all workers
        self._own_pool = pool is None
        self.pool = pool or WorkerPool(
            self.worker_count(), self.worker_initargs(opts, self.db_path, self.want)
        )
        self._local_busy = 0
        self._fallback: WorkerPool | None = None
        self.remote = self._connect_remote() if opts.scheduler else None
        if self._central_wanted():
            self.central = self._start_central()

    def _central_wanted(self) -> bool:
        """``--inference central``, or ``auto`` with a GPU provider named (docs: nomarr.scan.central)."""
        mode = self.opts.inference
        if mode == "central":
            return True
        return mode == "auto" and (self.opts.provider or "") in GPU_PROVIDERS

    def _start_central(self) -> CentralInference:
        from nomarr.pipeline.analyze import Analyzer, ModelSet

        ms = ModelSet(
            self.registry,
            self.opts.models,
            threads=self.opts.threads or 0,
            provider=self.opts.provider,
        )
        batch = max(self.opts.batch, 64)  # a GPU wants many patches per run
        return CentralInference(Analyzer(ms, self.profile, batch_size=batch))

    def _connect_remote(self) -> Any:
        """The remote executor (``--scheduler``): the one seam between the scan and Dask.

        Raises ValueError for what the user must fix (Dask missing, secrets missing, tcp:// without
        --insecure); a scheduler that cannot be reached is not an error: the scan runs locally and
        its summary says so.
        """
        from pathlib import Path

        from nomarr.remote import RemoteUnavailable
        from nomarr.remote.executor import connect
        from nomarr.remote.secrets import SecretsError

        o = self.opts
        try:
            return connect(
                o.scheduler or "",
                Path(o.secrets) if o.secrets else None,
                o.insecure,
                want=self.want,
                models=list(o.models),
                profile=o.profile,
                roots=list(o.roots),
                local_submit=self._submit_local,
                slow_after=o.slow_after,
                gpu_only=o.gpu_only,
            )
        except (RemoteUnavailable, SecretsError) as e:
            raise ValueError(str(e)) from e

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
            opts.inference == "central"
            or (opts.inference == "auto" and (opts.provider or "") in GPU_PROVIDERS),
        )

    @property
    def executor(self) -> ProcessPoolExecutor | None:
        """The pool's current executor (a job's result is trusted only from the one it went to)."""
        return self.pool._executor

    def capacity(self) -> int:
        """Jobs that can run at once: local workers plus the approved remote workers' slots."""
        remote = self.remote.slots() if self.remote is not None and self.remote.usable() else 0
        return self.worker_count() + remote

    def worker_count(self) -> int:
        """Worker processes: the option, else one per usable core; 0 runs jobs in this process."""
        if self.opts.workers is not None:
            return max(0, self.opts.workers)
        from nomarr.models.runtime import available_cores

        return max(1, available_cores())

    def cancelled(self) -> bool:
        """Whether the agent asked the scan to stop (between files)."""
        return self.cancel is not None and bool(self.cancel.is_set())

    def submit(self, job: Job) -> Future[WorkerResult]:
        """One job: :func:`~nomarr.workers.process_file` (identify, analyze) or
        :func:`~nomarr.workers.infer_job` (the models on an identified file's patches); in the
        central session when the scan has one, in a local worker while one is free, else on a
        remote worker (``--scheduler``; an infer job goes there as an analysis of the file), else
        queued locally or (``--workers 0``) here."""
        spare_remote = (
            self.remote is not None
            and self.remote.usable()
            and self._local_busy >= self.worker_count()
        )
        if job.mode == "infer":
            assert job.ident is not None and job.ident.prepared is not None
            if self.central is not None:
                return self.central.submit(job.path, job.ident.prepared)
            if spare_remote:
                return self.remote.submit(job.path, "analyze", job.rec)
            f = self._submit_local(job.path, "infer", job.rec, job.ident.prepared)
        elif job.mode == "analyze" and self.central is not None:
            return self.central.submit_file(job.path, job.rec)
        elif spare_remote:
            return self.remote.submit(job.path, job.mode, job.rec)
        else:
            f = self._submit_local(job.path, job.mode, job.rec)
        if self.remote is not None:  # the summary says who analysed what, here included
            f.add_done_callback(self.remote.note_local)
        return f

    def _submit_local(
        self, path: str, mode: str, rec: int | None, prepared: Prepared | None = None
    ) -> Future[WorkerResult]:
        """A job on this machine: the scan's workers, in this process (``--workers 0``), or, for
        a remote job that must run here while the scan has no workers, one fallback worker."""
        fn: Any = process_file
        args: tuple[Any, ...] = (path, mode, rec)
        if mode == "infer":
            fn, args = infer_job, (path, prepared)
        if self.remote is not None and self.worker_count() == 0:
            if self._fallback is None:
                self._fallback = WorkerPool(
                    1, self.worker_initargs(self.opts, self.db_path, self.want)
                )
            return self._fallback.get().submit(fn, *args)
        if self.worker_count() == 0:
            o = self.opts
            key = (self.db_path, tuple(o.models), o.profile, tuple(sorted(self.want.items())))
            key += (o.threads, o.batch, o.provider)
            initargs = (self.db_path, o.models, o.profile, self.want, o.threads or 0)
            initargs += (max(o.batch, 4), o.provider, log.getEffectiveLevel(), 0)
            return run_in_process(key, initargs, fn, *args)
        f = self.pool.get().submit(fn, *args)
        self._local_busy += 1

        def done(_: Future[WorkerResult]) -> None:
            self._local_busy -= 1

        f.add_done_callback(done)
        return f

    # -- the scan -------------------------------------------------------------------------------

    def run(self) -> ScanSummary:
        """Walk, decide, analyse, store, write, calibrate; returns the summary."""
        from nomarr import tagio

        t0 = time.perf_counter()
        s = self.summary
        roots = [os.path.abspath(r) for r in self.opts.roots]
        if self.opts.write:
            for p in tagio.recover(self.journal_dir):
                log.warning("finished an interrupted tag write", extra={"path": p})
        scan_id = self.store.begin_scan(roots)
        w = self._walk(roots)
        td = time.perf_counter()
        plan = make_plan(self.store, w, roots, self.opts, self.want, s)
        s.time["decide"] = time.perf_counter() - td

        total = len(plan.jobs) + len(plan.write_only)
        prog = Progress(total, self.progress_enabled)
        done = 0
        if self.on_progress is not None:
            self.on_progress(0, total, "")

        def one_done(path: str) -> None:
            nonlocal done
            done += 1
            prog.update(done, os.path.basename(path))
            if self.on_progress is not None:
                self.on_progress(done, total, path)

        tp = time.perf_counter()
        try:
            for tid, path in plan.write_only:
                if self.cancelled():
                    break
                self._write(tid, path, trust_db=True)
                one_done(path)
            Dispatcher(self, plan.jobs, one_done).run()
        finally:
            prog.close()
            if self.central is not None:
                self.central.close()
                s.time["central_batches"] = float(len(self.central.batches))
            if self._own_pool:
                self.pool.shutdown(wait=True)
            if self._fallback is not None:
                self._fallback.shutdown(wait=True)
            if self.remote is not None:
                s.remote = self.remote.report()
                self.remote.close()
        s.time["process"] = time.perf_counter() - tp

        with self.store.tx():
            s.missing = self.store.mark_missing(tid for tid, *_ in plan.gone.values())
            self.store.gc_recordings()
        self._calibrate(roots)
        s.elapsed_s = time.perf_counter() - t0
        for k, v in self.stages.as_dict().items():
            s.time[f"main.{k}"] = v
        for k, v in self.worker_stages.as_dict().items():
            s.time[f"worker.{k}"] = v
        s.time["workers"] = float(self.worker_count())
        self.store.end_scan(scan_id, s.to_dict())
        return s

    def _walk(self, roots: list[str]) -> WalkResult:
        s = self.summary
        tw = time.perf_counter()
        w = walk(roots, vanished_ok=self.opts.vanished_ok, confine=self.confine_roots(roots))
        s.files = len(w.files)
        s.walk_entries = w.entries
        s.walk_errors = [{"path": p, "reason": r} for p, r in w.errors]
        s.time["walk"] = time.perf_counter() - tw
        if self.opts.write:
            _remove_stray_temps(w.stray_temps)
        return w

    def _calibrate(self, roots: list[str]) -> None:
        """Recalibrate tiers when the library grew enough; rewrite only files whose tier moved."""
        s = self.summary
        tc = time.perf_counter()
        s.calibration = calibrate(self.store)
        self._thresholds = None
        changed = any(v.get("changed") for v in s.calibration.values())
        if self.opts.write and not self.cancelled() and changed:
            s.retiered = self._retier(roots)
        s.time["calibrate"] = time.perf_counter() - tc


def _remove_stray_temps(temps: list[str]) -> None:
    """A tag write killed between creating its temp copy and the atomic rename leaves
    ``.NAME.nomarr-tmp`` beside the file; the original is intact. tagio removes such a stray
    before its next write of NAME, but a file whose tags are current is never written again, so
    the scan removes them."""
    for tmp in temps:
        try:
            os.unlink(tmp)
            log.info("removed a stray temp file from an interrupted tag write", extra={"path": tmp})
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove stray temp file", extra={"path": tmp, "error": str(e)})
