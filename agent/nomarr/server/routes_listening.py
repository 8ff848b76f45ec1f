"""The listening routes (docs/listens.md, docs/taste.md, docs/ingest.md): users' listens,
counters and favourites, taste and recommendations, trends, and the streaming-ingest sessions.
Declared like every route (see :mod:`nomarr.server.app`, which joins them into ``ROUTES``).
"""

from __future__ import annotations

from nomarr_client import models as api

from nomarr.server import api_ingest, api_listens, api_taste
from nomarr.server.http import (
    Route,
    query_param,
)

_PAGE = [
    query_param("offset", "integer", "first item", minimum=0),
    query_param("limit", "integer", "page size", minimum=1, maximum=1000),
]

# docs/listens.md and docs/taste.md
LISTEN_ROUTES: list[Route] = [
    Route(
        "GET",
        "/users",
        api_listens.list_users,
        "Users with stored listens",
        api.UserList,
        tag="listens",
    ),
    Route(
        "POST",
        "/users/{user}/listens",
        api_listens.add_listens,
        "Store listens (any source; replays add nothing), matched to library recordings",
        api.ImportResult,
        request=api.ListensRequest,
        tag="listens",
    ),
    Route(
        "GET",
        "/users/{user}/listens",
        api_listens.get_listens,
        "A user's listens, newest first",
        api.ListenPage,
        query=[
            *_PAGE,
            query_param("since", "number", "from this unix time"),
            query_param("until", "number", "before this unix time"),
            query_param("unmatched", "boolean", "only listens no rule matched"),
        ],
        tag="listens",
    ),
    Route(
        "POST",
        "/users/{user}/listens/import",
        api_listens.import_listens,
        "Import a ListenBrainz export (the zip, a JSON array or JSON lines) sent as the body",
        api.ImportResult,
        raw_body=True,
        tag="listens",
    ),
    Route(
        "POST",
        "/users/{user}/listenbrainz/sync",
        api_listens.sync_listenbrainz,
        "Fetch the user's new listens from the ListenBrainz API (incremental, rate-limited)",
        api.SyncResult,
        request=api.ListenBrainzSync,
        tag="listens",
    ),
    Route(
        "POST",
        "/users/{user}/counters",
        api_listens.post_counters,
        "Play/skip counters and stars from a polled source (Subsonic, beets): rises become listens",
        api.ImportResult,
        request=api.CountersRequest,
        tag="listens",
    ),
    Route(
        "POST",
        "/users/{user}/favourites",
        api_listens.post_favourites,
        "A source's favourites (loved, starred) and hated items",
        api.FavouritesResult,
        request=api.FavouritesRequest,
        tag="listens",
    ),
    Route(
        "GET",
        "/users/{user}/export",
        api_listens.export_user,
        "Everything stored about a user (tokens left out)",
        api.UserExport,
        tag="listens",
    ),
    Route(
        "GET",
        "/users/{user}/taste",
        api_taste.get_taste,
        "The user's taste profile: centres, weights, what is skipped",
        api.TasteProfile,
        query=[query_param("model", "string", "embedding space")],
        tag="taste",
    ),
    Route(
        "POST",
        "/users/{user}/recommendations",
        api_taste.recommendations,
        'Recommendations: "for_you", "rediscover" or "discovery", each with a reason',
        api.Recommendations,
        request=api.RecommendRequest,
        tag="taste",
    ),
    Route(
        "GET",
        "/users/{user}/trends",
        api_taste.get_trends,
        "Weekly mood shares, axes, diversity, taste map, momentum and change points",
        api.Trends,
        query=[
            query_param("weeks", "integer", "how many weeks (default 52)", minimum=4, maximum=520),
            query_param(
                "until", "number", "last week holds this unix time (default: newest listen)"
            ),
            query_param("model", "string", "embedding space"),
        ],
        tag="taste",
    ),
    Route(
        "DELETE",
        "/users/{user}",
        api_listens.delete_user,
        "Delete everything stored about a user, in one transaction",
        api.UserDeleted,
        tag="listens",
    ),
]

# docs/ingest.md
INGEST_ROUTES: list[Route] = [
    Route(
        "POST",
        "/ingest",
        api_ingest.start,
        "Open a streaming-ingest session (identity and PCM format)",
        api.IngestSession,
        request=api.IngestStart,
        tag="ingest",
    ),
    Route(
        "GET",
        "/ingest/{id}",
        api_ingest.status,
        "An ingest session",
        api.IngestSession,
        tag="ingest",
    ),
    Route(
        "POST",
        "/ingest/{id}/chunks",
        api_ingest.chunk,
        "One chunk of raw PCM (whole frames), numbered from 0 by ?seq=",
        api.IngestSession,
        raw_body=True,
        query=[query_param("seq", "integer", "the chunk's number", required=True, minimum=0)],
        tag="ingest",
    ),
    Route(
        "POST",
        "/ingest/{id}/end",
        api_ingest.end,
        "Analyse the stream and store it (one transaction)",
        api.IngestResult,
        tag="ingest",
    ),
    Route(
        "DELETE",
        "/ingest/{id}",
        api_ingest.abort,
        "Abort a session: its audio is dropped, nothing is stored",
        api.IngestSession,
        tag="ingest",
    ),
    Route(
        "GET",
        "/streams/{id}",
        api_ingest.get_stream,
        "A streamed recording",
        api.Track,
        tag="ingest",
    ),
    Route(
        "GET",
        "/recordings/lookup",
        api_ingest.lookup_recording,
        "Files and streams of the recording with a provider id, MusicBrainz id or ISRC",
        api.TrackList,
        query=[
            query_param("provider_id", "string", "a provider's item id or URI (streams)"),
            query_param("mbid", "string", "MusicBrainz recording id"),
            query_param("isrc", "string", "ISRC"),
        ],
        tag="ingest",
    ),
]
