"""Analysis, models and rescans over HTTP: ``POST /analyze`` (a library file or uploaded bytes),
``GET /models``, ``POST /models/{id}/pull`` and ``POST /scan``.

Analyses run in the agent's worker pool, never in the server process; uploads are streamed to a
temporary file under the agent's uploads folder and deleted once analysed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from nomarr_client import models as api

from nomarr import library
from nomarr.server.http import ApiError, agent_of, json_body, off_loop
from nomarr.server.service import Agent

log = logging.getLogger("nomarr.api")


async def analyze(request: web.Request) -> api.AnalyzeResponse:
    agent = agent_of(request)
    ctype = request.content_type
    if ctype in ("application/octet-stream", "multipart/form-data") or ctype.startswith("audio/"):
        return await _analyze_upload(request)
    req: api.AnalyzeRequest = await json_body(request, api.AnalyzeRequest)
    path = agent.confine(req.path)
    if not os.path.isfile(path):
        raise ApiError(400, "bad-request", f"{req.path}: not a file")
    check_models(agent, req.profile, req.models)
    stored = await off_loop(lambda: _stored_analysis(agent, path, req))
    if stored is not None:
        return stored
    doc = await _analyze_file(agent, path, req.profile, req.models, req.embedding)
    th = await off_loop(lambda: agent.store().tier_thresholds())
    return library.fresh_answer(doc, th, path=path, filename=os.path.basename(path))


def check_models(agent: Agent, profile: str | None, model_ids: list[str] | None) -> None:
    from nomarr.models.registry import ModelError
    from nomarr.pipeline.modelset import resolve_models
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
    check_models(agent, profile, model_ids)
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
    th = await off_loop(lambda: agent.store().tier_thresholds())
    return library.fresh_answer(doc, th, path=None, filename=filename)


async def list_models(request: web.Request) -> api.ModelList:
    agent = agent_of(request)

    def work() -> api.ModelList:
        from nomarr.pipeline.modelset import planned_provenance
        from nomarr.pipeline.profiles import get_profile
        from nomarr.server.api_console import precision_of

        reg = agent.registry
        profile = get_profile(agent.cfg.profile)
        usage = agent.store().provider_usage()
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
                    name=m.name or None,
                    licence_url=m.licence_url or None,
                    providers=usage.get(m.id, {}),
                    precision=precision_of(m),
                    tag_prefix=m.namespace.prefix() if writes_tags else None,
                    default=m.id in agent.want,
                    provenance=prov,
                )
            )
        return api.ModelList(items=items)

    return await off_loop(work)


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
            reg.pull(
                m,
                progress=lambda name, done, total: agent.on_pull_progress(m.id, name, done, total),
            )
        except ModelError as e:
            raise ApiError(502, "unavailable", f"download failed: {e}") from None
        except OSError as e:
            raise ApiError(502, "unavailable", f"download failed: {e}") from None
        finally:
            agent.pull_state = None
            agent.state_version += 1
        return api.PullResponse(id=m.id, status="installed", files=[f.name for f in m.files])

    if not agent.pull_lock.locked():
        async with agent.pull_lock:
            return await off_loop(work)
    raise ApiError(409, "busy", "another model download is running; try again when it finished")


async def scan(request: web.Request) -> api.ScanQueued:
    agent = agent_of(request)
    req: api.ScanRequest = await json_body(request, api.ScanRequest)
    paths_ = (
        [agent.confine(p, must_exist=False) for p in req.paths] if req.paths else list(agent.roots)
    )
    pending = agent.submit(paths_, "api")
    return api.ScanQueued(queued=len(paths_), pending=pending)
