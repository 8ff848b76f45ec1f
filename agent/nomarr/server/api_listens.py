"""Listens over HTTP (docs/listens.md): users, listens from any source, ListenBrainz exports and
syncs, play counters, favourites, and each user's data exported or deleted in one call.

Every write goes through :meth:`Agent.write` (one API writer at a time) on a worker thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from nomarr_client import models as api

from nomarr.listens import listenbrainz as lb
from nomarr.listens.counters import CounterItem, apply_counters
from nomarr.listens.record import ImportSummary, ListenIn, record_favourites, record_listens
from nomarr.server.http import ApiError, agent_of, int_param, json_body, off_loop, read_body
from nomarr.server.service import Agent

log = logging.getLogger("nomarr.api")

BATCH_KB = 16 * 1024  # listens, counters and favourites come in batches larger than a query


def user_of(request: web.Request) -> str:
    """The ``{user}`` of the path: the user id as the source names it."""
    user = request.match_info["user"]
    if not user or len(user) > api.MAX_USER or any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise ApiError(400, "bad-request", f"user must be 1..{api.MAX_USER} printable characters")
    try:
        user.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "bad-request", "user is not valid text") from None
    return user


def ids_of(x: api.Identity) -> dict[str, Any]:
    """An API identity as the store's keys."""
    return {
        "track_id": x.track_id,
        "stream_id": x.stream_id,
        "mb_recording": x.mbid,
        "isrc": x.isrc,
        "provider_id": x.provider_id,
        "artist": x.artist,
        "title": x.title,
        "album": x.album,
        "duration": x.duration,
    }


def import_result(s: ImportSummary, **extra: Any) -> dict[str, Any]:
    return s.to_dict() | extra


# -- users ---------------------------------------------------------------------------------------


async def list_users(request: web.Request) -> api.UserList:
    agent = agent_of(request)

    def work() -> api.UserList:
        st = agent.store()
        return api.UserList(
            items=[api.UserSummary(user=u, **st.listen_stats(u)) for u in st.users()]
        )

    return await off_loop(work)


async def export_user(request: web.Request) -> api.UserExport:
    agent = agent_of(request)
    user = user_of(request)

    def work() -> api.UserExport:
        st = agent.store()
        if not st.has_user(user):
            raise ApiError(404, "not-found", f"no data stored for user {user!r}")
        return api.UserExport(exported=time.time(), **st.export_user(user))

    return await off_loop(work)


async def delete_user(request: web.Request) -> api.UserDeleted:
    agent = agent_of(request)
    user = user_of(request)

    def work(st: Any) -> api.UserDeleted:
        if not st.has_user(user):
            raise ApiError(404, "not-found", f"no data stored for user {user!r}")
        with st.tx():
            deleted = st.delete_user(user)
        agent.taste.forget(user)
        log.info("user data deleted", extra={"user": user, **deleted})
        return api.UserDeleted(user=user, deleted=deleted)

    return await off_loop(lambda: agent.write(work))


# -- listens -------------------------------------------------------------------------------------


async def add_listens(request: web.Request) -> api.ImportResult:
    agent = agent_of(request)
    user = user_of(request)
    req: api.ListensRequest = await json_body(request, api.ListensRequest, limit_kb=BATCH_KB)
    listens = [
        ListenIn(
            ts=x.ts,
            source=req.source,
            outcome=x.outcome,
            seconds=x.seconds,
            ids=ids_of(x),
            dedup=f"{req.source}:{x.id}" if x.id else None,
        )
        for x in req.listens
    ]
    s = await off_loop(
        lambda: agent.write(lambda st: record_listens(st, agent.matcher, user, listens))
    )
    return api.ImportResult(**import_result(s))


async def get_listens(request: web.Request) -> api.ListenPage:
    agent = agent_of(request)
    user = user_of(request)
    offset = int_param(request, "offset", 0, 0, 10**9)
    limit = int_param(request, "limit", 100, 1, 1000)
    since = _float_param(request, "since")
    until = _float_param(request, "until")
    unmatched = request.query.get("unmatched", "false").lower() in ("1", "true", "yes")

    def work() -> api.ListenPage:
        st = agent.store()
        rows = st.listens(
            user, since=since, until=until, unmatched=unmatched, limit=limit, offset=offset
        )
        total = st.count_listens(user, since=since, until=until, unmatched=unmatched)
        items = st.items_of_recordings(sorted({r.recording_id for r in rows if r.recording_id}))
        out = []
        for r in rows:
            d = r.to_dict()
            d.pop("user")
            t = (items.get(r.recording_id or 0) or [None])[0]
            out.append(api.StoredListen(**d, track=None if t is None else api.Track(**t.to_dict())))
        return api.ListenPage(
            items=out,
            total=total,
            offset=offset,
            limit=limit,
            next_offset=offset + limit if offset + limit < total else None,
        )

    return await off_loop(work)


