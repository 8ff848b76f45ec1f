"""The provider against a real agent: mapping both ways, radio, rows, caching, and a dead agent."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from agent_proc import Agent, copy_clip
from conftest import FS, LAYOUT, SUBSONIC, Library, catalog, subsonic_id
from fakes import PKG, FakeMass, create_provider, load_provider
from music_assistant_models.enums import MediaType, ProviderFeature
from music_assistant_models.errors import SetupFailedError
from music_assistant_models.media_items import ItemMapping
from music_assistant_models.provider import ProviderManifest

import nomarr_ma
from nomarr_ma.constants import MOOD_LABELS, PRIORITY, ROW_RECENT

KNOWN = {rel for rel, _c, _m, _i, known in LAYOUT if known}


def fs_values(lib: Library, **extra: object) -> dict[str, object]:
    return {
        "agent_url": lib.agent.url,
        "agent_token": lib.agent.token,
        "media_provider": FS,
        **extra,
    }


def agent_similar(lib: Library, rel: str, limit: int = 50) -> list[str]:
    """The agent's own answer (raw HTTP), as relative paths: what the provider must translate."""
    st, body = lib.agent.request(
        "POST", "/similar", {"track_id": lib.agent_ids[rel], "limit": limit, "distinct": True}
    )
    assert st == 200, body
    # streamed recordings (test_listening.py streams one into this agent) have no path: MA maps
    # them by uri, and this catalog has none of them
    return [lib.rel_of(h["path"]) for h in body["items"] if h.get("kind", "file") == "file"]


# -- the package as MA loads it -------------------------------------------------------------------


async def test_manifest_strings_and_config_entries(library: Library, mass: FakeMass) -> None:
    manifest = await ProviderManifest.parse(str(PKG / "manifest.json"))
    assert manifest.type.value == "plugin" and manifest.domain == "nomarr"
    assert manifest.mdns_discovery == ["_nomarr._tcp.local."]
    assert (PKG / "icon.svg").read_text().lstrip().startswith("<svg")
    entries = await nomarr_ma.get_config_entries(mass)
    strings = json.loads((PKG / "strings.json").read_text())["config_entries"]
    assert {e.key for e in entries} <= set(strings), "every setting needs a label in strings.json"
    by_key = {e.key: e for e in entries}
    assert by_key["agent_token"].type.value == "secure_string"
    # the music-provider choices are MA's music providers, never the library aggregator
    assert {o.value for o in by_key["media_provider"].options} == {FS, SUBSONIC}
    assert by_key["media_provider"].default_value == FS  # the local files, when there are some
    assert by_key["status_label"].type.value == "label"


async def test_setup_checks_health_pins_agent_and_registers_commands(
    library: Library, mass: FakeMass
) -> None:
    prov = await load_provider(mass, fs_values(library, agent_library_root=""))
    assert prov.supported_features == {
        ProviderFeature.SIMILAR_TRACKS,
        ProviderFeature.RECOMMENDATIONS,
    }
    assert prov.priority == PRIORITY < 50  # ahead of the default, so radio asks us first
    assert prov.agent_url == library.agent.url
    # paired with this agent from now on (persisted through MA's config controller)
    assert mass.config.raw[("nomarr", "agent_id")] == library.agent.agent_id
    assert {"nomarr/status", "nomarr/similar", "nomarr/map"} <= set(mass.command_handlers)
    status = await mass.command_handlers["nomarr/status"]()
    assert status["reachable"] and status["tracks"] == len(LAYOUT)
    # the agent has one root, so it is the mapping root without being configured
    assert status["agent_root"] == str(library.agent_root)
    entries = await nomarr_ma.get_config_entries(mass, "nomarr")
    label = next(e for e in entries if e.key == "status_label").label
    assert label.startswith(f"Connected to {library.agent.url}")
    await prov.unload()
    assert "nomarr/status" not in mass.command_handlers


# -- mapping both ways ----------------------------------------------------------------------------


async def test_filesystem_local_similar_maps_paths_both_ways(
    library: Library, mass: FakeMass
) -> None:
    prov = await load_provider(mass, fs_values(library, agent_library_root=str(library.agent_root)))
    seed = mass.music.tracks.items[(FS, "a/one.ogg")]
    got = await prov.get_similar_tracks(seed, limit=3)
    expected = [r for r in agent_similar(library, "a/one.ogg") if r in KNOWN][:3]
    assert [t.item_id for t in got] == expected
    assert all(t.provider == FS for t in got) and "a/one.ogg" not in expected
    # a track the agent has but MA does not is dropped, not invented
    everything = await prov.get_similar_tracks(seed, limit=25)
    assert [t.item_id for t in everything] == [
        r for r in agent_similar(library, "a/one.ogg") if r in KNOWN
    ]
    assert "b/six.ogg" in agent_similar(library, "a/one.ogg") and "b/six.ogg" not in [
        t.item_id for t in everything
    ]
    # the library item (mappings to several providers) works as the seed too
    lib_seed = mass.music.tracks.items[("library", "1")]
    assert [t.item_id for t in await prov.get_similar_tracks(lib_seed, limit=3)] == expected
    mapped = await mass.command_handlers["nomarr/map"](item_id="b/five.ogg", provider=FS)
    assert mapped == {
        "uri": mass.music.tracks.items[(FS, "b/five.ogg")].uri,
        "agent_track_id": library.agent_ids["b/five.ogg"],
        "via": "path",
    }


