"""The watcher's configuration and per-root runtime state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

WatchMode = Literal["off", "event", "poll"]


Submit = Callable[[list[str], str], None]
"""``submit(paths, reason)``: thread-safe and non-blocking; reason is "event", "poll" or "rescan"."""


MAX_SETTLE_S = 600.0
"""Longest a path waits to settle; after that it is submitted anyway (the scanner copes)."""


MAX_RESTARTS_PER_HOUR = 3
"""A watch that breaks while running is restarted this often per hour before polling takes over."""


_STOP_TIMEOUT_S = 5.0


@dataclass
class LibrarySpec:
    """One library root and how to notice its changes."""

    path: str
    """Absolute library root."""
    watch: WatchMode = "event"
    poll_interval_s: float = 900.0
    """Poll mode (configured or fallen back to): submit the whole root this often."""
    rescan_interval_s: float = 6 * 3600.0
    """Event mode: safety-net full rescan this often, since inotify can miss events; 0 disables."""


@dataclass
class Group:
    """Paths from one watchfiles change set: its deletions wait for its additions to settle."""

    waiting: int = 0
    deletions: list[str] = field(default_factory=list)


@dataclass
class Pending:
    """An added/modified path that is settling (not yet submitted)."""

    is_dir: bool
    first_seen: float
    stable_since: float
    group: Group
    sig: tuple[int, ...] | None = None


@dataclass(eq=False)
class Root:
    """Runtime state of one library root."""

    spec: LibrarySpec
    path: str
    mode: WatchMode
    fallback: str | None = None  # why event mode was given up, None while it is not
    fallback_missing: bool = False  # fell back because the root was absent: re-arm when it is back
    missing: bool = False
    task: asyncio.Task[None] | None = None
    armed: asyncio.Event = field(default_factory=asyncio.Event)
    seed_task: asyncio.Task[None] | None = None
    stop_event: asyncio.Event | None = None
    job_id: str | None = None
    last_event: float | None = None
    last_submit: float | None = None
    last_error: str | None = None
    watching_since: float | None = None  # set once the inotify watches exist
    restarts: list[float] = field(default_factory=list)
    pending: dict[str, Pending] = field(default_factory=dict, repr=False)
    known_dirs: set[str] = field(default_factory=set, repr=False)
