"""``nomarr serve`` driven over real HTTP: auth, confinement, errors, queries, uploads, the watcher.

One agent per module serves a small library of generated music-like files (so these tests run
without the shared corpus); the corpus test at the end copies a real track into a watched library
and times how long until it is tagged and answerable.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import mutagen
import pytest
from nomarr.tagio import read_tags
from nomarr_client import models as api

from tests.conftest import encode, music_like
from tests.server_harness import RunningAgent, config, isolated_dirs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("serve")
    with isolated_dirs(base):
        yield base


@pytest.fixture(scope="module")
def served(env: Path) -> Any:
    lib = env / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "b").mkdir(parents=True)
    for i in range(6):
        sub = "a" if i < 3 else "b"
        encode(lib / sub / f"t{i}.flac", music_like(25.0, seed=100 + i), 44100)
    shutil.copy(lib / "a" / "t0.flac", lib / "b" / "t0-copy.flac")  # a second file of one recording
    outside = env / "outside"
    outside.mkdir()
    encode(outside / "secret.flac", music_like(10.0, seed=7), 44100)
    (lib / "a" / "escape.flac").symlink_to(outside / "secret.flac")
    ra = RunningAgent(config([str(lib)], str(env / "db.sqlite"))).start()
    try:
        ra.idle(180)
        yield ra, lib, outside
    finally:
        ra.stop()


def test_health_is_open_everything_else_needs_the_token(served: Any) -> None:
    ra, _, _ = served
    st, body = ra.request("GET", "/health", token=None)
    assert st == 200 and body["status"] == "ok" and body["api"] == 1
    for method, path, payload in (
        ("GET", "/status", None),
        ("GET", "/tracks", None),
        ("POST", "/similar", {"track_id": 1}),
        ("GET", "/openapi.json", None),
        ("GET", "/no/such/route", None),
    ):
        st, body = ra.request(method, path, payload, token=None)
        assert st == 401, (path, st, body)
        assert body["error"]["code"] == "unauthorized"
        st, body = ra.request(method, path, payload, token="x" * 43)
        assert st == 401
    st, _ = ra.request("GET", "/status", headers={"Authorization": f"Basic {ra.token}"}, token=None)
    assert st == 401


def test_token_file_is_private_and_stable(served: Any, env: Path) -> None:
    ra, _, _ = served
    tok = env / "xdg_config_home" / "nomarr" / "token"
    assert tok.read_text().strip() == ra.token
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600
    assert len(ra.token) >= 32


def test_status_reports_roots_queue_models(served: Any) -> None:
    ra, lib, _ = served
    st, body = ra.request("GET", "/status")
    assert st == 200
    s = api.Status.model_validate(body)
    assert (
        s.roots[0].path == str(lib) and s.roots[0].tracks == 7
    )  # 6 + copy; the link out is no track
    assert s.roots[0].watch == "event"
    assert s.queue.last_scan is not None and s.queue.last_scan.summary["failed"] == 0
    assert any(m.id == "msd-musicnn-1" and m.installed for m in s.models)
    assert "CPUExecutionProvider" in s.providers
    assert len(s.agent_id) == 36


def test_tracks_paging_detail_and_lookup(served: Any) -> None:
    ra, lib, _ = served
    st, body = ra.request("GET", "/tracks?limit=3")
    page = api.TrackPage.model_validate(body)
    assert st == 200 and page.total == 7 and len(page.items) == 3 and page.next_offset == 3
    seen = [t.id for t in page.items]
    while page.next_offset is not None:
        page = api.TrackPage.model_validate(
            ra.request("GET", f"/tracks?limit=3&offset={page.next_offset}")[1]
        )
        seen += [t.id for t in page.items]
    assert len(seen) == len(set(seen)) == 7
    st, body = ra.request("GET", f"/tracks?under={lib / 'b'}")
    assert {Path(t["path"]).name for t in body["items"]} == {
        "t3.flac",
        "t4.flac",
        "t5.flac",
        "t0-copy.flac",
    }
    t0 = str(lib / "a" / "t0.flac")
    st, body = ra.request("GET", f"/tracks/lookup?path={t0}")
    assert st == 200 and [t["path"] for t in body["items"]] == [t0]
    tid = body["items"][0]["id"]
    st, body = ra.request("GET", f"/tracks/{tid}")
    d = api.TrackDetail.model_validate(body)
    assert d.analyses and d.analyses[0].model == "msd-musicnn-1" and len(d.analyses[0].scores) == 50
    assert d.tags_written and d.tags == {k: v for k, v in read_tags(t0).nom.items()}
    assert d.embeddings == ["msd-musicnn-1"] and len(d.same_recording) == 1
    # lookup by content: the compressed fingerprint fpcalc prints (what beets' acoustid plugin has)
    import subprocess

    out = subprocess.run(
        ["fpcalc", str(lib / "b" / "t0-copy.flac")], capture_output=True, text=True
    ).stdout
    fp = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    st, body = ra.request(
        "GET", f"/tracks/lookup?fingerprint={fp['FINGERPRINT']}&duration={fp['DURATION']}"
    )
    assert st == 200 and {Path(t["path"]).name for t in body["items"]} == {
        "t0.flac",
        "t0-copy.flac",
    }
    st, body = ra.request("GET", "/tracks/lookup?fingerprint=AQAA!!")
    assert st == 400
    st, body = ra.request("GET", "/tracks/999999")
    assert st == 404 and body["error"]["code"] == "not-found"
    assert ra.request("GET", "/tracks/abc")[0] == 400
    assert ra.request("GET", "/tracks?limit=0")[0] == 400
    assert ra.request("GET", "/tracks/lookup")[0] == 400


def test_similar_by_id_path_and_vector(served: Any) -> None:
    ra, lib, _ = served
    t0 = str(lib / "a" / "t0.flac")
    st, body = ra.request("POST", "/similar", {"path": t0, "limit": 4})
    assert st == 200, body
    res = api.HitList.model_validate(body)
    assert res.model == "msd-musicnn-1" and res.seed is not None and res.seed.path == t0
    assert res.items[0].path.endswith("t0-copy.flac") and res.items[0].same_recording
    assert t0 not in [h.path for h in res.items]
    sims = [h.similarity for h in res.items]
    assert sims == sorted(sims, reverse=True)
    st, body = ra.request(
        "POST", "/similar", {"track_id": res.seed.id, "limit": 4, "distinct": True}
    )
    assert st == 200 and not any(h["same_recording"] for h in body["items"])
    st, det = ra.request("GET", f"/tracks/{res.seed.id}")
    # a raw vector (the embedding of t0 from /analyze) finds t0's recording first
    st, an = ra.request("POST", "/analyze", {"path": t0, "embedding": True})
    assert st == 200 and an["source"] == "library"
    vec = an["models"]["msd-musicnn-1"]["embedding"]
    st, body = ra.request("POST", "/similar", {"vector": vec, "model": "msd-musicnn-1", "limit": 2})
    assert st == 200 and {Path(h["path"]).name for h in body["items"]} == {
        "t0.flac",
        "t0-copy.flac",
    }
    assert body["items"][0]["distance"] < 1e-4
    st, body = ra.request(
        "POST", "/similar", {"path": t0, "filters": {"under": [str(lib / "b")]}, "limit": 10}
    )
    assert st == 200 and body["items"] and all("/b/" in h["path"] for h in body["items"])


@pytest.mark.parametrize(
    "payload,status",
    [
        ({}, 400),
        ({"track_id": 1, "path": "/x"}, 400),
        ({"vector": [1.0, 2.0]}, 400),
        ({"vector": [0.0] * 200, "model": "msd-musicnn-1"}, 400),
        ({"vector": [1.0] * 7, "model": "msd-musicnn-1"}, 400),
        ({"track_id": 1, "limit": 0}, 400),
        ({"track_id": 1, "limit": 100000}, 400),
        ({"track_id": 1, "bogus": 1}, 400),
        ({"track_id": "one"}, 400),
        ({"track_id": 987654}, 404),
        ({"track_id": 1, "model": "nope"}, 422),
        ({"vector": [1.0] * 200, "model": "nope"}, 422),
        ({"track_id": 1, "filters": {"min_scores": {"rock": 2}}}, 400),
        ({"track_id": 1, "filters": {"min_duration": 50, "max_duration": 10}}, 400),
        ({"path": "a/t0.flac"}, 400),
        ({"track_id": 1, "filters": {"min_scores": {"no_such_label": 0.5}}}, 422),
    ],
)
def test_similar_rejects_bad_requests_with_4xx(
    served: Any, payload: dict[str, Any], status: int
) -> None:
    ra, _, _ = served
    st, body = ra.request("POST", "/similar", payload)
    assert st == status, body
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]


def test_malformed_bodies_are_400_or_413(served: Any) -> None:
    ra, _, _ = served
    for raw in (b"{", b"[1,2]", b"\xff\xfe", b"null", b'"x"'):
        st, body = ra.request(
            "POST", "/similar", raw=raw, headers={"Content-Type": "application/json"}
        )
        assert st == 400, (raw, body)
    st, body = ra.request(
        "POST",
        "/similar",
        raw=b'{"track_id": 1, "pad": "' + b"x" * 400_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert st == 413 and body["error"]["code"] == "too-large"
    st, body = ra.request("DELETE", "/similar")
    assert st == 405 and body["error"]["code"] == "method-not-allowed"


def test_paths_outside_the_roots_are_refused(served: Any) -> None:
    ra, lib, outside = served
    secret = str(outside / "secret.flac")
    cases = [
        ("POST", "/analyze", {"path": secret}),
        ("POST", "/analyze", {"path": str(lib / "a" / ".." / ".." / "outside" / "secret.flac")}),
        ("POST", "/analyze", {"path": "/etc/passwd"}),
        ("POST", "/analyze", {"path": "relative/t0.flac"}),
        ("POST", "/similar", {"path": secret}),
        ("POST", "/similar", {"track_id": 1, "filters": {"under": ["/etc"]}}),
        ("POST", "/playlists/radio", {"path": "/etc/passwd"}),
        ("POST", "/scan", {"paths": ["/etc"]}),
    ]
    for method, path, payload in cases:
        st, body = ra.request(method, path, payload)
        assert st in (400, 403), (payload, st, body)
    assert ra.request("GET", f"/tracks/lookup?path={secret}")[0] == 403
    assert ra.request("GET", "/tracks?under=/etc")[0] == 403
    # a symlink inside the library that points outside is no library file: the scan never
    # followed it (docs/reliability.md), and the API refuses it like the file it points to
    link = str(lib / "a" / "escape.flac")
    st, body = ra.request("POST", "/analyze", {"path": link})
    assert st == 403, body
    assert ra.request("GET", f"/tracks/lookup?path={link}")[0] == 403
    (lib / "a" / "escape2.flac").symlink_to(secret)
    try:
        st, body = ra.request("POST", "/analyze", {"path": str(lib / "a" / "escape2.flac")})
        assert st == 403, body
    finally:
        (lib / "a" / "escape2.flac").unlink()


def test_symlinks_made_while_serving_lead_nowhere(served: Any) -> None:
    """A folder link and a file link to outside, made while the agent runs, then a full rescan:
    nothing outside is tagged or listed, and the paths through the links are refused."""
    ra, lib, outside = served
    (outside / "dir").mkdir(exist_ok=True)
    encode(outside / "dir" / "x.flac", music_like(8.0, seed=11), 44100)
    before = {p: p.read_bytes() for p in outside.rglob("*.flac")}
    (lib / "b" / "late-dir").symlink_to(outside / "dir", target_is_directory=True)
    (lib / "late-file.flac").symlink_to(outside / "dir" / "x.flac")
    try:
        st, _ = ra.request("POST", "/scan", {})
        assert st == 200
        time.sleep(1.0)
        ra.idle(120)
        assert {p: p.read_bytes() for p in before} == before, "a file outside was written"
        for p in (lib / "b" / "late-dir" / "x.flac", lib / "late-file.flac"):
            assert ra.request("GET", f"/tracks/lookup?path={p}")[0] == 403
            assert ra.request("POST", "/analyze", {"path": str(p)})[0] == 403
        st, page = ra.request("GET", "/tracks?status=all&limit=1000")
        assert st == 200
        assert not [t["path"] for t in page["items"] if "late-" in t["path"]]
    finally:
        (lib / "b" / "late-dir").unlink()
        (lib / "late-file.flac").unlink()


def test_analyze_library_file_and_upload(served: Any, tmp_path: Path) -> None:
    ra, lib, _ = served
    t3 = str(lib / "b" / "t3.flac")
    st, body = ra.request("POST", "/analyze", {"path": t3})
    res = api.AnalyzeResponse.model_validate(body)
    assert st == 200 and res.source == "library"
    assert res.tags == read_tags(t3).nom
    # a different profile is analysed now (nothing is written)
    before = Path(t3).read_bytes()
    st, body = ra.request("POST", "/analyze", {"path": t3, "profile": "fast"})
    assert st == 200 and body["source"] == "analysis" and body["profile"] == "fast"
    assert Path(t3).read_bytes() == before
    # upload: bytes streamed from "another machine"; the same audio gives the same scores
    src = tmp_path / "up.mp3"
    encode(src, music_like(25.0, seed=103), 44100)  # the audio of t3, as MP3
    st, body = ra.request(
        "POST",
        "/analyze?filename=up.mp3",
        raw=src.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert st == 200, body
    up = api.AnalyzeResponse.model_validate(body)
    assert up.source == "analysis" and up.path is None and up.filename == "up.mp3"
    a, b = res.models["msd-musicnn-1"].scores, up.models["msd-musicnn-1"].scores
    assert max(abs(a[k] - b[k]) for k in a) < 0.05  # lossy re-encode of the same signal
    assert not list((Path(os.environ["XDG_CACHE_HOME"]) / "nomarr" / "uploads").glob("*"))
    # multipart, as a browser or curl -F would send it
    boundary = "nomarrtestboundary"
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="up.mp3"\r\n'
            f"Content-Type: audio/mpeg\r\n\r\n"
        ).encode()
        + src.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    st, body = ra.request(
        "POST",
        "/analyze",
        raw=payload,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert st == 200 and body["filename"] == "up.mp3", body


def test_analyze_answers_use_the_library_calibration(served: Any, env: Path) -> None:
    """A file analysed now (another profile, an upload) is tiered by the library's calibrated
    thresholds exactly like a scanned file, not by the fixed defaults."""
    from nomarr.store import Store
    from nomarr_client.tags import slug, tier_of

    ra, lib, _ = served
    t3 = str(lib / "b" / "t3.flac")
    st, body = ra.request("POST", "/analyze", {"path": t3})
    labels = list(body["models"]["msd-musicnn-1"]["scores"])
    th = {lab: (0.0001, 0.00005) for lab in labels}  # far below the defaults: nearly all "high"
    with Store(env / "db.sqlite") as store, store.tx():
        store.set_tiers("msd-musicnn-1", th, 100)
    try:
        answers = {"library": ra.request("POST", "/analyze", {"path": t3})[1]}
        answers["analysis"] = ra.request("POST", "/analyze", {"path": t3, "profile": "fast"})[1]
        assert [a["source"] for a in answers.values()] == ["library", "analysis"]
        for a in answers.values():
            m = a["models"]["msd-musicnn-1"]
            want = {k: tier_of(v, th[k]) for k, v in m["scores"].items()}
            assert m["tiers"] == want
            moved = [k for k, v in m["scores"].items() if tier_of(v) != want[k]]
            assert len(moved) >= 10, moved  # the calibration really changed tiers
            prefix = m["tag_prefix"]
            tier_keys = {k for k in a["tags"] if k.endswith(("_high", "_medium", "_low"))}
            assert len(tier_keys) == len(labels)
            assert tier_keys == {f"{prefix}{slug(k)}_{t}" for k, t in want.items()}
    finally:
        with Store(env / "db.sqlite") as store, store.tx():
            store.db.execute("DELETE FROM tiers WHERE model_id = ?", ("msd-musicnn-1",))


def test_bad_uploads(served: Any) -> None:
    ra, _, _ = served
    ct = {"Content-Type": "application/octet-stream"}
    st, body = ra.request("POST", "/analyze?filename=x.txt", raw=b"hello", headers=ct)
    assert st == 415
    st, body = ra.request("POST", "/analyze", raw=b"hello", headers=ct)
    assert st == 415
    st, body = ra.request(
        "POST", "/analyze?filename=x.flac", raw=b"this is not audio at all" * 100, headers=ct
    )
    assert st == 422 and "decode" in body["error"]["message"]
    st, body = ra.request("POST", "/analyze?filename=x.flac", raw=b"", headers=ct)
    assert st == 400
    st, body = ra.request("POST", "/analyze?filename=x.flac&profile=nope", raw=b"abc", headers=ct)
    assert st == 400 and "profile" in body["error"]["message"]
    st, body = ra.request("POST", "/analyze", {"path": "/x.flac", "models": ["no-such-model"]})
    assert st in (400, 403)
    # the agent is still fine afterwards
    assert ra.request("GET", "/health")[0] == 200


def test_upload_size_limit(served: Any) -> None:
    ra, _, _ = served
    old = ra.agent.cfg.max_upload_mb
    ra.agent.cfg.max_upload_mb = 1
    try:
        st, body = ra.request(
            "POST",
            "/analyze?filename=big.flac",
            raw=b"\0" * (2 << 20),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert st == 413 and body["error"]["code"] == "too-large"
    finally:
        ra.agent.cfg.max_upload_mb = old


def test_moods_and_playlists(served: Any) -> None:
    ra, lib, _ = served
    st, body = ra.request("GET", "/moods")
    moods = api.MoodList.model_validate(body)
    assert st == 200 and len(moods.items) == 50 and not moods.zero_shot
    labels = {m.label for m in moods.items}
    assert {"happy", "rock", "electronic"} <= labels
    st, body = ra.request("POST", "/playlists/mood", {"label": "electronic", "limit": 3})
    pl = api.Playlist.model_validate(body)
    assert st == 200 and pl.kind == "mood" and len(pl.items) == 3
    scores = [h.score for h in pl.items]
    assert scores == sorted(scores, reverse=True)
    st, body = ra.request("POST", "/playlists/mood", {"label": "no such mood"})
    assert st == 422 and "no model" in body["error"]["message"]
    st, body = ra.request("POST", "/playlists/mood", {"label": "rock", "model": "nope"})
    assert st == 422 and "'nope'" in body["error"]["message"]
    t0 = str(lib / "a" / "t0.flac")
    st, body = ra.request("POST", "/playlists/radio", {"path": t0, "limit": 5})
    radio = api.Playlist.model_validate(body)
    assert st == 200 and radio.items[0].path == t0 and len(radio.items) == 5
    assert len({h.recording_id for h in radio.items}) == 5
    played = [radio.items[1].id]
    st, body = ra.request(
        "POST", "/playlists/radio", {"path": t0, "limit": 5, "exclude_track_ids": played}
    )
    assert st == 200 and played[0] not in [h["id"] for h in body["items"]]
    t5 = str(lib / "b" / "t5.flac")
    st, body = ra.request(
        "POST", "/playlists/path", {"start": {"path": t0}, "end": {"path": t5}, "limit": 4}
    )
    path_pl = api.Playlist.model_validate(body)
    assert st == 200 and path_pl.items[0].path == t0 and path_pl.items[-1].path == t5
    st, body = ra.request("POST", "/playlists/text", {"text": "calm piano at night"})
    assert (
        st == 409
        and body["error"]["code"] == "model-missing"
        and "nomarr models pull" in body["error"]["message"]
    )


def test_tag_keys_are_exactly_what_the_files_carry(served: Any) -> None:
    """``GET /tags`` is what host configs (Navidrome's [Tags]) are generated from, so it must list
    every nom: key found in the files, with the right track counts, and nothing else."""
    ra, lib, _ = served
    st, body = ra.request("GET", "/tags")
    assert st == 200, body
    keys = api.TagKeyList.model_validate(body)
    # not the link out of the library: the scan never follows it
    ok_files = [p for p in lib.rglob("*.flac") if not p.is_symlink()]
    found: dict[str, int] = {}
    for p in ok_files:
        for k in {
            k.lower() for k, _ in mutagen.File(p).tags
        }:  # Vorbis comments, read independently
            if k.startswith("nom:"):
                found[k.lower()] = found.get(k.lower(), 0) + 1
    listed = {k.key: k.tracks for k in keys.items}
    assert listed == found
    by_kind = {k.kind for k in keys.items}
    assert by_kind == {"score", "tier", "provenance", "descriptor"}  # + tempo, key… (dsp)
    happy = [k for k in keys.items if k.kind == "score" and k.label == "happy"]
    assert (
        len(happy) == 1
        and happy[0].model == "msd-musicnn-1"
        and happy[0].key == happy[0].prefix + "happy"
    )
    assert happy[0].tracks == len(ok_files)
    tiers = [k for k in keys.items if k.kind == "tier" and k.label == "happy"]
    assert tiers and sum(t.tracks for t in tiers) == len(ok_files) and all(t.tier for t in tiers)


def test_models_list_and_pull_errors(served: Any) -> None:
    ra, lib, _ = served
    st, body = ra.request("GET", "/models")
    ml = api.ModelList.model_validate(body)
    builtin = [m for m in ml.items if m.id == "msd-musicnn-1"][0]
    assert (
        builtin.installed
        and builtin.builtin
        and builtin.labels == 50
        and builtin.embedding_dim == 200
    )
    # the provenance listed is the one the library's files carry: clients skip files that have it
    assert builtin.default and builtin.tag_prefix == "nom:onnx_musicnn_msd-1_msd50_1_"
    carried = {
        v
        for k, v in mutagen.File(lib / "a" / "t1.flac").tags
        if k.lower() == builtin.tag_prefix + "provenance"
    }
    assert carried == {builtin.provenance}
    other = [m for m in ml.items if m.id == "mtt-musicnn-1"][0]
    assert not other.default and other.provenance and other.provenance != builtin.provenance
    st, body = ra.request("POST", "/models/msd-musicnn-1/pull")
    assert st == 200 and body["status"] == "already-installed"
    st, body = ra.request("POST", "/models/does-not-exist/pull")
    assert st == 404


def test_openapi_document_covers_every_route(served: Any) -> None:
    ra, _, _ = served
    st, doc = ra.request("GET", "/openapi.json")
    assert st == 200 and doc["openapi"].startswith("3.1")
    p = doc["paths"]
    for path, method in (
        ("/health", "get"),
        ("/status", "get"),
        ("/tracks", "get"),
        ("/tracks/{id}", "get"),
        ("/tracks/lookup", "get"),
        ("/analyze", "post"),
        ("/similar", "post"),
        ("/moods", "get"),
        ("/tags", "get"),
        ("/playlists/mood", "post"),
        ("/playlists/radio", "post"),
        ("/playlists/path", "post"),
        ("/playlists/text", "post"),
        ("/models", "get"),
        ("/models/{id}/pull", "post"),
    ):
        assert method in p["/api/v1" + path], path
    assert p["/api/v1/health"]["get"]["security"] == []
    assert "SimilarRequest" in doc["components"]["schemas"]
    assert "application/octet-stream" in p["/api/v1/analyze"]["post"]["requestBody"]["content"]


def test_watcher_adds_moves_and_deletes(served: Any, tmp_path: Path) -> None:
    ra, lib, _ = served
    src = tmp_path / "new.flac"
    encode(src, music_like(20.0, seed=555), 44100)
    dst = lib / "a" / "new.flac"
    t0 = time.monotonic()
    shutil.copy(src, dst)

    def tagged() -> bool:
        return bool(read_tags(str(dst)).nom) if dst.exists() else False

    ra.wait_for(tagged, 60, "the new file to be tagged")
    ra.wait_for(lambda: ra.request("GET", f"/tracks/lookup?path={dst}")[1]["items"], 10, "lookup")
    took = time.monotonic() - t0
    tid = ra.request("GET", f"/tracks/lookup?path={dst}")[1]["items"][0]["id"]
    # the very next similarity answer lists it: the in-memory index (loaded by the tests before)
    # is never stale by a query
    st, body = ra.request("POST", "/similar", {"path": str(lib / "a" / "t1.flac"), "limit": 50})
    assert st == 200 and tid in [h["id"] for h in body["items"]], body
    st, body = ra.request("POST", "/similar", {"path": str(dst), "limit": 3})
    assert st == 200 and len(body["items"]) == 3, body
    # rename within the library: same track id, no new analysis
    moved = lib / "b" / "renamed.flac"
    os.rename(dst, moved)
    ra.wait_for(
        lambda: ra.request("GET", f"/tracks/lookup?path={moved}")[1]["items"],
        20,
        "the move to be seen",
    )
    assert ra.request("GET", f"/tracks/lookup?path={moved}")[1]["items"][0]["id"] == tid
    assert ra.request("GET", f"/tracks/lookup?path={dst}")[1]["items"] == []
    # delete: gone from every answer
    os.unlink(moved)

    def gone() -> bool:
        st, body = ra.request("POST", "/similar", {"path": str(lib / "a" / "t1.flac"), "limit": 50})
        return st == 200 and all(h["id"] != tid for h in body["items"])

    ra.wait_for(gone, 20, "the deleted file to leave the answers")
    assert ra.request("GET", f"/tracks/{tid}")[1]["status"] == "missing"
    assert took < 10 + 30, took


def test_scan_endpoint_and_graceful_stop(env: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib2"
    lib.mkdir()
    for i in range(3):
        encode(lib / f"s{i}.flac", music_like(15.0, seed=900 + i), 44100)
    ra = RunningAgent(config([str(lib)], str(tmp_path / "db2.sqlite"), scan_on_start=False)).start()
    try:
        st, body = ra.request("GET", "/tracks")
        assert body["total"] == 0
        st, body = ra.request("POST", "/scan", {})
        assert st == 200 and body["queued"] == 1
        ra.wait_for(
            lambda: ra.request("GET", "/tracks")[1]["total"] == 3, 60, "the API-triggered scan"
        )
        ra.idle()
        assert ra.request("GET", "/status")[1]["workers_loaded"]
    finally:
        t0 = time.monotonic()
        ra.stop()
        assert time.monotonic() - t0 < 30
    # every file intact and tagged, no temp files left behind
    for f in lib.iterdir():
        assert not f.name.startswith(".")
        assert read_tags(str(f)).nom


def test_idle_unload_frees_the_workers(env: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib3"
    lib.mkdir()
    encode(lib / "x.flac", music_like(10.0, seed=4242), 44100)
    ra = RunningAgent(config([str(lib)], str(tmp_path / "db3.sqlite"), idle_unload_s=1.0)).start()
    try:
        ra.wait_for(lambda: ra.request("GET", "/tracks")[1]["total"] == 1, 60, "the first scan")
        ra.wait_for(
            lambda: not ra.request("GET", "/status")[1]["workers_loaded"], 20, "idle unload"
        )
        # and they come back on demand
        st, body = ra.request("POST", "/analyze", {"path": str(lib / "x.flac"), "profile": "fast"})
        assert st == 200 and body["source"] == "analysis"
    finally:
        ra.stop()


@pytest.mark.corpus
def test_copied_real_track_is_answerable_within_10s_plus_analysis(
    corpus: Path, env: Path, tmp_path: Path
) -> None:
    lib = tmp_path / "lib4"
    lib.mkdir()
    for name in ("sh01.ogg", "sh02.ogg"):
        shutil.copy(corpus / name, lib / name)
        os.chmod(lib / name, 0o644)
    ra = RunningAgent(
        config([str(lib)], str(tmp_path / "db4.sqlite"), settle_s=1.0, debounce_s=0.5)
    ).start()
    try:
        ra.idle(120)
        new = lib / "sh03.ogg"
        t0 = time.monotonic()
        shutil.copy(corpus / "sh03.ogg", new)
        os.chmod(new, 0o644)
        ra.wait_for(
            lambda: ra.request("GET", f"/tracks/lookup?path={new}")[1]["items"],
            60,
            "the copied track",
        )
        ra.wait_for(
            lambda: read_tags(str(new)).nom, 30, "its tags"
        )  # written right after it is stored
        st, body = ra.request("POST", "/similar", {"path": str(new), "limit": 2})
        took = time.monotonic() - t0
        assert st == 200 and len(body["items"]) == 2
        last = ra.request("GET", "/status")[1]["queue"]["last_scan"]["summary"]
        analysis_s = last["time"].get("process", 0.0)
        assert took <= 10 + analysis_s + 5, (took, analysis_s)  # +5: shared CI machines
    finally:
        ra.stop()
