"""The OpenAPI 3.1 document, generated from the route table and the shared pydantic models.

Nothing here is written by hand per endpoint: a route added to ``ROUTES`` appears here with its
request and response schemas, so plugins, fuzzers and people read the same contract the server
enforces.
"""

from __future__ import annotations

import re
from typing import Any

from nomarr_client import models as api
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "the request is malformed (see error.message)",
    "401": "missing or wrong bearer token",
    "403": "a path outside the library roots",
    "404": "no such track, file or model",
    "409": "a model is missing or busy",
    "413": "request body or upload too large",
    "415": "upload without a known audio file extension",
    "422": "well-formed but cannot be answered (no embeddings yet, undecodable audio…)",
    "429": "too many ingest sessions open",
    "502": "an upstream service (a model download, ListenBrainz) failed",
}


def _document(version: str, routes: tuple[Any, ...]) -> dict[str, Any]:
    all_models: list[type[BaseModel]] = [api.ErrorResponse]
    for r in routes:
        if not r.media:
            all_models.append(r.response)
        if r.request is not None:
            all_models.append(r.request)
    uniq = list(dict.fromkeys(all_models))
    _, top = models_json_schema(
        [(m, "validation" if _is_request(m, routes) else "serialization") for m in uniq],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, Any] = {}
    for r in routes:
        paths.setdefault(api.API_PREFIX + r.path, {})[r.method.lower()] = _operation(r)
    paths[api.API_PREFIX + "/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["agent"],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nomarr agent API",
            "version": version,
            "description": "Local music analysis: similarity, moods, playlists and analysis over a library. "
            "Every endpoint but /health needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


def _json_ref(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}


def _operation(r: Any) -> dict[str, Any]:
    """One route's operation: its answer, its error answers, parameters and request body."""
    op: dict[str, Any] = {
        "operationId": r.handler.__name__,
        "summary": r.summary,
        "tags": [r.tag],
        "responses": {"200": {"description": "OK", "content": _json_ref(r.response.__name__)}},
    }
    if r.media:
        binary = {"schema": {"type": "string", "format": "binary"}}
        event = {  # one Server-Sent Event: its name and its data (a JSON document)
            "schema": {
                "type": "object",
                "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
            }
        }
        content = {t: event if t == "text/event-stream" else binary for t in r.media}
        op["responses"]["200"] = {"description": "OK", "content": content}
        if "audio/mpeg" in r.media:
            op["responses"]["206"] = {"description": "the byte range asked for", "content": content}
            op["responses"]["416"] = {"description": "a byte range past the end of the file"}
    if not r.auth:
        op["security"] = []
    else:
        for code, desc in _ERRORS.items():
            op["responses"][code] = {"description": desc, "content": _json_ref("ErrorResponse")}
    params = list(r.query)
    for i, name in enumerate(re.findall(r"\{(\w+)\}", r.path)):
        kind = (
            "integer" if name == "id" and r.path.startswith(("/tracks", "/streams")) else "string"
        )
        params.insert(i, {"name": name, "in": "path", "required": True, "schema": {"type": kind}})
    if params:
        op["parameters"] = params
    if r.request is not None:
        content = _json_ref(r.request.__name__)
        if r.upload:
            binary = {"type": "string", "format": "binary"}
            content["application/octet-stream"] = {"schema": binary}
            content["multipart/form-data"] = {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": binary}}
            }
        op["requestBody"] = {"required": True, "content": content}
    elif r.raw_body:
        binary = {"type": "string", "format": "binary"}
        op["requestBody"] = {
            "required": True,
            "content": {"application/octet-stream": {"schema": binary}},
        }
    return op


def _is_request(m: type[BaseModel], routes: tuple[Any, ...]) -> bool:
    return any(r.request is m for r in routes)


_CACHE: dict[tuple[int, str], dict[str, Any]] = {}


def document(routes: list[Any], version: str) -> dict[str, Any]:
    """The OpenAPI document for these routes (cached: it only changes with the code)."""
    key = (id(routes), version)
    if key not in _CACHE:
        _CACHE[key] = _document(version, tuple(routes))
    return _CACHE[key]
