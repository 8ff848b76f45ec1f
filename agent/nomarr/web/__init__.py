"""The web console: served by ``nomarr serve`` at ``/``, same port, same token (DESIGN §5).

What is here is the server side: the login page, sessions (:mod:`nomarr.web.sessions`), the page
shell and the static assets under ``static/`` (plain HTML, CSS and JavaScript modules written for
nomarr: no build step, nothing loaded from outside the agent, so it works offline). The pages talk
to the public API under ``/api/v1`` with the session cookie instead of the bearer token.

Rules the console keeps:

- nothing but ``/login`` (and ``GET /api/v1/health``) answers without a session or the token;
  a page asked for without one redirects to the login page, an asset or API call gets 401;
- the session cookie is HttpOnly, SameSite=Strict, Secure when the request came over TLS;
- every state-changing request made with the cookie carries the session's CSRF token in
  ``X-CSRF-Token`` (and a foreign ``Origin`` is refused), checked in the auth middleware;
- every console answer carries a strict Content-Security-Policy: scripts and styles only from the
  agent (the login page's one inline style is allowed by its hash), no framing, no plugins.

Adding a page: append a :class:`Page` to :data:`PAGES` and write ``static/pages/<name>.js``
exporting ``render(root, ctx)`` (see ``static/app.js``); the navigation and the router pick it up.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from nomarr.server.http import SESSION_KEY
from nomarr.web.sessions import Session, Sessions, same_secret

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Page:
    """One console page: its URL pattern (aiohttp syntax), module name and navigation title."""

    path: str
    name: str
    title: str
    nav: bool = True


PAGES: list[Page] = [
    Page("/", "overview", "Overview"),
    Page("/library", "library", "Library"),
    Page("/track/{id:[0-9]{1,19}}", "track", "Track", nav=False),
    Page("/playlists", "playlists", "Playlists"),
    Page("/models", "models", "Models"),
    Page("/map", "map", "Map"),
]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CONSOLE_KEY: web.AppKey[Any] = web.AppKey("console", object)


def _read(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


class Console:
    """The console's routes, sessions and checks for one agent."""

    def __init__(self, token: str | None, agent_id: str, version: str) -> None:
        self.token = token
        self.version = version
        self.sessions = Sessions()
        # one cookie name per agent: two agents on one host (different ports) share cookies
        self.cookie = "nomarr_session_" + re.sub(r"[^A-Za-z0-9]", "", agent_id)[:12]
        self._login = _read("login.html")
        style = re.search(r"<style>(.*?)</style>", self._login, re.S)
        digest = hashlib.sha256((style.group(1) if style else "").encode()).digest()
        self.login_csp = CSP.replace(
            "style-src 'self'", f"style-src 'sha256-{base64.b64encode(digest).decode()}'"
        )
        self._shell = _read("shell.html")
        self._assets: dict[str, tuple[bytes, str, str]] = {}

    # -- wiring ---------------------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        """Register the login, logout, page and asset routes on the agent's application."""
        app[CONSOLE_KEY] = self
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        for p in PAGES:
            app.router.add_get(p.path, self.page)
        app.router.add_get("/static/{name:.+}", self.asset)
        app.router.add_get("/favicon.ico", self.favicon)

    def is_public(self, request: web.Request) -> bool:
        """The login page (and its form's target) answer without a session."""
        return request.path == "/login"

    def is_console(self, request: web.Request) -> bool:
        """A console URL (not the API)."""
        return not request.path.startswith("/api/")

    def session_of(self, request: web.Request) -> Session | None:
        """The request's live session, from its cookie."""
        return self.sessions.get(request.cookies.get(self.cookie))

    def check_csrf(self, request: web.Request, session: Session) -> str | None:
        """Why a cookie-authenticated request may not change state (None: it may)."""
        if request.method in SAFE_METHODS:
            return None
        if not _same_origin(request):
            return "cross-origin request refused"
        if not same_secret(request.headers.get(CSRF_HEADER), session.csrf):
            return f"missing or wrong CSRF token (send the console's token in {CSRF_HEADER})"
        return None

    def unauthenticated(self, request: web.Request) -> web.StreamResponse | None:
        """Where a console request without a session goes: pages to the login page."""
        if request.method == "GET" and request.match_info.handler == self.page:
            return _redirect("/login?next=" + quote(request.path_qs, safe=""))
        return None

    # -- handlers -------------------------------------------------------------------------------

    def _html(self, text: str, status: int = 200, csp: str | None = None) -> web.Response:
        resp = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
        headers(resp, csp or CSP)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def _render_login(
        self, request: web.Request, error: str | None, status: int, nxt: str | None = None
    ) -> web.Response:
        nxt = _safe_next(nxt or request.query.get("next"))
        body = self._login.replace("{{next}}", html.escape(nxt, quote=True))
        body = body.replace("{{version}}", html.escape(self.version))
        body = body.replace(
            "{{error}}", f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        )
        body = body.replace(
            "{{token_field}}",
            ""
            if self.token is None
            else '<label for="token">Access token</label>'
            '<input id="token" name="token" type="password" autocomplete="current-password" '
            'required autofocus spellcheck="false">'
            '<p class="hint">The token is in the agent\'s config folder, file <code>token</code> '
            "(<code>~/.config/nomarr/token</code>), and was printed when the agent first started.</p>",
        )
        return self._html(body, status, self.login_csp)

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if self.session_of(request) is not None:
            return _redirect(_safe_next(request.query.get("next")))
        return self._render_login(request, None, 200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return self._render_login(request, "Cross-site login refused.", 403)
        try:
            form = await request.post()
        except Exception:  # a malformed form body
            return self._render_login(request, "Malformed form.", 400)
        given = form.get("token")
        nxt = _safe_next(str(form.get("next") or request.query.get("next") or "/"))
        if self.token is not None and not (
            isinstance(given, str) and same_secret(given.strip(), self.token)
        ):
            await asyncio.sleep(0.5)  # a guessing loop gets two tries a second per connection
            return self._render_login(request, "That is not this agent's token.", 401, nxt)
        s = self.sessions.create()
        resp = _redirect(nxt)
        resp.set_cookie(
            self.cookie,
            s.sid,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=int(7 * 24 * 3600),
        )
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        s = request.get(SESSION_KEY)
        if s is not None:
            self.sessions.revoke(s.sid)
        resp = _redirect("/login")
        resp.del_cookie(self.cookie, path="/")
        return resp

    async def page(self, request: web.Request) -> web.StreamResponse:
        s: Session | None = request.get(SESSION_KEY)
        nav = "".join(
            f'<a href="{p.path}" data-nav="{p.name}">{html.escape(p.title)}</a>'
            for p in PAGES
            if p.nav
        )
        pages = json.dumps([{"path": p.path, "name": p.name, "title": p.title} for p in PAGES])
        body = (
            self._shell.replace("{{nav}}", nav)
            .replace("{{csrf}}", html.escape(s.csrf if s else ""))
            .replace("{{version}}", html.escape(self.version))
            .replace("{{pages}}", html.escape(pages, quote=True))
            .replace("{{auth}}", "token" if self.token is not None else "none")
        )
        return self._html(body)

    def _asset(self, name: str) -> tuple[bytes, str, str] | None:
        if name in self._assets:
            return self._assets[name]
        p = (STATIC / name).resolve()
        if not p.is_file() or STATIC not in p.parents:
            return None
        data = p.read_bytes()
        ctype = {
            ".js": "text/javascript",
            ".css": "text/css",
            ".svg": "image/svg+xml",
            ".txt": "text/plain",
        }.get(p.suffix) or (mimetypes.guess_type(p.name)[0] or "application/octet-stream")
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        self._assets[name] = (data, ctype, etag)
        return self._assets[name]

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if ".." in name.split("/") or name.startswith("/") or "\\" in name:
            raise web.HTTPNotFound()
        got = self._asset(name)
        if got is None:
            raise web.HTTPNotFound()
        data, ctype, etag = got
        if request.headers.get("If-None-Match") == etag:
            resp: web.StreamResponse = web.Response(status=304)
        else:
            resp = web.Response(body=data, content_type=ctype)
            if ctype.startswith("text/"):
                resp.charset = "utf-8"
            if len(data) > 1024:
                resp.enable_compression()
        resp.headers["ETag"] = etag
        resp.headers["Cache-Control"] = "private, no-cache"
        headers(resp, CSP)
        return resp

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        return _redirect("/static/favicon.svg")


def _redirect(location: str) -> web.Response:
    """A 303 to a path on this agent (never cached: it depends on the session)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def headers(resp: web.StreamResponse, csp: str) -> None:
    """The console's security headers on one answer."""
    resp.headers["Content-Security-Policy"] = csp
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make Origin "null"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"


def _safe_next(nxt: str | None) -> str:
    """A post-login target that stays on this agent (an open redirect would be a phishing aid)."""
    if not nxt or not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        return "/"
    parts = urlsplit(nxt)
    if parts.scheme or parts.netloc or parts.path.startswith("/api/") or parts.path == "/login":
        return "/"
    return nxt


def _same_origin(request: web.Request) -> bool:
    """A browser's Origin (or, failing that, Referer) names this agent. Requests without either
    (curl, the plugins) pass: they cannot be forged by a web page."""
    origin = request.headers.get("Origin")
    if origin is None:
        ref = request.headers.get("Referer")
        if not ref:
            return True
        p = urlsplit(ref)
        origin = f"{p.scheme}://{p.netloc}"
    if origin == "null":
        return False
    host = request.headers.get("Host", "")
    return origin in (f"http://{host}", f"https://{host}")


def static_files() -> list[str]:
    """Every asset the console serves (relative names), for tests and the wheel check."""
    return sorted(str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.is_file())
