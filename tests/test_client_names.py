"""File names that are not UTF-8, end to end: agent → JSON → the plugins' client → back.

A Latin-1 name (``caf\\xe9.flac``) is legal on Linux and common in old collections. The agent
spells it as ``os.fsdecode`` does (a lone surrogate, ``\\udce9`` in JSON); the client must parse
such answers, send such paths back in bodies and in query strings (``%E9``), and the agent must
find the file by them (docs/api.md "Paths").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nomarr_client import SyncNomarrClient
from nomarr_client import models as api

from tests.conftest import encode, music_like
from tests.server_harness import RunningAgent, config, isolated_dirs

pytestmark = pytest.mark.slow

RAW = b"caf\xe9 \xff.flac"  # not UTF-8 twice over


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningAgent, Path, str]]:
    base = tmp_path_factory.mktemp("names")
    lib = base / "lib"
    (lib / os.fsdecode(b"d\xe9j\xe0")).mkdir(parents=True)
    for i in range(3):
        encode(lib / f"t{i}.flac", music_like(12.0, seed=500 + i), 44100)
    odd = os.path.join(os.fsencode(lib / os.fsdecode(b"d\xe9j\xe0")), RAW)
    os.rename(lib / "t2.flac", odd)
    with isolated_dirs(base):
        ra = RunningAgent(config([str(lib)], str(base / "db.sqlite"))).start()
        try:
            ra.idle(180)
            yield ra, lib, os.fsdecode(odd)
        finally:
            ra.stop()


def test_client_lists_finds_and_queries_by_a_name_that_is_not_utf8(served: Any) -> None:
    ra, lib, odd = served
    with SyncNomarrClient(ra.url, ra.token) as c:
        tracks = list(c.iter_tracks(page_size=2))
        assert len(tracks) == 3
        assert odd in {t.path for t in tracks}
        assert os.fsencode(odd) in {os.fsencode(t.path) for t in tracks}  # the bytes, intact
        for key in (odd, os.fsencode(odd), Path(odd)):  # text, bytes (beets), a Path
            found = c.lookup(path=key)
            assert [t.path for t in found.items] == [odd], key
        (t_odd,) = c.lookup(path=odd).items
        under = os.path.dirname(odd)
        assert [t.path for t in c.tracks(under=under).items] == [odd]
        assert [t.path for t in c.tracks(under=os.fsencode(under)).items] == [odd]
        detail = c.track(t_odd.id)
        assert detail.path == odd and detail.analyses
        # the odd track among the results, and as the seed given by path (JSON \udcXX in a body)
        hits = c.similar(path=str(lib / "t0.flac"), limit=5)
        assert odd in {h.path for h in hits.items}
        by_path = c.similar(path=odd, limit=2)
        assert by_path.seed is not None and by_path.seed.path == odd
        assert c.analyze(odd).path == odd
        assert c.radio(path=odd, limit=2).items[0].path == odd
        walk = c.path_playlist(odd, str(lib / "t0.flac"), limit=3)
        assert walk.items[0].path == odd
        assert c.scan([under]).queued == 1
    ra.idle()


def test_raw_http_spellings_of_the_name(served: Any) -> None:
    """What a non-Python client sends: JSON ``\\udce9`` escapes and ``%E9`` in a query."""
    ra, _, odd = served
    raw = os.fsencode(odd)
    st, body = ra.request("GET", "/tracks/lookup?path=" + _pct(raw))
    assert st == 200 and [os.fsencode(t["path"]) for t in body["items"]] == [raw]
    st, body = ra.request(
        "POST",
        "/similar",
        raw=b'{"path": "' + odd.encode("unicode_escape") + b'", "limit": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert st == 200, body
    assert os.fsencode(api.HitList.model_validate(body).seed.path) == raw  # type: ignore[union-attr]


def _pct(b: bytes) -> str:
    from urllib.parse import quote

    return quote(b, safe="/")
