"""The few Subsonic API calls ``push`` and ``listens`` need, as Navidrome answers them.

Authentication is the spec's token scheme (API 1.13+): every request carries ``u`` (user),
``s`` (a fresh random salt) and ``t = md5(password + salt)``, so the password itself never crosses
the network, plus ``v`` (protocol version), ``c`` (client name) and ``f=json``. Every answer is
``{"subsonic-response": {"status": "ok"|"failed", ...}}``; a failure carries ``error.code``
(10 missing parameter, 20/30 version mismatch, 40 wrong credentials, 41 token auth unsupported,
50 not authorised, 70 not found), turned here into a :class:`SubsonicError` with a sentence that
says what to do.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

API_VERSION = "1.16.1"
CLIENT = "nomarr-navidrome"
_MAX_QUERY = 4000

_HINTS = {
    10: "a required parameter is missing (a bug in nomarr-navidrome, or a server that is not Navidrome)",
    20: "the server wants a newer Subsonic client",
    30: "the server is too old for Subsonic API 1.16",
    40: "wrong Navidrome user name or password (set --user/--password or NAVIDROME_USER/NAVIDROME_PASSWORD)",
    41: "this user cannot use token authentication (an LDAP user?)",
    50: "this Navidrome user is not allowed to do that",
    70: "not found on the Navidrome server",
}


class SubsonicError(Exception):
    """A failed Subsonic call: ``code`` is the spec's error code (``None`` for transport failures)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message if self.code is None else f"{self.message} (Subsonic error {self.code})"


@dataclass(frozen=True)
class Song:
    id: str
    title: str
    artist: str | None
    album: str | None
    duration: int | None
    path: str | None
    play_count: int = 0
    played: float | None = None  # OpenSubsonic: when last played (unix seconds)
    starred: float | None = None  # when starred, if it is
    mbid: str | None = None  # OpenSubsonic musicBrainzId (the recording)
    isrc: str | None = None

    @classmethod
    def of(cls, d: dict[str, Any]) -> Song:
        dur = d.get("duration")
        pc = d.get("playCount")
        isrc = d.get("isrc")
        return cls(
            str(d["id"]),
            str(d.get("title") or ""),
            d.get("artist"),
            d.get("album"),
            int(dur) if isinstance(dur, int | float) else None,
            d.get("path"),
            int(pc) if isinstance(pc, int | float) and pc > 0 else 0,
            _when(d.get("played")),
            _when(d.get("starred")),
            d.get("musicBrainzId") or None,
            (isrc[0] if isrc else None) if isinstance(isrc, list) else (isrc or None),
        )


def _when(v: Any) -> float | None:
    """A Subsonic date (ISO 8601, ``Z`` or an offset) as unix seconds; None when absent or bad."""
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


@dataclass(frozen=True)
class PlaylistInfo:
    id: str
    name: str
    comment: str
    owner: str | None
    song_count: int

    @classmethod
    def of(cls, d: dict[str, Any]) -> PlaylistInfo:
        return cls(
            str(d["id"]),
            str(d.get("name") or ""),
            str(d.get("comment") or ""),
            d.get("owner"),
            int(d.get("songCount") or 0),
        )


def token(password: str, salt: str) -> str:
    """The spec's ``t``: lowercase hex md5 of the password followed by the salt (UTF-8)."""
    return hashlib.md5((password + salt).encode("utf-8")).hexdigest()


