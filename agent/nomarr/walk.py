"""Finding a library's audio files: one ``os.scandir`` walk, a ``stat`` per audio file only.

Kept apart from the scanner so the CLI (``tags migrate``) and the watcher can walk without
importing the analysis machinery.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Iterable
from dataclasses import dataclass, field

from nomarr.audio.decode import AUDIO_EXTENSIONS

TMP_MARKER = ".nomarr-tmp"


# -- walking ------------------------------------------------------------------------------------


@dataclass
class WalkResult:
    """Audio files found under the roots, and what could not be walked."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)
    stray_temps: list[str] = field(default_factory=list)  # left by a tag write that was killed
    entries: int = 0


def walk(
    roots: Iterable[str], extensions: frozenset[str] = AUDIO_EXTENSIONS, vanished_ok: bool = False
) -> WalkResult:
    """Every audio file under ``roots`` (symlinks followed, loops cut), sorted by path.

    ``os.scandir`` gives the name and type without a ``stat`` per entry, so a tree of 100,000
    mostly-non-audio files costs one ``stat`` per audio file only. Directories are identified by
    (device, inode) of their target, so a symlink pointing back up the tree is visited once.
    """
    res = WalkResult()
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[str] = []
    for r in roots:
        r = os.path.abspath(r)
        try:
            st = os.stat(r)
        except FileNotFoundError as e:
            # A path the watcher saw deleted: when its folder is still there it is gone (its files
            # are marked missing), not unreadable. A whole library root that vanished is more
            # likely an unmounted disk, so that stays an error and keeps its tracks.
            if vanished_ok and os.path.isdir(os.path.dirname(r)):
                continue
            res.errors.append((r, _oserror(e)))
            res.unreadable_dirs.append(r)
            continue
        except OSError as e:
            res.errors.append((r, _oserror(e)))
            res.unreadable_dirs.append(r)
            continue
        if statmod.S_ISDIR(st.st_mode):
            stack.append(r)
        elif os.path.splitext(r)[1].lower() in extensions:
            res.files.append((r, st))
    while stack:
        d = stack.pop()
        try:
            dst = os.stat(d)
        except OSError as e:
            res.errors.append((d, _oserror(e)))
            res.unreadable_dirs.append(d)
            continue
        key = (dst.st_dev, dst.st_ino)
        if key in seen_dirs:
            res.errors.append(
                (d, "directory already visited (symlink loop or duplicate link), skipped")
            )
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as e:
            res.errors.append((d, _oserror(e)))
            res.unreadable_dirs.append(d)
            continue
        for e in entries:
            res.entries += 1
            name = e.name
            if name.startswith(".") and TMP_MARKER in name:
                if name.endswith(TMP_MARKER):  # our own temp file from an interrupted write
                    res.stray_temps.append(e.path)
                continue
            try:
                if e.is_dir(follow_symlinks=True):
                    stack.append(e.path)
                    continue
            except OSError:
                continue
            if os.path.splitext(name)[1].lower() not in extensions:
                continue
            try:
                st = e.stat(follow_symlinks=True)
            except OSError as err:  # dangling symlink, vanished, permission
                res.errors.append((e.path, _oserror(err)))
                continue
            if statmod.S_ISREG(st.st_mode):
                res.files.append((e.path, st))
    res.files.sort(key=lambda x: os.fsencode(x[0]))
    return res


def _oserror(e: OSError) -> str:
    return e.strerror.lower() if e.strerror else type(e).__name__
