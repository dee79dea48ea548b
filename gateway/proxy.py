"""The client-facing scoring handlers: geo -> registry snapshot -> cache -> balancer -> upstream.

Every scoring response carries ``X-Model-Version``, ``X-Color``, ``X-Region`` (where it
was served; the gateway's own region for a full cache hit), ``X-Cache`` and ``X-Route``
(home region, serving region, attempts and why), so an operator can see why a call went
where it went.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from gateway.balancer import Balancer, Plan
from gateway.cache import Lookup, ResultCache
from gateway.geo import ClientGeo, GeoResolver
from gateway.metrics import GatewayMetrics
from gateway.upstream import Upstream
from shared.config import GatewayConfig
from shared.errors import ModelError, Unavailable
from shared.http import deadline, read_body, request_id
from shared.registry import RegistryRecord, RegistryWatcher
from shared.schemas import (
    CompatParseRequest,
    CompatParseResponse,
    MatchRequest,
    MatchResponse,
    ParseRequest,
    ParseResponse,
    ParseResult,
    SimilarityRequest,
    SimilarityResponse,
    SimilarityResult,
    decode,
    encode,
    validate_addresses,
    validate_pairs,
)

__all__ = ["GATEWAY", "Gateway", "Route", "add_routes"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Route:
    """One call's routing decision, filled in as it goes (for headers and metrics)."""

    geo: ClientGeo
    color: str
    version: str
    snapshot: RegistryRecord
    plan: Plan | None = None  # made only when something misses the cache
    served: str | None = None
    attempts: int = 0
    cache: str = "miss"
    extra: dict[str, str] = field(default_factory=dict)

    def header(self, gateway_region: str) -> str:
        served = self.served or gateway_region
        reason = "cache" if self.served is None or self.plan is None else self.plan.reason_for(served)
        return f"home={self.geo.region}; served={served}; attempts={self.attempts}; reason={reason}"


@dataclass
class Gateway:
    config: GatewayConfig
    geo: GeoResolver
    watcher: RegistryWatcher
    balancer: Balancer
    upstream: Upstream
    metrics: GatewayMetrics
    similarity_cache: ResultCache[tuple[str, str], SimilarityResult] | None
    parse_cache: ResultCache[str, ParseResult] | None
    _snapshot: RegistryRecord | None = None
    _preview: str | None = None

    def route(self, request: web.Request, items: object) -> Route:
        snapshot = self.watcher.snapshot
        if snapshot.epoch == 0:
            raise Unavailable("the version registry has not been read yet (no snapshot)", retry_after_s=1)
        color = snapshot.active_color
        if snapshot is not self._snapshot:  # the preview color changes with the snapshot only
            self._snapshot, self._preview = snapshot, snapshot.preview_color
        preview = self._preview
        if preview is not None:
            if request.headers.get("X-MGeo-Version", "").strip().lower() == "canary":
                color = preview
            elif snapshot.canary_percent > 0 and _bucket(encode(items)) < snapshot.canary_percent * 100:
                color = preview  # sticky by request content: a retry lands on the same color
        info = snapshot.colors.get(color)
        if info is None:
            raise Unavailable(f"color {color!r} is not registered in the registry")
        return Route(self.geo.resolve(request.remote, request.headers), color, info.model_version, snapshot)

    async def fetch(self, path: str, payload: object, response_type: type[Any], route: Route, request: web.Request,
                    call_deadline: float) -> Any:
        if route.plan is None:
            route.plan = self.balancer.plan(route.geo.region, route.snapshot, route.color, route.version)
        plan = route.plan
        answer = await self.upstream.call(path, encode(payload), plan, route.color, route.version, call_deadline,
                                          request_id(request))
        route.served, route.attempts = answer.region, route.attempts + answer.attempts
        if answer.region != plan.home:
            self.metrics.failovers.labels(plan.home, answer.region, plan.reason_for(answer.region)).inc()
        try:
            return msgspec.json.decode(answer.body, type=response_type)
        except msgspec.DecodeError as exc:
            raise ModelError(f"node {answer.node} sent an unreadable answer: {exc}") from exc

    async def lookup(self, cache: ResultCache[Any, R] | None, task: str, route: Route, items: Sequence[Any],
                     compute: Callable[[list[Any]], Awaitable[Sequence[R]]]) -> list[R]:
        if cache is None:
            results = list(await compute(list(items)))
            route.cache = "miss"
            return results
        found: Lookup[R] = await cache.lookup(route.version, items, compute)
        self.metrics.cache_items(task, "hit").inc(found.hits)
        self.metrics.cache_items(task, "miss").inc(len(items) - found.hits)
        route.cache = found.status
        return found.results

    def respond(self, request: web.Request, route: Route, body: bytes) -> web.Response:
        request["route"] = route
        return web.Response(body=body, content_type="application/json", headers={
            "X-Model-Version": route.version,
            "X-Color": route.color,
            "X-Region": route.served or self.config.region,
            "X-Cache": route.cache,
            "X-Route": route.header(self.config.region),
        })


