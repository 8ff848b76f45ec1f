"""Streaming-ingest sessions: audio the agent cannot read as a file arrives as raw PCM chunks
(docs/ingest.md).

A session is opened with the track's identity and its PCM format, receives numbered chunks, and
ends (analysed and stored) or is aborted. Each chunk is checked whole before anything of it is
kept — a partial frame, a NaN sample, a chunk out of order is refused with the reason and the
session stays as it was — then mixed down to mono float32 exactly as the decoder mixes a file
(:func:`nomarr.audio.pcm.downmix`) and appended to a spool file in the agent's cache. Nothing
reaches the database before the end: the analysis is stored in one transaction, so a session
aborted, expired, refused or cut off by a killed agent leaves nothing but a spool file, and the
agent deletes every spool file when it starts.

Bounds (``nomarr serve`` settings): at most ``ingest_sessions`` open sessions, a session idle for
``ingest_idle_s`` is dropped, at most ``ingest_max_mb`` MiB of PCM per session, and a stream
shorter than ``ingest_min_s`` seconds is refused at the end (too short to fingerprint or tag).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nomarr.audio.pcm import ENCODINGS, PcmError, downmix, frame_bytes

log = logging.getLogger("nomarr.ingest")

MAX_CHUNK_BYTES = 16 * 1024 * 1024


class IngestError(Exception):
    """A request the session cannot take: ``status`` and ``code`` for the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Limits:
    """The bounds every session runs under."""

    sessions: int = 4
    idle_s: float = 60.0
    max_bytes: int = 512 * 1024 * 1024
    min_seconds: float = 10.0

    def to_dict(self) -> dict[str, float]:
        """For the session answers."""
        return {
            "max_sessions": self.sessions,
            "idle_timeout_s": self.idle_s,
            "max_bytes": self.max_bytes,
            "min_seconds": self.min_seconds,
            "max_chunk_bytes": MAX_CHUNK_BYTES,
        }


@dataclass
class Session:
    """One open stream."""

    id: str
    identity: dict[str, Any]
    encoding: str
    rate: int
    channels: int
    spool: Path
    created: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)
    received: int = 0
    frames: int = 0
    next_seq: int = 0
    state: str = "open"  # open | ending | done | aborted
    last_chunk: tuple[int, int] | None = None  # (length, crc32) of the last accepted chunk
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def seconds(self) -> float:
        """Audio received so far."""
        return self.frames / self.rate

    def info(self, limits: Limits) -> dict[str, Any]:
        """The ``IngestSession`` answer."""
        return {
            "id": self.id,
            "state": self.state,
            "received_bytes": self.received,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "next_seq": self.next_seq,
            "limits": limits.to_dict(),
        }