async def test_opensubsonic_ids_map_through_mbid_and_isrc(library: Library, mass: FakeMass) -> None:
    prov = await load_provider(mass, fs_values(library, media_provider=SUBSONIC))
    for rel, via in (("a/one.ogg", "mbid"), ("b/four.ogg", "isrc")):
        mapped = await mass.command_handlers["nomarr/map"](
            item_id=subsonic_id(rel), provider=SUBSONIC
        )
        assert (mapped["agent_track_id"], mapped["via"]) == (library.agent_ids[rel], via)
    # no tags and no path on an opaque-id provider: nothing to go on
    nothing = await mass.command_handlers["nomarr/map"](
        item_id=subsonic_id("b/five.ogg"), provider=SUBSONIC
    )
    assert nothing["agent_track_id"] is None
    seed = mass.music.tracks.items[(SUBSONIC, subsonic_id("a/one.ogg"))]
    got = await prov.get_similar_tracks(seed, limit=10)
    # answers come back through the shared ids; files without any (five, six) cannot be mapped
    with_ids = {rel for rel, (m, i) in library.ids.items() if (m or i) and rel in KNOWN}
    expected = [subsonic_id(r) for r in agent_similar(library, "a/one.ogg") if r in with_ids]
    assert [t.item_id for t in got] == expected and len(expected) >= 2
    assert all(t.provider == SUBSONIC for t in got)


async def test_fingerprint_when_paths_do_not_line_up(library: Library, mass: FakeMass) -> None:
    if not Path("/usr/bin/fpcalc").exists() and not any(
        (Path(p) / "fpcalc").exists() for p in __import__("os").environ.get("PATH", "").split(":")
    ):
        pytest.skip("fpcalc (chromaprint) is not installed")
    # a wrong agent root: the path lookup misses, five.ogg has no tags, so only its sound is left
    prov = await load_provider(mass, fs_values(library, agent_library_root="/srv/elsewhere"))
    mapped = await mass.command_handlers["nomarr/map"](item_id="b/five.ogg", provider=FS)
    assert (mapped["agent_track_id"], mapped["via"]) == (
        library.agent_ids["b/five.ogg"],
        "fingerprint",
    )
    assert prov.agent_url == library.agent.url


# -- recommendations ------------------------------------------------------------------------------


def played(mass: FakeMass, *rels: str) -> None:
    mass.music.played = [
        ItemMapping(item_id=r, provider=FS, name=r, media_type=MediaType.TRACK) for r in rels
    ]


async def test_rows_more_like_recent_and_moods(library: Library, mass: FakeMass) -> None:
    played(mass, "a/one.ogg", "b/four.ogg")
    prov = await load_provider(mass, fs_values(library, row_size=6))
    await asyncio.gather(*mass.tasks)  # the mood refresh scheduled at load
    rows = await prov.get_recommendations()
    assert rows[0].item_id == ROW_RECENT and rows[0].name == "More like what you just played"
    assert all(r.provider == "nomarr" and len(r.items) == 0 for r in rows)  # descriptors only

    # "more like": neighbours of both seeds, interleaved, never the seeds themselves
    items = await prov.get_recommendation_items(ROW_RECENT)
    ids = [t.item_id for t in items]
    near = [agent_similar(library, s, 10) for s in ("a/one.ogg", "b/four.ogg")]
    interleaved: list[str] = []
    for pair in zip(*near, strict=False):
        for r in pair:
            if r not in interleaved and r not in ("a/one.ogg", "b/four.ogg"):
                interleaved.append(r)
    assert ids == [r for r in interleaved if r in KNOWN][:6] and ids

    # the strong moods: mood labels at tier high/medium in what was played (computed here from the
    # agent's raw answers), strongest first, one row each
    weights: Counter[str] = Counter()
    for rel in ("a/one.ogg", "b/four.ogg"):
        _, detail = library.agent.request("GET", f"/tracks/{library.agent_ids[rel]}")
        for a in detail["analyses"]:
            for label, tier in a["tiers"].items():
                if label in MOOD_LABELS:
                    weights[label] += {"high": 2, "medium": 1}.get(tier, 0)
    strong = sorted((lbl for lbl, w in weights.items() if w >= 2), key=lambda x: (-weights[x], x))[
        :3
    ]
    assert [r.item_id for r in rows[1:]] == [f"mood_{x}" for x in strong]

    # a mood row is the agent's mood playlist, mapped
    label = strong[0] if strong else "happy"
    mood_items = await prov.get_recommendation_items(f"mood_{label}")
    _, pl = library.agent.request("POST", "/playlists/mood", {"label": label, "limit": 12})
    assert [t.item_id for t in mood_items] == [
        r
        for r in (library.rel_of(h["path"]) for h in pl["items"] if h.get("kind", "file") == "file")
        if r in KNOWN
    ][:6]

    # cached: the second ask is answered from MA's cache without the agent
    hits = mass.cache.hits
    again = await prov.get_recommendation_items(ROW_RECENT)
    assert [t.item_id for t in again] == ids and mass.cache.hits == hits + 1
    assert await prov.get_recommendation_items("no_such_row") == []

    # the older single-call API: the same rows, with their items
    old = await prov.recommendations()
    assert [f.item_id for f in old][0] == ROW_RECENT and [t.item_id for t in old[0].items] == ids


