"""The web console's server side over real HTTP: sessions, CSRF, the security headers, what
answers without a session (only the login page), audio with range requests confined to the
library roots, and the console's API routes (browse, map, waveform, models). The browser itself is
exercised in ``tests/test_console_browser.py``."""

from __future__ import annotations

import http.client
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from nomarr.server.app import ROUTES
from nomarr.store import Store
from nomarr.web import PAGES, static_files

from tests.conftest import encode, music_like
from tests.server_harness import RunningAgent, config, isolated_dirs
from tests.test_essentia_import import MOOD_HAPPY

pytestmark = pytest.mark.slow


def req(
    agent: RunningAgent,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("console-api")
    with isolated_dirs(base):
        root = base / "music"
        (root / "a").mkdir(parents=True)
        names = ["Alpha Song.ogg", "a/Beta Tune.mp3", "a/Gamma Ray.flac", "Delta.ogg"]
        for i, n in enumerate(names):
            encode(root / n, music_like(6.0, 44100, 2, seed=i), 44100)
        outside = base / "outside"
        outside.mkdir()
        encode(outside / "secret.ogg", music_like(6.0, 44100, 2, seed=9), 44100)
        # a link inside the library; test_audio_stays_inside_the_roots retargets it out
        os.symlink(root / "Delta.ogg", root / "link-out.ogg")
        agent = RunningAgent(config([str(root)], str(base / "nomarr.db"), workers=1)).start()
        try:
            agent.idle(300)
            yield agent, root, outside
        finally:
            agent.stop()


def login(agent: RunningAgent) -> tuple[str, str]:
    """(Cookie header value, CSRF token) of a fresh session."""
    st, h, _ = req(
        agent,
        "POST",
        "/login",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=f"token={agent.token}&next=/library".encode(),
    )
    assert st == 303 and h["location"] == "/library"
    cookie = h["set-cookie"].split(";")[0]
    st, _, page = req(agent, "GET", "/", headers={"Cookie": cookie})
    assert st == 200
    csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()
    return cookie, csrf


def test_only_the_login_page_answers_without_a_session(lib: Any) -> None:
    agent, root, _ = lib
    st, h, body = req(agent, "GET", "/login")
    assert st == 200 and b"Sign in" in body
    for page in PAGES:
        path = re.sub(r"\{[^}]+\}\}?", "1", page.path).replace("}", "")
        st, h, _ = req(agent, "GET", path)
        assert st == 303 and h["location"].startswith("/login?next="), path
    for name in static_files():
        st, _, _ = req(agent, "GET", "/static/" + name)
        assert st == 401, name
    for r in ROUTES:
        if not r.auth:
            continue
        path = "/api/v1" + r.path.replace("{id}", "1")
        st, _, _ = req(agent, r.method, path)
        assert st == 401, path
    st, _, _ = req(agent, "GET", "/api/v1/health")
    assert st == 200
    # a cookie that is not a session is no session
    st, _, _ = req(
        agent, "GET", "/api/v1/tracks/1/audio", headers={"Cookie": "nomarr_session_x=forged"}
    )
    assert st == 401


def test_login_cookie_and_redirect_rules(lib: Any) -> None:
    agent, _, _ = lib
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    st, _, body = req(agent, "POST", "/login", headers=form, body=b"token=wrong")
    assert st == 401 and b"not this agent" in body
    st, h, _ = req(
        agent,
        "POST",
        "/login",
        headers=form,
        body=f"token={agent.token}&next=//evil.example/".encode(),
    )
    assert st == 303 and h["location"] == "/"  # never an open redirect
    cookie = h["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set when the request came over TLS
    st, _, _ = req(
        agent,
        "POST",
        "/login",
        headers={**form, "Origin": "http://evil.example"},
        body=f"token={agent.token}".encode(),
    )
    assert st == 403  # login CSRF


def test_security_headers(lib: Any) -> None:
    agent, _, _ = lib
    cookie, _ = login(agent)
    _, h, body = req(agent, "GET", "/library", headers={"Cookie": cookie})
    csp = h["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and h["x-content-type-options"] == "nosniff"
    assert b"<script>" not in body and b"<style>" not in body  # nothing inline in the shell
    assert re.search(rb"https?://", body) is None  # nothing loaded from outside the agent
    _, h, _ = req(agent, "GET", "/login")
    assert re.search(r"style-src 'sha256-[A-Za-z0-9+/=]+'", h["content-security-policy"])
    for name in static_files():
        st, h, data = req(agent, "GET", "/static/" + name, headers={"Cookie": cookie})
        assert st == 200 and "content-security-policy" in h, name
        if name.endswith((".js", ".css")):
            assert re.search(rb"(src|href|url)\s*[=(]\s*[\"']?https?://", data) is None, name


def test_cookie_reads_and_csrf_guards_writes(lib: Any) -> None:
    agent, _, _ = lib
    cookie, csrf = login(agent)
    c = {"Cookie": cookie}
    st, _, _ = req(agent, "GET", "/api/v1/status", headers=c)
    assert st == 200
    body = b"{}"
    js = {**c, "Content-Type": "application/json"}
    assert req(agent, "POST", "/api/v1/scan", headers=js, body=body)[0] == 403
    assert (
        req(agent, "POST", "/api/v1/scan", headers={**js, "X-CSRF-Token": "x" * 43}, body=body)[0]
        == 403
    )
    bad_origin = {**js, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert req(agent, "POST", "/api/v1/scan", headers=bad_origin, body=body)[0] == 403
    st, _, out = req(agent, "POST", "/api/v1/scan", headers={**js, "X-CSRF-Token": csrf}, body=body)
    assert st == 200 and json.loads(out)["queued"] == 1
    # the bearer token still works alone; a wrong one is refused even beside a valid cookie
    st, _, _ = req(
        agent, "GET", "/api/v1/status", headers={"Authorization": f"Bearer {agent.token}"}
    )
    assert st == 200
    st, _, _ = req(agent, "GET", "/api/v1/status", headers={**c, "Authorization": "Bearer nope"})
    assert st == 401
    # sign out: the cookie is dead
    st, h, _ = req(agent, "POST", "/logout", headers={**c, "X-CSRF-Token": csrf})
    assert st == 303 and h["location"] == "/login"
    assert req(agent, "GET", "/api/v1/status", headers=c)[0] == 401
    agent.idle(120)


def _track(agent: RunningAgent, name: str) -> dict[str, Any]:
    st, page = agent.request("GET", "/browse?q=" + name.split()[0].lower())
    assert st == 200 and page["total"] >= 1, page
    return next(t for t in page["items"] if t["path"].endswith(name))


def test_audio_ranges(lib: Any) -> None:
    agent, root, _ = lib
    t = _track(agent, "Gamma Ray.flac")
    data = (root / "a" / "Gamma Ray.flac").read_bytes()
    auth = {"Authorization": f"Bearer {agent.token}"}
    url = f"/api/v1/tracks/{t['id']}/audio"
    st, h, body = req(agent, "GET", url, headers=auth)
    assert st == 200 and body == data and h["accept-ranges"] == "bytes"
    assert h["content-type"] == "audio/flac"
    st, h, body = req(agent, "GET", url, headers={**auth, "Range": "bytes=100-199"})
    assert st == 206 and body == data[100:200]
    assert h["content-range"] == f"bytes 100-199/{len(data)}"
    st, _, body = req(agent, "GET", url, headers={**auth, "Range": "bytes=-50"})
    assert st == 206 and body == data[-50:]
    st, _, body = req(agent, "GET", url, headers={**auth, "Range": f"bytes={len(data) - 10}-"})
    assert st == 206 and body == data[-10:]
    st, h, _ = req(agent, "GET", url, headers={**auth, "Range": f"bytes={len(data)}-"})
    assert st == 416 and h["content-range"] == f"bytes */{len(data)}"
    st, _, body = req(agent, "GET", url, headers={**auth, "Range": "pages=1-2"})
    assert st == 200 and body == data  # a malformed Range is ignored, as HTTP says
    # with the console's cookie too (how <audio> asks)
    cookie, _ = login(agent)
    st, _, body = req(agent, "GET", url, headers={"Cookie": cookie, "Range": "bytes=0-9"})
    assert st == 206 and body == data[:10]


def test_audio_stays_inside_the_roots(lib: Any) -> None:
    agent, root, outside = lib
    auth = {"Authorization": f"Bearer {agent.token}"}
    st, page = agent.request("GET", "/browse?q=link")
    assert st == 200 and page["total"] == 1  # a link inside the roots is a track
    tid = page["items"][0]["id"]
    link = root / "link-out.ogg"
    tmp = root / ".link-tmp"
    os.symlink(outside / "secret.ogg", tmp)
    os.replace(tmp, link)  # retargeted out of the roots after the scan
    try:
        st, _, body = req(agent, "GET", f"/api/v1/tracks/{tid}/audio", headers=auth)
        assert st in (403, 404) and (outside / "secret.ogg").read_bytes()[:64] not in body
        assert req(agent, "GET", f"/api/v1/tracks/{tid}/waveform", headers=auth)[0] in (403, 404)
    finally:
        os.symlink(root / "Delta.ogg", tmp)
        os.replace(tmp, link)
        agent.idle(120)
    for bad in ("0", "-1", "x", "99999999", str(2**64)):
        st, _, _ = req(agent, "GET", f"/api/v1/tracks/{bad}/audio", headers=auth)
        assert st in (400, 404), bad


def test_browse(lib: Any) -> None:
    agent, _, _ = lib
    st, page = agent.request("GET", "/browse?q=beta")
    assert st == 200 and [t["title"] or t["path"] for t in page["items"]] and page["total"] == 1
    st, page = agent.request("GET", "/browse?q=" + "%22%29%20OR%20*")  # FTS syntax is plain words
    assert st == 200 and page["total"] == 0
    st, page = agent.request("GET", "/browse?sort=path&order=desc")
    paths = [t["path"] for t in page["items"]]
    assert paths == sorted(paths, reverse=True) and len(paths) == 5
    _, moods = agent.request("GET", "/moods")
    lab = moods["items"][0]["label"]
    st, page = agent.request("GET", f"/browse?label={lab}&sort=score&order=desc")
    scores = [t["score"] for t in page["items"]]
    assert st == 200 and scores == sorted(scores, reverse=True) and page["model"]
    st, page = agent.request("GET", f"/browse?label={lab}&min_score=0.999")
    assert st == 200 and all(t["score"] >= 0.999 for t in page["items"])
    ids = [t["id"] for t in agent.request("GET", "/browse?limit=2")[1]["items"]]
    st, page = agent.request("GET", "/browse?" + "&".join(f"id={i}" for i in ids))
    assert st == 200 and sorted(t["id"] for t in page["items"]) == sorted(ids)
    for bad in (
        "sort=nope",
        "order=up",
        "tier=top",
        "sort=score",
        "min_score=2",
        "label=nolabel",
        "limit=0",
        "id=x",
    ):
        st, body = agent.request("GET", "/browse?" + bad)
        assert st in (400, 422), (bad, st, body)


def test_map_waveform_tags_events(lib: Any) -> None:
    agent, root, _ = lib
    _, moods = agent.request("GET", "/moods")
    st, m = agent.request("GET", f"/map?label={moods['items'][0]['label']}")
    assert st == 200 and m["method"] == "pca-cosine" and len(m["track_ids"]) == 5
    assert len(m["x"]) == len(m["y"]) == len(m["values"]) == 5
    assert all(-1.3 <= v <= 1.3 for v in m["x"] + m["y"])
    t = _track(agent, "Alpha Song.ogg")
    st, wf = agent.request("GET", f"/tracks/{t['id']}/waveform")
    assert st == 200 and 5.5 < wf["duration"] < 6.5 and len(wf["peaks"]) == 1000
    assert max(wf["peaks"]) > 0.05
    st, ft = agent.request("GET", f"/tracks/{t['id']}/file-tags")
    assert st == 200 and any(k.endswith("_provenance") for k in ft["tags"])
    st, _, body = req(
        agent, "GET", "/api/v1/events?once=true", headers={"Authorization": f"Bearer {agent.token}"}
    )
    assert st == 200 and body.startswith(b"event: status\ndata: {")
    status = json.loads(body.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert status["tracks"]["ok"] == 5 and status["memory_mb"]["agent"] > 0
    st, rec = agent.request("GET", "/analyses/recent?limit=3")
    assert st == 200 and len(rec["items"]) == 3


def test_models_verify_stats_import(lib: Any) -> None:
    agent, _, _ = lib
    st, v = agent.request("POST", "/models/msd-musicnn-1/verify")
    assert (
        st == 200 and v["ok"] and v["files"][0]["actual_sha256"] == v["files"][0]["expected_sha256"]
    )
    st, s = agent.request("GET", "/models/msd-musicnn-1/stats")
    assert st == 200 and s["tracks"] == 5 and len(s["labels"]) == 50
    assert all(sum(lab["histogram"]) == 5 for lab in s["labels"])
    assert agent.request("GET", "/models/nope/stats")[0] == 404
    st, models = agent.request("GET", "/models")
    m = next(x for x in models["items"] if x["id"] == "msd-musicnn-1")
    assert m["providers"] == {"CPUExecutionProvider": 5} and m["precision"] == "fp32"
    st, imp = agent.request("POST", "/models/import", {"metadata": MOOD_HAPPY, "dry_run": True})
    assert st == 200 and imp["licence"] == "CC-BY-NC-SA-4.0" and not imp["written"]
    assert (
        imp["id"] == "mood-happy-discogs-effnet-1" and imp["needs"] == "discogs-effnet-bsdynamic-1"
    )
    st, body = agent.request("POST", "/models/import", {"metadata": {"name": "x"}})
    assert st == 400
    st, body = agent.request(
        "POST", "/models/import", {"metadata": MOOD_HAPPY, "url": "file:///etc/passwd"}
    )
    assert st == 400


def test_fts_index_follows_the_tracks_table(tmp_path: Path) -> None:
    st = Store(tmp_path / "x.db")
    with st.tx() as db:
        for i, (title, path) in enumerate(
            [("Café Noir", b"/m/x/one.mp3"), (None, b"/m/y/Two Words.ogg")]
        ):
            db.execute(
                "INSERT INTO tracks (id, path, size, mtime_ns, status, first_seen, last_seen, title) "
                "VALUES (?, ?, 1, 1, 'ok', 0, 0, ?)",
                (i + 1, path, title),
            )
    assert [t.id for t in st.browse(q="cafe")[0]] == [1]  # diacritics folded
    assert [t.id for t in st.browse(q="wor two")[0]] == [2]  # prefixes, any order, path too
    st.db.execute("UPDATE tracks SET title = 'Other' WHERE id = 1")
    assert st.browse(q="noir")[1] == 0 and st.browse(q="other")[1] == 1
    st.db.execute("UPDATE tracks SET path = ? WHERE id = 2", (b"/m/z/renamed.ogg",))
    assert st.browse(q="words")[1] == 0 and st.browse(q="renamed")[1] == 1
    st.db.execute("DELETE FROM tracks WHERE id = 1")
    assert st.browse(q="other")[1] == 0
    assert "0006-console-tracks-fts" in st.schema()
    st.close()