GATEWAY = web.AppKey("gateway", Gateway)


def _bucket(body: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(body, digest_size=4).digest(), "big") % 10_000


async def _similarity_items(request: web.Request, pairs: list[tuple[str, str]]) -> tuple[Route, list[SimilarityResult]]:
    gw = request.app[GATEWAY]
    cfg = gw.config
    validate_pairs(pairs, max_items=cfg.max_batch, max_chars=cfg.max_chars)
    call_deadline = deadline(request, cfg.default_deadline_ms)
    route = gw.route(request, pairs)

    async def compute(misses: list[tuple[str, str]]) -> list[SimilarityResult]:
        answer = await gw.fetch("/v1/similarity", SimilarityRequest(misses), SimilarityResponse, route, request,
                                call_deadline)
        return list(answer.results)

    return route, await gw.lookup(gw.similarity_cache, "similarity", route, pairs, compute)


async def _parse_items(request: web.Request, addresses: list[str]) -> tuple[Route, list[ParseResult]]:
    gw = request.app[GATEWAY]
    cfg = gw.config
    validate_addresses(addresses, max_items=cfg.max_batch, max_chars=cfg.max_chars)
    call_deadline = deadline(request, cfg.default_deadline_ms)
    route = gw.route(request, addresses)

    async def compute(misses: list[str]) -> list[ParseResult]:
        answer = await gw.fetch("/v1/parse", ParseRequest(misses), ParseResponse, route, request, call_deadline)
        return list(answer.results)

    return route, await gw.lookup(gw.parse_cache, "parse", route, addresses, compute)


async def similarity(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = decode(await read_body(request, gw.config.max_body_bytes), SimilarityRequest)
    route, results = await _similarity_items(request, body.pairs)
    return gw.respond(request, route, encode(SimilarityResponse(results, route.version, route.color,
                                                                route.served or gw.config.region)))


async def parse(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = decode(await read_body(request, gw.config.max_body_bytes), ParseRequest)
    route, results = await _parse_items(request, body.addresses)
    return gw.respond(request, route, encode(ParseResponse(results, route.version, route.color,
                                                           route.served or gw.config.region)))


async def compat_match(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = decode(await read_body(request, gw.config.max_body_bytes), MatchRequest)
    route, (result,) = await _similarity_items(request, [(body.address1, body.address2)])
    return gw.respond(request, route, encode(MatchResponse(similarity=result.score)))


async def compat_parse(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = decode(await read_body(request, gw.config.max_body_bytes), CompatParseRequest)
    route, (result,) = await _parse_items(request, [body.address])
    return gw.respond(request, route, encode(CompatParseResponse(elements=result.elements)))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/similarity", similarity)
    app.router.add_post("/v1/parse", parse)
    app.router.add_post("/match", compat_match)
    app.router.add_post("/parse", compat_parse)
