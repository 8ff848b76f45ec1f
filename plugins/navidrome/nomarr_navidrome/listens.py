"""What a Navidrome user played, sent to the agent: each song's play count and last-played time
(``search3`` over the whole library) and the starred songs (``getStarred2``).

The agent keeps the counts it was last told and turns every rise into listens (docs/listens.md),
so this can run as often as wanted — from cron, a systemd timer or ``--every`` — and a run with
nothing new adds nothing. Songs are identified to the agent by what Subsonic says about them
(MusicBrainz id and ISRC where the server has them, artist, title, album, duration); the agent's
match rule does the rest. Nothing is kept on this side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nomarr_client import NomarrClient

from .subsonic import Song, Subsonic

PAGE = 2000  # counter items per request


@dataclass
class ListensReport:
    songs: int = 0
    played: int = 0
    added: int = 0
    matched: int = 0
    unmatched: int = 0
    starred: int = 0
    starred_matched: int = 0

    def summary(self) -> str:
        return (
            f"{self.songs} songs, {self.played} ever played: {self.added} new listens "
            f"({self.matched} matched to the agent's library, {self.unmatched} not); "
            f"{self.starred} starred ({self.starred_matched} matched)"
        )


def identity(s: Song) -> dict[str, Any]:
    """What the agent matches a song by."""
    return {
        "mbid": s.mbid,
        "isrc": s.isrc,
        "artist": s.artist,
        "title": s.title or None,
        "album": s.album,
        "duration": float(s.duration) if s.duration else None,
    }


async def sync_listens(nd: Subsonic, agent: NomarrClient, user: str, source: str) -> ListensReport:
    """Send the play counters and the stars of the logged-in Navidrome user to the agent as
    ``user``'s (``source`` names the server, e.g. ``subsonic:host:4533``)."""
    songs = await nd.all_songs()
    rep = ListensReport(songs=len(songs))
    played = [s for s in songs if s.play_count > 0]
    rep.played = len(played)
    for i in range(0, len(played), PAGE):
        items = [
            {"item": s.id, "plays": s.play_count, "last_played": s.played, **identity(s)}
            for s in played[i : i + PAGE]
        ]
        res = await agent.post_counters(user, source, items)
        rep.added += res.added
        rep.matched += res.matched
        rep.unmatched += res.unmatched
    starred = await nd.starred_songs()
    rep.starred = len(starred)
    fav = await agent.post_favourites(
        user,
        source,
        [{"key": s.id, "score": 1, "since": s.starred, **identity(s)} for s in starred],
        complete=True,
    )
    rep.starred_matched = fav.matched
    return rep
