"""Streaming ingest: PCM chunks analysed like the file they came from, bounded sessions, refused
frames that leave nothing behind, recordings without a file answered like library tracks, and a
killed agent storing nothing partial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from nomarr.audio.decode import stream_mono
from nomarr.audio.pcm import PcmError, PcmSource, downmix
from nomarr.ingest.sessions import IngestError, Limits, Sessions

from tests.server_harness import RunningAgent, config, isolated_dirs

REPO = Path(__file__).resolve().parents[1]


def decoded(path: Path) -> tuple[np.ndarray, int]:
    """A file's samples as the decoder gives them: [channels, n] float32 (planar), and its rate."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        frames = [f.to_ndarray() for f in c.decode(s)]
        return np.concatenate(frames, axis=1).astype(np.float32), int(s.codec_context.sample_rate)


def pcm_bytes(planar: np.ndarray, encoding: str) -> bytes:
    """Interleaved little-endian PCM of a [channels, n] float signal."""
    inter = np.ascontiguousarray(planar.T)
    if encoding == "f32le":
        return inter.astype("<f4").tobytes()
    if encoding == "s16le":
        return np.clip(np.round(inter * 32768), -32768, 32767).astype("<i2").tobytes()
    if encoding == "s32le":
        return (
            np.clip(np.round(inter * 2147483648.0), -2147483648, 2147483647).astype("<i4").tobytes()
        )
    raise ValueError(encoding)


# -- the PCM path is the decoder's path ----------------------------------------------------------


def test_downmix_matches_the_decoder(corpus: Path) -> None:
    planar, sr = decoded(corpus / "sh05.ogg")
    ref = planar.mean(axis=0, dtype=np.float32)
    assert np.array_equal(downmix(pcm_bytes(planar, "f32le"), "f32le", 2), ref)
    s16 = downmix(pcm_bytes(planar, "s16le"), "s16le", 2)
    assert np.abs(s16 - ref).max() < 2 / 32768
    # 24-bit little endian, sign-extended
    vals = np.array([[-(1 << 23), (1 << 23) - 1, 0, -1]], dtype=np.int64)
    raw = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in vals[0])
    assert np.allclose(downmix(raw, "s24le", 1), vals[0] / 8388608.0)


def test_pcm_source_streams_like_the_file(corpus: Path) -> None:
    path = corpus / "sh09.ogg"
    planar, sr = decoded(path)
    src = PcmSource(planar.mean(axis=0, dtype=np.float32), sr)
    for start, dur in ((0.0, None), (12.5, 30.0)):
        a = np.concatenate(list(stream_mono(path, sr=16000, start=start, duration=dur)))
        b = src.load(16000, start, dur)
        n = min(a.size, b.size)
        assert abs(a.size - b.size) <= 2
        assert np.abs(a[:n] - b[:n]).max() < 1e-4


def test_malformed_chunks_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(PcmError, match="whole number of frames"):
        downmix(b"\x00" * 7, "s16le", 2)
    with pytest.raises(PcmError, match="NaN"):
        downmix(np.array([0.0, np.nan], "<f4").tobytes(), "f32le", 1)
    ses = Sessions(
        tmp_path / "spool", Limits(sessions=2, idle_s=0.3, max_bytes=4000, min_seconds=0.01)
    )
    s = ses.start({"title": "x"}, "s16le", 8000, 2)
    ok = np.zeros(400, "<i2").tobytes()  # 200 frames
    ses.add(s.id, 0, ok)
    size = s.spool.stat().st_size
    for seq, data, code in (
        (1, ok + b"\x01", 400),  # a partial frame
        (1, b"", 400),  # empty
        (3, ok, 409),  # out of order
    ):
        with pytest.raises(IngestError) as e:
            ses.add(s.id, seq, data)
        assert e.value.status == code
        assert s.spool.stat().st_size == size and s.next_seq == 1
    # a retry of the last chunk (lost answer) is acknowledged, not kept twice
    _, dup = ses.add(s.id, 0, ok)
    assert dup and s.spool.stat().st_size == size
    # bytes per session: past the bound the session is gone
    ses.add(s.id, 1, ok)
    with pytest.raises(IngestError) as e:
        for i in range(2, 10):
            ses.add(s.id, i, ok)
    assert e.value.status == 413
    assert not s.spool.exists()
    with pytest.raises(IngestError):
        ses.get(s.id)
    # concurrent sessions, then the idle timeout frees them
    a = ses.start({}, "f32le", 8000, 1)
    ses.start({}, "f32le", 8000, 1)
    with pytest.raises(IngestError) as e:
        ses.start({}, "f32le", 8000, 1)
    assert e.value.status == 429
    time.sleep(0.4)
    assert ses.expire() == 2 and not a.spool.exists()
    # minimum duration
    short = ses.start({}, "f32le", 8000, 1)
    ses.add(short.id, 0, np.zeros(10, "<f4").tobytes())
    with pytest.raises(IngestError) as e:
        ses.begin_end(short.id)
    assert e.value.status == 422
    # a new agent finds a dead agent's spool and drops it
    left = ses.start({}, "f32le", 8000, 1)
    assert left.spool.exists()
    Sessions(tmp_path / "spool", Limits())
    assert not left.spool.exists()


