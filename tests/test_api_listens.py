"""Listens, taste and privacy over the real HTTP API: a ListenBrainz export uploaded (and replayed),
the ListenBrainz API synced through a local stand-in, play counters and favourites, the taste,
recommendation and trend answers, and one user's data exported and deleted in one call."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from nomarr.store import Store

from tests.lbstandin import StandIn, export_zip, lb_listen
from tests.server_harness import RunningAgent, config, isolated_dirs
from tests.synth_taste import build_library

DAY = 86400


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningAgent, StandIn]]:
    base = tmp_path_factory.mktemp("api-listens")
    db = base / "db.sqlite"
    with Store(db) as st:
        build_library(st, 3000, kinds=6)
        with st.tx() as d:
            d.execute("UPDATE tracks SET artist = 'Real Artist', title = 'Real Song' WHERE id = 7")
            d.execute(
                "UPDATE tracks SET mb_recording = 'aaaaaaaa-0000-0000-0000-000000000001' WHERE id = 8"
            )
    now = int(time.time())
    lb_listens = [
        lb_listen(now - 1000 * i, "Real Artist", "Real Song", f"api{i}") for i in range(30)
    ]
    srv = StandIn(lb_listens, token="lb-token", limit=5, window=0.3)
    with isolated_dirs(base):
        a = RunningAgent(config([], str(db), scan_on_start=False, listenbrainz_url=srv.url)).start()
        try:
            yield a, srv
        finally:
            a.stop()
            srv.stop()


def test_export_upload_is_idempotent(served: tuple[RunningAgent, StandIn]) -> None:
    a, _ = served
    t0 = int(time.time()) - 50 * DAY
    listens = [lb_listen(t0 + 3600 * i, "Real Artist", "Real Song", f"m{i}") for i in range(5)]
    listens.append(
        lb_listen(t0, "X", "Y", "mx", recording_mbid="aaaaaaaa-0000-0000-0000-000000000001")
    )
    listens.append(lb_listen(t0, "Unknown", "Nothing", "mz"))
    data = export_zip(
        listens, [{"recording_msid": "m1", "recording_mbid": None, "score": 1, "created": t0}]
    )
    hdr = {"Content-Type": "application/octet-stream"}
    st, res = a.request("POST", "/users/alice/listens/import", raw=data, headers=hdr)
    assert st == 200, res
    assert (res["added"], res["matched"], res["unmatched"], res["favourites"]) == (7, 6, 1, 1)
    assert res["by_rule"] == {"artist_title": 5, "mbid": 1} and res["username"] == "alice_lb"
    st, again = a.request("POST", "/users/alice/listens/import", raw=data, headers=hdr)
    assert (again["added"], again["duplicates"]) == (0, 7)
    st, bad = a.request("POST", "/users/alice/listens/import", raw=b"not an export", headers=hdr)
    assert st == 400 and "ListenBrainz export" in bad["error"]["message"]
    st, page = a.request("GET", "/users/alice/listens?limit=3&unmatched=true")
    assert st == 200 and page["total"] == 1 and page["items"][0]["title"] == "Nothing"
    st, page = a.request("GET", "/users/alice/listens?limit=2")
    assert page["total"] == 7 and page["next_offset"] == 2
    assert page["items"][0]["track"]["id"] in (7, 8)


def test_listenbrainz_sync_through_the_agent(served: tuple[RunningAgent, StandIn]) -> None:
    a, srv = served
    st, res = a.request(
        "POST",
        "/users/bob/listenbrainz/sync",
        {"lb_user": "bob_lb", "token": "lb-token", "remember": True},
    )
    assert st == 200, res
    assert res["added"] == 30 and res["matched"] == 30 and res["complete"]
    assert res["cursor"] == max(x["listened_at"] for x in srv.listens)
    # again, with what the agent remembered: nothing new
    st, res = a.request("POST", "/users/bob/listenbrainz/sync")
    assert st == 200 and res["added"] == 0
    st, res = a.request(
        "POST", "/users/carol/listenbrainz/sync", {"lb_user": "c", "token": "wrong"}
    )
    assert st == 502 and "token" in res["error"]["message"]
    st, res = a.request("POST", "/users/dave/listenbrainz/sync")
    assert st == 400  # nothing remembered for dave
    st, exp = a.request("GET", "/users/bob/export")
    assert st == 200 and "lb-token" not in json.dumps(exp)


def test_counters_favourites_taste_trends(served: tuple[RunningAgent, StandIn]) -> None:
    a, _ = served
    now = time.time()
    items = [
        {
            "item": f"nd{i}",
            "plays": 3,
            "last_played": now - DAY * (i % 20),
            "track_id": i,
            "starred": i < 40,
        }
        for i in range(
            1, 200, 6
        )  # kind i % 6 == 1 (see tests/synth: kinds are shuffled; any set works)
    ]
    st, res = a.request(
        "POST", "/users/erin/counters", {"source": "subsonic:nd", "items": items, "complete": True}
    )
    assert st == 200, res
    assert res["added"] == 3 * len(items) and res["favourites"] == 7
    st, res = a.request(
        "POST", "/users/erin/counters", {"source": "subsonic:nd", "items": items, "complete": True}
    )
    assert res["added"] == 0
    listens = [{"ts": now - 3600 * i, "track_id": 100 + i, "outcome": "skipped"} for i in range(20)]
    st, res = a.request("POST", "/users/erin/listens", {"source": "ma", "listens": listens})
    assert st == 200 and res["added"] == 20
    st, fav = a.request(
        "POST",
        "/users/erin/favourites",
        {"source": "lb", "items": [{"key": "k", "track_id": 5, "score": -1}]},
    )
    assert st == 200 and fav["matched"] == 1
    st, taste = a.request("GET", "/users/erin/taste")
    assert st == 200, taste
    assert taste["liked"] >= 30 and taste["disliked"] >= 15 and taste["k"] >= 1
    assert taste["centres"][0]["top"] and taste["half_life_days"] == 90
    for mode in ("for_you", "rediscover", "discovery"):
        st, recs = a.request(
            "POST",
            "/users/erin/recommendations",
            {"mode": mode, "limit": 10, "recent_days": 0, "since_days": 0},
        )
        assert st == 200, recs
        assert recs["items"] and all(r["reason"] for r in recs["items"])
    st, tr = a.request("GET", "/users/erin/trends?weeks=8")
    assert st == 200 and len(tr["weeks"]) == 8 and tr["method"]["week_start"] == "Monday 00:00 UTC"
    # unknown users, bad names
    assert a.request("GET", "/users/nobody/taste")[0] == 404
    assert a.request("POST", "/users/nobody/recommendations", {})[0] == 404
    assert a.request("GET", "/users/%01bad/trends")[0] == 400
    assert a.request("POST", "/users/erin/recommendations", {"mode": "x"})[0] == 400


def test_export_then_delete_in_one_call(served: tuple[RunningAgent, StandIn]) -> None:
    a, _ = served
    st, res = a.request(
        "POST",
        "/users/frank/listens",
        {"listens": [{"ts": 1e9, "track_id": 3}, {"ts": 1e9 + 5, "title": "?"}]},
    )
    assert st == 200 and res["added"] == 2
    a.request("GET", "/users/frank/taste")  # a stored profile is the user's data too
    st, exp = a.request("GET", "/users/frank/export")
    assert st == 200 and len(exp["listens"]) == 2 and exp["taste_profiles"]
    st, gone = a.request("DELETE", "/users/frank")
    assert st == 200 and gone["deleted"]["listens"] == 2 and gone["deleted"]["taste_profiles"] == 1
    assert a.request("GET", "/users/frank/export")[0] == 404
    assert "frank" not in [u["user"] for u in a.request("GET", "/users")[1]["items"]]
    assert a.request("DELETE", "/users/frank")[0] == 404


def test_listen_batches_are_validated(served: tuple[RunningAgent, StandIn]) -> None:
    a, _ = served
    bad: list[Any] = [
        {"listens": []},
        {"listens": [{"ts": -1}]},
        {"listens": [{"ts": 1e9, "outcome": "loved"}]},
        {"listens": [{"ts": 1e9, "bogus": 1}]},
        {"source": "", "listens": [{"ts": 1e9}]},
    ]
    for body in bad:
        st, err = a.request("POST", "/users/gina/listens", body)
        assert st == 400, (body, err)
    big = {"listens": [{"ts": 1e9 + i, "track_id": 1 + i % 50} for i in range(5000)]}
    st, res = a.request("POST", "/users/gina/listens", big)
    assert st == 200 and res["added"] == 5000


def test_the_shared_client(served: tuple[RunningAgent, StandIn]) -> None:
    """The plugins' client (nomarr_client) speaks every listening call."""
    from nomarr_client import BadRequest, NotFound, SyncNomarrClient

    a, _ = served
    now = time.time()
    with SyncNomarrClient(a.url, a.token) as c:
        res = c.add_listens(
            "hana", [{"ts": now - 60 * i, "track_id": 10 + i} for i in range(30)], source="cl"
        )
        assert res.added == 30
        assert c.add_listens("hana", [{"ts": now - 60, "track_id": 11}], source="cl").added == 0
        assert c.add_listens("hana", [{"ts": now + 5, "track_id": 10}], source="cl").added == 1
        assert c.listens("hana", limit=5).total == 31
        assert c.taste("hana").liked == 30
        recs = c.recommendations("hana", "discovery", 5, max_per_artist=1)
        assert len(recs.items) == 5 and recs.items[0].because is not None
        assert len(c.trends("hana", weeks=4).weeks) == 4
        counters = c.post_counters(
            "hana", "beets", [{"item": "/a.flac", "plays": 2, "track_id": 50}]
        )
        assert counters.added == 2
        fav = c.post_favourites("hana", "nd", [{"key": "x", "track_id": 51}])
        assert fav.matched == 1
        export = export_zip([lb_listen(int(now) - 10, "Real Artist", "Real Song", "cl1")], [])
        assert c.import_listenbrainz("hana", export).added == 1
        assert c.sync_listenbrainz("hana", lb_user="x", token="lb-token").complete
        assert "hana" in {u.user for u in c.users().items}
        s = c.ingest_start({"encoding": "s16le", "sample_rate": 8000, "channels": 1})
        pcm = bytes(1600)
        c.ingest_chunk(s.id, 0, pcm)
        again = c.ingest_chunk(s.id, 0, pcm)  # a retry of the same chunk is not kept twice
        assert again.received_bytes == 1600 and again.next_seq == 1
        assert c.ingest_abort(s.id).state == "aborted"
        assert c.lookup_recording(provider_id="nothing://here").items == []
        assert c.export_user("hana").listens
        assert c.delete_user("hana").deleted["listens"] == 31 + 2 + 1 + 30  # + the sync
        with pytest.raises(NotFound):
            c.export_user("hana")
        with pytest.raises(BadRequest):  # refused before sending
            c.recommendations("hana", "sideways")
        with pytest.raises(BadRequest):
            c.ingest_chunk("not/a/session", 0, b"")
