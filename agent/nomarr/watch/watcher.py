"""The watcher itself: lifecycle, inotify watches with restart and fallback, polling and
safety-net rescans on a scheduler, and the batched hand-over to the scanner."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import watchfiles
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from nomarr.audio.decode import AUDIO_EXTENSIONS
from nomarr.watch.changes import ChangeSorter
from nomarr.watch.fs import NETWORK_FS, describe_watch_error, fs_type, leaf_error, walk_dirs
from nomarr.watch.state import (
    _STOP_TIMEOUT_S,
    MAX_RESTARTS_PER_HOUR,
    LibrarySpec,
    Root,
    Submit,
)

log = logging.getLogger("nomarr.watch")


class LibraryWatcher(ChangeSorter):
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
        self._roots: list[Root] = []
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
            self._roots.append(Root(spec=spec, path=path, mode=spec.watch))
        self._submit = submit
        self._debounce_s = debounce_s
        self._settle_s = settle_s
        self._check_s = max(0.05, min(settle_s / 4, 1.0))
        self._extensions = frozenset(e.lower() for e in extensions)
        self._ignore = ignore
        self._scheduler: AsyncIOScheduler | None = None
        self._settle_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ready: dict[str, Root] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._started = False

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

    def _start_event(self, root: Root, *, rescan: bool = False) -> None:
        """Arm inotify for a root, or fall back to polling when that cannot work.

        ``rescan``: submit the whole root once the watch exists (after a restart, events may
        have been lost in between).
        """
        if not os.path.isdir(root.path):
            self._fall_back(
                root, f"library root {root.path} does not exist or is not a directory", missing=True
            )
            return
        fs = fs_type(root.path)
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

    async def _armed(self, roots: list[Root]) -> None:
        """Wait until these roots' inotify watches exist (or failed and fell back to polling)."""
        pending = [r.armed.wait() for r in roots if r.task is not None]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), _STOP_TIMEOUT_S)

    async def _seed_dirs(self, root: Root) -> None:
        """Learn the existing directories, so that one moved away later is recognised as such
        (a vanished path no longer says whether it was a file or a directory)."""
        try:
            dirs = await asyncio.to_thread(walk_dirs, root.path)
        except Exception:
            log.debug(
                "listing library directories failed", exc_info=True, extra={"path": root.path}
            )
            return
        if root.task is not None:
            root.known_dirs.update(dirs)

    async def _watch(self, root: Root, stop_event: asyncio.Event, rescan: bool) -> None:
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
            err = leaf_error(e)
            missing = isinstance(err, FileNotFoundError) or not os.path.isdir(root.path)
            why = describe_watch_error(err, root.path)
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

    def _may_restart(self, root: Root) -> bool:
        """At most :data:`MAX_RESTARTS_PER_HOUR` restarts, then the root is polled instead."""
        now = time.monotonic()
        root.restarts = [t for t in root.restarts if now - t < 3600.0]
        if len(root.restarts) >= MAX_RESTARTS_PER_HOUR:
            return False
        root.restarts.append(now)
        return True

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._ready:
            return
        ready, self._ready = self._ready, {}
        self._call_submit(sorted(ready), "event", set(ready.values()))

    def _call_submit(
        self, paths: list[str], reason: str, roots: set[Root] | Iterable[Root]
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

    def _remove_job(self, root: Root) -> None:
        if root.job_id is not None and self._scheduler is not None:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(root.job_id)
        root.job_id = None

    def _add_job(self, root: Root, reason: str, interval_s: float) -> None:
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

    async def _poll(self, root: Root, reason: str) -> None:
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

    def _fall_back(self, root: Root, why: str, *, missing: bool = False) -> None:
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
