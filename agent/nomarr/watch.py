"""The part of ``nomarr serve`` that notices library changes and hands paths to the scanner.

The watcher never analyses anything: it decides *which paths* are worth a look and calls
``submit(paths, reason)``; the scanner walks those paths, compares them with the database and does
the work. That split keeps this module small and lets the scanner stay the only place that knows
what "changed" means (size + mtime, inode moves, fingerprints).

The shape, and why:

- **Event mode** (``watch="event"``, the default) uses :func:`watchfiles.awatch` (inotify on
  Linux). It is cheap on an idle library and reacts within seconds.
- **Settle before submitting.** inotify reports a file the moment it is created, long before a
  copy, a download or a rip has finished. Analysing a half-written file wastes minutes and stores
  garbage, so an added or modified file is only submitted once its ``(size, mtime_ns)`` has stayed
  the same for ``settle_s``; every new event or stat change postpones it again. A directory that
  appears (moved or copied in) is submitted as the directory, the scanner walks it, but only once
  nothing under it has changed for ``settle_s`` (capped at :data:`MAX_SETTLE_S`, so a folder that
  is written forever is still looked at eventually). A path that vanishes while settling is
  submitted as a deletion.
- **Batch.** Paths that become ready within ``debounce_s`` of each other go out in one
  ``submit`` call, sorted and deduplicated: one scanner wake-up per burst instead of one per file,
  and, more importantly, a rename (which inotify/watchfiles report as *delete old + add new*)
  reaches the scanner with both paths in the same batch, which is what lets it recognise the move
  by inode and keep the analysis instead of dropping the old track and re-analysing the new one.
  To make that happen, deletions that arrive together with additions are held back until those
  additions have settled; deletions on their own go out after the debounce only.
- **Poll mode** (``watch="poll"``) submits the whole root every ``poll_interval_s`` and lets the
  scanner's cheap unchanged-file check do the rest. It is for roots where inotify does not work:
  network filesystems (NFS, SMB/CIFS, sshfs, 9p: inotify only sees changes made *by this machine*,
  not by the NAS or another client), or when the kernel's inotify watch limit is reached. A root
  that cannot be watched by events falls back to poll mode by itself, with a warning saying why,
  and ``status()`` shows it.
- **Safety-net rescan.** inotify can lose events (queue overflow under a burst, a watch added just
  after a subdirectory was filled), so event mode also submits the whole root every
  ``rescan_interval_s`` (default 6 h, 0 disables).
- **A missing root is not an empty library.** A root that is absent (unmounted disk, NAS down) is
  not submitted at all: the watcher logs a warning and waits for it to come back, rather than
  waking the scanner to report thousands of vanished files. When a root that should be watched by
  events comes back, event watching is re-armed.
- **The callback cannot hurt the watcher.** ``submit`` is called on the event loop thread (it must
  be thread-safe and non-blocking, e.g. a queue put); any exception from it is logged and watching
  continues.

Temp files of the tag writer (``.<name>.nomarr-tmp`` beside the file, see :mod:`nomarr.tagio`)
are ignored, as are non-audio files. Note that the tag writer's final atomic replace *is* reported
(as an added audio file), so the scanner sees its own writes come back and must find them current.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat as statmod
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import watchfiles
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchfiles import Change

from nomarr.audio.decode import AUDIO_EXTENSIONS
from nomarr.tagio import TMP_SUFFIX

log = logging.getLogger("nomarr.watch")

WatchMode = Literal["off", "event", "poll"]
Submit = Callable[[list[str], str], None]
"""``submit(paths, reason)``: thread-safe and non-blocking; reason is "event", "poll" or "rescan"."""

MAX_SETTLE_S = 600.0
"""Longest a path waits to settle; after that it is submitted anyway (the scanner copes)."""

NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.glusterfs",
        "fuse.davfs2",
        "fuse.gvfsd-fuse",
    }
)
"""Filesystems where inotify does not see changes made by other machines: poll them instead."""

MAX_RESTARTS_PER_HOUR = 3
"""A watch that breaks while running is restarted this often per hour before polling takes over."""

_STOP_TIMEOUT_S = 5.0


@dataclass
class LibrarySpec:
    """One library root and how to notice its changes."""

    path: str
    """Absolute library root."""
    watch: WatchMode = "event"
    poll_interval_s: float = 900.0
    """Poll mode (configured or fallen back to): submit the whole root this often."""
    rescan_interval_s: float = 6 * 3600.0
    """Event mode: safety-net full rescan this often, since inotify can miss events; 0 disables."""


@dataclass
class _Group:
    """Paths from one watchfiles change set: its deletions wait for its additions to settle."""

    waiting: int = 0
    deletions: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    """An added/modified path that is settling (not yet submitted)."""

    is_dir: bool
    first_seen: float
    stable_since: float
    group: _Group
    sig: tuple[int, ...] | None = None


@dataclass(eq=False)
class _Root:
    """Runtime state of one library root."""

    spec: LibrarySpec
    path: str
    mode: WatchMode
    fallback: str | None = None  # why event mode was given up, None while it is not
    fallback_missing: bool = False  # fell back because the root was absent: re-arm when it is back
    missing: bool = False
    task: asyncio.Task[None] | None = None
    armed: asyncio.Event = field(default_factory=asyncio.Event)
    seed_task: asyncio.Task[None] | None = None
    stop_event: asyncio.Event | None = None
    job_id: str | None = None
    last_event: float | None = None
    last_submit: float | None = None
    last_error: str | None = None
    watching_since: float | None = None  # set once the inotify watches exist
    restarts: list[float] = field(default_factory=list)
    pending: dict[str, _Pending] = field(default_factory=dict, repr=False)
    known_dirs: set[str] = field(default_factory=set, repr=False)


class LibraryWatcher:
    """Watches library roots (inotify or polling) and submits settled, batched paths to the scanner."""

    def __init__(
        self,
        libraries: list[LibrarySpec],
        submit: Submit,
        *,
        debounce_s: float = 1.0,
        settle_s: float = 2.0,
        extensions: frozenset[str] = AUDIO_EXTENSIONS,
        ignore: Callable[[str], bool] | None = None,
    ) -> None:
        """Validate the configuration; nothing runs until :meth:`start`."""
        if debounce_s < 0 or settle_s < 0:
            raise ValueError("debounce_s and settle_s must be >= 0")
        self._roots: list[_Root] = []
        seen: set[str] = set()
        for spec in libraries:
            if spec.watch not in ("off", "event", "poll"):
                raise ValueError(
                    f"{spec.path}: watch must be 'off', 'event' or 'poll', not {spec.watch!r}"
                )
            if spec.watch == "poll" and spec.poll_interval_s <= 0:
                raise ValueError(f"{spec.path}: poll_interval_s must be > 0")
            path = os.path.abspath(spec.path)
            if path in seen:
                raise ValueError(f"{spec.path}: library listed twice")
            seen.add(path)
            self._roots.append(_Root(spec=spec, path=path, mode=spec.watch))
        self._submit = submit
        self._debounce_s = debounce_s
        self._settle_s = settle_s
        self._check_s = max(0.05, min(settle_s / 4, 1.0))
        self._extensions = frozenset(e.lower() for e in extensions)
        self._ignore = ignore
        self._scheduler: AsyncIOScheduler | None = None
        self._settle_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ready: dict[str, _Root] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start event watches and the poll/rescan scheduler; idempotent.

        When it returns, the inotify watches of event roots are in place (watchfiles sets them up
        synchronously on its first step), so changes made afterwards are seen.
        """
        if self._started:
            return
        self._started = True
        self._wake = asyncio.Event()
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        self._scheduler.start()
        self._settle_task = asyncio.create_task(self._settle_loop(), name="nomarr-watch-settle")
        for root in self._roots:
            root.mode, root.fallback = root.spec.watch, None
            root.fallback_missing = root.missing = False
            if root.mode == "poll":
                self._add_job(root, "poll", root.spec.poll_interval_s)
            elif root.mode == "event":
                self._start_event(root)
            log.info("watching library", extra={"path": root.path, "watch": root.mode})
        await self._armed([r for r in self._roots if r.mode == "event"])

    async def stop(self) -> None:
        """Stop watching: end awatch tasks, shut the scheduler down, submit what was ready.

        Paths still settling are dropped (logged): they were not finished, and the next start's
        scan or the scanner's own walk will find them. Idempotent.
        """
        if not self._started:
            return
        self._started = False
        tasks = []
        for root in self._roots:
            if root.stop_event is not None:
                root.stop_event.set()
            if root.task is not None:
                tasks.append(root.task)
            if root.seed_task is not None:
                root.seed_task.cancel()
                tasks.append(root.seed_task)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
            for t in late:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for root in self._roots:
            root.task = root.seed_task = None
            root.stop_event = None
            root.job_id = None
        if self._scheduler is not None:
            if self._scheduler.running:
                self._scheduler.remove_all_jobs()
                self._scheduler.shutdown(wait=False)
                await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback
            self._scheduler = None
        if self._settle_task is not None:
            self._settle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settle_task
            self._settle_task = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush()
        for root in self._roots:
            if root.pending:
                log.info(
                    "dropping unsettled paths at stop",
                    extra={"path": root.path, "count": len(root.pending)},
                )
                root.pending.clear()
            root.known_dirs.clear()
        log.info("library watcher stopped")

    def status(self) -> list[dict[str, Any]]:
        """Per library: configured and effective mode, whether it runs, last event, settling count, errors."""
        out = []
        for root in self._roots:
            if root.mode == "event":
                running = root.task is not None and not root.task.done() and root.armed.is_set()
            elif root.mode == "poll":
                running = self._started and root.job_id is not None
            else:
                running = False
            out.append(
                {
                    "path": root.path,
                    "watch": root.mode,
                    "configured_watch": root.spec.watch,
                    "fallback": root.fallback,
                    "poll_interval_s": root.spec.poll_interval_s,
                    "rescan_interval_s": root.spec.rescan_interval_s,
                    "running": running,
                    "missing": root.missing,
                    "last_event": root.last_event,
                    "last_submit": root.last_submit,
                    "pending": len(root.pending),
                    "last_error": root.last_error,
                }
            )
        return out

    # -- event mode -------------------------------------------------------------------------------

    def _start_event(self, root: _Root, *, rescan: bool = False) -> None:
        """Arm inotify for a root, or fall back to polling when that cannot work.

        ``rescan``: submit the whole root once the watch exists (after a restart, events may
        have been lost in between).
        """
        if not os.path.isdir(root.path):
            self._fall_back(
                root, f"library root {root.path} does not exist or is not a directory", missing=True
            )
            return
        fs = _fs_type(root.path)
        if fs in NETWORK_FS:
            self._fall_back(
                root,
                f"library root is on a network filesystem ({fs}) where inotify does not see remote changes",
            )
            return
        root.mode = "event"
        root.fallback = None
        root.fallback_missing = False
        self._remove_job(root)
        if root.seed_task is not None:
            root.seed_task.cancel()
        root.stop_event = asyncio.Event()
        root.armed = asyncio.Event()
        root.task = asyncio.create_task(
            self._watch(root, root.stop_event, rescan), name=f"nomarr-watch {root.path}"
        )
        if root.spec.rescan_interval_s > 0:
            self._add_job(root, "rescan", root.spec.rescan_interval_s)
        root.seed_task = asyncio.create_task(
            self._seed_dirs(root), name=f"nomarr-watch-dirs {root.path}"
        )

    async def _armed(self, roots: list[_Root]) -> None:
        """Wait until these roots' inotify watches exist (or failed and fell back to polling)."""
        pending = [r.armed.wait() for r in roots if r.task is not None]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), _STOP_TIMEOUT_S)

    async def _seed_dirs(self, root: _Root) -> None:
        """Learn the existing directories, so that one moved away later is recognised as such
        (a vanished path no longer says whether it was a file or a directory)."""
        try:
            dirs = await asyncio.to_thread(_walk_dirs, root.path)
        except Exception:
            log.debug(
                "listing library directories failed", exc_info=True, extra={"path": root.path}
            )
            return
        if root.task is not None:
            root.known_dirs.update(dirs)

    async def _watch(self, root: _Root, stop_event: asyncio.Event, rescan: bool) -> None:
        """Consume awatch change sets for one root until stopped.

        Failing to set the watch up means poll mode; a watch that worked and then broke is
        restarted (a few times an hour) with a rescan of the root.
        """
        debounce_ms = max(50, min(int(self._debounce_s * 1000), 1600))
        # awatch creates its inotify watches synchronously in its first step, and this task's
        # first suspension comes right after; a callback queued now runs only then. So "armed"
        # means: changes made from now on are seen (or the watch failed and we fell back).
        root.watching_since = None
        me = asyncio.current_task()

        def armed() -> None:
            if root.task is me and me is not None and not me.done():
                root.watching_since = time.monotonic()
                if rescan and self._started:
                    self._call_submit([root.path], "rescan", [root])
            root.armed.set()

        asyncio.get_running_loop().call_soon(armed)
        try:
            async for changes in watchfiles.awatch(
                root.path,
                watch_filter=None,
                stop_event=stop_event,
                debounce=debounce_ms,
                step=50,
                ignore_permission_denied=True,
            ):
                try:
                    await self._on_changes(root, changes)
                except Exception as e:  # a bug here must not end watching
                    root.last_error = f"handling changes failed: {e!r}"
                    log.exception("handling file changes failed", extra={"path": root.path})
                if not os.path.isdir(root.path):
                    raise FileNotFoundError(errno.ENOENT, "library root vanished", root.path)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if stop_event.is_set() or not self._started:
                return
            err = _leaf(e)
            missing = isinstance(err, FileNotFoundError) or not os.path.isdir(root.path)
            why = _describe_watch_error(err, root.path)
            if not missing and root.watching_since is not None and self._may_restart(root):
                # It worked and then broke (e.g. a file name that is not valid UTF-8 makes
                # watchfiles raise): start a fresh watch and rescan the root, since events
                # may have been lost. Setting the watch up again failing means poll mode.
                log.warning(
                    f"event watching failed, restarting it and rescanning the library: {why}",
                    extra={"path": root.path},
                )
                root.last_error = why
                self._start_event(root, rescan=True)
                return
            self._fall_back(root, why, missing=missing)

    def _may_restart(self, root: _Root) -> bool:
        """At most :data:`MAX_RESTARTS_PER_HOUR` restarts, then the root is polled instead."""
        now = time.monotonic()
        root.restarts = [t for t in root.restarts if now - t < 3600.0]
        if len(root.restarts) >= MAX_RESTARTS_PER_HOUR:
            return False
        root.restarts.append(now)
        return True

    async def _on_changes(self, root: _Root, changes: set[tuple[Change, str]]) -> None:
        """Turn one change set into settling entries and (possibly held) deletions."""
        kinds: dict[str, set[Change]] = {}
        for change, path in changes:
            if path != root.path and self._wanted_name(path):
                kinds.setdefault(path, set()).add(change)
        if not kinds:
            return
        root.last_event = time.time()
        classified = await asyncio.to_thread(self._classify, kinds)
        if not self._started:
            return
        now = time.monotonic()
        group = _Group()
        touched: _Group | None = None  # an older settling entry this change set added to
        for path, is_dir in classified:
            if is_dir is None:
                if self._is_deletion_wanted(root, path):
                    group.deletions.append(path)
                self._forget(root, path)
                self._drop_dirs_under(root, path)
                continue
            if is_dir:
                root.known_dirs.add(path)
            parent = self._pending_ancestor(root, path)
            if parent is not None:  # the enclosing new directory covers it: just keep it waiting
                parent.stable_since = now
                touched = parent.group
                continue
            entry = root.pending.get(path)
            if entry is not None:
                entry.stable_since = now
                entry.is_dir = entry.is_dir or is_dir
                touched = entry.group
                continue
            root.pending[path] = _Pending(
                is_dir=is_dir, first_seen=now, stable_since=now, group=group
            )
            group.waiting += 1
        if group.waiting:
            self._wake.set()
        elif group.deletions and touched is not None and touched.waiting > 0:
            # e.g. `mkdir new; mv a.flac new/` seen as two change sets: the deletion of a.flac
            # waits for "new" to settle, so the scanner sees both ends of the move together
            touched.deletions.extend(group.deletions)
        elif group.deletions:
            self._make_ready(root, group.deletions)
            group.deletions = []

    def _classify(self, kinds: dict[str, set[Change]]) -> list[tuple[str, bool | None]]:
        """(path, is_dir) for paths to settle, (path, None) for vanished ones; runs in a thread.

        The set watchfiles yields is unordered (a file created and removed within one batch shows
        both), so the path's state *now* decides, not the change kinds.
        """
        out: list[tuple[str, bool | None]] = []
        for path, ks in sorted(kinds.items()):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out.append((path, None))
                continue
            except OSError as e:
                log.debug("cannot stat changed path", extra={"path": path, "error": str(e)})
                continue
            if statmod.S_ISDIR(st.st_mode):
                if Change.added in ks:  # a modified directory (chmod, touch) says nothing new
                    out.append((path, True))
            elif statmod.S_ISREG(st.st_mode) and self._is_audio(path):
                out.append((path, False))
        return out

    def _wanted_name(self, path: str) -> bool:
        """Not one of our temp files, not excluded by the caller's ``ignore`` predicate."""
        name = os.path.basename(path)
        if name.endswith(TMP_SUFFIX) or (name.startswith(".") and TMP_SUFFIX in name):
            return False
        if self._ignore is not None:
            try:
                if self._ignore(path):
                    return False
            except Exception:
                log.exception("ignore predicate failed", extra={"path": path})
        return True

    def _is_audio(self, path: str) -> bool:
        return os.path.splitext(path)[1].lower() in self._extensions

    def _is_deletion_wanted(self, root: _Root, path: str) -> bool:
        """A vanished audio file or directory. Which it was is gone with it, so: an audio suffix, a
        directory this watcher saw, or no suffix at all (most folder names); a vanished
        ``cover.jpg`` is not worth a scanner wake-up."""
        if self._is_audio(path) or path in root.known_dirs:
            return True
        return os.path.splitext(path)[1] == "" or path in root.pending

    def _pending_ancestor(self, root: _Root, path: str) -> _Pending | None:
        d = os.path.dirname(path)
        while len(d) > len(root.path):
            entry = root.pending.get(d)
            if entry is not None and entry.is_dir:
                return entry
            d = os.path.dirname(d)
        return None

    def _forget(self, root: _Root, path: str) -> None:
        """A path (or directory) vanished: stop settling it and anything under it."""
        prefix = path + os.sep
        for p in [p for p in root.pending if p == path or p.startswith(prefix)]:
            self._settled(root, p, root.pending.pop(p), submit_self=False)

    def _drop_dirs_under(self, root: _Root, path: str) -> None:
        if path not in root.known_dirs:
            return
        prefix = path + os.sep
        root.known_dirs.difference_update(
            [d for d in root.known_dirs if d == path or d.startswith(prefix)]
        )

    def _settled(
        self, root: _Root, path: str, entry: _Pending, *, submit_self: bool = True
    ) -> None:
        """An entry left the settling set: submit it, and its group's deletions once it is the last."""
        ready = [path] if submit_self else []
        entry.group.waiting -= 1
        if entry.group.waiting <= 0 and entry.group.deletions:
            ready.extend(entry.group.deletions)
            entry.group.deletions = []
        if ready:
            self._make_ready(root, ready)

    async def _settle_loop(self) -> None:
        """Re-stat settling paths every few tenths of ``settle_s``; release the ones that held still."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._check_s)
            items = [(root, p, e) for root in self._roots for p, e in root.pending.items()]
            if not items:
                self._wake.clear()
                continue
            t = time.monotonic()
            try:
                sigs = await asyncio.to_thread(_signatures, [(p, e.is_dir) for _, p, e in items])
            except Exception:
                log.exception("checking settling paths failed")
                continue
            for (root, path, entry), sig in zip(items, sigs, strict=True):
                if root.pending.get(path) is not entry:
                    continue  # vanished or replaced while we were stat-ing
                if sig is None:
                    del root.pending[path]
                    self._drop_dirs_under(root, path)
                    self._settled(root, path, entry)  # as a deletion: the scanner sees it gone
                elif t - entry.first_seen >= MAX_SETTLE_S:
                    log.warning(
                        "path kept changing, submitting it anyway",
                        extra={"path": path, "waited_s": round(t - entry.first_seen)},
                    )
                    del root.pending[path]
                    self._settled(root, path, entry)
                elif sig != entry.sig:
                    entry.sig = sig
                    entry.stable_since = max(entry.stable_since, t)
                elif t - entry.stable_since >= self._settle_s:
                    del root.pending[path]
                    self._settled(root, path, entry)

    # -- batching ---------------------------------------------------------------------------------

    def _make_ready(self, root: _Root, paths: Iterable[str]) -> None:
        """Queue paths for the next batch; the first one opens a ``debounce_s`` window."""
        for p in paths:
            self._ready[p] = root
        if self._ready and self._flush_handle is None and self._started:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._debounce_s, self._flush
            )

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._ready:
            return
        ready, self._ready = self._ready, {}
        self._call_submit(sorted(ready), "event", set(ready.values()))

    def _call_submit(
        self, paths: list[str], reason: str, roots: set[_Root] | Iterable[_Root]
    ) -> None:
        """Call the scanner's callback; its failure is logged and recorded, never propagated."""
        roots = list(roots)
        try:
            self._submit(paths, reason)
        except Exception as e:
            for root in roots:
                root.last_error = f"submit failed: {e!r}"
            log.exception("submit callback failed", extra={"count": len(paths), "reason": reason})
            return
        now = time.time()
        for root in roots:
            root.last_submit = now
        extra: dict[str, object] = {"count": len(paths), "reason": reason}
        if len(paths) == 1:
            extra["path"] = paths[0]
        log.info("submitted paths", extra=extra)

    # -- poll mode and rescans --------------------------------------------------------------------

    def _remove_job(self, root: _Root) -> None:
        if root.job_id is not None and self._scheduler is not None:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(root.job_id)
        root.job_id = None

    def _add_job(self, root: _Root, reason: str, interval_s: float) -> None:
        if self._scheduler is None:
            return
        self._remove_job(root)
        job = self._scheduler.add_job(
            self._poll,
            "interval",
            seconds=interval_s,
            args=[root, reason],
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id=f"{reason}:{root.path}",
            replace_existing=True,
        )
        root.job_id = job.id

    async def _poll(self, root: _Root, reason: str) -> None:
        """Scheduled job: submit the whole root, unless it is absent (an unmounted disk is not empty)."""
        try:
            if not await asyncio.to_thread(os.path.isdir, root.path):
                if not root.missing:
                    root.missing = True
                    root.last_error = "library root is missing (unmounted?), not submitting it"
                    log.warning(
                        "library root is missing, skipping it until it is back",
                        extra={"path": root.path},
                    )
                return
            if root.missing:
                root.missing = False
                log.info("library root is back", extra={"path": root.path})
            if root.fallback_missing and root.spec.watch == "event" and root.mode == "poll":
                log.info("re-arming event watching", extra={"path": root.path})
                self._start_event(root)
                await self._armed([root])  # watch first, then the full look: nothing falls between
            self._call_submit([root.path], reason, [root])
        except Exception:  # never raise into the scheduler
            log.exception("poll job failed", extra={"path": root.path})

    def _fall_back(self, root: _Root, why: str, *, missing: bool = False) -> None:
        """Event watching cannot work for this root: say why, and poll it instead."""
        log.warning(
            f"cannot watch library by events, polling it every {root.spec.poll_interval_s:g} s instead: {why}",
            extra={"path": root.path},
        )
        root.mode = "poll"
        root.fallback = why
        root.fallback_missing = missing
        root.missing = missing
        root.last_error = why
        root.task = None
        root.stop_event = None
        if self._started and root.spec.poll_interval_s > 0:
            self._add_job(root, "poll", root.spec.poll_interval_s)


