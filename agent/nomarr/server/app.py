"""The HTTP API (DESIGN §5) on aiohttp.

Every route is declared once in ``ROUTES`` with its request and response models; the router, the
validation and the OpenAPI document all come from that table, so the document cannot drift from
what the server does. Handlers parse with the shared pydantic models (``nomarr_client.models``),
do their database and numpy work on worker threads (the event loop only moves bytes), and answer
errors as ``{"error": {"code", "message"}}``: 4xx for anything the caller can fix, 5xx only for
our own bugs (logged with a traceback).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from nomarr_client import models as api
from nomarr_client import tags as tagkeys
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from nomarr import library, query
from nomarr.server.service import Agent, PathDenied, PathInvalid

log = logging.getLogger("nomarr.api")

Handler = Callable[[web.Request], Awaitable[BaseModel]]


class ApiError(Exception):
    """An error answer: status, stable code, message for people."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass
class Route:
    method: str
    path: str  # below /api/v1
    handler: Handler
    summary: str
    response: type[BaseModel]
    request: type[BaseModel] | None = None
    query: list[dict[str, Any]] = field(default_factory=list)
    auth: bool = True
    upload: bool = False
    tag: str = "library"


def _q(name: str, typ: str, desc: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": desc,
        "schema": {"type": typ, **schema},
    }


# -- helpers -----------------------------------------------------------------------------------


def agent_of(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]


async def _json_body(request: web.Request, model: type[BaseModel]) -> Any:
    agent = agent_of(request)
    limit = agent.cfg.max_json_kb * 1024
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too-large", f"request body over {agent.cfg.max_json_kb} KiB")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "too-large", f"request body over {agent.cfg.max_json_kb} KiB")
    try:
        data = json.loads(raw or b"{}")
        # "\ud800" is valid JSON but not text: refuse lone surrogates here, not with a 500 from os or
        # sqlite later; \udc80-\udcff stay legal (os.fsdecode's spelling of non-UTF-8 name bytes)
        json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogateescape")
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad-request", f"body is not valid JSON: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(400, "bad-request", _validation_message(e), _details(e)) from None


def _details(e: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in e.errors()
    ][:20]


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, "bad-request", f"{name} must be an integer") from None
    if not lo <= v <= hi:
        raise ApiError(400, "bad-request", f"{name} must be in {lo}..{hi}")
    return v


def _track(t: Any) -> api.Track:
    return api.Track(**t.to_dict())


def _hits(hits: list[query.Hit]) -> list[api.Hit]:
    return [api.Hit(**h.to_dict()) for h in hits]


def _filters(agent: Agent, f: api.Filters | None) -> query.Filters | None:
    if f is None:
        return None
    under = (
        [agent.confine(u, must_exist=False, known_ok=False) for u in f.under] if f.under else None
    )
    if (
        f.min_duration is not None
        and f.max_duration is not None
        and f.min_duration > f.max_duration
    ):
        raise ApiError(400, "bad-request", "filters.min_duration is above filters.max_duration")
    from nomarr_client.tags import slug

    mins = {slug(k): v for k, v in f.min_scores.items()} if f.min_scores else None
    return query.Filters(
        under=under, min_duration=f.min_duration, max_duration=f.max_duration, min_scores=mins
    )


def _check_labels(st: Any, filters: query.Filters | None) -> None:
    """A ``min_scores`` label no model scores would silently filter out everything: say so."""
    if filters is None or not filters.min_scores:
        return
    known = query.labels(st)
    unknown = sorted(k for k in filters.min_scores if k not in known)
    if unknown:
        raise query.QueryError(
            f"filters.min_scores: no model in this library scores {', '.join(map(repr, unknown))}"
        )


def _seed(agent: Agent, track_id: int | None, path: str | None) -> str | int:
    if track_id is not None:
        if track_id > 2**63 - 1:  # past SQLite's 64-bit integers: no such track, not a driver error
            raise ApiError(404, "not-found", f"no track {track_id}")
        return int(track_id)
    assert path is not None
    return agent.confine(path, must_exist=False)


async def _run(fn: Callable[[], Any]) -> Any:
    """Database and numpy work off the event loop."""
    return await asyncio.to_thread(fn)


# -- handlers ----------------------------------------------------------------------------------


async def health(request: web.Request) -> api.Health:
    return api.Health(version=agent_of(request).version)


async def status(request: web.Request) -> api.Status:
    agent = agent_of(request)
    return await _run(agent.status)