# -- end to end against a real agent -------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Iterator[RunningAgent]:
    base = tmp_path_factory.mktemp("ingest")
    lib = base / "lib"
    lib.mkdir()
    for name in (
        "sh01",
        "sh09",
        "sh16",
        "sh17",
    ):  # a small library; the streamed files are not in it
        (lib / f"{name}.ogg").write_bytes((corpus / f"{name}.ogg").read_bytes())
    with isolated_dirs(base):
        a = RunningAgent(
            config([str(lib)], str(base / "db.sqlite"), write_tags=False, profile="balanced")
        ).start()
        try:
            a.idle(600)
            yield a
        finally:
            a.stop()


def stream(
    a: RunningAgent, planar: np.ndarray, sr: int, encoding: str, identity: dict[str, Any]
) -> tuple[int, Any]:
    st, sess = a.request(
        "POST",
        "/ingest",
        {
            "identity": identity,
            "format": {"encoding": encoding, "sample_rate": sr, "channels": planar.shape[0]},
        },
    )
    assert st == 200, sess
    data = pcm_bytes(planar, encoding)
    step = planar.shape[0] * {"f32le": 4, "s16le": 2, "s32le": 4}[encoding] * sr * 3  # 3 s chunks
    for k, i in enumerate(range(0, len(data), step)):
        st, body = a.request(
            "POST",
            f"/ingest/{sess['id']}/chunks?seq={k}",
            raw=data[i : i + step],
            headers={"Content-Type": "application/octet-stream"},
        )
        assert st == 200, body
    return a.request("POST", f"/ingest/{sess['id']}/end", timeout=600)


@pytest.mark.corpus
def test_streamed_track_scores_as_the_scanned_file(agent: RunningAgent, corpus: Path) -> None:
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    path = corpus / "sh05.ogg"
    ref = Analyzer(ModelSet(Registry(), ["msd-musicnn-1"]), get_profile("balanced")).analyze(path)
    want = ref.results["msd-musicnn-1"]
    planar, sr = decoded(path)
    st, res = stream(
        agent,
        planar,
        sr,
        "f32le",
        {"provider": "test", "provider_id": "test://sh05", "title": "Flat lands", "artist": "Hasi"},
    )
    assert st == 200, res
    assert res["analysed"] and not res["matched"] and res["stream"]["kind"] == "stream"
    got = res["analysis"]["models"]["msd-musicnn-1"]
    assert got["patches"] == want.n_patches
    diff = max(abs(got["scores"][k] - v) for k, v in want.scores.items())
    assert diff <= 1e-4, diff  # the decoder's own samples: the file's numbers
    # 16-bit PCM (what players hand out) stays within the fidelity bound
    st, res16 = stream(
        agent, planar, sr, "s16le", {"provider": "test", "provider_id": "test://sh05-16"}
    )
    assert st == 200, res16
    # the same audio again is recognised by its fingerprint: no second analysis
    assert res16["matched"] and not res16["analysed"]
    assert res16["recording_id"] == res["recording_id"]


