"""Keeping the workers fed: the scan's job loop.

Two rules shape it. **One analysis per recording at a time**: files identified as a recording that
is being analysed wait (their identification kept) and reuse its result when it lands, so three
copies of one new album track are analysed once; keys are ``("rec", id)`` for a stored recording
and ``("new", path)`` for a new one, and the fingerprints of new recordings in flight are kept to
match later files against. **A dead worker blames no file by itself**: every job in flight fails
when one worker dies (the OOM killer, a decoder crash), so each is re-run alone before its file is
reported as the one that crashes.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import numpy as np

from nomarr.fingerprint import Fingerprint, same_recording
from nomarr.scan.plan import Job

if TYPE_CHECKING:
    from nomarr.scan.scanner import Scanner

log = logging.getLogger("nomarr.scan")

Key = tuple[str, Any]


def merge_identity(res: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any]:
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


class Dispatcher:
    """Runs a plan's jobs through the scanner's workers; results go to ``scanner.handle``."""

    def __init__(self, scanner: Scanner, jobs: deque[Job], on_done: Callable[[str], None]) -> None:
        self.sc = scanner
        self.jobs = jobs
        self.on_done = on_done  # called once per finished file (the progress line)
        self.in_flight: dict[Future[dict[str, Any]], Job] = {}
        self.pools: dict[Future[dict[str, Any]], Any] = {}  # the executor each job went to
        self.waiting: dict[Key, list[tuple[str, Any, os.stat_result]]] = {}
        self.new_fps: dict[Key, Fingerprint] = {}
        self.suspects: deque[Job] = deque()  # in flight when a worker died: re-run one at a time

    @property
    def limit(self) -> int:
        """Jobs kept in flight: twice what can run at once (remote workers may join mid-scan)."""
        return max(2, 2 * self.sc.capacity())

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        try:
            f = self.sc.submit(job.path, job.mode, job.rec)
        except BrokenProcessPool:  # a worker died while idle: start a fresh pool
            self.sc.summary.worker_crashes += 1
            self.sc.pool.reset()
            f = self.sc.submit(job.path, job.mode, job.rec)
        self.in_flight[f] = job
        self.pools[f] = self.sc.executor

    def start_analysis(
        self,
        path: str,
        st: os.stat_result,
        key: Key | None,
        ident: dict[str, Any] | None,
        rec: int | None,
    ) -> None:
        if key is not None:
            self.waiting.setdefault(key, [])
        self.submit(Job(path, st, "analyze", rec, key, ident))

    def _fill(self) -> None:
        """Start queued jobs up to the in-flight limit (none while a suspect runs alone)."""
        if self.suspects and not self.in_flight:
            job = self.suspects.popleft()
            job.alone = True
            self.submit(job)
        alone = self.suspects or any(j.alone for j in self.in_flight.values())
        while self.jobs and not alone and len(self.in_flight) < self.limit:
            job = self.jobs.popleft()
            if job.mode == "analyze" and job.key is None and job.rec is not None:
                key: Key = ("rec", job.rec)
                if key in self.waiting:
                    self.waiting[key].append(
                        ("job", Job(job.path, job.st, job.mode, job.rec), job.st)
                    )
                    continue
                self.waiting[key] = []
                job = Job(job.path, job.st, job.mode, job.rec, key)
            self.submit(job)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Until every job has finished (or the scan was cancelled and the in-flight ones did)."""
        while self.jobs or self.in_flight or self.suspects:
            if self.jobs and self.sc.cancelled():  # shutting down: finish in-flight, start nothing
                log.info(
                    "scan cancelled; finishing the files in flight", extra={"left": len(self.jobs)}
                )
                self.jobs.clear()
                self.suspects.clear()
                if not self.in_flight:
                    break
            self._fill()
            finished, _ = wait(list(self.in_flight), return_when=FIRST_COMPLETED)
            for f in finished:
                self._finished(f)

    def _finished(self, f: Future[dict[str, Any]]) -> None:
        job = self.in_flight.pop(f)
        pool = self.pools.pop(f, None)
        try:
            res = f.result()
        except (Exception, CancelledError) as e:  # a dead worker must not end the scan
            if pool is not None and pool is self.sc.executor:
                self.sc.summary.worker_crashes += 1
                log.warning(
                    "a worker process died; retrying its files one by one", extra={"error": str(e)}
                )
                self.sc.pool.reset()
            if not job.alone:
                self.suspects.append(job)
                return
            res = {
                "path": job.path,
                "kind": "failed",
                "error": f"worker crashed while processing this file ({type(e).__name__}: {e})",
            }
        if res.get("kind") == "identified":
            if self._identified(job, res):
                return  # waiting for, or running, the recording's analysis
        else:
            if job.ident is not None:
                res = merge_identity(res, job.ident)
            rec = self.sc.handle(res, job.st)
            self._release(job.key, rec)
        self.on_done(job.path)

    def _identified(self, job: Job, res: dict[str, Any]) -> bool:
        """A file identified: reuse a current analysis (False: the file is done), or join or start
        its recording's analysis (True: it finishes later)."""
        rec = self.sc.identified(res)
        if rec is not None and self.sc.is_current(rec):
            self.sc.handle({**res, "kind": "reuse", "match": rec}, job.st)
            return False
        fp = res.get("fp")
        key: Key | None = ("rec", rec) if rec is not None else None
        if key is None and fp is not None:
            mine = Fingerprint(res.get("fp_duration") or 0.0, np.asarray(fp, dtype=np.uint32))
            key = next((k for k, o in self.new_fps.items() if same_recording(mine, o)), None)
            if key is None:
                key = ("new", job.path)
                self.new_fps[key] = mine
        if key is not None and key in self.waiting:
            self.waiting[key].append(("result", {**res, "match": rec}, job.st))
            return True
        self.start_analysis(job.path, job.st, key, {**res, "match": rec}, rec)
        return True

    def _release(self, key: Key | None, rec: int | None) -> None:
        """The analysis owning ``key`` ended: waiting files reuse it, or the next one runs."""
        if key is None:
            return
        queue = self.waiting.pop(key, [])
        fp = self.new_fps.pop(key, None)
        if rec is None:  # it failed: hand the analysis to the next waiting file
            if not queue:
                return
            kind, item, st = queue.pop(0)
            self.waiting[key] = queue
            if fp is not None:
                self.new_fps[key] = fp
            if kind == "result":
                self.start_analysis(item["path"], st, key, item, item.get("match"))
            else:
                self.submit(Job(item.path, item.st, item.mode, item.rec, key))
            return
        for kind, item, st in queue:
            if kind == "result":
                self.sc.handle({**item, "kind": "reuse", "match": rec}, st)
                self.on_done(item["path"])
            else:
                self.jobs.appendleft(item)  # an unchanged file of a re-analysed recording
