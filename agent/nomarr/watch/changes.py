"""What a change set means and when a path is ready: the watcher's event side.

watchfiles hands over raw (change, path) sets; this sorts them into files and directories worth a
look, holds each until its size and mtime (a directory: its whole tree's signature) have stayed
the same for ``settle_s``, keeps a rename's deletion with its addition, and marks settled paths
ready for the next batched ``submit``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat as statmod
import time
from collections.abc import Callable, Iterable

from watchfiles import Change

from nomarr.tagio import TMP_SUFFIX
from nomarr.watch.fs import signatures
from nomarr.watch.state import MAX_SETTLE_S, Group, Pending, Root

log = logging.getLogger("nomarr.watch")


class ChangeSorter:
    """The event-side half of :class:`~nomarr.watch.LibraryWatcher` (which sets these fields)."""

    _roots: list[Root]
    _settle_s: float
    _check_s: float
    _debounce_s: float
    _extensions: frozenset[str]
    _ignore: Callable[[str], bool] | None
    _wake: asyncio.Event
    _ready: dict[str, Root]
    _flush_handle: asyncio.TimerHandle | None
    _started: bool

    def _flush(self) -> None:  # provided by the watcher
        raise NotImplementedError

    async def _on_changes(self, root: Root, changes: set[tuple[Change, str]]) -> None:
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
        group = Group()
        touched: Group | None = None  # an older settling entry this change set added to
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
            root.pending[path] = Pending(
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

    def _is_deletion_wanted(self, root: Root, path: str) -> bool:
        """A vanished audio file or directory. Which it was is gone with it, so: an audio suffix, a
        directory this watcher saw, or no suffix at all (most folder names); a vanished
        ``cover.jpg`` is not worth a scanner wake-up."""
        if self._is_audio(path) or path in root.known_dirs:
            return True
        return os.path.splitext(path)[1] == "" or path in root.pending

    def _pending_ancestor(self, root: Root, path: str) -> Pending | None:
        d = os.path.dirname(path)
        while len(d) > len(root.path):
            entry = root.pending.get(d)
            if entry is not None and entry.is_dir:
                return entry
            d = os.path.dirname(d)
        return None

    def _forget(self, root: Root, path: str) -> None:
        """A path (or directory) vanished: stop settling it and anything under it."""
        prefix = path + os.sep
        for p in [p for p in root.pending if p == path or p.startswith(prefix)]:
            self._settled(root, p, root.pending.pop(p), submit_self=False)

    def _drop_dirs_under(self, root: Root, path: str) -> None:
        if path not in root.known_dirs:
            return
        prefix = path + os.sep
        root.known_dirs.difference_update(
            [d for d in root.known_dirs if d == path or d.startswith(prefix)]
        )

    def _settled(self, root: Root, path: str, entry: Pending, *, submit_self: bool = True) -> None:
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
                sigs = await asyncio.to_thread(signatures, [(p, e.is_dir) for _, p, e in items])
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

    def _make_ready(self, root: Root, paths: Iterable[str]) -> None:
        """Queue paths for the next batch; the first one opens a ``debounce_s`` window."""
        for p in paths:
            self._ready[p] = root
        if self._ready and self._flush_handle is None and self._started:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._debounce_s, self._flush
            )
