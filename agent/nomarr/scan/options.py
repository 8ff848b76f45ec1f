"""What a scan is asked to do (:class:`ScanOptions`), what it reports (:class:`ScanSummary`) and
its progress line."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScanOptions:
    """What ``nomarr scan`` was asked to do."""

    roots: list[str]
    db: str | None = None
    write: bool = True
    profile: str = "balanced"
    models: list[str] = field(default_factory=lambda: ["msd-musicnn-1"])
    workers: int | None = None  # None: one per available core; 0: in this process
    threads: int = 1
    batch: int = 1
    provider: str | None = None
    mood_field: bool = False
    retry_failed: bool = False
    verify_writes: bool = True
    nice: int = 0
    cpus: list[int] | None = None  # pin workers to these cores (the agent's CPU cap)
    scheduler: str | None = None  # Dask scheduler address: analyse on remote workers too
    secrets: str | None = None  # the cluster's secrets folder (default ~/.config/nomarr/remote)
    insecure: bool = False  # allow a plain tcp:// scheduler
    gpu_only: bool = False  # remote work only on workers with an accelerator
    slow_after: float = 60.0  # a remote task older than this (and 4x the median) also runs here
    vanished_ok: bool = (
        False  # roots are changed paths inside a library (the watcher): a missing one is gone
    )


@dataclass
class ScanSummary:
    """Counts and per-file failure reasons (the ``--json`` document)."""

    files: int = 0
    analysed: int = 0
    reused: int = 0
    adopted: int = 0  # of the reused: analyses imported from another agent (shared pool)
    moved: int = 0
    skipped: int = 0
    written: int = 0
    tags_current: int = 0
    failed: int = 0
    failed_unchanged: int = 0
    read_only: int = 0
    missing: int = 0
    retiered: int = 0
    worker_crashes: int = 0  # worker pools lost to a dead process (their files were retried)
    walk_entries: int = 0
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0
    time: dict[str, float] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    walk_errors: list[dict[str, str]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    remote: dict[str, Any] = field(default_factory=dict)  # who analysed what (with --scheduler)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        d = dict(self.__dict__)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        d["audio_seconds"] = round(self.audio_seconds, 1)
        d["time"] = {k: round(v, 3) for k, v in self.time.items()}
        return d


class Progress:
    """Files done / total, rate and ETA on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, done: int, note: str = "") -> None:
        """Redraw at most 5 times a second."""
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and done < self.total):
            return
        self._last = now
        el = now - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * done / max(1, self.total))
        sys.stderr.write(
            f"\rscan [{bar:<30}] {done}/{self.total} files  {rate * 60:.0f}/min  "
            f"ETA {_hms(eta)}  {note[:40]:<40}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            sys.stderr.write("\n")


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
