"""Streaming ingest over HTTP (docs/ingest.md): audio the agent cannot read as a file arrives as
PCM chunks, is analysed by the same pipeline as a scanned file, and is stored as a recording
without a file; plus lookups of streamed recordings.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from aiohttp import web
from nomarr_client import models as api

from nomarr import library
from nomarr.ingest.sessions import MAX_CHUNK_BYTES, IngestError, Session
from nomarr.ingest.store import store_ingest
from nomarr.server.http import ApiError, agent_of, json_body, off_loop, read_body
from nomarr.server.service import Agent

log = logging.getLogger("nomarr.api")


def _api_error(e: IngestError) -> ApiError:
    return ApiError(e.status, e.code, e.message)


def _sid(request: web.Request) -> str:
    sid = request.match_info["id"]
    if not (1 <= len(sid) <= 64 and sid.isalnum()):
        raise ApiError(404, "not-found", "no such ingest session")
    return sid


def _info(agent: Agent, s: Session) -> api.IngestSession:
    return api.IngestSession(**s.info(agent.ingest.limits))


async def start(request: web.Request) -> api.IngestSession:
    agent = agent_of(request)
    req: api.IngestStart = await json_body(request, api.IngestStart)
    f = req.format
    try:
        s = await off_loop(
            lambda: agent.ingest.start(
                req.identity.model_dump(), f.encoding, f.sample_rate, f.channels
            )
        )
    except IngestError as e:
        raise _api_error(e) from None
    return _info(agent, s)


async def status(request: web.Request) -> api.IngestSession:
    agent = agent_of(request)
    try:
        return _info(agent, agent.ingest.get(_sid(request)))
    except IngestError as e:
        raise _api_error(e) from None


async def chunk(request: web.Request) -> api.IngestSession:
    agent = agent_of(request)
    sid = _sid(request)
    raw = request.query.get("seq", "")
    if not raw.isdigit() or len(raw) > 12:
        raise ApiError(400, "bad-request", "seq must be the chunk's number (0, 1, 2, …)")
    seq = int(raw)
    data = await read_body(
        request, MAX_CHUNK_BYTES, f"a chunk may hold at most {MAX_CHUNK_BYTES} bytes"
    )
    try:
        s, _dup = await off_loop(lambda: agent.ingest.add(sid, seq, data))
    except IngestError as e:
        raise _api_error(e) from None
    return _info(agent, s)


async def abort(request: web.Request) -> api.IngestSession:
    agent = agent_of(request)
    try:
        s = await off_loop(lambda: agent.ingest.abort(_sid(request)))
    except IngestError as e:
        raise _api_error(e) from None
    return _info(agent, s)


async def end(request: web.Request) -> api.IngestResult:
    """Analyse the session's audio in the worker pool, then store it in one transaction."""
    from nomarr.workers import ingest_job

    agent = agent_of(request)
    sid = _sid(request)
    try:
        s = agent.ingest.begin_end(sid)
    except IngestError as e:
        raise _api_error(e) from None
    try:
        assert agent.analyses is not None
        async with agent.analyses:
            fut = agent.pool.submit(ingest_job, str(s.spool), s.rate, f"stream:{sid}", False)
            try:
                res: dict[str, Any] = await asyncio.wrap_future(fut)
            except BrokenProcessPool:
                agent.pool.reset()
                raise ApiError(
                    422,
                    "unprocessable",
                    "the analysis worker crashed on this stream; nothing was stored",
                ) from None
        if res.get("kind") == "failed":
            raise ApiError(422, "unprocessable", f"{res.get('error')}; nothing was stored")
        result = await off_loop(lambda: agent.write(lambda st: _store(agent, st, s, res)))
    except BaseException:
        agent.ingest.finish(s, "aborted")
        raise
    agent.ingest.finish(s, "done")
    try:
        await off_loop(agent.rematch)  # listens of this item may match it now
    except Exception:
        log.exception("re-matching listens after an ingest failed")
    return result


def _store(agent: Agent, st: Any, s: Session, res: dict[str, Any]) -> api.IngestResult:
    try:
        stream_id, rec, matched, wrote = store_ingest(
            st, res, s.identity, s.rate, s.channels, agent.cfg.profile, agent.want
        )
    except RuntimeError as e:
        raise ApiError(409, "conflict", str(e)) from None
    item = st.stream(stream_id)
    th = st.tier_thresholds()
    if res.get("kind") == "analysed":
        analysis = library.fresh_answer(res["doc"], th, path=None, filename=item.title or None)
    else:
        analysis = library.recording_answer(
            st, rec, path=None, filename=item.title or None, duration=res.get("duration")
        )
    log.info(
        "stream stored",
        extra={"stream": stream_id, "recording": rec, "matched": matched, "analysed": wrote},
    )
    return api.IngestResult(
        session=s.id,
        stream=api.Track(**item.to_dict()),
        recording_id=rec,
        analysed=wrote,
        matched=matched,
        seconds=round(float(res.get("duration") or 0.0), 3),
        analysis=analysis,
    )


async def get_stream(request: web.Request) -> api.Track:
    agent = agent_of(request)
    try:
        sid = int(request.match_info["id"])
    except ValueError:
        raise ApiError(400, "bad-request", "stream id must be an integer") from None
    if not 1 <= sid <= 2**63 - 1:
        raise ApiError(404, "not-found", f"no stream {sid}")

    def work() -> api.Track:
        t = agent.store().stream(sid)
        if t is None:
            raise ApiError(404, "not-found", f"no stream {sid}")
        return api.Track(**t.to_dict())

    return await off_loop(work)


async def lookup_recording(request: web.Request) -> api.TrackList:
    """Files and streams of the recording with this provider id, MusicBrainz id or ISRC: how a
    host learns whether the agent already knows a track it is playing."""
    agent = agent_of(request)
    q = request.query
    given = [k for k in ("provider_id", "mbid", "isrc") if q.get(k)]
    if len(given) != 1:
        raise ApiError(400, "bad-request", "give exactly one of provider_id, mbid, isrc")
    key, val = given[0], q[given[0]]
    if len(val) > 1000:
        raise ApiError(413, "too-large", f"{key} is too long")

    def work() -> api.TrackList:
        st = agent.store()
        field = {"provider_id": "provider_id", "mbid": "mb_recording", "isrc": "isrc"}[key]
        m = agent.matcher.match(st, {field: val})
        if m.recording_id is None:
            return api.TrackList(items=[])
        items = st.tracks_of_recordings([m.recording_id]).get(m.recording_id, [])
        items += st.streams_of_recordings([m.recording_id]).get(m.recording_id, [])
        return api.TrackList(items=[api.Track(**t.to_dict()) for t in items])

    return await off_loop(work)
