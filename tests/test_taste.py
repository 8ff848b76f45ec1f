"""Taste profiles, recommendations and trends against listening histories with planted tastes:
synthetic libraries at scale (kinds of music as clumps of musicnn-like vectors) and the real
corpus scanned with the real musicnn."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from nomarr.listens.match import Matcher
from nomarr.listens.record import ListenIn, record_listens
from nomarr.store import Store
from nomarr.taste.recommend import Taste, TasteError
from nomarr.taste.trends import WEEK_S, trends, week_of

from tests.synth_taste import Library, build_library, history

DAY = 86400.0
NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Library]]:
    st = Store(tmp_path_factory.mktemp("taste") / "lib.db")
    library = build_library(st, 20000, kinds=8)
    yield st, library
    st.close()


def kinds_of(library: Library, recs: list[object]) -> np.ndarray:
    return np.asarray([int(library.kind[r.track.recording_id - 1]) for r in recs])  # type: ignore[attr-defined]


def add(st: Store, user: str, listens: list[object]) -> None:
    st.delete_user(user)
    s = record_listens(st, Matcher(), user, listens)  # type: ignore[arg-type]
    assert s.unmatched == 0


def test_for_you_favours_the_planted_kind_and_skips_push_the_other_down(
    lib: tuple[Store, Library],
) -> None:
    st, library = lib
    start = NOW - 180 * DAY
    add(
        st, "plays0-skips3", history(library, plays={0: 400}, skips={3: 200}, start=start, days=180)
    )
    add(st, "plays0", history(library, plays={0: 400}, start=start, days=180))
    taste = Taste()
    for user in ("plays0-skips3", "plays0"):
        recs = taste.recommend(st, user, "for_you", 50, now=NOW)
        k = kinds_of(library, recs)
        precision = float((k == 0).mean())
        # a random pick is 1/8 of kind 0; the planted taste must be far above that
        assert precision >= 0.9, (user, np.bincount(k, minlength=8))
        assert precision >= 5 * (1 / 8)
        assert all(r.reason.startswith("because you played") for r in recs)
        assert all(r.because is not None for r in recs)
    # skips: the skipped kind sinks in the ranking of the whole library
    rank_pct = {}
    for user in ("plays0-skips3", "plays0"):
        p = taste.profile(st, user)
        s = taste._scored(st, p)
        order = np.argsort(np.argsort(-s.final))
        rows = s.space.rows(library.of_kind(3))
        rank_pct[user] = float(np.median(order[rows])) / s.final.size
    assert rank_pct["plays0-skips3"] > rank_pct["plays0"] + 0.3, rank_pct
    p = taste.profile(st, "plays0-skips3")
    assert len(p.negatives) >= 1 and p.summary()["disliked"] > 100
    # what the listener skips is never recommended to them
    skipped = {int(r) for r in p.evidence.recs[p.evidence.net < 0]}
    recs = taste.recommend(st, "plays0-skips3", "for_you", 200, now=NOW)
    assert not skipped & {r.track.recording_id for r in recs}


def test_mixed_taste_gets_two_centres_in_proportion(lib: tuple[Store, Library]) -> None:
    st, library = lib
    start = NOW - 120 * DAY
    add(st, "mixed", history(library, plays={0: 300, 5: 150}, start=start, days=120))
    add(st, "single", history(library, plays={2: 450}, start=start, days=120))
    taste = Taste()
    mixed = taste.profile(st, "mixed")
    assert len(mixed.centres) == 2, mixed.silhouettes
    assert mixed.centres[0].share == pytest.approx(2 / 3, abs=0.08)
    assert len(taste.profile(st, "single").centres) == 1
    recs = taste.recommend(st, "mixed", "for_you", 30, now=NOW)
    counts = np.bincount(kinds_of(library, recs), minlength=8)
    assert counts[0] + counts[5] == 30
    assert counts[0] == pytest.approx(20, abs=2) and counts[5] == pytest.approx(10, abs=2)
    # interleaved, not one block after the other
    firsts = kinds_of(library, recs[:6])
    assert set(firsts) == {0, 5}


def test_modes_for_you_rediscover_discovery(lib: tuple[Store, Library]) -> None:
    st, library = lib
    rng = np.random.default_rng(5)
    old_favs = rng.choice(library.of_kind(1), 10, replace=False)
    recent = rng.choice(library.of_kind(1), 10, replace=False)
    listens = [
        ListenIn(
            ts=NOW - 300 * DAY + i,
            source="t",
            outcome="completed",
            ids={"track_id": int(r)},
            dedup=f"o{r}{i}",
        )
        for r in old_favs
        for i in range(4)
    ]
    listens += [
        ListenIn(
            ts=NOW - 5 * DAY + i,
            source="t",
            outcome="completed",
            ids={"track_id": int(r)},
            dedup=f"n{r}",
        )
        for i, r in enumerate(recent)
    ]
    add(st, "modes", listens)
    taste = Taste()
    played = {int(r) for r in np.concatenate([old_favs, recent])}
    fy = taste.recommend(st, "modes", "for_you", 40, now=NOW)
    ids = {r.track.recording_id for r in fy}
    assert not ids & {int(r) for r in recent}  # played in the last 30 days
    assert (kinds_of(library, fy) == 1).mean() >= 0.9
    red = taste.recommend(st, "modes", "rediscover", 20, now=NOW)
    assert {r.track.recording_id for r in red} == {int(r) for r in old_favs}
    assert all(r.reason.startswith("you played it 4 times, last on") for r in red)
    disc = taste.recommend(st, "modes", "discovery", 40, now=NOW)
    assert not {r.track.recording_id for r in disc} & played
    assert (kinds_of(library, disc) == 1).mean() >= 0.9
    with pytest.raises(TasteError):
        taste.recommend(st, "modes", "nonsense", 5)


def test_artist_cap_and_favourites(lib: tuple[Store, Library]) -> None:
    st, library = lib
    add(st, "capped", history(library, plays={4: 200}, start=NOW - 60 * DAY, days=60))
    taste = Taste()
    recs = taste.recommend(st, "capped", "for_you", 40, max_per_artist=2, now=NOW)
    artists = [r.track.artist for r in recs]
    assert max(artists.count(a) for a in artists) <= 2
    # a favourite alone is evidence: a starred kind-6 track pulls kind 6 in
    from nomarr.listens.record import record_favourites

    st.delete_user("fan")
    stars = [(f"k{r}", 1, NOW - DAY, {"track_id": int(r)}) for r in library.of_kind(6)[:30]]
    record_favourites(st, Matcher(), "fan", "nd", stars, complete=True)
    recs = taste.recommend(st, "fan", "discovery", 20, now=NOW)
    assert (kinds_of(library, recs) == 6).mean() >= 0.9
    assert recs[0].reason.startswith("because you starred")


def test_trend_flags_a_change_within_a_week(lib: tuple[Store, Library]) -> None:
    st, library = lib
    start = NOW - 40 * WEEK_S
    change = start + 23.4 * WEEK_S  # mid-week, on purpose
    listens = history(library, plays={0: 23 * 40}, start=start, days=23.4 * 7)
    listens += history(library, plays={6: 17 * 40}, start=change, days=(40 - 23.4) * 7, seed=3)
    add(st, "changer", listens)
    add(st, "steady", history(library, plays={0: 40 * 40}, start=start, days=40 * 7, seed=4))
    taste = Taste()
    sp = taste.space(st, None)
    t = trends(st, sp, "changer", weeks=52, until=NOW)
    cps = t["change_points"]
    assert len(cps) == 1, cps
    first = week_of(NOW) - 51
    detected = first + cps[0]["index"]
    assert abs(int(detected) - int(week_of(change))) <= 1
    moved = {m["series"] for m in cps[0]["moved"]}
    assert any(s.startswith("mood:") for s in moved)
    assert trends(st, sp, "steady", weeks=52, until=NOW)["change_points"] == []
    # weekly aggregates: listens counted, shares sum to one, the map moves with the taste
    weeks = t["weeks"]
    assert sum(w["listens"] for w in weeks) == len(listens)
    busy = [w for w in weeks if w["listens"]]
    assert all(abs(sum(v for v in w["moods"].values() if v) - 1) < 1e-3 for w in busy)
    before = np.array([w["map"] for w in weeks[: cps[0]["index"] - 1] if w["map"]])
    after = np.array([w["map"] for w in weeks[cps[0]["index"] + 2 :] if w["map"]])
    spread = before.std(axis=0).max() + after.std(axis=0).max()
    assert np.linalg.norm(before.mean(axis=0) - after.mean(axis=0)) > 3 * spread
    assert set(t["momentum"]) >= {"diversity", "listens"}


# -- the real corpus, the real musicnn -----------------------------------------------------------

# two kinds of music by corpus.csv's style column: orchestral/acoustic/blues against
# electronic/chiptune (the first four of each are heard, the last two held out)
ACOUSTIC = ["sh16", "sh17", "sh18", "sh05", "sh09", "sh10"]
ELECTRONIC = ["sh03", "sh07", "sh11", "sh02", "sh19", "sh20"]


@pytest.fixture(scope="module")
def corpus_store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from nomarr.scan import Scanner, ScanOptions

    base = tmp_path_factory.mktemp("corpus-taste")
    libdir = base / "lib"
    libdir.mkdir()
    for name in ACOUSTIC + ELECTRONIC:
        shutil.copy(corpus / f"{name}.ogg", libdir)
    db = base / "lib.db"
    opts = ScanOptions(roots=[str(libdir)], db=str(db), write=False, profile="fast", workers=0)
    s = Scanner(opts, progress=False).run()
    assert s.analysed == len(ACOUSTIC + ELECTRONIC), s.failures
    st = Store(db)
    yield st
    st.close()


@pytest.mark.corpus
def test_real_embeddings_planted_listener(corpus_store: Store) -> None:
    """A listener who plays four orchestral/acoustic tracks and skips four electronic ones:
    among the tracks they never heard, the acoustic ones come first."""
    st = corpus_store
    by_name = {Path(t.path).stem: t for t in st.tracks()}
    liked, held_liked = ACOUSTIC[:4], ACOUSTIC[4:]
    skipped, held_skipped = ELECTRONIC[:4], ELECTRONIC[4:]
    listens = []
    for i, n in enumerate(liked):
        for k in range(3):
            listens.append(
                ListenIn(
                    ts=NOW - (i * 3 + k) * DAY,
                    source="t",
                    outcome="completed",
                    ids={"track_id": by_name[n].id},
                )
            )
    for i, n in enumerate(skipped):
        listens.append(
            ListenIn(
                ts=NOW - i * DAY - 7, source="t", outcome="skipped", ids={"track_id": by_name[n].id}
            )
        )
    add(st, "acoustic", listens)
    taste = Taste()
    recs = taste.recommend(st, "acoustic", "discovery", 4, max_per_artist=0, now=NOW)
    names = [Path(r.track.path).stem for r in recs]
    assert sorted(names) == sorted(held_liked + held_skipped)
    assert set(names[:2]) == set(held_liked), names
    p = taste.profile(st, "acoustic")
    assert p.negatives and p.summary()["liked"] == 4 and p.summary()["disliked"] == 4
    # without the skips the electronic tracks still come last, but nearer (skips push down)
    add(st, "acoustic-noskips", [x for x in listens if x.outcome == "completed"])
    s_with = taste._scored(st, p)
    s_without = taste._scored(st, taste.profile(st, "acoustic-noskips"))
    rows = s_with.space.rows(np.asarray([by_name[n].recording_id for n in held_skipped]))
    assert (s_with.final[rows] < s_without.final[rows]).all()


def test_no_listens_and_no_vectors(tmp_path: Path) -> None:
    st = Store(tmp_path / "empty.db")
    with pytest.raises(TasteError, match="no embeddings"):
        Taste().recommend(st, "nobody", "for_you", 5)
    build_library(st, 100, kinds=2)
    with pytest.raises(TasteError, match="no listens"):
        Taste().recommend(st, "nobody", "for_you", 5)
    record_listens(
        st,
        Matcher(),
        "skipper",
        [ListenIn(ts=time.time(), source="t", outcome="skipped", ids={"track_id": 1})],
    )
    with pytest.raises(TasteError, match="no liked"):
        Taste().recommend(st, "skipper", "for_you", 5)


def test_cached_listen_columns_follow_appends_and_rewrites(lib: tuple[Store, Library]) -> None:
    st, library = lib
    add(st, "cols", history(library, plays={1: 50}, start=NOW - 30 * DAY, days=30))
    taste = Taste()
    first = taste.arrays(st, "cols")
    # appended listens (some older than those read: an imported history) are read alone
    more = history(library, plays={2: 20}, start=NOW - 60 * DAY, days=60, seed=9)
    record_listens(st, Matcher(), "cols", more)  # type: ignore[arg-type]
    got = taste.arrays(st, "cols")
    full = st.listen_arrays("cols")
    assert got is not first and got.ts.size == 70
    for k in ("ts", "recording", "outcome", "estimated"):
        assert np.array_equal(getattr(got, k), getattr(full, k)), k
    # a rewrite (a favourite, a re-match, a delete) makes it read everything again
    from nomarr.listens.record import record_favourites

    record_favourites(st, Matcher(), "cols", "s", [("k", 1, NOW, {"track_id": 3})], complete=True)
    assert st.listen_state("cols")[1] > 0
    again = taste.arrays(st, "cols")
    assert again is not got and np.array_equal(again.ts, full.ts)