async def openapi_doc(request: web.Request) -> Any:
    from nomarr.server.openapi import document

    return web.json_response(document(ROUTES, agent_of(request).version))


async def list_tracks(request: web.Request) -> api.TrackPage:
    agent = agent_of(request)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    limit = _int_param(request, "limit", 100, 1, 1000)
    status_ = request.query.get("status", "ok")
    if status_ not in ("ok", "failed", "missing", "all"):
        raise ApiError(400, "bad-request", "status must be ok, failed, missing or all")
    under = request.query.getall("under", [])
    if len(under) > 64:
        raise ApiError(400, "bad-request", "at most 64 under folders")
    dirs = [agent.confine(u, must_exist=False, known_ok=False) for u in under]

    def work() -> api.TrackPage:
        st = agent.store()
        rows = st.tracks(
            status=None if status_ == "all" else status_,
            under=dirs or None,
            limit=limit + 1,
            offset=offset,
        )
        total = st.count_tracks(status=None if status_ == "all" else status_, under=dirs or None)
        items = [_track(t) for t in rows[:limit]]
        return api.TrackPage(
            items=items,
            total=total,
            offset=offset,
            limit=limit,
            next_offset=offset + limit if len(rows) > limit else None,
        )

    return await _run(work)


async def get_track(request: web.Request) -> api.TrackDetail:
    agent = agent_of(request)
    try:
        tid = int(request.match_info["id"])
    except ValueError:
        raise ApiError(400, "bad-request", "track id must be an integer") from None
    if not 1 <= tid <= 2**63 - 1:
        raise ApiError(404, "not-found", f"no track {tid}")

    def work() -> api.TrackDetail:
        d = library.track_detail(agent.store(), tid, agent.cfg.mood_field)
        if d is None:
            raise ApiError(404, "not-found", f"no track {tid}")
        return d

    return await _run(work)


async def lookup(request: web.Request) -> api.TrackList:
    agent = agent_of(request)
    q = request.query
    given = [k for k in ("path", "fingerprint", "mbid", "isrc") if q.get(k)]
    if len(given) != 1:
        raise ApiError(400, "bad-request", "give exactly one of path, fingerprint, mbid, isrc")
    key = given[0]
    val = q[key]
    if len(val) > 65536:
        raise ApiError(413, "too-large", f"{key} is too long")

    def work() -> api.TrackList:
        st = agent.store()
        if key == "path":
            return api.TrackList(
                items=[_track(t) for t in st.lookup(path=agent.confine(val, must_exist=False))]
            )
        if key == "mbid":
            return api.TrackList(items=[_track(t) for t in st.lookup(mbid=val.lower())])
        if key == "isrc":
            return api.TrackList(items=[_track(t) for t in st.lookup(isrc=val.upper())])
        from nomarr.fingerprint import Fingerprint, decode_compressed, match_recording

        try:
            values = decode_compressed(val)
        except ValueError as e:
            raise ApiError(400, "bad-request", f"fingerprint: {e}") from None
        dur = q.get("duration")
        try:
            duration = float(dur) if dur else 0.0
        except ValueError:
            raise ApiError(400, "bad-request", "duration must be a number") from None
        rec = match_recording(st, Fingerprint(duration, values))
        if rec is None:
            return api.TrackList(items=[])
        return api.TrackList(items=[_track(t) for t in st.tracks_of_recordings([rec]).get(rec, [])])

    return await _run(work)


async def similar(request: web.Request) -> api.HitList:
    agent = agent_of(request)
    req: api.SimilarRequest = await _json_body(request, api.SimilarRequest)
    filters = _filters(agent, req.filters)
    seed = _seed(agent, req.track_id, req.path) if req.vector is None else None

    def work() -> api.HitList:
        _check_labels(agent.store(), filters)
        st = agent.store()
        if req.vector is not None:
            assert req.model is not None
            space = query.pick_space(st, req.model)
            vec = np.asarray(req.vector, dtype=np.float32)
            if not np.all(np.isfinite(vec)) or not np.any(vec):
                raise ApiError(400, "bad-request", "vector must be finite and not all zero")
            dim = next((d for mid, d in st.spaces().values() if mid == space), None)
            if dim is not None and dim != vec.shape[0]:
                raise ApiError(
                    400, "bad-request", f"vector has {vec.shape[0]} dimensions; {space} has {dim}"
                )
            hits = query.similar_to_vector(
                st, vec, space, req.limit, filters=filters, distinct=req.distinct
            )
            return api.HitList(model=space, items=_hits(hits))
        assert seed is not None
        space = query.pick_space(st, req.model)
        seed_track, hits = query.similar(
            st, seed, req.limit, model=space, filters=filters, distinct=req.distinct
        )
        return api.HitList(model=space, seed=_track(seed_track), items=_hits(hits))

    return await _run(work)


