"""CLAP through the agent: text search and zero-shot moods over HTTP, with generated CLAP towers of
the real signatures installed where ``nomarr models pull`` would put them."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from nomarr.models.clap import DEFAULT_MOODS
from nomarr.models.registry import Registry
from nomarr_client import models as api

from tests import fixture_models as fx
from tests.conftest import REPO, encode, music_like
from tests.server_harness import RunningAgent, config, isolated_dirs

pytest.importorskip("tokenizers")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clap_agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("clap-serve")
    with isolated_dirs(base):
        data = base / "xdg_data_home" / "nomarr"
        shipped = Registry()
        a, t = shipped.get("clap-htsat-unfused-audio"), shipped.get("clap-htsat-unfused-text")
        for m in (a, t):
            (data / "models" / m.id).mkdir(parents=True)
        fx.clap_audio(data / "models" / a.id / a.model_file.name)
        fx.clap_text(data / "models" / t.id / t.model_file.name)
        tok = next(f for f in t.files if f.role == "tokenizer")
        fx.word_tokenizer(
            data / "models" / t.id / tok.name,
            "This is a song . music spooky".split() + list(DEFAULT_MOODS),
        )
        (data / "manifests").mkdir(parents=True)
        for m in (a, t):  # the shipped manifests pin the real files' hashes: re-pin to the fixtures
            text = (REPO / "models" / "manifests" / f"{m.id}.toml").read_text()
            for f in m.files:
                if f.sha256:
                    text = text.replace(
                        f.sha256,
                        hashlib.sha256((data / "models" / m.id / f.name).read_bytes()).hexdigest(),
                    )
            (data / "manifests" / f"{m.id}.toml").write_text(text)
        lib = base / "lib"
        lib.mkdir()
        for i in range(4):
            encode(lib / f"c{i}.flac", music_like(12.0, sr=48000, seed=300 + i), 48000)
        ra = RunningAgent(
            config(
                [str(lib)],
                str(base / "db.sqlite"),
                models=["msd-musicnn-1", "clap-htsat-unfused-audio"],
            )
        ).start()
        try:
            ra.idle(180)
            yield ra, lib
        finally:
            ra.stop()


def test_text_search_ranks_by_the_text_tower(clap_agent: Any) -> None:
    ra, lib = clap_agent
    st, body = ra.request("GET", "/moods")
    moods = api.MoodList.model_validate(body)
    assert st == 200 and moods.zero_shot
    by_label = {m.label: m.models for m in moods.items}
    assert "clap-htsat-unfused-audio" in by_label["happy"] and "msd-musicnn-1" in by_label["rock"]
    st, body = ra.request("POST", "/playlists/text", {"text": "This is a happy song .", "limit": 4})
    assert st == 200, body
    pl = api.Playlist.model_validate(body)
    assert pl.kind == "text" and len(pl.items) == 4
    # the order is the text vector's cosine ranking of the stored CLAP vectors: check it directly
    from nomarr.models.clap import ClapText
    from nomarr.store import Store

    reg = ra.agent.registry  # the test's own XDG dirs differ from the module-scoped agent's
    vec = ClapText(reg, reg.get("clap-htsat-unfused-text")).embed(["This is a happy song ."])[0]
    st_ = Store(ra.agent.db_path, readonly=True)
    sims = {
        t.id: float(st_.embedding("clap-htsat-unfused-audio", t.recording_id) @ vec)
        for t in st_.tracks()
    }
    assert [h.id for h in pl.items] == sorted(sims, key=lambda k: -sims[k])
    st_.close()


def test_unscored_mood_is_answered_zero_shot(clap_agent: Any) -> None:
    ra, _ = clap_agent
    st, body = ra.request("POST", "/playlists/mood", {"label": "spooky", "limit": 3})
    assert st == 200, body
    pl = api.Playlist.model_validate(body)
    assert pl.zero_shot and len(pl.items) == 3
    st, body = ra.request("POST", "/playlists/mood", {"label": "happy", "limit": 3})
    assert st == 200 and not body["zero_shot"]  # scored labels use the stored scores
    st, body = ra.request("POST", "/playlists/mood", {"label": "spooky", "model": "msd-musicnn-1"})
    assert st == 422  # a named model that does not score it is not silently replaced
