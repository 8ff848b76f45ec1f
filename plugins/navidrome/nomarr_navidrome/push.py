"""Static playlists pushed into Navidrome over the Subsonic API, for what rules cannot express
(similarity, song paths, radio walks): the agent orders tracks, this maps them to Navidrome song ids
and creates or updates a playlist it owns.

Mapping: Navidrome has its own ids, so each agent track is looked up with ``search3`` on its title
and artist, and a candidate is only accepted when it is provably the same file (Navidrome reports
the real library-relative path, and the agent's path ends with it) or the same song (title, artist
and album agree and the duration is within 2 s: Subsonic durations are whole seconds). A track
with no such candidate is left out and reported, never replaced by a guess.

Ownership: a playlist is ours when the logged-in user owns it and its comment carries
:data:`OWN_MARK`. Ours are updated in place (and left alone when already identical, so a re-run
changes nothing); a same-named playlist that is not ours is never touched.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from nomarr_client import models as api

from .subsonic import Song, Subsonic

OWN_MARK = "[nomarr-navidrome]"
DURATION_TOLERANCE_S = 2.0
_WORD = re.compile(r"\w+", re.UNICODE)


class PushError(Exception):
    """The push cannot go ahead; the message says why."""


def _norm(s: str | None) -> str:
    return " ".join(_WORD.findall((s or "").casefold()))


def display_title(t: api.Track) -> str:
    """What Navidrome shows as the title: the tag, else the file name without its extension."""
    return t.title or os.path.splitext(os.path.basename(t.path))[0]


@dataclass
class Match:
    track: api.Track
    song: Song | None
    how: str  # "path" | "tags" | "none"


def _path_match(track_path: str, song_path: str | None) -> bool:
    if not song_path:
        return False
    a = track_path.replace("\\", "/")
    b = song_path.replace("\\", "/").lstrip("/")
    return a == b or a.endswith("/" + b)


def _same_song(t: api.Track, s: Song) -> bool:
    if _norm(display_title(t)) != _norm(s.title):
        return False
    if t.artist and s.artist and _norm(t.artist) != _norm(s.artist):
        return False
    if t.album and s.album and _norm(t.album) != _norm(s.album):
        return False
    if t.duration is None or s.duration is None:
        return False  # a title alone is not proof
    return abs(float(t.duration) - float(s.duration)) <= DURATION_TOLERANCE_S


class Mapper:
    """Agent tracks → Navidrome songs, with a cache so a track seen twice costs one search."""

    def __init__(self, nd: Subsonic) -> None:
        self.nd = nd
        self._cache: dict[str, Match] = {}

    async def match(self, t: api.Track) -> Match:
        hit = self._cache.get(t.path)
        if hit is None:
            hit = await self._match(t)
            self._cache[t.path] = hit
        return Match(t, hit.song, hit.how)

    async def _match(self, t: api.Track) -> Match:
        title = _norm(display_title(t))
        queries = [q for q in (f"{title} {_norm(t.artist)}".strip(), title) if q]
        seen: dict[str, Song] = {}
        for q in dict.fromkeys(queries):
            for s in await self.nd.search_songs(q):
                seen.setdefault(s.id, s)
            by_path = [s for s in seen.values() if _path_match(t.path, s.path)]
            if by_path:
                return Match(t, by_path[0], "path")
            same = [s for s in seen.values() if _same_song(t, s)]
            if same:
                ext = os.path.splitext(t.path)[1].lower()
                same.sort(key=lambda s: (not (s.path or "").lower().endswith(ext), s.id))
                return Match(t, same[0], "tags")
        return Match(t, None, "none")


@dataclass
class PushResult:
    name: str
    action: str  # created | updated | unchanged | would create | would update
    playlist_id: str | None
    matched: list[Match] = field(default_factory=list)
    unmatched: list[Match] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.action}: {self.name!r} with {len(self.matched)} songs" + (
            f" ({len(self.unmatched)} agent tracks not found in Navidrome)"
            if self.unmatched
            else ""
        )


async def push(
    nd: Subsonic,
    name: str,
    tracks: Sequence[api.Track],
    description: str,
    *,
    dry_run: bool = False,
    public: bool | None = None,
) -> PushResult:
    """Create or update the playlist ``name`` with ``tracks`` (agent order, duplicates dropped)."""
    if not name.strip():
        raise PushError("the playlist name is empty")
    if not tracks:
        raise PushError(f"the agent returned no tracks for {name!r}")
    mapper = Mapper(nd)
    matched: list[Match] = []
    unmatched: list[Match] = []
    ids: list[str] = []
    for t in tracks:
        m = await mapper.match(t)
        if m.song is None:
            unmatched.append(m)
        elif m.song.id not in ids:
            ids.append(m.song.id)
            matched.append(m)
    if not ids:
        raise PushError(
            f"none of the {len(tracks)} tracks for {name!r} were found in Navidrome; does Navidrome "
            "serve the same library, and has it finished scanning?"
        )
    comment = f"{description} — made by nomarr-navidrome from the nomarr agent {OWN_MARK}"
    mine = [
        p
        for p in await nd.playlists()
        if p.name == name and (p.owner is None or p.owner == nd.user)
    ]
    ours = [p for p in mine if OWN_MARK in p.comment]
    if not ours and mine:
        raise PushError(
            f"a playlist named {name!r} already exists and was not made by nomarr-navidrome; "
            "leaving it alone (pick another --name)"
        )
    if ours:
        pl = ours[0]
        current = await nd.playlist_song_ids(pl.id)
        if current == ids and pl.comment == comment:
            return PushResult(name, "unchanged", pl.id, matched, unmatched)
        if dry_run:
            return PushResult(name, "would update", pl.id, matched, unmatched)
        if current != ids:
            await nd.replace_songs(pl.id, ids)
        if pl.comment != comment or public is not None:
            await nd.update_playlist(pl.id, comment=comment, public=public)
        return PushResult(name, "updated", pl.id, matched, unmatched)
    if dry_run:
        return PushResult(name, "would create", None, matched, unmatched)
    pid = await nd.create_playlist(name, ids)
    if pid is None:  # a pre-1.14 server answers createPlaylist with an empty body
        fresh = [
            p
            for p in await nd.playlists()
            if p.name == name
            and OWN_MARK not in p.comment
            and (p.owner is None or p.owner == nd.user)
        ]
        if not fresh:
            raise PushError(f"Navidrome accepted {name!r} but does not list it")
        pid = fresh[-1].id
    await nd.update_playlist(pid, comment=comment, public=public)
    return PushResult(name, "created", pid, matched, unmatched)


def report(res: PushResult, verbose: bool = False) -> None:
    print(res.summary())
    if verbose or res.action.startswith("would"):
        for m in res.matched:
            assert m.song is not None
            print(f"  {m.song.id:>12}  {display_title(m.track)}  [{m.how}]")
    for m in res.unmatched:
        print(f"  not in Navidrome: {m.track.path}", file=sys.stderr)
