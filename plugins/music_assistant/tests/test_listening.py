"""Listening through Music Assistant against a real agent: playback events become listens (one per
playback, skips as skips), the "For you" row comes from them, and the audio of a track the agent
has no file of is streamed to it in the background without holding up MA."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agent_proc import CORPUS, decode_pcm
from conftest import FS, Library
from fakes import FakeMass, FakeMusicProvider, load_provider
from music_assistant_models.enums import EventType, MediaType
from music_assistant_models.media_items import ProviderMapping, Track
from music_assistant_models.playback_progress_report import MediaItemPlaybackProgressReport

from music_assistant.helpers import audio as ma_audio
from nomarr_ma.constants import ROW_FOR_YOU


def values(lib: Library, listener: str, **extra: object) -> dict[str, object]:
    return {
        "agent_url": lib.agent.url,
        "agent_token": lib.agent.token,
        "media_provider": FS,
        "listener": listener,
        **extra,
    }


def report(track: Track, played: int, *, playing: bool, full: bool = False, **kw: Any) -> Any:
    return MediaItemPlaybackProgressReport(
        uri=track.uri,
        media_type=MediaType.TRACK,
        name=track.name,
        duration=90,
        seconds_played=played,
        fully_played=full,
        is_playing=playing,
        **kw,
    )


async def until(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_playback_events_become_listens_and_for_you(library: Library, mass: FakeMass) -> None:
    prov = await load_provider(mass, values(library, "ma-listener-1"))
    one = await mass.music.tracks.get("a/one.ogg", FS)
    four = await mass.music.tracks.get("b/four.ogg", FS)
    mbid_one = library.ids["a/one.ogg"][0]
    for t, mbid in ((one, mbid_one), (four, None)):
        mass.signal_event(
            EventType.MEDIA_ITEM_PLAYED, t.uri, report(t, 10, playing=True, mbid=mbid)
        )
        mass.signal_event(
            EventType.MEDIA_ITEM_PLAYED, t.uri, report(t, 88, playing=False, full=True, mbid=mbid)
        )
        mass.signal_event(
            EventType.MEDIA_ITEM_PLAYED, t.uri, report(t, 89, playing=False, full=True, mbid=mbid)
        )
    # a skip: five seconds of another track
    two = await mass.music.tracks.get("a/two.ogg", FS)
    mass.signal_event(EventType.MEDIA_ITEM_PLAYED, two.uri, report(two, 5, playing=False))
    await until(lambda: prov.listening.sent >= 5 and not prov.listening.pending)
    st, page = library.agent.request("GET", "/users/ma-listener-1/listens", query="limit=20")
    assert st == 200, page
    # two reports of one playback are one listen (same user, uri and start)
    assert page["total"] == 3, page
    by_uri = {x["provider_id"]: x for x in page["items"]}
    # matched through the mapping radio uses (here the path): the agent's own track id
    assert by_uri[one.uri]["outcome"] == "completed" and by_uri[one.uri]["match"] == "track"
    assert by_uri[two.uri]["track"]["path"].endswith("a/two.ogg")
    assert by_uri[two.uri]["outcome"] == "skipped"
    # the "For you" row appears once the agent holds matched listens, and is made of MA tracks
    await prov._check_for_you()
    rows = await prov.get_recommendations()
    assert rows[0].item_id == ROW_FOR_YOU and rows[0].name == "For you"
    items = await prov.get_recommendation_items(ROW_FOR_YOU)
    assert items and all(t.provider == FS for t in items)
    assert not {t.item_id for t in items} & {"a/one.ogg", "b/four.ogg"}  # just played


async def test_unknown_track_audio_is_streamed_in_the_background(
    library: Library, mass: FakeMass, tmp_path: Path
) -> None:
    mass.providers["spotify--x"] = FakeMusicProvider("spotify", "spotify--x", "Spotify")
    track = Track(
        item_id="4uLU6hMCjMI75M1A2tKUQC",
        provider="spotify--x",
        name="City blues",
        duration=90,
        provider_mappings={
            ProviderMapping(
                item_id="4uLU6hMCjMI75M1A2tKUQC",
                provider_domain="spotify",
                provider_instance="spotify--x",
            )
        },
    )
    mass.music.tracks.add(track)
    ma_audio.SOURCES[track.uri] = str(decode_pcm(CORPUS / "sh10.ogg", tmp_path / "sh10.s16"))
    ma_audio.DELAY_S = 0.001  # a provider that hands out audio slowly
    prov = await load_provider(mass, values(library, "ma-listener-2"))
    t0 = time.perf_counter()
    mass.signal_event(EventType.MEDIA_ITEM_PLAYED, track.uri, report(track, 3, playing=True))
    assert time.perf_counter() - t0 < 0.05  # the event handler only queues work
    await until(
        lambda: track.uri in prov.listening.ingested or prov.listening.ingest_errors, timeout=300
    )
    assert not prov.listening.ingest_errors, prov.listening.ingest_errors
    st, found = library.agent.request("GET", "/recordings/lookup", query=f"provider_id={track.uri}")
    assert st == 200 and [x["kind"] for x in found["items"]] == ["stream"], found
    assert found["items"][0]["title"] == "City blues"
    # a second playback does not stream it again
    reads = list(ma_audio.READS)
    mass.signal_event(EventType.MEDIA_ITEM_PLAYED, track.uri, report(track, 3, playing=True))
    mass.signal_event(
        EventType.MEDIA_ITEM_PLAYED, track.uri, report(track, 90, playing=False, full=True)
    )
    await until(lambda: prov.listening.sent >= 1)
    assert ma_audio.READS == reads
    # the listen of it is matched to the streamed recording by its uri
    st, page = library.agent.request("GET", "/users/ma-listener-2/listens")
    assert page["items"][0]["match"] == "provider"
    # a track whose audio cannot be read: the session is aborted, nothing is stored
    ghost = Track(
        item_id="nope",
        provider="spotify--x",
        name="Ghost",
        provider_mappings={
            ProviderMapping(
                item_id="nope", provider_domain="spotify", provider_instance="spotify--x"
            )
        },
    )
    mass.music.tracks.add(ghost)
    mass.signal_event(EventType.MEDIA_ITEM_PLAYED, ghost.uri, report(ghost, 3, playing=True))
    await until(lambda: any(ghost.uri in e for e in prov.listening.ingest_errors))
    st, found = library.agent.request("GET", "/recordings/lookup", query=f"provider_id={ghost.uri}")
    assert found["items"] == []
    ma_audio.DELAY_S = 0.0
