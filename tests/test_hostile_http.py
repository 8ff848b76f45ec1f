"""The HTTP API against clients that are slow, stuck, malformed or hostile (docs/reliability.md).

Raw sockets against a real agent: bodies nested a thousand deep, chunked bodies with a bad chunk
size, heads and bodies that stall or dribble, over-long lines, and shutdown with a client stuck
mid-body. The limits of :mod:`nomarr.server.guard` are shortened here so each case takes seconds;
the code paths are the ones the defaults run.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nomarr.server import guard
from nomarr.server.app import ROUTES
from nomarr_client import models as api

from tests.server_harness import RunningAgent, config, isolated_dirs

pytestmark = pytest.mark.slow

IDLE_S, BODY_IDLE_S, BODY_TOTAL_S, LINGER_S = 2.0, 1.5, 4.0, 1.0


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    base = tmp_path_factory.mktemp("hostile-http")
    (base / "lib").mkdir()
    with isolated_dirs(base), pytest.MonkeyPatch.context() as mp:
        mp.setattr(guard, "IDLE_TIMEOUT_S", IDLE_S)
        mp.setattr(guard, "BODY_IDLE_S", BODY_IDLE_S)
        mp.setattr(guard, "BODY_TIMEOUT_S", BODY_TOTAL_S)
        mp.setattr(guard, "UPLOAD_TIMEOUT_S", BODY_TOTAL_S)
        mp.setattr(guard, "LINGER_S", LINGER_S)
        ra = RunningAgent(config([str(base / "lib")], str(base / "db.sqlite"))).start()
        try:
            ra.idle(60)
            yield ra
        finally:
            ra.stop()


def connect(ra: RunningAgent) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", ra.port), timeout=30)
    return s


def head(ra: RunningAgent, method: str, target: str, extra: str = "", token: bool = True) -> bytes:
    auth = f"Authorization: Bearer {ra.token}\r\n" if token else ""
    return f"{method} {api.API_PREFIX}{target} HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n".encode()


def answer(s: socket.socket, timeout: float) -> tuple[int, Any, float]:
    """(status, JSON body, seconds waited) of one answer on ``s``; status 0 if none came."""
    s.settimeout(timeout)
    t0 = time.monotonic()
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return 0, None, time.monotonic() - t0
            buf += chunk
        hdr, _, body = buf.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in hdr.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += s.recv(65536)
    except TimeoutError:
        return 0, None, time.monotonic() - t0
    status = int(hdr.split(b" ", 2)[1])
    return status, json.loads(body[:length]), time.monotonic() - t0


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except (TimeoutError, ConnectionResetError):
        return False


JSON_POSTS = [
    re.sub(r"\{user\}", "someone", re.sub(r"\{id\}", "1", r.path))  # a real path per route
    for r in ROUTES
    if r.method == "POST" and r.request is not None
]


def test_every_json_endpoint_refuses_deep_nesting_with_a_400(agent: RunningAgent) -> None:
    assert len(JSON_POSTS) >= 7, JSON_POSTS  # every JSON POST route, listening ones included
    for route in JSON_POSTS:
        for body in (
            b"[" * 1000,
            b"[" * 65 + b"]" * 65,
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
            b'{"path": "' + b"[" * 5000 + b'"}',  # brackets inside a string are no nesting
        ):
            st, doc = agent.request(
                "POST", route, raw=body, headers={"Content-Type": "application/json"}
            )
            assert 400 <= st < 500, (route, body[:20], st, doc)
            assert set(doc["error"]) >= {"code", "message"}
            if body.startswith(b'{"path"'):
                assert "nested" not in doc["error"]["message"]
            else:
                assert "nested" in doc["error"]["message"], doc


def test_malformed_chunked_upload_is_answered_at_once(agent: RunningAgent) -> None:
    uploads = Path(agent.agent.uploads)
    for junk in (b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\nzz\r\n", b"-1\r\n\r\n"):
        s = connect(agent)
        s.sendall(
            head(
                agent,
                "POST",
                "/analyze?filename=a.wav",
                "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n",
            )
        )
        time.sleep(0.3)
        s.sendall(junk)
        st, doc, waited = answer(s, 10)
        assert st == 400 and doc["error"]["code"] == "bad-request", (junk, st, doc)
        assert waited < BODY_IDLE_S, waited  # the parser error, not the stall timer
        assert closed_by_server(s, 5)
        s.close()
    agent.wait_for(lambda: not list(uploads.glob("upload-*")), 5, "the temp uploads to go")


@pytest.mark.parametrize(
    ("route", "kind", "token"),
    [
        (route, kind, True)
        for route in ("/analyze?filename=a.wav", "/similar", "/scan")
        for kind in ("stall", "dribble")
    ]
    + [("/analyze?filename=a.wav", "stall", False), ("/similar", "dribble", False)],
)
def test_slow_bodies_get_a_408_and_lose_the_connection(
    agent: RunningAgent, route: str, kind: str, token: bool
) -> None:
    ctype = "application/octet-stream" if "filename" in route else "application/json"
    s = connect(agent)
    s.sendall(
        head(agent, "POST", route, f"Content-Type: {ctype}\r\nContent-Length: 100000\r\n", token)
    )
    stop = threading.Event()

    def dribble() -> None:
        while not stop.wait(0.5):
            try:
                s.sendall(b" ")
            except OSError:
                return

    t = threading.Thread(target=dribble, daemon=True)
    if kind == "dribble":
        t.start()
    limit = (BODY_TOTAL_S if kind == "dribble" else BODY_IDLE_S) + 1.0
    st, doc, waited = answer(s, limit + 3)
    stop.set()
    if token:
        assert st == 408 and doc["error"]["code"] == "timeout", (st, doc)
        assert waited < limit, waited
    else:  # refused before the body is read; the rest is drained for at most lingering_time
        assert st == 401
    assert closed_by_server(s, limit + LINGER_S + 2), "the connection outlived the body limits"
    s.close()


def test_idle_and_half_sent_heads_are_closed(agent: RunningAgent) -> None:
    socks = []
    for i in range(60):
        s = connect(agent)
        if i % 3 == 1:
            s.sendall(b"POST /api/v1/scan HTTP/1.1\r\nHost: x\r\nContent-Len")
        elif i % 3 == 2:
            s.sendall(b"GET /api/v1/st")
        socks.append(s)
    # a slow-loris head: one byte at a time, never finished
    loris = connect(agent)
    t0 = time.monotonic()
    for b in b"GET /api/v1/health HTTP/1.1\r\nX-Slow: " + b"a" * 200:
        try:
            loris.sendall(bytes([b]))
        except OSError:
            break
        if time.monotonic() - t0 > IDLE_S + 5:
            break
        time.sleep(0.05)
    assert time.monotonic() - t0 < IDLE_S + 3, "a head dribbled past the head limit"
    assert all(closed_by_server(s, IDLE_S + 3) for s in socks)
    for s in [*socks, loris]:
        s.close()
    assert agent.request("GET", "/health", token=None)[0] == 200


def test_protocol_errors_answer_in_the_api_error_shape(agent: RunningAgent) -> None:
    for raw in (
        b"GET /api/v1/health?" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ):
        s = connect(agent)
        s.sendall(raw)
        st, doc, _ = answer(s, 10)
        assert 400 <= st < 500 and doc["error"]["code"] in ("bad-request", "too-large"), (st, doc)
        assert len(doc["error"]["message"]) < 400
        s.close()


def test_shutdown_is_not_held_by_a_client_stuck_mid_body(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    with isolated_dirs(tmp_path):
        ra = RunningAgent(config([str(tmp_path / "lib")], str(tmp_path / "db.sqlite"))).start()
        ra.idle(60)
        socks = []
        for route in ("/analyze?filename=a.wav", "/similar"):
            s = connect(ra)
            ctype = "application/octet-stream" if "filename" in route else "application/json"
            s.sendall(
                head(ra, "POST", route, f"Content-Type: {ctype}\r\nContent-Length: 99999\r\n")
                + b"{"
            )
            socks.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        ra.stop()
        assert time.monotonic() - t0 < 8.0
        for s in socks:
            st, doc, _ = answer(s, 5)
            assert st == 503 and doc["error"]["code"] == "unavailable", (st, doc)
            s.close()
        assert not list(Path(ra.agent.uploads).glob("upload-*"))
