"""``/admin/v1/openapi.json``: the admin API, generated from its request types and its
route table (``ROUTES``, which also registers the routes), so the document cannot drift
from what the gateway serves."""

from __future__ import annotations

from typing import Any

import msgspec

from geogate.shared.errors import ErrorBody

__all__ = ["Route", "document"]


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str
    role: str  # viewer < operator < admin
    summary: str
    body: type[Any] | None = None
    answer: type[Any] | None = None  # None: a JSON object described by ``returns``
    returns: str = ""
    status: int = 200


_ERRORS = {
    "401": "no admin token, or one this gateway does not know",
    "403": "the token's role is below the route's, or the call did not come over TLS where admin_tls_only is on",
    "404": "no such color, region, drill or client",
    "409": "the registry moved on (expected_epoch), or the change contradicts the registry (no preview color ...)",
    "413": "body too large",
    "422": "invalid body; for a switch, the pre-checks failed (the answer carries the report)",
    "503": "the registry's store is unreachable",
}


def document(routes: list[Route]) -> bytes:
    types: list[type[Any]] = [ErrorBody]
    for route in routes:
        types += [t for t in (route.body, route.answer) if t is not None and t not in types]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    refs = dict(zip(types, schemas))
    error = {"content": {"application/json": {"schema": refs[ErrorBody]}}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        schema = refs[route.answer] if route.answer is not None else {"type": "object", "description": route.returns}
        operation: dict[str, Any] = {
            "summary": route.summary,
            "description": f"Role: {route.role} or above.",
            "x-geogate-role": route.role,
            "security": [{"bearer": []}],
            "responses": {str(route.status): {"description": route.returns or route.summary,
                                              "content": {"application/json": {"schema": schema}}},
                          **{code: {"description": text, **error} for code, text in _ERRORS.items()}},
        }
        parameters = [{"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                      for part in route.path.split("/") if part.startswith("{")]
        if route.path.endswith("/route"):
            parameters += [{"name": "ip", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "task", "in": "query", "schema": {"enum": ["similarity", "parse"]}}]
        if route.path.endswith("/audit"):
            parameters.append({"name": "count", "in": "query",
                               "schema": {"type": "integer", "minimum": 1, "maximum": 1000}})
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": refs[route.body]}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return msgspec.json.encode({
        "openapi": "3.1.0",
        "info": {"title": "geogate admin API", "version": "1",
                 "description": "Every change is a POST with a reason, goes through the registry's epoch "
                                "compare-and-set and is audited; changes answer once every live gateway applied "
                                "them (gateways_applied, gateways_not_confirmed). docs/api.md explains each route."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an admin token (admin_tokens_file)"}}},
    })

