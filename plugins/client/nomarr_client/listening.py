"""Client calls for listens, taste and streaming ingest (docs/listens.md, docs/taste.md,
docs/ingest.md), mixed into :class:`~nomarr_client.client.NomarrClient`.

Retries follow the client's rule, "only where a retry cannot do harm": listens, counters,
favourites and imports are idempotent on the agent (a replay adds nothing), so they are retried
like queries; a PCM chunk re-sent under the same number is acknowledged and not kept twice, so it
is too; ending, aborting or deleting is retried only when nothing reached the agent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import models as api

if TYPE_CHECKING:
    from .client import _Retry


def _c() -> Any:
    """The transport helpers (``client`` imports this module, so they are looked up late)."""
    from . import client

    return client


def _user(user: str) -> str:
    if not isinstance(user, str) or not user or len(user) > api.MAX_USER:
        raise _c().BadRequest(None, "bad-request", f"user must be 1..{api.MAX_USER} characters")
    return quote(user, safe="")


def _session(sid: str) -> str:
    if not isinstance(sid, str) or not sid.isalnum() or len(sid) > 64:
        raise _c().BadRequest(None, "bad-request", f"not an ingest session id: {sid!r}")
    return sid


class ListeningMixin:
    """Listens, favourites, taste, trends, privacy and streaming ingest."""

    async def _request(self, method: str, path: str, model: Any, **kw: Any) -> Any:
        raise NotImplementedError  # NomarrClient's

    def _retry(self, name: str) -> _Retry:
        return getattr(_c()._Retry, name)

    # -- listens --------------------------------------------------------------------------------

    async def users(self) -> api.UserList:
        """Users the agent holds listens for, with counts."""
        return await self._request("GET", "/users", api.UserList)

    async def add_listens(
        self,
        user: str,
        listens: Sequence[api.ListenItem | Mapping[str, Any]],
        source: str = "api",
    ) -> api.ImportResult:
        """Store listens (at most 5000 per call); a listen sent twice (same ``id``, or the same
        source, second and item) is stored once, so this is safe to retry."""
        req = _c()._build(api.ListensRequest, source=source, listens=list(listens))
        return await self._request(
            "POST", f"/users/{_user(user)}/listens", api.ImportResult, body=req
        )

    async def listens(
        self,
        user: str,
        offset: int = 0,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
        unmatched: bool = False,
    ) -> api.ListenPage:
        """One page of a user's listens, newest first."""
        params = [("offset", str(int(offset))), ("limit", str(int(limit)))]
        if since is not None:
            params.append(("since", repr(float(since))))
        if until is not None:
            params.append(("until", repr(float(until))))
        if unmatched:
            params.append(("unmatched", "true"))
        return await self._request(
            "GET", f"/users/{_user(user)}/listens", api.ListenPage, params=params
        )

    async def import_listenbrainz(
        self, user: str, export: bytes | str | os.PathLike[str]
    ) -> api.ImportResult:
        """Upload a ListenBrainz export (the zip from listenbrainz.org, a JSON array or JSON
        lines): a path on this machine or the bytes. Replaying an import adds nothing."""
        if isinstance(export, bytes):
            return await self._request(
                "POST",
                f"/users/{_user(user)}/listens/import",
                api.ImportResult,
                raw=export,
                retry=self._retry("SLOW"),
                long=True,
            )
        return await self._request(
            "POST",
            f"/users/{_user(user)}/listens/import",
            api.ImportResult,
            upload=os.fspath(export),
            retry=self._retry("SLOW"),
            long=True,
        )

    async def sync_listenbrainz(
        self,
        user: str,
        lb_user: str | None = None,
        token: str | None = None,
        max_pages: int = 1000,
        remember: bool = False,
    ) -> api.SyncResult:
        """Have the agent fetch the user's new ListenBrainz listens (incremental; with no
        arguments, the settings the agent was asked to ``remember``)."""
        body = None
        if lb_user is not None or token is not None or remember or max_pages != 1000:
            body = _c()._build(
                api.ListenBrainzSync,
                lb_user=lb_user,
                token=token,
                max_pages=max_pages,
                remember=remember,
            )
        return await self._request(
            "POST",
            f"/users/{_user(user)}/listenbrainz/sync",
            api.SyncResult,
            body=body,
            retry=self._retry("SLOW"),
            long=True,
        )

    async def post_counters(
        self,
        user: str,
        source: str,
        items: Sequence[api.CounterItem | Mapping[str, Any]],
        complete: bool = False,
    ) -> api.ImportResult:
        """A polled source's play/skip counters and stars (at most 5000 items per call); every
        rise since the last report becomes listens. Reporting the same counts again adds
        nothing."""
        req = _c()._build(api.CountersRequest, source=source, items=list(items), complete=complete)
        return await self._request(
            "POST", f"/users/{_user(user)}/counters", api.ImportResult, body=req
        )

    async def post_favourites(
        self,
        user: str,
        source: str,
        items: Sequence[api.FavouriteItem | Mapping[str, Any]],
        complete: bool = True,
    ) -> api.FavouritesResult:
        """A source's favourites (``complete``: its whole list, the others are removed)."""
        req = _c()._build(
            api.FavouritesRequest, source=source, items=list(items), complete=complete
        )
        return await self._request(
            "POST", f"/users/{_user(user)}/favourites", api.FavouritesResult, body=req
        )

    # -- taste ----------------------------------------------------------------------------------

    async def taste(self, user: str, model: str | None = None) -> api.TasteProfile:
        """The user's taste profile."""
        params = [("model", model)] if model else None
        return await self._request(
            "GET", f"/users/{_user(user)}/taste", api.TasteProfile, params=params
        )

    async def recommendations(
        self,
        user: str,
        mode: str = "for_you",
        limit: int = 25,
        *,
        model: str | None = None,
        recent_days: float = 30.0,
        since_days: float = 90.0,
        max_per_artist: int = 3,
        filters: api.Filters | Mapping[str, Any] | None = None,
    ) -> api.Recommendations:
        """``for_you``, ``rediscover`` or ``discovery``, each item with its reason."""
        req = _c()._build(
            api.RecommendRequest,
            mode=mode,
            limit=limit,
            model=model,
            recent_days=recent_days,
            since_days=since_days,
            max_per_artist=max_per_artist,
            filters=filters,
        )
        return await self._request(
            "POST", f"/users/{_user(user)}/recommendations", api.Recommendations, body=req
        )

    async def trends(self, user: str, weeks: int = 52, until: float | None = None) -> api.Trends:
        """Weekly mood shares, axes, diversity, map, momentum and change points."""
        params = [("weeks", str(int(weeks)))]
        if until is not None:
            params.append(("until", repr(float(until))))
        return await self._request("GET", f"/users/{_user(user)}/trends", api.Trends, params=params)

    # -- privacy --------------------------------------------------------------------------------

    async def export_user(self, user: str) -> api.UserExport:
        """Everything the agent stores about a user."""
        return await self._request("GET", f"/users/{_user(user)}/export", api.UserExport)

    async def delete_user(self, user: str) -> api.UserDeleted:
        """Delete everything the agent stores about a user (one transaction)."""
        return await self._request(
            "DELETE", f"/users/{_user(user)}", api.UserDeleted, retry=self._retry("CONNECT")
        )

    # -- streaming ingest -----------------------------------------------------------------------

    async def ingest_start(
        self,
        format: api.PcmFormat | Mapping[str, Any],
        identity: api.StreamIdentity | Mapping[str, Any] | None = None,
    ) -> api.IngestSession:
        """Open a streaming-ingest session for raw PCM of one track."""
        req = _c()._build(api.IngestStart, format=format, identity=identity or {})
        return await self._request(
            "POST", "/ingest", api.IngestSession, body=req, retry=self._retry("CONNECT")
        )

    async def ingest_chunk(self, session: str, seq: int, data: bytes) -> api.IngestSession:
        """Chunk ``seq`` (0, 1, 2, …) of whole PCM frames; safe to retry with the same bytes."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise _c().BadRequest(None, "bad-request", "seq must be an integer >= 0")
        return await self._request(
            "POST",
            f"/ingest/{_session(session)}/chunks",
            api.IngestSession,
            params=[("seq", str(seq))],
            raw=bytes(data),
        )

    async def ingest_end(self, session: str) -> api.IngestResult:
        """Analyse and store the stream (waits for the analysis)."""
        return await self._request(
            "POST",
            f"/ingest/{_session(session)}/end",
            api.IngestResult,
            retry=self._retry("CONNECT"),
            long=True,
        )

    async def ingest_abort(self, session: str) -> api.IngestSession:
        """Drop a session; nothing is stored."""
        return await self._request(
            "DELETE",
            f"/ingest/{_session(session)}",
            api.IngestSession,
            retry=self._retry("CONNECT"),
        )

    async def stream(self, id: int) -> api.Track:
        """A streamed recording by its stream id."""
        return await self._request("GET", f"/streams/{_c()._track_id(id)}", api.Track)

    async def lookup_recording(
        self, provider_id: str | None = None, mbid: str | None = None, isrc: str | None = None
    ) -> api.TrackList:
        """Files and streams of the recording with this provider id, MBID or ISRC (one)."""
        given = [
            (k, v) for k, v in (("provider_id", provider_id), ("mbid", mbid), ("isrc", isrc)) if v
        ]
        if len(given) != 1:
            raise _c().BadRequest(
                None, "bad-request", "give exactly one of provider_id, mbid, isrc"
            )
        return await self._request("GET", "/recordings/lookup", api.TrackList, params=given)
