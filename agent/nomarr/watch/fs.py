"""Filesystem facts the watcher needs: which filesystems inotify cannot watch for remote changes,
what a directory tree looks like now (to tell when it has settled), and readable watch errors."""

from __future__ import annotations

import contextlib
import errno
import os

from nomarr.tagio import TMP_SUFFIX

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


def leaf_error(e: BaseException) -> BaseException:
    """awatch runs its thread inside an anyio task group, so errors can come wrapped in groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def describe_watch_error(e: BaseException, root: str) -> str:
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


def signatures(items: list[tuple[str, bool]]) -> list[tuple[int, ...] | None]:
    """Current (size, mtime_ns) of files, or an aggregate over every file under a directory;
    None for a path that is gone. Runs in a thread."""
    out: list[tuple[int, ...] | None] = []
    for path, is_dir in items:
        try:
            if not is_dir:
                st = os.stat(path)
                out.append((st.st_size, st.st_mtime_ns))
            else:
                out.append(dir_signature(path))
        except FileNotFoundError:
            out.append(None)
        except OSError:
            out.append((-1,))  # unreadable: treat as stable, the scanner reports the error
    return out


def walk_dirs(top: str) -> set[str]:
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


def dir_signature(top: str) -> tuple[int, ...]:
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


def fs_type(path: str) -> str | None:
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
        mnt = unescape_mount(fields[4])
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, best_type = mnt, right.split()[0]
    return best_type


def unescape_mount(s: str) -> str:
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
