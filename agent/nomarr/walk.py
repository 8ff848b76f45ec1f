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


LINK_OUTSIDE = "symbolic link leads outside the library roots; not followed"


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute and normalised)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or root == os.sep or path.startswith(root + os.sep)


def real_roots(roots: Iterable[str]) -> list[str]:
    """The roots with every symlink resolved (a root may itself be a link to another disk)."""
    return [os.path.realpath(os.path.abspath(r)) for r in roots]


def resolves_inside(path: str, reals: list[str]) -> bool:
    """Whether ``path``'s real location (symlinks resolved) is inside one of the ``reals``."""
    real = os.path.realpath(path)
    return any(inside(real, r) for r in reals)


def walk(
    roots: Iterable[str],
    extensions: frozenset[str] = AUDIO_EXTENSIONS,
    vanished_ok: bool = False,
    confine: Iterable[str] | None = None,
) -> WalkResult:
    """Every audio file under ``roots`` (symlinks followed inside the library, loops cut), sorted
    by path.

    ``os.scandir`` gives the name and type without a ``stat`` per entry, so a tree of 100,000
    mostly-non-audio files costs one ``stat`` per audio file only. Directories are identified by
    (device, inode) of their target, so a symlink pointing back up the tree is visited once.

    ``confine`` are the library roots (default: ``roots``). A symbolic link, to a file or to a
    folder, is followed only when its target resolves inside one of them: a link out of the library
    is reported in ``errors`` and neither read nor listed, so the scan never analyses, tags or
    exposes a file nobody put in the library (docs/reliability.md). Entries that are not links are
    inside by construction, since only folders inside the library are descended into.
    """
    res = WalkResult()
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[str] = []
    roots = [os.path.abspath(r) for r in roots]
    reals = real_roots(confine if confine is not None else roots)
    for r in roots:
        if not resolves_inside(r, reals):
            res.errors.append((r, "resolves outside the library roots; not scanned"))
            continue
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
                if e.is_symlink() and not resolves_inside(e.path, reals):
                    res.errors.append((e.path, LINK_OUTSIDE))
                    continue
            except OSError:
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
