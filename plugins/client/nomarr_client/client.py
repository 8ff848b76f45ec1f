"""The typed HTTP client the plugins use to talk to a nomarr agent (DESIGN §5).

Thin on purpose: aiohttp and pydantic only (zeroconf, through :mod:`nomarr_client.discovery`, only
when :meth:`NomarrClient.discover` has to browse). It runs inside host programs (beets, Music
Assistant) that must not pull in numpy or onnxruntime, so nothing here imports the ``agent``
package; the shared pydantic models in :mod:`nomarr_client.models` are the whole contract.

What it adds over raw HTTP:

* Requests are built from the request models, so a mistake (no seed, a limit out of range, an
  unknown field) is a :class:`BadRequest` raised *before* any network traffic, with the same
  wording the agent would use.
* Answers are parsed into the response models; every failure is a :class:`NomarrError` subclass
  that says what to do about it (start the agent, copy the token, pull the model).
* Transient failures are retried with exponential backoff, but only where a retry cannot do harm:
  reads and pure queries are retried on connection errors, timeouts and 502/503/504; uploads, model
  pulls and scans are retried only when the connection was never established (nothing reached the
  agent). A 4xx is never retried: asking again cannot fix the caller's mistake.
* An agent id pinned at pairing time is checked by :meth:`NomarrClient.status` and
  :meth:`NomarrClient.verify`, so a second agent on the network cannot silently take over.

:class:`SyncNomarrClient` is the same API for hosts without an event loop of their own (beets).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import math
import os
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from yarl import URL

from . import models as api
from .listening import ListeningMixin

log = logging.getLogger("nomarr.client")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
P = ParamSpec("P")

USER_AGENT = f"nomarr-client (api {api.API_VERSION})"
TOKEN_HINT = (
    "the agent keeps its token in ~/.config/nomarr/token ($XDG_CONFIG_HOME/nomarr/token) "
    "on the agent's machine; copy it into this plugin's configuration"
)
CONFIG_HINT = (
    "set the agent URL in the plugin's configuration (e.g. http://host:8080), or leave it "
    "empty to discover the agent on the local network"
)
TRACK_STATUSES = ("ok", "failed", "missing", "all")
MAX_PAGE = 1000  # the agent's upper bound for GET /tracks?limit=
_RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_DELAY_S = 30.0
_UPLOAD_TYPE = "application/octet-stream"


# -- errors -------------------------------------------------------------------------------------


class NomarrError(Exception):
    """Anything that went wrong talking to the agent.

    ``status`` is the HTTP status (``None`` when no answer came back or the client refused the
    request itself), ``code`` the agent's stable machine-readable code (``bad-request``,
    ``model-missing``, ... plus the client's own ``unavailable``, ``timeout``, ``bad-response``,
    ``wrong-agent``, ``invalid-url``), ``message`` a sentence for people.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status is not None else ""
        return f"{self.message} ({where}{self.code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class AgentUnavailable(NomarrError):
    """No answer from the agent after the configured retries: connection refused, DNS failure,
    timeout, or no agent found on the network. ``attempts`` says how many requests were tried."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: list[dict[str, object]] | None = None,
        *,
        attempts: int = 0,
        agents: Sequence[object] = (),
    ) -> None:
        super().__init__(status, code, message, details)
        self.attempts = attempts
        self.agents = list(agents)  # discovery failures: what was found, for a UI to offer


class Unauthorized(NomarrError):
    """401: the token is missing or wrong."""


class Forbidden(NomarrError):
    """403: a path outside the agent's library roots."""


class NotFound(NomarrError):
    """404: no such track, model or route."""


class ModelMissing(NomarrError):
    """409 ``model-missing``: the answer needs a model the agent has not installed."""


class BadRequest(NomarrError):
    """Any other 4xx (the request is wrong, too large, the agent is busy, ...), or a request the
    client refused before sending it (``status`` is ``None`` then)."""


class ServerError(NomarrError):
    """5xx: the agent (or a proxy in front of it) failed; retried first where that is safe."""


_STATUS_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    502: "bad-gateway",
    503: "unavailable",
    504: "gateway-timeout",
}


def _error_class(status: int, code: str) -> type[NomarrError]:
    if code == "model-missing":
        return ModelMissing
    if status == 401:
        return Unauthorized
    if status == 403:
        return Forbidden
    if status == 404:
        return NotFound
    if status >= 500:
        return ServerError
    return BadRequest


