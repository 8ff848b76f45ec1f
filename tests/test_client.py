"""The plugins' typed client (``nomarr_client.NomarrClient`` / ``SyncNomarrClient``) against a real
agent on a real socket, plus a tiny scripted aiohttp server for the failure modes a healthy agent
never produces (503s from a proxy, hangs, non-agent answers).

What matters to a plugin author is checked here: every method returns its pydantic model, errors
arrive as the right ``NomarrError`` subclass with a message that says what to do, retries happen
exactly where they are safe (counted on the wire), bad arguments never reach the network, and the
package imports without numpy, onnxruntime or the agent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from nomarr_client import (
    AgentUnavailable,
    BadRequest,
    Forbidden,
    ModelMissing,
    NomarrClient,
    NomarrError,
    NotFound,
    ServerError,
    SyncNomarrClient,
    Unauthorized,
)
from nomarr_client import models as api

from tests.conftest import encode, music_like
from tests.server_harness import RunningAgent, config, isolated_dirs

pytestmark = pytest.mark.slow

T = TypeVar("T")
N_TRACKS = 5


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("client")
    with isolated_dirs(base):
        yield base


@pytest.fixture(scope="module")
def served(env: Path) -> Any:
    lib = env / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "b").mkdir(parents=True)
    for i in range(N_TRACKS):
        encode(lib / ("a" if i < 3 else "b") / f"t{i}.flac", music_like(20.0, seed=300 + i), 44100)
    ra = RunningAgent(config([str(lib)], str(env / "db.sqlite"))).start()
    try:
        ra.idle(180)
        yield ra, lib
    finally:
        ra.stop()


def counting_session() -> tuple[aiohttp.ClientSession, list[str]]:
    """A host-owned session that records every request start (one per attempt, retries included)."""
    seen: list[str] = []

    async def on_start(session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        seen.append(f"{params.method} {params.url.path}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return aiohttp.ClientSession(trace_configs=[trace]), seen


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def fake_agent(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A scripted HTTP server on a free port; yields its API base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        await runner.cleanup()


def error(status: int, code: str, message: str = "scripted") -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


HEALTH = {"status": "ok", "version": "9.9.9", "api": 1}


# -- against the real agent ---------------------------------------------------------------------


def test_every_method_returns_its_model(served: Any) -> None:
    ra, lib = served
    t0, t4 = str(lib / "a" / "t0.flac"), str(lib / "b" / "t4.flac")

    async def main() -> None:
        async with NomarrClient(
            ra.url, ra.token + "\n"
        ) as c:  # a token pasted from the file, newline and all
            h = await c.health()
            assert isinstance(h, api.Health) and h.status == "ok" and h.api == api.API_VERSION
            st = await c.status()
            assert (
                isinstance(st, api.Status)
                and len(st.agent_id) == 36
                and st.roots[0].path == str(lib)
            )
            page = await c.tracks(limit=2)
            assert (
                isinstance(page, api.TrackPage) and page.total == N_TRACKS and len(page.items) == 2
            )
            assert all(isinstance(t, api.Track) for t in page.items) and page.next_offset == 2
            b = await c.tracks(under=str(lib / "b"))
            assert {Path(t.path).name for t in b.items} == {"t3.flac", "t4.flac"}
            found = await c.lookup(path=t0)
            assert isinstance(found, api.TrackList) and [t.path for t in found.items] == [t0]
            assert (await c.lookup(mbid="00000000-0000-0000-0000-000000000000")).items == []
            tid = found.items[0].id
            d = await c.track(tid)
            assert (
                isinstance(d, api.TrackDetail)
                and d.analyses
                and d.analyses[0].model == "msd-musicnn-1"
            )
            sim = await c.similar(track_id=tid, limit=3)
            assert isinstance(sim, api.HitList) and sim.seed is not None and sim.seed.id == tid
            assert len(sim.items) == 3 and all(isinstance(x, api.Hit) for x in sim.items)
            by_path = await c.similar(path=t0, limit=2, filters={"under": [str(lib / "b")]})
            assert all("/b/" in x.path for x in by_path.items)
            m = await c.moods()
            assert isinstance(m, api.MoodList) and "electronic" in {x.label for x in m.items}
            mood = await c.mood_playlist("electronic", limit=3)
            assert isinstance(mood, api.Playlist) and mood.kind == "mood" and len(mood.items) == 3
            radio = await c.radio(path=t0, limit=4, exclude_track_ids=[])
            assert radio.kind == "radio" and radio.items[0].path == t0 and len(radio.items) == 4
            walk = await c.path_playlist(tid, t4, limit=3)  # an id and a path
            assert walk.kind == "path" and walk.items[0].id == tid and walk.items[-1].path == t4
            an = await c.analyze(t0, embedding=True)
            assert isinstance(an, api.AnalyzeResponse) and an.source == "library"
            assert (
                isinstance(an.models["msd-musicnn-1"], api.ModelResult)
                and an.models["msd-musicnn-1"].embedding
            )
            vec = await c.similar(
                vector=an.models["msd-musicnn-1"].embedding, model="msd-musicnn-1", limit=1
            )
            assert vec.items[0].path == t0
            ml = await c.models()
            assert isinstance(ml, api.ModelList) and any(
                x.id == "msd-musicnn-1" and x.installed for x in ml.items
            )
            pulled = await c.pull_model("msd-musicnn-1")
            assert isinstance(pulled, api.PullResponse) and pulled.status == "already-installed"
            queued = await c.scan([str(lib / "a")])
            assert isinstance(queued, api.ScanQueued) and queued.queued == 1
            # errors arrive typed, with the agent's code and message
            with pytest.raises(ModelMissing) as mm:
                await c.text_playlist("calm piano at night")
            assert (
                mm.value.status == 409
                and mm.value.code == "model-missing"
                and "pull" in mm.value.message
            )
            with pytest.raises(NotFound) as nf:
                await c.track(987654)
            assert nf.value.status == 404 and nf.value.code == "not-found"
            with pytest.raises(NotFound):
                await c.pull_model("does/not-exist")  # quoted into one path segment
            with pytest.raises(Forbidden) as fb:
                await c.tracks(under="/etc")
            assert fb.value.status == 403
            with pytest.raises(BadRequest) as br:
                await c.mood_playlist("no such mood at all")
            assert br.value.status == 422 and br.value.code == "unprocessable"

    run(main())
    ra.idle()


def test_iter_tracks_pages_through_everything(served: Any) -> None:
    ra, lib = served

    async def main() -> None:
        session, seen = counting_session()
        async with session:
            async with NomarrClient(ra.url, ra.token, session=session) as c:
                everything = (await c.tracks(limit=1000)).items
                seen.clear()
                ids = [t.id async for t in c.iter_tracks(page_size=2)]
                assert ids == [t.id for t in everything] and len(ids) == N_TRACKS
                assert len(seen) == 3  # 2 + 2 + 1: no extra request after the last page
                under = [t.path async for t in c.iter_tracks(under=[str(lib / "b")], page_size=1)]
                assert sorted(Path(p).name for p in under) == ["t3.flac", "t4.flac"]
            assert not session.closed  # a host's session is the host's to close

    run(main())


def test_analyze_file_streams_a_large_upload(served: Any, tmp_path: Path) -> None:
    ra, lib = served
    t3 = lib / "b" / "t3.flac"
    big = tmp_path / "blob.bin"  # the name on disk says nothing; filename= tells the agent
    encode(big, music_like(120.0, seed=42), 44100, ext="wav")
    size = big.stat().st_size
    assert size > 20 << 20

    async def main() -> tuple[api.AnalyzeResponse, api.AnalyzeResponse, api.AnalyzeResponse, int]:
        async with NomarrClient(ra.url, ra.token) as c:
            ref = await c.analyze(str(t3))
            same = await c.analyze_file(t3)  # the library's own file, uploaded: the same scores
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                up = await c.analyze_file(big, filename="long.wav")
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
            with pytest.raises(BadRequest) as e:
                await c.analyze_file(big)  # .bin: the agent cannot tell the format
            assert e.value.status == 415 and "filename" in e.value.message
            return ref, same, up, peak

    ref, same, up, peak = run(main())
    assert isinstance(same, api.AnalyzeResponse) and same.source == "analysis"
    assert same.path is None and same.filename == "t3.flac"
    a, b = ref.models["msd-musicnn-1"].scores, same.models["msd-musicnn-1"].scores
    assert max(abs(a[k] - b[k]) for k in a) < 0.05
    assert up.filename == "long.wav" and up.duration is not None and abs(up.duration - 120.0) < 0.5
    assert len(up.models["msd-musicnn-1"].scores) == 50
    # streamed in fixed-size chunks: the memory both ends of the socket (this process) used
    # stays a few chunks (aiohttp reads 256 KiB at a time), whatever the file's size
    assert peak < size / 3, (peak, size)
    assert not list((Path(os.environ["XDG_CACHE_HOME"]) / "nomarr" / "uploads").glob("*"))


def test_upload_over_the_agents_limit_is_a_clean_413(served: Any, tmp_path: Path) -> None:
    ra, _ = served
    big = tmp_path / "big.flac"
    with open(big, "wb") as f:
        f.truncate(3 << 20)
    old = ra.agent.cfg.max_upload_mb
    ra.agent.cfg.max_upload_mb = 1
    try:
        with pytest.raises(BadRequest) as e:
            run(NomarrClient(ra.url, ra.token).analyze_file(big))
    finally:
        ra.agent.cfg.max_upload_mb = old
    assert e.value.status == 413 and e.value.code == "too-large"


def test_wrong_or_missing_token_is_unauthorized_and_says_where_the_token_is(served: Any) -> None:
    ra, _ = served

    async def attempt(token: str | None) -> tuple[Unauthorized, list[str]]:
        session, seen = counting_session()
        async with session:
            c = NomarrClient(ra.url, token, session=session, retries=3, backoff=0.01)
            assert (await c.health()).status == "ok"  # /health needs no token
            seen.clear()
            with pytest.raises(Unauthorized) as e:
                await c.status()
            return e.value, seen

    wrong, seen = run(attempt("not-the-token"))
    assert wrong.status == 401 and wrong.code == "unauthorized"
    assert (
        "~/.config/nomarr/token" in wrong.message
        and "wrong" in wrong.message
        and ra.url in wrong.message
    )
    assert "not-the-token" not in str(wrong) and ra.token not in str(wrong)
    assert len(seen) == 1  # never retried
    missing, _ = run(attempt(None))
    assert "no token" in missing.message and "~/.config/nomarr/token" in missing.message


def test_pinned_agent_id_is_checked(served: Any) -> None:
    ra, _ = served
    real = ra.agent.agent_id

    async def main() -> None:
        async with NomarrClient(ra.url, ra.token, agent_id=real.upper()) as c:
            assert (await c.verify()).agent_id == real
        async with NomarrClient(
            ra.url, ra.token, agent_id="00000000-0000-4000-8000-000000000000"
        ) as c:
            for call in (c.status, c.verify):
                with pytest.raises(NomarrError) as e:
                    await call()
                assert e.value.code == "wrong-agent" and real in e.value.message
            assert (await c.health()).status == "ok"  # only the id-bearing calls check

    run(main())


def test_sync_client_outside_and_inside_a_running_loop(served: Any) -> None:
    ra, lib = served
    before = {t.ident for t in threading.enumerate()}
    with SyncNomarrClient(ra.url, ra.token) as c:
        assert isinstance(c.health(), api.Health)
        assert isinstance(c.status(), api.Status)
        assert [t.id for t in c.iter_tracks(page_size=2)] == [
            t.id for t in c.tracks(limit=100).items
        ]
        hits = c.similar(path=str(lib / "a" / "t0.flac"), limit=2)
        assert isinstance(hits, api.HitList) and len(hits.items) == 2
        with pytest.raises(NotFound):
            c.track(987654)
        with pytest.raises(BadRequest):
            c.similar()
    with pytest.raises(RuntimeError):
        c.health()
    c.close()  # idempotent
    assert {t.ident for t in threading.enumerate()} <= before | {None}  # its thread is gone

    async def inside() -> api.Status:
        # a host that is itself async but calls the blocking API (a plugin hook, say)
        asyncio.get_running_loop()
        c2 = SyncNomarrClient.discover(url=ra.url.removesuffix("/api/v1"), token=ra.token)
        try:
            assert c2.base_url == ra.url
            return c2.status()
        finally:
            c2.close()

    assert isinstance(run(inside()), api.Status)


def test_discover_browses_with_the_pin_and_wraps_failures(
    served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nomarr_client import discovery

    ra, _ = served
    asked: list[tuple[Any, ...]] = []

    async def found(
        url: str | None = None, pinned_id: str | None = None, timeout: float = 3.0
    ) -> str:
        asked.append((url, pinned_id, timeout))
        return ra.url

    async def main() -> None:
        c = await NomarrClient.discover(
            token=ra.token, agent_id=ra.agent.agent_id, timeout=0.5, retries=0
        )
        async with c:
            assert (
                c.base_url == ra.url
                and c.retries == 0
                and (await c.verify()).agent_id == ra.agent.agent_id
            )

    monkeypatch.setattr(discovery, "find_agent", found)
    run(main())
    assert asked == [(None, ra.agent.agent_id, 0.5)]
    other = discovery.DiscoveredAgent(
        agent_id="a2", name="nomarr on b", host="b.local", port=1, addresses=["10.0.0.2"]
    )

    async def ambiguous(
        url: str | None = None, pinned_id: str | None = None, timeout: float = 3.0
    ) -> str:
        raise discovery.DiscoveryError("2 agents answer; pin one", [other])

    monkeypatch.setattr(discovery, "find_agent", ambiguous)
    with pytest.raises(AgentUnavailable) as e:
        run(NomarrClient.discover())
    assert (
        e.value.code == "not-discovered"
        and e.value.agents == [other]
        and "agent URL" in e.value.message
    )


# -- failure modes, on the wire -----------------------------------------------------------------


def test_agent_down_is_unavailable_after_the_configured_retries_quickly() -> None:
    port = closed_port()

    async def main(
        call: Callable[[NomarrClient], Awaitable[Any]],
    ) -> tuple[AgentUnavailable, list[str], float]:
        session, seen = counting_session()
        async with session:
            c = NomarrClient(
                f"http://127.0.0.1:{port}", "tok", retries=1, backoff=0.05, session=session
            )
            t0 = time.monotonic()
            with pytest.raises(AgentUnavailable) as e:
                await call(c)
            return e.value, seen, time.monotonic() - t0

    err, seen, took = run(main(lambda c: c.status()))
    assert err.attempts == 2 and len(seen) == 2 and took < 2.0
    assert f"127.0.0.1:{port}/api/v1" in err.message and "may be down" in err.message
    assert "nomarr serve" in err.message and "URL" in err.message and err.status is None
    # a refused connection reached nothing, so even a request with effects is retried
    err, seen, _ = run(main(lambda c: c.scan()))
    assert err.attempts == 2 and len(seen) == 2


def test_503_twice_then_success() -> None:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        if len(calls) <= 2:
            return error(503, "unavailable", "warming up")
        return web.json_response(HEALTH)

    async def main() -> api.Health:
        async with fake_agent(handler) as url, NomarrClient(url, retries=2, backoff=0.01) as c:
            return await c.health()

    assert run(main()).version == "9.9.9"
    assert calls == ["/api/v1/health"] * 3


def test_what_is_and_is_not_retried() -> None:
    calls: list[str] = []
    script: dict[str, Callable[[], web.StreamResponse]] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(f"{request.method} {request.path}")
        if request.path.endswith("/slow"):
            await asyncio.sleep(2)
        return script[request.path.rsplit("/", 1)[-1]]()

    async def main() -> None:
        async with (
            fake_agent(handler) as url,
            NomarrClient(url, "t", retries=2, backoff=0.01, timeout=0.3) as c,
        ):
            # a 4xx is never retried, whatever it is
            for status, code, exc in (
                (400, "bad-request", BadRequest),
                (401, "unauthorized", Unauthorized),
                (403, "forbidden", Forbidden),
                (404, "not-found", NotFound),
                (409, "busy", BadRequest),
                (409, "model-missing", ModelMissing),
                (413, "too-large", BadRequest),
                (422, "unprocessable", BadRequest),
            ):
                script["moods"] = lambda s=status, k=code: error(s, k)
                calls.clear()
                with pytest.raises(exc) as e:
                    await c.moods()
                assert (e.value.status, e.value.code) == (status, code) and calls == [
                    "GET /api/v1/moods"
                ]
            # 502/503/504 are retried for queries (POSTs included) until the retries run out
            script["similar"] = lambda: web.Response(status=502, text="<html>Bad Gateway</html>")
            calls.clear()
            with pytest.raises(ServerError) as e:
                await c.similar(track_id=1)
            assert e.value.status == 502 and "Bad Gateway" in e.value.message and len(calls) == 3
            # ... but not for requests with effects once they may have arrived
            script["scan"] = lambda: error(503, "unavailable")
            calls.clear()
            with pytest.raises(ServerError):
                await c.scan()
            assert calls == ["POST /api/v1/scan"]
            script["pull"] = lambda: error(504, "gateway-timeout")
            calls.clear()
            with pytest.raises(ServerError):
                await c.pull_model("m")
            assert calls == ["POST /api/v1/models/m/pull"]
            # a 500 is the agent's bug: asking again will not help
            script["models"] = lambda: error(500, "internal")
            calls.clear()
            with pytest.raises(ServerError):
                await c.models()
            assert len(calls) == 1
            # something that is not a nomarr agent
            script["status"] = lambda: web.json_response({"hello": "world"})
            with pytest.raises(NomarrError) as e:
                await c.status()
            assert e.value.code == "bad-response" and "nomarr" in e.value.message

    run(main())


def test_timeouts_retry_queries_but_not_analysis() -> None:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        await asyncio.sleep(1.0)
        return web.json_response(HEALTH)

    async def main() -> None:
        async with fake_agent(handler) as url:
            async with NomarrClient(url, retries=1, backoff=0.01, timeout=0.2) as c:
                with pytest.raises(AgentUnavailable) as e:
                    await c.health()
                assert e.value.code == "timeout" and e.value.attempts == 2 and len(calls) == 2
            calls.clear()
            async with NomarrClient(
                url, retries=1, backoff=0.01, timeout=0.2, long_timeout=0.2
            ) as c:
                with pytest.raises(AgentUnavailable) as e:
                    await c.analyze(
                        "/music/x.flac"
                    )  # the agent is likely still analysing: do not pile on
                assert e.value.attempts == 1 and len(calls) == 1

    run(main())


def test_something_else_on_the_port_is_a_bad_response_not_retried() -> None:
    hits: list[int] = []

    async def ssh_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(1)
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    async def main() -> NomarrError:
        srv = await asyncio.start_server(ssh_like, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            async with NomarrClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as c:
                with pytest.raises(NomarrError) as e:
                    await c.health()
                return e.value
        finally:
            srv.close()
            await srv.wait_closed()

    err = run(main())
    assert err.code == "bad-response" and "nomarr agent" in err.message and len(err.message) < 400
    assert hits == [1]


def test_bad_arguments_never_reach_the_network(tmp_path: Path) -> None:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        return error(500, "internal")

    f = tmp_path / "x.flac"
    f.write_bytes(b"x")
    bad: list[Callable[[NomarrClient], Awaitable[Any]]] = [
        lambda c: c.similar(),
        lambda c: c.similar(track_id=1, path="/m/x.flac"),
        lambda c: c.similar(vector=[1.0, 2.0]),  # no model
        lambda c: c.similar(track_id=1, limit=0),
        lambda c: c.similar(vector=[float("nan")] * 4, model="m"),
        lambda c: c.similar(track_id=0),
        lambda c: c.similar(track_id=1, filters={"bogus": 1}),
        lambda c: c.similar(track_id=1, filters={"min_scores": {"rock": 2.0}}),
        lambda c: c.mood_playlist(""),
        lambda c: c.radio(),
        lambda c: c.radio(track_id=1, limit=10_000),
        lambda c: c.path_playlist(True, 2),
        lambda c: c.path_playlist(1, 2, limit=1),
        lambda c: c.text_playlist("x" * 501),
        lambda c: c.lookup(),
        lambda c: c.lookup(path="/m/x.flac", mbid="abc"),
        lambda c: c.lookup(mbid="abc", duration=3.0),
        lambda c: c.tracks(limit=0),
        lambda c: c.tracks(offset=-1),
        lambda c: c.tracks(status="nope"),
        lambda c: c.iter_tracks(page_size=5000).__anext__(),
        lambda c: c.track(0),
        lambda c: c.analyze(""),
        lambda c: c.analyze("/m/x.flac", models=["m"] * 17),
        lambda c: c.analyze_file(f, profile="p" * 65),
        lambda c: c.scan(["/m"] * 1001),
        lambda c: c.pull_model(""),
    ]

    async def main() -> None:
        async with fake_agent(handler) as url, NomarrClient(url, "t") as c:
            for i, call in enumerate(bad):
                with pytest.raises(BadRequest) as e:
                    await call(c)
                assert (
                    e.value.status is None and e.value.code == "bad-request" and e.value.message
                ), i
            with pytest.raises(BadRequest) as e:
                await c.similar()
            assert "track_id" in e.value.message  # the model's own wording
            with pytest.raises(FileNotFoundError):
                await c.analyze_file(tmp_path / "nope.flac")

    run(main())
    assert calls == []


def test_bad_configuration_fails_at_construction() -> None:
    for url in ("", "ftp://x", "localhost:8080", "http://"):
        with pytest.raises(NomarrError) as e:
            NomarrClient(url)
        assert e.value.code == "invalid-url"
    assert NomarrClient("http://pi:8080").base_url == "http://pi:8080/api/v1"
    assert NomarrClient("https://h/nomarr/api/v1/").base_url == "https://h/nomarr/api/v1"
    assert "tok" not in repr(NomarrClient("http://pi:8080", "tok"))


def test_import_pulls_in_neither_numpy_onnxruntime_nor_the_agent() -> None:
    code = textwrap.dedent("""
        import asyncio, sys
        import nomarr_client
        from nomarr_client import NomarrClient, SyncNomarrClient, models

        async def main():
            c = await NomarrClient.discover(url="http://127.0.0.1:9", token="t")  # configured: no browsing
            assert c.base_url == "http://127.0.0.1:9/api/v1"
            await c.close()

        asyncio.run(main())
        SyncNomarrClient("http://127.0.0.1:9").close()
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "onnxruntime", "agent", "zeroconf"))
        print("LOADED", bad)
        sys.exit(1 if bad else 0)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    root = Path(__file__).resolve().parents[1]
    # run from a directory that does not contain the agent package, so only an import could load it
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(root / "plugins"),
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