@pytest.mark.corpus
def test_streamed_recording_answers_like_a_track(agent: RunningAgent, corpus: Path) -> None:
    planar, sr = decoded(corpus / "sh18.ogg")  # orchestral, like sh16/sh17 in the library
    st, res = stream(
        agent,
        planar,
        sr,
        "s16le",
        {
            "provider": "tidal",
            "provider_id": "tidal://track/18",
            "mbid": "11111111-2222-3333-4444-555555555555",
            "title": "Battle Music",
            "artist": "Aleksi",
        },
    )
    assert st == 200, res
    sid, rec = res["stream"]["id"], res["recording_id"]
    # /similar seeded by the stream
    st, sim = agent.request("POST", "/similar", {"stream_id": sid, "limit": 3})
    assert st == 200 and sim["seed"]["kind"] == "stream" and len(sim["items"]) == 3
    assert sid not in [h["id"] for h in sim["items"] if h["kind"] == "stream"]  # not itself
    assert any(h["kind"] == "file" for h in sim["items"])
    # and the stream among a library track's neighbours (not for files-only hosts)
    st, tracks = agent.request("GET", "/tracks")
    sh17 = next(t for t in tracks["items"] if t["path"].endswith("sh17.ogg"))
    st, sim = agent.request("POST", "/similar", {"track_id": sh17["id"], "limit": 10})
    assert any(
        h["kind"] == "stream" and h["stream"]["provider_id"] == "tidal://track/18"
        for h in sim["items"]
    )
    st, sim = agent.request(
        "POST", "/similar", {"track_id": sh17["id"], "limit": 10, "filters": {"files_only": True}}
    )
    assert all(h["kind"] == "file" for h in sim["items"])
    # mood playlists hold it too; lookups find it by its ids
    st, lk = agent.request("GET", "/recordings/lookup?provider_id=tidal://track/18")
    assert st == 200 and [x["id"] for x in lk["items"]] == [sid]
    st, lk = agent.request("GET", "/recordings/lookup?mbid=11111111-2222-3333-4444-555555555555")
    assert [x["kind"] for x in lk["items"]] == ["stream"]
    st, one = agent.request("GET", f"/streams/{sid}")
    assert st == 200 and one["recording_id"] == rec
    # a listen of the streamed item (by provider id) is matched and feeds taste
    st, imp = agent.request(
        "POST",
        "/users/ma-user/listens",
        {
            "source": "music_assistant",
            "listens": [
                {
                    "ts": time.time() - 60,
                    "provider_id": "tidal://track/18",
                    "seconds": 200,
                    "duration": 90,
                }
            ],
        },
    )
    assert st == 200 and imp["by_rule"] == {"provider": 1}
    st, recs = agent.request(
        "POST", "/users/ma-user/recommendations", {"mode": "discovery", "limit": 2}
    )
    assert st == 200, recs
    assert all(r["reason"] == "because you played Aleksi — Battle Music" for r in recs["items"])