async def moods(request: web.Request) -> api.MoodList:
    agent = agent_of(request)

    def work() -> api.MoodList:
        labs = query.labels(agent.store())
        items = [api.MoodLabel(label=k, models=sorted(v)) for k, v in sorted(labs.items())]
        return api.MoodList(items=items, zero_shot=_clap_text_ready(agent))

    return await _run(work)


async def tag_keys(request: web.Request) -> api.TagKeyList:
    agent = agent_of(request)

    def work() -> api.TagKeyList:
        st = agent.store()
        prefixes = st.model_prefixes()
        items = []
        for key, n in st.written_keys():
            try:
                pk = tagkeys.parse_key(key)
            except ValueError:  # not ours to describe (the writer only writes parseable keys)
                continue
            prefix = f"{tagkeys.PREFIX}{pk.group}_"
            items.append(
                api.TagKey(
                    key=pk.key,
                    tracks=n,
                    kind=pk.kind,
                    prefix=prefix,  # type: ignore[arg-type]
                    label=None if pk.kind == "provenance" else pk.label,
                    tier=pk.tier,  # type: ignore[arg-type]
                    model=prefixes.get(prefix),
                )
            )
        return api.TagKeyList(items=items)

    return await _run(work)


def _clap_text_ready(agent: Agent) -> bool:
    try:
        return any(
            m.kind == "clap-text" and agent.registry.installed(m)
            for m in agent.registry.manifests().values()
        )
    except Exception:
        return False