async def test_rows_can_be_switched_off(library: Library, mass: FakeMass) -> None:
    prov = await load_provider(mass, fs_values(library, rows=["more_like_recent"]))
    assert [r.item_id for r in await prov.get_recommendations()] == [ROW_RECENT]
    assert await prov.get_recommendation_items("mood_happy") == []  # a disabled row has no items
    played(mass)  # nothing played yet: the row is empty rather than wrong
    assert await prov.get_recommendation_items(ROW_RECENT) == []
    played(mass, "b/four.ogg")  # and the emptiness was not cached: the first play fills it
    got = [t.item_id for t in await prov.get_recommendation_items(ROW_RECENT)]
    assert got and "b/four.ogg" not in got and set(got) <= KNOWN


# -- when things go wrong -------------------------------------------------------------------------


async def test_setup_fails_helpfully(library: Library, mass: FakeMass) -> None:
    with pytest.raises(SetupFailedError, match=r"127\.0\.0\.1:9/api/v1.*nomarr serve"):
        await load_provider(mass, fs_values(library, agent_url="http://127.0.0.1:9"))
    with pytest.raises(SetupFailedError, match="refused the token.*token"):
        await load_provider(mass, fs_values(library, agent_token="not-the-token"))
    with pytest.raises(SetupFailedError, match="not an http"):
        await load_provider(mass, fs_values(library, agent_url="nas:8765"))
    with pytest.raises(SetupFailedError, match="not the paired agent"):
        await load_provider(
            mass, fs_values(library, agent_id="00000000-0000-0000-0000-000000000000")
        )
    with pytest.raises(SetupFailedError, match="Music provider"):
        await load_provider(mass, fs_values(library, media_provider=""))


@pytest.mark.slow
async def test_agent_going_down_keeps_ma_running(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "music"
    for rel, clip in (
        ("a/one.ogg", "sh01.ogg"),
        ("a/two.ogg", "sh02.ogg"),
        ("b/four.ogg", "sh04.ogg"),
    ):
        copy_clip(clip, root / rel)
    agent = Agent(tmp_path / "agent", [root]).wait_ready()
    mass = FakeMass()
    try:
        agent.wait_idle()
        lib = Library(
            agent,
            root,
            root,
            {r: (None, None) for r in ("a/one.ogg", "a/two.ogg", "b/four.ogg")},
            {},
        )
        catalog(mass, library)  # MA's catalog layout; this agent has three of its files
        mass.providers[FS].base_path = str(root)
        played(mass, "a/one.ogg")
        prov = await load_provider(mass, fs_values(lib))
        seed = mass.music.tracks.items[(FS, "a/one.ogg")]
        before = [t.item_id for t in await prov.get_similar_tracks(seed, 5)]
        assert set(before) == {"a/two.ogg", "b/four.ogg"}
        row = [t.item_id for t in await prov.get_recommendation_items(ROW_RECENT)]
        assert row
        agent.stop()
        await mass.cache.clear()  # force a live fetch
        started = time.monotonic()
        assert await prov.get_similar_tracks(seed, 5) == []  # radio falls through to other sources
        assert [
            t.item_id for t in await prov.get_recommendation_items(ROW_RECENT)
        ] == row  # last good copy
        assert time.monotonic() - started < 20
        status = await mass.command_handlers["nomarr/status"]()
        assert status["reachable"] is False and "unavailable" in status["last_error"]
        entries = await nomarr_ma.get_config_entries(mass, "nomarr")
        assert "last error" in next(e for e in entries if e.key == "status_label").label
    finally:
        agent.stop()
        for prov in list(mass.providers.values()):
            if hasattr(prov, "unload"):
                await prov.unload()
        await mass.close()


async def test_provider_is_created_without_network(library: Library, mass: FakeMass) -> None:
    """setup() only builds the object; the first traffic is handle_async_init's health check."""
    prov = await create_provider(mass, fs_values(library, agent_url="http://127.0.0.1:9"))
    assert (
        prov.agent_url is None
        and await prov.get_similar_tracks(mass.music.tracks.items[(FS, "a/one.ogg")]) == []
    )
