"""Limits every request meets before any handler or the token check sees it (docs/reliability.md).

A client that is slow, stuck or hostile must not hold a connection, a temp file or a shutdown
hostage, whether or not it holds the token. So:

* **Heads** (request line and headers) must be complete within :data:`IDLE_TIMEOUT_S` of the
  connection opening or of the previous answer; an idle keep-alive connection is closed after the
  same time. aiohttp's keep-alive timer enforces this: it closes any connection still waiting for
  a complete request, whether nothing or half a head has arrived.
* **Bodies** must start within :data:`BODY_IDLE_S` of the head, never pause longer than that, and
  be complete within :data:`BODY_TIMEOUT_S` (uploads: :data:`UPLOAD_TIMEOUT_S`). A watchdog per
  request fails the body's stream with a 408 when it does not, whatever the handler is doing, and
  the connection is closed after the answer. A request refused without reading its body (a
  401) has the rest drained for at most :data:`LINGER_S`, then the connection is closed.
* **Malformed bodies** (a bad chunk size in ``Transfer-Encoding: chunked``) fail at once with a
  400. aiohttp's C parser drops the request's stream without telling it when a chunk header is
  malformed, so the handler would wait for bytes that never come; :class:`_Protocol` notices the
  parser moving on while the body is still open and fails the stream itself.
* **JSON** nested deeper than :data:`MAX_JSON_DEPTH` is refused before it is parsed (Python's
  parser would recurse into a ``RecursionError``).
* **Protocol errors** (over-long request lines or headers, garbage instead of HTTP) are answered
  with the API's JSON error body, not aiohttp's plain text.
* **Shutdown** fails every body still being received, so SIGTERM is never held up by a client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("nomarr.api")

MAX_JSON_DEPTH = 64  # arrays/objects inside each other; the API's own bodies need 3
IDLE_TIMEOUT_S = 15.0  # a connection without a complete request head is closed after this
BODY_IDLE_S = 10.0  # time to a body's first byte, and the longest pause between bytes
BODY_TIMEOUT_S = 30.0  # whole body of a JSON request (at most max_json_kb)
UPLOAD_TIMEOUT_S = 900.0  # whole body of an upload (1 GiB at ~1.2 MB/s)
LINGER_S = 5.0  # an unread body (a refused request) is drained at most this long, then closed
_TICK_S = 0.25

_STATUS_CODES = {
    400: "bad-request",
    408: "timeout",
    413: "too-large",
    414: "too-large",
    431: "too-large",
    503: "unavailable",
}


class BodyFailed(Exception):
    """The request body was cut off by a limit (or the protocol); raised from its reads."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


GUARDS: web.AppKey[set[BodyWatch]] = web.AppKey("body_guards", set)


class BodyWatch:
    """Watches one request's body stream against the limits above."""

    def __init__(self, request: web.BaseRequest, total_s: float) -> None:
        self.content = request.content
        self.total_s = total_s
        self.failed: BodyFailed | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def fail(self, err: BodyFailed) -> None:
        """Fail the stream (readers raise ``err``) unless it is complete already."""
        if self.failed is None and not self.content.is_eof():
            self.failed = err
            self.content.set_exception(err)
        self.stop()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = last_t = loop.time()
        last_n = -1
        while not self.content.is_eof():
            await asyncio.sleep(_TICK_S)
            now = loop.time()
            n = self.content.total_bytes
            if n != last_n:
                last_n, last_t = n, now
            if now - last_t > BODY_IDLE_S:
                what = "no body bytes" if n == 0 else "the body stalled"
                self.fail(BodyFailed(408, "timeout", f"{what} for {BODY_IDLE_S:g} s"))
                return
            if now - t0 > self.total_s:
                self.fail(BodyFailed(408, "timeout", f"body not complete in {self.total_s:g} s"))
                return