async def playlist_mood(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.MoodPlaylistRequest = await _json_body(request, api.MoodPlaylistRequest)
    filters = _filters(agent, req.filters)

    def work() -> api.Playlist:
        _check_labels(agent.store(), filters)
        st = agent.store()
        if req.model is not None and req.model not in st.model_ids():
            raise query.QueryError(
                f"no analyses of model {req.model!r} in this library (have: {', '.join(st.model_ids()) or 'none'})"
            )
        try:
            hits = query.mood_playlist(
                st, req.label, req.limit, model=req.model, min_score=req.min_score, filters=filters
            )
            return api.Playlist(kind="mood", model=req.model, items=_hits(hits))
        except query.QueryError:
            if req.model is not None or not _clap_text_ready(agent):
                raise
        # no model scores this label: with CLAP, any words are a mood (zero-shot)
        hits = query.text_playlist(
            st, f"{req.label} music", req.limit, filters=filters, registry=agent.registry
        )
        return api.Playlist(kind="mood", zero_shot=True, items=_hits(hits))

    return await _run(work)


async def playlist_radio(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.RadioRequest = await _json_body(request, api.RadioRequest)
    filters = _filters(agent, req.filters)
    seed = _seed(agent, req.track_id, req.path)

    def work() -> api.Playlist:
        _check_labels(agent.store(), filters)
        st = agent.store()
        space = query.pick_space(st, req.model)
        hits = query.radio(
            st, seed, req.limit + len(req.exclude_track_ids), model=space, filters=filters
        )
        skip = set(req.exclude_track_ids)
        hits = [h for i, h in enumerate(hits) if i == 0 or h.track.id not in skip][: req.limit]
        return api.Playlist(kind="radio", model=space, items=_hits(hits))

    return await _run(work)


async def playlist_path(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.PathPlaylistRequest = await _json_body(request, api.PathPlaylistRequest)
    filters = _filters(agent, req.filters)
    a = _seed(agent, req.start.track_id, req.start.path)
    b = _seed(agent, req.end.track_id, req.end.path)

    def work() -> api.Playlist:
        _check_labels(agent.store(), filters)
        st = agent.store()
        space = query.pick_space(st, req.model)
        return api.Playlist(
            kind="path",
            model=space,
            items=_hits(query.path_playlist(st, a, b, req.limit, model=space, filters=filters)),
        )

    return await _run(work)


async def playlist_text(request: web.Request) -> api.Playlist:
    agent = agent_of(request)
    req: api.TextPlaylistRequest = await _json_body(request, api.TextPlaylistRequest)
    filters = _filters(agent, req.filters)

    def work() -> api.Playlist:
        _check_labels(agent.store(), filters)
        return api.Playlist(
            kind="text",
            items=_hits(
                query.text_playlist(
                    agent.store(), req.text, req.limit, filters=filters, registry=agent.registry
                )
            ),
        )

    return await _run(work)


async def analyze(request: web.Request) -> api.AnalyzeResponse:
    agent = agent_of(request)
    ctype = request.content_type
    if ctype in ("application/octet-stream", "multipart/form-data") or ctype.startswith("audio/"):
        return await _analyze_upload(request)
    req: api.AnalyzeRequest = await _json_body(request, api.AnalyzeRequest)
    path = agent.confine(req.path)
    if not os.path.isfile(path):
        raise ApiError(400, "bad-request", f"{req.path}: not a file")
    _check_models(agent, req.profile, req.models)
    stored = await _run(lambda: _stored_analysis(agent, path, req))
    if stored is not None:
        return stored
    doc = await _analyze_file(agent, path, req.profile, req.models, req.embedding)
    th = await _run(lambda: agent.store().tier_thresholds())
    return library.fresh_answer(doc, th, path=path, filename=os.path.basename(path))


def _check_models(agent: Agent, profile: str | None, model_ids: list[str] | None) -> None:
    from nomarr.models.registry import ModelError
    from nomarr.pipeline.analyze import resolve_models
    from nomarr.pipeline.profiles import get_profile

    if profile is not None:
        try:
            get_profile(profile)
        except (KeyError, ValueError) as e:
            raise ApiError(400, "bad-request", str(e).strip("'\"")) from None
    if model_ids:
        try:
            for m in resolve_models(agent.registry, model_ids):
                if not agent.registry.installed(m):
                    raise ApiError(
                        409,
                        "model-missing",
                        f"model {m.id} is not installed: POST /models/{m.id}/pull "
                        f"or `nomarr models pull {m.id}`",
                    )
        except ModelError as e:
            raise ApiError(400, "bad-request", str(e)) from None


def _stored_analysis(
    agent: Agent, path: str, req: api.AnalyzeRequest
) -> api.AnalyzeResponse | None:
    """The library's own current result for a scanned, unchanged file (no model run needed)."""
    if req.models or (req.profile and req.profile != agent.cfg.profile):
        return None
    return library.stored_answer(agent.store(), path, agent.want, req.embedding)


async def _analyze_file(
    agent: Agent, path: str, profile: str | None, model_ids: list[str] | None, embedding: bool
) -> dict[str, Any]:
    from nomarr.workers import analyze_job

    assert agent.analyses is not None
    if agent.analyses.locked():
        log.info("analysis request waiting for a slot", extra={"path": path})
    async with agent.analyses:
        fut = agent.pool.submit(analyze_job, path, profile, model_ids, embedding)
        try:
            doc: dict[str, Any] = await asyncio.wrap_future(fut)
        except BrokenProcessPool:
            agent.pool.reset()  # the next request or scan gets fresh workers
            raise ApiError(
                422,
                "unprocessable",
                "the analysis worker crashed on this file (a decoder or model "
                "crash); the agent has restarted its workers",
            ) from None
    err = doc.get("error")
    if err:
        status, code = {"model": (409, "model-missing")}.get(
            err.get("kind"), (422, "unprocessable")
        )
        raise ApiError(status, code, str(err.get("message")))
    return doc


async def _analyze_upload(request: web.Request) -> api.AnalyzeResponse:
    """Stream the uploaded bytes to a temp file (never all in memory), analyse, delete."""
    from nomarr.audio.decode import AUDIO_EXTENSIONS

    agent = agent_of(request)
    limit = agent.cfg.max_upload_mb * 1024 * 1024
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too-large", f"upload over {agent.cfg.max_upload_mb} MiB")
    filename = request.query.get("filename", "")
    profile = request.query.get("profile") or None
    model_ids = [m for m in request.query.getall("model", []) if m] or None
    embedding = request.query.get("embedding", "false").lower() in ("1", "true", "yes")
    source: Any = request.content
    if request.content_type == "multipart/form-data":
        part: Any = None
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None or getattr(part, "name", None) == "file":
                    break
        except (
            ValueError,
            HttpProcessingError,
        ) as e:  # no boundary, bad part headers: the caller's
            raise ApiError(400, "bad-request", f"malformed multipart body: {e}") from None
        if part is None:
            raise ApiError(400, "bad-request", 'multipart upload needs a part named "file"')
        filename = filename or (part.filename or "")
        source = part
    filename = os.path.basename(filename.replace("\\", "/"))
    suffix = os.path.splitext(filename)[1].lower()
    if suffix not in AUDIO_EXTENSIONS:
        raise ApiError(
            415,
            "unsupported-media-type",
            f"name the upload with ?filename=NAME.ext, ext one of {', '.join(sorted(AUDIO_EXTENSIONS))}",
        )
    _check_models(agent, profile, model_ids)
    fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=agent.uploads)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            while True:
                chunk = await (
                    source.read_chunk(1 << 16)
                    if hasattr(source, "read_chunk")
                    else source.read(1 << 16)
                )
                if isinstance(chunk, tuple):  # StreamReader.readchunk-style (data, end)
                    chunk = chunk[0]
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "too-large", f"upload over {agent.cfg.max_upload_mb} MiB")
                await asyncio.to_thread(f.write, chunk)
        if size == 0:
            raise ApiError(400, "bad-request", "empty upload")
        doc = await _analyze_file(agent, tmp, profile, model_ids, embedding)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    th = await _run(lambda: agent.store().tier_thresholds())
    return library.fresh_answer(doc, th, path=None, filename=filename)


async def list_models(request: web.Request) -> api.ModelList:
    agent = agent_of(request)

    def work() -> api.ModelList:
        from nomarr.pipeline.analyze import planned_provenance
        from nomarr.pipeline.profiles import get_profile

        reg = agent.registry
        profile = get_profile(agent.cfg.profile)
        items = []
        for m in sorted(reg.manifests().values(), key=lambda m: (m.kind, m.id)):
            dim = m.outputs.embedding_dim
            installed = reg.installed(m)
            writes_tags = m.kind in (
                "embedder",
                "head",
                "clap-audio",
            )  # clap-text only serves queries
            prov = agent.want.get(m.id)
            if prov is None and installed and writes_tags:
                try:  # what a client asking for this model alone (POST /analyze models=[id]) would get
                    prov = planned_provenance(reg, [m.id], profile).get(m.id)
                except (
                    Exception
                ) as e:  # a corrupt file: the model is listed, its provenance unknown
                    log.debug("no provenance for %s: %s", m.id, e)
            items.append(
                api.ModelInfo(
                    id=m.id,
                    kind=m.kind,
                    installed=installed,
                    builtin=m.builtin,
                    licence=m.licence or None,
                    source=m.source_url or None,
                    size=sum(f.size or 0 for f in m.files) or None,
                    labels=len(m.labels),
                    embedding_dim=int(dim) if isinstance(dim, int) else None,
                    needs=m.embedder_id if m.kind == "head" else None,
                    tag_prefix=m.namespace.prefix() if writes_tags else None,
                    default=m.id in agent.want,
                    provenance=prov,
                )
            )
        return api.ModelList(items=items)

    return await _run(work)


async def pull_model(request: web.Request) -> api.PullResponse:
    agent = agent_of(request)
    mid = request.match_info["id"]

    def work() -> api.PullResponse:
        from nomarr.models.registry import ModelError

        reg = agent.registry
        try:
            m = reg.get(mid)
        except (ModelError, KeyError):
            raise ApiError(404, "not-found", f"no model {mid!r} (GET /models lists them)") from None
        if reg.installed(m):
            return api.PullResponse(
                id=m.id, status="already-installed", files=[f.name for f in m.files]
            )
        try:
            reg.pull(m)
        except ModelError as e:
            raise ApiError(502, "unavailable", f"download failed: {e}") from None
        except OSError as e:
            raise ApiError(502, "unavailable", f"download failed: {e}") from None
        return api.PullResponse(id=m.id, status="installed", files=[f.name for f in m.files])

    if not agent.pull_lock.locked():
        async with agent.pull_lock:
            return await _run(work)
    raise ApiError(409, "busy", "another model download is running; try again when it finished")


async def scan(request: web.Request) -> api.ScanQueued:
    agent = agent_of(request)
    req: api.ScanRequest = await _json_body(request, api.ScanRequest)
    paths_ = (
        [agent.confine(p, must_exist=False, known_ok=False) for p in req.paths]
        if req.paths
        else list(agent.roots)
    )
    pending = agent.submit(paths_, "api")
    return api.ScanQueued(queued=len(paths_), pending=pending)


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
            _q("offset", "integer", "first item", minimum=0),
            _q("limit", "integer", "page size", minimum=1, maximum=1000),
            _q(
                "status",
                "string",
                "ok (default), failed, missing or all",
                enum=["ok", "failed", "missing", "all"],
            ),
            _q("under", "string", "only below this folder (repeatable; inside a library root)"),
        ],
    ),
    Route(
        "GET",
        "/tracks/lookup",
        lookup,
        "Find tracks by path, Chromaprint fingerprint, MusicBrainz id or ISRC",
        api.TrackList,
        query=[
            _q("path", "string", "absolute path inside a library root"),
            _q(
                "fingerprint",
                "string",
                "compressed Chromaprint fingerprint (fpcalc's default output)",
            ),
            _q(
                "duration",
                "number",
                "the fingerprinted audio's duration in seconds (improves matching)",
            ),
            _q("mbid", "string", "MusicBrainz recording id"),
            _q("isrc", "string", "ISRC"),
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
            _q("filename", "string", "uploads: the file name (its extension picks the decoder)"),
            _q("profile", "string", "uploads: sampling profile"),
            _q("model", "string", "uploads: model id (repeatable)"),
            _q("embedding", "boolean", "uploads: include embeddings"),
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
        "/scan",
        scan,
        "Queue a rescan of some paths (default: every library root)",
        api.ScanQueued,
        request=api.ScanRequest,
        tag="agent",
    ),
]

