"""The data path of one client call: geo -> registry snapshot -> cache -> balancer ->
upstream, and the answer's routing headers.

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

from geogate.gateway.access.callers import Access, Caller
from geogate.gateway.access.limits import ClientBuckets, Limiter, rate_headers
from geogate.gateway.config import RequestSettings
from geogate.gateway.dataplane.cache import Lookup, ResultCache
from geogate.gateway.dataplane.geo import ClientGeo, GeoResolver
from geogate.gateway.dataplane.upstream import Upstream
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.ops.stats import StatsBook
from geogate.gateway.routing.balancer import Balancer, Plan
from geogate.shared.errors import ModelError, Unavailable
from geogate.shared.http import request_id
from geogate.shared.registry import RegistryRecord, RegistryWatcher
from geogate.shared.schemas import ParseResult, SimilarityResult, encode

__all__ = ["CALLER", "DATA_PLANE", "DataPlane", "Route"]

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
class DataPlane:
    """Everything a client call passes through, in the order it passes: geo -> registry
    snapshot -> cache -> balancer -> upstream. Handlers drive it; the control plane never
    sees it (it gets its own view of the parts it reads)."""

    region: str  # this gateway's
    requests: RequestSettings
    geo: GeoResolver
    watcher: RegistryWatcher
    balancer: Balancer
    upstream: Upstream
    metrics: GatewayMetrics
    similarity_cache: ResultCache[tuple[str, str], SimilarityResult] | None
    parse_cache: ResultCache[str, ParseResult] | None
    access: Access
    limiter: Limiter
    hit_cost: float = 0.1  # what an item served from the cache counts against item limits
    rate_headers_always: bool = True  # X-RateLimit-* on every answer of a limited client, not only on 429s
    stats: StatsBook = field(default_factory=StatsBook)  # recent traffic for the admin API and heartbeats
    # Called with (client's home region, serving region, ok, ms) for every scoring call:
    # how a failover drill sees what its region's clients got.
    call_observers: list[Callable[[str, str, bool, float], None]] = field(default_factory=list)

    def route(self, request: web.Request, caller: Caller, items: Sequence[object]) -> Route:
        snapshot = self.watcher.snapshot
        if snapshot.epoch == 0:
            raise Unavailable("the version registry has not been read yet (no snapshot)", retry_after_s=1)
        color = _color(snapshot, request, items)
        info = snapshot.colors.get(color)
        if info is None:
            raise Unavailable(f"color {color!r} is not registered in the registry")
        geo = self.geo.resolve(request.remote, request.headers)
        route = request["route"] = Route(caller, geo, color, info.model_version, snapshot, served=self.region,
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
                home = self.region  # a client pinned to regions is at home at its own gateway (authorized)
            route.plan = self.balancer.plan(home, route.snapshot, route.color, route.version, allowed)
        plan = route.plan
        answer = await self.upstream.call(path, encode(payload), plan, call_deadline, request_id(request))
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


DATA_PLANE = web.AppKey("data_plane", DataPlane)
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


