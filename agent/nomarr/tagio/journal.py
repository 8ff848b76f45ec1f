"""Journal records of in-place writes, the copy-back they protect, and crash recovery.

The copy-back is the only moment nomarr writes into a user's file where it lies, so it is guarded
by a durable record; :func:`recover` reads the records after a crash and brings each file to a
clean end, or keeps the record for a human when guessing could destroy data. The per-file lock
lives here too, since both writers and recovery must hold it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from nomarr.tagio.errors import TagError
from nomarr.tagio.fsio import TMP_SUFFIX, _copy_fd, _fsync_path, _unlink
from nomarr.tagio.verify import _matches

log = logging.getLogger("nomarr.tagio")  # one logger name for all of tag I/O

# In-place path. States, in order (docs/tags.md has the full argument):
#   A. temp being built/verified in journal_dir, no record   → original untouched; recover()
#      deletes the stray temp.
#   B. record durable (written via rename + fsync), copy-back not started → original untouched,
#      temp verified; recover() finishes the copy-back.
#   C. copy-back in progress → original damaged, temp verified and fsynced; recover() redoes the
#      copy-back (idempotent: it writes the whole temp from offset 0 and truncates).
#   D. copy-back done and fsynced, record not yet deleted → recover() sees original == temp and
#      just cleans up.


_JOURNAL_SUFFIX = ".json"

# Striped locks: bounded memory however many files a scan touches; never held two at a time.
_LOCKS = [threading.Lock() for _ in range(64)]


@contextlib.contextmanager
def _path_lock(real: str) -> Iterator[None]:
    """One writer per file within this process (scan workers may be threads)."""
    with _LOCKS[int(_journal_name(real)[:8], 16) % len(_LOCKS)]:
        yield


def _journal_name(real: str) -> str:
    return hashlib.sha1(real.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _copy_back(tmp: str, real: str, dev: int, ino: int) -> None:
    """Write the temp's bytes over the original inode: space first, then bytes, then truncate.

    ``posix_fallocate`` before the first byte is written means running out of disk space fails
    while the original is still intact, not half-way through overwriting it. Contract: a TagError
    means nothing was written; an OSError means the original may be partly overwritten.
    """
    size = os.path.getsize(tmp)
    try:
        fd = os.open(real, os.O_WRONLY)
    except FileNotFoundError as e:
        raise TagError(real, "vanished", "file disappeared before copy-back") from e
    except OSError as e:  # EPERM (immutable), EACCES, EROFS: nothing written yet
        reason = "read-only" if e.errno in (errno.EPERM, errno.EACCES, errno.EROFS) else "io"
        raise TagError(real, reason, f"cannot open for writing: {e}") from e
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (dev, ino):
            raise TagError(real, "vanished", "file was replaced by another one")
        if size > fst.st_size and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    if os.fstat(fd).st_size != fst.st_size:
                        os.ftruncate(fd, fst.st_size)
                    raise TagError(real, "io", f"no space to grow the file: {e}") from e
        os.lseek(fd, 0, os.SEEK_SET)
        _copy_fd(tmp, fd)
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _cleanup_journal(rec: Path, tmp: str | os.PathLike) -> None:
    _unlink(tmp)
    _unlink(rec)
    _fsync_path(rec.parent, directory=True)


def _recover_record(rec: Path, data: dict) -> str | None:
    """Bring one journalled write to a clean end.

    Returns ``finished`` (copy-back redone), ``done`` (it had completed), ``abandoned`` (original
    intact, copy dropped), ``gone`` (file deleted or replaced meanwhile: not ours to touch), or None
    when it cannot be resolved safely (record and copy are then kept for a human).
    """
    real, tmp = data["path"], data["temp"]
    temp_ok = _matches(tmp, data["temp_size"], data["temp_md5"])
    try:
        st = os.stat(real)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(real)):
            # An unmounted share looks like this too; the copy may be the only good one left.
            log.warning("journalled file unreachable; journal kept", extra={"path": real})
            return None
        log.warning("journalled file is gone; dropping its journal", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "gone"
    if st.st_dev != data["dev"]:  # remounted elsewhere, or another file system: don't guess
        log.warning("journalled file on another device now; journal kept", extra={"path": real})
        return None
    if st.st_ino != data["ino"]:
        log.warning("journalled file was replaced by another; leaving it", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "gone"
    if _matches(real, data["temp_size"], data["temp_md5"]):  # state D
        _cleanup_journal(rec, tmp)
        return "done"
    if temp_ok:  # states B and C
        try:
            _copy_back(tmp, real, data["dev"], data["ino"])
        except (OSError, TagError) as e:
            if _matches(real, data["orig_size"], data["orig_md5"]):
                log.warning(
                    "cannot finish an interrupted tag write; original intact, dropped",
                    extra={"path": real, "error": str(e)},
                )
                _cleanup_journal(rec, tmp)
                return "abandoned"
            log.error("cannot finish journalled write", extra={"path": real, "error": str(e)})
            return None
        if not _matches(real, data["temp_size"], data["temp_md5"]):
            log.error("journalled write did not verify", extra={"path": real})
            return None
        log.info("finished an interrupted tag write", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "finished"
    if _matches(real, data["orig_size"], data["orig_md5"]):  # copy lost/damaged; original intact
        log.warning("interrupted tag write abandoned; original intact", extra={"path": real})
        _cleanup_journal(rec, tmp)
        return "abandoned"
    log.error(
        "file damaged and its verified copy is gone or damaged; journal kept",
        extra={"path": real, "journal": str(rec)},
    )
    return None


def recover(journal_dir: str | os.PathLike) -> list[str]:
    """Finish or roll back in-place writes interrupted by a crash; run once at startup.

    Returns the paths whose journal records were resolved. A record that cannot be resolved
    safely (the file is damaged *and* its verified copy is gone) is logged and kept.
    """
    jdir = Path(journal_dir)
    if not jdir.is_dir():
        return []
    handled = []
    for rec in sorted(jdir.glob("*" + _JOURNAL_SUFFIX)):
        try:
            data = json.loads(rec.read_text(encoding="utf-8"))
            data["path"], data["temp"]  # noqa: B018 - schema check
        except (OSError, ValueError, KeyError, TypeError):
            # Records are written whole (rename) so this is not a crash artefact; don't guess.
            log.error(
                "unreadable tag-write journal record; left in place", extra={"path": str(rec)}
            )
            continue
        with _path_lock(data["path"]):
            try:
                status = _recover_record(rec, data)
            except Exception as e:  # one bad record must not stop startup; it stays for later
                log.error(
                    "tag-write recovery failed", extra={"path": data["path"], "error": str(e)}
                )
                status = None
        if status is not None:
            handled.append(data["path"])
    for stray in jdir.glob("*" + TMP_SUFFIX):  # state A leftovers
        if not stray.with_name(stray.name[: -len(TMP_SUFFIX)] + _JOURNAL_SUFFIX).exists():
            _unlink(stray)
    for part in jdir.glob("*" + _JOURNAL_SUFFIX + ".part"):
        _unlink(part)
    return handled
