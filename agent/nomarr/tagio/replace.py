"""The normal write path: copy → tag the copy → verify it → atomic ``os.replace``.

A crash before the rename leaves the original untouched plus a hidden temp beside it (deleted by the
next write of that file); a crash after it leaves the complete new file. When a replace would lose
something (owner, xattrs, a refused rename, no room to create a file beside it) this path raises
:class:`_NeedInplace` before touching the original, and the writer falls back to :mod:`.inplace`.
"""

from __future__ import annotations

import contextlib
import os
import stat

from nomarr.stages import timed
from nomarr.tagio import edit
from nomarr.tagio.edit import _Plan, _Request
from nomarr.tagio.errors import TagError, _os_reason
from nomarr.tagio.fsio import TMP_SUFFIX, _copy_fd, _fsync_path, _unlink
from nomarr.tagio.verify import _recheck


class _NeedInplace(Exception):
    """An atomic replace would lose something; use the journalled in-place path."""


def _copy_xattrs(src: str, fd: int) -> None:
    """Extended attributes (ACLs, SELinux labels, user tags) must survive a replace."""
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        try:
            value = os.getxattr(src, name)
            with contextlib.suppress(OSError):
                if os.getxattr(fd, name) == value:
                    continue
            os.setxattr(fd, name, value)
        except OSError as e:
            raise _NeedInplace(f"cannot copy xattr {name}: {e}") from e


def _write_replace(
    real: str, st: os.stat_result, cls: type, req: _Request, audio: tuple[str, str] | None
) -> _Plan | None:
    d, name = os.path.split(real)
    tmp = os.path.join(d, "." + name + TMP_SUFFIX)
    _unlink(tmp)  # a stray from an earlier crash
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except PermissionError as e:
        raise _NeedInplace(f"cannot create a file beside it: {e}") from e
    except OSError as e:
        raise TagError(real, _os_reason(e), f"cannot create temp copy: {e}") from e
    try:
        try:
            with timed("tag_copy"):
                _copy_fd(real, fd)
            fst = os.fstat(fd)
            if hasattr(os, "fchown") and (fst.st_uid, fst.st_gid) != (st.st_uid, st.st_gid):
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                except PermissionError as e:
                    raise _NeedInplace(f"cannot restore owner: {e}") from e
            if hasattr(os, "fchmod"):
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            else:
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
            _copy_xattrs(real, fd)
        except FileNotFoundError as e:
            raise TagError(real, "vanished", "file disappeared while copying") from e
        except OSError as e:
            raise TagError(real, _os_reason(e), f"cannot copy: {e}") from e
        finally:
            os.close(fd)
        # Through the module, so one substitute (tests) reaches both write paths.
        plan = edit._tag_copy(tmp, cls, req, real, audio)
        if plan is None:
            return None
        _recheck(real, st)
        try:
            os.replace(tmp, real)
        except OSError as e:  # EBUSY (bind-mounted file), EPERM (sticky dir, immutable), EXDEV
            raise _NeedInplace(f"atomic replace refused: {e}") from e
        _fsync_path(d, directory=True)
        return plan
    finally:
        _unlink(tmp)


# In-place path. States, in order (docs/tags.md has the full argument):
#   A. temp being built/verified in journal_dir, no record   → original untouched; recover()
#      deletes the stray temp.
#   B. record durable (written via rename + fsync), copy-back not started → original untouched,
#      temp verified; recover() finishes the copy-back.
#   C. copy-back in progress → original damaged, temp verified and fsynced; recover() redoes the
#      copy-back (idempotent: it writes the whole temp from offset 0 and truncates).
#   D. copy-back done and fsynced, record not yet deleted → recover() sees original == temp and
#      just cleans up.
