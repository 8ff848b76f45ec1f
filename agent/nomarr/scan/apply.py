"""Applying worker results: the store, the tags in the files, and re-tiering after calibration.

The main process is the single writer: each file's database change is one transaction, its tags
are written through :mod:`nomarr.tagio` (copy → tag → verify → atomic replace), and the write is
recorded only after it happened, so a kill at any moment leaves at worst a file whose tags the next
scan re-checks and finds current.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from nomarr_client import tags as grammar

from nomarr.fingerprint import Fingerprint, match_recording
from nomarr.library import desired_std, desired_tags, recording_reusable, tags_hash
from nomarr.pipeline.profiles import Profile
from nomarr.results import WorkerResult, WorkerStat
from nomarr.scan.options import ScanOptions, ScanSummary
from nomarr.share.exchange import adopt
from nomarr.stages import Stages, collecting
from nomarr.store import Analysis, Store

log = logging.getLogger("nomarr.scan")

# TagError reasons that belong to the file (its content, its kind, where it leads), not to the
# moment (a full disk, a file vanishing): such a file is not tried again while it is unchanged
FILE_OWN_WRITE_FAILURES = frozenset({"corrupt", "unsupported", "verify-failed", "outside-roots"})


def _track_fields(res: WorkerResult, rec: int) -> dict[str, Any]:
    """The track columns a worker result fills (probe, identifiers read from the tags)."""
    f = res.facts
    ids = f.ids if f is not None else {}
    fields: dict[str, Any] = dict(
        duration=res.ended_at if res.ended_at is not None else (f.duration if f else None),
        container=f.container if f else None,
        codec=f.codec if f else None,
        sample_rate=f.sample_rate if f else None,
        channels=f.channels if f else None,
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
    if res.fp is not None:
        fields["fingerprint"] = np.asarray(res.fp, dtype=np.uint32)
    return fields


def _count_descriptors(acc: dict[str, Any], doc: dict[str, Any] | None) -> None:
    """Add one analysed file's descriptors to the scan summary (``--json``'s ``descriptors``)."""
    if not doc:
        return
    for name, value in (("tempo", "bpm"), ("key", "key"), ("loudness", "integrated_lufs")):
        part = doc.get(name) or {}
        if part.get(value) is not None:
            acc[name] += 1
        elif part.get("reason"):
            why = acc["none"].setdefault(name, {})
            why[part["reason"]] = why.get(part["reason"], 0) + 1


class Applier:
    """The scanner's writing half (a base of :class:`~nomarr.scan.scanner.Scanner`)."""

    store: Store
    summary: ScanSummary
    opts: ScanOptions
    profile: Profile
    want: dict[str, str]
    journal_dir: Path
    stages: Stages  # the main process's own stages
    worker_stages: Stages  # summed from the workers' results
    _thresholds: dict[str, dict[str, tuple[float, float]]] | None

    def confine_roots(self, roots: list[str] | None = None) -> list[str]:
        """The library roots: no symlink is followed, and no tag written, outside them."""
        if self.opts.confine is not None:
            return [os.path.abspath(r) for r in self.opts.confine]
        return [os.path.abspath(r) for r in (roots if roots is not None else self.opts.roots)]

    def _fail(self, path: str, reason: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append({"path": path, "reason": reason})
        log.warning("file failed", extra={"path": path, "reason": reason})

    def _tiers(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Tier thresholds, read once per calibration rather than once per written file."""
        if self._thresholds is None:
            self._thresholds = self.store.tier_thresholds()
        return self._thresholds

    def identified(self, res: WorkerResult) -> int | None:
        """The stored recording an identified file belongs to, looked up again in this process
        (the worker's view of the database may predate analyses this scan has stored since)."""
        rec = res.match
        if rec is not None and self.store.recording_exists(rec):
            return int(rec)
        if res.fp is None:
            return None
        f = Fingerprint(res.fp_duration or 0.0, np.asarray(res.fp, dtype=np.uint32))
        with self.stages("match"):
            rec = match_recording(self.store, f)
        if rec is None:  # an analysis imported from another agent (nomarr analyses import)?
            rec = adopt(self.store, f, self.want)
            if rec is not None:
                self.summary.adopted += 1
        return rec

    def reusable(self, rec: int) -> bool:
        """Whether a stored recording's analyses may serve another of its files: what this scan
        would record, from a complete decode (:func:`nomarr.library.reusable`)."""
        return recording_reusable(self.store, rec, self.want)

    def record_stages(self, res: WorkerResult) -> None:
        """A worker result's stage times into the scan's profile (``worker.<stage>``)."""
        self.worker_stages.merge(res.stages)

    def handle(self, res: WorkerResult, st_walk: os.stat_result) -> int | None:
        """Store one worker result (and write the file's tags); returns its recording id, or
        None when the file failed."""
        if res.kind == "analysed" and res.silent:
            # nothing to describe: scores of silence would be tags about no music
            res = replace(
                res, kind="failed", error="digital silence: nothing to analyse (not tagged)"
            )
        if res.kind in ("failed", "changed"):
            self._failed(res)
            return None
        with self.stages("database"), self.store.tx():
            stored = self._store(res)
        if stored is None:
            return None
        tid, rec, replaced = stored
        s = self.summary
        if res.kind == "analysed":
            s.analysed += 1
            s.audio_seconds += float(res.facts.duration or 0.0) if res.facts else 0.0
            _count_descriptors(s.descriptors, res.descriptors)
            for wmsg in res.warnings:
                log.info("analysis warning", extra={"path": res.path, "warning": wmsg})
        else:
            s.reused += 1
        if self.opts.write:
            self._write(tid, res.path)
            if replaced:  # a better analysis of the recording: its other files follow
                for t in self.store.tracks_of_recordings([rec]).get(rec, []):
                    if t.id != tid and t.status == "ok":
                        self._write(t.id, t.path)
        return rec

    def _failed(self, res: WorkerResult) -> None:
        """A failed or changed file: reported; a failure that is the file's own is stored, so an
        unchanged broken file is not decoded again on every scan."""
        path, err = res.path, res.error or "failed"
        if res.vanished:
            self._fail(path, err)
            return
        if res.kind == "changed":
            self._fail(path, err + " (will be retried next scan)")
            return
        self._fail(path, err)
        try:
            st = os.stat(path)
        except OSError:
            return
        with self.stages("database"), self.store.tx():
            self.store.set_failed(path, st, err)

    def _store(self, res: WorkerResult) -> tuple[int, int, bool] | None:
        """The result's track, recording and analyses into the store (inside the caller's
        transaction); (track id, recording id, whether a stored analysis of the recording was
        replaced by a better one), or None when the file must wait a scan.

        A fresh analysis replaces a stored one of the same provenance only when it ranks higher
        (:meth:`~nomarr.store.Analysis.rank`: complete over partial, then more audio decoded), so
        a damaged copy never displaces an intact one, whichever the scan met first."""
        store = self.store
        fp = None if res.fp is None else np.asarray(res.fp, dtype=np.uint32)
        rec = res.match
        if rec is not None and not store.recording_exists(rec):
            rec = None
        if res.kind == "analysed" and rec is None and fp is not None:
            # a duplicate analysed by another worker in this same scan
            rec = match_recording(store, Fingerprint(res.fp_duration or 0.0, fp))
        if rec is None:
            if res.kind == "reuse":  # the recording vanished since the worker looked: analyse again
                self._fail(res.path, "matched recording disappeared; will be analysed next scan")
                return None
            keys = Fingerprint(0.0, fp).keys() if fp is not None else set()
            rec = store.new_recording(res.fp_duration, keys)
        if res.facts is None:
            raise ValueError(f"{res.path}: worker result without file facts")
        tid = store.upsert_track(res.path, WorkerStat(res.facts.stat), **_track_fields(res, rec))  # type: ignore[arg-type]
        replaced = False
        if res.kind == "analysed":
            stored = store.analyses(rec)
            put = False
            for r in res.outputs:
                a = Analysis(
                    rec,
                    r.model_id,
                    r.prefix,
                    r.provenance,
                    self.profile.name,
                    res.windows,
                    r.n_patches,
                    r.provider,
                    r.scores,
                    complete=res.complete,
                    decoded_s=res.decoded_s,
                )
                old = stored.get(a.model_id)
                if old is not None and grammar.is_current(
                    {a.model_id: old.provenance}, {a.model_id: a.provenance}
                ):
                    if old.rank() >= a.rank():
                        continue  # the stored one represents the recording at least as well
                    replaced = True
                store.put_analysis(rec, a, r.embedding)
                put = True
            if res.descriptors is not None and (put or not res.outputs):
                store.put_descriptors(rec, res.descriptors, res.timeline)
            if not res.complete:
                log.warning("partial decode", extra={"path": res.path, "decoded_s": res.decoded_s})
        return tid, int(rec), replaced

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
        desc = store.descriptors(t.recording_id)
        nom, mood = desired_tags(
            store.analyses(t.recording_id).values(), self._tiers(), self.opts.mood_field, desc
        )
        std = desired_std(desc) if self.opts.std_fields else {}
        h = tags_hash(nom, mood, std)
        last = store.last_write(tid)
        if trust_db and last is not None and last[0].split(":")[0] == h:
            with store.tx():
                store.set_write_epoch(tid, f"{h}:{epoch}")
            return False
        if self._refused_before(tid, path, epoch):
            return False
        tw = time.perf_counter()
        try:
            with collecting(self.stages), self.stages("tags"):
                wr = tagio.write_tags(
                    path,
                    nom,
                    mood=mood,
                    mood_owned=last[1] if last else None,
                    journal_dir=self.journal_dir,
                    verify=self.opts.verify_writes,
                    within=self.confine_roots(),
                    std=std,
                    std_owned=store.last_std(tid),
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
                if e.reason in FILE_OWN_WRITE_FAILURES:
                    self._remember_unwritable(tid, path, epoch, e)
            return False
        s.time["write"] = s.time.get("write", 0.0) + time.perf_counter() - tw
        try:
            st = os.stat(path)
        except OSError:
            return False
        with self.stages("database"), store.tx():
            store.record_write(
                tid,
                nom,
                f"{h}:{epoch}",
                wr.mood_written if wr.mood_written is not None else (last[1] if last else None),
                wr.method,
            )
            if wr.std_owned is not None:
                store.set_last_std(tid, wr.std_owned)
            store.touch_stat(tid, st)
        if wr.changed:
            s.written += 1
        else:
            s.tags_current += 1
        return wr.changed

    def _refused_before(self, tid: int, path: str, epoch: int) -> bool:
        """Whether this very version of the file already refused its tags at this tier epoch
        (another file of its recording got a better analysis: this one still cannot take it)."""
        f = self.store.write_failure(tid)
        if f is None or self.opts.retry_failed:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (f[0], f[1], f[2]) == (st.st_size, st.st_mtime_ns, epoch)

    def _remember_unwritable(self, tid: int, path: str, epoch: int, e: Exception) -> None:
        """A write refused for a reason that is the file's own: not retried while unchanged."""
        try:
            st = os.stat(path)
        except OSError:
            return
        with self.store.tx():
            self.store.record_write_failure(
                tid, st.st_size, st.st_mtime_ns, epoch, getattr(e, "detail", str(e))
            )

    def _retier(self, roots: list[str]) -> int:
        """After a recalibration: rewrite only the files whose tier keys changed."""
        n = 0
        for t in self.store.tracks(under=roots):
            before = self.store.last_write(t.id)
            if self._write(t.id, t.path, trust_db=True) and before is not None:
                n += 1
        return n
