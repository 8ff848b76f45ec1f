"""The HTTP layer's machinery, shared by every group of routes (DESIGN §5).

A route is declared once (:class:`Route`, collected in ``nomarr.server.app.ROUTES``); the router,
the validation and the OpenAPI document all come from that one declaration, so the document cannot
drift from what the server does. Here live the pieces every handler needs: the error type and its
JSON body, body parsing with the size limit, query-parameter parsing, running blocking work off the
event loop, and the two middlewares (errors first, then the bearer token).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from nomarr_client import models as api
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from nomarr import query
from nomarr.server.guard import MAX_JSON_DEPTH, BodyFailed, json_depth_ok
from nomarr.server.service import Agent, PathDenied, PathInvalid

log = logging.getLogger("nomarr.api")

Handler = Callable[[web.Request], Awaitable[BaseModel]]
AGENT_KEY: web.AppKey[Agent] = web.AppKey("agent", Agent)
# the console session a request came with (nomarr.web); a typed key where aiohttp has them
SESSION_KEY: Any = web.RequestKey("session", object) if hasattr(web, "RequestKey") else "session"


class ApiError(Exception):
    """An error answer: status, stable code, message for people."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass
class Route:
    method: str
    path: str  # below /api/v1
    handler: Handler
    summary: str
    response: type[BaseModel]
    request: type[BaseModel] | None = None
    query: list[dict[str, Any]] = field(default_factory=list)
    auth: bool = True
    upload: bool = False
    tag: str = "library"
    # a route answering something other than JSON: its media types (the OpenAPI document lists
    # them as binary, and JSON for the errors)
    media: tuple[str, ...] = ()
    raw_body: bool = False  # the body is bytes (an export file, PCM), not a JSON model


def query_param(
    name: str, typ: str, desc: str, *, required: bool = False, **schema: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": desc,
        "schema": {"type": typ, **schema},
    }


# -- helpers -----------------------------------------------------------------------------------


def agent_of(request: web.Request) -> Agent:
    """The agent this application serves."""
    return request.app[AGENT_KEY]


async def json_body(
    request: web.Request, model: type[BaseModel], *, limit_kb: int | None = None
) -> Any:
    """The body parsed into ``model``; at most ``max_json_kb`` KiB (or ``limit_kb``: batches of
    listens and counters are larger than any query)."""
    agent = agent_of(request)
    kb = max(agent.cfg.max_json_kb, limit_kb or 0)
    raw = await read_body(request, kb * 1024, f"request body over {kb} KiB")
    if not json_depth_ok(raw):
        raise ApiError(
            400, "bad-request", f"body is nested more than {MAX_JSON_DEPTH} arrays/objects deep"
        )
    try:
        data = json.loads(raw or b"{}")
        # "\ud800" is valid JSON but not text: refuse lone surrogates here, not with a 500 from os or
        # sqlite later; \udc80-\udcff stay legal (os.fsdecode's spelling of non-UTF-8 name bytes)
        json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogateescape")
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad-request", f"body is not valid JSON: {e}") from None
    except RecursionError:  # a backstop: the depth check above should have refused it
        raise ApiError(400, "bad-request", "body is nested too deeply") from None
    try:
        return model.model_validate(data)
    except RecursionError:
        raise ApiError(400, "bad-request", "body is nested too deeply") from None
    except ValidationError as e:
        raise ApiError(400, "bad-request", validation_message(e), error_details(e)) from None


async def read_body(request: web.Request, limit: int, too_large: str) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes. (``StreamReader.read(n)`` returns
    what has arrived so far, which for a large body is only its first part.)"""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too-large", too_large)
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too-large", too_large)
        parts.append(chunk)


def error_details(e: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in e.errors()
    ][:20]


def validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def path_params(request: web.Request, name: str) -> list[str]:
    """The values of a path-bearing query parameter, decoded byte for byte: ``%E9`` (a byte of
    a file name that is not UTF-8) becomes ``\udce9`` as ``os.fsdecode`` spells it, so the name
    can be asked for, where aiohttp's own decoding would turn it into U+FFFD and miss the file."""
    from urllib.parse import parse_qsl

    pairs = parse_qsl(
        request.rel_url.raw_query_string,
        keep_blank_values=True,
        encoding="utf-8",
        errors="surrogateescape",
    )
    return [v for k, v in pairs if k == name]