def _invalid(e: ValidationError) -> BadRequest:
    """A request model refused the arguments: the agent's own wording, before any traffic."""
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "request"
        parts.append(f"{loc}: {err.get('msg')}")
    details: list[dict[str, object]] = [
        {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in e.errors()[:20]
    ]
    return BadRequest(None, "bad-request", "; ".join(parts) or "invalid request", details)


def _build(request_model: type[M], /, **fields: Any) -> M:
    try:
        return request_model.model_validate(fields)
    except ValidationError as e:
        raise _invalid(e) from e


def normalize_base_url(url: str) -> str:
    """``http://pi:8080`` means ``http://pi:8080/api/v1``; a URL with a path (a reverse proxy at
    ``/nomarr/api/v1``) is kept as written. Same rule as discovery's, without importing zeroconf."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NomarrError(
            None,
            "invalid-url",
            f"agent URL {url!r} is not an http(s) URL with a host; {CONFIG_HINT}",
        )
    path = parts.path.rstrip("/") or api.API_PREFIX
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class _Retry(enum.Enum):
    """What may be retried for one request."""

    QUERY = "query"  # idempotent and cheap: connection errors, timeouts, 502/503/504
    SLOW = "slow"  # idempotent but long (analysis): as QUERY, except a timeout (the agent is still working)
    CONNECT = "connect"  # has effects (upload, pull, scan): only when the connection was never made


# -- the async client ---------------------------------------------------------------------------


class NomarrClient(ListeningMixin):
    """Async client for one agent. Use ``async with NomarrClient(url, token) as c: ...``.

    ``timeout`` bounds a whole request (seconds); ``connect_timeout`` just the TCP connect, so a
    dead host fails fast. Analysis, uploads and model downloads use ``long_timeout`` instead: the
    agent may queue them behind a scan. ``retries`` is how many times a failed request is repeated
    (so ``retries + 1`` attempts), waiting ``backoff * 2**n`` seconds between them. A ``session``
    given by the host is used and left open; otherwise the client owns one, created on first use
    (inside the running loop, where aiohttp wants it) and closed by :meth:`close`. ``agent_id`` pins
    the agent paired with (see :meth:`verify`).

    One instance belongs to one event loop; from synchronous code use :class:`SyncNomarrClient`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.5,
        session: aiohttp.ClientSession | None = None,
        agent_id: str | None = None,
        long_timeout: float = 600.0,
    ) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0 or connect_timeout <= 0 or long_timeout <= 0:
            raise ValueError("retries and backoff must be >= 0, timeouts > 0")
        self.base_url = normalize_base_url(base_url)
        # a token pasted from the file usually carries its trailing newline
        self.token = token.strip() if token and token.strip() else None
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.long_timeout = max(float(long_timeout), self.timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.agent_id = agent_id.strip().lower() if agent_id else None
        self._session = session
        self._own_session = session is None
        self._closed = False

    def __repr__(self) -> str:  # never the token
        return f"NomarrClient({self.base_url!r}, agent_id={self.agent_id!r})"

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def discover(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        agent_id: str | None = None,
        timeout: float = 3.0,
        **kw: Any,
    ) -> NomarrClient:
        """A client for the configured ``url``, else for the agent found on the local network.

        A configured URL wins and costs no network traffic (it may reach across subnets mDNS never
        does). Browsing honours the pinned ``agent_id`` and refuses to guess between several
        unpinned agents; either failure is an :class:`AgentUnavailable` whose ``agents`` lists what
        was found. The pin is not checked against a configured URL here (that needs the token and
        a request): call :meth:`verify` once connected.
        """
        if url:
            return cls(url, token, agent_id=agent_id, **kw)
        try:  # imported only now: zeroconf is only needed when browsing
            from .discovery import DiscoveryError, find_agent
        except Exception as e:  # a broken or missing zeroconf must not break configured-URL use
            raise AgentUnavailable(
                None, "unavailable", f"agent discovery is not available ({e}); {CONFIG_HINT}"
            ) from e
        try:
            base = await find_agent(None, agent_id, timeout)
        except DiscoveryError as e:
            raise AgentUnavailable(
                None, "not-discovered", f"{e}; {CONFIG_HINT}", agents=e.agents
            ) from e
        return cls(base, token, agent_id=agent_id, **kw)

    async def __aenter__(self) -> NomarrClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's own session (a session the host passed in stays open)."""
        self._closed = True
        if self._own_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this NomarrClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- the transport ----------------------------------------------------------------------

    def _url(self, path: str) -> URL:
        # encoded=True: ids were quoted by the caller, so "a/b" stays one path segment
        return URL(self.base_url + path, encoded=True)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * (2 ** (attempt - 1))
        if (
            retry_after and retry_after.strip().isdigit()
        ):  # a proxy or agent saying when to come back
            delay = max(delay, float(retry_after))
        return min(delay, _MAX_DELAY_S)

    async def _request(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: BaseModel | None = None,
        params: Sequence[tuple[str, str]] | None = None,
        retry: _Retry = _Retry.QUERY,
        upload: str | None = None,
        raw: bytes | None = None,
        long: bool = False,
    ) -> M:
        """One API call with retries; ``upload`` is a local file streamed as the body, ``raw``
        bytes sent as the body (PCM), ``long`` picks ``long_timeout`` (analysis, uploads,
        downloads)."""
        session = self._get_session()
        url = self._url(path + (f"?{_query(params)}" if params else ""))
        params = None  # in the URL, percent-encoded byte for byte (see _query)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if body is not None:
            data = _json_body(body)
            headers["Content-Type"] = "application/json"
        elif upload is not None:
            headers["Content-Type"] = _UPLOAD_TYPE
        elif raw is not None:
            data = raw
            headers["Content-Type"] = _UPLOAD_TYPE
        total = self.long_timeout if long else self.timeout
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self.connect_timeout)
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            failure: BaseException
            reason: str
            try:
                status, raw, retry_after = await self._send(
                    session, method, url, headers, params, data, upload, timeout
                )
            except aiohttp.ClientSSLError as e:  # retrying cannot fix a certificate
                raise AgentUnavailable(
                    None,
                    "unavailable",
                    f"TLS failure talking to the agent at {self.base_url}: {e}",
                    attempts=attempt,
                ) from e
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                # the connection was never made, so nothing reached the agent: always safe to retry
                failure, reason, retryable = e, f"cannot connect: {e}", True
            except TimeoutError as e:
                failure, reason, retryable = (
                    e,
                    f"no answer within {total:g} s",
                    retry is _Retry.QUERY,
                )
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                failure, reason, retryable = e, f"connection lost: {e}", retry is not _Retry.CONNECT
            except (
                aiohttp.ClientError
            ) as e:  # not HTTP as aiohttp knows it: something else on that port
                what = " ".join(str(getattr(e, "message", "") or e or type(e).__name__).split())[
                    :200
                ]
                raise NomarrError(
                    None,
                    "bad-response",
                    f"{method} {self.base_url}{path} did not get an HTTP answer "
                    f"({what}); is {self.base_url} a nomarr agent?",
                ) from e
            else:
                if status in _RETRY_STATUSES and retry is not _Retry.CONNECT and attempt < attempts:
                    delay = self._delay(attempt, retry_after)
                    log.info(
                        "agent answered %s; retrying in %.2f s",
                        status,
                        delay,
                        extra={"url": str(url), "attempt": attempt},
                    )
                    await asyncio.sleep(delay)
                    continue
                return self._parse(status, raw, model, method, path)
            if not retryable or attempt == attempts:
                code = (
                    "timeout"
                    if isinstance(failure, TimeoutError)
                    and not isinstance(failure, aiohttp.ConnectionTimeoutError)
                    else "unavailable"
                )
                raise AgentUnavailable(
                    None,
                    code,
                    f"no answer from the nomarr agent at {self.base_url} ({reason}; "
                    f"{attempt} attempt{'s' if attempt > 1 else ''}): the agent may be down or "
                    f"unreachable; start it with `nomarr serve`, or {CONFIG_HINT}",
                    attempts=attempt,
                ) from failure
            delay = self._delay(attempt, None)
            log.info(
                "request failed (%s); retrying in %.2f s",
                reason,
                delay,
                extra={"url": str(url), "attempt": attempt},
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        headers: dict[str, str],
        params: Sequence[tuple[str, str]] | None,
        data: bytes | None,
        upload: str | None,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, bytes, str | None]:
        if upload is None:
            async with session.request(
                method, url, headers=headers, params=params, data=data, timeout=timeout
            ) as r:
                return r.status, await r.read(), r.headers.get("Retry-After")
        # A file object: aiohttp sends its size as Content-Length (the agent can refuse an oversized
        # upload before reading it) and streams it in fixed-size reads (256 KiB in aiohttp 3.12) on a
        # worker thread, so the file is never held in memory whatever its size. Reopened per attempt: a retried upload starts from the first byte.
        f = await asyncio.to_thread(open, upload, "rb")
        try:
            async with session.request(
                method, url, headers=headers, params=params, data=f, timeout=timeout
            ) as r:
                return r.status, await r.read(), r.headers.get("Retry-After")
        finally:
            await asyncio.to_thread(f.close)

    def _parse(self, status: int, raw: bytes, model: type[M], method: str, path: str) -> M:
        if 200 <= status < 300:
            try:
                return _parse_json(model, raw)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(x) for x in first.get("loc", ())) or "body"
                raise NomarrError(
                    status,
                    "bad-response",
                    f"{method} {self.base_url}{path} answered with something that "
                    f"is not a nomarr {model.__name__} ({where}: {first.get('msg')}); is "
                    f"{self.base_url} a nomarr agent (API v{api.API_VERSION})?",
                ) from e
        raise self._error(status, raw, method, path)

    def _error(self, status: int, raw: bytes, method: str, path: str) -> NomarrError:
        code = _STATUS_CODES.get(status, "bad-request" if status < 500 else "internal")
        message = ""
        details: list[dict[str, object]] | None = None
        try:
            err = _parse_json(api.ErrorResponse, raw).error
            code, message, details = err.code, err.message, err.details
        except (ValidationError, ValueError):  # not the agent's error shape: a proxy's page, say
            text = raw[:300].decode("utf-8", "replace").strip()
            message = f"HTTP {status} from {method} {self.base_url}{path}" + (
                f": {text}" if text else ""
            )
        if status == 401:
            what = "no token was given" if not self.token else "the token was refused (wrong token)"
            message = f"the agent at {self.base_url} needs a token and {what}: {TOKEN_HINT}"
        elif status >= 500 and status in _RETRY_STATUSES:
            message += f" (the agent at {self.base_url} or a proxy in front of it is unavailable)"
        return _error_class(status, code)(status, code, message, details)

    # -- agent ------------------------------------------------------------------------------

    async def health(self) -> api.Health:
        """Liveness and version; needs no token (use :meth:`verify` to check the token too)."""
        return await self._request("GET", "/health", api.Health)

    async def status(self) -> api.Status:
        """Version, agent id, roots, scan queue, models. Checks the pinned agent id."""
        st = await self._request("GET", "/status", api.Status)
        self._check_pin(st)
        return st

    async def verify(self) -> api.Status:
        """Check the agent answers, accepts the token and (if pinned) is the paired agent.

        Raises :class:`AgentUnavailable`, :class:`Unauthorized`, or ``NomarrError(code="wrong-agent")``;
        meant for a plugin's start-up and its "test connection" button.
        """
        return await self.status()

    def _check_pin(self, st: api.Status) -> None:
        if self.agent_id is not None and st.agent_id.strip().lower() != self.agent_id:
            raise NomarrError(
                None,
                "wrong-agent",
                f"the agent at {self.base_url} has id {st.agent_id}, not the paired "
                f"agent {self.agent_id}: fix the configured URL, or pair the plugin again "
                "(clear the pinned agent id)",
            )

    async def scan(self, paths: Sequence[str] | None = None) -> api.ScanQueued:
        """Queue a rescan of ``paths`` (default: every library root). Not retried after the
        request may have arrived: a duplicate would queue the work twice."""
        req = _build(
            api.ScanRequest, paths=None if paths is None else [os.fsdecode(p) for p in paths]
        )
        return await self._request("POST", "/scan", api.ScanQueued, body=req, retry=_Retry.CONNECT)

    # -- tracks -----------------------------------------------------------------------------

    async def tracks(
        self,
        offset: int = 0,
        limit: int = 100,
        status: str = "ok",
        under: str | Sequence[str] | None = None,
    ) -> api.TrackPage:
        """One page of tracks ordered by id; ``under`` restricts to folders inside the roots."""
        params = _track_params(offset, limit, status, under)
        return await self._request("GET", "/tracks", api.TrackPage, params=params)

    async def iter_tracks(
        self, status: str = "ok", under: str | Sequence[str] | None = None, page_size: int = 500
    ) -> AsyncIterator[api.Track]:
        """Every track, fetched a page at a time (memory stays one page whatever the library size).

        Offset paging: tracks added or removed while iterating may be skipped or seen twice.
        """
        _track_params(0, page_size, status, under)  # refuse bad arguments before the first request
        offset: int | None = 0
        while offset is not None:
            page = await self.tracks(offset, page_size, status, under)
            for t in page.items:
                yield t
            offset = page.next_offset

    async def track(self, id: int) -> api.TrackDetail:
        """One track with its analyses, tiers and the ``nom:`` tags written to it."""
        return await self._request("GET", f"/tracks/{_track_id(id)}", api.TrackDetail)

    async def lookup(
        self,
        path: str | None = None,
        fingerprint: str | None = None,
        duration: float | None = None,
        mbid: str | None = None,
        isrc: str | None = None,
    ) -> api.TrackList:
        """Tracks by library path, compressed Chromaprint fingerprint (+ its ``duration``),
        MusicBrainz recording id or ISRC: exactly one of them."""
        keys = {"path": path, "fingerprint": fingerprint, "mbid": mbid, "isrc": isrc}
        given = [(k, os.fsdecode(v) if k == "path" else str(v)) for k, v in keys.items() if v]
        if len(given) != 1:
            raise BadRequest(
                None, "bad-request", "give exactly one of path, fingerprint, mbid, isrc"
            )
        if duration is not None:
            if fingerprint is None:
                raise BadRequest(None, "bad-request", "duration goes with a fingerprint")
            given.append(("duration", repr(float(duration))))
        return await self._request("GET", "/tracks/lookup", api.TrackList, params=given)

    # -- queries ----------------------------------------------------------------------------

    async def similar(
        self,
        track_id: int | None = None,
        path: str | None = None,
        vector: Sequence[float] | None = None,
        model: str | None = None,
        limit: int = 10,
        distinct: bool = False,
        filters: api.Filters | Mapping[str, Any] | None = None,
        stream_id: int | None = None,
    ) -> api.HitList:
        """Nearest tracks to a track (id or path), a streamed recording (``stream_id``) or a raw
        embedding (``vector`` with ``model``)."""
        if vector is not None and not all(math.isfinite(x) for x in vector):
            # JSON has no NaN: it would go out as null and come back as a puzzling "not a number"
            raise BadRequest(None, "bad-request", "vector must be finite (no NaN or infinity)")
        req = _build(
            api.SimilarRequest,
            track_id=track_id,
            path=_opt_path(path),
            vector=None if vector is None else list(vector),
            model=model,
            limit=limit,
            distinct=distinct,
            filters=filters,
            stream_id=stream_id,
        )
        return await self._request("POST", "/similar", api.HitList, body=req)

    async def moods(self) -> api.MoodList:
        """Every label some model scores, and whether free text works (CLAP installed)."""
        return await self._request("GET", "/moods", api.MoodList)

    async def tag_keys(self) -> api.TagKeyList:
        """Every ``nom:`` key the agent has written into files, with how many tracks carry it."""
        return await self._request("GET", "/tags", api.TagKeyList)

    async def mood_playlist(
        self,
        label: str,
        model: str | None = None,
        limit: int = 25,
        min_score: float = 0.0,
        filters: api.Filters | Mapping[str, Any] | None = None,
    ) -> api.Playlist:
        """The tracks scoring highest for ``label`` (answered zero-shot when only CLAP knows it)."""
        req = _build(
            api.MoodPlaylistRequest,
            label=label,
            model=model,
            limit=limit,
            min_score=min_score,
            filters=filters,
        )
        return await self._request("POST", "/playlists/mood", api.Playlist, body=req)

    async def radio(
        self,
        track_id: int | None = None,
        path: str | None = None,
        model: str | None = None,
        limit: int = 25,
        exclude_track_ids: Sequence[int] = (),
        filters: api.Filters | Mapping[str, Any] | None = None,
    ) -> api.Playlist:
        """The seed, then a smooth walk through its neighbours; ``exclude_track_ids`` were played."""
        req = _build(
            api.RadioRequest,
            track_id=track_id,
            path=_opt_path(path),
            model=model,
            limit=limit,
            exclude_track_ids=list(exclude_track_ids),
            filters=filters,
        )
        return await self._request("POST", "/playlists/radio", api.Playlist, body=req)

    async def path_playlist(
        self,
        start: int | str,
        end: int | str,
        model: str | None = None,
        limit: int = 12,
        filters: api.Filters | Mapping[str, Any] | None = None,
    ) -> api.Playlist:
        """A song path from ``start`` to ``end``, each a track id (int) or a library path (str)."""
        req = _build(
            api.PathPlaylistRequest,
            start=_ref(start, "start"),
            end=_ref(end, "end"),
            model=model,
            limit=limit,
            filters=filters,
        )
        return await self._request("POST", "/playlists/path", api.Playlist, body=req)

    async def text_playlist(
        self, text: str, limit: int = 25, filters: api.Filters | Mapping[str, Any] | None = None
    ) -> api.Playlist:
        """Tracks nearest to a description; :class:`ModelMissing` until a CLAP model is pulled."""
        req = _build(api.TextPlaylistRequest, text=text, limit=limit, filters=filters)
        return await self._request("POST", "/playlists/text", api.Playlist, body=req)

    # -- analysis ---------------------------------------------------------------------------

    async def analyze(
        self,
        path: str,
        profile: str | None = None,
        models: Sequence[str] | None = None,
        embedding: bool = False,
    ) -> api.AnalyzeResponse:
        """Scores and tags for a file inside a library root (the stored result when current).

        Nothing is written, so it is retried like a query, except after a timeout: the agent is
        then most likely still analysing, and a retry would queue the same work again.
        """
        req = _build(
            api.AnalyzeRequest,
            path=os.fsdecode(path),
            profile=profile,
            models=None if models is None else list(models),
            embedding=embedding,
        )
        return await self._request(
            "POST", "/analyze", api.AnalyzeResponse, body=req, retry=_Retry.SLOW, long=True
        )

    async def analyze_file(
        self,
        local_path: str | os.PathLike[str],
        *,
        filename: str | None = None,
        profile: str | None = None,
        models: Sequence[str] | None = None,
        embedding: bool = False,
    ) -> api.AnalyzeResponse:
        """Analyse a file on *this* machine by uploading its bytes (streamed, never read whole).

        ``filename`` (default: the file's own name) tells the agent the format by its extension.
        Retried only when the connection could not be made: the upload is a heavy request.
        """
        local = os.fspath(local_path)
        name = os.path.basename(filename or local)
        # the same bounds the agent applies to profile/models, checked before a byte is sent
        _build(
            api.AnalyzeRequest,
            path=name or "-",
            profile=profile,
            models=None if models is None else list(models),
            embedding=embedding,
        )
        if not await asyncio.to_thread(os.path.isfile, local):
            raise FileNotFoundError(local)
        params = [("filename", name)]
        if profile is not None:
            params.append(("profile", profile))
        params += [("model", m) for m in models or ()]
        if embedding:
            params.append(("embedding", "true"))
        return await self._request(
            "POST",
            "/analyze",
            api.AnalyzeResponse,
            params=params,
            retry=_Retry.CONNECT,
            upload=local,
            long=True,
        )

    # -- models -----------------------------------------------------------------------------

    async def models(self) -> api.ModelList:
        """Every model the agent knows and whether it is installed."""
        return await self._request("GET", "/models", api.ModelList)

    async def pull_model(self, id: str) -> api.PullResponse:
        """Have the agent download a model (uses ``long_timeout``; not retried once sent)."""
        if not id or len(id) > 200:
            raise BadRequest(None, "bad-request", "model id must be 1..200 characters")
        return await self._request(
            "POST",
            f"/models/{quote(id, safe='')}/pull",
            api.PullResponse,
            retry=_Retry.CONNECT,
            long=True,
        )


