"""The model manager over HTTP, beyond listing and pulling: sha256 verification
(``POST /models/{id}/verify``), what a model did in this library (``GET /models/{id}/stats``) and
the guided import of an Essentia model (``POST /models/import``)."""

from __future__ import annotations

import math

import numpy as np
from aiohttp import web
from nomarr_client import models as api
from nomarr_client.tags import DEFAULT_TIER_THRESHOLDS, slug

from nomarr.server.api_console import precision_of
from nomarr.server.http import ApiError, agent_of, json_body, off_loop
from nomarr.server.service import Agent

HISTOGRAM_BINS = 20


def _manifest(agent: Agent, mid: str):  # noqa: ANN202 - a Manifest
    from nomarr.models.registry import ModelError

    if len(mid) > 200:
        raise ApiError(404, "not-found", "no such model")
    try:
        return agent.registry.get(mid)
    except (ModelError, KeyError):
        raise ApiError(404, "not-found", f"no model {mid!r} (GET /models lists them)") from None


async def verify_model(request: web.Request) -> api.ModelVerify:
    agent = agent_of(request)
    mid = request.match_info["id"]

    def work() -> api.ModelVerify:
        m = _manifest(agent, mid)
        checks = agent.registry.verify(m)
        roles = {f.name: f for f in m.files}
        files = [
            api.FileCheck(
                name=c.name,
                role=roles[c.name].role,
                present=c.present,
                ok=c.ok,
                expected_sha256=c.expected_sha256,
                actual_sha256=c.actual_sha256,
                pinned=c.pinned,
                size=roles[c.name].size,
            )
            for c in checks
        ]
        needed = [f for f in files if f.role != "licence"]
        return api.ModelVerify(
            id=m.id,
            installed=agent.registry.installed(m),
            ok=all(f.ok for f in needed),
            files=files,
        )

    return await off_loop(work)


async def model_stats(request: web.Request) -> api.ModelStats:
    agent = agent_of(request)
    mid = request.match_info["id"]

    def work() -> api.ModelStats:
        m = _manifest(agent, mid)
        st = agent.store()
        labels, mat, recs = st.label_scores(m.id)
        th = st.tier_thresholds().get(m.id, {})
        calibrated = st.meta(f"calibrated_n:{m.id}")
        out = []
        edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        for j, lab in enumerate(labels):
            col = mat[:, j]
            col = col[~np.isnan(col)]
            hist, _ = np.histogram(np.clip(col, 0.0, 1.0), bins=edges)
            hi, med = th.get(lab, DEFAULT_TIER_THRESHOLDS)
            mean = float(col.mean()) if len(col) else None
            out.append(
                api.LabelStats(
                    label=slug(lab),
                    histogram=[int(x) for x in hist],
                    mean=None if mean is None or math.isnan(mean) else round(mean, 4),
                    high=float(hi),
                    medium=float(med),
                    calibrated=lab in th,
                    tracks_high=int((col >= hi).sum()),
                )
            )
        return api.ModelStats(
            id=m.id,
            name=m.name,
            kind=m.kind,
            licence=m.licence or None,
            licence_url=m.licence_url or None,
            source=m.source_url or None,
            installed=agent.registry.installed(m),
            tracks=st.analysed_count(m.id),
            recordings=len(recs),
            providers=st.provider_usage().get(m.id, {}),
            precision=precision_of(m),
            calibrated_at=int(calibrated) if calibrated else None,
            labels=out,
        )

    return await off_loop(work)


async def import_model(request: web.Request) -> api.ImportResponse:
    agent = agent_of(request)
    req: api.ImportRequest = await json_body(request, api.ImportRequest)

    def work() -> api.ImportResponse:
        from nomarr.models.essentia_import import dump_manifest_toml, manifest_from_essentia_json
        from nomarr.models.registry import ModelError, load_manifest_text

        if req.url is not None and not req.url.startswith(("https://", "http://")):
            raise ApiError(400, "bad-request", "url must be an http(s) URL")
        try:
            data = manifest_from_essentia_json(dict(req.metadata), url=req.url)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ApiError(
                400, "bad-request", f"not an Essentia model metadata document: {e}"
            ) from None
        if req.sha256:
            data["files"][0]["sha256"] = req.sha256.lower()
        reg = agent.registry
        target = reg.user_dir / f"{data['id']}.toml"
        try:
            text = dump_manifest_toml(data)
            m = load_manifest_text(text, target)
        except (ModelError, ValueError) as e:
            raise ApiError(400, "bad-request", f"the manifest it makes is invalid: {e}") from None
        existing = reg.manifests().get(m.id)
        if existing is not None and existing.builtin:
            raise ApiError(409, "busy", f"{m.id} is a built-in model; it cannot be replaced")
        if not req.dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
            reg._manifests = None  # re-read: the new manifest is known from now on
        return api.ImportResponse(
            id=m.id,
            name=m.name,
            kind=m.kind,
            licence=m.licence or None,
            licence_url=m.licence_url or None,
            labels=m.labels,
            needs=m.embedder_id,
            files=[
                {"name": f.name, "role": f.role, "url": f.url, "sha256": f.sha256} for f in m.files
            ],
            written=not req.dry_run,
            installed=reg.installed(m),
        )

    return await off_loop(work)
