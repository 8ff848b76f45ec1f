"""File-system primitives the write paths share: copying into a descriptor, fsync, durable JSON.

Kept apart from the tag logic so that each write path reads as the sequence of durable steps it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

TMP_SUFFIX = ".nomarr-tmp"  # scanners and watchers must ignore files ending in this
_CHUNK = 1 << 20


def _fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # platforms without directory fds (Windows)
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _copy_fd(src: str, fd: int, hash_src: bool = False) -> str | None:
    h = hashlib.md5() if hash_src else None
    with open(src, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if h:
                h.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    return h.hexdigest() if h else None


def _unlink(path: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_json_durably(path: Path, data: dict) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)
    _fsync_path(path.parent, directory=True)
