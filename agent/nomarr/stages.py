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
