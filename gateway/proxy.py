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
from typing import Any, Generic, TypeVar

import msgspec
from aiohttp import web

from gateway.access import UNIDENTIFIED, Access, Caller
from gateway.balancer import Balancer, Plan
from gateway.cache import Lookup, ResultCache
from gateway.drills import Drills
from gateway.geo import ClientGeo, GeoResolver
from gateway.limits import ClientBuckets, Limiter, rate_headers
from gateway.metrics import GatewayMetrics
from gateway.stats import StatsBook
from gateway.upstream import Upstream
from shared.config import GatewayConfig
from shared.errors import ModelError, Unauthorized, Unavailable
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

__all__ = ["CALLER", "GATEWAY", "Gateway", "Route", "add_routes"]

I = TypeVar("I")
R = TypeVar("R")


@dataclass
class Route:
    """One call's routing decision, filled in as it goes (for headers and metrics)."""

    caller: Caller
    geo: ClientGeo
    color: str
    version: str
    snapshot: RegistryRecord
    served: str  # the gateway's own region until a node answers
    plan: Plan | None = None  # made only when something misses the cache
    attempts: int = 0
    cache: str = "miss"
    node: str = ""  # the node that answered last
    items: int = 0
    hits: int = 0  # of the items, served from the cache

    @property
    def header(self) -> str:
        reason = "cache" if self.plan is None else self.plan.reason_for(self.served)
        return f"home={self.geo.region}; served={self.served}; attempts={self.attempts}; reason={reason}"


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
    access: Access
    limiter: Limiter
    stats: StatsBook = field(default_factory=StatsBook)  # recent traffic for the admin API and heartbeats
    drills: Drills | None = None  # sees the calls of a drilled region's clients

    def route(self, request: web.Request, caller: Caller, items: Sequence[object]) -> Route:
        snapshot = self.watcher.snapshot
        if snapshot.epoch == 0:
            raise Unavailable("the version registry has not been read yet (no snapshot)", retry_after_s=1)
        color = _color(snapshot, request, items)
        info = snapshot.colors.get(color)
        if info is None:
            raise Unavailable(f"color {color!r} is not registered in the registry")
        geo = self.geo.resolve(request.remote, request.headers)
        route = request["route"] = Route(caller, geo, color, info.model_version, snapshot, served=self.config.region,
                                         items=len(items))
        return route  # on the request at once: a call that fails from here on is still counted per route

    def still_current(self, route: Route, request: web.Request, items: object) -> bool:
        """Would this call get the same version from the newest snapshot?"""
        snapshot = self.watcher.snapshot
        if snapshot.epoch == route.snapshot.epoch:
            return True
        info = snapshot.colors.get(_color(snapshot, request, items))
        return info is not None and info.model_version == route.version

    async def fetch(self, path: str, payload: object, response_type: type[Any], route: Route, request: web.Request,
                    call_deadline: float) -> Any:
        if route.plan is None:
            home, allowed = route.geo.region, route.caller.regions
            if allowed and home not in allowed:
                home = self.config.region  # a client pinned to regions is at home at its own gateway (authorized)
            route.plan = self.balancer.plan(home, route.snapshot, route.color, route.version, allowed)
        plan = route.plan
        answer = await self.upstream.call(path, encode(payload), plan, route.color, route.version, call_deadline,
                                          request_id(request))
        route.served, route.attempts, route.node = answer.region, route.attempts + answer.attempts, answer.node
        if answer.region != plan.home:
            self.metrics.failovers.labels(plan.home, answer.region, plan.reason_for(answer.region)).inc()
        try:
            return msgspec.json.decode(answer.body, type=response_type)
        except msgspec.DecodeError as exc:
            raise ModelError(f"node {answer.node} sent an unreadable answer: {exc}") from exc

    async def lookup(self, cache: ResultCache[Any, R] | None, task: str, route: Route, items: Sequence[Any],
                     compute: Callable[[list[Any]], Awaitable[Sequence[R]]],
                     charge: Callable[[int], Awaitable[None] | None] | None) -> list[R]:
        if cache is None:
            if charge is not None and (pending := charge(len(items))) is not None:
                await pending
            return list(await compute(list(items)))
        found: Lookup[R] = await cache.lookup(route.version, items, compute, charge)
        self.metrics.cache.inc((task, "hit"), found.hits)
        self.metrics.cache.inc((task, "miss"), len(items) - found.hits)
        route.cache, route.hits = found.status, found.hits
        return found.results

    def respond(self, route: Route, body: bytes, usage: ClientBuckets | None) -> web.Response:
        """The answer, with the X-RateLimit-* of ``usage`` when given."""
        headers = {
            "X-Model-Version": route.version,
            "X-Color": route.color,
            "X-Region": route.served,
            "X-Cache": route.cache,
            "X-Route": route.header,
        }
        if usage is not None:
            rate_headers(usage, headers)
        return web.Response(body=body, content_type="application/json", headers=headers)


GATEWAY = web.AppKey("gateway", Gateway)
CALLER = "geogate.caller"  # request key: who called (for metrics and logs)


