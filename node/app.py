"""The scoring node's HTTP routes (docs/design.md's wire contracts) and its one middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from aiohttp import web

from geogate.node.metrics import NodeMetrics
from geogate.node.service import NodeService
from geogate.shared.http import (
    Handler,
    deadline,
    guarded,
    json_response,
    read_body,
    request_id,
)
from geogate.shared.schemas import (
    CompatParseRequest,
    CompatParseResponse,
    MatchRequest,
    MatchResponse,
    ParseRequest,
    ParseResponse,
    SimilarityRequest,
    SimilarityResponse,
    decode,
    encode,
    validate_addresses,
    validate_pairs,
)

__all__ = ["SERVICE", "create_app"]

access = logging.getLogger("geogate.node.access")
log = logging.getLogger("geogate.node.http")

SERVICE = web.AppKey("service", NodeService)
METRICS = web.AppKey("metrics", NodeMetrics)

def create_app(service: NodeService) -> web.Application:
    cfg = service.config
    # aiohttp's own limit sits just above ours so that read_body, not aiohttp, words the 413.
    app = web.Application(middlewares=[_middleware], client_max_size=cfg.max_body_bytes + 1)
    app[SERVICE] = service
    app[METRICS] = service.metrics
    app.router.add_post("/v1/similarity", similarity)
    app.router.add_post("/v1/parse", parse)
    app.router.add_post("/match", compat_match)
    app.router.add_post("/parse", compat_parse)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health", legacy_health)
    app.router.add_get("/info", info)
    app.router.add_get("/metrics", metrics)
    return app


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, the JSON error shape, identity headers and request metrics, in one pass."""
    started = time.perf_counter()
    rid = request_id(request)
    response = await guarded(handler, request, rid, log)
    service = request.app[SERVICE]
    headers = response.headers
    headers["X-Request-ID"] = rid
    headers["X-Color"] = service.config.color
    headers["X-Region"] = service.config.region
    if service.model is not None:
        headers["X-Model-Version"] = service.model.model_version
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    m = request.app[METRICS]
    elapsed = time.perf_counter() - started
    m.requests.labels(route, str(response.status)).inc()
    m.latency.labels(route).observe(elapsed)
    if service.config.access_log and request.method == "POST":  # scoring calls; probes and scrapes are GETs
        access.info("%s %s %d", request.method, request.path, response.status, extra={
            "request_id": rid, "route": route, "status": response.status, "ms": round(elapsed * 1000, 2)})
    return response


B = TypeVar("B")
I = TypeVar("I")
R = TypeVar("R")


async def _serve(request: web.Request, body_type: type[B], items: Callable[[B], list[I]],
                 validate: Callable[..., None], max_items: int | None,
                 score: Callable[[NodeService, list[I], float], Awaitable[list[R]]],
                 answer: Callable[[list[R], NodeService], object]) -> web.Response:
    """The one request path of every scoring route: read and decode the body, validate
    its items, score them within the caller's deadline, encode the answer."""
    service = request.app[SERVICE]
    cfg = service.config
    body = decode(await read_body(request, cfg.max_body_bytes), body_type)
    batch = items(body)
    validate(batch, max_items=max_items or cfg.max_batch, max_chars=cfg.max_chars)
    results = await score(service, batch, deadline(request, cfg.default_deadline_ms))
    return json_response(encode(answer(results, service)))


def _identity(service: NodeService) -> tuple[str, str, str]:
    assert service.model is not None  # scoring only runs once the model is loaded
    return service.model.model_version, service.config.color, service.config.region


async def similarity(request: web.Request) -> web.Response:
    return await _serve(request, SimilarityRequest, lambda b: b.pairs, validate_pairs, None, NodeService.similarity,
                        lambda results, service: SimilarityResponse(results, *_identity(service)))


async def parse(request: web.Request) -> web.Response:
    return await _serve(request, ParseRequest, lambda b: b.addresses, validate_addresses, None, NodeService.parse,
                        lambda results, service: ParseResponse(results, *_identity(service)))


async def compat_match(request: web.Request) -> web.Response:
    return await _serve(request, MatchRequest, lambda b: [(b.address1, b.address2)], validate_pairs, 1,
                        NodeService.similarity, lambda results, _: MatchResponse(similarity=results[0].score))


async def compat_parse(request: web.Request) -> web.Response:
    return await _serve(request, CompatParseRequest, lambda b: [b.address], validate_addresses, 1,
                        NodeService.parse, lambda results, _: CompatParseResponse(elements=results[0].elements))


async def live(request: web.Request) -> web.Response:
    return json_response(b'{"status":"live"}')


class _Readiness(msgspec.Struct, frozen=True):
    status: str
    model_version: str | None
    checksum: str | None
    color: str
    region: str
    device: str
    queue_depth: int
    demo: bool
    error: str | None = None


def _readiness(service: NodeService) -> tuple[int, bytes]:
    cfg, model = service.config, service.model
    body = _Readiness(
        status=service.state,
        model_version=model.model_version if model else None,
        checksum=model.checksum if model else None,
        color=cfg.color,
        region=cfg.region,
        device=model.device if model else cfg.device,
        queue_depth=service.queue_depth,
        demo=bool(model and model.demo),
        error=service.error,
    )
    return (200 if service.ready else 503), encode(body)


async def ready(request: web.Request) -> web.Response:
    status, body = _readiness(request.app[SERVICE])
    return json_response(body, status, None if status == 200 else {"Retry-After": "1"})


async def legacy_health(request: web.Request) -> web.Response:
    """Older probes read ``/health``: same answer as readiness."""
    return await ready(request)


async def info(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    cfg, model = service.config, service.model
    body: dict[str, object] = {
        "service": "geogate-node",
        "state": service.state,
        "region": cfg.region,
        "color": cfg.color,
        "backend": cfg.backend,
        "device": model.device if model else cfg.device,
        "dtype": cfg.dtype,
        "limits": {
            "max_batch": cfg.max_batch,
            "max_chars": cfg.max_chars,
            "max_body_bytes": cfg.max_body_bytes,
            "max_batch_size": cfg.max_batch_size,
            "max_wait_ms": cfg.max_wait_ms,
            "max_queue": cfg.max_queue,
            "default_deadline_ms": cfg.default_deadline_ms,
        },
    }
    if model is not None:
        body |= {
            "model_version": model.model_version,
            "checksum": model.checksum,
            "tasks": list(model.tasks),
            "source": model.source,
            "demo": model.demo,
            "metadata": model.details.get("metadata", {}),
        }
    if service.faults.active:
        body["faults"] = msgspec.to_builtins(service.faults)
    return json_response(encode(body))


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    m = request.app[METRICS]
    for kind, value in service.gpu_memory().items():
        m.gpu_memory.labels(kind).set(value)
    return web.Response(body=m.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