@pytest.mark.corpus
def test_ingest_http_errors(agent: RunningAgent) -> None:
    st, body = agent.request(
        "POST", "/ingest", {"format": {"encoding": "s16le", "sample_rate": 44100, "channels": 2}}
    )
    assert st == 200
    sid = body["id"]
    st, err = agent.request(
        "POST",
        f"/ingest/{sid}/chunks?seq=0",
        raw=b"\x00\x01\x02",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert st == 400 and "whole number of frames" in err["error"]["message"]
    st, err = agent.request("POST", f"/ingest/{sid}/chunks?seq=x", raw=b"\x00" * 4)
    assert st == 400
    st, err = agent.request("POST", f"/ingest/{sid}/end")
    assert st == 422 and "shorter" in err["error"]["message"]
    st, err = agent.request("DELETE", f"/ingest/{sid}")
    assert st == 404  # the too-short session is gone
    st, err = agent.request("POST", "/ingest/nope/end")
    assert st == 404
    st, err = agent.request(
        "POST", "/ingest", {"format": {"encoding": "u8", "sample_rate": 44100, "channels": 2}}
    )
    assert st == 400


def test_killed_agent_stores_nothing(tmp_path: Path) -> None:
    """SIGKILL mid-session: no stream, no recording; the next start drops the spool."""
    env = dict(os.environ)
    env.update(
        NOMARR_CONFIG_DIR=str(tmp_path / "config"),
        NOMARR_DATA_DIR=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        NOMARR_ZEROCONF="false",
        NOMARR_SCAN_ON_START="false",
    )
    db = tmp_path / "db.sqlite"

    def serve() -> tuple[subprocess.Popen[bytes], int]:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nomarr.cli",
                "serve",
                "--db",
                str(db),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urlopen(port, "GET", "/health", None, None) as r:
                    if r.status == 200:
                        return p, port
            except OSError:
                time.sleep(0.2)
        p.kill()
        raise AssertionError("agent did not start")

    p, port = serve()
    token = (tmp_path / "config" / "token").read_text().strip()
    body = json.dumps(
        {
            "identity": {"title": "half"},
            "format": {"encoding": "s16le", "sample_rate": 8000, "channels": 1},
        }
    ).encode()
    with urlopen(port, "POST", "/ingest", body, token) as r:
        sid = json.loads(r.read())["id"]
    for k in range(5):
        with urlopen(
            port, "POST", f"/ingest/{sid}/chunks?seq={k}", np.zeros(16000, "<i2").tobytes(), token
        ) as r:
            assert r.status == 200
    spool = tmp_path / "cache" / "nomarr" / "ingest" / f"{sid}.f32"
    assert spool.stat().st_size == 5 * 16000 * 4
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    from nomarr.store import Store

    with Store(db) as st:
        assert st.count_streams() == 0 and st.counts()["recordings"] == 0
        assert st.integrity_check() == "ok"
    p, port = serve()
    try:
        assert not spool.exists()
        import urllib.error

        with pytest.raises(urllib.error.HTTPError) as e:
            urlopen(port, "GET", f"/ingest/{sid}", None, token)
        assert e.value.code == 404
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)


def urlopen(port: int, method: str, path: str, body: bytes | None, token: str | None) -> Any:
    import urllib.request

    h = {
        "Content-Type": "application/json"
        if body and body[:1] == b"{"
        else "application/octet-stream"
    }
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}", data=body, method=method, headers=h
    )
    return urllib.request.urlopen(req, timeout=60)


@pytest.mark.corpus
def test_a_file_scanned_later_joins_the_streamed_recording(
    agent: RunningAgent, corpus: Path
) -> None:
    """The library gains a file of audio that was streamed before: the scan matches it by
    fingerprint and reuses the stream's analysis; collection keeps a recording only a stream
    holds."""
    planar, sr = decoded(corpus / "sh12.ogg")
    st, res = stream(agent, planar, sr, "s16le", {"provider": "test", "provider_id": "test://sh12"})
    assert st == 200 and res["analysed"], res
    rec = res["recording_id"]
    st, before = agent.request("GET", "/status")
    root = Path(agent.cfg.libraries[0].path)
    (root / "later.ogg").write_bytes((corpus / "sh12.ogg").read_bytes())
    assert agent.request("POST", "/scan", {"paths": [str(root / "later.ogg")]})[0] == 200
    agent.idle(300)
    st, after = agent.request("GET", "/status")
    assert (
        after["queue"]["totals"].get("reused", 0) == before["queue"]["totals"].get("reused", 0) + 1
    )
    st, found = agent.request("GET", f"/tracks/lookup?path={root / 'later.ogg'}")
    assert found["items"][0]["recording_id"] == rec
    # answers now show the file for that recording, not the stream
    st, lk = agent.request("GET", "/recordings/lookup?provider_id=test://sh12")
    assert [x["kind"] for x in lk["items"]] == ["file", "stream"]


def test_collection_keeps_streamed_recordings(tmp_path: Path) -> None:
    from nomarr.store import Store

    with Store(tmp_path / "db.sqlite") as st:
        with st.tx():
            rec = st.new_recording(100.0, [1, 2, 3])
            sid, created = st.put_stream(
                rec, np.arange(50, dtype=np.uint32), provider="p", provider_id="p://1"
            )
            orphan = st.new_recording(100.0, [4])
        assert created
        with st.tx():
            assert st.gc_recordings() == 1  # the orphan only
        assert st.recording_exists(rec) and not st.recording_exists(orphan)
        assert len(st.recording_fingerprints(rec)) == 1
        with st.tx():
            assert st.put_stream(rec, None, provider="p", provider_id="p://1") == (sid, False)
            st.delete_stream(sid)
            assert st.gc_recordings() == 1
        assert not st.recording_exists(rec)
