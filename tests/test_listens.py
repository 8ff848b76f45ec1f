"""Listens in the store: the match rule, idempotent imports, ListenBrainz exports and the API
sync (against a local stand-in serving ListenBrainz's format), play counters, re-matching, and a
user's data exported and deleted in one call."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nomarr.listens import listenbrainz as lb
from nomarr.listens.counters import CounterItem, apply_counters
from nomarr.listens.match import Matcher, norm_title, rematch
from nomarr.listens.record import ListenIn, decide_outcome, record_listens
from nomarr.store import Store

from tests.lbstandin import StandIn, export_zip, lb_listen
from tests.synth_taste import build_library

MBID = "0f2c9a5e-1d7e-4a0b-9d3c-6b8f5e4a3c21"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(tmp_path / "lib.db")
    build_library(st, 40, kinds=4)
    with st.tx() as db:  # a few tracks with the identifiers real files carry
        db.execute("UPDATE tracks SET mb_recording = ? WHERE id = 1", (MBID,))
        db.execute("UPDATE tracks SET isrc = 'USRC17607839' WHERE id = 2")
        db.execute(
            "UPDATE tracks SET artist = 'Beyoncé', title = 'Halo', duration = 261.0 WHERE id = 3"
        )
        db.execute(
            "UPDATE tracks SET artist = 'Beyoncé', title = 'Halo (Live)', duration = 290.0 WHERE id = 4"
        )
        db.execute(  # the same title and artist as a live take of another length
            "UPDATE tracks SET artist = 'The Band', title = 'Song', duration = 200.0 WHERE id = 5"
        )
        db.execute(
            "UPDATE tracks SET artist = 'The Band', title = 'Song', duration = 320.0 WHERE id = 6"
        )
    yield st
    st.close()


def one(store: Store, **ids: Any) -> tuple[int | None, str]:
    m = Matcher().match(store, ids)
    return m.recording_id, m.rule


def test_match_rule_order_and_normalisation(store: Store) -> None:
    assert one(store, mb_recording=MBID.upper()) == (1, "mbid")
    assert one(store, isrc="us-rc1-76-07839") == (2, "isrc")
    # artist and title after normalisation; a featuring part and a remaster note drop out
    assert one(store, artist="BEYONCE", title="Halo (feat. Someone) - 2019 Remaster") == (
        3,
        "artist_title",
    )
    assert one(store, artist="Beyoncé & Jay-Z", title="halo!") == (3, "artist_title")
    # the MBID wins over the names (rule order)
    assert one(store, mb_recording=MBID, artist="Beyoncé", title="Halo") == (1, "mbid")
    # the duration picks between two recordings of one title, and rules out a third length
    assert one(store, artist="The Band", title="Song", duration=201.0) == (5, "artist_title")
    assert one(store, artist="The Band", title="Song", duration=318.0) == (6, "artist_title")
    assert one(store, artist="The Band", title="Song", duration=250.0) == (None, "none")
    # without a duration: the lowest recording id (documented tie-break)
    assert one(store, artist="The Band", title="Song") == (5, "artist_title")
    assert one(store, artist="Nobody", title="Nothing") == (None, "none")
    assert one(store, track_id=7) == (7, "track")
    assert one(store, track_id=99999) == (None, "none")
    assert norm_title("Yesterday - Remastered 2009") == "yesterday"


def test_outcome_rule() -> None:
    assert decide_outcome(None, 250, None) == "completed"  # 4 minutes
    assert decide_outcome(None, 100, 180) == "completed"  # half the track
    assert decide_outcome(None, 10, 180) == "skipped"
    assert decide_outcome(None, 60, 400) == "played"
    assert decide_outcome(None, None, None) == "played"
    assert decide_outcome("skipped", 500, 100) == "skipped"  # the source's word wins


def test_record_is_idempotent_and_keeps_unmatched(store: Store) -> None:
    m = Matcher()
    now = time.time()
    listens = [
        ListenIn(ts=now - 10, source="t", ids={"mb_recording": MBID}),
        ListenIn(ts=now - 20, source="t", ids={"artist": "Beyoncé", "title": "Halo"}),
        ListenIn(ts=now - 30, source="t", ids={"artist": "Nobody", "title": "Nothing"}),
        ListenIn(ts=now - 40, source="t", ids={"artist": "Nobody", "title": "Nothing"}, dedup="x1"),
        ListenIn(ts=float("nan"), source="t", ids={"title": "bad time"}),
    ]
    s = record_listens(store, m, "alice", listens)
    assert (s.received, s.added, s.matched, s.unmatched, s.invalid) == (5, 4, 2, 2, 1)
    assert dict(s.rules) == {"mbid": 1, "artist_title": 1}
    again = record_listens(store, m, "alice", listens[:4])
    assert (again.added, again.duplicates) == (0, 4)
    assert store.count_listens("alice") == 4
    assert store.count_listens("alice", unmatched=True) == 2
    # another user's identical listens are theirs
    assert record_listens(store, m, "bob", listens[:2]).added == 2


def test_rematch_when_the_library_gains_the_recording(store: Store) -> None:
    m = Matcher()
    s = record_listens(
        store, m, "alice", [ListenIn(ts=1e9, source="t", ids={"artist": "New", "title": "Tune"})]
    )
    assert s.unmatched == 1
    assert rematch(store, m) == 0
    with store.tx() as db:
        db.execute("UPDATE tracks SET artist = 'New', title = 'Tune' WHERE id = 9")
    assert rematch(store, m) == 1
    [row] = store.listens("alice")
    assert (row.recording_id, row.match) == (9, "artist_title")


def test_user_export_and_delete(store: Store) -> None:
    m = Matcher()
    record_listens(store, m, "alice", [ListenIn(ts=1e9, source="t", ids={"track_id": 3})])
    record_listens(store, m, "bob", [ListenIn(ts=1e9, source="t", ids={"track_id": 4})])
    with store.tx():
        store.set_source_state("alice", "listenbrainz", {"token": "secret", "cursor": 5.0})
    doc = store.export_user("alice")
    assert [x["recording_id"] for x in doc["listens"]] == [3]
    assert doc["sources"] == [
        {
            "source": "listenbrainz",
            "state": {"cursor": 5.0},
            "updated": doc["sources"][0]["updated"],
        }
    ]
    assert "secret" not in json.dumps(doc)
    with store.tx():
        deleted = store.delete_user("alice")
    assert deleted["listens"] == 1 and deleted["listen_sources"] == 1
    assert store.users() == ["bob"]
    assert store.export_user("alice")["listens"] == []


# -- play counters -------------------------------------------------------------------------------


def test_counters_rises_become_listens(store: Store) -> None:
    m = Matcher()
    t0 = 1_700_000_000.0
    first = [
        CounterItem("s1", plays=3, last_played=t0, ids={"track_id": 3}, starred=True),
        CounterItem("s2", plays=0, ids={"track_id": 4}),
    ]
    s = apply_counters(store, m, "alice", "subsonic:nd", first, complete=True)
    assert s.added == 3  # the history: three plays, at the last-played time, estimated
    rows = store.listens("alice")
    assert all(r.estimated and r.ts == t0 for r in rows)
    assert store.favourite_scores("alice") == [(3, 1, t0)]
    # the same report again adds nothing
    assert apply_counters(store, m, "alice", "subsonic:nd", first, complete=True).added == 0
    # two more plays of s1, one of s2; s1 unstarred
    t1 = t0 + 3600
    second = [
        CounterItem("s1", plays=5, last_played=t1, ids={"track_id": 3}, starred=False),
        CounterItem("s2", plays=1, last_played=t1 - 60, ids={"track_id": 4}),
    ]
    s = apply_counters(store, m, "alice", "subsonic:nd", second, complete=True)
    assert s.added == 3
    new = [r for r in store.listens("alice") if r.ts > t0]
    exact = sorted((r.recording_id, r.ts) for r in new if not r.estimated)
    assert exact == [(3, t1), (4, t1 - 60)]
    spread = [r.ts for r in new if r.estimated]
    assert len(spread) == 1 and t0 < spread[0] < t1  # between the two reports
    assert store.favourite_scores("alice") == []
    # a counter that went down (a server reset) moves the baseline only
    third = [CounterItem("s1", plays=1, last_played=t1 + 10, ids={"track_id": 3})]
    assert apply_counters(store, m, "alice", "subsonic:nd", third).added == 0
    assert store.counters("alice", "subsonic:nd")["s1"][0] == 1


def test_beets_skip_counts_become_skips(store: Store) -> None:
    m = Matcher()
    items = [CounterItem("/m/a.flac", plays=2, skips=0, last_played=1e9, ids={"track_id": 5})]
    apply_counters(store, m, "alice", "beets", items)
    items = [CounterItem("/m/a.flac", plays=2, skips=2, last_played=1e9 + 50, ids={"track_id": 5})]
    s = apply_counters(store, m, "alice", "beets", items)
    assert s.added == 2
    assert sorted(r.outcome for r in store.listens("alice")) == [
        "completed",
        "completed",
        "skipped",
        "skipped",
    ]


# -- ListenBrainz export -------------------------------------------------------------------------


def test_listenbrainz_export_zip(store: Store) -> None:
    listens = [
        lb_listen(1_700_000_000, "Beyoncé", "Halo", "m1", duration_ms=261000),
        lb_listen(1_702_000_000, "Someone", "Else", "m2", recording_mbid=MBID),
        lb_listen(1_705_000_000, "Nobody", "Nothing", "m3"),
    ]
    fb = [{"recording_msid": "m1", "recording_mbid": None, "score": 1, "created": 1_700_000_100}]
    data = export_zip(listens, fb) + b""
    exp = lb.parse_export(data)
    assert exp.username == "alice_lb" and len(exp.listens) == 3 and len(exp.feedback) == 1
    m = Matcher()
    s = record_listens(store, m, "alice", exp.listens)
    assert (s.added, s.matched, s.unmatched) == (3, 2, 1)
    assert dict(s.rules) == {"artist_title": 1, "mbid": 1}
    # the same file again: nothing new; the legacy JSON-array form of the same listens too
    assert record_listens(store, m, "alice", lb.parse_export(data).listens).added == 0
    legacy = json.dumps(listens).encode()
    assert record_listens(store, m, "alice", lb.parse_export(legacy).listens).duplicates == 3
    from nomarr.listens.record import record_favourites

    record_favourites(store, m, "alice", "listenbrainz", exp.feedback, complete=True)
    assert store.favourite_scores("alice") == [(3, 1, 1_700_000_100.0)]


def test_listenbrainz_export_bad_input() -> None:
    with pytest.raises(lb.ListenBrainzError):
        lb.parse_export(b"PK\x03\x04 not really a zip")
    with pytest.raises(lb.ListenBrainzError):
        lb.parse_export(b"hello")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("something.txt", "x")
    with pytest.raises(lb.ListenBrainzError, match="not a ListenBrainz export"):
        lb.parse_export(buf.getvalue())
    lines = b'{"listened_at": 1700000000, "track_metadata": {"artist_name": "a", "track_name": "b"}}\n{oops\n{"x": 1}\n'
    exp = lb.parse_export(lines)
    assert len(exp.listens) == 1 and exp.summary.invalid == 2


# -- ListenBrainz API (a local stand-in) ---------------------------------------------------------


def test_listenbrainz_sync_pages_rate_limit_and_cursor(store: Store) -> None:
    base = 1_700_000_000
    listens = [lb_listen(base + 60 * i, "Artist", f"Song {i}", f"msid{i}") for i in range(2500)]
    srv = StandIn(listens, token="tok", limit=2, window=0.4)
    try:
        m = Matcher()
        added = []

        async def run(cursor: float | None) -> lb.SyncResult:
            import aiohttp

            async with aiohttp.ClientSession() as session:

                async def fetch(url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
                    async with session.get(url, params=params, headers=headers) as r:
                        return r.status, dict(r.headers), await r.read()

                async def store_page(page: list[ListenIn]) -> Any:
                    s = record_listens(store, m, "alice", page)
                    added.append(s.added)
                    return s

                return await lb.sync(
                    fetch,
                    store_page,
                    api_url=srv.url,
                    lb_user="alice_lb",
                    token="tok",
                    cursor=cursor,
                )

        srv.force_429 = 1  # one 429 up front: retried after the window the headers name
        res = asyncio.run(run(None))
        # 1000 + 1000 + 500, then an empty page: a short page is not taken as the end (the API
        # searches a time range per call, so a gap in listening also gives short pages)
        assert res.complete and res.pages == 4 and sum(added) == 2500
        assert res.cursor == base + 60 * 2499
        assert res.waited_s > 0  # slept when X-RateLimit-Remaining reached 0
        assert [c[2] for c in srv.calls].count(429) == 1  # never ran into the limit itself
        # incremental: two new listens, fetched from newest back to the cursor only
        srv.listens += [
            lb_listen(base + 60 * 3000 + i, "Artist", f"New {i}", f"new{i}") for i in range(2)
        ]
        n_calls = len(srv.calls)
        res2 = asyncio.run(run(res.cursor))
        assert res2.summary.added == 2 and res2.pages == 1  # the page reached the cursor
        # one page was read (a 429 first is fine: the last sync used up the window)
        assert [c[2] for c in srv.calls[n_calls:]].count(200) == 1
        assert store.count_listens("alice") == 2502
    finally:
        srv.stop()


def test_listens_leave_the_vector_copies_current(tmp_path: Path) -> None:
    """Listens arrive per track played: storing one must not make the in-memory vector copies
    stale (a rebuild costs seconds at 100k tracks); an analysis must."""
    import numpy as np
    from nomarr.store import Analysis
    from nomarr.vindex import VectorIndex

    db = tmp_path / "v.db"
    st = Store(db)
    build_library(st, 50, kinds=2)
    vi = VectorIndex(str(db))
    before = vi._version()
    other = Store(db)  # another connection, as the API's writer is
    record_listens(other, Matcher(), "u", [ListenIn(ts=1e9, source="t", ids={"track_id": 1})])
    assert vi._version() == before
    with other.tx():
        a = Analysis(1, "m", "nom:x_", "p", "fast", [], 1, None, {"a": 0.5})
        other.put_analysis(1, a, np.ones(4, np.float32))
    assert vi._version() != before
    vi.close()
    other.close()
    st.close()
