"""A local stand-in for the ListenBrainz API, and ListenBrainz's export format, for tests that must
never touch the network (tests/test_listens.py, tests/test_api_listens.py, the API fuzzer)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import zipfile
from typing import Any

from aiohttp import web


def lb_listen(ts: int, artist: str, title: str, msid: str, **ai: Any) -> dict[str, Any]:
    """One listen as ListenBrainz exports it."""
    return {
        "inserted_at": ts + 5,
        "listened_at": ts,
        "recording_msid": msid,
        "track_metadata": {
            "artist_name": artist,
            "track_name": title,
            "release_name": "Album",
            "additional_info": {"submission_client": "test", **ai},
            "mbid_mapping": None,
        },
    }


def export_zip(listens: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> bytes:
    """A zip laid out as listenbrainz.org's user export (user.json, listens/Y/M.jsonl, …)."""
    buf = io.BytesIO()
    by_month: dict[str, list[str]] = {}
    for x in listens:
        t = time.gmtime(x["listened_at"])
        by_month.setdefault(f"listens/{t.tm_year}/{t.tm_mon}.jsonl", []).append(json.dumps(x))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("user.json", json.dumps({"user_id": 1, "username": "alice_lb"}) + "\n")
        for name, lines in by_month.items():
            z.writestr(name, "\n".join(lines) + "\n")
        if feedback:
            z.writestr("feedback.jsonl", "\n".join(json.dumps(f) for f in feedback) + "\n")
    return buf.getvalue()


class StandIn:
    """Serves ``GET /1/user/{user}/listens`` as ListenBrainz does: newest first, exclusive
    ``max_ts``/``min_ts``, at most ``count`` (≤ 1000), a token check (unless ``token`` is None) and ``X-RateLimit-*``
    headers with a window of ``limit`` calls per ``window`` seconds (429 past it)."""

    def __init__(
        self, listens: list[dict[str, Any]], token: str | None, limit: int = 3, window: float = 0.5
    ) -> None:
        self.listens = listens
        self.token = token
        self.limit, self.window = limit, window
        self.calls: list[tuple[float, dict[str, str], int]] = []
        self.force_429 = 0
        self._window_start = 0.0
        self._used = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_get("/1/user/{user}/listens", self.handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())
        self._loop.run_forever()
        assert self._runner is not None
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if now - self._window_start >= self.window:
            self._window_start, self._used = now, 0
        self._used += 1
        reset_in = max(0.0, self.window - (now - self._window_start))
        hdr = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - self._used)),
            "X-RateLimit-Reset-In": f"{reset_in:.2f}",
            "X-RateLimit-Reset": str(int(time.time() + reset_in)),
        }
        q = dict(request.query)
        if self._used > self.limit or self.force_429 > 0:
            self.force_429 = max(0, self.force_429 - 1)
            self.calls.append((now, q, 429))
            return web.json_response(
                {"code": 429, "error": "rate limited"}, status=429, headers=hdr
            )
        if self.token is not None and request.headers.get("Authorization") != f"Token {self.token}":
            self.calls.append((now, q, 401))
            return web.json_response({"code": 401, "error": "bad token"}, status=401, headers=hdr)
        count = min(int(q.get("count", 25)), 1000)
        mx = float(q["max_ts"]) if "max_ts" in q else float("inf")
        mn = float(q["min_ts"]) if "min_ts" in q else float("-inf")
        pick = [x for x in self.listens if mn < x["listened_at"] < mx]
        pick.sort(key=lambda x: -x["listened_at"])
        page = pick[:count]
        self.calls.append((now, q, 200))
        body = {
            "payload": {
                "count": len(page),
                "listens": [x | {"user_name": request.match_info["user"]} for x in page],
                "latest_listen_ts": max((x["listened_at"] for x in self.listens), default=0),
                "user_id": request.match_info["user"],
            }
        }
        return web.json_response(body, headers=hdr)