def _num_param(request: web.Request, name: str, kind: type, lo: float, hi: float) -> Any:
    """A numeric query parameter of ``kind`` within [lo, hi]; None when absent; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        v = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ApiError(400, "bad-request", f"{name} must be {what}") from None
    if not lo <= v <= hi:
        raise ApiError(400, "bad-request", f"{name} must be in {lo}..{hi}")
    return v


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    v = _num_param(request, name, int, lo, hi)
    return default if v is None else int(v)


def float_param(request: web.Request, name: str, lo: float, hi: float) -> float | None:
    """An optional float query parameter within [lo, hi] (None when absent)."""
    return _num_param(request, name, float, lo, hi)  # type: ignore[no-any-return]


def track_id_param(request: web.Request) -> int:
    """The ``{id}`` of a ``/tracks/{id}…`` route: 400 when not an integer, 404 when no track can
    have it (past SQLite's 64-bit integers)."""
    try:
        tid = int(request.match_info["id"])
    except ValueError:
        raise ApiError(400, "bad-request", "track id must be an integer") from None
    if not 1 <= tid <= 2**63 - 1:
        raise ApiError(404, "not-found", f"no track {tid}")
    return tid


async def off_loop(fn: Callable[[], Any]) -> Any:
    """Database and numpy work off the event loop."""
    return await asyncio.to_thread(fn)


_STATUS_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = api.ErrorResponse(error=api.ErrorBody(code=code, message=message, details=details))
    return web.Response(
        status=status,
        text=json_text(body, exclude_none=True),
        content_type="application/json",
        headers=headers,
    )


def json_text(model: BaseModel, **kw: Any) -> str:
    """The answer as JSON. A file name that is not UTF-8 (os.fsdecode's surrogate escapes, also
    echoed in error messages) makes pydantic's encoder fail; json.dumps writes it as \\udcXX
    escapes instead, as the CLI's --json does, and os.fsencode(json.loads(...)) restores the bytes."""
    try:
        return model.model_dump_json(**kw)
    except PydanticSerializationError:
        return json.dumps(model.model_dump(mode="json", **kw))


def wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        res = await route.handler(request)
        if isinstance(res, web.StreamResponse):
            return res
        return web.Response(text=json_text(res), content_type="application/json")

    return handle


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except ApiError as e:
        resp = error_response(
            e.status,
            e.code,
            e.message,
            e.details,
            {"WWW-Authenticate": "Bearer"} if e.status == 401 else None,
        )
    except BodyFailed as e:  # a body cut off by a request limit (nomarr.server.guard)
        resp = error_response(e.status, e.code, e.message)
        resp.force_close()
    except PathInvalid as e:
        resp = error_response(400, "bad-request", str(e))
    except PathDenied as e:
        resp = error_response(403, "forbidden", str(e))
    except FileNotFoundError as e:
        resp = error_response(404, "not-found", f"{e.filename or e}: no such file")
    except query.UnknownTrack as e:
        resp = error_response(404, "not-found", str(e))
    except query.ModelRequired as e:
        resp = error_response(409, "model-missing", str(e))
    except query.QueryError as e:
        resp = error_response(422, "unprocessable", str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _STATUS_CODES.get(e.status, "bad-request" if e.status < 500 else "internal")
        msg = e.reason if e.status != 413 else "request body too large"
        resp = error_response(e.status, code, msg)
    except ValidationError as e:  # a model we built from stored data (a bug) or a query param
        resp = error_response(400, "bad-request", validation_message(e), error_details(e))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request failed", extra={"method": request.method, "path": request.path})
        resp = error_response(500, "internal", "internal error (logged by the agent)")
    log.debug(
        "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": resp.status,
            "ms": round((time.perf_counter() - t0) * 1e3, 2),
        },
    )
    return resp


def auth_middleware(token: str | None, console: Any = None) -> Any:
    """Bearer token on every route but ``GET /health``; with the web console (``console``, a
    :class:`nomarr.web.Console`), its session cookie is accepted instead of the token, state
    changes made with the cookie must carry the session's CSRF token, and pages asked for
    without a session redirect to the login page. A request that sends ``Authorization`` is
    judged by it alone: a wrong token is a 401 even with a valid cookie."""
    expected = token.encode() if token else None

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if console is not None and console.is_public(request):
            return await handler(request)
        if expected is None or request.path == api.API_PREFIX + "/health":
            if console is not None and expected is None:
                request[SESSION_KEY] = console.session_of(request)
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None and console is not None:
            session = console.session_of(request)
            if session is not None:
                why = console.check_csrf(request, session)
                if why is not None:
                    raise ApiError(403, "forbidden", why)
                request[SESSION_KEY] = session
                return await handler(request)
            if console.is_console(request):
                redirect = console.unauthenticated(request)
                if redirect is not None:
                    return redirect  # type: ignore[no-any-return]
        scheme, _, given = (header or "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected
        )
        if not ok:
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong token: send Authorization: Bearer <token> "
                '(the token is in the agent\'s config dir, file "token")',
            )
        return await handler(request)

    return auth
