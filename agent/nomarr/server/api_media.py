"""Media and live state for the web console: a track's audio with HTTP range requests
(``GET /tracks/{id}/audio``), its waveform (``GET /tracks/{id}/waveform``) and the agent's state
pushed as Server-Sent Events (``GET /events``).

Audio is served only from inside the library roots, checked on the file actually opened: the
descriptor's own path (``/proc/self/fd``) must resolve inside a root, so neither a symlink in the
library nor one swapped in between a check and the open can lead out. Waveforms are computed in a
short-lived child process (a decoder crash on a hostile file must not take the agent down, the
same reason analyses run in worker processes) and cached on disk per file version.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time

from aiohttp import web
from nomarr_client import models as api

from nomarr import paths
from nomarr.server.http import (
    ApiError,
    agent_of,
    error_response,
    int_param,
    json_text,
    off_loop,
    track_id_param,
)
from nomarr.server.service import Agent, PathDenied, _inside

log = logging.getLogger("nomarr.api")

AUDIO_TYPES = {
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".wav": "audio/wav",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".wma": "audio/x-ms-wma",
}
CHUNK = 1 << 18
WAVEFORM_BUCKETS = 1000
_waveforms: asyncio.Semaphore | None = None


def _playable_path(agent: Agent, tid: int) -> str:
    t = agent.store().track(tid)
    if t is None or t.status == "missing":
        raise ApiError(404, "not-found", f"no track {tid}")
    return agent.confine(t.path)


def open_confined(agent: Agent, path: str) -> tuple[int, os.stat_result]:
    """Open a library file for reading and prove the opened file lies inside a root."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc (macOS): the resolved path, checked just before
            real = os.path.realpath(path)
        if not any(_inside(real, r) for r in agent.real_roots):
            raise PathDenied(f"{path}: resolves outside the library roots")
        import stat as stat_

        if not stat_.S_ISREG(st.st_mode):
            raise ApiError(400, "bad-request", f"{path}: not a regular file")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(first, last) byte asked for; None for the whole file. A malformed Range header is
    ignored (RFC 9110 §14.2); one that cannot be satisfied is a 416."""
    if "Range" not in request.headers:
        return None
    try:
        rng = request.http_range
    except ValueError:
        return None
    start, stop = rng.start, rng.stop
    if start is None and stop is None:
        return None
    if start is not None and start < 0:  # suffix: the last -start bytes
        start, stop = max(0, size + start), size
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise _Unsatisfiable()
    return start, stop - 1


class _Unsatisfiable(Exception):
    """A Range wholly past the end of the file (answered 416 with the file's size)."""


async def track_audio(request: web.Request) -> web.StreamResponse:
    agent = agent_of(request)
    tid = track_id_param(request)
    path = await off_loop(lambda: _playable_path(agent, tid))
    fd, st = await off_loop(lambda: open_confined(agent, path))
    try:
        size = st.st_size
        try:
            rng = _byte_range(request, size)
        except _Unsatisfiable:
            return error_response(
                416,
                "range-not-satisfiable",
                f"the file has {size} bytes",
                headers={"Content-Range": f"bytes */{size}"},
            )
        first, last = rng if rng is not None else (0, size - 1)
        ctype = AUDIO_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
        resp = web.StreamResponse(status=206 if rng is not None else 200)
        resp.content_type = ctype
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Cache-Control"] = "private, max-age=3600"
        resp.headers["ETag"] = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        if rng is not None:
            resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        resp.content_length = max(0, last - first + 1)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        pos = first
        while pos <= last:
            n = min(CHUNK, last - pos + 1)
            block = await asyncio.to_thread(os.pread, fd, n, pos)
            if not block:
                break
            await resp.write(block)
            pos += len(block)
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


def _waveform_cache(path: str, st: os.stat_result) -> str:
    key = hashlib.sha256(
        os.fsencode(path) + f":{st.st_size}:{st.st_mtime_ns}:{WAVEFORM_BUCKETS}".encode()
    ).hexdigest()[:32]
    d = paths.cache_dir() / "waveforms"
    d.mkdir(parents=True, exist_ok=True)
    return str(d / f"{key}.json")


async def track_waveform(request: web.Request) -> api.Waveform:
    global _waveforms
    agent = agent_of(request)
    tid = track_id_param(request)
    path = await off_loop(lambda: _playable_path(agent, tid))
    fd, st = await off_loop(lambda: open_confined(agent, path))
    os.close(fd)
    cache = _waveform_cache(path, st)
    try:
        with open(cache, encoding="utf-8") as f:
            return api.Waveform.model_validate_json(f.read())
    except (OSError, ValueError):
        pass
    if _waveforms is None:
        _waveforms = asyncio.Semaphore(2)
    async with _waveforms:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nomarr.server.peaks",
            path,
            str(WAVEFORM_BUCKETS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()[-1:] or ["decoder crashed"]
        raise ApiError(422, "unprocessable", f"cannot draw this file: {msg[0][:300]}")
    wf = api.Waveform.model_validate_json(out)
    tmp = f"{cache}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(out.decode())
    os.replace(tmp, cache)
    return wf


# -- live state ---------------------------------------------------------------------------------

SHUTDOWN_KEY: web.AppKey[asyncio.Event] = web.AppKey("console_shutdown", asyncio.Event)


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /events``: ``text/event-stream`` of ``status`` events (the ``Status`` document)
    whenever the agent's state changes, at most one a second while a scan or a download runs,
    and a comment every 15 s to keep proxies from closing the stream. ``?once=true`` sends the
    current state and ends (for clients that only want one look)."""
    agent = agent_of(request)
    once = request.query.get("once", "").lower() in ("1", "true", "yes")
    min_gap = int_param(request, "interval_ms", 1000, 250, 60000) / 1000.0
    stop = request.app.get(SHUTDOWN_KEY)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    seen = -1
    last_sent = 0.0
    last_beat = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if agent.state_version != seen and now - last_sent >= min_gap:
                seen = agent.state_version
                status = await off_loop(agent.status)
                await resp.write(f"event: status\ndata: {json_text(status)}\n\n".encode())
                last_sent = last_beat = now
                if once:
                    break
            elif now - last_beat >= 15.0:
                await resp.write(b": keep-alive\n\n")
                last_beat = now
            if agent.cancel.is_set() or (stop is not None and stop.is_set()):
                break
            await asyncio.sleep(0.25)
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):  # the browser went away (or the agent stops)
        pass
    return resp