def _color(snapshot: RegistryRecord, request: web.Request, items: object) -> str:
    preview = snapshot.preview_color
    if preview is not None:
        if request.headers.get("X-MGeo-Version", "").strip().lower() == "canary":
            return preview
        if snapshot.canary_percent > 0 and _bucket(encode(items)) < snapshot.canary_percent * 100:
            return preview  # sticky by request content: a retry lands on the same color
    return snapshot.active_color


def _bucket(body: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(body, digest_size=4).digest(), "big") % 10_000


@dataclass(frozen=True)
class _Task(Generic[I, R]):
    """What differs between the two scoring tasks on their way through the gateway."""

    name: str
    path: str
    request: Callable[[list[I]], object]  # the node request for a list of misses
    response: type[Any]  # the node's response, whose ``results`` are the answers
    validate: Callable[..., None]
    cache: Callable[[Gateway], ResultCache[I, R] | None]


SIMILARITY: _Task[tuple[str, str], SimilarityResult] = _Task(
    "similarity", "/v1/similarity", SimilarityRequest, SimilarityResponse, validate_pairs,
    lambda gw: gw.similarity_cache)
PARSE: _Task[str, ParseResult] = _Task(
    "parse", "/v1/parse", ParseRequest, ParseResponse, validate_addresses, lambda gw: gw.parse_cache)


REROUTES = 3


async def _score(request: web.Request, caller: Caller, usage: ClientBuckets | None, task: _Task[I, R],
                 items: list[I]) -> tuple[Route, list[R]]:
    """Results on the version of the newest snapshot: a call whose snapshot was replaced
    by a switch while it ran is served again on the new version, so once a gateway has
    applied a switch (and said so in its heartbeat) it answers nothing on the old one."""
    gw = request.app[GATEWAY]
    cfg = gw.config
    task.validate(items, max_items=cfg.max_batch, max_chars=cfg.max_chars)
    call_deadline = deadline(request, cfg.default_deadline_ms)
    # the item rate and quota, charged by the lookup before a node is asked
    charge: Callable[[int], Awaitable[None] | None] | None = None if usage is None else (
        lambda misses: gw.limiter.charge(caller.name, usage, misses + (len(items) - misses) * cfg.cache_hit_cost))
    for _ in range(REROUTES):
        route = gw.route(request, caller, items)

        async def compute(misses: list[I], route: Route = route) -> list[R]:
            answer = await gw.fetch(task.path, task.request(misses), task.response, route, request, call_deadline)
            return list(answer.results)

        results = await gw.lookup(task.cache(gw), task.name, route, items, compute, charge)
        charge = None  # a lookup again after a switch: the items were paid for by the first
        if gw.still_current(route, request, items):
            return route, results
    raise Unavailable(f"the active version changed {REROUTES} times during this call", retry_after_s=1)


B = TypeVar("B")


async def _serve(request: web.Request, task: _Task[I, R], body_type: type[B], items: Callable[[B], list[I]],
                 answer: Callable[[B, Route, list[R]], object]) -> web.Response:
    """Who is calling and may they, then the body, then the results: a caller without
    access is refused before its body is read."""
    gw = request.app[GATEWAY]
    try:
        caller = request[CALLER] = gw.access.identify(request)
    except Unauthorized:
        request[CALLER] = UNIDENTIFIED  # counted as such
        raise
    gw.access.authorize(caller, task.name)
    usage = None
    if caller.shared:
        usage, pending = gw.limiter.admit(caller.name, caller.limits)
        if pending is not None:
            await pending
    slot = gw.limiter.enter(caller.name, caller.limits)
    try:
        body = decode(await read_body(request, gw.config.max_body_bytes), body_type)
        route, results = await _score(request, caller, usage, task, items(body))
        return gw.respond(route, encode(answer(body, route, results)),
                          usage if gw.config.rate_limit_headers == "always" else None)
    finally:
        if slot:
            gw.limiter.leave(caller.name)


async def similarity(request: web.Request) -> web.Response:
    return await _serve(request, SIMILARITY, SimilarityRequest, lambda b: b.pairs,
                        lambda b, route, results: SimilarityResponse(results, route.version, route.color, route.served))


async def parse(request: web.Request) -> web.Response:
    return await _serve(request, PARSE, ParseRequest, lambda b: b.addresses,
                        lambda b, route, results: ParseResponse(results, route.version, route.color, route.served))


async def compat_match(request: web.Request) -> web.Response:
    return await _serve(request, SIMILARITY, MatchRequest, lambda b: [(b.address1, b.address2)],
                        lambda b, route, results: MatchResponse(similarity=results[0].score))


async def compat_parse(request: web.Request) -> web.Response:
    return await _serve(request, PARSE, CompatParseRequest, lambda b: [b.address],
                        lambda b, route, results: CompatParseResponse(elements=results[0].elements))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/similarity", similarity)
    app.router.add_post("/v1/parse", parse)
    app.router.add_post("/match", compat_match)
    app.router.add_post("/parse", compat_parse)
