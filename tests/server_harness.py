"""Run a real ``nomarr serve`` (aiohttp on a TCP port, scanner thread, watcher, worker processes)
inside the test process, on its own event-loop thread, and talk to it over HTTP.

The tests use this rather than aiohttp's in-process test client so that what is exercised is the
real socket, the real middlewares and the real shutdown path.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nomarr.config import Library, ServeConfig


class RunningAgent:
    """A started agent: ``url``, ``token`` and small HTTP helpers."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.url = ""
        self.port = 0
        self.token = ""
        self.agent: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 60.0) -> RunningAgent:
        ready = threading.Event()

        def run() -> None:
            from nomarr.server import serve

            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()

                def on_ready(agent: Any, port: int) -> None:
                    self.agent = agent
                    self.port = port
                    self.url = f"http://127.0.0.1:{port}/api/v1"
                    ready.set()

                await serve(self.cfg, ready=on_ready, stop=self._stop)

            try:
                asyncio.run(main())
            except BaseException as e:  # surfaced by start()/stop()
                self._error = e
                ready.set()

        self._thread = threading.Thread(target=run, name="test-agent", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("agent did not start")
        if self._error is not None:
            raise self._error
        self.token = self.agent.token or ""
        return self

    def stop(self, timeout: float = 90.0) -> None:
        if (
            self._loop is not None
            and self._stop is not None
            and self._thread is not None
            and self._thread.is_alive()
        ):
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        if self._error is not None and not isinstance(self._error, (KeyboardInterrupt, SystemExit)):
            raise self._error

    # -- HTTP ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 120.0,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body) for one request; never raises for HTTP errors."""
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                return e.code, json.loads(payload)
            except ValueError:
                return e.code, payload.decode(errors="replace")

    def wait_for(
        self, cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = cond()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def idle(self, timeout: float = 120.0) -> None:
        """Wait until the scan queue is empty and nothing is being scanned."""

        def quiet() -> bool:
            st, body = self.request("GET", "/status")
            return (
                st == 200 and not body["queue"]["running"] and body["queue"]["pending_paths"] == 0
            )

        self.wait_for(quiet, timeout, "the scanner to go idle", interval=0.2)


@contextmanager
def isolated_dirs(base: Path) -> Iterator[Path]:
    """Private XDG dirs for a module-scoped agent (token, database, uploads, models), like the
    function-scoped autouse fixture in conftest gives each test. Yields ``base``."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            mp.setenv(var, str(base / var.lower()))
        for var in ("NOMARR_DATA_DIR", "NOMARR_CONFIG_DIR", "NOMARR_MODELS_DIR", "NOMARR_DB"):
            mp.delenv(var, raising=False)
        yield base


def config(libraries: list[str], db: str, **kw: Any) -> ServeConfig:
    """A test configuration: loopback, any free port, no zeroconf, fast watcher timings."""
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=0,
        zeroconf=False,
        workers=1,
        nice=0,
        debounce_s=0.2,
        settle_s=0.5,
        idle_unload_s=300.0,
        log_level="warning",
    )
    base.update(kw)
    return ServeConfig(libraries=[Library(path=p) for p in libraries], db=db, **base)
