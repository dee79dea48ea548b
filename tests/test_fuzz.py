"""Property-based fuzzing of the client API (gateway), the node API and the admin API (issue 8).

One world for the module: Redis, one demo node (blue, eu-central, one CPU thread) and one
gateway with admin tokens (viewer, operator, admin). Hypothesis draws requests from
tests/fuzz_strategies.py (valid bodies, bodies of the wrong shape, raw and invalid
UTF-8 bytes, nesting 20,000 deep, bodies over the size limit, chunked bodies, odd
methods and paths, repeated and oversized X-Forwarded-For, bad X-Deadline-Ms, odd
X-Request-ID and X-MGeo-Version, garbage Authorization) and sends each over one
keep-alive connection per target with http.client. Every answer must be:

- below 500 (but 504 deadline_exceeded to a deadline the caller set under 10 s);
- an error (>= 400) in the JSON error shape {"error": {"code", "message", "request_id"}}
  with the same id in X-Request-ID (echoed when the caller sent a sane one);
- a 200 of a scoring route in the documented response shape, with one result per item;
- an answer at all: a reset or a timeout without one is a crash (a reset after a body
  over the size limit is not).

Afterwards both processes must be alive and ready, and their logs free of tracebacks.
``GEOGATE_FUZZ_EXAMPLES`` sets the examples per API (300 by default; ``make fuzz`` runs
10,000); with ``CI`` set the run is derandomized (reproducible). schemathesis runs the
gateway's /openapi.json in positive and negative mode with as many examples.
``GEOGATE_FUZZ_REPORT=path`` writes the per-API counts as JSON.

Found by this fuzzing and fixed in d7098ce (the inputs stay in, as regression tests):

BUG-1  An unknown JSON field nested ~1,000 deep answered 500 "internal" (gateway and node,
       every scoring route): msgspec raised RecursionError while it skipped the unknown
       value. Repro: POST /v1/similarity, body
       b'{"x": ' + b'[' * 1000 + b']' * 1000 + b', "pairs": [["a", "b"]]}'  (950 deep passed).
BUG-2  A client deadline that expired while the gateway waited for the node answered 503
       "no node answered (...: TimeoutError)", not 504. Repro: POST /v1/similarity,
       X-Deadline-Ms: 1, body b'{"pairs": [["<an address not in the cache>", "b"]]}'.
BUG-3  Those timeouts counted as failed calls of the node: three in a row ejected it, and
       every client of the region got 503 "no-healthy-node" for 1 s, doubling up to 30 s.
BUG-4  An Authorization token that is not UTF-8 answered 500 on every admin route. Repro:
       GET /admin/v1/whoami, Authorization: b'Bearer \\xff\\xfe'.
BUG-7  /openapi.json declared X-MGeo-Version as enum ["canary"] while the gateway takes (and
       ignores) any other value; schemathesis' negative mode flagged X-MGeo-Version: "" -> 200.

Found by it and fixed later:

BUG-5  Requests that break HTTP/1.1 itself (a control character in a header value, a
       header line over 8190 bytes, more than 128 headers, a method such as FOO or
       lower-case post, "POST * HTTP/1.1") got aiohttp's text/plain 400 from below the
       app, logged at ERROR with a traceback. Repro: GET /admin/v1/status,
       X-Request-ID: b'a\\x00b' -> 400 text/plain. Now 400 malformed_http in the JSON shape,
       one line at info (shared/http.py's AppRunner).
BUG-6  An Expect header other than 100-continue answered 417 text/plain "Unknown Expect: x"
       without X-Request-ID (aiohttp's expect handler runs before any middleware). Repro:
       POST /v1/parse, Expect: close, body b'{"addresses": ["a"]}'. Now 417
       expectation_failed in the JSON shape.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (the dev extra)")
from fuzz_strategies import (
    ADMIN_MAX_BODY,
    KNOWN_REGIONS,
    MAX_BODY,
    REQUEST_ID_RE,
    Request,
    admin_requests,
    client_requests,
)
from helpers import GatewayProcess, NodeProcess, RedisServer, seed_registry_from
from hypothesis import HealthCheck, given, settings

from geogate.gateway.config import GatewayConfig
from geogate.gateway.control.auth import hash_token
from geogate.gateway.launcher.plan import TEST_GEOIP_DB
from geogate.shared.config import nested
from geogate.shared.schemas import CompatParseResponse, MatchResponse, ParseResponse, SimilarityResponse

EXAMPLES = int(os.environ.get("GEOGATE_FUZZ_EXAMPLES", "300"))
REQUEST_TIMEOUT_S = 60.0  # no answer in this time is a hang
SHORT_DEADLINE_MS = 10_000.0  # a 504 answers a deadline the caller set below this (the default)
TEST_TIMEOUT_S = max(300, int(EXAMPLES * 0.3))  # per fuzz test (setup.cfg's default is 300 s)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
)

GEOIP = TEST_GEOIP_DB  # MaxMind's test database, shipped for geogate up
TOKENS = {"viewer": "fuzz-viewer-0123456789abcdef", "operator": "fuzz-operator-0123456789abcdef",
          "admin": "fuzz-admin-0123456789abcdef"}
REGION = KNOWN_REGIONS[0]

RESPONSE_TYPES: dict[str, type[Any]] = {"/v1/similarity": SimilarityResponse, "/v1/parse": ParseResponse,
                                        "/match": MatchResponse, "/parse": CompatParseResponse}
ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
REPORT: dict[str, Counter[str]] = {}


@dataclass
class World:
    redis: RedisServer
    node: NodeProcess
    gateway: GatewayProcess
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fuzz-world")
    redis = RedisServer(tmp)
    processes: list[NodeProcess] = []
    try:
        node = NodeProcess(tmp, "--region", REGION, "--color", "blue", "--model", "demo",
                           "--registry-url", redis.url, "--cpu-threads", "1")
        processes.append(node)
        asyncio.run(node.wait_ready())
        asyncio.run(seed_registry_from(redis.url, [node], [REGION]))
        tokens = tmp / "tokens.yaml"
        tokens.write_text(yaml.safe_dump({"tokens": [{"name": f"fuzz-{role}", "role": role, "sha256": hash_token(t)}
                                                     for role, t in TOKENS.items()]}))
        config = tmp / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "gateway": nested(GatewayConfig, {"trusted_proxies": "127.0.0.0/8", "geoip_db": str(GEOIP), "probe_interval_s": 0.2,
                        "deep_probe_interval_s": 0, "admin_tokens_file": str(tokens), "registry_url": redis.url}),
            "regions": {REGION: {"failover": []}},
            "countries": {"SE": REGION, "GB": REGION},
            "nodes": [{"region": REGION, "color": "blue", "url": node.url}],
        }))
        gateway = GatewayProcess(tmp, "--config", str(config), "--region", REGION)
        processes.append(gateway)
        asyncio.run(gateway.wait_ready())
        yield World(redis, node, gateway, tmp)
    finally:
        for process in reversed(processes):
            process.stop()
        redis.stop()
        out = os.environ.get("GEOGATE_FUZZ_REPORT")
        if out:
            Path(out).write_text(json.dumps({api: dict(sorted(c.items())) for api, c in REPORT.items()}, indent=1))


# -- sending ------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for n, v in self.headers if n.lower() == name.lower()]
        return found[0] if found else None

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()


@dataclass
class Client:
    """One keep-alive connection to a target; reconnects when the server closed it."""

    api: str
    process: NodeProcess
    stats: Counter[str] = field(default_factory=Counter)
    conn: http.client.HTTPConnection | None = None
    used: int = 0  # requests sent on the current connection

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.used = None, 0

    def send(self, req: Request) -> Reply | None:
        """The answer; None for a connection reset after a body over the size limit."""
        for attempt in (1, 2):
            reused = self.conn is not None and self.used > 0
            if self.conn is None:
                parts = urlsplit(self.process.url)
                self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
            try:
                reply, will_close = self._exchange(self.conn, req)
            except TimeoutError:
                self.close()
                raise AssertionError(f"{self.api}: no answer within {REQUEST_TIMEOUT_S:.0f} s (a hang): {req!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1 and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)):
                    self.stats["reconnect: keep-alive connection closed by the server"] += 1
                    continue  # the server closed an idle keep-alive connection: not a failure
                self._alive(req)
                if "oversize" in req.tags and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)):
                    self.stats["reset after a body over the limit"] += 1
                    return None
                raise AssertionError(f"{self.api}: the connection failed without an answer ({exc!r}): {req!r}") \
                    from exc
            self.used += 1
            if will_close or "protocol" in req.tags or req.method == "CONNECT":
                self.close()  # after broken HTTP (or a tunnel), stray bytes would answer the next request
            return reply
        raise AssertionError("unreachable")

    def _exchange(self, conn: http.client.HTTPConnection, req: Request) -> tuple[Reply, bool]:
        skip_host = any(name.lower() == "host" for name, _ in req.headers)
        conn.putrequest(req.method, req.path, skip_host=skip_host, skip_accept_encoding=True)
        for name, value in req.headers:
            conn.putheader(name, value)
        body = req.body
        if body is not None:
            if req.chunks:
                conn.putheader("Transfer-Encoding", "chunked")
            else:
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            if body is not None and req.chunks:
                conn.send(_chunked(body, req.chunks))
            elif body:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have answered already (a 413) and closed: read that answer
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, list(resp.getheaders()), data), bool(resp.will_close)

    def _alive(self, req: Request) -> None:
        code = self.process.proc.poll()
        if code is not None:
            raise AssertionError(f"{self.api}: the process died (exit {code}) on {req!r}\n{self.process.log()[-4000:]}")


def _chunked(body: bytes, sizes: tuple[int, ...]) -> bytes:
    out, at, i = [], 0, 0
    while at < len(body):
        size = sizes[min(i, len(sizes) - 1)]
        piece = body[at:at + size]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        at, i = at + size, i + 1
    out.append(b"0\r\n\r\n")
    return b"".join(out)


# -- the oracle ---------------------------------------------------------------------------------


def _route(path: str) -> str:
    return unquote(path.split("?", 1)[0].split("#", 1)[0])


def check(api: str, req: Request, reply: Reply | None, stats: Counter[str]) -> None:
    stats["examples"] += 1
    if reply is None:
        return  # reset after a body over the limit (counted by the client)
    stats[f"status {reply.status}"] += 1
    where = f"{api}: {req!r}\n-> {reply.status} {reply.headers!r}\n{reply.body[:1000]!r}"
    error = None
    if reply.status >= 400 and req.method != "HEAD":
        error = _error_shape(reply, where)
        stats[f"error {reply.status} {error['code']}"] += 1
    if "protocol" in req.tags and reply.status == 400:
        # aiohttp's parser refused it before any route ran: no header of it was read, so
        # the request id is a new one.
        assert error is None or error["code"] == "malformed_http", f"broken HTTP/1.1 not called so\n{where}"
        assert reply.header("X-Request-ID"), f"no X-Request-ID\n{where}"
        return
    if error is not None and error["code"] == "malformed_http":
        raise AssertionError(f"well-formed HTTP/1.1 refused as malformed\n{where}")
    expect = [v.strip().lower() for v in req.header("Expect")]
    if expect and expect[0] != b"100-continue":
        assert reply.status == 417, f"Expect: {expect[0]!r} not refused with 417\n{where}"
    if reply.status >= 500:
        allowed = (reply.status == 504 and error is not None and error["code"] == "deadline_exceeded"
                   and req.deadline_ms is not None and req.deadline_ms < SHORT_DEADLINE_MS)
        assert allowed, f"a server error\n{where}"
    rid = reply.header("X-Request-ID")
    assert rid, f"no X-Request-ID\n{where}"
    sent = [v.strip(b" \t").decode("utf-8", "surrogateescape") for v in req.header("X-Request-ID")]  # as aiohttp
    if sent and REQUEST_ID_RE.fullmatch(sent[0]):  # reads it: the first one counts
        assert rid == sent[0], f"X-Request-ID not echoed\n{where}"
    if req.method == "HEAD":
        return
    limit = ADMIN_MAX_BODY if api == "admin" else MAX_BODY
    size = len(req.body or b"")
    if reply.status == 413:
        assert size > limit, f"413 for a body of {size} bytes (limit {limit})\n{where}"
    elif "oversize" in req.tags and req.method == "POST" and reply.status not in (401, 403, 404, 405, 417):
        raise AssertionError(f"a body of {size} bytes (limit {limit}) got {reply.status}, not 413\n{where}")
    if error is not None:
        assert error["request_id"] == rid, f"the error's request_id is not X-Request-ID\n{where}"
        if reply.status == 401:
            assert reply.header("WWW-Authenticate"), f"a 401 without WWW-Authenticate\n{where}"
        return
    assert reply.status in (200, 202), f"unexpected status\n{where}"
    route = _route(req.path)
    if req.method == "POST" and route in RESPONSE_TYPES and api in ("gateway", "node"):
        assert reply.content_type == "application/json", where
        try:
            answer = msgspec.json.decode(reply.body, type=RESPONSE_TYPES[route])
        except msgspec.DecodeError as exc:
            raise AssertionError(f"a 200 not in the documented shape ({exc})\n{where}") from exc
        if req.items is not None and hasattr(answer, "results"):
            assert len(answer.results) == req.items, f"{req.items} items, {len(answer.results)} results\n{where}"
        for name in ("X-Model-Version", "X-Color", "X-Region") + (("X-Cache", "X-Route") if api == "gateway" else ()):
            assert reply.header(name), f"a 200 without {name}\n{where}"
        stats[f"scored {route}"] += 1
    elif route != "/metrics":
        try:
            json.loads(reply.body)
        except ValueError as exc:
            raise AssertionError(f"a {reply.status} that is not JSON\n{where}") from exc


def _error_shape(reply: Reply, where: str) -> dict[str, str]:
    assert reply.content_type == "application/json", f"an error that is not JSON\n{where}"
    try:
        body = json.loads(reply.body)
    except ValueError as exc:
        raise AssertionError(f"an error body that is not JSON\n{where}") from exc
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not the error shape\n{where}"
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}, f"not the error shape\n{where}"
    assert all(isinstance(error[k], str) for k in error), f"not the error shape\n{where}"
    assert ERROR_CODE.match(error["code"]) and error["message"] and error["request_id"], f"empty error fields\n{where}"
    return error


# -- the properties -----------------------------------------------------------------------------


def _run(api: str, client: Client, strategy: Any) -> None:
    stats = REPORT.setdefault(api, Counter())
    client.stats = stats
    started = time.monotonic()

    @FUZZ
    @given(req=strategy)
    def property_holds(req: Request) -> None:
        check(api, req, client.send(req), stats)

    try:
        property_holds()
    finally:
        client.close()
        stats["seconds"] = round(time.monotonic() - started)
    assert stats["examples"] >= EXAMPLES, dict(stats)


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_client_api_through_the_gateway(world: World) -> None:
    _run("gateway", Client("gateway", world.gateway), client_requests(for_gateway=True))


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_node_api(world: World) -> None:
    _run("node", Client("node", world.node), client_requests(for_gateway=False))


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_admin_api(world: World) -> None:
    _run("admin", Client("admin", world.gateway), admin_requests(TOKENS))


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_client_api_openapi_with_schemathesis(world: World) -> None:
    """schemathesis drives the gateway from its own /openapi.json (no network but loopback)."""
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
    import requests
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(world.gateway.url + "/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance]
    stats = REPORT.setdefault("schemathesis", Counter())
    started = time.monotonic()
    with requests.Session() as session:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            negative = mode == schemathesis.GenerationMode.NEGATIVE
            _conforms(schema.as_strategy(generation_mode=mode), mode.value, world.gateway.url, session,
                      checks + ([negative_data_rejection] if negative else []), not_a_server_error, stats)()
    stats["seconds"] = round(time.monotonic() - started)


def _conforms(strategy: Any, label: str, url: str, session: Any, checks: list[Any], not_a_server_error: Any,
              stats: Counter[str]) -> Any:
    @FUZZ
    @given(case=strategy)
    def conforms(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=REQUEST_TIMEOUT_S)
        stats[f"{label} {case.operation.label} {response.status_code}"] += 1
        stats["examples"] += 1
        case.validate_response(response, checks=[c for c in checks if not (
            c is not_a_server_error and _deadline_504(case.headers or {}, response))])

    return conforms


def _deadline_504(headers: dict[str, Any], response: Any) -> bool:
    """A 504 deadline_exceeded (documented) to a deadline the caller set under 10 s is right."""
    if response.status_code != 504:
        return False
    try:
        ms = float(str(next(v for k, v in headers.items() if k.lower() == "x-deadline-ms")).strip())
        code = response.json()["error"]["code"]
    except (StopIteration, ValueError, KeyError, TypeError):
        return False
    return 0 < ms < SHORT_DEADLINE_MS and code == "deadline_exceeded"


# -- afterwards ---------------------------------------------------------------------------------

_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)


def _bad_log_records(text: str) -> list[str]:
    bad = []
    starts = [m.start() for m in _LOG_RECORD.finditer(text)] + [len(text)]
    for a, b in itertools.pairwise(starts):
        record = text[a:b]
        if "unhandled error" in record or "--- Logging error ---" in record or "Traceback" in record:
            bad.append(record)
    return bad


def test_world_survived_the_fuzzing(world: World) -> None:
    for process in (world.node, world.gateway):
        assert process.proc.poll() is None, f"{process.url} exited with {process.proc.returncode}:\n{process.log()[-4000:]}"
    asyncio.run(world.node.wait_status("/health/ready", 200, timeout=30))
    asyncio.run(world.gateway.wait_status("/readyz", 200, timeout=30))  # a fuzzed call may have ejected the node
    pair = ["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"]
    scoring = Request("POST", "/v1/similarity", (("Content-Type", b"application/json"),),
                      json.dumps({"pairs": [pair]}).encode(), items=1)
    for api, process in (("gateway", world.gateway), ("node", world.node)):
        client = Client(api, process)
        reply = client.send(scoring)
        check(api, scoring, reply, Counter())
        assert reply is not None and reply.status == 200, reply
        client.close()
    admin = Client("admin", world.gateway)
    reply = admin.send(Request("GET", "/admin/v1/status", (("Authorization", f"Bearer {TOKENS['viewer']}".encode()),)))
    assert reply is not None and reply.status == 200, reply
    status = json.loads(reply.body)
    assert status["registry"]["active_color"] == "blue" and status["drill"] is None
    assert status["regions"][REGION]["state"] == "active", status["regions"]
    admin.close()
    for process in (world.node, world.gateway):
        bad = _bad_log_records(process.log())
        assert not bad, f"{process.url} logged {len(bad)} errors, first:\n{bad[0][:4000]}"
    print("fuzz report:", json.dumps({api: dict(sorted(c.items())) for api, c in REPORT.items()}, indent=1))