def _leaf(e: BaseException) -> BaseException:
    """awatch runs its thread inside an anyio task group, so errors can come wrapped in groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _describe_watch_error(e: BaseException, root: str) -> str:
    """A message that tells the user what to do, not just the OS error."""
    text = str(e)
    low = text.lower()
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or any(
        k in low for k in ("watch limit", "maxfileswatch", "max_user_watches")
    ):
        return (
            "inotify watch limit reached (one watch per directory); raise fs.inotify.max_user_watches, "
            "e.g. `sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/): "
            + text
        )
    if (isinstance(e, OSError) and e.errno == errno.EMFILE) or "max_user_instances" in low:
        return "too many inotify instances; raise fs.inotify.max_user_instances: " + text
    if isinstance(e, FileNotFoundError) or not os.path.isdir(root):
        return f"library root {root} does not exist or vanished"
    return f"watching failed: {type(e).__name__}: {text}"


def _signatures(items: list[tuple[str, bool]]) -> list[tuple[int, ...] | None]:
    """Current (size, mtime_ns) of files, or an aggregate over every file under a directory;
    None for a path that is gone. Runs in a thread."""
    out: list[tuple[int, ...] | None] = []
    for path, is_dir in items:
        try:
            if not is_dir:
                st = os.stat(path)
                out.append((st.st_size, st.st_mtime_ns))
            else:
                out.append(_dir_signature(path))
        except FileNotFoundError:
            out.append(None)
        except OSError:
            out.append((-1,))  # unreadable: treat as stable, the scanner reports the error
    return out


def _walk_dirs(top: str) -> set[str]:
    """Every directory under ``top`` (symlinks not followed)."""
    out: set[str] = set()
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    with contextlib.suppress(OSError):
                        if e.is_dir(follow_symlinks=False):
                            out.add(e.path)
                            stack.append(e.path)
        except OSError:
            continue
    return out


def _dir_signature(top: str) -> tuple[int, ...]:
    """(files, dirs, total size, sum and max of mtime_ns) under ``top``: any file growing, appearing
    or being touched changes it. Symlinked directories are not followed (no loops)."""
    os.stat(top)  # FileNotFoundError when the directory itself is gone
    files = dirs = size = msum = mmax = 0
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            if TMP_SUFFIX in e.name:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    dirs += 1
                    stack.append(e.path)
                    continue
                st = e.stat(follow_symlinks=True)
            except OSError:
                continue
            files += 1
            size += st.st_size
            msum += st.st_mtime_ns
            mmax = max(mmax, st.st_mtime_ns)
    return (files, dirs, size, msum, mmax)


def _fs_type(path: str) -> str | None:
    """The filesystem type of the mount holding ``path`` (Linux ``/proc/self/mountinfo``), or None."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mnt = _unescape(fields[4])
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, best_type = mnt, right.split()[0]
    return best_type


def _unescape(s: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and all(c in "01234567" for c in s[i + 1 : i + 4]):
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)