def normalize_url(url: str) -> str:
    """``http://host:4533`` (or with a reverse-proxy path) → the base the ``/rest/...`` paths hang off."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubsonicError(
            None, f"Navidrome URL {url!r} is not an http(s) URL with a host (e.g. http://host:4533)"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/rest"):
        path = path[: -len("/rest")]
    return f"{parts.scheme}://{parts.netloc}{path}"


class Subsonic:
    """An async Subsonic client over one aiohttp session (``async with Subsonic(...) as s``)."""

    def __init__(self, url: str, user: str, password: str, *, timeout: float = 30.0) -> None:
        if not user or not password:
            raise SubsonicError(
                None,
                "Navidrome user and password are required (--user/--password, or "
                "NAVIDROME_USER/NAVIDROME_PASSWORD)",
            )
        self.base = normalize_url(url)
        self.user = user
        self._password = password
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(5.0, timeout))
        self._session: aiohttp.ClientSession | None = None
        self.calls: list[str] = []  # endpoint names, in order (for --dry-run reports and tests)

    def __repr__(self) -> str:  # never the password
        return f"Subsonic({self.base!r}, user={self.user!r})"

    async def __aenter__(self) -> Subsonic:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, endpoint: str, params: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """One request; returns the ``subsonic-response`` object or raises :class:`SubsonicError`."""
        if self._session is None:
            raise RuntimeError("use `async with Subsonic(...)`")
        salt = secrets.token_hex(8)
        query = [
            ("u", self.user),
            ("t", token(self._password, salt)),
            ("s", salt),
            ("v", API_VERSION),
            ("c", CLIENT),
            ("f", "json"),
            *params,
        ]
        url = f"{self.base}/rest/{endpoint}"
        self.calls.append(endpoint)
        try:
            # GET as the spec has it; a long song list goes as a form POST instead (OpenSubsonic's
            # formPost, which Navidrome implements), since a URL of hundreds of ids overflows proxies
            if len(urlencode(query)) <= _MAX_QUERY:
                req = self._session.get(url, params=query, timeout=self.timeout)
            else:
                req = self._session.post(url, data=query, timeout=self.timeout)
            async with req as r:
                raw = await r.read()
                status = r.status
        except aiohttp.ClientError as e:
            raise SubsonicError(None, f"cannot reach Navidrome at {self.base}: {e}") from e
        except TimeoutError as e:
            raise SubsonicError(
                None, f"Navidrome at {self.base} did not answer within {self.timeout.total:g} s"
            ) from e
        try:
            body = json.loads(raw)["subsonic-response"]
        except (ValueError, KeyError, TypeError):
            text = raw[:200].decode("utf-8", "replace").strip()
            raise SubsonicError(
                None,
                f"{url} answered HTTP {status} with something that is not a Subsonic response"
                + (f": {text}" if text else "")
                + "; is the URL a Navidrome server?",
            ) from None
        if body.get("status") != "ok":
            err = body.get("error") or {}
            code = err.get("code")
            code = int(code) if isinstance(code, int | float | str) and str(code).isdigit() else 0
            msg = str(err.get("message") or "failed")
            raise SubsonicError(
                code, f"{endpoint}: {msg}" + (f" — {_HINTS[code]}" if code in _HINTS else "")
            )
        return body

    # -- endpoints ------------------------------------------------------------------------

    async def ping(self) -> None:
        await self.call("ping")

    async def search_songs(self, query: str, count: int = 50) -> list[Song]:
        body = await self.call(
            "search3",
            [
                ("query", query),
                ("songCount", str(count)),
                ("artistCount", "0"),
                ("albumCount", "0"),
            ],
        )
        songs = (body.get("searchResult3") or {}).get("song") or []
        return [Song.of(s) for s in songs]

    async def all_songs(self, page: int = 500) -> list[Song]:
        """Every song, by ``search3`` with an empty query paged by ``songOffset`` (Navidrome and
        other OpenSubsonic servers answer an empty query with the whole library)."""
        out: list[Song] = []
        offset = 0
        while True:
            body = await self.call(
                "search3",
                [
                    ("query", ""),
                    ("songCount", str(page)),
                    ("songOffset", str(offset)),
                    ("artistCount", "0"),
                    ("albumCount", "0"),
                ],
            )
            songs = (body.get("searchResult3") or {}).get("song") or []
            out += [Song.of(x) for x in songs]
            if len(songs) < page:
                return out
            offset += page

    async def starred_songs(self) -> list[Song]:
        """The user's starred songs (``getStarred2``)."""
        body = await self.call("getStarred2")
        return [Song.of(x) for x in (body.get("starred2") or {}).get("song") or []]

    async def playlists(self) -> list[PlaylistInfo]:
        body = await self.call("getPlaylists")
        return [PlaylistInfo.of(p) for p in (body.get("playlists") or {}).get("playlist") or []]

    async def playlist_song_ids(self, playlist_id: str) -> list[str]:
        body = await self.call("getPlaylist", [("id", playlist_id)])
        return [str(e["id"]) for e in (body.get("playlist") or {}).get("entry") or []]

    async def create_playlist(self, name: str, song_ids: Sequence[str]) -> str | None:
        """A new playlist; its id (API 1.14+ returns the playlist), else ``None``."""
        body = await self.call(
            "createPlaylist", [("name", name), *(("songId", s) for s in song_ids)]
        )
        pid = (body.get("playlist") or {}).get("id")
        return str(pid) if pid is not None else None

    async def replace_songs(self, playlist_id: str, song_ids: Sequence[str]) -> None:
        """``createPlaylist`` with ``playlistId``: the spec's way to replace a playlist's songs."""
        await self.call(
            "createPlaylist", [("playlistId", playlist_id), *(("songId", s) for s in song_ids)]
        )

    async def update_playlist(
        self, playlist_id: str, *, comment: str | None = None, public: bool | None = None
    ) -> None:
        params = [("playlistId", playlist_id)]
        if comment is not None:
            params.append(("comment", comment))
        if public is not None:
            params.append(("public", "true" if public else "false"))
        await self.call("updatePlaylist", params)