class Sessions:
    """Every open session of one agent; thread-safe (chunks are decoded on worker threads)."""

    def __init__(self, spool_dir: Path, limits: Limits) -> None:
        self.dir = spool_dir
        self.limits = limits
        self._lock = threading.Lock()
        self._open: dict[str, Session] = {}
        # a spool left by an agent that was killed mid-session is not a stream anyone will end
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, identity: dict[str, Any], encoding: str, rate: int, channels: int) -> Session:
        """Open a session (429 ``busy`` when ``sessions`` are open already)."""
        if encoding not in ENCODINGS:
            raise IngestError(400, "bad-request", f"unknown encoding {encoding!r}")
        self.expire()
        with self._lock:
            live = [s for s in self._open.values() if s.state in ("open", "ending")]
            if len(live) >= self.limits.sessions:
                raise IngestError(
                    429,
                    "busy",
                    f"{len(live)} ingest sessions are open (the limit is {self.limits.sessions}); "
                    "end or abort one, or retry later",
                )
            sid = uuid.uuid4().hex
            s = Session(sid, identity, encoding, rate, channels, self.dir / f"{sid}.f32")
            s.spool.touch()
            self._open[sid] = s
        log.info(
            "ingest session opened",
            extra={"session": sid, "rate": rate, "channels": channels, "encoding": encoding},
        )
        return s

    def get(self, sid: str) -> Session:
        """An open (or ending) session, else 404."""
        with self._lock:
            s = self._open.get(sid)
        if s is None:
            raise IngestError(
                404, "not-found", f"no ingest session {sid!r} (ended, aborted or expired)"
            )
        return s

    def add(self, sid: str, seq: int, data: bytes) -> tuple[Session, bool]:
        """Append one chunk; (session, duplicate). A chunk re-sent with the previous number and
        the same bytes (a client retrying after a lost answer) is acknowledged and not kept
        twice. Runs the decoding on the caller's (worker) thread."""
        s = self.get(sid)
        with s.lock:
            if s.state != "open":
                raise IngestError(409, "conflict", f"session {sid} is {s.state}")
            s.touched = time.monotonic()
            if len(data) > MAX_CHUNK_BYTES:
                raise IngestError(
                    413, "too-large", f"a chunk may hold at most {MAX_CHUNK_BYTES} bytes"
                )
            if seq == s.next_seq - 1 and s.last_chunk == (len(data), zlib.crc32(data)):
                return s, True
            if seq != s.next_seq:
                raise IngestError(
                    409,
                    "conflict",
                    f"chunk {seq} is out of order: the session expects chunk {s.next_seq}",
                )
            if s.received + len(data) > self.limits.max_bytes:
                self._drop(s, "aborted")
                raise IngestError(
                    413,
                    "too-large",
                    f"session {sid} passed {self.limits.max_bytes} bytes of PCM and was aborted "
                    "(nothing was stored)",
                )
            try:
                mono = downmix(data, s.encoding, s.channels)
            except PcmError as e:
                raise IngestError(400, "bad-request", f"chunk {seq}: {e}") from None
            with open(s.spool, "ab") as f:
                f.write(mono.astype("<f4", copy=False).tobytes())
            s.received += len(data)
            s.frames += len(data) // frame_bytes(s.encoding, s.channels)
            s.next_seq += 1
            s.last_chunk = (len(data), zlib.crc32(data))
            return s, False

    def begin_end(self, sid: str) -> Session:
        """Mark a session as ending (no more chunks) and check it is long enough; a too-short
        one is dropped (422)."""
        s = self.get(sid)
        with s.lock:
            if s.state != "open":
                raise IngestError(409, "conflict", f"session {sid} is {s.state}")
            if s.seconds < self.limits.min_seconds:
                self._drop(s, "aborted")
                raise IngestError(
                    422,
                    "unprocessable",
                    f"{s.seconds:.1f} s of audio is shorter than the {self.limits.min_seconds:g} s "
                    "an ingest needs; the session was dropped and nothing was stored",
                )
            s.state = "ending"
            return s

    def finish(self, s: Session, state: str = "done") -> None:
        """Close a session after its end (stored or failed): the spool goes."""
        with s.lock:
            self._drop(s, state)

    def abort(self, sid: str) -> Session:
        """Drop a session and its audio."""
        s = self.get(sid)
        with s.lock:
            if s.state == "ending":
                raise IngestError(
                    409, "conflict", f"session {sid} is being analysed; wait for its end"
                )
            self._drop(s, "aborted")
        log.info("ingest session aborted", extra={"session": sid})
        return s

    def expire(self) -> int:
        """Drop the sessions idle for longer than ``idle_s``; returns how many."""
        now = time.monotonic()
        with self._lock:
            stale = [
                s
                for s in self._open.values()
                if s.state == "open" and now - s.touched > self.limits.idle_s
            ]
        for s in stale:
            with s.lock:
                if s.state == "open" and now - s.touched > self.limits.idle_s:
                    self._drop(s, "aborted")
                    log.info("ingest session expired (idle)", extra={"session": s.id})
        return len(stale)

    def open_count(self) -> int:
        """Sessions open or ending."""
        with self._lock:
            return sum(s.state in ("open", "ending") for s in self._open.values())

    def _drop(self, s: Session, state: str) -> None:
        """(Holding ``s.lock``) forget a session and delete its spool."""
        s.state = state
        with self._lock:
            self._open.pop(s.id, None)
        try:
            os.unlink(s.spool)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Agent shutdown: every session and spool goes."""
        with self._lock:
            sessions = list(self._open.values())
        for s in sessions:
            with s.lock:
                self._drop(s, "aborted")
