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
from pathlib import Path
from typing import Any

import numpy as np

from nomarr.fingerprint import Fingerprint, match_recording
from nomarr.library import desired_tags, is_current, tags_hash
from nomarr.pipeline.profiles import Profile
from nomarr.scan.options import ScanOptions, ScanSummary
from nomarr.share.exchange import adopt
from nomarr.store import Analysis, Store
from nomarr.workers import WorkerStat

log = logging.getLogger("nomarr.scan")


def _track_fields(res: dict[str, Any], rec: int) -> dict[str, Any]:
    """The track columns a worker result fills (probe, identifiers read from the tags)."""
    ids = res.get("ids") or {}
    fields: dict[str, Any] = dict(
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
    if res.get("fp") is not None:
        fields["fingerprint"] = np.asarray(res["fp"], dtype=np.uint32)
    return fields


class Applier:
    """The scanner's writing half (a base of :class:`~nomarr.scan.scanner.Scanner`)."""

    store: Store
    summary: ScanSummary
    opts: ScanOptions
    profile: Profile
    want: dict[str, str]
    journal_dir: Path
    _thresholds: dict[str, dict[str, tuple[float, float]]] | None

    def _fail(self, path: str, reason: str) -> None:
        self.summary.failed += 1
        self.summary.failures.append({"path": path, "reason": reason})
        log.warning("file failed", extra={"path": path, "reason": reason})

    def _tiers(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Tier thresholds, read once per calibration rather than once per written file."""
        if self._thresholds is None:
            self._thresholds = self.store.tier_thresholds()
        return self._thresholds

    def identified(self, res: dict[str, Any]) -> int | None:
        """The stored recording an identified file belongs to, looked up again in this process
        (the worker's view of the database may predate analyses this scan has stored since)."""
        rec = res.get("match")
        if rec is not None and self.store.recording_exists(rec):
            return int(rec)
        fp = res.get("fp")
        if fp is None:
            return None
        f = Fingerprint(res.get("fp_duration") or 0.0, np.asarray(fp, dtype=np.uint32))
        rec = match_recording(self.store, f)
        if rec is None:  # an analysis imported from another agent (nomarr analyses import)?
            rec = adopt(self.store, f, self.want)
            if rec is not None:
                self.summary.adopted += 1
        return rec

    def is_current(self, rec: int) -> bool:
        """Whether a stored recording's analyses are what this scan would record."""
        return is_current(self.store.analyses(rec), self.want)

    def handle(self, res: dict[str, Any], st_walk: os.stat_result) -> int | None:
        """Store one worker result (and write the file's tags); returns its recording id, or
        None when the file failed."""
        kind = res.get("kind")
        if kind in ("failed", "changed"):
            self._failed(res)
            return None
        with self.store.tx():
            stored = self._store(res)
        if stored is None:
            return None
        tid, rec = stored
        s = self.summary
        if kind == "analysed":
            s.analysed += 1
            s.audio_seconds += float(res.get("duration") or 0.0)
            for k, v in (res.get("timing") or {}).items():
                if k in ("decode_mel", "inference", "plan", "identify"):
                    s.time[f"worker_{k}"] = s.time.get(f"worker_{k}", 0.0) + v
            for wmsg in res.get("warnings") or []:
                log.info("analysis warning", extra={"path": res["path"], "warning": wmsg})
        else:
            s.reused += 1
        if self.opts.write:
            self._write(tid, res["path"])
        return rec

    def _failed(self, res: dict[str, Any]) -> None:
        """A failed or changed file: reported; a failure that is the file's own is stored, so an
        unchanged broken file is not decoded again on every scan."""
        path = res["path"]
        if res.get("vanished"):
            self._fail(path, res["error"])
            return
        if res.get("kind") == "changed":
            self._fail(path, res["error"] + " (will be retried next scan)")
            return
        self._fail(path, res["error"])
        try:
            st = os.stat(path)
        except OSError:
            return
        with self.store.tx():
            self.store.set_failed(path, st, res["error"])

    def _store(self, res: dict[str, Any]) -> tuple[int, int] | None:
        """The result's track, recording and analyses into the store (inside the caller's
        transaction); (track id, recording id), or None when the file must wait a scan."""
        store = self.store
        path = res["path"]
        kind = res.get("kind")
        fp = res.get("fp")
        rec = res.get("match")
        if rec is not None and not store.recording_exists(rec):
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
        tid = store.upsert_track(path, WorkerStat(res["stat"]), **_track_fields(res, rec))  # type: ignore[arg-type]
        if kind == "analysed":
            for r in res["results"]:
                a = Analysis(
                    rec,
                    r["model_id"],
                    r["prefix"],
                    r["provenance"],
                    self.profile.name,
                    res["windows"],
                    r["n_patches"],
                    r["provider"],
                    r["scores"],
                )
                store.put_analysis(rec, a, r["embedding"])
        return tid, int(rec)

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
                store.set_write_epoch(tid, f"{h}:{epoch}")
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