_STATUS_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
}


def _error(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = api.ErrorResponse(error=api.ErrorBody(code=code, message=message, details=details))
    return web.Response(
        status=status,
        text=_json_text(body, exclude_none=True),
        content_type="application/json",
        headers=headers,
    )


def _json_text(model: BaseModel, **kw: Any) -> str:
    """The answer as JSON. A file name that is not UTF-8 (os.fsdecode's surrogate escapes, also
    echoed in error messages) makes pydantic's encoder fail; json.dumps writes it as \\udcXX
    escapes instead, as the CLI's --json does, and os.fsencode(json.loads(...)) restores the bytes."""
    try:
        return model.model_dump_json(**kw)
    except PydanticSerializationError:
        return json.dumps(model.model_dump(mode="json", **kw))


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        res = await route.handler(request)
        if isinstance(res, web.StreamResponse):
            return res
        return web.Response(text=_json_text(res), content_type="application/json")

    return handle


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except ApiError as e:
        resp = _error(
            e.status,
            e.code,
            e.message,
            e.details,
            {"WWW-Authenticate": "Bearer"} if e.status == 401 else None,
        )
    except PathInvalid as e:
        resp = _error(400, "bad-request", str(e))
    except PathDenied as e:
        resp = _error(403, "forbidden", str(e))
    except FileNotFoundError as e:
        resp = _error(404, "not-found", f"{e.filename or e}: no such file")
    except query.UnknownTrack as e:
        resp = _error(404, "not-found", str(e))
    except query.ModelRequired as e:
        resp = _error(409, "model-missing", str(e))
    except query.QueryError as e:
        resp = _error(422, "unprocessable", str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _STATUS_CODES.get(e.status, "bad-request" if e.status < 500 else "internal")
        msg = e.reason if e.status != 413 else "request body too large"
        resp = _error(e.status, code, msg)
    except ValidationError as e:  # a model we built from stored data (a bug) or a query param
        resp = _error(400, "bad-request", _validation_message(e), _details(e))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request failed", extra={"method": request.method, "path": request.path})
        resp = _error(500, "internal", "internal error (logged by the agent)")
    log.debug(
        "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": resp.status,
            "ms": round((time.perf_counter() - t0) * 1e3, 2),
        },
    )
    return resp


def _auth(token: str | None) -> Any:
    expected = token.encode() if token else None

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if expected is None or request.path == api.API_PREFIX + "/health":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected
        )
        if not ok:
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong token: send Authorization: Bearer <token> "
                '(the token is in the agent\'s config dir, file "token")',
            )
        return await handler(request)

    return auth


AGENT_KEY: web.AppKey[Agent] = web.AppKey("agent", Agent)


def create_app(agent: Agent) -> web.Application:
    """The aiohttp application for one agent (the caller runs and stops the agent itself)."""
    # aiohttp's own body limit backs up ours; uploads are streamed and checked separately
    app = web.Application(
        middlewares=[_errors, _auth(agent.token)],
        client_max_size=max(agent.cfg.max_json_kb * 1024, 1 << 20),
    )
    app[AGENT_KEY] = agent
    for r in ROUTES:
        app.router.add_route(r.method, api.API_PREFIX + r.path, _wrap(r))
    app.router.add_get(api.API_PREFIX + "/openapi.json", openapi_doc)
    return app
