"""The client-facing scoring handlers: who calls and may they, the body, then the data
path (``dataplane.pipeline``) for each task, in the JSON shapes of docs/design.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from geogate.gateway.access.callers import UNIDENTIFIED, Caller
from geogate.gateway.access.limits import ClientBuckets
from geogate.gateway.dataplane.cache import ResultCache
from geogate.gateway.dataplane.pipeline import CALLER, DATA_PLANE, DataPlane, Route
from geogate.shared.errors import Unauthorized, Unavailable
from geogate.shared.http import deadline, read_body
from geogate.shared.schemas import (
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

__all__ = ["add_routes"]

I = TypeVar("I")
R = TypeVar("R")


@dataclass(frozen=True)
class _Task(Generic[I, R]):
    """What differs between the two scoring tasks on their way through the gateway."""

    name: str
    path: str
    request: Callable[[list[I]], object]  # the node request for a list of misses
    response: type[Any]  # the node's response, whose ``results`` are the answers
    validate: Callable[..., None]
    cache: Callable[[DataPlane], ResultCache[I, R] | None]


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
    gw = request.app[DATA_PLANE]
    limits = gw.requests
    task.validate(items, max_items=limits.max_batch, max_chars=limits.max_chars)
    call_deadline = deadline(request, limits.default_deadline_ms)
    # the item rate and quota, charged by the lookup before a node is asked
    charge: Callable[[int], Awaitable[None] | None] | None = None if usage is None else (
        lambda misses: gw.limiter.charge(caller.name, usage, misses + (len(items) - misses) * gw.hit_cost))
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
    gw = request.app[DATA_PLANE]
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
        body = decode(await read_body(request, gw.requests.max_body_bytes), body_type)
        route, results = await _score(request, caller, usage, task, items(body))
        return gw.respond(route, encode(answer(body, route, results)), usage if gw.rate_headers_always else None)
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
