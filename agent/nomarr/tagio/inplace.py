"""The journalled in-place write path, for files an atomic replace would harm.

Hardlinked files, files whose owner nomarr cannot restore and files in directories nomarr cannot
create files in keep their inode: the verified copy is built in the journal directory, a durable
record is written, and only then are the copy's bytes written over the original
(:func:`nomarr.tagio.journal._copy_back`). A crash at any point is finished or rolled back by
:func:`nomarr.tagio.journal.recover`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nomarr.tagio import edit
from nomarr.tagio.edit import _Plan, _Request
from nomarr.tagio.errors import TagError, _os_reason
from nomarr.tagio.fsio import TMP_SUFFIX, _copy_fd, _unlink, _write_json_durably
from nomarr.tagio.journal import (
    _JOURNAL_SUFFIX,
    _cleanup_journal,
    _copy_back,
    _journal_name,
    _recover_record,
)
from nomarr.tagio.verify import _file_md5, _recheck


def _stage_inplace(
    real: str,
    st: os.stat_result,
    cls: type,
    req: _Request,
    jdir: Path,
    audio: tuple[str, str] | None,
) -> tuple[_Plan | None, Path, dict]:
    """States A→B: build and verify the temp in the journal dir, then make the record durable."""
    name = _journal_name(real)
    tmp = jdir / (name + TMP_SUFFIX)
    rec = jdir / (name + _JOURNAL_SUFFIX)
    try:
        jdir.mkdir(parents=True, exist_ok=True)
        _unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise TagError(real, "io", f"cannot use journal dir {jdir}: {e}") from e
    try:
        try:
            orig_md5 = _copy_fd(real, fd, hash_src=True)
        except FileNotFoundError as e:
            raise TagError(real, "vanished", "file disappeared while copying") from e
        except OSError as e:
            raise TagError(real, _os_reason(e), f"cannot copy: {e}") from e
        finally:
            os.close(fd)
        # Through the module, so one substitute (tests) reaches both write paths.
        plan = edit._tag_copy(str(tmp), cls, req, real, audio)
        if plan is None:
            _unlink(tmp)
            return None, rec, {}
        _recheck(real, st)
        temp_size, temp_md5 = _file_md5(str(tmp))
        data = {
            "version": 1,
            "path": real,
            "temp": str(tmp),
            "dev": st.st_dev,
            "ino": st.st_ino,
            "orig_size": st.st_size,
            "orig_mtime_ns": st.st_mtime_ns,
            "orig_md5": orig_md5,
            "temp_size": temp_size,
            "temp_md5": temp_md5,
            "created": time.time(),
        }
        _write_json_durably(rec, data)
    except BaseException:
        _unlink(tmp)
        raise
    return plan, rec, data


def _write_inplace(
    real: str,
    st: os.stat_result,
    cls: type,
    req: _Request,
    jdir: Path,
    audio: tuple[str, str] | None,
    verify: bool,
) -> _Plan | None:
    plan, rec, data = _stage_inplace(real, st, cls, req, jdir, audio)
    if plan is None:
        return None
    # From here on the record is durable. It is deleted only once the original is known good
    # (finished, or provably untouched); anything else, a crash included, leaves it for recover().
    try:
        _copy_back(data["temp"], real, data["dev"], data["ino"])
    except TagError:  # raised before the first byte was written: the original is intact
        _cleanup_journal(rec, data["temp"])
        raise
    except OSError as e:  # bytes may be half-written: try once more now, else leave to recover()
        if _recover_record(rec, data) in ("finished", "done"):
            return plan
        raise TagError(
            real, "io", f"copy-back failed ({e}); journal {rec} kept for recover()"
        ) from e
    if verify and _file_md5(real) != (data["temp_size"], data["temp_md5"]):
        if _recover_record(rec, data) not in ("finished", "done"):
            raise TagError(real, "io", f"file differs from the verified copy; journal {rec} kept")
        return plan
    _cleanup_journal(rec, data["temp"])
    return plan
