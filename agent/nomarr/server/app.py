"""The HTTP API (DESIGN §5) on aiohttp: the one table of routes, and the application built from it.

Every route is declared once in ``ROUTES`` with its request and response models; the router, the
validation and the OpenAPI document all come from that table, so the document cannot drift from
what the server does. Handlers live beside their kind (``api_library``: tracks, similarity,
playlists; ``api_analysis``: analysis, models, rescans) and share the machinery in ``http``: the
shared pydantic models (``nomarr_client.models``), database and numpy work on worker threads (the
event loop only moves bytes), and errors as ``{"error": {"code", "message"}}``: 4xx for anything
the caller can fix, 5xx only for our own bugs (logged with a traceback).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from nomarr_client import models as api

from nomarr.server import guard
from nomarr.server.api_analysis import analyze, list_models, pull_model, scan
from nomarr.server.api_console import browse_tracks, file_tags, map_points, recent_analyses
from nomarr.server.api_library import (
    get_track,
    list_tracks,
    lookup,
    moods,
    playlist_mood,
    playlist_path,
    playlist_radio,
    playlist_text,
    similar,
    tag_keys,
)
from nomarr.server.api_media import AUDIO_TYPES, SHUTDOWN_KEY, events, track_audio, track_waveform
from nomarr.server.api_models import import_model, model_stats, verify_model
from nomarr.server.http import (
    AGENT_KEY,
    Route,
    agent_of,
    auth_middleware,
    errors_middleware,
    off_loop,
    query_param,
    wrap,
)
from nomarr.server.routes_listening import INGEST_ROUTES, LISTEN_ROUTES
from nomarr.server.service import Agent


async def health(request: web.Request) -> api.Health:
    return api.Health(version=agent_of(request).version)


async def status(request: web.Request) -> api.Status:
    agent = agent_of(request)
    return await off_loop(agent.status)


async def openapi_doc(request: web.Request) -> Any:
    from nomarr.server.openapi import document

    return web.json_response(document(ROUTES, agent_of(request).version))


ROUTES: list[Route] = [
    Route(
        "GET",
        "/health",
        health,
        "Liveness (no authentication)",
        api.Health,
        auth=False,
        tag="agent",
    ),
    Route(
        "GET",
        "/status",
        status,
        "Version, agent id, roots, scan queue, models, providers",
        api.Status,
        tag="agent",
    ),
    Route(
        "GET",
        "/tracks",
        list_tracks,
        "Tracks, one page at a time (ordered by id)",
        api.TrackPage,
        query=[
            query_param("offset", "integer", "first item", minimum=0),
            query_param("limit", "integer", "page size", minimum=1, maximum=1000),
            query_param(
                "status",
                "string",
                "ok (default), failed, missing or all",
                enum=["ok", "failed", "missing", "all"],
            ),
            query_param(
                "under", "string", "only below this folder (repeatable; inside a library root)"
            ),
        ],
    ),
    Route(
        "GET",
        "/tracks/lookup",
        lookup,
        "Find tracks by path, Chromaprint fingerprint, MusicBrainz id or ISRC",
        api.TrackList,
        query=[
            query_param("path", "string", "absolute path inside a library root"),
            query_param(
                "fingerprint",
                "string",
                "compressed Chromaprint fingerprint (fpcalc's default output)",
            ),
            query_param(
                "duration",
                "number",
                "the fingerprinted audio's duration in seconds (improves matching)",
            ),
            query_param("mbid", "string", "MusicBrainz recording id"),
            query_param("isrc", "string", "ISRC"),
        ],
    ),
    Route(
        "GET",
        "/tracks/{id}",
        get_track,
        "One track with its scores, tiers and written tags",
        api.TrackDetail,
    ),
    Route(
        "GET",
        "/tracks/{id}/audio",
        track_audio,
        "The track's audio file as stored (HTTP range requests; files inside the roots only)",
        api.Health,
        media=tuple(sorted(set(AUDIO_TYPES.values()))) + ("application/octet-stream",),
    ),
    Route(
        "GET",
        "/tracks/{id}/waveform",
        track_waveform,
        "The track's waveform: the loudest sample per 1/1000 of its length",
        api.Waveform,
    ),
    Route(
        "GET",
        "/tracks/{id}/file-tags",
        file_tags,
        "The nom: tags and MOOD read from the file now",
        api.FileTags,
    ),
    Route(
        "GET",
        "/browse",
        browse_tracks,
        "Search, filter, sort and page the library (the console's table)",
        api.BrowsePage,
        query=[
            query_param("q", "string", "words to find in title, artist, album or path (prefixes)"),
            query_param(
                "sort",
                "string",
                "column to sort by (score: the label's score)",
                enum=["id", "title", "artist", "album", "path", "duration", "added", "score"],
            ),
            query_param("order", "string", "asc (default) or desc", enum=["asc", "desc"]),
            query_param(
                "status",
                "string",
                "ok (default), failed, missing or all",
                enum=["ok", "failed", "missing", "all"],
            ),
            query_param("label", "string", "a label some model scores (for score, tier filters)"),
            query_param("model", "string", "the model whose label scores to use"),
            query_param("min_score", "number", "label score at least", minimum=0, maximum=1),
            query_param("max_score", "number", "label score at most", minimum=0, maximum=1),
            query_param("tier", "string", "label tier", enum=["high", "medium", "low"]),
            query_param("offset", "integer", "first item", minimum=0),
            query_param("limit", "integer", "page size", minimum=1, maximum=500),
            query_param("under", "string", "only below this folder (repeatable)"),
            query_param("id", "integer", "only this track (repeatable, at most 500)", minimum=1),
        ],
    ),
    Route(
        "GET",
        "/analyses/recent",
        recent_analyses,
        "The latest analyses, newest first",
        api.RecentList,
        query=[query_param("limit", "integer", "how many", minimum=1, maximum=100)],
    ),
    Route(
        "GET",
        "/map",
        map_points,
        "A 2-D projection (PCA) of an embedding space, one point per recording",
        api.MapPoints,
        tag="queries",
        query=[
            query_param("model", "string", "embedding space; default: the best the library has"),
            query_param("label", "string", "colour by this label's score"),
        ],
    ),
    Route(
        "GET",
        "/events",
        events,
        "Server-Sent Events: the Status document whenever it changes (live scan progress)",
        api.Status,
        tag="agent",
        media=("text/event-stream",),
        query=[
            query_param("once", "boolean", "send the current state once and end"),
            query_param(
                "interval_ms", "integer", "least time between events", minimum=250, maximum=60000
            ),
        ],
    ),
    Route(
        "POST",
        "/analyze",
        analyze,
        "Analyse a file inside a library root, or uploaded audio bytes "
        '(application/octet-stream or multipart/form-data part "file", named with ?filename=)',
        api.AnalyzeResponse,
        request=api.AnalyzeRequest,
        upload=True,
        tag="analysis",
        query=[
            query_param(
                "filename", "string", "uploads: the file name (its extension picks the decoder)"
            ),
            query_param("profile", "string", "uploads: sampling profile"),
            query_param("model", "string", "uploads: model id (repeatable)"),
            query_param("embedding", "boolean", "uploads: include embeddings"),
        ],
    ),
    Route(
        "POST",
        "/similar",
        similar,
        "Nearest tracks to a track (id or path) or a raw embedding",
        api.HitList,
        request=api.SimilarRequest,
        tag="queries",
    ),
    Route(
        "GET",
        "/moods",
        moods,
        "Labels some model in the library scores",
        api.MoodList,
        tag="queries",
    ),
    Route(
        "GET",
        "/tags",
        tag_keys,
        "Every nom: key written into the library's files, parsed, with track counts",
        api.TagKeyList,
        tag="queries",
    ),
    Route(
        "POST",
        "/playlists/mood",
        playlist_mood,
        "Tracks scoring highest for a label (zero-shot with CLAP)",
        api.Playlist,
        request=api.MoodPlaylistRequest,
        tag="queries",
    ),
    Route(
        "POST",
        "/playlists/radio",
        playlist_radio,
        "A seed radio: the seed, then a smooth walk through its neighbours",
        api.Playlist,
        request=api.RadioRequest,
        tag="queries",
    ),
    Route(
        "POST",
        "/playlists/path",
        playlist_path,
        "A song path from one track to another",
        api.Playlist,
        request=api.PathPlaylistRequest,
        tag="queries",
    ),
    Route(
        "POST",
        "/playlists/text",
        playlist_text,
        "Tracks nearest to a description (needs a CLAP model)",
        api.Playlist,
        request=api.TextPlaylistRequest,
        tag="queries",
    ),
    Route(
        "GET",
        "/models",
        list_models,
        "Known models and whether they are installed",
        api.ModelList,
        tag="models",
    ),
    Route(
        "POST",
        "/models/{id}/pull",
        pull_model,
        "Download a model's files (sha256-checked)",
        api.PullResponse,
        tag="models",
    ),
    Route(
        "POST",
        "/models/import",
        import_model,
        "Add an Essentia model from its metadata .json (then pull it)",
        api.ImportResponse,
        request=api.ImportRequest,
        tag="models",
    ),
    Route(
        "POST",
        "/models/{id}/verify",
        verify_model,
        "Hash a model's files against their expected sha256",
        api.ModelVerify,
        tag="models",
    ),
    Route(
        "GET",
        "/models/{id}/stats",
        model_stats,
        "A model in this library: tracks analysed, providers, score histograms, tier bounds",
        api.ModelStats,
        tag="models",
    ),
    Route(
        "POST",
        "/scan",
        scan,
        "Queue a rescan of some paths (default: every library root)",
        api.ScanQueued,
        request=api.ScanRequest,
        tag="agent",
    ),
    *LISTEN_ROUTES,
    *INGEST_ROUTES,
]


def create_app(agent: Agent) -> web.Application:
    """The aiohttp application for one agent (the caller runs and stops the agent itself)."""
    # aiohttp's own body limit backs up ours; uploads are streamed and checked separately
    from nomarr.web import Console

    console = Console(agent.token, agent.agent_id, agent.version) if agent.cfg.console else None
    app = web.Application(
        middlewares=[
            errors_middleware,
            guard.guard_middleware,
            auth_middleware(agent.token, console),
        ],
        client_max_size=max(agent.cfg.max_json_kb * 1024, 1 << 20),
    )
    app[AGENT_KEY] = agent
    guard.install(app)
    for r in ROUTES:
        app.router.add_route(r.method, api.API_PREFIX + r.path, wrap(r))
    app.router.add_get(api.API_PREFIX + "/openapi.json", openapi_doc)
    if console is not None:
        console.setup(app)
    stop = asyncio.Event()
    app[SHUTDOWN_KEY] = stop

    async def on_shutdown(_: web.Application) -> None:
        stop.set()  # event streams end now, not at the shutdown timeout

    app.on_shutdown.append(on_shutdown)
    return app