# -- file names that are not UTF-8 --------------------------------------------------------------
#
# A path is the file system's bytes decoded as UTF-8, a byte that is not UTF-8 becoming a lone
# surrogate U+DC80..U+DCFF (Python's os.fsdecode; docs/api.md "Paths"). The agent writes those as
# \udcXX escapes in its JSON; pydantic's own JSON parser refuses lone surrogates, so answers that
# hold one are parsed by the json module instead, request bodies written by it, and query values
# percent-encoded from the raw bytes.


def _parse_json(model: type[M], raw: bytes) -> M:
    """An answer as ``model``; JSON carrying a name that is not UTF-8 goes through ``json``."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        if not any(err.get("type") == "json_invalid" for err in e.errors()) or b"\\ud" not in raw:
            raise
        try:
            doc = json.loads(raw)
        except ValueError:
            raise e from None
        return model.model_validate(doc)


def _json_body(body: BaseModel) -> bytes:
    """A request model as JSON (a path that is not UTF-8 as its \\udcXX escapes)."""
    try:
        return body.model_dump_json(exclude_none=True).encode()
    except PydanticSerializationError:
        return json.dumps(body.model_dump(mode="json", exclude_none=True)).encode()


def _query(params: Sequence[tuple[str, str | bytes]]) -> str:
    """``k=v&…`` with each value percent-encoded from its bytes (a path's raw bytes included)."""

    def raw(v: str | bytes) -> bytes:
        return v if isinstance(v, bytes) else v.encode("utf-8", "surrogateescape")

    return "&".join(f"{quote(k, safe='')}={quote(raw(v), safe='/')}" for k, v in params)


# -- argument helpers ---------------------------------------------------------------------------


def _track_params(
    offset: int, limit: int, status: str, under: str | Sequence[str] | None
) -> list[tuple[str, str]]:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise BadRequest(None, "bad-request", "offset must be an integer >= 0")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(None, "bad-request", f"limit must be an integer in 1..{MAX_PAGE}")
    if status not in TRACK_STATUSES:
        raise BadRequest(None, "bad-request", f"status must be one of {', '.join(TRACK_STATUSES)}")
    folders = (
        []
        if under is None
        else [os.fsdecode(under)]
        if isinstance(under, str | bytes | os.PathLike)
        else [os.fsdecode(u) for u in under]
    )
    if len(folders) > 64:
        raise BadRequest(None, "bad-request", "at most 64 under folders")
    return [("offset", str(offset)), ("limit", str(limit)), ("status", status)] + [
        ("under", u) for u in folders
    ]


def _track_id(tid: int) -> int:
    if isinstance(tid, bool) or not isinstance(tid, int) or tid < 1:
        raise BadRequest(None, "bad-request", f"track id must be an integer >= 1, not {tid!r}")
    return tid


def _opt_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> str | None:
    """A path as the API's text (bytes, beets' kind, decoded as the agent decodes names)."""
    return None if path is None else os.fsdecode(path)


def _ref(x: int | str | os.PathLike[str], which: str) -> dict[str, object]:
    """``start``/``end`` of a path playlist: an int is a track id, a str a library path."""
    if isinstance(x, bool):
        raise BadRequest(
            None, "bad-request", f"{which} must be a track id (int) or a library path (str)"
        )
    if isinstance(x, int):
        return {"track_id": x}
    if isinstance(x, str | bytes | os.PathLike):
        return {"path": os.fsdecode(x)}
    raise BadRequest(
        None, "bad-request", f"{which} must be a track id (int) or a library path (str)"
    )


# -- the synchronous facade ---------------------------------------------------------------------


class _LoopThread:
    """A private event loop on a daemon thread: synchronous callers submit coroutines to it and
    block on the result. Because the loop is not the caller's, this works the same from plain
    code, from another thread, and from inside a running event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="nomarr-client", daemon=True
        )
        self.thread.start()

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the private loop and wait for its result. The awaitable is created on
        the loop thread, so nothing is left un-awaited when the call is refused."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("SyncNomarrClient called from its own loop thread (would deadlock)")
        if self.loop.is_closed():
            raise RuntimeError("this SyncNomarrClient is closed")
        return asyncio.run_coroutine_threadsafe(_call(make), self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


def _sync(
    method: Callable[Concatenate[NomarrClient, P], Awaitable[T]],
) -> Callable[Concatenate[SyncNomarrClient, P], T]:
    """The blocking twin of one :class:`NomarrClient` method (same signature and docstring)."""

    @functools.wraps(method)
    def call(self: SyncNomarrClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._runner.run(lambda: method(self._client, *args, **kwargs))

    return call


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


class SyncNomarrClient:
    """:class:`NomarrClient` for synchronous hosts (beets): the same methods, blocking.

    Each call runs on a private event loop in a background thread, so it also works when called
    from inside a running loop (that loop is blocked for the call's duration, as with any blocking
    I/O). Thread-safe. Call :meth:`close` (or use ``with``) to close the session and stop the thread.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.5,
        agent_id: str | None = None,
        long_timeout: float = 600.0,
    ) -> None:
        # validate (and fail) before a thread exists
        client = NomarrClient(
            base_url,
            token,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            backoff=backoff,
            agent_id=agent_id,
            long_timeout=long_timeout,
        )
        self._client = client
        self._runner = _LoopThread()

    @classmethod
    def discover(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        agent_id: str | None = None,
        timeout: float = 3.0,
        **kw: Any,
    ) -> SyncNomarrClient:
        """As :meth:`NomarrClient.discover`, blocking."""
        if "session" in kw:  # a host's session belongs to the host's loop, not to the private one
            raise TypeError("SyncNomarrClient makes its own session")
        runner = _LoopThread()
        try:
            client = runner.run(
                lambda: NomarrClient.discover(
                    url=url, token=token, agent_id=agent_id, timeout=timeout, **kw
                )
            )
        except BaseException:
            runner.stop()
            raise
        self = cls.__new__(cls)
        self._client, self._runner = client, runner
        return self

    @property
    def client(self) -> NomarrClient:
        """The async client underneath (bound to the private loop: do not await it elsewhere)."""
        return self._client

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def __repr__(self) -> str:
        return f"SyncNomarrClient({self._client.base_url!r}, agent_id={self._client.agent_id!r})"

    def __enter__(self) -> SyncNomarrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the background thread (idempotent)."""
        if not self._runner.loop.is_closed():
            try:
                self._runner.run(self._client.close)
            finally:
                self._runner.stop()

    health = _sync(NomarrClient.health)
    status = _sync(NomarrClient.status)
    verify = _sync(NomarrClient.verify)
    scan = _sync(NomarrClient.scan)
    tracks = _sync(NomarrClient.tracks)
    track = _sync(NomarrClient.track)
    lookup = _sync(NomarrClient.lookup)
    similar = _sync(NomarrClient.similar)
    moods = _sync(NomarrClient.moods)
    tag_keys = _sync(NomarrClient.tag_keys)
    mood_playlist = _sync(NomarrClient.mood_playlist)
    radio = _sync(NomarrClient.radio)
    path_playlist = _sync(NomarrClient.path_playlist)
    text_playlist = _sync(NomarrClient.text_playlist)
    analyze = _sync(NomarrClient.analyze)
    analyze_file = _sync(NomarrClient.analyze_file)
    models = _sync(NomarrClient.models)
    pull_model = _sync(NomarrClient.pull_model)
    users = _sync(NomarrClient.users)
    add_listens = _sync(NomarrClient.add_listens)
    listens = _sync(NomarrClient.listens)
    import_listenbrainz = _sync(NomarrClient.import_listenbrainz)
    sync_listenbrainz = _sync(NomarrClient.sync_listenbrainz)
    post_counters = _sync(NomarrClient.post_counters)
    post_favourites = _sync(NomarrClient.post_favourites)
    taste = _sync(NomarrClient.taste)
    recommendations = _sync(NomarrClient.recommendations)
    trends = _sync(NomarrClient.trends)
    export_user = _sync(NomarrClient.export_user)
    delete_user = _sync(NomarrClient.delete_user)
    ingest_start = _sync(NomarrClient.ingest_start)
    ingest_chunk = _sync(NomarrClient.ingest_chunk)
    ingest_end = _sync(NomarrClient.ingest_end)
    ingest_abort = _sync(NomarrClient.ingest_abort)
    stream = _sync(NomarrClient.stream)
    lookup_recording = _sync(NomarrClient.lookup_recording)

    def iter_tracks(
        self, status: str = "ok", under: str | Sequence[str] | None = None, page_size: int = 500
    ) -> Iterator[api.Track]:
        """Every track, a page per request (see :meth:`NomarrClient.iter_tracks`)."""
        _track_params(0, page_size, status, under)
        offset: int | None = 0
        while offset is not None:
            page = self.tracks(offset, page_size, status, under)
            yield from page.items
            offset = page.next_offset


__all__ = [
    "AgentUnavailable",
    "BadRequest",
    "Forbidden",
    "ModelMissing",
    "NomarrClient",
    "NomarrError",
    "NotFound",
    "ServerError",
    "SyncNomarrClient",
    "Unauthorized",
    "normalize_base_url",
]
