"""Bad input gets a 4xx in the JSON error shape, and the node keeps serving.

The module's node runs with small limits (max_batch 32, max_chars 64, body 4096 bytes).
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from helpers import NodeProcess, scrape

OK_PAIR = ["杭州市文一西路969号", "杭州文一西路969号"]

CASES = [
    # (name, method, path, body, headers, status, code)
    ("malformed json", "POST", "/v1/similarity", b'{"pairs": [', {}, 400, "invalid_json"),
    ("not json at all", "POST", "/v1/parse", b"addresses=1", {}, 400, "invalid_json"),
    ("invalid utf-8 in a string", "POST", "/v1/parse", b'{"addresses": ["\xff\xfe"]}', {}, 400, "invalid_json"),
    ("invalid utf-8 outside strings", "POST", "/v1/parse", b"\xff\xfe\xfd", {}, 400, "invalid_json"),
    ("empty body", "POST", "/v1/similarity", b"", {}, 400, "invalid_json"),
    ("top-level array", "POST", "/v1/similarity", b"[]", {}, 422, "invalid_request"),
    ("pairs not a list", "POST", "/v1/similarity", b'{"pairs": "a"}', {}, 422, "invalid_request"),
    ("pair of one", "POST", "/v1/similarity", b'{"pairs": [["a"]]}', {}, 422, "invalid_request"),
    ("pair of three", "POST", "/v1/similarity", b'{"pairs": [["a","b","c"]]}', {}, 422, "invalid_request"),
    ("number in pair", "POST", "/v1/similarity", b'{"pairs": [["a", 1]]}', {}, 422, "invalid_request"),
    ("null address", "POST", "/v1/parse", b'{"addresses": [null]}', {}, 422, "invalid_request"),
    ("missing field", "POST", "/v1/parse", b'{"address": ["a"]}', {}, 422, "invalid_request"),
    ("deeply nested", "POST", "/v1/parse", b'{"addresses": ' + b"[" * 600 + b"]" * 600 + b"}", {}, 422, "invalid_request"),
    ("empty pairs", "POST", "/v1/similarity", b'{"pairs": []}', {}, 422, "invalid_request"),
    ("empty addresses", "POST", "/v1/parse", b'{"addresses": []}', {}, 422, "invalid_request"),
    ("blank address", "POST", "/v1/parse", b'{"addresses": ["   "]}', {}, 422, "invalid_request"),
    ("too many pairs", "POST", "/v1/similarity", json.dumps({"pairs": [["a", "b"]] * 33}).encode(), {}, 422, "batch_too_large"),
    ("too many addresses", "POST", "/v1/parse", json.dumps({"addresses": ["a"] * 33}).encode(), {}, 422, "batch_too_large"),
    ("address too long", "POST", "/v1/parse", json.dumps({"addresses": ["路" * 65]}).encode(), {}, 422, "input_too_long"),
    ("pair side too long", "POST", "/v1/similarity", json.dumps({"pairs": [["a", "b" * 65]]}).encode(), {}, 422, "input_too_long"),
    ("compat match missing field", "POST", "/match", b'{"address1": "a"}', {}, 422, "invalid_request"),
    ("compat parse wrong type", "POST", "/parse", b'{"address": 5}', {}, 422, "invalid_request"),
    ("body over the limit", "POST", "/v1/parse", b'{"addresses": ["' + b"a" * 5000 + b'"]}', {}, 413, "payload_too_large"),
    ("deadline not a number", "POST", "/v1/similarity", json.dumps({"pairs": [OK_PAIR]}).encode(), {"X-Deadline-Ms": "soon"}, 400, "invalid_header"),
    ("deadline zero", "POST", "/v1/similarity", json.dumps({"pairs": [OK_PAIR]}).encode(), {"X-Deadline-Ms": "0"}, 400, "invalid_header"),
    ("deadline negative", "POST", "/v1/similarity", json.dumps({"pairs": [OK_PAIR]}).encode(), {"X-Deadline-Ms": "-5"}, 400, "invalid_header"),
    ("deadline nan", "POST", "/v1/similarity", json.dumps({"pairs": [OK_PAIR]}).encode(), {"X-Deadline-Ms": "nan"}, 400, "invalid_header"),
    ("deadline huge", "POST", "/v1/similarity", json.dumps({"pairs": [OK_PAIR]}).encode(), {"X-Deadline-Ms": "1e309"}, 400, "invalid_header"),
    ("unknown route", "POST", "/v2/similarity", b"{}", {}, 404, "not_found"),
    ("wrong method", "GET", "/v1/similarity", None, {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "headers", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_json_4xx(
    demo_node: NodeProcess, http: aiohttp.ClientSession,
    name: str, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int, code: str,
) -> None:
    async with http.request(method, demo_node.url + path, data=body, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        err = (await resp.json())["error"]
        assert err["code"] == code and err["message"] and err["request_id"] == resp.headers["X-Request-ID"]


async def test_chunked_body_over_the_limit(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b"x" * 1000

    async with http.post(demo_node.url + "/v1/parse", data=chunks()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"


async def test_node_still_serves_and_never_answered_5xx(demo_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async with http.post(demo_node.url + "/v1/similarity", json={"pairs": [OK_PAIR]}) as resp:
        assert resp.status == 200
    m = await scrape(http, demo_node.url)
    # Readiness answered 503 while the model loaded; every other route stayed below 500.
    errors = {k: v for k, v in m.items()
              if k.startswith("geogate_node_requests_total") and 'status="5' in k and "/health" not in k}
    assert errors == {}
    assert m['geogate_node_requests_total{route="/v1/similarity",status="422"}'] >= 1
