"""``/openapi.json``: the client API, generated from the wire types so it cannot drift."""

from __future__ import annotations

from typing import Any

import msgspec

from geogate.shared.errors import ErrorBody
from geogate.shared.schemas import (
    CompatParseRequest,
    CompatParseResponse,
    MatchRequest,
    MatchResponse,
    ParseRequest,
    ParseResponse,
    SimilarityRequest,
    SimilarityResponse,
)

__all__ = ["OPENAPI"]

_ROUTES = {
    "/v1/similarity": ("Score address pairs (MGeo entity alignment)", SimilarityRequest, SimilarityResponse),
    "/v1/parse": ("Parse addresses into MGeo elements", ParseRequest, ParseResponse),
    "/match": ("Compatibility: one pair, a similarity score", MatchRequest, MatchResponse),
    "/parse": ("Compatibility: one address, its elements", CompatParseRequest, CompatParseResponse),
}
_ERRORS = {"400": "malformed JSON, header or HTTP", "401": "no API key or client certificate (where anonymous "
           "access is off), or an unknown, expired or revoked key", "403": "a task or region this client may not use",
           "413": "body too large", "417": "an Expect other than 100-continue", "422": "invalid request",
           "429": "a client limit (rate, items, daily quota, calls in flight; see Retry-After and X-RateLimit-*) "
           "or the service is overloaded", "503": "no region or node may serve the call", "504": "deadline exceeded"}
_RATE_HEADERS = {name: {"schema": {"type": "string"}, "description": text} for name, text in (
    ("X-RateLimit-Limit", "the bucket's size (calls, or items for the items and daily-quota scopes)"),
    ("X-RateLimit-Remaining", "what is left of it (approximate: gateways take tokens in small leases)"),
    ("X-RateLimit-Reset", "seconds until the bucket is full again"),
    ("X-RateLimit-Scope", "on a 429: requests, items or daily-quota"))}


def _document() -> dict[str, Any]:
    types = [t for _, req, resp in _ROUTES.values() for t in (req, resp)] + [ErrorBody]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    refs = dict(zip(types, schemas))
    headers = {name: {"schema": {"type": "string"}, "description": text} for name, text in (
        ("X-Model-Version", "model version that produced the answer"), ("X-Color", "deployment color"),
        ("X-Region", "region that served the call"), ("X-Cache", "hit, miss or partial"),
        ("X-Route", "home region, serving region, attempts and why"), ("X-Request-ID", "echoed or generated"))}
    headers.update(_RATE_HEADERS)  # on calls of a client with a request rate
    error = {"content": {"application/json": {"schema": refs[ErrorBody]}}}
    paths = {
        path: {"post": {
            "summary": summary,
            "parameters": [
                {"name": "X-Deadline-Ms", "in": "header", "schema": {"type": "number"}},
                {"name": "X-MGeo-Version", "in": "header", "schema": {"type": "string"},
                 "description": "canary: serve this call from the preview color; any other value is ignored"},
                {"name": "X-Request-ID", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": refs[req]}}},
            "responses": {
                "200": {"description": "scored", "headers": headers,
                        "content": {"application/json": {"schema": refs[resp]}}},
                **{code: {"description": text, **error} for code, text in _ERRORS.items()},
            },
            # anonymous ({}) only where the gateway's allow_anonymous is on
            "security": [{"apiKey": []}, {"bearer": []}, {}],
        }}
        for path, (summary, req, resp) in _ROUTES.items()
    }
    return {"openapi": "3.1.0", "info": {"title": "geogate client API", "version": "1"}, "paths": paths,
            "components": {"schemas": components, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key: Authorization: Bearer gg_..."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}}}


OPENAPI: bytes = msgspec.json.encode(_document())
