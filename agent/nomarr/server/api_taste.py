"""Taste over HTTP (docs/taste.md): a user's profile, recommendations and weekly trends."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from nomarr_client import models as api

from nomarr.server.api_library import parse_filters
from nomarr.server.api_listens import user_of
from nomarr.server.http import ApiError, agent_of, int_param, json_body, off_loop
from nomarr.taste.recommend import TasteError, describe
from nomarr.taste.trends import trends


def _known(st: Any, user: str) -> None:
    if not st.has_user(user):
        raise ApiError(404, "not-found", f"no listens stored for user {user!r}")


async def get_taste(request: web.Request) -> api.TasteProfile:
    agent = agent_of(request)
    user = user_of(request)
    model = request.query.get("model") or None

    def work(st: Any) -> api.TasteProfile:
        _known(st, user)
        try:
            p = agent.taste.profile(st, user, model, persist=True)
        except TasteError as e:
            raise ApiError(422, "unprocessable", str(e)) from None
        return api.TasteProfile(user=user, **describe(p, st))

    return await off_loop(lambda: agent.write(work))


async def recommendations(request: web.Request) -> api.Recommendations:
    agent = agent_of(request)
    user = user_of(request)
    req: api.RecommendRequest = await json_body(request, api.RecommendRequest)
    filters = parse_filters(agent, req.filters)

    def work() -> api.Recommendations:
        st = agent.store()
        _known(st, user)
        try:
            recs = agent.taste.recommend(
                st,
                user,
                req.mode,
                req.limit,
                model=req.model,
                recent_days=req.recent_days,
                since_days=req.since_days,
                max_per_artist=req.max_per_artist,
                filters=filters,
                files_only=bool(filters and filters.files_only),
            )
            model = agent.taste.space(st, req.model).model
        except TasteError as e:
            raise ApiError(422, "unprocessable", str(e)) from None
        items = [
            api.Recommendation(
                **r.track.to_dict(),
                distance=round(1.0 - r.similarity, 6),
                similarity=round(r.similarity, 6),
                score=round(r.score, 4),
                reason=r.reason,
                because=None if r.because is None else api.Track(**r.because.to_dict()),
                centre=r.centre,
            )
            for r in recs
        ]
        return api.Recommendations(user=user, mode=req.mode, model=model, items=items)

    return await off_loop(work)


async def get_trends(request: web.Request) -> api.Trends:
    agent = agent_of(request)
    user = user_of(request)
    weeks = int_param(request, "weeks", 52, 4, 520)
    model = request.query.get("model") or None
    raw_until = request.query.get("until")
    until: float | None = None
    if raw_until:
        try:
            until = float(raw_until)
        except ValueError:
            raise ApiError(400, "bad-request", "until must be a unix time in seconds") from None
        if not 0 < until < 32503680000:
            raise ApiError(400, "bad-request", "until must be a unix time in seconds")

    def work() -> api.Trends:
        st = agent.store()
        _known(st, user)
        try:
            sp = agent.taste.space(st, model)
        except TasteError as e:
            raise ApiError(422, "unprocessable", str(e)) from None
        return api.Trends(
            **trends(st, sp, user, weeks=weeks, until=until, arrays=agent.taste.arrays(st, user))
        )

    return await off_loop(work)