def _float_param(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(400, "bad-request", f"{name} must be a unix time in seconds") from None
    if not 0 <= v < 32503680000:
        raise ApiError(400, "bad-request", f"{name} must be a unix time in seconds")
    return v


async def import_listens(request: web.Request) -> api.ImportResult:
    """A ListenBrainz export uploaded as the body (the zip, a JSON array or JSON lines)."""
    agent = agent_of(request)
    user = user_of(request)
    data = await read_body(
        request, agent.cfg.max_upload_mb * 1024 * 1024, f"upload over {agent.cfg.max_upload_mb} MiB"
    )
    if not data:
        raise ApiError(400, "bad-request", "empty body: send the export file's bytes")

    def work(st: Any) -> dict[str, Any]:
        try:
            exp = lb.parse_export(data)
        except lb.ListenBrainzError as e:
            raise ApiError(400, "bad-request", str(e)) from None
        s = record_listens(st, agent.matcher, user, exp.listens, exp.summary)
        if exp.feedback:
            changed, _ = record_favourites(
                st, agent.matcher, user, lb.SOURCE, exp.feedback, complete=True
            )
            s.favourites = changed
        return import_result(s, username=exp.username)

    return api.ImportResult(**await off_loop(lambda: agent.write(work)))


# -- ListenBrainz API sync -----------------------------------------------------------------------


async def sync_listenbrainz(request: web.Request) -> api.SyncResult:
    agent = agent_of(request)
    user = user_of(request)
    req: api.ListenBrainzSync | None = None
    if request.can_read_body:
        req = await json_body(request, api.ListenBrainzSync)
    return await run_sync(agent, user, req)


async def run_sync(agent: Agent, user: str, req: api.ListenBrainzSync | None) -> api.SyncResult:
    """One incremental sync of a user's ListenBrainz listens (also run by the agent on its own
    for users whose token it was asked to remember)."""
    if user in agent.syncing:
        raise ApiError(409, "busy", f"a ListenBrainz sync of {user!r} is running")
    agent.syncing.add(user)
    try:
        return await _sync(agent, user, req)
    finally:
        agent.syncing.discard(user)


async def _sync(agent: Agent, user: str, req: api.ListenBrainzSync | None) -> api.SyncResult:
    state = await off_loop(lambda: agent.store().source_state(user, lb.SOURCE))
    token = (req.token if req else None) or state.get("token")
    api_url = agent.cfg.listenbrainz_url
    lb_user = (req.lb_user if req else None) or state.get("lb_user") or user
    if req is None and not state:
        raise ApiError(
            400,
            "bad-request",
            "no ListenBrainz settings stored for this user: send lb_user and token",
        )
    cursor = state.get("cursor")
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)

    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def fetch(
            url: str, params: dict[str, str], headers: dict[str, str]
        ) -> tuple[int, dict[str, str], bytes]:
            try:
                async with session.get(url, params=params, headers=headers) as r:
                    return r.status, dict(r.headers), await r.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                raise lb.ListenBrainzError(f"cannot reach ListenBrainz at {api_url}: {e}") from e

        async def store_page(page: list[ListenIn]) -> ImportSummary:
            return await off_loop(
                lambda: agent.write(lambda st: record_listens(st, agent.matcher, user, page))
            )

        try:
            res = await lb.sync(
                fetch,
                store_page,
                api_url=api_url,
                lb_user=lb_user,
                token=token,
                cursor=cursor,
                max_pages=req.max_pages if req else 1000,
            )
        except lb.ListenBrainzError as e:
            raise ApiError(502, "unavailable", str(e)) from None

    remember = bool(req.remember) if req else bool(state.get("remember"))
    new_state: dict[str, Any] = {"lb_user": lb_user, "cursor": res.cursor, "synced": time.time()}
    if remember:
        new_state |= {"remember": True, "token": token}
    await off_loop(lambda: agent.write(lambda st: _save_state(st, user, new_state)))
    log.info(
        "ListenBrainz sync",
        extra={
            "user": user,
            "pages": res.pages,
            "added": res.summary.added,
            "waited_s": res.waited_s,
        },
    )
    return api.SyncResult(
        **import_result(res.summary),
        pages=res.pages,
        fetched=res.fetched,
        waited_s=round(res.waited_s, 3),
        cursor=res.cursor,
        complete=res.complete,
    )


def _save_state(st: Any, user: str, state: dict[str, Any]) -> None:
    with st.tx():
        st.set_source_state(user, lb.SOURCE, state)


# -- counters and favourites ---------------------------------------------------------------------


async def post_counters(request: web.Request) -> api.ImportResult:
    agent = agent_of(request)
    user = user_of(request)
    req: api.CountersRequest = await json_body(request, api.CountersRequest, limit_kb=BATCH_KB)
    items = [
        CounterItem(
            item=x.item,
            plays=x.plays,
            skips=x.skips,
            last_played=x.last_played,
            starred=x.starred,
            starred_at=x.starred_at,
            ids=ids_of(x),
        )
        for x in req.items
    ]
    s = await off_loop(
        lambda: agent.write(
            lambda st: apply_counters(
                st, agent.matcher, user, req.source, items, complete=req.complete
            )
        )
    )
    return api.ImportResult(**import_result(s))


async def post_favourites(request: web.Request) -> api.FavouritesResult:
    agent = agent_of(request)
    user = user_of(request)
    req: api.FavouritesRequest = await json_body(request, api.FavouritesRequest, limit_kb=BATCH_KB)
    now = time.time()
    items = [(x.key, x.score, x.since or now, ids_of(x)) for x in req.items]

    def work(st: Any) -> api.FavouritesResult:
        changed, removed = record_favourites(
            st, agent.matcher, user, req.source, items, complete=req.complete
        )
        matched = st.db.execute(
            "SELECT count(recording_id), count(*) FROM favourites WHERE user = ? AND source = ?",
            (user, req.source),
        ).fetchone()
        return api.FavouritesResult(
            changed=changed, removed=removed, matched=matched[0], unmatched=matched[1] - matched[0]
        )

    return await off_loop(lambda: agent.write(work))
