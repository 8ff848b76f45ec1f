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

from nomarr.watch.fs import NETWORK_FS
from nomarr.watch.state import MAX_RESTARTS_PER_HOUR, MAX_SETTLE_S, LibrarySpec, Submit, WatchMode
from nomarr.watch.watcher import LibraryWatcher

__all__ = [
    "MAX_RESTARTS_PER_HOUR",
    "MAX_SETTLE_S",
    "NETWORK_FS",
    "LibrarySpec",
    "LibraryWatcher",
    "Submit",
    "WatchMode",
]
