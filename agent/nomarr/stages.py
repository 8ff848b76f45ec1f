"""Where a scan's time goes: named stages timed with ``perf_counter``, summed per process.

Workers time their stages (decode, resample, mel, ...) into a :class:`Stages` and send the sums
back with each result; the main process times its own (walk, database, tag write, waiting). The
scan summary reports both, and ``bench/profile_scan.py`` prints them beside the floor. Timing
costs two ``perf_counter`` calls per stage entry, so stages are entered per block or per file,
never per sample.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Stages:
    """Seconds per stage name, accumulated (re-entering a stage adds to it)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to ``name``."""
        self.t[name] = self.t.get(name, 0.0) + seconds

    def merge(self, other: dict[str, float], prefix: str = "") -> None:
        """Add every stage of ``other`` (a plain dict, as sent by a worker)."""
        for k, v in other.items():
            self.add(prefix + k, v)

    def as_dict(self) -> dict[str, float]:
        """A plain copy (picklable, JSON-friendly)."""
        return dict(self.t)


_current: ContextVar[Stages | None] = ContextVar("nomarr_stages", default=None)


@contextmanager
def collecting(stages: Stages) -> Iterator[None]:
    """Make ``stages`` the one :func:`timed` adds to in this thread (or task), for the block; so a
    library deep down (tag writes) reports its steps without a parameter threaded through."""
    token = _current.set(stages)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time the block into the collecting :class:`Stages`, if any (else a no-op)."""
    s = _current.get()
    if s is None:
        yield
        return
    with s(name):
        yield