def _has_body(request: web.BaseRequest) -> bool:
    return request.body_exists and not request.content.is_eof()


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Put the body limits on every request with a body (before the token is checked)."""
    if not _has_body(request):
        return await handler(request)
    upload = request.content_type != "application/json" and request.method == "POST"
    watch = BodyWatch(request, UPLOAD_TIMEOUT_S if upload else BODY_TIMEOUT_S)
    if isinstance(request.protocol, _Protocol):
        request.protocol.body_watch = watch
    guards = request.app[GUARDS]
    guards.add(watch)
    watch.start()
    try:
        resp = await handler(request)
    finally:
        watch.stop()
        guards.discard(watch)
        if isinstance(request.protocol, _Protocol):
            request.protocol.body_watch = None
    if watch.failed is not None or not request.content.is_eof():
        # the rest of the body would be read as the next request: this connection is done
        resp.force_close()
    return resp


async def fail_bodies_on_shutdown(app: web.Application) -> None:
    """``on_shutdown``: requests still receiving a body end now, so shutdown waits for nobody."""
    for watch in list(app[GUARDS]):
        watch.fail(BodyFailed(503, "unavailable", "the agent is shutting down"))


def json_depth_ok(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests arrays/objects at most ``limit`` deep.

    Counts brackets outside strings in one pass (strings are removed first with a byte-level
    scan), so a 256 KiB body costs about a millisecond and nothing recurses.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True
    import re

    import numpy as np

    text = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", raw)
    b = np.frombuffer(text, dtype=np.uint8)
    step = (b == ord("[")).astype(np.int32) + (b == ord("{"))
    step -= (b == ord("]")).astype(np.int32) + (b == ord("}"))
    return int(np.cumsum(step).max(initial=0)) <= limit


# -- the connection ------------------------------------------------------------------------------


class _Protocol(RequestHandler):
    """aiohttp's connection handler with the two fixes the module docstring describes."""

    body_watch: BodyWatch | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        watch = self.body_watch
        # A new message queued while this request's body is still open can only be the parser's
        # error entry (a valid next request cannot start before the body ends): fail the body.
        if watch is not None and getattr(self, "_messages", None) and not watch.content.is_eof():
            watch.fail(BodyFailed(400, "bad-request", "malformed request body"))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Protocol-level errors (bad request line, headers too long) in the API's error shape."""
        from nomarr.server.http import error_response

        if status >= 500:
            log.error("request failed in the protocol layer", exc_info=exc)
            text = "internal error (logged by the agent)"
        elif isinstance(exc, LineTooLong):  # its own message quotes the offending bytes
            text = "request line or a header is too long (the limit is 8190 bytes)"
        else:
            text = " ".join(str(getattr(exc, "message", None) or message or exc or "").split())
            text = (text or "malformed HTTP request")[:300]
            log.debug("malformed HTTP request", extra={"status": status, "error": text})
        code = _STATUS_CODES.get(status, "bad-request" if status < 500 else "internal")
        resp = error_response(status, code, text)
        resp.force_close()
        return resp


class _Server(web.Server):
    """Makes :class:`_Protocol` connections (aiohttp's Server has no hook for the class)."""

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are :class:`_Protocol` with the idle/head timeout."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_TIMEOUT_S)
        kwargs.setdefault("lingering_time", LINGER_S)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _Server(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )


def install(app: web.Application) -> None:
    """The app-side half: the registry of watched bodies and the shutdown hook."""
    app[GUARDS] = set()
    app.on_shutdown.append(fail_bodies_on_shutdown)


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (at most 65,536): each open connection is
    a descriptor, and the common soft default of 1,024 would stop ``accept`` at ~1,000 clients."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return int(soft)


def remove_stale_uploads(folder: str | os.PathLike[str], older_than_s: float) -> int:
    """Uploads left by an agent that was killed mid-request (a running agent deletes its own)."""
    n = 0
    cutoff = time.time() - older_than_s
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not e.name.startswith("upload-"):
            continue
        try:
            if e.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(e.path)
                n += 1
        except OSError:
            pass
    return n
