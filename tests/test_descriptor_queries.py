"""Descriptors in answers: BPM/key/energy filters, harmonic radio and song paths, GET /tracks
filters and detail over real HTTP, and the Rekordbox XML export read back with pyrekordbox."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nomarr import query
from nomarr.analyzers.key import camelot_of
from nomarr.store import Analysis, Store
from nomarr_client import models as api

from tests.conftest import encode
from tests.server_harness import RunningAgent, config, isolated_dirs
from tests.synth import song

KEYS = [(t, m) for t in range(12) for m in ("major", "minor")]


@pytest.fixture
def library(tmp_path: Path) -> tuple[Store, list[int]]:
    """A store of 40 recordings with random embeddings and known descriptors."""
    rng = np.random.default_rng(5)
    st = Store(tmp_path / "q.db")
    ids = []
    with st.tx():
        for i in range(40):
            f = tmp_path / f"t{i:02d}.flac"
            f.write_bytes(b"x")
            rec = st.new_recording(10.0, [])
            tid = st.upsert_track(
                f,
                os.stat(f),
                recording_id=rec,
                status="ok",
                title=f"T{i}",
                artist="A",
                duration=200.0 + i,
            )
            vec = rng.standard_normal(16).astype(np.float32)
            st.put_analysis(
                rec,
                Analysis(
                    rec,
                    "m",
                    "nom:onnx_x_1_y_1_",
                    "p",
                    "full",
                    [],
                    1,
                    "cpu",
                    {"happy": float(i) / 40},
                ),
                vec / np.linalg.norm(vec),
            )
            tonic, mode = KEYS[i % 24]
            st.put_descriptors(
                rec,
                {
                    "provenance": "d",
                    "tempo": {
                        "bpm": 100.0 + (i % 8) * 5.0,
                        "confidence": 0.9,
                        "first_beat": 0.1 * (i % 5),
                    },
                    "key": {"key": f"k{i}", "camelot": camelot_of(tonic, mode), "strength": 0.7},
                    "energy": {"energy": (i % 10) / 10.0},
                },
                None,
            )
            ids.append(tid)
    yield st, ids
    st.close()


def test_filters_on_similar_and_tracks(library):
    st, ids = library
    f = query.Filters(min_bpm=110, max_bpm=120, keys=["8A", "8B", "9A"], min_energy=0.2)
    _, hits = query.similar(st, ids[0], 40, filters=f, distinct=True)
    assert hits
    for h in hits:
        assert 110 <= h.desc["bpm"] <= 120 and h.desc["camelot"] in ("8A", "8B", "9A")
        assert h.desc["energy"] >= 0.2
    rows = st.tracks(descriptors=query.Filters(keys=["8A"]))
    assert rows and all(
        st.descriptor_columns([t.recording_id])[t.recording_id]["camelot"] == "8A" for t in rows
    )
    assert st.count_tracks(descriptors=query.Filters(min_bpm=130)) == 10  # i % 8 in (6, 7)
    mood = query.mood_playlist(st, "happy", 10, filters=query.Filters(max_bpm=105))
    assert mood and all(h.desc["bpm"] <= 105 for h in mood)


def test_harmonic_radio_and_path(library):
    st, ids = library
    plain = query.radio(st, ids[3], 10)
    pl = query.radio(st, ids[3], 10, harmonic=True)
    assert pl[0].track.id == ids[3] and len(pl) >= 2
    for a, b in zip(pl, pl[1:], strict=False):
        assert query.harmonic_match(a.desc, b.desc), (a.desc, b.desc)
    assert any(
        not query.harmonic_match(a.desc, b.desc) for a, b in zip(plain, plain[1:], strict=False)
    )
    path = query.path_playlist(st, ids[0], ids[20], 8, harmonic=True)
    assert path[0].track.id == ids[0] and path[-1].track.id == ids[20]
    for a, b in zip(path[:-2], path[1:-1], strict=False):
        assert query.harmonic_match(a.desc, b.desc)


def test_harmonic_rule():
    a = {"bpm": 128.0, "camelot": "8A"}
    assert query.harmonic_match(a, {"bpm": 124.0, "camelot": "9A"})
    assert query.harmonic_match(a, {"bpm": 64.5, "camelot": "8B"})  # half time, relative major
    assert not query.harmonic_match(a, {"bpm": 118.0, "camelot": "8A"})  # 7.8 % slower
    assert not query.harmonic_match(a, {"bpm": 128.0, "camelot": "10A"})
    assert not query.harmonic_match(a, {"bpm": None, "camelot": "8A"})


def test_rekordbox_export_reads_back_and_is_deterministic(library, tmp_path):
    rbxml = pytest.importorskip("pyrekordbox.rbxml")
    from nomarr.export.rekordbox import PlaylistSpec, export

    st, ids = library
    out1, out2 = tmp_path / "a.xml", tmp_path / "b.xml"
    specs = [PlaylistSpec.parse(f"radio:{ids[1]}"), PlaylistSpec.parse(f"path:{ids[0]},{ids[9]}")]
    info = export(st, out1, specs)
    export(st, out2, specs)
    assert out1.read_bytes() == out2.read_bytes()
    assert info["tracks"] == 40
    xml = rbxml.RekordboxXml(str(out1))
    assert xml.num_tracks == 40
    for t in st.tracks():
        rb = xml.get_track(TrackID=t.id)
        desc = st.descriptors(t.recording_id)
        assert rb["Name"] == t.title and rb["Artist"] == "A"
        assert rb["TotalTime"] == round(t.duration)
        assert rb["AverageBpm"] == pytest.approx(desc["tempo"]["bpm"])
        assert rb["Tonality"] == desc["key"]["key"]
        assert "/" + urllib.parse.unquote(rb["Location"]).lstrip("/") == t.path
        assert rb["Comments"].startswith("nomarr: happy")
        tempo = rb._element.find("TEMPO")
        assert float(tempo.get("Inizio")) == pytest.approx(desc["tempo"]["first_beat"])
        assert float(tempo.get("Bpm")) == pytest.approx(desc["tempo"]["bpm"])
    root = xml.root_playlist_folder
    names = {n.name for n in root.get_playlists()}
    assert {"nomarr moods", "nomarr radio", "nomarr paths"} <= names
    radio = root.get_playlist("nomarr radio").get_playlists()[0]
    assert radio.get_tracks()[0] == ids[1]
    happy = root.get_playlist("nomarr moods").get_playlist("happy")
    assert happy.get_tracks()[0] == ids[-1]  # the happiest first


def test_export_cli_errors(tmp_path):
    from nomarr.cli import main

    assert (
        main(["export", "rekordbox", str(tmp_path / "x.xml"), "--db", str(tmp_path / "none.db")])
        == 1
    )
    assert main(["export", "rekordbox", str(tmp_path / "x.xml"), "--playlists", "bogus"]) == 1


# ---------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("dsp-serve")
    with isolated_dirs(base):
        lib = base / "lib"
        lib.mkdir()
        for i, (bpm, tonic, mode) in enumerate(
            [(120, 9, "minor"), (124, 4, "minor"), (90, 0, "major"), (128, 9, "minor")]
        ):
            encode(lib / f"s{i}.flac", song(bpm, tonic, mode, seconds=14, seed=20 + i), 44100)
        ra = RunningAgent(config([str(lib)], str(base / "db.sqlite"))).start()
        try:
            ra.idle(240)
            yield ra, lib
        finally:
            ra.stop()


@pytest.mark.slow
def test_http_descriptor_filters_and_detail(served):
    ra, lib = served
    st, body = ra.request("GET", "/tracks?min_bpm=115&max_bpm=130&key=Am")
    page = api.TrackPage.model_validate(body)
    assert st == 200 and {Path(t.path).name for t in page.items} == {"s0.flac", "s3.flac"}
    assert all(t.camelot == "8A" and 115 <= t.bpm <= 130 for t in page.items)
    tid = page.items[0].id
    st, body = ra.request("GET", f"/tracks/{tid}")
    d = api.TrackDetail.model_validate(body)
    assert (
        st == 200
        and d.descriptors["key"]["key"] == "Am"
        and d.descriptors["loudness"]["integrated_lufs"] < 0
    )
    assert any(k.startswith("nom:dsp_nomarr_1_tempo_1_") for k in d.tags) and d.tags_written
    st, body = ra.request(
        "POST", "/similar", {"track_id": tid, "filters": {"keys": ["8A", "9A"], "min_bpm": 100}}
    )
    assert st == 200 and all(h["camelot"] in ("8A", "9A") for h in body["items"])
    st, body = ra.request(
        "POST", "/playlists/radio", {"track_id": tid, "limit": 4, "harmonic": True}
    )
    pl = api.Playlist.model_validate(body)
    assert st == 200 and {Path(t.path).name for t in pl.items} <= {"s0.flac", "s1.flac", "s3.flac"}
    for bad in ("/tracks?key=H%23", "/tracks?min_bpm=abc", "/tracks?max_energy=3"):
        assert ra.request("GET", bad)[0] == 400
    st, body = ra.request("POST", "/similar", {"track_id": tid, "filters": {"keys": ["X9"]}})
    assert st == 400


# ---------------------------------------------------------------- host plugins


def test_navidrome_declares_descriptor_tags_and_builds_dj_playlists():
    from nomarr_navidrome import nsp, tagconfig

    keys = [
        api.TagKey(
            key="nom:onnx_musicnn_msd-1_msd50_1_happy",
            tracks=9,
            kind="score",
            prefix="nom:onnx_musicnn_msd-1_msd50_1_",
            label="happy",
        ),
        api.TagKey(
            key="nom:onnx_musicnn_msd-1_msd50_1_happy_high",
            tracks=3,
            kind="tier",
            prefix="nom:onnx_musicnn_msd-1_msd50_1_",
            label="happy",
            tier="high",
        ),
        api.TagKey(
            key="nom:dsp_nomarr_1_tempo_1_bpm",
            tracks=9,
            kind="descriptor",
            prefix="nom:dsp_nomarr_1_tempo_1_",
        ),
        api.TagKey(
            key="nom:dsp_nomarr_1_key_1_camelot",
            tracks=9,
            kind="descriptor",
            prefix="nom:dsp_nomarr_1_key_1_",
        ),
        api.TagKey(
            key="nom:dsp_nomarr_1_energy_1_energy",
            tracks=9,
            kind="descriptor",
            prefix="nom:dsp_nomarr_1_energy_1_",
        ),
    ]
    ts = tagconfig.build_tags(keys)
    assert ts.descriptor("camelot").type == "string" and ts.descriptor("bpm").type == "float"
    assert ts.labels() == ["happy"]  # descriptors are not mood/genre labels
    block = tagconfig.render(ts)
    assert "[Tags.nom_dsp_camelot]" in block and 'Type = "string"' in block
    pls = {p.slug: p for p in nsp.Catalogue(ts).build()}
    assert "bpm-125-135" in pls and pls["bpm-125-135"].doc["all"] == [
        {"gt": {"bpm": 125}},
        {"lt": {"bpm": 135}},
    ]
    assert pls["key-8a"].doc["all"] == [{"is": {"nom_dsp_camelot": "8A"}}]
    assert len([s for s in pls if s.startswith("key-")]) == 24


def test_beets_fills_typed_bpm_and_key_only_when_empty():
    from beetsplug.nomarr import NomarrPlugin

    class Item(dict):
        pass

    tags = {"nom:dsp_nomarr_1_tempo_1_bpm": "127.60", "nom:dsp_nomarr_1_key_1_key": "Am"}
    empty = Item()
    assert NomarrPlugin._standard_fields(empty, tags)
    assert empty == {"bpm": 128, "initial_key": "Am"}
    mine = Item(bpm=90, initial_key="C")
    assert not NomarrPlugin._standard_fields(mine, tags)
    assert mine == {"bpm": 90, "initial_key": "C"}
