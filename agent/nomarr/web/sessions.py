"""Console sessions: the API token exchanged once for a random session id held in an HttpOnly,
SameSite=Strict cookie, with a CSRF token per session for every state-changing request.

Sessions live in the agent's memory only. A restart logs everyone out, which is the price of never
writing a credential to disk beside the token file; an agent on a NAS restarts rarely. The store is
bounded (the oldest session goes first) so a client that logs in in a loop cannot grow it.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

IDLE_S = 12 * 3600.0  # a session unused this long is gone
MAX_AGE_S = 7 * 24 * 3600.0  # and none lives longer than this
MAX_SESSIONS = 256


@dataclass
class Session:
    """One logged-in browser."""

    sid: str
    csrf: str
    created: float = field(default_factory=time.time)
    used: float = field(default_factory=time.time)

    def expired(self, now: float) -> bool:
        return now - self.used > IDLE_S or now - self.created > MAX_AGE_S


class Sessions:
    """Thread-safe in-memory session store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Session] = {}

    def create(self) -> Session:
        """A new session (the oldest one is dropped when the store is full)."""
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        with self._lock:
            self._purge(time.time())
            while len(self._items) >= MAX_SESSIONS:
                self._items.pop(min(self._items, key=lambda k: self._items[k].used))
            self._items[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session with this id (its idle clock restarted), else None."""
        if not sid or len(sid) > 128:
            return None
        now = time.time()
        with self._lock:
            s = self._items.get(sid)
            if s is None:
                return None
            if s.expired(now):
                del self._items[sid]
                return None
            s.used = now
            return s

    def revoke(self, sid: str) -> None:
        """Log a session out."""
        with self._lock:
            self._items.pop(sid, None)

    def _purge(self, now: float) -> None:
        for k in [k for k, s in self._items.items() if s.expired(now)]:
            del self._items[k]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
