""":func:`write_tags`: the one entry point that writes, and the checks that precede any write.

It settles a pending journal record for the file, refuses read-only and unsupported files before
anything is created, skips files already in the requested state, and picks the write path: the
atomic replace where it is safe, the journalled in-place write otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mutagen.aiff import AIFF
from mutagen.mp3 import MP3
from mutagen.wave import WAVE
from nomarr_client.tags import parse_key

from nomarr.stages import timed
from nomarr.tagio.codecs.iff import _iff_check
from nomarr.tagio.edit import _plan, _Request
from nomarr.tagio.errors import TagError
from nomarr.tagio.files import _load, _stat
from nomarr.tagio.inplace import _write_inplace
from nomarr.tagio.journal import _JOURNAL_SUFFIX, _journal_name, _path_lock, _recover_record
from nomarr.tagio.replace import _NeedInplace, _write_replace
from nomarr.tagio.verify import MP3_BYTES, _audio_md5

log = logging.getLogger("nomarr.tagio")  # one logger name for all of tag I/O


@dataclass
class WriteResult:
    """What a write did. ``mood_written``: the value written, ``""`` if nomarr removed its MOOD,
    None if MOOD was not touched. ``unmapped``: legacy keys :func:`migrate_legacy` left alone."""

    changed: bool
    written: dict[str, str]
    removed: list[str]
    mood_written: str | None
    method: str  # unchanged | replace | inplace-journal
    unmapped: list[str] = field(default_factory=list)
    std_written: dict[str, str | None] = field(default_factory=dict)  # standard fields changed
    std_owned: dict[str, str] | None = None  # standard fields nomarr owns now (None: unchanged)


def _fs_readonly(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False


def _dir_writable(directory: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def _check_writable(real: str, st: os.stat_result) -> None:
    """Refuse read-only files before anything is created.

    Root passes every permission check, so a file with no write bit at all is also treated as
    read-only: a user who ran ``chmod a-w`` meant it, whoever nomarr runs as.
    """
    if _fs_readonly(os.path.dirname(real)):
        raise TagError(real, "read-only", "file system is mounted read-only")
    if not os.access(real, os.W_OK) or not (st.st_mode & 0o222):
        raise TagError(real, "read-only", "no write permission")


def _can_chown(st: os.stat_result) -> bool:
    if not hasattr(os, "geteuid"):
        return True
    if os.geteuid() == 0:
        return True
    return st.st_uid == os.geteuid() and st.st_gid in {os.getegid(), *os.getgroups()}


def _validate_nom(nom: dict[str, str]) -> None:
    for k, v in nom.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"nom keys and values must be str: {k!r}={v!r}")
        if parse_key(k).key != k:
            raise ValueError(f"{k!r} is not a canonical lowercase nom: key")
        if not v or "\0" in v:
            raise ValueError(f"{k!r}: value must be non-empty and contain no NUL")


def _check_within(real: str, within: Sequence[str] | None) -> None:
    """Refuse a file whose real location is outside ``within`` (the library roots, resolved):
    a symlink retargeted between the scan's walk and this write must not lead a write out."""
    if within is None:
        return
    for root in within:
        r = os.path.realpath(root).rstrip(os.sep) or os.sep
        if real == r or r == os.sep or real.startswith(r + os.sep):
            return
    raise TagError(real, "outside-roots", "resolves outside the library roots; not written")


def _write(
    path: str | os.PathLike,
    req: _Request,
    journal_dir: str | os.PathLike | None,
    verify: bool,
    within: Sequence[str] | None = None,
) -> WriteResult:
    src = os.fspath(path)
    # A symlinked path is written through to its target; replacing the link itself would turn it
    # into a regular file.
    real = os.path.realpath(src)
    _check_within(real, within)
    with _path_lock(real):
        jdir = Path(journal_dir) if journal_dir is not None else None
        if jdir is not None:
            pending = jdir / (_journal_name(real) + _JOURNAL_SUFFIX)
            if pending.exists():  # an interrupted write of this very file: settle it first
                with contextlib.suppress(OSError, ValueError):
                    _recover_record(pending, json.loads(pending.read_text(encoding="utf-8")))
                if pending.exists():
                    raise TagError(real, "io", f"unresolved tag-write journal {pending}")
        st = _stat(real)
        obj = _load(real)
        if isinstance(obj, WAVE | AIFF):
            _iff_check(real)
        wobj = _load(real, type(obj), for_write=True) if isinstance(obj, MP3) else obj
        plan = _plan(wobj, req)
        if plan is None:
            return WriteResult(False, {}, [], None, "unchanged")
        _check_writable(real, st)
        cls = type(obj)
        with timed("tag_verify"):
            audio = None
            if verify:
                audio = _audio_md5(real, MP3_BYTES if isinstance(obj, MP3) else None)
        d = os.path.dirname(real)
        method = "replace"
        if st.st_nlink > 1 or not _can_chown(st) or not _dir_writable(d):
            method = "inplace-journal"
        else:
            try:
                done = _write_replace(real, st, cls, req, audio)
            except _NeedInplace as e:
                log.info(
                    "atomic replace not possible; using journalled in-place write",
                    extra={"path": real, "why": str(e)},
                )
                method = "inplace-journal"
        if method == "inplace-journal":
            if jdir is None:
                raise TagError(
                    real,
                    "io",
                    "in-place write needed (hardlinks, owner or directory "
                    "permissions) but no journal_dir given",
                )
            done = _write_inplace(real, st, cls, req, jdir, audio, verify)
        if done is None:
            return WriteResult(False, {}, [], None, "unchanged")
        mood = None if done.mood is None else (done.mood[0] or "")
        return WriteResult(
            True, done.write, done.removed, mood, method, [], done.std, done.std_owned
        )


def write_tags(
    path: str | os.PathLike,
    nom: dict[str, str],
    *,
    mood: str | None = None,
    mood_owned: str | None = None,
    remove_legacy: bool = False,
    journal_dir: str | os.PathLike | None = None,
    verify: bool = True,
    within: Sequence[str] | None = None,
    std: dict[str, str] | None = None,
    std_owned: dict[str, str] | None = None,
) -> WriteResult:
    """Make ``path`` carry exactly the ``nom:`` keys in ``nom`` (and MOOD under the ownership rule).

    ``nom`` is the complete desired set: other ``nom:`` keys in the file are removed, equal ones
    left alone, and a file already in the desired state is not touched at all. The standard
    fields in ``std`` (BPM, initial key, ReplayGain / R128 gain) follow MOOD's ownership rule,
    with ``std_owned`` what nomarr wrote last time. MOOD is set to
    ``mood`` only where it is empty or still ``mood_owned`` (what nomarr wrote last time); with
    ``mood=None`` an owned MOOD is removed. Nothing else in the file changes except ``essentia:``
    keys when ``remove_legacy``. ``journal_dir`` enables the in-place path that hardlinked files,
    foreign-owned files and unwritable directories need. ``verify=False`` skips the audio hash
    (benchmarks only). ``within``: folders (the library roots) the file's real location must be
    in, symlinks resolved; else TagError ``outside-roots``. Raises TagError; the file is then
    unchanged.
    """
    _validate_nom(nom)
    req = _Request(
        dict(nom),
        mood or None,
        mood_owned or None,
        None if remove_legacy else set(),
        {k: v for k, v in (std or {}).items() if v},
        dict(std_owned or {}),
    )
    return _write(path, req, journal_dir, verify, within)
