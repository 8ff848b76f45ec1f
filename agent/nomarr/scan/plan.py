"""Deciding, per file, what a scan must do — before any worker starts.

One walk and a handful of whole-library queries classify every file: unchanged and current (skip,
or only rewrite tags after a recalibration), failed and unchanged (report, unless retrying), stale
(same recording, new models or profile: analyse), moved (same inode, size and mtime at a new path:
no fingerprint needed), or new/changed (identify by fingerprint, then maybe analyse). Files the
walk no longer sees are gone, unless they lie under a folder that could not be read.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nomarr_client import tags as grammar

from nomarr.results import WorkerResult
from nomarr.scan.options import ScanOptions, ScanSummary
from nomarr.store import Store, enc_path
from nomarr.walk import WalkResult


@dataclass
class Job:
    """One file on its way through the workers: ``key`` names the recording whose analysis this
    job owns (see :mod:`nomarr.scan.dispatch`), ``ident`` is its earlier identification result
    (whose ``prepared`` patches an ``infer`` job runs the models on)."""

    path: str
    st: os.stat_result
    mode: str  # identify | analyze | infer
    rec: int | None
    key: tuple[str, Any] | None = None
    ident: WorkerResult | None = None
    alone: bool = False  # re-run by itself after a worker died with it in flight


@dataclass
class Plan:
    """What the scan will do: worker jobs, tag-only rewrites, and the tracks that are gone."""

    jobs: deque[Job] = field(default_factory=deque)
    write_only: list[tuple[int, str]] = field(default_factory=list)
    gone: dict[bytes, tuple[int, int, int, int | None]] = field(default_factory=dict)


@dataclass
class _Library:
    """The stored state a plan is made against, read once per scan."""

    known: dict[bytes, tuple[int, int, int, int | None]]  # path → (track, size, mtime, recording)
    provs: Mapping[int, Mapping[str, str]]  # recording → model → provenance
    status: dict[int, tuple[str, str | None]]
    written: dict[int, str]  # track → "tags hash:tier epoch" of the last write
    epoch: int
    unwritable: dict[int, tuple[int, int, int, str]]  # track → failed write (size, mtime, epoch)


def make_plan(
    store: Store,
    w: WalkResult,
    roots: list[str],
    opts: ScanOptions,
    want: Mapping[str, str],
    summary: ScanSummary,
) -> Plan:
    """Classify every walked file (counting skips and unchanged failures into ``summary``)."""
    lib = _Library(
        known=store.snapshot(roots),
        provs=store.provenances(),
        status=store.statuses(),
        written=store.write_hashes(),
        epoch=int(store.meta("tier_epoch", "0") or 0),
        unwritable=store.write_failures(),
    )
    plan = Plan()
    seen: set[bytes] = set()
    new_files: list[tuple[str, os.stat_result]] = []
    for path, st in w.files:
        raw = enc_path(path)
        seen.add(raw)
        k = lib.known.get(raw)
        if k is None:
            new_files.append((path, st))
        else:
            _known_file(plan, lib, path, st, k, opts, want, summary)
    plan.gone = {
        raw: v
        for raw, v in lib.known.items()
        if raw not in seen and not _under_any(raw, w.unreadable_dirs)
    }
    _new_files(store, plan, lib, new_files, opts, want, summary)
    return plan


def _current(lib: _Library, rec: int | None, want: Mapping[str, str]) -> bool:
    return rec is not None and grammar.is_current(lib.provs.get(rec, {}), want)


def _tags_current(lib: _Library, tid: int, opts: ScanOptions) -> bool:
    """Whether a file's last recorded write is of this tier epoch (or tags are not written)."""
    return not opts.write or lib.written.get(tid, "").endswith(f":{lib.epoch}")


def _unwritable(lib: _Library, tid: int, st: os.stat_result, opts: ScanOptions) -> bool:
    """Whether this very version of the file already refused its tags at this tier epoch."""
    f = lib.unwritable.get(tid)
    return (
        f is not None
        and not opts.retry_failed
        and (f[0], f[1], f[2]) == (st.st_size, st.st_mtime_ns, lib.epoch)
    )


def _known_file(
    plan: Plan,
    lib: _Library,
    path: str,
    st: os.stat_result,
    k: tuple[int, int, int, int | None],
    opts: ScanOptions,
    want: Mapping[str, str],
    summary: ScanSummary,
) -> None:
    """A file the store has at this path: skip, rewrite tags, re-analyse, or identify again."""
    tid, size, mtime, rec = k
    unchanged = size == st.st_size and mtime == st.st_mtime_ns
    stt, err = lib.status.get(tid, ("new", None))
    if unchanged and stt == "failed" and not opts.retry_failed:
        summary.failed_unchanged += 1
        summary.failures.append(
            {"path": path, "reason": f"{err} (unchanged since it failed; --retry-failed)"}
        )
    elif unchanged and stt == "ok" and _current(lib, rec, want):
        if _tags_current(lib, tid, opts):
            summary.skipped += 1
        elif _unwritable(lib, tid, st, opts):
            summary.unwritable_unchanged += 1
            summary.failures.append(
                {
                    "path": path,
                    "reason": f"tag write failed: {lib.unwritable[tid][3]} "
                    "(unchanged since; tags kept in the database; --retry-failed)",
                }
            )
        else:
            plan.write_only.append((tid, path))
    elif unchanged and stt == "ok" and rec is not None:
        plan.jobs.append(Job(path, st, "analyze", rec))  # stale: same recording, new models
    else:
        plan.jobs.append(Job(path, st, "identify", None))


def _new_files(
    store: Store,
    plan: Plan,
    lib: _Library,
    new_files: list[tuple[str, os.stat_result]],
    opts: ScanOptions,
    want: Mapping[str, str],
    summary: ScanSummary,
) -> None:
    """Files new at their path: moves within a filesystem keep inode, size and mtime, so a gone
    track with the same four is moved without a fingerprint; the rest are identified."""
    by_inode = store.inodes_of(plan.gone) if new_files and plan.gone else {}
    for path, st in new_files:
        hit = by_inode.pop((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), None)
        if hit is None:
            plan.jobs.append(Job(path, st, "identify", None))
            continue
        raw, tid, rec = hit
        plan.gone.pop(raw, None)
        with store.tx():
            store.move_track(tid, path, st)
        summary.moved += 1
        if _current(lib, rec, want) and lib.status.get(tid, ("",))[0] == "ok":
            if _tags_current(lib, tid, opts):
                summary.skipped += 1
            else:
                plan.write_only.append((tid, path))
        else:
            plan.jobs.append(Job(path, st, "identify", None))


def _under_any(raw: bytes, dirs: list[str]) -> bool:
    for d in dirs:
        pre = enc_path(d).rstrip(b"/") + b"/"
        if raw.startswith(pre):
            return True
    return False
