"""The one exception type of tag I/O, and how OS errors map onto its reasons."""

from __future__ import annotations

import errno
import os


class TagError(Exception):
    """A file nomarr cannot (or must not) tag; the file is left as it was.

    ``reason`` is a short code callers can count and report: ``read-only``, ``unsupported``,
    ``corrupt``, ``vanished``, ``verify-failed``, ``outside-roots`` or ``io``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.detail = " ".join(str(detail).split())  # one line, whatever mutagen/FFmpeg said
        super().__init__(f"{self.path}: {self.detail} ({reason})")


def _os_reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "vanished"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return "read-only"
    return "io"
